"""Evaluation: a shared-pass engine, metric definitions, suites and Results files."""

from .engine import Engine, ItemStats
from .metrics import METRICS
from .results import derive, load_results, make_results, save_results
from .suite import EvalSet, evaluate_tofu

__all__ = ["METRICS", "Engine", "EvalSet", "ItemStats", "derive", "evaluate_tofu",
           "load_results", "make_results", "save_results"]
