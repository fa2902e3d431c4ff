"""Gradient difference: ascend on the forget set, descend on the retain set."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from .base import METHODS, ReferenceCache, batch_nll
from .objectives import grad_diff


@METHODS.register("graddiff")
@dataclass
class GradDiff:
    """-gamma * NLL(forget) + alpha * NLL(retain)."""

    alpha: float = 1.0  # retain weight
    gamma: float = 1.0  # forget weight

    description: ClassVar[str] = "gradient difference: ascend on forget, descend on retain"
    needs: ClassVar[tuple[str, ...]] = ("forget", "retain")
    paper: ClassVar[str] = "Liu et al. 2022, Continual Learning and Private Unlearning"

    def loss(self, model, batches, ref: ReferenceCache):
        forget = batch_nll(model, batches["forget"])
        retain = batch_nll(model, batches["retain"])
        loss = grad_diff(forget, retain, self.alpha, self.gamma)
        return loss, {"forget_nll": float(forget.detach()), "retain_nll": float(retain.detach())}
