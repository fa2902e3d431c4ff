"""Forget sets of a classifier benchmark (the `split` key), drawn from its training data.

    random10      10% of the training samples, a seeded uniform draw (random-sample forgetting)
    class:NAME    every sample of one class (class-wise forgetting; a class index works too)
    user:NAME     every sample of one user (a deletion request naming a user's images)
    worst10       10% chosen to be hard to forget (Fan et al. 2024, Challenging Forgets), by
                  a cheap proxy of their bi-level search: the samples whose last-layer loss
                  gradient aligns best with the whole training set's mean gradient. Ascent on
                  those samples moves the model the way the rest of the data pulls back, and
                  retraining without them still fits them: the unlearned model must match a
                  retrained model that keeps getting them right. The benchmark compares these
                  sets with random ones of the same size.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ObliviateError
from ..registry import suggest
from .data import ClassData

_PERCENT = re.compile(r"^(random|worst)(\d{1,2})$")


@dataclass
class Scenario:
    split: str
    kind: str  # random | class | user | worst
    forget: np.ndarray  # indices into the training data
    classes: list[int]  # the forgotten classes (class-wise), else []
    retain: np.ndarray  # the other training indices


def _scenario(split: str, kind: str, forget: np.ndarray, classes: list[int], n: int) -> Scenario:
    retain = np.setdiff1d(np.arange(n), forget)
    if not len(forget):
        raise ObliviateError(f"split '{split}': no training samples to forget")
    if not len(retain):
        raise ObliviateError(f"split '{split}': every training sample would be forgotten; nothing would remain")
    return Scenario(split, kind, forget, classes, retain)


def check_split(split: str) -> None:
    """Refuse a malformed split before anything loads."""
    if not (_PERCENT.match(split) or split.startswith(("class:", "user:"))) or split.endswith(":"):
        raise ObliviateError(f"split '{split}': use random<percent> (random10), worst<percent> "
                             "(worst10), class:<name> or user:<name>")
    m = _PERCENT.match(split)
    if m and not 1 <= int(m.group(2)) <= 90:
        raise ObliviateError(f"split '{split}': the percentage must be 1 to 90")


def resolve(split: str, train: ClassData, classes: list[str], seed: int,
            model: nn.Module | None = None, model_inputs: torch.Tensor | None = None) -> Scenario:
    """The forget set `split` names on `train` (worst-case sets need the trained model)."""
    check_split(split)
    m = _PERCENT.match(split)
    if m:
        k = max(1, round(int(m.group(2)) / 100 * len(train)))
        if m.group(1) == "random":
            idx = np.sort(np.random.default_rng(seed).choice(len(train), k, replace=False))
            return _scenario(split, "random", idx, [], len(train))
        if model is None or model_inputs is None:
            raise ObliviateError(f"split '{split}' is chosen with the trained model: give model=")
        return _scenario(split, "worst", worst_case(model, model_inputs, torch.from_numpy(train.y), k),
                         [], len(train))
    kind, name = split.split(":", 1)
    if kind == "class":
        c = classes.index(name) if name in classes else (int(name) if name.isdigit() and int(name) < len(classes) else None)
        if c is None:
            raise ObliviateError(f"split '{split}': no class '{name}'{suggest(name, classes)}; classes: {', '.join(classes)}")
        return _scenario(split, "class", np.flatnonzero(train.y == c), [c], len(train))
    users = sorted(set(train.users.tolist()) - {""})
    idx = np.flatnonzero(train.users == name)
    if not len(idx):
        raise ObliviateError(f"split '{split}': no samples of user '{name}'{suggest(name, users)}"
                             + (f"; users: {', '.join(users[:12])}{' ...' if len(users) > 12 else ''}" if users else
                                "; this benchmark names no users"))
    return _scenario(split, "user", idx, [], len(train))


def worst_case(model: nn.Module, x: torch.Tensor, y: torch.Tensor, k: int) -> np.ndarray:
    """The k samples whose last-layer gradient has the highest cosine with the mean gradient."""
    model.eval()
    with torch.no_grad():
        h = torch.cat([model.features(x[i:i + 512]) for i in range(0, len(x), 512)])  # [n, d]
        p = F.softmax(model.head(h), -1)
    err = p - F.one_hot(y, p.shape[1]).float()  # dCE/dlogits  [n, classes]
    h1 = torch.cat([h, torch.ones(len(h), 1)], 1)  # the bias as a constant feature
    g = torch.einsum("nc,nd->ncd", err, h1).flatten(1)  # per-sample head gradient [n, classes*(d+1)]
    score = F.cosine_similarity(g, g.mean(0, keepdim=True), dim=1)
    return np.sort(torch.topk(score, k).indices.numpy())
