"""Gradient ascent on the forget set."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from .base import METHODS, Context, batch_nll
from .objectives import gradient_ascent


@METHODS.register("ga")
@dataclass
class GradAscent:
    """Maximise the forget-set NLL. No retain term: utility falls with it, so the default
    learning rate is small and the collapse guard watches the retain set when one is given."""

    description: ClassVar[str] = "gradient ascent: raise the loss on the forget set"
    needs: ClassVar[tuple[str, ...]] = ("forget",)
    paper: ClassVar[str] = "Jang et al. 2023, Knowledge Unlearning for Mitigating Privacy Risks"
    default_lr: ClassVar[float] = 1e-4
    # Forget-only: on data that shares its answer format with the retain set, retain
    # probability falls with forget probability, so the run stops once the forget set's
    # probability has halved (Jang et al. likewise stop once the targets are forgotten).
    forget_stop: ClassVar[float] = 0.5

    def loss(self, model, batches, ctx: Context):
        forget = batch_nll(model, batches["forget"], ctx.world_size)
        return gradient_ascent(forget), {"forget_nll": float(forget.detach())}
