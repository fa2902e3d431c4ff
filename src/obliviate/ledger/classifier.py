"""Deletion requests for a classifier: "remove this user's images from the model".

The same ledger (requests, keyed hashes, versions, measurements, events) and the same crash
safety as a language-model project (see `workflow`): a version folder is built while its
request is pending and recorded in one transaction once its manifest is written. A request
names a user of the project's benchmark (`--user`) or lists sample ids (`--forget`, one per
line). Each item is hashed with the project key over the sample's id, pixels (or text) and
label, so a later change to the benchmark's copy of a requested sample is caught on apply.

Applying a request unlearns its samples with every earlier request's kept out of the retained
data, retrains an oracle on the same retained data when `retrain_oracle` is on (cheap for a
small classifier, and the evidence a reviewer wants: the gap to a model that never saw the
samples), evaluates, audits against the parent, and writes the evidence page.
"""

from __future__ import annotations

import functools
import hashlib
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..classifiers import api as C
from ..classifiers import nets
from ..classifiers.audits import CLASSIFIER_AUDITS, ClassifierAuditConfig, audit
from ..classifiers.data import Benchmark, load_benchmark
from ..config import from_dict, merge, parse_overrides, require, require_choice, to_dict
from ..data.files import read_text
from ..errors import ObliviateError
from ..evaluation.results import derive
from ..io import ensure_not_inside, write_json_atomic, write_text_atomic
from ..registry import suggest
from ..report.html import render
from . import workflow
from .store import Ledger, Request, Version, weights_sha256
from .workflow import _prepare_stage, _write_manifest

FAMILY = "classifier"
MODEL_LEVEL = 0  # as in measure.MODEL_LEVEL: the request id of model-level numbers


@dataclass
class ClassifierProject:
    base: str = ""
    benchmark: str = ""
    # a request removes data points (a user's samples), where fine-tuning on the rest stays
    # closest to retraining across seeds (benchmarks/results/classifiers.md, user sets);
    # random-label methods suit removing a whole class and overshoot on data points
    method: str = "finetune"
    params: dict[str, Any] = field(default_factory=dict)
    retrain_oracle: bool = True
    audits: list[str] = field(default_factory=lambda: sorted(CLASSIFIER_AUDITS.names()))
    seed: int = 0

    def __post_init__(self) -> None:
        require(bool(self.base), "base", "a project needs its base classifier: --model DIR")
        require(bool(self.benchmark), "benchmark", "a classifier project needs --benchmark DIR")
        for name in self.audits:
            require_choice(name, tuple(CLASSIFIER_AUDITS.names()), "audits")
        require(self.seed >= 0, "seed", f"must be 0 or more (got {self.seed})")
        C.ClassifierUnlearnConfig(model=self.base, benchmark=self.benchmark, method=self.method,
                                  params=self.params)  # method and its parameters checked now


RESERVED = ("model", "benchmark", "method", "split", "split_seed")  # set by the ledger


def request_config(settings: ClassifierProject, method: str, overrides: list[str],
                   model: str) -> C.ClassifierUnlearnConfig:
    """A request's unlearning config: the project's method parameters (when it uses the
    project's method) and seed, under the request's own overrides (params.*, optim.*, seed)."""
    given = parse_overrides(overrides)
    reserved = [k for k in given if k in RESERVED]
    if reserved:
        raise ObliviateError(f"'{reserved[0]}' is set by the ledger, not by a request's overrides")
    base = {"params": dict(settings.params) if method == settings.method else {}, "seed": settings.seed}
    return from_dict(C.ClassifierUnlearnConfig, {**merge(base, given), "model": model,
                                                 "benchmark": settings.benchmark, "method": method})


def is_classifier_project(ledger: Ledger) -> bool:
    return ledger.settings().get("family") == FAMILY


def settings_of(ledger: Ledger) -> ClassifierProject:
    return from_dict(ClassifierProject, ledger.settings()["settings"])


def init(root: str | Path, model: str, benchmark: str, overrides: list[str]) -> Path:
    """A classifier project: version 0 is `model`, requests name samples of `benchmark`."""
    root = Path(root)
    base, bench_dir = Path(model).resolve(), Path(benchmark).resolve()
    given = {**parse_overrides(overrides), "base": str(base), "benchmark": str(bench_dir)}
    settings = from_dict(ClassifierProject, given)
    ensure_not_inside(root, base, "model")
    ensure_not_inside(root, bench_dir, "benchmark")
    spec = nets.provenance(base).get("spec") or {}
    nets.check_spec(spec, str(base))
    if list(spec["classes"]) != load_benchmark(bench_dir).classes:
        raise ObliviateError("the model's classes are not the benchmark's")
    Ledger.create(root, {"settings": to_dict(settings), "family": FAMILY}, str(base),
                  weights_sha256(base)).close()
    return root


def sample_hash(ledger: Ledger, bench: Benchmark, row: int) -> str:
    """Keyed hash of one training sample: id, content and label."""
    x = bench.train.x[row]
    content = hashlib.sha256(x.tobytes() if isinstance(x, np.ndarray) else str(x).encode()).hexdigest()
    return ledger.hasher.record(["obliviate.sample/1", str(bench.train.ids[row]), content, int(bench.train.y[row])])


def request_rows(bench: Benchmark, forget_path: str) -> np.ndarray:
    """The training rows a request names: `user:NAME`, `class:NAME`, or a file of sample ids."""
    if forget_path.startswith("class:"):
        name = forget_path.split(":", 1)[1]
        if name not in bench.classes:
            raise ObliviateError(f"no class '{name}' in the benchmark{suggest(name, bench.classes)}")
        rows = np.flatnonzero(bench.train.y == bench.classes.index(name))
        if len(rows) == len(bench.train):
            raise ObliviateError(f"every training sample is of class '{name}'; nothing would remain")
        return rows
    if forget_path.startswith("user:"):
        user = forget_path.split(":", 1)[1]
        rows = np.flatnonzero(bench.train.users == user)
        if not len(rows):
            known = sorted(set(bench.train.users.tolist()) - {""})
            raise ObliviateError(f"no training samples of user '{user}' in the benchmark"
                                 + (f" (users: {', '.join(known[:10])} ...)" if known else " (it names no users)"))
        return rows
    ids = [line.strip() for line in read_text(forget_path).splitlines() if line.strip()]
    if not ids:
        raise ObliviateError(f"{forget_path}: no sample ids (one per line)")
    return C.rows_of(bench, ids)


def add(root: str | Path, subject: str, user: str | None, ids_file: str | None, method: str | None,
        overrides: list[str], class_name: str | None = None) -> int:
    if sum(map(bool, (user, ids_file, class_name))) != 1:
        raise ObliviateError("a classifier request names one of --user NAME, --class NAME or --forget FILE "
                             "(sample ids, one per line)")
    with Ledger.open(root) as ledger:
        settings = settings_of(ledger)
        method = method or settings.method
        request_config(settings, method, overrides, settings.base)  # a typo fails now, not at apply
        bench = load_benchmark(settings.benchmark)
        forget_path = f"user:{user}" if user else f"class:{class_name}" if class_name else str(Path(ids_file).resolve())
        rows = request_rows(bench, forget_path)
        hashes = [sample_hash(ledger, bench, r) for r in rows]
        return ledger.add_request(subject, forget_path, hashes, None, None, method, list(overrides))


def apply(root: str | Path, rid: int | None = None, apply_all: bool = False, progress: bool = True) -> list[int]:
    """The ledger's apply (order, lock, failure records) with a classifier version builder."""
    return workflow.apply(root, rid, apply_all, progress, build=_build)


def _checked_rows(ledger: Ledger, bench: Benchmark, req: Request) -> np.ndarray:
    rows = request_rows(bench, req.forget_path)
    if ledger.hasher.digest(sample_hash(ledger, bench, r) for r in rows) != req.forget_digest:
        raise ObliviateError(f"the samples request {req.id} names changed in the benchmark since it "
                             "was added (ids, content or labels); restore them or add a new request")
    return rows


def _build(ledger: Ledger, req: Request, parent: Version, stage: Path, say) -> tuple[str, dict, dict]:
    settings = settings_of(ledger)
    parent_dir = ledger.model_path(parent)
    if not parent_dir.exists() or weights_sha256(parent_dir) != parent.weights_sha256:
        raise ObliviateError(f"version {parent.id} ({parent_dir}) is missing or its weights changed "
                             "since it was recorded; restore it before applying")
    bench = load_benchmark(settings.benchmark)
    forget = _checked_rows(ledger, bench, req)
    # earlier requests' samples, checked against their recorded hashes, stay out of every run
    earlier = {r.id: _checked_rows(ledger, bench, r) for r in ledger.requests()
               if r.status == "done" and r.id != req.id}
    gone = np.union1d(forget, np.concatenate([np.zeros(0, np.int64), *earlier.values()]))
    retain = np.setdiff1d(np.arange(len(bench.train)), gone)
    cfg = request_config(settings, req.method, req.overrides, str(parent_dir))
    _prepare_stage(stage, {"request": req.id, "parent": parent.id, "parent_sha256": parent.weights_sha256,
                           "forget_digest": req.forget_digest, "config": to_dict(cfg)})
    timings: dict[str, float] = {}
    for name, method in (("model", req.method), ("oracle", "retrain" if settings.retrain_oracle else None)):
        if method and not (stage / name).is_dir():  # a finished model of a killed attempt is kept
            say(f"{'unlearning with ' + method if name == 'model' else 'retraining the oracle'} "
                f"({len(forget)} samples forgotten, {len(retain)} kept)")
            t0 = time.perf_counter()
            run_cfg = cfg if name == "model" else C.ClassifierUnlearnConfig(
                model=settings.base, benchmark=settings.benchmark, method="retrain", seed=settings.seed)
            model, spec, prov, _ = C.unlearn_model(run_cfg, bench=bench, rows=(forget, retain))
            nets.save(model, spec, stage / name, prov, {"model": str(parent_dir)})
            timings[f"{name}_s"] = round(time.perf_counter() - t0, 2)
    say("evaluating and auditing")
    return _measure_and_write(ledger, req, parent, stage, settings, bench, earlier, timings)


def _measure_and_write(ledger: Ledger, req: Request, parent: Version, stage: Path,
                       settings: ClassifierProject, bench: Benchmark, earlier: dict[int, np.ndarray],
                       timings: dict[str, float]) -> tuple[str, dict, dict]:
    oracle_dir = stage / "oracle" if settings.retrain_oracle else None
    ev = functools.partial(_evaluate, bench=bench)
    oracle = ev(oracle_dir, stage / "model", "oracle (retrained)") if oracle_dir else None
    after = ev(stage / "model", stage / "model", f"version {parent.id + 1}", reference=oracle)
    before = ev(ledger.model_path(parent), stage / "model", f"version {parent.id}", reference=oracle)
    rows = {(-1, req.id): _request_numbers(after), (parent.id, req.id): _request_numbers(before),
            (-1, MODEL_LEVEL): _model_numbers(after)}
    if (parent.id, MODEL_LEVEL) not in ledger.measurements():  # version 0's own numbers
        rows[(parent.id, MODEL_LEVEL)] = _model_numbers(before)
    new_model, spec, prov = nets.load(stage / "model")
    gone = np.union1d(C.rows_of(bench, after["datasets"]["forget"]["per_item"]["id"]),
                      np.concatenate([np.zeros(0, np.int64), *earlier.values()]))
    for rid, past in earlier.items():  # is every earlier request still forgotten?
        others = bench.train.ids[np.setdiff1d(gone, past)].tolist()
        past_res = C.evaluate(C.ClassifierEvalConfig(model=str(stage / "model"), benchmark=settings.benchmark),
                              model=new_model, spec=spec, bench=bench,
                              prov={"forget_ids": bench.train.ids[past].tolist(), "excluded_ids": others})
        rows[(-1, rid)] = _request_numbers(past_res)
    audit_res = audit(ClassifierAuditConfig(model=str(stage / "model"), target=str(ledger.model_path(parent)),
                                            oracle=str(oracle_dir or ""), benchmark=settings.benchmark,
                                            audits=settings.audits, seed=settings.seed), progress=False)
    write_json_atomic(stage / "results.json", after)
    write_json_atomic(stage / "audit.json", audit_res)
    sha = weights_sha256(stage / "model")
    summary = {"request": req.id, "method": req.method, "timings": timings, "family": FAMILY,
               "forgotten": int(after["datasets"]["forget"]["aggregate"]["n"]),
               "run": {k: prov.get(k) for k in ("method", "lr", "epochs", "config")}}
    warning = farther_from_oracle(before, after, parent.id)
    if warning:
        summary["warning"] = warning
        print(f"[request {req.id}] WARNING: {warning}", flush=True)
    write_text_atomic(stage / "evidence.html", evidence_page(ledger, req, parent, sha, before, after, oracle,
                                                            audit_res, rows, summary))
    _write_manifest(stage, req, parent, sha)
    return sha, summary, rows


def farther_from_oracle(before: dict[str, Any], after: dict[str, Any], parent_id: int) -> str:
    """A warning when unlearning moved the model away from the retrained oracle: the samples
    were already at the level of a model that never saw them (common for one user's samples
    of well-learnt classes), and the method overshot."""
    b, a = before["metrics"].get("avg_gap"), after["metrics"].get("avg_gap")
    if not isinstance(a, float) or not isinstance(b, float) or a <= b + 0.5:
        return ""
    return (f"the new version is farther from the retrained oracle than version {parent_id} was "
            f"(average gap {a:.2f} vs {b:.2f} points): the samples were already near the oracle's "
            "level; consider a gentler method (method=finetune, a lower optim.lr) or releasing the "
            "oracle itself (method=retrain)")


def _evaluate(model_dir: Path, forget_from: Path, name: str, bench: Benchmark,
              reference: dict | None = None) -> dict[str, Any]:
    """Results of `model_dir` on the forget set and exclusions recorded in `forget_from`."""
    model, spec, own = nets.load(model_dir)
    sets = nets.provenance(forget_from)  # whose forget set: only its provenance is read
    prov = {**{k: sets[k] for k in ("forget_ids", "excluded_ids") if k in sets},
            **({"run_seconds": own["run_seconds"]} if "run_seconds" in own else {})}
    res = C.evaluate(C.ClassifierEvalConfig(model=str(model_dir), benchmark=str(bench.root)), name=name,
                     model=model, spec=spec, bench=bench, prov=prov)
    if reference is not None:
        res["metrics"] = derive(res, reference)
        res["reference"] = reference["name"]
    return res


def _request_numbers(res: dict[str, Any]) -> dict[str, Any]:
    agg = res["datasets"]["forget"]["aggregate"]
    return {"forget_ua": agg["ua"], "forget_mia_efficacy": agg["mia_efficacy"],
            **({"avg_gap": res["metrics"]["avg_gap"]} if isinstance(res["metrics"].get("avg_gap"), float) else {})}


def _model_numbers(res: dict[str, Any]) -> dict[str, Any]:
    return {"retain_ra": res["datasets"]["retain"]["aggregate"]["ra"],
            "test_ta": res["datasets"]["test"]["aggregate"]["ta"]}


def _num(value: Any) -> str:
    return f"{value:.2f}" if isinstance(value, float) else str(value if value is not None else "—")


def evidence_page(ledger: Ledger, req: Request, parent: Version, sha: str, before: dict, after: dict,
                  oracle: dict | None, audit_res: dict, rows: dict, summary: dict) -> str:
    """The request's evidence page (report/templates/classifier_evidence.html)."""
    def agg(res, ds, key):
        return res["datasets"][ds]["aggregate"].get(key) if res else None

    vid = parent.id + 1
    facts = [["request", f"{req.id}: {req.subject}"], ["samples", f"{req.n_items} ({req.forget_path})"],
             ["method", req.method], ["versions", f"{parent.id} -> {vid}"], ["weights sha256", sha],
             ["average gap to the oracle", f"{_num(after['metrics'].get('avg_gap'))} (before: "
                                           f"{_num(before['metrics'].get('avg_gap'))})"],
             *([["warning", summary["warning"]]] if summary.get("warning") else []),
             ["time", ", ".join(f"{k} {v:.1f} s" for k, v in summary["timings"].items()) or "resumed"]]
    forget = [[title, goal, _num(agg(before, "forget", k)), _num(agg(after, "forget", k)), _num(agg(oracle, "forget", k))]
              for k, title, goal in (("ua", "UA", "the oracle's"), ("mia_efficacy", "MIA efficacy", "the oracle's"),
                                     ("ece", "ECE", "lower"))]
    kept = [[title, _num(agg(before, ds, k)), _num(agg(after, ds, k)), _num(agg(oracle, ds, k))]
            for ds, k, title in (("retain", "ra", "RA (retained training data)"), ("test", "ta", "TA (test data)"))]
    audits = [[name, e["description"], _num(e["model"].get("score")), _num((e.get("target") or {}).get("score")),
               _num((e.get("oracle") or {}).get("score")),
               e["residual"] if isinstance(e["residual"], str) else _num(e["residual"]["score"])]
              for name, e in audit_res["audits"].items()]
    earlier = [[str(rid), _num(m.get("forget_ua")), _num(m.get("forget_mia_efficacy"))]
               for (vid_, rid), m in sorted(rows.items()) if vid_ == -1 and rid not in (req.id, MODEL_LEVEL)]
    return render("classifier_evidence.html", title=f"Deletion request {req.id}: evidence",
                  facts=facts, forget=forget, kept=kept, audits=audits, earlier=earlier,
                  hashes=[[h] for h in sorted(ledger.item_hashes(req.id))[:20]], n_items=req.n_items,
                  config_json=json.dumps(summary["run"], indent=1, sort_keys=True))
