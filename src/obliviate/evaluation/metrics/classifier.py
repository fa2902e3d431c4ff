"""Classifier unlearning metrics (Jia et al. 2023, Model Sparsity Can Simplify Machine
Unlearning; the field's standard set): unlearning accuracy (UA), remaining accuracy (RA), test
accuracy (TA), MIA efficacy, the average gap to the retrained model, run time, and calibration
(ECE) as a side-effect check. All in points (0-100) like the papers' tables, except run time.

A classifier results file has the data sets forget (role forget), retain (role retain) and
test (role utility); class-wise forgetting scores TA on the test samples of the other classes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from .base import PerItem, metric

JIA = "Jia et al. 2023, Model Sparsity Can Simplify Machine Unlearning"
TOWARD_RETRAIN = "≈ retrained"  # neither higher nor lower is better: the retrained model's value is
GAP_KEYS = ("forget_ua", "retain_ra", "test_ta", "forget_mia_efficacy")


@dataclass
class ClassifierView:
    """What a classifier metric reads about one data set."""

    role: str
    probs: np.ndarray  # [n, classes] softmax outputs
    labels: np.ndarray  # [n] true classes
    member_conf: np.ndarray  # true-class confidence of retained training samples (MIA members)
    nonmember_conf: np.ndarray  # true-class confidence of test samples (MIA non-members)

    @property
    def correct(self) -> np.ndarray:
        return (self.probs.argmax(1) == self.labels).astype(float)

    @property
    def true_conf(self) -> np.ndarray:
        return self.probs[np.arange(len(self.labels)), self.labels]


def points(values: np.ndarray, role: str) -> float:
    return float(100.0 * np.mean(values))


def ece(confidence: np.ndarray, correct: np.ndarray, bins: int = 15) -> float:
    """Expected calibration error: sum over equal-width confidence bins of
    (bin size / n) * |accuracy in bin - mean confidence in bin| (Guo et al. 2017)."""
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.searchsorted(edges, confidence, side="left") - 1, 0, bins - 1)
    total = 0.0
    for b in range(bins):
        rows = which == b
        if rows.any():
            total += rows.mean() * abs(correct[rows].mean() - confidence[rows].mean())
    return float(total)


def svc_attack(member_conf: np.ndarray, nonmember_conf: np.ndarray, target_conf: np.ndarray) -> np.ndarray:
    """Confidence-based membership attack of Jia et al. 2023 (their SVC_MIA): an RBF SVM
    (C=3, gamma 'auto') on the true-class confidence, trained on members (retained training
    samples, as many as there are non-members) against non-members (test samples); 1 where it
    calls a target sample a member."""
    from sklearn.svm import SVC

    n = min(len(member_conf), len(nonmember_conf))
    x = np.concatenate([member_conf[:n], nonmember_conf[:n]])[:, None]
    y = np.concatenate([np.ones(n), np.zeros(n)])
    return SVC(C=3, gamma="auto", kernel="rbf").fit(x, y).predict(target_conf[:, None])


@metric("ua", suite="classifier", direction=TOWARD_RETRAIN, range="[0, 100]", title="UA",
        roles=("forget",), headline=("forget",), aggregate=points, family="classifier",
        description="unlearning accuracy: 100 - accuracy on the forget set (the retrained "
                    "model's is the target, not 100)", source=JIA)
def unlearning_accuracy(view: ClassifierView) -> PerItem:
    return PerItem(1.0 - view.correct)


@metric("ra", suite="classifier", direction="higher", range="[0, 100]", title="RA",
        roles=("retain",), headline=("retain",), aggregate=points, family="classifier",
        description="remaining accuracy: accuracy on the retained training samples", source=JIA)
def remaining_accuracy(view: ClassifierView) -> PerItem:
    return PerItem(view.correct)


@metric("ta", suite="classifier", direction="higher", range="[0, 100]", title="TA",
        roles=("utility",), headline=("utility",), aggregate=points, family="classifier",
        description="test accuracy: accuracy on never-trained samples (of the kept classes "
                    "under class-wise forgetting)", source=JIA)
def test_accuracy(view: ClassifierView) -> PerItem:
    return PerItem(view.correct)


@metric("mia_efficacy", suite="classifier", direction=TOWARD_RETRAIN, range="[0, 100]",
        title="MIA efficacy", roles=("forget",), headline=("forget",), aggregate=points,
        family="classifier",
        description="share of forget samples a confidence-based attack (SVM trained on retained "
                    "vs test confidences) calls non-members; closer to the retrained model's is "
                    "better", source=JIA)
def mia_efficacy(view: ClassifierView) -> PerItem:
    return PerItem(1.0 - svc_attack(view.member_conf, view.nonmember_conf, view.true_conf))


@metric("ece", suite="classifier", direction="lower", range="[0, 1]", title="ECE",
        roles=("forget", "retain", "utility"), family="classifier",
        description="expected calibration error (15 bins); unlearning should not leave a "
                    "miscalibrated model", source="Guo et al. 2017, On Calibration of Modern Neural Networks")
def calibration(view: ClassifierView) -> float:
    return ece(view.probs.max(1), view.correct)


@metric("avg_gap", suite="derived", direction="lower", range="[0, 100]", title="Avg. gap",
        headline=("model",), family="classifier",
        description="mean |difference| to the retrained model over UA, RA, TA and MIA efficacy",
        source=JIA)
def avg_gap(res: dict[str, Any], reference: dict[str, Any] | None) -> float | str:
    if reference is None:
        return "not computed: needs the retrained model's results as reference"
    if not _same_forget_set(res, reference):
        return "not computed: the reference was measured on another forget set"
    mine, theirs = _flat(res), _flat(reference)
    missing = [k for k in GAP_KEYS if not isinstance(mine.get(k), float) or not isinstance(theirs.get(k), float)]
    if missing:
        return f"not computed: {missing[0]} missing in the results or the reference"
    return float(np.mean([abs(mine[k] - theirs[k]) for k in GAP_KEYS]))


@metric("run_time", suite="derived", direction="lower", range="[0, inf) s", title="Run time (s)",
        headline=("model",), family="classifier", extra_titles={"run_time_ratio": "Run time / reference's"},
        description="seconds the unlearning run took (from the model's provenance), and its ratio "
                    "to the reference's (the retrained model's: run-time efficiency)", source=JIA)
def run_time(res: dict[str, Any], reference: dict[str, Any] | None) -> dict[str, Any] | str:
    mine = res.get("timing", {}).get("run_seconds")
    if not isinstance(mine, float):
        return "not computed: the model's provenance records no run time"
    theirs = (reference or {}).get("timing", {}).get("run_seconds")
    if reference is not None and not _same_forget_set(res, reference):
        ratio = "not computed: the reference was measured on another forget set"
    else:
        ratio = mine / theirs if isinstance(theirs, float) and theirs > 0 else "not computed: needs a reference run time"
    return {"run_time": mine, "run_time_ratio": ratio}


def _same_forget_set(res: dict[str, Any], reference: dict[str, Any]) -> bool:
    """Both results measured the same forget samples (by id)."""
    def ids(r: dict[str, Any]) -> list | None:
        return r.get("datasets", {}).get("forget", {}).get("per_item", {}).get("id")

    return ids(res) is not None and sorted(ids(res)) == sorted(ids(reference) or [])


def _flat(res: dict[str, Any]) -> dict[str, Any]:
    return {f"{name}_{k}": v for name, d in res["datasets"].items() for k, v in d["aggregate"].items()}
