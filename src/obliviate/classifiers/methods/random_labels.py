"""Random labels (RL): train on the forget samples relabelled at random, beside the retained
data with their own labels (Golatkar et al. 2020; the RL baseline of Jia et al. 2023)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from .base import CLASSIFIER_METHODS, Context, random_other_labels, supervised


def relabelled_union(ctx: Context, salt: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """Retained samples with their labels, forget samples with a random other label."""
    wrong = random_other_labels(ctx.y_forget, ctx.n_classes, ctx.rng(salt))
    return torch.cat([ctx.x_retain, ctx.x_forget]), torch.cat([ctx.y_retain, wrong])


@CLASSIFIER_METHODS.register("random_labels")
@dataclass
class RandomLabels:
    description: ClassVar[str] = "train on forget samples with random labels, retained ones with theirs"
    paper: ClassVar[str] = "Golatkar et al. 2020, Eternal Sunshine of the Spotless Net; RL baseline of Jia et al. 2023"
    default_lr: ClassVar[float] = 1e-3
    default_epochs: ClassVar[float] = 2

    def run(self, model: nn.Module, ctx: Context) -> nn.Module:
        x, y = relabelled_union(ctx)
        ctx.log["loss"] = supervised(model, x, y, ctx.epochs, ctx.lr, ctx.batch_size, ctx.rng())[-1]
        return model
