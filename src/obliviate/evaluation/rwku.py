"""The rwku suite (Jin et al. 2024, RWKU): a target's knowledge probed every way, by kind.

Datasets, each evaluated with the registry's `rwku` metrics (evaluation/metrics/rwku.py):
- `rwku_forget_<kind>` (role forget): the target's probes of one kind: fill-in-the-blank,
  question answering and the nine adversarial kinds (data/realworld.py);
- `rwku_neighbour_fb` / `_qa` (role retain): the same for the target's neighbours;
- `rwku_utility_qa` (role utility): questions about every other entity of the records;
- `rwku_fluency` (role utility): open instructions, scored by n-gram entropy;
- `rwku_mia`: the membership attacks on the synthesised corpus (members) against the same
  prompts' replies about other entities (non-members); only for a model from a target run
  (`obliviate unlearn target=...`), whose folder holds both corpora, or given `target_run=`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from ..data.examples import Example
from ..data.formats import example_from_row
from ..data.realworld import DIRECT, KINDS, EntityRecord, find, load_records, neighbours, probes
from ..errors import ObliviateError
from ..models import read_provenance
from ..registry import suggest
from .engine import Engine
from .suite import evaluate_mia, evaluate_set
from .views import EvalSet

PROBE_TOKENS = 32  # a probe's answer is a word or a name, after any preamble
FLUENCY_TOKENS = 64


@dataclass
class RwkuPlan:
    target: str
    neighbours: list[str]
    sets: list[EvalSet]
    corpus: list[Example] = field(default_factory=list)
    others: list[Example] = field(default_factory=list)


def instructions() -> list[Example]:
    """The open instructions shipped with the package (the fluency set)."""
    text = resources.files("obliviate").joinpath("resources/instructions.txt").read_text()
    return [Example(question=q.strip(), answer="", kind="instruction", id=f"instruction-{i}")
            for i, q in enumerate(text.splitlines()) if q.strip()]


def probe_sets(records: list[EntityRecord], target: str, near: list[str]) -> list[EvalSet]:
    """Forget probes by kind, neighbour FB/QA, other entities' QA and the fluency set."""
    rec = find(records, target)
    sets = []
    if rec is not None:
        made = probes(rec, records)
        sets += [EvalSet(f"rwku_forget_{k}", "forget", [p for p in made if p.kind == k], False)
                 for k in KINDS if any(p.kind == k for p in made)]
    near_recs = [r for r in (find(records, n) for n in near) if r is not None]
    for kind in DIRECT:
        items = [p for r in near_recs for p in probes(r, records, (kind,))]
        if items:
            sets.append(EvalSet(f"rwku_neighbour_{kind}", "retain", items, False))
    skip = {target.lower(), *(n.lower() for n in near)}
    util = [p for r in records if r.entity.lower() not in skip for p in probes(r, records, ("qa",))]
    if util:
        sets.append(EvalSet("rwku_utility_qa", "utility", util, False))
    return [*sets, EvalSet("rwku_fluency", "utility", instructions(), False)]


def target_run(source: str) -> dict[str, Any]:
    """The `target` provenance of a target run's folder ({} for anything else)."""
    if not source or not Path(source).is_dir():
        return {}
    try:
        return read_provenance(source).get("target") or {}
    except ObliviateError:
        return {}


def plan(target: str, probes_file: str, model: str, run: str = "") -> RwkuPlan:
    """What the suite evaluates: the target (given, or the run's), its neighbours (the run's,
    else the records'), the probe sets and, with a run, both corpora."""
    info = target_run(run) if run else target_run(model)
    if run and not info:
        raise ObliviateError(f"target_run={run} is not the output of `obliviate unlearn target=...`")
    name = " ".join(target.split()) or info.get("entity", "")
    if not name:
        raise ObliviateError("the rwku suite needs the target: target=\"NAME\" (or a model "
                             "written by `obliviate unlearn target=...`)")
    if info and info["entity"].lower() != name.lower():
        raise ObliviateError(f"target={name!r} but the target run forgot {info['entity']!r}")
    records = load_records(probes_file or ("" if info.get("probes", "shipped") == "shipped" else info["probes"]))
    if find(records, name) is None and not info:
        raise ObliviateError(f"target {name!r} has no probe record{suggest(name, [r.entity for r in records])} "
                             "and no target run was given: nothing to probe (give probes=FILE with "
                             "its record, or target_run=<the unlearn target=... output>)")
    near = info.get("neighbours") or [r.entity for r in neighbours(records, name)]
    rows = [example_from_row(r, "target run corpus") for r in info.get("corpus", [])]
    others = [example_from_row(r, "target run corpus") for r in info.get("others", [])]
    return RwkuPlan(name, near, probe_sets(records, name, near), rows, others)


def evaluate_rwku(engine: Engine, p: RwkuPlan, k: float = 0.4) -> dict[str, dict[str, Any]]:
    """Every rwku dataset's results (see the module doc)."""
    engine.generate_together({es.name: es.examples for es in p.sets if es.name != "rwku_fluency"},
                             PROBE_TOKENS)
    out = {es.name: evaluate_set(engine, es, FLUENCY_TOKENS if es.name == "rwku_fluency"
                                 else PROBE_TOKENS, suite="rwku") for es in p.sets}
    if p.corpus and p.others:
        mia = evaluate_mia(engine, EvalSet("rwku_corpus", "forget", p.corpus),
                           EvalSet("rwku_others", "holdout", p.others), k)
        out["rwku_mia"] = {**mia, "role": "rwku_mia"}
    for res in out.values():
        res.update(target=p.target, suite="rwku")
    return out
