"""Deletion requests end to end: init a project, add requests, apply them in order, verify.

A project directory holds the ledger, and one folder per model version made by `apply`:

    versions/v0003/model/          the unlearned model (version 3)
    versions/v0003/stage.json      what is being built here (request, parent, config)
    versions/v0003/results.json    evaluation of version 3 (Results schema)
    versions/v0003/audit.json      robustness audits of version 3 against its parent
    versions/v0003/evidence.html   the request's evidence report
    versions/v0003/manifest.json   written last: file hashes; only then is the version recorded

Crash safety: the version folder is built while the request is still `pending` in the ledger;
one transaction then records the version, its measurements and the request as `done`. A killed
run leaves a pending request and an unregistered folder; the next `apply` resumes from that
folder when it was building the same thing (the model is reused), else removes it.
"""

from __future__ import annotations

import functools
import json
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..audits import AuditConfig, audit
from ..audits.base import AuditData
from ..config import parse_overrides, to_dict
from ..data.examples import Example
from ..errors import ObliviateError
from ..io import write_json_atomic, write_text_atomic
from ..models import read_provenance
from ..unlearning import UnlearnConfig, unlearn_examples
from . import measure as M
from .evidence import EvidenceInputs, evidence_html
from .paths import VERSIONS_DIR, remove
from .project import (
    ProjectSettings,
    announce,
    forgotten_hashes,
    measure_sets,
    past_forget_sets,
    project_settings,
    read_items,
    retain_items,
    unlearn_config,
    verified_forget,
)
from .show import printable
from .store import Ledger, Request, Version, file_sha256, weights_sha256

VERSION_DIR = re.compile(r"^v\d{4,}$")
# the files a version is made of, besides its model folder; anything else in the folder (a
# half-written temp file or model copy left by a kill) is not part of it
VERSION_FILES = ("stage.json", "results.json", "audit.json", "evidence.html")


def _open_requests(ledger: Ledger) -> list[Request]:
    return [r for r in ledger.requests() if r.status in ("pending", "failed")]


def _queue(ledger: Ledger, rid: int | None, apply_all: bool) -> list[Request]:
    open_ = _open_requests(ledger)
    if rid is not None:
        req = ledger.request(rid)
        if req.status == "done":
            raise ObliviateError(f"request {rid} is already done (version {req.version_id})")
        if req.status == "cancelled":
            raise ObliviateError(f"request {rid} was cancelled")
        first = open_[0]
        if first.id != rid:
            raise ObliviateError(
                f"request {first.id} ({first.status}) comes before request {rid}: requests are "
                f"applied in order. Apply {first.id} first, or cancel it "
                f"(`obliviate request cancel {first.id}`)")
        return [req]
    if open_ and open_[0].status == "failed":  # retried only when asked for by its id
        first = open_[0]
        raise ObliviateError(
            f"request {first.id} failed: {printable(first.error or 'no error recorded')}; retry "
            f"it with `obliviate request apply {first.id}` or cancel it with "
            f"`obliviate request cancel {first.id}`")
    return open_ if apply_all else open_[:1]


def _clean_versions_dir(ledger: Ledger, keep: str) -> None:
    """Remove version folders that no ledger row registers (left by a killed run), except
    `keep`, the folder the next apply will build (it may be resumable)."""
    vdir = ledger.root / VERSIONS_DIR
    if vdir.is_symlink() or not vdir.is_dir():  # a symlink: refused when the ledger opened
        return
    registered = {ledger.model_path(v).parent.name for v in ledger.versions() if v.id > 0}
    for child in vdir.iterdir():
        if child.name in registered or child.name == keep:
            continue
        if VERSION_DIR.match(child.name) or child.name.startswith(".tmp-"):
            remove(child, ignore_errors=True)


# builds a version folder: (ledger, request, parent, stage, say) -> (weights sha, summary, rows)
Builder = Callable[..., tuple[str, dict[str, Any], dict]]


def apply(root: str | Path, rid: int | None = None, apply_all: bool = False,
          progress: bool = True, build: Builder | None = None) -> list[int]:
    """Apply the next open request (or `rid`, or all of them in order); returns the new
    version ids. A failed request is recorded as failed with its error, and stops the queue.
    `build` makes a version folder (a classifier project's own, see ledger/classifier.py)."""
    done: list[int] = []
    with Ledger.open(root) as ledger, ledger.apply_lock():
        ledger.hasher.check()  # a keyed ledger whose key is gone cannot read its requests
        queue = _queue(ledger, rid, apply_all)
        if not queue:
            announce(progress, None, "no pending requests")
        for req in queue:
            done.append(_apply_one(ledger, req, progress, build or _build_version))
    return done


def _stage_matches(stage: Path, plan: dict[str, Any]) -> bool:
    try:
        return json.loads((stage / "stage.json").read_text()) == plan
    except (OSError, ValueError):
        return False


def _apply_one(ledger: Ledger, req: Request, progress: bool, build: Builder) -> int:
    """Build the next version for `req` in its folder, then record it in one transaction.
    Any error marks the request failed (with the message); Ctrl-C leaves it pending."""
    parent = ledger.latest_version()
    vid = parent.id + 1
    stage = ledger.root / VERSIONS_DIR / f"v{vid:04d}"
    _clean_versions_dir(ledger, keep=stage.name)
    ledger.start_attempt(req.id)
    say = functools.partial(announce, progress, req.id)
    try:
        say("checking inputs")
        sha, summary, rows = build(ledger, req, parent, stage, say)
        ledger.record_version(req.id, parent.id, f"versions/{stage.name}/model", sha, summary, rows)
        say(f"recorded version {vid}; evidence: {stage / 'evidence.html'}")
        return vid
    except KeyboardInterrupt:
        ledger.event(req.id, "interrupted", "the request stays pending; apply again to resume")
        raise
    except Exception as exc:
        message = str(exc) if isinstance(exc, ObliviateError) else f"{type(exc).__name__}: {exc}"
        ledger.set_status(req.id, "failed", message)
        raise ObliviateError(f"request {req.id} failed: {message}") from exc


@dataclass
class _Inputs:
    """What one version is built from, checked and resolved before its folder is touched."""

    settings: ProjectSettings
    parent_dir: Path
    forget: list[Example]
    exclude: set[str]  # content hashes never trained on again: every forgotten item, this request's
    retain: list[Example]
    dropped: int  # retain items removed because they were forgotten
    cfg: UnlearnConfig
    holdout: list[Example] | None  # never-seen items: the calibrated stop, when on


def _build_version(ledger: Ledger, req: Request, parent: Version, stage: Path,
                   say: Callable[[str], None]) -> tuple[str, dict[str, Any], dict]:
    """Unlearn (or reuse a finished model of an interrupted attempt), evaluate, audit and write
    every file of the version folder, the manifest last. Returns what the ledger records."""
    inputs = _check_inputs(ledger, req, parent)
    _prepare_stage(stage, _stage_plan(req, parent, inputs))
    timings: dict[str, float] = {}
    _unlearn_or_resume(req, parent, stage, inputs, say, timings)
    measured = _evaluate_step(ledger, req, parent, stage, inputs, say, timings)
    audit_res = _audit_step(req, stage, inputs, measured, say, timings)
    write_json_atomic(stage / "results.json", measured["after"])
    write_json_atomic(stage / "audit.json", audit_res)
    say("writing the evidence report")
    sha = weights_sha256(stage / "model")
    summary = {"request": req.id, "method": req.method, "config": to_dict(inputs.cfg),
               "retain_dropped": inputs.dropped, "timings": timings,
               "oracle": measured["oracle_metrics"],
               "stop": read_provenance(stage / "model").get("stop")}
    _write_evidence(ledger, req, parent, stage, inputs, sha, summary, measured, audit_res)
    # last: a folder with a manifest is complete, and only then does the caller record it
    _write_manifest(stage, req, parent, sha)
    return sha, summary, measured["measurements"]


def _check_inputs(ledger: Ledger, req: Request, parent: Version) -> _Inputs:
    """Check the parent's weights and the request's data; resolve retain set, config and stop."""
    settings = project_settings(ledger)
    parent_dir = ledger.model_path(parent)
    if not parent_dir.exists() or weights_sha256(parent_dir) != parent.weights_sha256:
        raise ObliviateError(f"version {parent.id} ({parent_dir}) is missing or its weights "
                             "changed since it was recorded; restore it before applying")
    forget = verified_forget(ledger, req)
    exclude = forgotten_hashes(ledger) | ledger.content_hashes(req.id)
    retain, dropped = retain_items(ledger, settings, req, exclude)
    cfg = unlearn_config(req.method, req.overrides, str(parent_dir))
    holdout = None  # the request's own guard.forget_stop wins over the calibrated stop
    if (settings.stop_at_holdout and settings.holdout
            and "forget_stop" not in parse_overrides(req.overrides).get("guard", {})):
        holdout = read_items(settings.holdout, "holdout")
    return _Inputs(settings, parent_dir, forget, exclude, retain, dropped, cfg, holdout)


def _stage_plan(req: Request, parent: Version, inputs: _Inputs) -> dict[str, Any]:
    """What this folder builds: an interrupted attempt with the same plan can be resumed."""
    return {"request": req.id, "parent": parent.id, "parent_sha256": parent.weights_sha256,
            "forget_digest": req.forget_digest, "retain_dropped": inputs.dropped,
            "config": to_dict(inputs.cfg)}


def _prepare_stage(stage: Path, plan: dict[str, Any]) -> None:
    """Keep the folder of an attempt at the same plan, replace any other, and record the plan.
    Temp files and half-saved model copies (`.tmp-*`, `.old-*`) left by a kill are removed."""
    if stage.is_symlink() or (stage.exists() and not _stage_matches(stage, plan)):
        remove(stage)
    stage.mkdir(parents=True, exist_ok=True)
    for child in stage.iterdir():
        if child.name.startswith(".") or child.is_symlink():
            remove(child)
    write_json_atomic(stage / "stage.json", plan)


def _unlearn_or_resume(req: Request, parent: Version, stage: Path, inputs: _Inputs,
                       say: Callable[[str], None], timings: dict[str, float]) -> None:
    """Unlearn into stage/model, unless an interrupted attempt already finished that model."""
    if (stage / "model").is_dir():
        say(f"resuming: the unlearned model in {stage / 'model'} is complete")
        return
    say(f"unlearning with {req.method} from version {parent.id}")
    t0 = time.perf_counter()
    unlearn_examples(inputs.cfg, inputs.forget, inputs.retain, stage / "model", progress=False,
                     holdout=inputs.holdout)
    timings["unlearn_s"] = round(time.perf_counter() - t0, 2)


def _evaluate_step(ledger: Ledger, req: Request, parent: Version, stage: Path, inputs: _Inputs,
                   say: Callable[[str], None], timings: dict[str, float]) -> dict[str, Any]:
    """Measure the new version, its parent and the oracle (see `_measure_new`)."""
    say("evaluating")
    t0 = time.perf_counter()
    measured = _measure_new(ledger, inputs.settings, req, parent, stage / "model", inputs.forget,
                            inputs.exclude)
    timings["evaluate_s"] = round(time.perf_counter() - t0, 2)
    return measured


def _audit_step(req: Request, stage: Path, inputs: _Inputs, measured: dict[str, Any],
                say: Callable[[str], None], timings: dict[str, float]) -> dict[str, Any]:
    """Audit the new version against its parent and add the audit metrics to its measurements."""
    say("auditing")
    t0 = time.perf_counter()
    audit_res = audit_version(inputs.settings, stage / "model", inputs.parent_dir, inputs.forget,
                              inputs.retain)
    timings["audit_s"] = round(time.perf_counter() - t0, 2)
    measured["measurements"][(-1, req.id)].update(M.audit_metrics(audit_res))
    return audit_res


def _write_evidence(ledger: Ledger, req: Request, parent: Version, stage: Path, inputs: _Inputs,
                    sha: str, summary: dict[str, Any], measured: dict[str, Any],
                    audit_res: dict[str, Any]) -> None:
    """Write the request's evidence report into the version folder."""
    forget, settings = inputs.forget, inputs.settings
    write_text_atomic(stage / "evidence.html", evidence_html(ledger, EvidenceInputs(
        req, parent, parent.id + 1, sha, summary, measured, audit_res,
        [ledger.hasher.item(x) for x in forget], settings.samples)))


def _write_manifest(stage: Path, req: Request, parent: Version, sha: str) -> None:
    """Write the manifest (hashes of the files the version is made of: its model's and
    VERSION_FILES); it marks the folder done."""
    model = [p for p in (stage / "model").rglob("*") if p.is_file() and not p.is_symlink()
             and not any(part.startswith((".tmp-", ".old-")) for part in p.parts)]
    files = sorted([*model, *(stage / f for f in VERSION_FILES if (stage / f).is_file())])
    write_json_atomic(stage / "manifest.json", {
        "version": parent.id + 1, "request": req.id, "parent": parent.id, "weights_sha256": sha,
        "files": {str(p.relative_to(stage)): file_sha256(p) for p in files}})


def _measure_new(ledger: Ledger, settings: ProjectSettings, req: Request, parent: Version,
                 model_dir: Path, forget: list[Example], exclude: set[str]) -> dict[str, Any]:
    """Measure the new version on every past request and this one, the parent (before) on
    this one, and the oracle; returns Results and the ledger's measurement rows."""
    past, missing = past_forget_sets(ledger, None)
    retain, _ = retain_items(ledger, settings, None, exclude)
    sets = measure_sets(settings, {**past, req.id: forget}, retain)
    have = ledger.measurements()
    parent_needs_model_level = (parent.id, M.MODEL_LEVEL) not in have
    after = M.evaluate_version(model_dir, sets, f"version {parent.id + 1}",
                               trust_remote_code=settings.trust_remote_code)
    before_sets = M.Sets(**{**sets.__dict__, "forget": {req.id: forget},
                            "kept": {req.id: sets.kept.get(req.id, [])}})
    before = M.evaluate_version(ledger.model_path(parent), before_sets, f"version {parent.id}",
                                model_level=parent_needs_model_level,
                                trust_remote_code=settings.trust_remote_code)
    oracle = None
    if settings.oracle:
        oracle = M.evaluate_version(settings.oracle, sets, "oracle", model_level=False,
                                    trust_remote_code=settings.trust_remote_code)
    rows: dict[tuple[int, int], dict[str, Any]] = {
        (-1, r): M.request_metrics(after, r, oracle) for r in sets.forget}
    rows.update({(-1, r): {"forget_prob": why} for r, why in missing.items()})
    rows[(-1, M.MODEL_LEVEL)] = M.model_metrics(after)
    rows[(parent.id, req.id)] = M.request_metrics(before, req.id, oracle)
    if parent_needs_model_level:
        rows[(parent.id, M.MODEL_LEVEL)] = M.model_metrics(before)
    oracle_metrics = {str(r): M.request_metrics(oracle, r, oracle) for r in sets.forget} if oracle else {}
    return {"after": after, "before": before, "oracle": oracle, "measurements": rows,
            "oracle_metrics": oracle_metrics}


def audit_version(settings: ProjectSettings, model_dir: Path, parent_dir: Path,
           forget: list[Example], retain: list[Example]) -> dict[str, Any]:
    cfg = AuditConfig(model=str(model_dir), target=str(parent_dir), oracle=settings.oracle,
                      audits=list(settings.audits), params=settings.audit_params,
                      template=settings.template, trust_remote_code=settings.trust_remote_code)
    data = AuditData(forget=forget, retain=retain[:64], template=settings.template)
    return audit(cfg, progress=False, data=data)
