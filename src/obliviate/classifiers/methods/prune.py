"""Prune, then unlearn: one-shot global magnitude pruning of the convolution and linear
weights, then fine-tuning on the retained data with the pruned weights held at zero (Jia et al.
2023, Model Sparsity Can Simplify Machine Unlearning: the "prune first, then unlearn" recipe;
their one-shot magnitude pruning, OMP)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from ...config import require
from .base import CLASSIFIER_METHODS, Context, supervised, top_fraction_masks


def magnitude_masks(model: nn.Module, sparsity: float) -> dict[nn.Parameter, torch.Tensor]:
    """1 for the weights kept, 0 for the `sparsity` fraction of smallest |w| over every conv
    and linear weight matrix together (global, not per layer)."""
    weights = [m.weight for m in model.modules() if isinstance(m, nn.Conv2d | nn.Linear)]
    return top_fraction_masks({w: w.detach().abs() for w in weights}, 1.0 - sparsity)


@CLASSIFIER_METHODS.register("prune")
@dataclass
class PruneThenUnlearn:
    sparsity: float = 0.5

    description: ClassVar[str] = "magnitude-prune, then fine-tune on the retained data (pruned weights stay 0)"
    paper: ClassVar[str] = "Jia et al. 2023, Model Sparsity Can Simplify Machine Unlearning (prune first, then unlearn)"
    default_lr: ClassVar[float] = 1e-3
    default_epochs: ClassVar[float] = 2

    def __post_init__(self) -> None:
        require(0.0 <= self.sparsity < 1.0, "params.sparsity", f"must be in [0, 1), got {self.sparsity}")

    def run(self, model: nn.Module, ctx: Context) -> nn.Module:
        masks = magnitude_masks(model, self.sparsity)
        with torch.no_grad():
            for w, m in masks.items():
                w.mul_(m)
        ctx.log["loss"] = supervised(model, ctx.x_retain, ctx.y_retain, ctx.epochs, ctx.lr,
                                     ctx.batch_size, ctx.rng(), masks=masks)[-1]
        ctx.log["sparsity"] = float(1 - sum(m.sum() for m in masks.values()) / sum(m.numel() for m in masks.values()))
        return model
