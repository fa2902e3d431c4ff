"""UNDIAL: self-distillation towards the reference with the answer token's logit lowered."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from .base import METHODS, Context, cache_answer_logits, check_retain_kind, forward, retain_term
from .objectives import answer_logits, undial


@METHODS.register("undial")
@dataclass
class UNDIAL:
    """Distil each forget answer position from the reference distribution with the true
    token's logit reduced by `strength`, + alpha * retain term. The teacher is the model before
    unlearning on the fixed forget inputs: its logits at the answer positions are computed once
    and kept on CPU ([answer tokens, vocab] floats), so no frozen model copy is held."""

    strength: float = 10.0
    alpha: float = 1.0
    retain_loss: str = "nll"

    description: ClassVar[str] = "self-distillation with the answer logit lowered (robust, bounded)"
    needs: ClassVar[tuple[str, ...]] = ("forget", "retain", "reference")
    paper: ClassVar[str] = "Dong et al. 2024, UNDIAL: Self-Distillation with Adjusted Logits for Robust Unlearning"
    default_lr: ClassVar[float] = 5e-4

    def __post_init__(self) -> None:
        check_retain_kind(self.retain_loss)

    def setup(self, model, ctx: Context) -> None:
        ctx.cache["logits:forget"] = cache_answer_logits(model, ctx.items["forget"], ctx.pad_id)

    def loss(self, model, batches, ctx: Context):
        f = batches["forget"]
        logits, targets = answer_logits(forward(model, f), f["labels"])
        cached = ctx.cached("logits:forget")
        ref = torch.cat([cached[i] for i in f["index"].tolist()]).to(logits.device)
        forget = ctx.backward_now(undial(logits, ref, targets, self.strength, ctx.world_size))
        retain, retain_value = retain_term(model, batches["retain"], self.retain_loss, ctx,
                                           self.alpha)
        return forget + retain, {"undial": float(forget.detach()), "retain": retain_value}
