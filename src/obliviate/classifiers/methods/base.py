"""What every classifier unlearning method shares: the registry, the run's context and the
training helpers. A method is a dataclass of hyper-parameters with `run(model, ctx)` that
returns the unlearned model (usually the same module, changed in place); it cites its paper.
Methods do not inherit from each other; shared steps are the functions here."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ...errors import ObliviateError
from ...registry import Registry

CLASSIFIER_METHODS: Registry[type] = Registry("classifier method")


@dataclass
class Context:
    """The run as a method sees it: forget and retain inputs (model tensors) with labels, the
    optimiser settings and a way to build a fresh model (the oracle's initialisation)."""

    x_forget: torch.Tensor
    y_forget: torch.Tensor  # [n_forget] int64
    x_retain: torch.Tensor
    y_retain: torch.Tensor  # [n_retain] int64
    n_classes: int
    lr: float
    epochs: float  # passes over the data the method trains on (may be fractional)
    batch_size: int
    seed: int
    fresh: Callable[[], nn.Module]
    log: dict[str, Any] = field(default_factory=dict)  # numbers saved with the model
    trace: dict[str, Any] = field(default_factory=dict)  # tensors kept for inspection, not saved

    def rng(self, salt: int = 0) -> np.random.Generator:
        return np.random.default_rng(self.seed * 1000 + salt)


def batches(n: int, batch_size: int, rng: np.random.Generator, steps: int | None = None) -> Iterator[np.ndarray]:
    """Shuffled index batches over n samples: whole epochs, or exactly `steps` batches."""
    if n == 0:  # an empty set would otherwise never yield nor end
        raise ObliviateError("no samples to train on (an empty forget or retained set)")
    done = 0
    while True:
        order = rng.permutation(n)
        for start in range(0, n, batch_size):
            if steps is not None and done >= steps:
                return
            yield order[start:start + batch_size]
            done += 1
        if steps is None:
            return


def steps_for(n: int, batch_size: int, epochs: float) -> int:
    """Optimiser steps in `epochs` passes over n samples (at least one)."""
    return max(1, round(epochs * -(-n // batch_size)))


def optimise(model: nn.Module, loss_of: Callable[[int], torch.Tensor], steps: int, lr: float,
             params: list[nn.Parameter] | None = None, masks: dict[nn.Parameter, torch.Tensor] | None = None) -> list[float]:
    """`steps` Adam steps on loss_of(step); `masks` zero the gradient (and so the update) of
    the weights a method keeps frozen. Returns the losses."""
    params = params if params is not None else [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=lr)
    losses = []
    model.train()
    for step in range(steps):
        loss = loss_of(step)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if masks:
            for p, m in masks.items():
                if p.grad is not None:
                    p.grad.mul_(m)
        opt.step()
        losses.append(float(loss.detach()))
    model.eval()
    return losses


def supervised(model: nn.Module, x: torch.Tensor, y: torch.Tensor, epochs: float, lr: float,
               batch_size: int, rng: np.random.Generator, masks=None,
               penalty: Callable[[int, int], torch.Tensor] | None = None) -> list[float]:
    """Cross-entropy training on (x, y); `penalty(step, steps)` adds a regulariser."""
    steps = steps_for(len(y), batch_size, epochs)
    order = batches(len(y), batch_size, rng, steps)

    def loss_of(step: int) -> torch.Tensor:
        idx = torch.from_numpy(next(order))
        loss = F.cross_entropy(model(x[idx]), y[idx])
        return loss + penalty(step, steps) if penalty is not None else loss

    return optimise(model, loss_of, steps, lr, masks=masks)


def top_fraction_masks(scores: dict[nn.Parameter, torch.Tensor], keep: float) -> dict[nn.Parameter, torch.Tensor]:
    """1 for the `keep` fraction of entries with the highest score over all tensors together
    (a global threshold, not one per layer), 0 elsewhere."""
    flat = torch.cat([s.flatten() for s in scores.values()])
    n_keep = round(keep * flat.numel())
    if n_keep >= flat.numel():
        return {p: torch.ones_like(s) for p, s in scores.items()}
    if n_keep == 0:
        return {p: torch.zeros_like(s) for p, s in scores.items()}
    cut = flat.topk(n_keep).values[-1]
    return {p: (s >= cut).float() for p, s in scores.items()}


def random_other_labels(y: torch.Tensor, n_classes: int, rng: np.random.Generator) -> torch.Tensor:
    """A label drawn uniformly from the classes other than each sample's own."""
    shift = torch.from_numpy(rng.integers(1, n_classes, len(y)))
    return (y + shift) % n_classes


def predict_proba(model: nn.Module, x: torch.Tensor, batch_size: int = 512) -> torch.Tensor:
    """Softmax outputs [n, classes], in eval mode, without gradients."""
    was = model.training
    model.eval()
    try:
        with torch.no_grad():
            return torch.cat([F.softmax(model(x[i:i + batch_size]), -1) for i in range(0, len(x), batch_size)]) \
                if len(x) else torch.zeros(0)
    finally:
        model.train(was)


def describe(name: str) -> dict[str, Any]:
    cls = CLASSIFIER_METHODS.get(name)
    return {"description": cls.description, "paper": cls.paper, "default_lr": cls.default_lr,
            "default_epochs": cls.default_epochs}
