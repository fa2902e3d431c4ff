"""SimNPO: NPO without a reference model."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from .base import METHODS, Context, check_retain_kind, forward, retain_term
from .objectives import sequence_nll, simnpo


@METHODS.register("simnpo")
@dataclass
class SimNPO:
    """Length-normalised NPO with a margin gamma, + alpha * retain term. Reference-free."""

    beta: float = 4.5
    gamma: float = 0.0  # reward margin
    alpha: float = 1.0
    retain_loss: str = "nll"

    description: ClassVar[str] = "simple NPO: length-normalised, reference-free NPO plus a retain term"
    needs: ClassVar[tuple[str, ...]] = ("forget", "retain")
    paper: ClassVar[str] = "Fan et al. 2024, Simplicity Prevails: Rethinking Negative Preference Optimization for LLM Unlearning"
    default_lr: ClassVar[float] = 5e-4

    def __post_init__(self) -> None:
        check_retain_kind(self.retain_loss)

    def loss(self, model, batches, ctx: Context):
        f = batches["forget"]
        seq, n = sequence_nll(forward(model, f), f["labels"])
        forget_loss = ctx.backward_now(simnpo(seq, n, self.beta, self.gamma, ctx.world_size))
        retain, retain_value = retain_term(model, batches["retain"], self.retain_loss, ctx,
                                           self.alpha)
        return forget_loss + retain, {"simnpo": float(forget_loss.detach()), "retain": retain_value}
