"""CE-U: cross-entropy unlearning."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from .base import METHODS, Context, forward
from .objectives import answer_logits, cross_entropy_unlearning


@METHODS.register("ceu")
@dataclass
class CEU:
    """Cross-entropy towards the model's own distribution without the true token, on forget
    answers only. `skip_first` answer tokens are left out, as in the paper's training setup
    (the first token carries the answer's format more than its content)."""

    skip_first: int = 1

    description: ClassVar[str] = "cross-entropy unlearning: move mass off the true token, keep the rest"
    needs: ClassVar[tuple[str, ...]] = ("forget",)
    paper: ClassVar[str] = "Yang et al. 2025, CE-U: Cross Entropy Unlearning"
    default_lr: ClassVar[float] = 5e-5
    # Forget-only: on data that shares its answer format with the retain set, retain
    # probability falls with forget probability, so the run stops once the forget set's
    # probability has halved (Jang et al. likewise stop once the targets are forgotten).
    forget_stop: ClassVar[float] = 0.5

    def loss(self, model, batches, ctx: Context):
        f = batches["forget"]
        labels = f["labels"]
        if self.skip_first > 0:
            labelled = labels != -100
            first = (labelled.cumsum(-1) <= self.skip_first) & labelled
            labels = labels.masked_fill(first, -100)
        logits, targets = answer_logits(forward(model, f), labels)
        loss = cross_entropy_unlearning(logits, targets, ctx.world_size)
        return loss, {"ceu": float(loss.detach())}
