"""Retrain: a fresh model trained on the retained data only, the exact-unlearning oracle every
approximate method is measured against (Jia et al. 2023 and the field)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from torch import nn

from .base import CLASSIFIER_METHODS, Context, supervised


@CLASSIFIER_METHODS.register("retrain")
@dataclass
class Retrain:
    description: ClassVar[str] = "train a fresh model on the retained data (the oracle)"
    paper: ClassVar[str] = "exact unlearning; the reference of Jia et al. 2023, Model Sparsity Can Simplify Machine Unlearning"
    default_lr: ClassVar[float] = 2e-3
    default_epochs: ClassVar[float] = 30  # the target's own training length

    def run(self, model: nn.Module | None, ctx: Context) -> nn.Module:
        fresh = ctx.fresh()  # the oracle never starts from, or sees, the trained model
        ctx.log["loss"] = supervised(fresh, ctx.x_retain, ctx.y_retain, ctx.epochs, ctx.lr,
                                     ctx.batch_size, ctx.rng())[-1]
        return fresh
