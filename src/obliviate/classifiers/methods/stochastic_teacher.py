"""Stochastic teacher: erase by distilling the model toward a randomly initialised teacher on
the forget samples, then reconstruct by distilling toward the original model on the retained
data; about one epoch in all (Zhang et al. 2023, Machine Unlearning Methodology Based on
Stochastic Teacher Network)."""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from ...config import require
from .base import CLASSIFIER_METHODS, Context, batches, optimise, predict_proba, steps_for


def distill_loss(student_logits: torch.Tensor, teacher_probs: torch.Tensor) -> torch.Tensor:
    """KL(teacher || student) per sample, averaged: sum_c t_c (log t_c - log s_c)."""
    return F.kl_div(F.log_softmax(student_logits, -1), teacher_probs, reduction="batchmean")


def distill(model: nn.Module, x: torch.Tensor, targets: torch.Tensor, epochs: float, lr: float,
            batch_size: int, rng) -> float:
    steps = steps_for(len(x), batch_size, epochs)
    order = batches(len(x), batch_size, rng, steps)

    def loss_of(_: int) -> torch.Tensor:
        idx = torch.from_numpy(next(order))
        return distill_loss(model(x[idx]), targets[idx])

    return optimise(model, loss_of, steps, lr)[-1]


@CLASSIFIER_METHODS.register("stochastic_teacher")
@dataclass
class StochasticTeacher:
    erase_epochs: float = 5.0  # passes over the (small) forget set toward the random teacher

    description: ClassVar[str] = "distil toward a random teacher on forget data, then toward the original on the rest"
    paper: ClassVar[str] = "Zhang et al. 2023, Machine Unlearning Methodology Based on Stochastic Teacher Network"
    default_lr: ClassVar[float] = 1e-3
    default_epochs: ClassVar[float] = 1  # the reconstruction pass over the retained data

    def __post_init__(self) -> None:
        require(self.erase_epochs > 0, "params.erase_epochs", f"must be positive (got {self.erase_epochs})")

    def run(self, model: nn.Module, ctx: Context) -> nn.Module:
        original = copy.deepcopy(model)  # the reconstruction teacher: the model before erasing
        teacher = ctx.fresh()  # random weights: its outputs carry no knowledge of the data
        ctx.trace["erase_targets"] = predict_proba(teacher, ctx.x_forget)
        ctx.log["erase_loss"] = distill(model, ctx.x_forget, ctx.trace["erase_targets"], self.erase_epochs,
                                        ctx.lr, ctx.batch_size, ctx.rng(1))
        ctx.log["rebuild_loss"] = distill(model, ctx.x_retain, predict_proba(original, ctx.x_retain),
                                          ctx.epochs, ctx.lr, ctx.batch_size, ctx.rng(2))
        return model
