"""Results files (one JSON per evaluated model) and metrics derived from them.

Derived metrics (metrics/derived.py) read Results, never models: model utility from a run's
own retain/utility aggregates, forget quality from its forget-set truth ratios against a
reference (oracle) Results. Without a reference the value is the string "not computed: needs a
reference".
"""

from __future__ import annotations

import datetime as _dt
import json
import platform
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any

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
    for m in in_order("derived"):
        value = m.compute(res, reference)
        out.update(value if isinstance(value, dict) else {m.name: value})
    return out


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
