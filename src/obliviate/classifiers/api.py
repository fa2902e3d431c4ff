"""The classifier family's runs: train (finetune), unlearn, evaluate. The CLI's `finetune`,
`unlearn` and `eval` come here when the benchmark or model folder is a classifier's, with the
same keys where they mean the same thing (benchmark, model, split, method, params, optim.lr,
seed, reference)."""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..config import from_dict, require, require_choice, to_dict
from ..errors import ObliviateError
from ..evaluation.metrics import in_order
from ..evaluation.metrics.classifier import ClassifierView
from ..evaluation.results import derive, load_results, make_results
from . import nets
from .data import Benchmark, ClassData, load_benchmark
from .methods import CLASSIFIER_METHODS, Context, predict_proba
from .scenarios import Scenario, check_split, resolve


@dataclass
class ClassifierOptim:
    lr: float | None = None  # None: the method's default
    epochs: float | None = None  # passes over the data the method trains on; None: its default
    batch_size: int = 64

    def __post_init__(self) -> None:
        require(self.lr is None or self.lr > 0, "lr", f"must be positive (got {self.lr})")
        require(self.epochs is None or 0 < self.epochs <= 1000, "epochs", f"must be in (0, 1000] (got {self.epochs})")
        require(1 <= self.batch_size <= 65536, "batch_size", f"must be 1 to 65536 (got {self.batch_size})")


def _seeds(cfg) -> None:
    for key in ("seed", "split_seed"):
        require(getattr(cfg, key) >= 0, key, f"must be 0 or more (got {getattr(cfg, key)})")


@dataclass
class ClassifierFinetuneConfig:
    """Train a classifier on a benchmark's training data (a target), or without a forget set
    (`split`: an oracle, the same as `unlearn method=retrain`)."""

    benchmark: str = ""
    role: str = ""  # target | oracle; "": oracle when a split is given, else target
    split: str = ""  # the forget set an oracle never sees
    split_seed: int = 0
    seed: int = 0
    epochs: float | None = None  # passes over the training data (the same key as a language model's)
    optim: ClassifierOptim = field(default_factory=lambda: ClassifierOptim(lr=2e-3, epochs=30))

    def __post_init__(self) -> None:
        require(bool(self.benchmark), "benchmark", "give benchmark=<classifier benchmark folder>")
        _seeds(self)
        if self.role:
            require_choice(self.role, ("target", "oracle"), "role")
        require(self.role != "oracle" or bool(self.split), "role",
                "role=oracle needs split= (the forget set the oracle never sees)")
        require(self.role != "target" or not self.split, "role", "a target trains on every sample: drop split=")
        require(self.epochs is None or 0 < self.epochs <= 1000, "epochs", f"must be in (0, 1000] (got {self.epochs})")
        if self.epochs is not None:
            self.optim.epochs = self.epochs
        if self.split:
            check_split(self.split)


@dataclass
class ClassifierUnlearnConfig:
    model: str = ""
    benchmark: str = ""
    split: str = "random10"
    split_seed: int = 0
    method: str = "random_labels"
    params: dict[str, Any] = field(default_factory=dict)
    seed: int = 0
    optim: ClassifierOptim = field(default_factory=ClassifierOptim)

    def __post_init__(self) -> None:
        require(bool(self.model), "model", "give model=<classifier model folder>")
        require(bool(self.benchmark), "benchmark", "give benchmark=<classifier benchmark folder>")
        require_choice(self.method, tuple(CLASSIFIER_METHODS.names()), "method")
        _seeds(self)
        check_split(self.split)
        method_params(self.method, self.params)  # typed and range-checked before anything loads


@dataclass
class ClassifierEvalConfig:
    model: str = ""
    benchmark: str = ""
    split: str = ""  # "": the forget set the model was unlearned on (from its provenance)
    split_seed: int = 0
    reference: str = ""  # the retrained model's results: average gap and run-time ratio
    seed: int = 0

    def __post_init__(self) -> None:
        require(bool(self.model), "model", "give model=<classifier model folder>")
        require(bool(self.benchmark), "benchmark", "give benchmark=<classifier benchmark folder>")
        _seeds(self)
        if self.split:
            check_split(self.split)


def method_params(name: str, params: dict[str, Any]):
    cls = CLASSIFIER_METHODS.get(name)
    return from_dict(cls, params, prefix="params.")


def _inputs(spec: dict[str, Any], data: ClassData) -> tuple[torch.Tensor, torch.Tensor]:
    return nets.inputs(spec, data.x), torch.from_numpy(data.y)


def _check_model_fits(spec: dict[str, Any], bench: Benchmark) -> None:
    if list(spec["classes"]) != bench.classes:
        raise ObliviateError(f"the model's classes ({', '.join(spec['classes'][:5])} ...) are not the "
                             f"benchmark's ({', '.join(bench.classes[:5])} ...)")


def finetune(cfg: ClassifierFinetuneConfig, out: str | Path) -> Path:
    """Train a fresh classifier (target, or oracle without `split`) and save it."""
    bench = load_benchmark(cfg.benchmark)
    keep = np.arange(len(bench.train))
    forget_ids: list[str] = []
    classes: list[int] = []
    if cfg.split:
        if cfg.split.startswith("worst"):
            raise ObliviateError("a worst-case split is chosen with the target model: make its oracle "
                                 "with obliviate unlearn method=retrain model=<target> split=...")
        sc = resolve(cfg.split, bench.train, bench.classes, cfg.split_seed)
        keep, forget_ids, classes = sc.retain, bench.train.ids[sc.forget].tolist(), sc.classes
    spec = nets.spec_for(bench.kind, bench.classes, bench.train.x[keep])  # an oracle's words are the kept data's
    x, y = _inputs(spec, bench.train.take(keep))
    start = time.perf_counter()
    ctx = _context(x[:0], y[:0], x, y, spec, cfg.optim.lr, cfg.optim.epochs, cfg.optim.batch_size, cfg.seed)
    ctx.fresh = lambda: nets.build(spec, cfg.seed)  # the target starts from its own seed
    model = CLASSIFIER_METHODS.get("retrain")().run(None, ctx)
    prov = {"produced_by": "obliviate finetune", "role": "oracle" if cfg.split else "target",
            "config": to_dict(cfg), "split": cfg.split, "forget_ids": forget_ids,
            "forget_classes": classes, "trained_on": len(keep), "run_seconds": time.perf_counter() - start,
            "benchmark": str(Path(cfg.benchmark).resolve()), "train_epochs": cfg.optim.epochs,
            "train_lr": cfg.optim.lr}
    return nets.save(model, spec, out, prov, {"benchmark": cfg.benchmark})


def _first(*values):
    return next(v for v in values if v is not None)


def _context(xf, yf, xr, yr, spec, lr, epochs, batch_size, seed) -> Context:
    return Context(x_forget=xf, y_forget=yf, x_retain=xr, y_retain=yr, n_classes=len(spec["classes"]),
                   lr=lr, epochs=epochs, batch_size=batch_size, seed=seed,
                   fresh=lambda: nets.build(spec, seed + 7919))


def scenario_for(split: str, split_seed: int, bench: Benchmark, model, spec) -> Scenario:
    x = nets.inputs(spec, bench.train.x) if split.startswith("worst") else None
    return resolve(split, bench.train, bench.classes, split_seed, model, x)


def unlearn_model(cfg: ClassifierUnlearnConfig, model=None, spec=None, prov=None, bench=None,
                  rows: tuple[np.ndarray, np.ndarray] | None = None):
    """(unlearned model, spec, provenance, context) without saving: for the CLI, benchmarks and
    the ledger. `rows` (forget, retain indices into the training data) replace `cfg.split`: a
    ledger request forgets its samples and keeps out every earlier request's."""
    if model is None:
        model, spec, prov = nets.load(cfg.model)
    bench = bench or load_benchmark(cfg.benchmark)
    _check_model_fits(spec, bench)
    if rows is None:
        sc = scenario_for(cfg.split, cfg.split_seed, bench, model, spec)
        forget, retain, classes = sc.forget, sc.retain, sc.classes
    else:
        (forget, retain), classes = rows, []
    cls = CLASSIFIER_METHODS.get(cfg.method)
    method = method_params(cfg.method, cfg.params)
    # retraining repeats the target's own training unless told otherwise
    same = cfg.method == "retrain"
    epochs = _first(cfg.optim.epochs, prov.get("train_epochs") if same else None, cls.default_epochs)
    lr = _first(cfg.optim.lr, prov.get("train_lr") if same else None, cls.default_lr)
    if same:  # a fresh model's word list comes from the data it is trained on
        spec = nets.spec_for(bench.kind, bench.classes, bench.train.x[retain])
    (xf, yf), (xr, yr) = _inputs(spec, bench.train.take(forget)), _inputs(spec, bench.train.take(retain))
    ctx = _context(xf, yf, xr, yr, spec, lr, epochs, cfg.optim.batch_size, cfg.seed)
    torch.manual_seed(cfg.seed)
    start = time.perf_counter()
    model = method.run(model, ctx)
    spec = nets.restrict_vocab(model, spec, bench.train.x[retain])
    seconds = time.perf_counter() - start
    out_prov = {"produced_by": "obliviate unlearn", "method": cfg.method, "config": to_dict(cfg),
                "split": cfg.split if rows is None else "", "forget_ids": bench.train.ids[forget].tolist(),
                "excluded_ids": bench.train.ids[np.setdiff1d(np.arange(len(bench.train)),
                                                             np.union1d(forget, retain))].tolist(),
                "forget_classes": classes, "run_seconds": seconds, "lr": lr, "epochs": epochs,
                "parent": str(cfg.model),
                "log": {k: v for k, v in ctx.log.items() if isinstance(v, int | float | str)}}
    return model, spec, out_prov, ctx


def unlearn(cfg: ClassifierUnlearnConfig, out: str | Path) -> Path:
    model, spec, prov, _ = unlearn_model(cfg)
    return nets.save(model, spec, out, prov, {"model": cfg.model, "benchmark": cfg.benchmark})


def rows_of(bench: Benchmark, ids: list[str]) -> np.ndarray:
    """Indices of the training samples named by `ids` (every one must be there)."""
    index = {s: i for i, s in enumerate(bench.train.ids.tolist())}
    if len(set(ids)) != len(ids):
        raise ObliviateError(f"sample {next(s for s in ids if ids.count(s) > 1)!r} is listed twice")
    missing = [s for s in ids if s not in index]
    if missing:
        raise ObliviateError(f"sample {missing[0]!r} is not in the benchmark's training data")
    return np.array(sorted(index[s] for s in ids), dtype=np.int64)


def _forget_rows(cfg: ClassifierEvalConfig, bench: Benchmark, model, spec, prov) -> tuple[np.ndarray, np.ndarray, list[int]]:
    """(forget indices, indices kept out of the retained set (earlier requests'), forgotten
    classes) for an evaluation: the model's own forget set unless `split` names another."""
    own = prov.get("split", "")
    if (not cfg.split or cfg.split == own) and prov.get("forget_ids"):
        return (rows_of(bench, prov["forget_ids"]), rows_of(bench, prov.get("excluded_ids", [])),
                list(prov.get("forget_classes", [])))
    if not cfg.split:
        raise ObliviateError("this model records no forget set: give split= (e.g. random10, class:NAME, user:NAME)")
    sc = scenario_for(cfg.split, cfg.split_seed, bench, model, spec)
    # samples the model was unlearned on are no members of what it keeps, whatever split is asked
    gone = rows_of(bench, [*prov.get("forget_ids", []), *prov.get("excluded_ids", [])])
    return sc.forget, np.setdiff1d(gone, sc.forget), sc.classes


def evaluate(cfg: ClassifierEvalConfig, name: str | None = None, model=None, spec=None, prov=None,
             bench=None) -> dict[str, Any]:
    """Results (the common schema, family 'classifier') of a classifier on its forget set,
    retained training data and test data."""
    start = time.perf_counter()
    if model is None:
        model, spec, prov = nets.load(cfg.model)
    bench = bench or load_benchmark(cfg.benchmark)
    _check_model_fits(spec, bench)
    forget, excluded, classes = _forget_rows(cfg, bench, model, spec, prov)
    retain = np.setdiff1d(np.arange(len(bench.train)), np.union1d(forget, excluded))
    test = bench.test.take(np.flatnonzero(~np.isin(bench.test.y, classes)))
    sets = {"forget": ("forget", bench.train.take(forget)), "retain": ("retain", bench.train.take(retain)),
            "test": ("utility", test)}
    probs = {n: predict_proba(model, nets.inputs(spec, d.x)).numpy() for n, (_, d) in sets.items()}
    conf = {n: probs[n][np.arange(len(d)), d.y] for n, (_, d) in sets.items()}
    members = np.random.default_rng(cfg.seed).permutation(conf["retain"])[:len(conf["test"])]
    datasets = {}
    for n, (role, d) in sets.items():
        view = ClassifierView(role, probs[n], d.y, members, conf["test"])
        datasets[n] = _score(view, d)
    ref = load_results(cfg.reference) if cfg.reference else None
    res = make_results(name or Path(cfg.model).name, str(cfg.model), datasets, to_dict(cfg), cfg.seed,
                       timing={"eval_seconds": round(time.perf_counter() - start, 3),
                               **({"run_seconds": float(prov["run_seconds"])} if "run_seconds" in prov else {})},
                       suites=["classifier"])
    res["family"] = "classifier"
    ids = sorted(bench.train.ids[forget].tolist())
    res["forget_set"] = {"split": cfg.split or prov.get("split") or "the samples of a request", "n": len(ids),
                         "benchmark": bench.root.name,
                         "digest": hashlib.sha256("\n".join(ids).encode()).hexdigest()[:16]}
    res["metrics"] = derive(res, ref)
    if ref is not None:
        res["reference"] = ref["name"]
    return res


def _score(view: ClassifierView, data: ClassData) -> dict[str, Any]:
    per_item: dict[str, list] = {"id": data.ids.tolist()}
    aggregate: dict[str, Any] = {"n": float(len(data))}
    for m in in_order("classifier"):
        if view.role not in m.roles:
            continue
        value = m.compute(view)
        if isinstance(value, float):
            aggregate[m.name] = value
        else:
            per_item[m.name] = np.asarray(value.values, dtype=float).tolist()
            aggregate[m.name] = m.combine(value.values, view.role)
    return {"role": view.role, "aggregate": aggregate, "per_item": per_item}
