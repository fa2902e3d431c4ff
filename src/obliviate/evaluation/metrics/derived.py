"""Model-level metrics derived from a results file (and a reference's), never from a model."""

from __future__ import annotations

from typing import Any

import numpy as np

from .. import mia
from ..tofu_math import deviation_score as ds_formula
from ..tofu_math import forget_quality as ks_forget_quality
from ..tofu_math import model_utility as harmonic_utility
from .base import in_order, metric

NOT_COMPUTED = "not computed: needs a reference"
TOFU = "Maini et al. 2024, TOFU"


def role_sets(res: dict[str, Any], role: str) -> list[tuple[str, dict[str, Any]]]:
    """The datasets of `role` that enter model-level numbers (not those reported beside them:
    dependent queries, rwku probe sets)."""
    return [(n, d) for n, d in res["datasets"].items()
            if d["role"] == role and d.get("aggregated", True)]


def forget_set(res: dict[str, Any]) -> tuple[str, dict[str, Any]] | None:
    sets = role_sets(res, "forget")
    return sets[0] if len(sets) == 1 else None


@metric("forget_quality", suite="derived", direction="higher", range="[0, 1]",
        title="Forget quality", headline=("model",), extra_titles={"forget_quality_ks": "KS statistic"},
        description="p-value of the KS test between forget-set truth ratios of the model and of "
                    "the oracle (retrained without the forget set); 1 = indistinguishable from "
                    "the oracle", source=TOFU)
def forget_quality(res: dict[str, Any], reference: dict[str, Any] | None) -> dict[str, Any] | str:
    if reference is None:
        return NOT_COMPUTED
    mine, theirs = forget_set(res), forget_set(reference)
    if mine is None or theirs is None:
        return "not computed: the results and the reference must each hold exactly one forget set"
    if "truth_ratio" not in mine[1]["per_item"] or "truth_ratio" not in theirs[1]["per_item"]:
        return "not computed: forget set has no perturbed answers"
    p, ks = ks_forget_quality(np.array(mine[1]["per_item"]["truth_ratio"]),
                              np.array(theirs[1]["per_item"]["truth_ratio"]))
    return {"forget_quality": p, "forget_quality_ks": ks}


@metric("model_utility", suite="derived", direction="higher", range="[0, 1]",
        title="Model utility", headline=("model",),
        description="harmonic mean of the utility components (prob, ROUGE-L, truth ratio) on "
                    "the retain and utility sets", source=TOFU)
def model_utility(res: dict[str, Any], reference: dict[str, Any] | None) -> float | str:
    keys = [m.name for m in in_order() if m.utility_component]
    comps = [d["aggregate"][k] for role in ("retain", "utility") for _, d in role_sets(res, role)
             for k in keys if isinstance(d["aggregate"].get(k), float)]
    return harmonic_utility(comps) if comps else "not computed: no retain or utility set"


@metric("privleak", suite="derived", direction="0 is ideal", range="[-100, +inf)",
        title="PrivLeak", headline=("model",),
        description="(AUC_oracle - AUC_model) / (1 - AUC_oracle) x 100 on Min-K% AUCs, MUSE's "
                    "PrivLeak in our AUC orientation; negative = still leaks, positive = "
                    "over-unlearned", source="Shi et al. 2024, MUSE")
def privleak(res: dict[str, Any], reference: dict[str, Any] | None) -> float | str:
    mine = role_sets(res, "mia")
    if not mine:
        return "not computed: no mia suite in these results"
    if reference is None:
        return NOT_COMPUTED
    theirs = role_sets(reference, "mia")
    if not theirs:
        return "not computed: the reference has no mia suite"
    ref_auc = theirs[0][1]["aggregate"]["auc_min_k"]
    if ref_auc >= 1.0:  # MUSE divides by the reference's AUC in its orientation: 1 - ref_auc
        return "not computed: the reference separates members perfectly (AUC 1), PrivLeak is undefined"
    return mia.privleak(mine[0][1]["aggregate"]["auc_min_k"], ref_auc)


@metric("deviation_score", suite="derived", direction="lower", range="[0, 141]",
        title="Deviation score", headline=("model",),
        description="100 x the distance of (forget ROUGE-1, retain ROUGE-1) from the ideal (0, 1): "
                    "forgetting and keeping in one number, as LUNAR reports on PISTOL",
        source="Shen et al. 2025, LUNAR; Qiu et al. 2024, PISTOL")
def deviation_score(res: dict[str, Any], reference: dict[str, Any] | None) -> float | str:
    forget, retain = forget_set(res), role_sets(res, "retain")
    f = forget[1]["aggregate"].get("rouge1_recall") if forget else None
    r = retain[0][1]["aggregate"].get("rouge1_recall") if retain else None
    if not (isinstance(f, float) and isinstance(r, float)):
        return "not computed: needs ROUGE-1 on one forget set and a retain set (tofu suite)"
    return ds_formula(f, r)
