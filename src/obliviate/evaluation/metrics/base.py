"""What a metric is: one registered function that binds its computation, its aggregation and
its direction. Suites, results files, `obliviate ls metrics`, the report's columns and the
ledger's measurements all read this registry, so adding a metric is writing one function.

Four kinds, by what the function reads (`suite`):
- per-item metrics of a dataset (`tofu`, `memorization`): `compute(view: DatasetView)` returns
  per-item values (or None: not applicable to this dataset), aggregated by `aggregate`;
- membership attacks (`mia`): `compute(side: SideView, view: MembershipView)` returns each
  item's membership score (higher = "was trained on"); the aggregate is the ROC AUC of members
  against non-members;
- `muse`: `compute(view: MuseView)` returns per-item values, aggregated by their mean;
- `rwku`: like `tofu`, per-item values of a dataset (the suite's probe and instruction sets);
- `classifier`: `compute(view: ClassifierView)` of one classifier data set returns per-item
  values (aggregated by `aggregate`) or one number for the whole set (ECE);
- `derived`: `compute(results, reference)` returns a model-level number (or a dict of numbers,
  the first under the metric's name) from a results file, never from a model.
`family` says which models a metric measures ("lm" or "classifier"): derived metrics run only
on results of their family.
A value that cannot be computed is a string saying why ("not computed: ..."), never None.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np

from ...registry import Registry

SUITES = ("tofu", "memorization", "mia", "muse", "rwku", "classifier", "derived")
ARROWS = {"higher": "↑", "lower": "↓"}


class PerItem(NamedTuple):
    """A metric's per-item values, plus further per-item columns it wants kept in the results
    (e.g. the generations behind a ROUGE score)."""

    values: Any
    extra: dict[str, Any] = {}


@dataclass(frozen=True)
class Metric:
    name: str
    suite: str
    direction: str  # higher | lower | per-role (lower on forget, higher elsewhere) | free text
    range: str
    description: str
    source: str
    compute: Callable[..., Any]
    title: str = ""  # column title in reports (default: the name)
    reads: tuple[str, ...] = ()  # answer | paraphrase | perturbed | generation
    aggregate: Callable[[np.ndarray, str], float] | None = None  # (values, role) -> number
    roles: tuple[str, ...] = ("forget", "retain", "utility")  # datasets it applies to
    headline: tuple[str, ...] = ()  # roles whose value is a column of the report's main table
    forget_direction: str = ""  # shown on forget sets instead of the arrow (truth ratio)
    utility_component: bool = False  # enters TOFU's model utility (harmonic mean)
    extra_titles: dict[str, str] = field(default_factory=dict)  # titles of extra numbers
    also: tuple[str, ...] = ()  # further suites that run it (memorization: EM and ES)
    optional: bool = False  # runs only when its input is given (a reference model, GradNorm)
    family: str = "lm"  # lm | classifier: the models it measures

    def arrow(self, role: str | None = None) -> str:
        """The direction as a reader sees it in a table."""
        if role == "forget" and self.forget_direction:
            return self.forget_direction
        if self.direction == "per-role":
            return "↓" if role == "forget" else "↑"
        return ARROWS.get(self.direction, self.direction)

    def combine(self, values: Any, role: str) -> float:
        if self.aggregate is not None:
            return float(self.aggregate(np.asarray(values, dtype=float), role))
        return float(np.mean(np.asarray(values, dtype=float)))


METRICS: Registry[Metric] = Registry("metric")
_ORDER: list[str] = []  # registration order: the order of report columns and listings


def metric(name: str, *, suite: str, direction: str, range: str, description: str, source: str,
           **options: Any) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Register the decorated function as metric `name` (see the module docstring)."""
    if suite not in SUITES:
        raise ValueError(f"metric {name}: unknown suite '{suite}' ({', '.join(SUITES)})")

    def decorator(fn: Callable[..., Any]) -> Callable[..., Any]:
        METRICS.register(name)(Metric(name=name, suite=suite, direction=direction, range=range,
                                      description=description, source=source, compute=fn,
                                      title=options.pop("title", name), **options))
        _ORDER.append(name)
        return fn

    return decorator


def unregister(name: str) -> None:
    """Remove a metric (tests register throwaway metrics and clean up after themselves)."""
    METRICS.unregister(name)
    _ORDER.remove(name)


def in_order(suite: str | None = None) -> list[Metric]:
    """Registered metrics by suite (in SUITES order), then in registration order; optionally
    only those one suite runs."""
    ranked = sorted(_ORDER, key=lambda n: (SUITES.index(METRICS.get(n).suite), _ORDER.index(n)))
    return [m for m in (METRICS.get(n) for n in ranked)
            if suite is None or m.suite == suite or suite in m.also]


def lookup(key: str, role: str | None = None) -> tuple[str, str]:
    """(title, direction arrow) of an aggregate key, a registered metric or an extra number of
    one; unknown keys (results of another version) show as they are."""
    if key in METRICS:
        m = METRICS.get(key)
        return m.title, m.arrow(role)
    for m in in_order():
        if key in m.extra_titles:
            return m.extra_titles[key], m.arrow(role)
    return key, ""
