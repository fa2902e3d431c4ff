"""Negative preference optimisation with a retain term."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from .base import METHODS, Context, batch_seq_nll, check_retain_kind, retain_term
from .objectives import npo


@METHODS.register("npo")
@dataclass
class NPO:
    """NPO on the forget set + alpha * retain term. The reference model's forget NLLs are
    computed once before training and cached: no second model in memory (unless
    `retain_loss='kl'`, which needs live reference logits on the changing retain batches)."""

    beta: float = 0.1
    alpha: float = 5.0  # retain weight; 0 gives plain NPO
    retain_loss: str = "nll"  # nll | kl

    description: ClassVar[str] = ("negative preference optimisation: push forget likelihood "
                                  "below the reference model's, bounded, plus a retain term")
    needs: ClassVar[tuple[str, ...]] = ("forget", "retain", "reference")
    paper: ClassVar[str] = "Zhang et al. 2024, Negative Preference Optimization"
    default_lr: ClassVar[float] = 2.5e-4

    def __post_init__(self) -> None:
        check_retain_kind(self.retain_loss)

    def loss(self, model, batches, ctx: Context):
        f = batches["forget"]
        ref = ctx.cached("seq_nll:forget").to(f["index"].device)[f["index"]]
        forget_loss = npo(batch_seq_nll(model, f), ref, self.beta, ctx.world_size)
        info = {"npo": float(forget_loss.detach())}
        if self.alpha == 0:
            return forget_loss, info
        forget_loss = ctx.backward_now(forget_loss)  # one batch's activations at a time
        retain, retain_value = retain_term(model, batches["retain"], self.retain_loss, ctx,
                                           self.alpha)
        info["retain"] = retain_value
        return forget_loss + retain, info
