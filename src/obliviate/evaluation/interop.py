"""Results from other tools' evaluation logs: TOFU's eval-log folders and OpenUnlearning's
`*_EVAL.json`. Both become ordinary obliviate Results, so `derive` (forget quality, model
utility) treats them like our own runs: a published log can be the reference for a new model.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ..data.files import read_json
from ..errors import ObliviateError
from .results import SCHEMA, load_results, make_results
from .tofu_math import (
    normalized_prob,
    truth_ratio,
    truth_ratio_forget_score,
    truth_ratio_utility_score,
)

# TOFU log file -> (our dataset name, role)
TOFU_LOGS = {
    "eval_log_forget.json": ("forget", "forget"),
    "eval_log.json": ("retain", "retain"),
    "eval_real_author_wo_options.json": ("real_authors", "utility"),
    "eval_real_world_wo_options.json": ("world_facts", "utility"),
}
_TOFU_KEYS = ("avg_gt_loss", "avg_paraphrased_loss", "average_perturb_loss", "rougeL_recall")


def _read_json(path: Path) -> Any:
    if not path.is_file():
        raise ObliviateError(f"{path}: file not found")
    return read_json(path)


def _tofu_dataset(path: Path, role: str) -> dict[str, Any]:
    """One TOFU eval log -> a Results dataset (TOFU's per-item statistics, its aggregation)."""
    log = _read_json(path)
    missing = [k for k in _TOFU_KEYS if k not in log]
    if missing:
        raise ObliviateError(f"{path}: not a TOFU eval log (missing {', '.join(missing)})")
    ids = list(log["avg_gt_loss"])
    gt = np.array([log["avg_gt_loss"][i] for i in ids], dtype=float)
    para = np.array([log["avg_paraphrased_loss"][i] for i in ids], dtype=float)
    pert = np.array([log["average_perturb_loss"][i] for i in ids], dtype=float)  # [N, K]
    rouge = [float(log["rougeL_recall"][i]) for i in ids]
    r = truth_ratio(para, pert)
    # TOFU: forget/retain Prob is p(answer); utility sets normalise against perturbed answers
    prob = normalized_prob(gt, pert) if role == "utility" else np.exp(-gt)
    per_item: dict[str, Any] = {"id": ids, "nll_answer": gt.tolist(), "nll_paraphrase": para.tolist(),
                                "nll_perturbed": pert.tolist(), "truth_ratio": r.tolist(),
                                "prob": prob.tolist(), "rougeL_recall": rouge}
    if "generated_text" in log:
        per_item["generation"] = [log["generated_text"][i][1] for i in ids]
    tr = truth_ratio_forget_score(r) if role == "forget" else truth_ratio_utility_score(r)
    agg = {"prob": float(prob.mean()), "rougeL_recall": float(np.mean(rouge)), "truth_ratio": tr}
    return {"role": role, "n": len(ids), "aggregate": agg, "per_item": per_item}


def import_tofu(folder: str | Path, name: str | None = None) -> dict[str, Any]:
    """A TOFU evaluation-log folder (eval_log_forget.json, eval_log.json, and the real-authors
    and world-facts logs) as a Results dict. Missing logs are skipped, but the forget log is
    required."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ObliviateError(f"{folder}: not a folder of TOFU eval logs")
    present = {f: v for f, v in TOFU_LOGS.items() if (folder / f).is_file()}
    if "eval_log_forget.json" not in present:
        raise ObliviateError(f"{folder}: no eval_log_forget.json (expected TOFU logs: "
                             f"{', '.join(TOFU_LOGS)})")
    datasets = {ds: _tofu_dataset(folder / f, role) for f, (ds, role) in present.items()}
    res = make_results(name or folder.name, str(folder), datasets,
                       {"imported_from": str(folder), "format": "tofu eval logs"}, seed=None)
    res["suites"] = ["tofu (imported)"]
    return res


# OpenUnlearning TOFU metric name -> (our dataset, our aggregate key)
OPENUNLEARNING_TOFU = {
    "forget_Q_A_Prob": ("forget", "prob"),
    "forget_Q_A_ROUGE": ("forget", "rougeL_recall"),
    "forget_truth_ratio": ("forget", "truth_ratio"),
    "retain_Q_A_Prob": ("retain", "prob"),
    "retain_Q_A_ROUGE": ("retain", "rougeL_recall"),
    "retain_Truth_Ratio": ("retain", "truth_ratio"),
    "ra_Q_A_Prob_normalised": ("real_authors", "prob"),
    "ra_Q_A_ROUGE": ("real_authors", "rougeL_recall"),
    "ra_Truth_Ratio": ("real_authors", "truth_ratio"),
    "wf_Q_A_Prob_normalised": ("world_facts", "prob"),
    "wf_Q_A_ROUGE": ("world_facts", "rougeL_recall"),
    "wf_Truth_Ratio": ("world_facts", "truth_ratio"),
}
_ROLES = {"forget": "forget", "retain": "retain", "real_authors": "utility", "world_facts": "utility"}


# the per-item field of each OpenUnlearning metric: probabilities keep "prob" (and "avg_loss"),
# ROUGE "rougeL_recall" (and the other ROUGE scores), truth ratios "score"
_ITEM_FIELDS = ("score", "prob", "rougeL_recall")


def _item_value(path: Path, metric: str, item: Any) -> float:
    for key in _ITEM_FIELDS:
        if isinstance(item, dict) and key in item:
            return float(item[key])
    raise ObliviateError(f"{path}: {metric}: an item of value_by_index has none of the fields "
                         f"{', '.join(_ITEM_FIELDS)} (got {item!r:.80})")


def import_openunlearning(path: str | Path, name: str | None = None) -> dict[str, Any]:
    """An OpenUnlearning `TOFU_EVAL.json` (metric -> {agg_value, value_by_index}) as Results.

    Aggregates are taken as OpenUnlearning computed them. OpenUnlearning stores each item's
    truth ratio as P(perturbed) / P(paraphrased); obliviate's per-item R is the inverse
    (TOFU's convention), so it is inverted on import. The forget-quality KS test does not
    depend on that orientation."""
    path = Path(path)
    log = _read_json(path)
    if not isinstance(log, dict) or not any(
            isinstance(v, dict) and "agg_value" in v for v in log.values()):
        raise ObliviateError(f"{path}: not an OpenUnlearning *_EVAL.json (no metric with agg_value)")
    datasets: dict[str, dict[str, Any]] = {}
    for metric, (ds, key) in OPENUNLEARNING_TOFU.items():
        if metric not in log:
            continue
        entry = datasets.setdefault(ds, {"role": _ROLES[ds], "n": 0, "aggregate": {}, "per_item": {}})
        entry["aggregate"][key] = float(log[metric]["agg_value"])
        by_index = log[metric].get("value_by_index") or {}
        if by_index:
            ids = list(by_index)
            values = [_item_value(path, metric, by_index[i]) for i in ids]
            if key == "truth_ratio":
                values = [1.0 / v if v > 0 else float("inf") for v in values]
            entry["per_item"][key] = values
            entry["per_item"].setdefault("id", ids)
            entry["n"] = len(ids)
    if "forget" not in datasets:
        raise ObliviateError(f"{path}: no forget-set metrics (expected e.g. forget_truth_ratio)")
    res = make_results(name or path.stem, str(path), datasets,
                       {"imported_from": str(path), "format": "openunlearning eval json"}, seed=None)
    res["suites"] = ["tofu (imported)"]
    if "model_utility" in log:  # kept for comparison with what we derive
        res["reported"] = {"model_utility": log["model_utility"]["agg_value"]}
    return res


def load_any_results(path: str | Path) -> dict[str, Any]:
    """An obliviate Results file, an OpenUnlearning *_EVAL.json, or a TOFU eval-log folder."""
    path = Path(path)
    if path.is_dir():
        return import_tofu(path)
    data = _read_json(path)
    if isinstance(data, dict) and data.get("schema") == SCHEMA:
        return load_results(path)
    return import_openunlearning(path)
