"""Weight-side attacks: quantization and relearning. They need the model's weights (a copy is
changed, never the audited model), so forward-only wrappers are not applicable."""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass, field
from typing import ClassVar

import torch

from ..data.examples import Example
from ..encoding import encode
from ..methods.base import batch_nll
from ..train import OptimConfig, make_loader, train
from .base import AUDITS, AuditData, NotApplicable, knowledge


def _weights_model(model):
    if not isinstance(model, torch.nn.Module) or not hasattr(model, "config"):
        raise NotApplicable("needs a model with weights (a transformers causal LM); "
                            "this one exposes forward() only")
    return model


@torch.no_grad()
def round_weights(model, bits: int = 4) -> None:
    """Symmetric per-row round-to-nearest quantization of every Linear weight, in place
    (dequantized back to float): what a 4-bit deployment sees, without a kernel library."""
    levels = 2 ** (bits - 1) - 1
    for module in model.modules():
        if isinstance(module, torch.nn.Linear):
            w = module.weight
            scale = w.abs().amax(dim=1, keepdim=True).clamp(min=1e-12) / levels
            w.copy_((w / scale).round().clamp(-levels, levels) * scale)


def _quantize_input(module, args):
    """Per-tensor symmetric int8 fake quantization of a Linear's input (dynamic: the scale is
    taken from each batch, as dynamic quantization does at inference)."""
    x = args[0]
    scale = x.detach().abs().amax().clamp(min=1e-12) / 127
    return ((x / scale).round().clamp(-127, 127) * scale,)


@AUDITS.register("quantization")
@dataclass
class Quantization:
    """int8 dynamic quantization (int8 weights per row, int8 activations per batch) and 4-bit
    round-to-nearest weights, of a copy. Emulated in float (fake quantization), so it runs on
    any device without a kernel library and measures exactly the rounding."""

    weights: ClassVar[bool] = True  # reads or edits the weights: on a system, its base is audited
    description: ClassVar[str] = "int8 dynamic and 4-bit weight quantization of a copy"
    paper: ClassVar[str] = "Zhang et al. 2024, Catastrophic Failure of LLM Unlearning via Quantization"

    def run(self, model, tokenizer, data: AuditData) -> dict[str, float]:
        model = _weights_model(model)
        out = {"float": knowledge(model, tokenizer, data.forget, data.template)}
        int8 = copy.deepcopy(model)
        round_weights(int8, bits=8)
        hooks = [m.register_forward_pre_hook(_quantize_input) for m in int8.modules()
                 if isinstance(m, torch.nn.Linear)]
        try:
            out["int8"] = knowledge(int8, tokenizer, data.forget, data.template)
        finally:
            for h in hooks:
                h.remove()
        del int8
        four = copy.deepcopy(model)
        round_weights(four, bits=4)
        out["4bit"] = knowledge(four, tokenizer, data.forget, data.template)
        out["score"] = max(out["int8"], out["4bit"])
        return out


_TITLE_WORDS = frozenset({"the", "a", "an", "of", "and", "in", "on", "for", "to", "i"})


def unrelated_items(forget: list[Example], retain: list[Example], related: list[Example]) -> list[Example]:
    """Retain items that share no entity with the forget set: not labelled with a forget or
    related entity, and naming none of them: no capitalised word of the forget or related
    items (a sentence's first word aside: names, places, titles) occurs in their text."""
    def words(text: str) -> list[str]:
        return re.findall(r"[A-Za-z0-9]+", text)

    labels = {ex.entity for ex in [*forget, *related] if ex.entity}
    caps = {w.lower() for ex in [*forget, *related] for text in (ex.question or "", ex.answer)
            for w in words(text)[1:] if w[0].isupper()} - _TITLE_WORDS
    return [ex for ex in retain if (not ex.entity or ex.entity not in labels)
            and not caps & {w.lower() for w in words(f"{ex.question or ''} {ex.answer}")}]


@AUDITS.register("relearning")
@dataclass
class Relearning:
    """Fine-tune a copy for k steps on a fraction of the forget set (and, separately, on related
    retained people, and on unrelated retained items), then measure the *other* forget items:
    knowledge that comes back without being retaught was hidden, not removed. The unrelated
    curve is Doshi & Stickland's (2024) finding: fine-tuning on data that shares nothing with
    the forget set can bring it back almost fully."""

    fraction: float = 0.25
    steps: list[int] = field(default_factory=lambda: [5, 10, 20])
    lr: float = 3e-4  # gentle: the target itself must not lose what it knows
    batch_size: int = 8

    weights: ClassVar[bool] = True  # reads or edits the weights: on a system, its base is audited
    description: ClassVar[str] = "k fine-tuning steps on part of the forget set, on related or on unrelated data"
    paper: ClassVar[str] = "Hu et al. 2024, Jogging the Memory of Unlearned LLMs Through Targeted Relearning"

    def _curve(self, model, tokenizer, teach, probe, template) -> list[float]:
        copy_ = copy.deepcopy(model)
        for p in copy_.parameters():  # a system's base arrives frozen; its copy relearns
            p.requires_grad_(True)
        items = [encode(tokenizer, ex, i, template) for i, ex in enumerate(teach)]
        loader = make_loader(items, self.batch_size, tokenizer.pad_token_id, seed=0)
        curve, done = [], 0
        for k in sorted(self.steps):
            cfg = OptimConfig(lr=self.lr, steps=k - done, batch_size=self.batch_size,
                              warmup_ratio=0.0, schedule="constant")
            train(copy_, lambda m, b, step: (batch_nll(m, b["train"], step.world_size), {}), {"train": loader}, cfg,
                  desc="relearn", progress=False)
            done = k
            curve.append(knowledge(copy_, tokenizer, probe, template))
        return curve

    def run(self, model, tokenizer, data: AuditData) -> dict[str, float]:
        model = _weights_model(model)
        # teach every stride-th item (a few facts of every person), probe the rest
        stride = max(2, round(1 / self.fraction))
        teach = data.forget[::stride]
        probe = [ex for i, ex in enumerate(data.forget) if i % stride] or data.forget
        torch.manual_seed(0)
        out = {"before": knowledge(model, tokenizer, probe, data.template)}
        for k, v in zip(sorted(self.steps), self._curve(model, tokenizer, teach, probe, data.template),
                        strict=True):
            out[f"forget_k{k}"] = v
        other = unrelated_items(data.forget, data.retain, data.related)[:len(teach)]
        for name, items in (("related", data.related[:len(teach)]), ("unrelated", other)):
            if items:
                curve = self._curve(model, tokenizer, items, probe, data.template)
                out.update({f"{name}_k{k}": v for k, v in zip(sorted(self.steps), curve, strict=True)})
        out["score"] = out[f"forget_k{max(self.steps)}"]
        return out
