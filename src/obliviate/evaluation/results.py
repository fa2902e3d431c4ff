"""Results files (one JSON per evaluated model) and metrics derived from them.

Derived metrics (metrics/derived.py) read Results, never models: model utility from a run's
own retain/utility aggregates, forget quality from its forget-set truth ratios against a
reference (oracle) Results. Without a reference the value is the string "not computed: needs a
reference".
"""

from __future__ import annotations

import datetime as _dt
import platform
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any

from ..data.files import read_json
from ..errors import ObliviateError
from ..io import write_json_atomic
from .metrics import derived, in_order

SCHEMA = "obliviate.results/1"


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
                 seed: int | None, timing: dict[str, float] | None = None,
                 suites: list[str] | None = None) -> dict[str, Any]:
    return {
        "schema": SCHEMA, "name": name, "model": model, "suites": suites or ["tofu"],
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "seed": seed, "config": config, "versions": versions(), "git_sha": git_sha(),
        "timing": timing or {}, "datasets": datasets,
    }


def forget_set(res: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    found = derived.forget_set(res)
    if found is None:
        raise ObliviateError(f"results '{res.get('name')}' must hold exactly one forget set")
    return found


def derive(res: dict[str, Any], reference: dict[str, Any] | None = None) -> dict[str, Any]:
    """Headline numbers: each dataset's aggregates prefixed by its name (forget_prob, ...),
    then every derived metric of the registry (model utility, forget quality, PrivLeak)."""
    out: dict[str, Any] = {}
    for name, d in res["datasets"].items():
        for key, value in d["aggregate"].items():
            out[f"{name}_{key}"] = value
    family = res.get("family", "lm")
    for m in in_order("derived"):
        if m.family != family:
            continue
        value = m.compute(res, reference)
        out.update(value if isinstance(value, dict) else {m.name: value})
    return out


def save_results(res: dict[str, Any], path: str | Path) -> Path:
    return write_json_atomic(path, res)


def load_results(path: str | Path, metrics: bool = False) -> dict[str, Any]:
    """A results file, its shape checked; `metrics`: it must hold the derived numbers a
    report shows (obliviate eval writes them; imported logs have none)."""
    path = Path(path)
    if not path.is_file():
        raise ObliviateError(f"results file not found: {path}")
    res = read_json(path)
    if not isinstance(res, dict) or res.get("schema") != SCHEMA:
        raise ObliviateError(f"{path}: not an obliviate results file (schema {SCHEMA})")
    problem = _shape_problem(res)
    if problem:
        raise ObliviateError(f"{path}: {problem}; write it again with obliviate eval or import")
    if metrics and "metrics" not in res:
        raise ObliviateError(f"{path}: no 'metrics' to report: a report shows what obliviate eval "
                             "derives, and imported logs have none (obliviate score shows theirs)")
    return res


_VALUE = (int, float, str, type(None))  # a metric's number, or the text saying why there is none


def _shape_problem(res: dict[str, Any]) -> str | None:
    """What reports and derived metrics read, checked once on load, so a hand-edited or
    truncated file fails naming its key instead of deep inside a metric."""
    if not isinstance(res.get("name"), str):
        return "'name' must be a string"
    datasets = res.get("datasets")
    if not isinstance(datasets, dict):
        return "'datasets' must be an object (dataset name -> its numbers)"
    for name, d in datasets.items():
        key = f"datasets.{name}"
        if not isinstance(d, dict):
            return f"'{key}' must be an object"
        if not isinstance(d.get("role"), str):
            return f"'{key}.role' must be a string"
        for field, kind in (("aggregate", _VALUE), ("per_item", list)):
            values = d.get(field)
            if not isinstance(values, dict):
                return f"'{key}.{field}' must be an object"
            wrong = next((k for k, v in values.items() if not isinstance(v, kind)), None)
            if wrong is not None:
                return (f"'{key}.{field}.{wrong}' must be "
                        f"{'a list' if kind is list else 'a number or a string'}")
        problem = _derived_inputs_problem(key, d)
        if problem:
            return problem
    metrics = res.get("metrics", {})
    if not isinstance(metrics, dict) or not all(isinstance(v, _VALUE) for v in metrics.values()):
        return "'metrics' must be an object of numbers and strings"
    return None


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _derived_inputs_problem(key: str, d: dict[str, Any]) -> str | None:
    """The numbers the derived metrics compute with (metrics/derived.py): the forget set's
    per-item truth ratios (forget quality's KS test) and the mia set's Min-K% AUC (PrivLeak)."""
    ratios = d["per_item"].get("truth_ratio")
    if d["role"] == "forget" and ratios is not None and not (ratios and all(map(_number, ratios))):
        return f"'{key}.per_item.truth_ratio' must be a non-empty list of numbers"
    if d["role"] == "mia" and not _number(d["aggregate"].get("auc_min_k")):
        return f"'{key}.aggregate.auc_min_k' must be a number"
    return None
