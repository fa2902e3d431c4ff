"""WHP: fine-tune on the labels a model that never learned the forget set would predict."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from ..encoding import IGNORE, Encoded, collate
from ..errors import ObliviateError
from ..train import OptimConfig, make_loader, train
from .base import METHODS, Context, batch_nll, cache_answer_logits, eval_mode
from .objectives import whp_generic_logits


def generic_items(items: list[Encoded], base: list[torch.Tensor], reinforced: list[torch.Tensor],
                  alpha: float) -> list[Encoded]:
    """`items` with each answer token's label replaced by the argmax of the generic logits at
    its position (inputs unchanged: the model reads the real answer and learns to predict
    generic continuations of it). base / reinforced: [n_labels_i, vocab] per item."""
    out = []
    for it, b, r in zip(items, base, reinforced, strict=True):
        generic = whp_generic_logits(b, r, alpha).argmax(-1).tolist()  # [n_labels_i]
        labels, k = list(it.labels), 0
        for t in range(1, len(labels)):  # label t is predicted at position t - 1
            if labels[t] != IGNORE:
                labels[t], k = generic[k], k + 1
        out.append(Encoded(it.input_ids, labels, it.index))
    return out


@METHODS.register("whp")
@dataclass
class WHP:
    """Who's Harry Potter. Before unlearning, the model is fine-tuned `reinforce_steps` more
    steps on the forget set (the "reinforced" model; its weights are put back afterwards, from
    a CPU copy), and both models' logits at the forget answers' positions give the generic
    predictions v_base - alpha * relu(v_reinforced - v_base): the tokens the forget data
    pushes up are pushed down. Unlearning fine-tunes on those predictions as labels (argmax
    per position). The paper's second source of generic labels, anchored terms (idiosyncratic
    names swapped for generic ones by a translation dictionary), needs such a dictionary; it
    is not built here."""

    alpha: float = 5.0
    reinforce_steps: int = 20
    reinforce_lr: float = 1e-3
    reinforce_batch: int = 16

    description: ClassVar[str] = "Who's Harry Potter: fine-tune on generic labels from a reinforced model's logit difference"
    needs: ClassVar[tuple[str, ...]] = ("forget",)
    paper: ClassVar[str] = "Eldan & Russinovich 2023, Who's Harry Potter? Approximate Unlearning in LLMs"
    default_lr: ClassVar[float] = 1e-4

    def __post_init__(self) -> None:
        if not 0 < self.alpha < float("inf"):
            raise ObliviateError(f"whp alpha must be finite and positive (got {self.alpha})")
        if self.reinforce_steps < 1 or self.reinforce_batch < 1:
            raise ObliviateError("whp reinforce_steps and reinforce_batch must be 1 or more")
        if not 0 < self.reinforce_lr <= 100:
            raise ObliviateError(f"whp reinforce_lr must be in (0, 100] (got {self.reinforce_lr})")

    def setup(self, model, ctx: Context) -> None:
        forget = ctx.items["forget"]
        with eval_mode(model):
            base = cache_answer_logits(model, forget, ctx.pad_id)
        saved = {n: p.detach().to("cpu", copy=True) for n, p in model.named_parameters()}
        trainable = {n: p.requires_grad for n, p in model.named_parameters()}
        try:
            for p in model.parameters():
                p.requires_grad_(True)
            cfg = OptimConfig(lr=self.reinforce_lr, steps=self.reinforce_steps,
                              batch_size=self.reinforce_batch, warmup_ratio=0.0, schedule="constant")
            loader = make_loader(forget, self.reinforce_batch, ctx.pad_id, ctx.seed + 7)
            train(model, lambda m, b, step: (batch_nll(m, b["forget"], step.world_size), {}),
                  {"forget": loader}, cfg, desc="whp reinforce", progress=False)
            with eval_mode(model):
                reinforced = cache_answer_logits(model, forget, ctx.pad_id)
        finally:
            with torch.no_grad():
                for n, p in model.named_parameters():
                    p.copy_(saved[n].to(p.device))
                    p.requires_grad_(trainable[n])
                model.zero_grad(set_to_none=True)
        generic = generic_items(forget, base, reinforced, self.alpha)
        changed = sum(a != b for it, g in zip(forget, generic, strict=True)
                      for a, b in zip(it.labels, g.labels, strict=True))
        total = sum(t != IGNORE for it in forget for t in it.labels[1:])
        # the labels are the run's state, saved with checkpoints: setup runs before a resumed
        # run's state is restored, so the reinforcement runs again, but the restored labels
        # (the ones the run started with) replace these
        ctx.state["whp_labels"] = [g.labels for g in generic]
        ctx.state["whp_relabelled"] = changed / max(total, 1)

    def loss(self, model, batches, ctx: Context):
        f = batches["forget"]
        labels, forget = ctx.state["whp_labels"], ctx.items["forget"]
        batch = collate([Encoded(forget[i].input_ids, labels[i], i) for i in f["index"].tolist()], ctx.pad_id)
        nll = batch_nll(model, {k: v.to(f["input_ids"].device) for k, v in batch.items()}, ctx.world_size)
        return nll, {"generic_nll": float(nll.detach()), "relabelled": ctx.state["whp_relabelled"]}


