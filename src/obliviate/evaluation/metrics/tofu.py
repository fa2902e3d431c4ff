"""TOFU's per-dataset metrics (Maini et al. 2024) and the memorization pair (EM, ES)."""

from __future__ import annotations

import numpy as np

from ..tofu_math import (
    normalized_prob,
    rouge_1_recall,
    rouge_l,
    truth_ratio,
    truth_ratio_forget_score,
    truth_ratio_utility_score,
)
from ..views import DatasetView
from .base import PerItem, metric

TOFU = "Maini et al. 2024, TOFU"


@metric("prob", suite="tofu", direction="per-role", range="[0, 1]", title="prob",
        reads=("answer", "perturbed"), utility_component=True,
        headline=("forget", "retain", "utility"),
        description="p(answer|question) = exp(-mean token NLL); on utility sets normalised "
                    "against the perturbed answers: p / (p + sum p_perturbed)", source=TOFU)
def prob(view: DatasetView) -> np.ndarray:
    gt = view.stats("answer")
    pert = view.perturbed_nll()
    if view.role == "utility" and pert is not None:
        return normalized_prob(gt.nll_mean, pert)
    return gt.prob


@metric("rougeL_recall", suite="tofu", direction="per-role", range="[0, 1]", title="ROUGE-L",
        reads=("generation",), utility_component=True, headline=("forget", "retain"),
        description="ROUGE-L recall of the greedy answer vs the true answer (rouge_score, "
                    "stemming)", source=TOFU)
def rouge_recall(view: DatasetView) -> PerItem:
    gens = view.generations()
    scores = [rouge_l(ex.answer, g)[0] for ex, g in zip(view.examples, gens, strict=True)]
    return PerItem(scores, {"generation": gens})


@metric("rouge1_recall", suite="tofu", direction="per-role", range="[0, 1]", title="ROUGE-1",
        reads=("generation",), source="Qiu et al. 2024, PISTOL; Shen et al. 2025, LUNAR",
        description="ROUGE-1 recall of the greedy answer vs the true answer (rouge_score, "
                    "stemming): the unigram overlap the Deviation Score reads")
def rouge1_recall(view: DatasetView) -> np.ndarray:
    gens = view.generations()  # shared with ROUGE-L: one generation per dataset
    return np.array([rouge_1_recall(ex.answer, g) for ex, g in zip(view.examples, gens, strict=True)])


def _truth_ratio_score(r: np.ndarray, role: str) -> float:
    return truth_ratio_forget_score(r) if role == "forget" else truth_ratio_utility_score(r)


@metric("truth_ratio", suite="tofu", direction="per-role", range="[0, 1]", title="truth ratio",
        reads=("paraphrase", "perturbed"), aggregate=_truth_ratio_score, utility_component=True,
        forget_direction="match oracle", headline=("forget",),
        description="R = P(paraphrase) / geometric-mean P(perturbed); forget: mean min(R, 1/R) "
                    "(1 = cannot tell true from false); retain/utility: mean max(0, 1 - 1/R)",
        source=TOFU)
def truth_ratios(view: DatasetView) -> PerItem | None:
    pert = view.perturbed_nll()
    if pert is None:
        return None  # no perturbed answers: nothing to compare the truth with
    para = view.stats("paraphrase").nll_mean
    return PerItem(truth_ratio(para, pert),
                   {"nll_paraphrase": para.tolist(), "nll_perturbed": pert.tolist()})


@metric("exact_memorization", suite="tofu", direction="per-role", range="[0, 1]", title="EM",
        reads=("answer",), also=("memorization",), source="Tirumala et al. 2022; OpenUnlearning",
        description="share of answer tokens whose teacher-forced argmax equals the label")
def exact_memorization(view: DatasetView) -> np.ndarray:
    return view.stats("answer").em


@metric("extraction_strength", suite="tofu", direction="per-role", range="[0, 1]", title="ES",
        reads=("answer",), also=("memorization",), source="Carlini et al. 2021; OpenUnlearning",
        description="1 - k/|y|, k the first position from which the teacher-forced argmax "
                    "reproduces the rest of the answer")
def extraction_strength(view: DatasetView) -> np.ndarray:
    return view.stats("answer").es
