"""l1-sparse unlearning: fine-tune on the retained data with an l1 penalty on the weights whose
strength decays linearly to zero, so sparsity does its unlearning work early and accuracy
recovers late (Jia et al. 2023, Model Sparsity Can Simplify Machine Unlearning, Eq. 3 and
its linearly decreasing schedule)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from ...config import require
from .base import CLASSIFIER_METHODS, Context, supervised


def l1_penalty(params: list[torch.Tensor], gamma: float) -> torch.Tensor:
    """gamma * sum_i |theta_i| over every weight in `params`."""
    return gamma * sum(p.abs().sum() for p in params)


def decayed(gamma: float, step: int, steps: int) -> float:
    """Linear decay: gamma at the first step, 0 after the last (gamma * (1 - step / steps))."""
    return gamma * (1.0 - step / steps)


@CLASSIFIER_METHODS.register("l1_sparse")
@dataclass
class L1Sparse:
    gamma: float = 5e-5

    description: ClassVar[str] = "fine-tune on the retained data with a decaying l1 penalty"
    paper: ClassVar[str] = "Jia et al. 2023, Model Sparsity Can Simplify Machine Unlearning"
    default_lr: ClassVar[float] = 1e-3
    default_epochs: ClassVar[float] = 2

    def __post_init__(self) -> None:
        require(self.gamma >= 0, "params.gamma", f"must be 0 or more (got {self.gamma})")

    def run(self, model: nn.Module, ctx: Context) -> nn.Module:
        params = list(model.parameters())
        ctx.log["loss"] = supervised(model, ctx.x_retain, ctx.y_retain, ctx.epochs, ctx.lr, ctx.batch_size,
                                     ctx.rng(), penalty=lambda s, n: l1_penalty(params, decayed(self.gamma, s, n)))[-1]
        return model
