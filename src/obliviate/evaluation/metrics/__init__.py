"""The metric registry. Importing this package registers every metric; a new metric is one
decorated function in one of these modules (or a module of its own imported here)."""

from . import classifier, derived, membership, muse, rwku, tofu  # noqa: F401  (registration at definition)
from .base import METRICS, Metric, PerItem, in_order, lookup, metric, unregister

__all__ = ["METRICS", "Metric", "PerItem", "in_order", "lookup", "metric", "unregister"]
