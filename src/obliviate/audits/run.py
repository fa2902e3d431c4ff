"""Run audits on a model, with the target and the oracle as the two ends of the scale."""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..config import from_dict, require, require_choice, to_dict
from ..data import Benchmark
from ..encoding import DEFAULT_TEMPLATE
from ..errors import ObliviateError
from ..evaluation.results import git_sha, versions
from ..systems import System, load_any
from .base import AUDITS, AuditData, NotApplicable, residual

SCHEMA = "obliviate.audit/1"


@dataclass
class AuditConfig:
    """Audit `model` against `target` (before unlearning) and `oracle` (never saw the forget set)."""

    model: str = ""
    target: str = ""
    oracle: str = ""
    benchmark: str = ""
    forget_split: str = ""  # "": the benchmark's own (forget10 for a generated one)
    audits: list[str] = field(default_factory=lambda: sorted(AUDITS.names()))
    params: dict[str, dict[str, Any]] = field(default_factory=dict)  # per-audit parameters
    max_retain: int = 64
    template: str = DEFAULT_TEMPLATE
    trust_remote_code: bool = False

    def __post_init__(self) -> None:
        for name in [*self.audits, *self.params]:
            require_choice(name, tuple(AUDITS.names()), "audits" if name in self.audits else "params")
        require(self.max_retain > 0, "max_retain", f"must be positive (got {self.max_retain})")
        # each audit's parameters checked and typed now, before any model loads
        self.params = {name: {k: getattr(from_dict(AUDITS.get(name), p, prefix=f"params.{name}."), k)
                              for k in p} for name, p in self.params.items()}


def audit_data(cfg: AuditConfig) -> AuditData:
    if not cfg.benchmark:
        raise ObliviateError("audit needs benchmark=<folder> (its forget, retain and linked splits)")
    bench = Benchmark.load(cfg.benchmark)
    return AuditData(forget=bench.forget_set(cfg.forget_split),
                     retain=bench.retain_set(cfg.forget_split)[:cfg.max_retain],
                     template=cfg.template, related=bench.linked_set(cfg.forget_split))


# what a weight-level audit of an unlearned system measures: the base it wraps
ON_BASE = "base weights"


def run_one(audit_obj, source, data: AuditData, trust_remote_code: bool = False) -> dict[str, Any]:
    """Raw measurements of one audit on one model (a folder, or a (model, tokenizer) pair).
    A weight-level audit of an unlearned system runs on the base it wraps and says so: the
    result is the knowledge present in the weights, which the system's components hide but
    do not remove."""
    model, tok = (load_any(source, trust_remote_code=trust_remote_code)
                  if isinstance(source, str | Path) else source)
    on_base = isinstance(model, System) and getattr(type(audit_obj), "weights", False)
    try:
        raw = audit_obj.run(model.base if on_base else model, tok, data)
    except NotApplicable as exc:
        return {"not_applicable": str(exc)}
    return {**raw, "measured_on": ON_BASE} if on_base else raw


NO_ORACLE = "not computed: needs an oracle (a model never trained on the forget set)"


def audit(cfg: AuditConfig, ends: dict[str, dict[str, Any]] | None = None,
          progress: bool = True, data: AuditData | None = None) -> dict[str, Any]:
    """Audit results: raw numbers for model, target and oracle, and residual scores.
    `ends` may carry the target's and oracle's raw results from an earlier run (a benchmark
    auditing many models measures them once). `data` replaces the benchmark's sets (the
    deletion ledger audits a request's own forget file). Without an oracle the raw numbers
    are still measured and compared with the target, and the residual says it needs one."""
    for name in ("model", "target"):
        if not getattr(cfg, name):
            raise ObliviateError(f"audit needs {name}=<model folder>")
    if data is None:
        if not cfg.oracle:
            raise ObliviateError("audit needs oracle=<model folder>")
        data = audit_data(cfg)
    sides = ("target", "oracle") if cfg.oracle else ("target",)
    ends = ends if ends is not None else {}
    out: dict[str, Any] = {}
    for name in cfg.audits:
        obj = _build(name, cfg.params.get(name, {}), cfg.target)
        start = time.perf_counter()
        for end in sides:
            ends.setdefault(end, {}).setdefault(name, run_one(obj, getattr(cfg, end), data,
                                                              cfg.trust_remote_code))
        raw = run_one(obj, cfg.model, data, cfg.trust_remote_code)
        t, o = ends["target"][name], ends.get("oracle", {}).get(name)
        entry: dict[str, Any] = {"description": type(obj).description, "paper": type(obj).paper,
                                 "model": raw, "target": t, "oracle": o,
                                 "seconds": round(time.perf_counter() - start, 2)}
        if "measured_on" in raw:
            entry["measured_on"] = raw["measured_on"]
        if "not_applicable" in raw:
            entry["residual"] = f"not applicable: {raw['not_applicable']}"
        elif o is None:
            entry["residual"] = NO_ORACLE
        else:
            entry["residual"] = {k: residual(raw[k], t[k], o[k]) for k in raw if k in t and k in o}
        out[name] = entry
        if progress:
            score = entry["residual"] if isinstance(entry["residual"], str) else entry["residual"]["score"]
            print(f"  {name:14s} residual {score if isinstance(score, str) else f'{score:.3f}'}", flush=True)
    return {"schema": SCHEMA, "name": Path(cfg.model).name, "config": to_dict(cfg),
            "versions": versions(), "git_sha": git_sha(), "audits": out, "ends": ends}


def _build(name: str, params: dict[str, Any], target: str = ""):
    """An audit from its parameters; audits that compare with the target get its path."""
    cls = AUDITS.get(name)
    if "target" in {f.name for f in dataclasses.fields(cls)} and "target" not in params:
        params = {**params, "target": target}
    return from_dict(cls, params, prefix=f"params.{name}.")


def scores(res: dict[str, Any]) -> dict[str, float | str]:
    """The headline residual score of each audit (1 = target's knowledge, 0 = oracle's)."""
    return {n: (e["residual"] if isinstance(e["residual"], str) else e["residual"]["score"])
            for n, e in res["audits"].items()}


__all__ = ["SCHEMA", "AuditConfig", "audit", "audit_data", "scores"]
