"""Fine-tune (FT): continue training on the retained data only, so the forget samples fade
by catastrophic forgetting (Warnecke et al. 2023; a baseline of Jia et al. 2023)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from torch import nn

from .base import CLASSIFIER_METHODS, Context, supervised


@CLASSIFIER_METHODS.register("finetune")
@dataclass
class Finetune:
    description: ClassVar[str] = "keep training on the retained data only"
    paper: ClassVar[str] = "Jia et al. 2023, Model Sparsity Can Simplify Machine Unlearning (FT baseline)"
    default_lr: ClassVar[float] = 1e-3
    default_epochs: ClassVar[float] = 2

    def run(self, model: nn.Module, ctx: Context) -> nn.Module:
        ctx.log["loss"] = supervised(model, ctx.x_retain, ctx.y_retain, ctx.epochs, ctx.lr,
                                     ctx.batch_size, ctx.rng())[-1]
        return model
