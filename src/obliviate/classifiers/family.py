"""Telling a classifier's folders from a language model's without loading torch: the CLI picks
its branch (commands.py) before any heavy import."""

from __future__ import annotations

from pathlib import Path

from ..config import raw_config
from ..data.files import read_json

MANIFEST = "classifier.json"  # a classifier benchmark folder's manifest
WEIGHTS = "model.safetensors"
PROVENANCE = "obliviate.json"


def is_classifier_benchmark(path: str | Path | None) -> bool:
    return bool(path) and (Path(path) / MANIFEST).is_file()


def is_classifier_model(path: str | Path | None) -> bool:
    if not path or not (Path(path) / PROVENANCE).is_file() or not (Path(path) / WEIGHTS).is_file():
        return False
    prov = read_json(Path(path) / PROVENANCE)
    return isinstance(prov, dict) and prov.get("family") == "classifier"


def family(config_path: str | None, overrides: list[str], model: str | None = None) -> str:
    """'classifier' when the run's benchmark or model folder is a classifier's, else 'lm'."""
    raw = raw_config(config_path, overrides)
    bench, mdl = raw.get("benchmark"), model or raw.get("model")
    if isinstance(bench, str) and is_classifier_benchmark(bench):
        return "classifier"
    if isinstance(mdl, str) and is_classifier_model(mdl):
        return "classifier"
    return "lm"
