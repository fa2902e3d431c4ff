"""SatImp: gradient ascent re-weighted by saturation and importance."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from .base import METHODS, Context, answer_token_logprobs, check_retain_kind, retain_term
from .objectives import satimp_weights, weighted_ascent


@METHODS.register("satimp")
@dataclass
class SatImp:
    """gamma * weighted ascent on forget tokens (w = p^beta1 (1-p)^beta2) + alpha * retain."""

    beta1: float = 5.0
    beta2: float = 1.0
    gamma: float = 1.0
    alpha: float = 0.1
    retain_loss: str = "nll"

    description: ClassVar[str] = "saturation-importance re-weighted gradient ascent, plus a retain term"
    needs: ClassVar[tuple[str, ...]] = ("forget", "retain")
    paper: ClassVar[str] = "Yang et al. 2025, Exploring Criteria of Loss Reweighting to Enhance LLM Unlearning"
    default_lr: ClassVar[float] = 5e-4

    def __post_init__(self) -> None:
        check_retain_kind(self.retain_loss)

    def loss(self, model, batches, ctx: Context):
        logp = answer_token_logprobs(model, batches["forget"])
        forget = weighted_ascent(logp, satimp_weights(logp, self.beta1, self.beta2),
                                 ctx.world_size)
        forget_term = ctx.backward_now(self.gamma * forget)
        retain, retain_value = retain_term(model, batches["retain"], self.retain_loss, ctx,
                                           self.alpha)
        return forget_term + retain, {"satimp": float(forget.detach()), "retain": retain_value}
