"""Results files (one JSON per evaluated model) and metrics derived from them.

Derived metrics read Results, never models: model utility from a run's own retain/utility
aggregates, forget quality from its forget-set truth ratios against a reference (oracle)
Results. Without a reference the value is the string "not computed: needs a reference".
"""

from __future__ import annotations

import datetime as _dt
import json
import platform
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ObliviateError
from ..io import write_json_atomic
from .tofu_math import forget_quality, model_utility

SCHEMA = "obliviate.results/1"
NOT_COMPUTED = "not computed: needs a reference"
UTILITY_KEYS = ("prob", "rougeL_recall", "truth_ratio")


def versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for pkg in ("obliviate", "torch", "transformers", "accelerate", "peft", "tokenizers",
                "scipy", "scikit-learn", "rouge-score"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            continue
    return out


def git_sha() -> str | None:
    try:
        res = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                             timeout=5, cwd=Path(__file__).resolve().parent)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return res.stdout.strip() or None if res.returncode == 0 else None


def make_results(name: str, model: str, datasets: dict[str, Any], config: dict[str, Any],
                 seed: int | None, timing: dict[str, float] | None = None) -> dict[str, Any]:
    return {
        "schema": SCHEMA, "name": name, "model": model, "suite": "tofu",
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "seed": seed, "config": config, "versions": versions(), "git_sha": git_sha(),
        "timing": timing or {}, "datasets": datasets,
    }


def _role_sets(res: dict[str, Any], role: str) -> list[tuple[str, dict[str, Any]]]:
    return [(n, d) for n, d in res["datasets"].items() if d["role"] == role]


def forget_set(res: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    sets = _role_sets(res, "forget")
    if len(sets) != 1:
        raise ObliviateError(f"results '{res.get('name')}' must hold exactly one forget set "
                             f"(found {len(sets)})")
    return sets[0]


def derive(res: dict[str, Any], reference: dict[str, Any] | None = None) -> dict[str, Any]:
    """Headline numbers: role-prefixed aggregates, model_utility, forget_quality."""
    out: dict[str, Any] = {}
    for name, d in res["datasets"].items():
        for key, value in d["aggregate"].items():
            out[f"{name}_{key}"] = value
    comps = [d["aggregate"][k] for role in ("retain", "utility") for _, d in _role_sets(res, role)
             for k in UTILITY_KEYS if k in d["aggregate"]]
    out["model_utility"] = model_utility(comps) if comps else "not computed: no retain or utility set"
    if reference is None:
        out["forget_quality"] = NOT_COMPUTED
    else:
        _, mine = forget_set(res)
        _, theirs = forget_set(reference)
        if "truth_ratio" not in mine["per_item"] or "truth_ratio" not in theirs["per_item"]:
            out["forget_quality"] = "not computed: forget set has no perturbed answers"
        else:
            p, ks = forget_quality(np.array(mine["per_item"]["truth_ratio"]),
                                   np.array(theirs["per_item"]["truth_ratio"]))
            out["forget_quality"], out["forget_quality_ks"] = p, ks
    out["privleak"] = _privleak(res, reference)
    return out


def _privleak(res: dict[str, Any], reference: dict[str, Any] | None) -> float | str:
    """MUSE's PrivLeak from the Min-K% AUCs of the model's and the reference's MIA suites."""
    from .mia import privleak

    mine = [d for d in res["datasets"].values() if d["role"] == "mia"]
    if not mine:
        return "not computed: no mia suite in these results"
    if reference is None:
        return NOT_COMPUTED
    theirs = [d for d in reference["datasets"].values() if d["role"] == "mia"]
    if not theirs:
        return "not computed: the reference has no mia suite"
    ref_auc = theirs[0]["aggregate"]["auc_min_k"]
    if ref_auc >= 1.0:  # MUSE divides by the reference's AUC in its orientation: 1 - ref_auc
        return "not computed: the reference separates members perfectly (AUC 1), PrivLeak is undefined"
    return privleak(mine[0]["aggregate"]["auc_min_k"], ref_auc)


def save_results(res: dict[str, Any], path: str | Path) -> Path:
    return write_json_atomic(path, res)


def load_results(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise ObliviateError(f"results file not found: {path}")
    try:
        res = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ObliviateError(f"{path}: not valid JSON: {exc}") from None
    if not isinstance(res, dict) or res.get("schema") != SCHEMA:
        raise ObliviateError(f"{path}: not an obliviate results file (schema {SCHEMA})")
    return res
