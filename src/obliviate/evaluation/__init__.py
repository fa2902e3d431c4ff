"""Evaluation: a shared-pass engine, the metric registry, suites and Results files."""

from .engine import Engine, ItemStats
from .metrics import METRICS
from .results import derive, load_results, make_results, save_results
from .suite import evaluate_tofu
from .views import EvalSet

__all__ = ["METRICS", "Engine", "EvalSet", "ItemStats", "derive", "evaluate_tofu",
           "load_results", "make_results", "save_results"]
