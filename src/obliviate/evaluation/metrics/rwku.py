"""The rwku suite's per-item metrics: probe accuracy on real-world knowledge probes (Jin et
al. 2024, RWKU; accuracy as in Doshi & Stickland 2024) and the fluency of open replies (the
n-gram entropy of Meng et al. 2022, ROME, which RWKU reports as fluency)."""

from __future__ import annotations

import math
import re
from collections import Counter
from typing import Any

import numpy as np

from ...data.realworld import ADVERSARIAL, DIRECT, knows
from ..views import DatasetView
from .base import PerItem, metric

RWKU = "Jin et al. 2024, RWKU"


def ngram_entropy(text: str, weights: dict[int, float] | None = None) -> float:
    """Weighted n-gram entropy (bits) of a text's lowercased words: sum over n of w_n * H_n,
    H_n the Shannon entropy of the n-gram frequencies; ROME's weights 2/3 (bigrams) and 4/3
    (trigrams). A text too short for an order contributes 0 for it; repetition lowers it."""
    weights = weights or {2: 2 / 3, 3: 4 / 3}
    words = re.findall(r"\w+", text.lower())
    total = 0.0
    for n, w in weights.items():
        grams = Counter(tuple(words[i:i + n]) for i in range(len(words) - n + 1))
        count = sum(grams.values())
        if count:
            total += w * -sum(c / count * math.log2(c / count) for c in grams.values())
    return total


@metric("probe_accuracy", suite="rwku", direction="per-role", range="[0, 1]", title="probe acc",
        reads=("generation",), source=f"{RWKU}; Doshi & Stickland 2024",
        description="share of probes whose greedy reply contains an accepted answer (whole words, "
                    "case and accents ignored; a multiple-choice reply that also names a wrong "
                    "option does not count)")
def probe_accuracy(view: DatasetView) -> PerItem | None:
    if not view.examples or not all(ex.accepted for ex in view.examples):
        return None  # not a probe set
    gens = view.generations()
    return PerItem([float(knows(g, ex.accepted, ex.perturbed_answers))
                    for ex, g in zip(view.examples, gens, strict=True)], {"generation": gens})


@metric("fluency", suite="rwku", direction="higher", range="[0, ~8] bits", title="fluency",
        reads=("generation",), roles=("utility",), source=f"Meng et al. 2022 (ROME); {RWKU}",
        description="weighted bigram and trigram entropy of the greedy reply to an open "
                    "instruction (2/3 H2 + 4/3 H3, bits): low when the model repeats itself")
def fluency(view: DatasetView) -> PerItem | None:
    if not view.examples or any(ex.kind != "instruction" for ex in view.examples):
        return None  # only the suite's open instructions
    gens = view.generations()
    return PerItem([ngram_entropy(g) for g in gens], {"generation": gens})


# ---------------------------------------------------------------------------- model level
def _accuracy(res: dict[str, Any], prefix: str) -> dict[str, float]:
    """dataset name -> probe accuracy, for the rwku datasets whose name starts with `prefix`."""
    return {n: d["aggregate"]["probe_accuracy"] for n, d in res["datasets"].items()
            if n.startswith(prefix) and isinstance(d["aggregate"].get("probe_accuracy"), float)}


def _direct(acc: dict[str, float], prefix: str) -> list[float]:
    return [acc[f"{prefix}{k}"] for k in DIRECT if f"{prefix}{k}" in acc]


@metric("rwku_forget", suite="derived", direction="lower", range="[0, 1]", title="RWKU forget (FB, QA)",
        headline=("model",), extra_titles={"rwku_forget_adversarial": "RWKU forget (adversarial)"},
        description="mean probe accuracy on the target's fill-in-the-blank and question probes; "
                    "adversarial: the mean over the adversarial kinds measured", source=RWKU)
def rwku_forget(res: dict[str, Any], reference: dict[str, Any] | None) -> dict[str, float] | str:
    acc = _accuracy(res, "rwku_forget_")
    direct = _direct(acc, "rwku_forget_")
    if not direct:
        return "not computed: no rwku forget probes (the target has no probe record)"
    adv = [acc[f"rwku_forget_{k}"] for k in ADVERSARIAL if f"rwku_forget_{k}" in acc]
    out = {"rwku_forget": float(np.mean(direct))}
    if adv:
        out["rwku_forget_adversarial"] = float(np.mean(adv))
    return out


@metric("rwku_neighbour", suite="derived", direction="higher", range="[0, 1]",
        title="RWKU neighbours (FB, QA)", headline=("model",), source=RWKU,
        description="mean probe accuracy on the neighbours' fill-in-the-blank and question probes")
def rwku_neighbour(res: dict[str, Any], reference: dict[str, Any] | None) -> float | str:
    direct = _direct(_accuracy(res, "rwku_neighbour_"), "rwku_neighbour_")
    return float(np.mean(direct)) if direct else "not computed: no rwku neighbour probes"
