"""Gradient ascent (GA): maximise the cross-entropy of the forget samples (Thudi et al. 2022;
a baseline of Jia et al. 2023). Cheap, and prone to overshoot: it has no term that keeps the
rest, which is why the retain-aware methods exist."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from .base import CLASSIFIER_METHODS, Context, batches, optimise, steps_for


@CLASSIFIER_METHODS.register("ga")
@dataclass
class GradientAscent:
    description: ClassVar[str] = "maximise the forget samples' cross-entropy"
    paper: ClassVar[str] = "Thudi et al. 2022, Unrolling SGD; GA baseline of Jia et al. 2023"
    default_lr: ClassVar[float] = 1e-4
    default_epochs: ClassVar[float] = 3

    def run(self, model: nn.Module, ctx: Context) -> nn.Module:
        steps = steps_for(len(ctx.y_forget), ctx.batch_size, ctx.epochs)
        order = batches(len(ctx.y_forget), ctx.batch_size, ctx.rng(), steps)

        def loss_of(_: int) -> torch.Tensor:
            idx = torch.from_numpy(next(order))
            return -F.cross_entropy(model(ctx.x_forget[idx]), ctx.y_forget[idx])

        ctx.log["loss"] = optimise(model, loss_of, steps, ctx.lr)[-1]
        return model
