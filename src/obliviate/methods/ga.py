"""Gradient ascent on the forget set."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from .base import METHODS, ReferenceCache, batch_nll
from .objectives import gradient_ascent


@METHODS.register("ga")
@dataclass
class GradAscent:
    """Maximise the forget-set NLL; no retain term, so utility usually collapses with it."""

    description: ClassVar[str] = "gradient ascent: raise the loss on the forget set"
    needs: ClassVar[tuple[str, ...]] = ("forget",)
    paper: ClassVar[str] = "Jang et al. 2023, Knowledge Unlearning for Mitigating Privacy Risks"

    def loss(self, model, batches, ref: ReferenceCache):
        forget = batch_nll(model, batches["forget"])
        return gradient_ascent(forget), {"forget_nll": float(forget.detach())}
