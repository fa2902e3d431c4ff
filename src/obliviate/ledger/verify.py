"""`request verify`: re-measure a done request's version and compare with the record."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..errors import ObliviateError
from . import measure as M
from .project import (
    announce,
    forgotten_hashes,
    measure_sets,
    project_settings,
    retain_items,
    verified_forget,
)
from .store import Ledger, weights_sha256
from .workflow import audit_version


@dataclass
class Check:
    metric: str
    recorded: float | str | None
    measured: float | str | None
    ok: bool


def verify(root: str | Path, rid: int, tolerance: float = 1e-4,
           progress: bool = True) -> tuple[bool, list[Check]]:
    """Re-measure a done request's version (weights hash, evaluation, audits) and compare
    with what the ledger recorded when it was applied."""
    with Ledger.open(root) as ledger, ledger.apply_lock():
        ledger.hasher.check()  # a keyed ledger whose key is gone cannot read its requests
        req = ledger.request(rid)
        if req.status != "done":
            raise ObliviateError(f"request {rid} is {req.status}: only done requests can be verified")
        settings = project_settings(ledger)
        v = ledger.version(req.version_id)
        parent = ledger.version(v.parent_id)
        model_dir = ledger.model_path(v)
        checks = [Check("weights_sha256", v.weights_sha256,
                        weights_sha256(model_dir) if model_dir.is_dir() else "missing", False)]
        checks[0].ok = checks[0].recorded == checks[0].measured
        if not checks[0].ok:
            return _record_verify(ledger, rid, checks)
        announce(progress, rid, f"re-measuring version {v.id}")
        forget = verified_forget(ledger, req)
        exclude = forgotten_hashes(ledger, v.id)
        retain, _ = retain_items(ledger, settings, None, exclude)
        sets = measure_sets(settings, {rid: forget}, retain)
        res = M.evaluate_version(model_dir, sets, f"version {v.id}",
                                 trust_remote_code=settings.trust_remote_code)
        oracle = (M.evaluate_version(settings.oracle, sets, "oracle", model_level=False,
                                     trust_remote_code=settings.trust_remote_code)
                  if settings.oracle else None)
        announce(progress, rid, "re-running the audits")
        train_retain, _ = retain_items(ledger, settings, req, exclude)
        now = {**M.request_metrics(res, rid, oracle),
               **M.audit_metrics(audit_version(settings, model_dir, ledger.model_path(parent), forget,
                                        train_retain))}
        recorded = ledger.measurements()
        pairs = [(now, recorded.get((v.id, rid), {})), (M.model_metrics(res), recorded.get((v.id, 0), {}))]
        for measured, rec in pairs:
            for metric, value in sorted(measured.items()):
                if metric.startswith("kept_") and metric not in rec:
                    continue  # recorded before the ledger measured a request's kept facts
                old = rec.get(metric)
                ok = (isinstance(value, float) and isinstance(old, float) and abs(value - old) <= tolerance
                      ) or (isinstance(value, str) and value == old)
                checks.append(Check(metric, old, value, ok))
        return _record_verify(ledger, rid, checks)


def _record_verify(ledger: Ledger, rid: int, checks: list[Check]) -> tuple[bool, list[Check]]:
    ok = all(c.ok for c in checks)
    bad = [c.metric for c in checks if not c.ok]
    ledger.event(rid, "verify", "all measurements reproduced" if ok else f"differs: {', '.join(bad)}")
    return ok, checks
