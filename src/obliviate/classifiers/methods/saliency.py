"""Saliency-masked unlearning (SalUn): only the weights most salient to the forget loss (the
largest |gradient of the forget cross-entropy|) are updated, by random-label training on the
forget samples beside the retained data (Fan et al. 2024, SalUn: Empowering Machine Unlearning
via Gradient-based Weight Saliency)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from ...config import require
from .base import CLASSIFIER_METHODS, Context, supervised, top_fraction_masks
from .random_labels import relabelled_union


def saliency_masks(model: nn.Module, x: torch.Tensor, y: torch.Tensor, ratio: float) -> dict[nn.Parameter, torch.Tensor]:
    """1 for the `ratio` fraction of weights with the largest |d CE(forget) / d w| (global)."""
    model.zero_grad(set_to_none=True)
    F.cross_entropy(model(x), y).backward()
    masks = top_fraction_masks({p: p.grad.abs() for p in model.parameters() if p.grad is not None}, ratio)
    model.zero_grad(set_to_none=True)
    return masks


@CLASSIFIER_METHODS.register("saliency")
@dataclass
class Saliency:
    ratio: float = 0.5

    description: ClassVar[str] = "random-label training of only the weights salient to the forget loss"
    paper: ClassVar[str] = "Fan et al. 2024, SalUn: Empowering Machine Unlearning via Gradient-based Weight Saliency"
    default_lr: ClassVar[float] = 1e-3
    default_epochs: ClassVar[float] = 2

    def __post_init__(self) -> None:
        require(0.0 < self.ratio <= 1.0, "params.ratio", f"must be in (0, 1], got {self.ratio}")

    def run(self, model: nn.Module, ctx: Context) -> nn.Module:
        masks = saliency_masks(model, ctx.x_forget, ctx.y_forget, self.ratio)
        x, y = relabelled_union(ctx)
        ctx.log["loss"] = supervised(model, x, y, ctx.epochs, ctx.lr, ctx.batch_size, ctx.rng(), masks=masks)[-1]
        return model
