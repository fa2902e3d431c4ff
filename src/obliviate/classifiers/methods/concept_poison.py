"""Class unlearning by concept inference and label poisoning (Class Machine Unlearning for
Complex Data via Concepts Inference and Data Poisoning, 2024).

Concepts: a post-hoc concept bottleneck over the penultimate features: the concept bank is
their top principal directions on the training data, and a linear model maps concept scores
to classes. Integrated gradients of a class's logit with respect to the concept scores (for a
linear map, exactly (c - baseline) * w, with the mean scores as baseline) name the concepts a
class rests on. Unlearning poisons the forget samples only: half get a random other label,
half a targeted one (the class the bottleneck predicts once the sample's own class concepts
are set to the baseline: what the sample looks like without them); the retained data keep
their labels and train beside them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch
from torch import nn

from ...config import require
from .base import CLASSIFIER_METHODS, Context, random_other_labels, supervised


def concept_bank(features: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(mean, directions [k, d]): the top-k principal directions of the features."""
    mean = features.mean(0)
    _, _, vt = np.linalg.svd(features - mean, full_matrices=False)
    return mean, vt[:k]


def integrated_gradients_linear(scores: np.ndarray, baseline: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """IG of a linear logit w . c along the straight path from the baseline: (c - b) * w. [n, k]"""
    return (scores - baseline) * weights


def class_weights(bottleneck) -> np.ndarray:
    """[classes, k] linear weights of the bottleneck; a two-class model stores one row (the
    second class's logit against the first's), which is (-w, w) as two logits."""
    w = bottleneck.coef_
    return np.concatenate([-w, w]) if w.shape[0] == 1 else w


def class_logits(bottleneck, scores: np.ndarray) -> np.ndarray:
    d = bottleneck.decision_function(scores)
    return np.stack([-d, d], axis=1) if d.ndim == 1 else d


def targeted_labels(scores: np.ndarray, y: np.ndarray, bottleneck, top: int) -> np.ndarray:
    """Each sample's bottleneck prediction with its own class's top concepts (by mean IG over
    the class's samples) reset to the baseline, its own class excluded."""
    baseline = scores.mean(0)
    out = np.empty(len(y), dtype=np.int64)
    for c in np.unique(y):
        rows = y == c
        col = list(bottleneck.classes_).index(c) if c in bottleneck.classes_ else None
        edited = scores[rows].copy()
        if col is not None:
            ig = integrated_gradients_linear(scores[rows], baseline, class_weights(bottleneck)[col]).mean(0)
            concepts = np.argsort(-ig)[:top]
            edited[:, concepts] = baseline[concepts]
        logits = class_logits(bottleneck, edited)
        if col is not None:
            logits[:, col] = -np.inf
        out[rows] = bottleneck.classes_[logits.argmax(1)]
    return out


@CLASSIFIER_METHODS.register("concept_poison")
@dataclass
class ConceptPoison:
    concepts: int = 16
    top: int = 4  # concepts a class rests on, reset when choosing targeted labels

    description: ClassVar[str] = "infer the class's concepts, then poison forget samples with random and targeted labels"
    paper: ClassVar[str] = "Class Machine Unlearning for Complex Data via Concepts Inference and Data Poisoning (2024)"
    default_lr: ClassVar[float] = 1e-3
    default_epochs: ClassVar[float] = 2

    def __post_init__(self) -> None:
        require(self.concepts > 0, "params.concepts", f"must be positive (got {self.concepts})")
        require(0 <= self.top <= self.concepts, "params.top", f"must be 0 to params.concepts (got {self.top})")

    def run(self, model: nn.Module, ctx: Context) -> nn.Module:
        from sklearn.linear_model import LogisticRegression

        with torch.no_grad():
            feats = model.features(torch.cat([ctx.x_retain, ctx.x_forget])).numpy()
        labels = torch.cat([ctx.y_retain, ctx.y_forget]).numpy()
        mean, bank = concept_bank(feats, min(self.concepts, feats.shape[1]))
        scores = (feats - mean) @ bank.T  # [n, k] concept scores
        bottleneck = LogisticRegression(max_iter=500).fit(scores, labels)
        forget_scores = scores[len(ctx.y_retain):]
        targeted = torch.from_numpy(targeted_labels(forget_scores, ctx.y_forget.numpy(), bottleneck, self.top))
        rand = random_other_labels(ctx.y_forget, ctx.n_classes, ctx.rng(1))
        half = torch.from_numpy(ctx.rng(2).random(len(ctx.y_forget)) < 0.5)
        poisoned = torch.where(half, rand, targeted)
        ctx.trace["poisoned_labels"] = poisoned
        x, y = torch.cat([ctx.x_retain, ctx.x_forget]), torch.cat([ctx.y_retain, poisoned])
        ctx.trace["train_labels"] = y
        ctx.log["loss"] = supervised(model, x, y, ctx.epochs, ctx.lr, ctx.batch_size, ctx.rng())[-1]
        return model
