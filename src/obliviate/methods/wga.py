"""WGA: gradient ascent with each token weighted by its probability."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from .base import METHODS, Context, answer_token_logprobs, check_retain_kind, retain_term
from .objectives import weighted_ascent, wga_weights


@METHODS.register("wga")
@dataclass
class WGA:
    """gamma * weighted ascent on forget tokens (w = p^beta) + alpha * retain term."""

    beta: float = 1.0
    gamma: float = 1.0
    alpha: float = 1.0
    retain_loss: str = "nll"

    description: ClassVar[str] = "weighted gradient ascent: token steps scaled by p^beta, plus a retain term"
    needs: ClassVar[tuple[str, ...]] = ("forget", "retain")
    paper: ClassVar[str] = "Wang et al. 2025, Rethinking LLM Unlearning Objectives: A Gradient Perspective and Go Beyond"
    default_lr: ClassVar[float] = 2.5e-4

    def __post_init__(self) -> None:
        check_retain_kind(self.retain_loss)

    def loss(self, model, batches, ctx: Context):
        logp = answer_token_logprobs(model, batches["forget"])
        forget = weighted_ascent(logp, wga_weights(logp, self.beta), ctx.world_size)
        forget_term = ctx.backward_now(self.gamma * forget)
        retain, retain_value = retain_term(model, batches["retain"], self.retain_loss, ctx,
                                           self.alpha)
        return forget_term + retain, {"wga": float(forget.detach()), "retain": retain_value}
