"""Suites: which registered metrics run on which datasets, and the results entry of each.

A suite never names a metric: it runs every metric of the registry that belongs to it (see
metrics/base.py), after fetching, in one shared pass per dataset, everything they read.
Passes: for each dataset one teacher-forced sweep over answer, paraphrase and perturbed
answers (Engine.stats), and one batched greedy generation for ROUGE.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from tqdm.auto import tqdm

from . import mia
from .engine import Engine
from .metrics import PerItem, in_order
from .views import DatasetView, EvalSet, MembershipView, MuseView

ROLES = ("forget", "retain", "utility")
__all__ = ["ROLES", "EvalSet", "evaluate_memorization", "evaluate_mia", "evaluate_muse",
           "evaluate_set", "evaluate_tofu"]


def _split(out: Any) -> tuple[Any, dict[str, Any]]:
    return (out.values, out.extra) if isinstance(out, PerItem) else (out, {})


def evaluate_set(engine: Engine, es: EvalSet, max_new_tokens: int = 48,
                 suite: str = "tofu") -> dict[str, Any]:
    """Per-item values and aggregates of one dataset: every `suite` metric for its role."""
    view = DatasetView(engine, es, max_new_tokens)
    metrics = [m for m in in_order(suite) if es.role in m.roles]
    view.prefetch({r for m in metrics for r in m.reads})
    gt = view.stats("answer")
    per_item: dict[str, Any] = {"id": [ex.id for ex in es.examples],
                                "nll_answer": gt.nll_mean.tolist(),
                                "n_tokens": gt.n_tokens.astype(int).tolist()}
    agg: dict[str, Any] = {}
    for m in metrics:
        out = m.compute(view)
        if out is None:  # does not apply to this dataset (e.g. no perturbed answers)
            continue
        if isinstance(out, str):
            agg[m.name] = out
            continue
        values, extra = _split(out)
        values = np.asarray(values, dtype=float)
        per_item.update({m.name: values.tolist(), **extra})
        agg[m.name] = m.combine(values, es.role)
    out = {"role": es.role, "n": len(es.examples), "aggregate": agg, "per_item": per_item}
    return out if es.aggregated else {**out, "aggregated": False}


def evaluate_tofu(engine: Engine, sets: list[EvalSet], max_new_tokens: int = 48,
                  progress: bool = True) -> dict[str, dict[str, Any]]:
    """The TOFU suite on each forget / retain / utility set. The sets' answers are generated
    first, all in one pool: long answers of different sets then share batches."""
    metrics = in_order("tofu")
    engine.generate_together({es.name: es.examples for es in sets
                              if any("generation" in m.reads and es.role in m.roles for m in metrics)},
                             max_new_tokens)
    out = {}
    for es in tqdm(sets, desc="evaluating", disable=not progress, leave=False):
        out[es.name] = evaluate_set(engine, es, max_new_tokens)
    return out


def evaluate_memorization(engine: Engine, sets: list[EvalSet]) -> dict[str, dict[str, Any]]:
    """The memorization suite alone (no generation) on the forget and retain sets."""
    return {es.name: evaluate_set(engine, es, suite="memorization")
            for es in sets if es.role in ("forget", "retain") and es.aggregated}


def evaluate_mia(engine: Engine, members: EvalSet, nonmembers: EvalSet, k: float = 0.4,
                 reference: Engine | None = None, gradnorm: bool = False) -> dict[str, Any]:
    """The MIA suite: every registered attack's scores of members (the forget set) and
    non-members (a holdout set never trained on), and its ROC AUC. Attacks that need what was
    not given (a reference model, GradNorm's backward passes) are left out."""
    view = MembershipView(engine, members, nonmembers, k, reference, gradnorm)
    per_item: dict[str, Any] = {"member_id": [ex.id for ex in members.examples],
                                "nonmember_id": [ex.id for ex in nonmembers.examples]}
    agg: dict[str, float] = {}
    for m in in_order("mia"):
        scores = {side.name: m.compute(side, view) for side in view.sides()}
        if any(s is None for s in scores.values()):
            continue
        attack = m.name.removeprefix("auc_")
        for side, s in scores.items():
            per_item[f"{side}_{attack}"] = np.asarray(s, dtype=float).tolist()
        agg[m.name] = mia.auc(scores["member"], scores["nonmember"])
    return {"role": "mia", "n": len(members.examples) + len(nonmembers.examples), "k": k,
            "members": members.name, "nonmembers": nonmembers.name, "aggregate": agg,
            "per_item": per_item}


def evaluate_muse(engine: Engine, passages: EvalSet, forget: EvalSet, retain: EvalSet,
                  shots: int = 3, verbmem_tokens: int = 128, knowmem_tokens: int = 32) -> dict[str, Any]:
    """MUSE's VerbMem and KnowMem metrics (ROUGE-L F1 without stemming)."""
    view = MuseView(engine, passages, forget, retain, shots, verbmem_tokens, knowmem_tokens)
    agg: dict[str, Any] = {}
    per_item: dict[str, Any] = {}
    for m in in_order("muse"):
        out = m.compute(view)
        if isinstance(out, str):
            agg[m.name] = out
            continue
        values, extra = _split(out)
        per_item.update({m.name: list(values), **extra})
        agg[m.name] = m.combine(values, "muse")
    return {"role": "muse", "n": len(passages.examples), "shots": shots,
            "rouge": "rougeL F1, no stemming (MUSE); the tofu suite's is rougeL recall, stemmed",
            "aggregate": agg, "per_item": per_item}
