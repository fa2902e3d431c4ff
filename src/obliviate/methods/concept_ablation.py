"""Concept-vector ablation: edit the MLP value vectors that promote the forget answers."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from ..concepts import DOWN_PROJ, answer_token_ids, value_vectors
from ..errors import ObliviateError
from ..train import OptimConfig, make_loader, train
from .base import METHODS, Context, batch_nll, eval_mode, mean_answer_prob, nll_gradients

MODES = ("ablate", "noise")
LOCATORS = ("attribution", "vocab")


def attributed_vectors(model, ctx: Context, top: int) -> list[tuple[float, str, int]]:
    """The `top` down-projection columns whose removal raises the forget NLL most and the
    retain NLL least, to first order: zeroing column j of W changes a loss by about
    -g[:, j] . W[:, j] (g its gradient), so the score is that change on forget minus on retain."""
    mods = [(n, m) for n, m in model.named_modules() if n.endswith(DOWN_PROJ) and hasattr(m, "weight")]
    if not mods:
        return []  # the caller says which modules it looked for
    weights = [m.weight for _, m in mods]
    g_f, g_r = (nll_gradients(model, ctx.items[name][:256], ctx.pad_id, weights, 32)
                for name in ("forget", "retain"))
    picked = []
    for (name, _), w, gf, gr in zip(mods, weights, g_f, g_r, strict=True):
        score = -((gf - gr) * w.detach().float()).sum(0)  # [intermediate]
        best = torch.topk(score, min(top, score.numel()))
        picked += [(float(v), name, int(j)) for v, j in zip(best.values, best.indices, strict=True)]
    return sorted(picked, key=lambda x: -x[0])[:top]


@METHODS.register("concept_ablation")
@dataclass
class ConceptAblation:
    """Locate `top` MLP value vectors (down-projection columns) of the forget set and edit
    them in place, with no gradient step: "ablate" zeroes them, "noise" replaces each with
    Gaussian noise of `noise` times its norm (the paper's "needle" baseline). Located by
    "attribution" (the columns whose removal raises the forget NLL most and the retain NLL
    least, to first order) or "vocab" (ConceptVectors' projection of each column onto the
    forget answers' tokens: exactly the vectors the parametric-trace audit traces). An
    optional retain repair follows (`repair_steps` of NLL on the retain set) that never
    touches the edited columns: their gradients are masked and they are written back after it.
    Under LoRA the down-projections holding them get no adapter (a merged adapter would
    rewrite every column). The optimiser settings of the run do not apply: the edit has no
    steps and the repair has its own."""

    top: int = 32
    locate: str = "attribution"
    mode: str = "ablate"
    noise: float = 1.0  # noise norm / vector norm, for mode="noise"
    repair_steps: int = 0
    repair_lr: float = 1e-4
    repair_batch: int = 16
    seed: int = 0

    description: ClassVar[str] = "concept-vector ablation: edit the MLP value vectors of the forget set in place"
    needs: ClassVar[tuple[str, ...]] = ("forget", "retain")
    paper: ClassVar[str] = "Hong et al. 2024, Intrinsic Evaluation of Unlearning Using Parametric Knowledge Traces"
    default_lr: ClassVar[float] = 1.0  # unused: the edit has no optimiser; the repair has repair_lr
    fixed_lora_modules: ClassVar[bool] = True  # the edited projections must get no adapter

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ObliviateError(f"concept_ablation mode must be one of {', '.join(MODES)} (got '{self.mode}')")
        if self.locate not in LOCATORS:
            raise ObliviateError(f"concept_ablation locate must be one of {', '.join(LOCATORS)} (got '{self.locate}')")
        if self.top < 1 or self.repair_steps < 0 or self.repair_batch < 1:
            raise ObliviateError("concept_ablation top and repair_batch must be 1 or more, repair_steps 0 or more")
        if not 0 <= self.noise < float("inf"):
            raise ObliviateError(f"concept_ablation noise must be finite and 0 or more (got {self.noise})")
        if not 0 < self.repair_lr <= 100:
            raise ObliviateError(f"concept_ablation repair_lr must be in (0, 100] (got {self.repair_lr})")

    def _locate(self, model, ctx: Context) -> list[tuple[float, str, int]]:
        if self.locate == "attribution":
            return attributed_vectors(model, ctx, self.top)
        if ctx.tokenizer is None:
            raise ObliviateError("concept_ablation locate=vocab reads the forget answers as tokens: "
                                 "its Context needs the tokenizer")
        ids = answer_token_ids(ctx.tokenizer, ctx.examples["forget"])
        if not ids:
            raise ObliviateError("concept_ablation locate=vocab: the forget answers have no tokens")
        return value_vectors(model, ids, self.top)

    def setup(self, model, ctx: Context) -> None:
        picked = self._locate(model, ctx)
        if not picked:
            raise ObliviateError(f"concept_ablation: this model has no '*{DOWN_PROJ}' modules to edit")
        modules = dict(model.named_modules())
        gen = torch.Generator().manual_seed(self.seed)
        edits: dict[str, dict[int, torch.Tensor]] = {}
        with torch.no_grad():
            for _, name, j in picked:
                w = modules[name].weight  # [d, intermediate]; column j is one value vector
                col = torch.zeros(w.shape[0], dtype=w.dtype)
                if self.mode == "noise":
                    g = torch.randn(w.shape[0], generator=gen)
                    col = (g * (self.noise * w[:, j].float().norm().cpu() / g.norm().clamp(min=1e-12))).to(w.dtype)
                w[:, j] = col.to(w.device)
                edits.setdefault(name, {})[j] = col
                if not ctx.lora:  # the repair's gradient never reaches an edited column
                    ctx.grad_masks.setdefault(w, torch.ones_like(w))[:, j] = 0
        ctx.state["concept_vectors"] = [[name, j, score] for score, name, j in picked]
        ctx.cache["concept_edits"] = edits

    def target_modules(self, model, ctx: Context) -> list[str] | None:
        """Full weights: all (the edited columns' gradients are masked). LoRA: every Linear
        of the blocks but the edited down-projections."""
        if not ctx.lora:
            return None
        edited = set(ctx.cache["concept_edits"])
        return [n for n, m in model.named_modules()
                if isinstance(m, torch.nn.Linear) and ".layers." in n and n not in edited]

    def fit(self, model, ctx: Context) -> list[dict[str, float]]:
        logs = []
        if self.repair_steps:
            cfg = OptimConfig(lr=self.repair_lr, steps=self.repair_steps, batch_size=self.repair_batch,
                              warmup_ratio=0.0, schedule="constant")
            loader = make_loader(ctx.items["retain"], self.repair_batch, ctx.pad_id, ctx.seed + 1)
            masks = ctx.grad_masks

            def mask_edited() -> None:
                for p, m in masks.items():
                    if p.grad is not None:
                        p.grad.mul_(m.to(p.grad.device))

            logs = train(model, lambda m, b, step: (batch_nll(m, b["retain"], step.world_size), {}),
                         {"retain": loader}, cfg, desc="concept_ablation repair", progress=False,
                         after_backward=mask_edited if masks else None)
            self._restore(model, ctx)
        with torch.no_grad(), eval_mode(model):
            forget = mean_answer_prob(model, ctx.items["forget"][:64], ctx.pad_id)
        return [*logs, {"loss": forget, "forget_prob": forget, "edited": float(len(ctx.state["concept_vectors"]))}]

    @torch.no_grad()
    def _restore(self, model, ctx: Context) -> None:
        """Write the edited columns back: weight decay or an optimiser's state cannot have
        moved them, whatever the repair's settings."""
        modules = {n.removeprefix("base_model.model."): m for n, m in model.named_modules()}
        for name, cols in ctx.cache["concept_edits"].items():
            w = modules[name].weight
            for j, col in cols.items():
                w[:, j] = col.to(w.device, w.dtype)
