"""Gradient difference: ascend on the forget set, descend on (or stay close to) the retain set."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from .base import METHODS, Context, batch_nll, check_retain_kind, retain_term
from .objectives import grad_diff


@METHODS.register("graddiff")
@dataclass
class GradDiff:
    """-gamma * NLL(forget) + alpha * retain term. `retain_loss='kl'` uses KL to the reference
    on retain batches, which needs the reference live (a weight snapshot, or the adapter
    disabled under LoRA) because the retain batches change every step."""

    alpha: float = 5.0  # retain weight
    gamma: float = 1.0  # forget weight
    retain_loss: str = "nll"  # nll | kl

    description: ClassVar[str] = "gradient difference: ascend on forget, descend on retain (NLL or KL)"
    needs: ClassVar[tuple[str, ...]] = ("forget", "retain")
    paper: ClassVar[str] = "Liu et al. 2022, Continual Learning and Private Unlearning"
    default_lr: ClassVar[float] = 1.5e-4

    def __post_init__(self) -> None:
        check_retain_kind(self.retain_loss)

    def loss(self, model, batches, ctx: Context):
        forget = batch_nll(model, batches["forget"], ctx.world_size)
        # the forget summand of grad_diff, backpropagated before the retain batch runs
        ascent = ctx.backward_now(grad_diff(forget, torch.zeros((), device=forget.device),
                                           self.alpha, self.gamma))
        retain, retain_value = retain_term(model, batches["retain"], self.retain_loss, ctx,
                                           self.alpha)
        loss = ascent + retain
        return loss, {"forget_nll": float(forget.detach()), "retain": retain_value}
