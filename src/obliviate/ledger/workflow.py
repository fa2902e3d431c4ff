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
import re
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..config import from_dict, merge, parse_overrides, to_dict
from ..data import load_examples
from ..data.examples import Example
from ..encoding import DEFAULT_TEMPLATE
from ..errors import ObliviateError
from ..io import ensure_not_inside, write_json_atomic, write_text_atomic
from . import measure as M
from .store import Ledger, Request, Version, digest, file_sha256, item_hash, weights_sha256

if TYPE_CHECKING:
    from ..unlearning import UnlearnConfig

# fields of UnlearnConfig that the ledger sets itself, never a request's overrides
RESERVED = ("model", "forget", "retain", "benchmark", "forget_split")
VERSION_DIR = re.compile(r"^v\d{4,}$")


@dataclass
class ProjectSettings:
    """One project's fixed inputs: the base model and the data every version is measured on."""

    base: str = ""  # the model before any request (never modified)
    retain: str = ""  # retain data: unlearning's retain set and the utility measure
    holdout: str = ""  # non-members for membership inference (MIA AUC, ROC curves)
    utility: list[str] = field(default_factory=list)  # further utility sets (e.g. world facts)
    oracle: str = ""  # a model never trained on any requested data: forget quality, audit residuals
    audits: list[str] = field(default_factory=lambda: ["rephrase", "few_shot", "quantization",
                                                       "relearning"])
    audit_params: dict[str, dict[str, Any]] = field(default_factory=dict)
    max_retain: int = 200  # retain items measured (and used by the audits: the first 64)
    max_new_tokens: int = 48
    samples: int = 5  # model answers to forget questions shown in each evidence report
    # Stop unlearning once the forget items are no more likely than never-seen (holdout) items:
    # the level of a model that never saw them. Pushing further is over-unlearning, which a
    # membership attack detects too, and it costs utility request after request. A request's
    # own guard.forget_stop override wins.
    stop_at_holdout: bool = True
    template: str = DEFAULT_TEMPLATE
    trust_remote_code: bool = False


def announce(progress: bool, rid: int | None, text: str) -> None:
    if progress:
        print(f"[request {rid}] {text}" if rid is not None else text, flush=True)


def _abs(path: str) -> str:
    return str(Path(path).expanduser().resolve()) if path else ""


# ---------------------------------------------------------------------------- init / add
def init_project(root: str | Path, settings: ProjectSettings) -> Path:
    """Create the ledger of a project directory with version 0 = `settings.base`."""
    from ..audits import AUDITS

    root = Path(root)
    if not settings.base:
        raise ObliviateError("a project needs its base model: --model DIR")
    from ..models import resolve_source

    folder, gguf = resolve_source(Path(settings.base).expanduser() if settings.base != "smollm2"
                                  else settings.base)
    if not Path(folder).is_dir():
        raise ObliviateError(f"base model not found: {settings.base} (a local folder with "
                             "safetensors weights, or a GGUF file)")
    base = Path(folder) / gguf if gguf else Path(folder)
    ensure_not_inside(root, base if base.is_dir() else base.parent, "model")
    for name in settings.audits:
        AUDITS.get(name)  # unknown audits fail here, with a suggestion
    for path in [settings.retain, settings.holdout, *settings.utility]:
        if path and not load_examples(_abs(path)):
            raise ObliviateError(f"{path} holds no items")
    if settings.oracle and not Path(settings.oracle).is_dir():
        raise ObliviateError(f"oracle model not found: {settings.oracle}")
    resolved = ProjectSettings(**{**to_dict(settings), "base": _abs(str(base)),
                                  "retain": _abs(settings.retain), "holdout": _abs(settings.holdout),
                                  "utility": [_abs(u) for u in settings.utility],
                                  "oracle": _abs(settings.oracle)})
    Ledger.create(root, {"settings": to_dict(resolved)}, resolved.base,
                  weights_sha256(Path(resolved.base))).close()
    return root


def project_settings(ledger: Ledger) -> ProjectSettings:
    return from_dict(ProjectSettings, ledger.settings()["settings"])


def unlearn_config(method: str, overrides: list[str], model: str = ""):
    """The UnlearnConfig of a request (validates the method and every override key)."""
    from ..methods import build
    from ..unlearning import UnlearnConfig

    data = parse_overrides(overrides)
    bad = [k for k in RESERVED if k in data]
    if bad:
        raise ObliviateError(f"'{bad[0]}' is set by the ledger for each request; remove it "
                             "(use --forget / --retain)")
    cfg = from_dict(UnlearnConfig, merge(data, {"method": method, "model": model}))
    build(cfg.method, cfg.params)  # unknown method or parameter: "did you mean" error
    return cfg


def read_items(path: str | Path, what: str) -> list[Example]:
    """A request's data file: it must exist locally, parse and hold at least one item."""
    path = Path(path)
    if not path.is_file():
        raise ObliviateError(f"{what} file not found: {path}")
    items = load_examples(path)
    if not items:
        raise ObliviateError(f"{what} file {path} holds no items: there is nothing to "
                             f"{'forget' if what == 'forget' else 'keep'}")
    return items


def add_request(root: str | Path, subject: str, forget: str, retain: str = "",
                method: str = "npo", overrides: list[str] = ()) -> int:
    """Record a pending request: item hashes of `forget` (never its text), method, config."""
    if not subject.strip():
        raise ObliviateError("a request needs a subject (a name or a ticket reference)")
    unlearn_config(method, list(overrides))
    items = read_items(forget, "forget")
    retain_digest = digest(item_hash(x) for x in read_items(retain, "retain")) if retain else None
    with Ledger.open(root) as ledger:
        return ledger.add_request(subject.strip(), _abs(forget), [item_hash(x) for x in items],
                                  _abs(retain) or None, retain_digest, method, list(overrides))


def cancel_request(root: str | Path, rid: int) -> None:
    with Ledger.open(root) as ledger, ledger.apply_lock():
        req = ledger.request(rid)
        if req.status not in ("pending", "failed"):
            raise ObliviateError(f"request {rid} is {req.status}; only pending or failed "
                                 "requests can be cancelled")
        ledger.set_status(rid, "cancelled", None, "cancelled by the user")


# ---------------------------------------------------------------------------- inputs
def verified_forget(ledger: Ledger, req: Request) -> list[Example]:
    """The request's forget items, after checking the file still holds exactly what was added."""
    items = read_items(req.forget_path, "forget")
    if digest(item_hash(x) for x in items) != req.forget_digest:
        recorded = ledger.item_hashes(req.id)
        changed = sum(item_hash(x) not in recorded for x in items)
        raise ObliviateError(
            f"request {req.id}: {req.forget_path} changed since the request was added "
            f"({changed} of {len(items)} items differ from the {req.n_items} recorded); restore "
            "the original file, or cancel this request and add the new file as a new one")
    return items


def forgotten_hashes(ledger: Ledger, upto_version: int | None = None) -> set[str]:
    """Item hashes of every request done at `upto_version` (all done requests if None)."""
    out: set[str] = set()
    for r in ledger.requests():
        if r.status == "done" and (upto_version is None or r.version_id <= upto_version):
            out |= ledger.item_hashes(r.id)
    return out


def retain_items(ledger: Ledger, settings: ProjectSettings, req: Request | None,
                 exclude: set[str]) -> tuple[list[Example], int]:
    """The retain set without any forgotten item (deleted data is never trained on again);
    returns it and how many items were dropped."""
    path = req.retain_path if req is not None and req.retain_path else settings.retain
    if not path:
        return [], 0
    items = read_items(path, "retain")
    if req is not None and req.retain_path and digest(item_hash(x) for x in items) != req.retain_digest:
        raise ObliviateError(f"request {req.id}: the retain file {path} changed since the "
                             "request was added")
    kept = [x for x in items if item_hash(x) not in exclude]
    return kept, len(items) - len(kept)


def measure_sets(settings: ProjectSettings, forget: dict[int, list[Example]],
          retain: list[Example]) -> M.Sets:
    return M.Sets(forget=forget, retain=retain[:settings.max_retain],
                  holdout=read_items(settings.holdout, "holdout") if settings.holdout else [],
                  utility={Path(u).stem: read_items(u, "utility") for u in settings.utility},
                  template=settings.template, max_new_tokens=settings.max_new_tokens)


def past_forget_sets(ledger: Ledger, upto_version: int | None) -> tuple[dict[int, list[Example]], dict[int, str]]:
    """Forget items of requests done at `upto_version`, and why any cannot be measured any
    more (the user deleted or changed the file after applying it)."""
    sets, missing = {}, {}
    for r in ledger.requests():
        if r.status != "done" or (upto_version is not None and r.version_id > upto_version):
            continue
        try:
            sets[r.id] = verified_forget(ledger, r)
        except ObliviateError as exc:
            missing[r.id] = f"not measured: {exc}"
    return sets, missing


# ---------------------------------------------------------------------------- apply
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
    return open_ if apply_all else open_[:1]


def _clean_versions_dir(ledger: Ledger, keep: str) -> None:
    """Remove version folders that no ledger row registers (left by a killed run), except
    `keep`, the folder the next apply will build (it may be resumable)."""
    vdir = ledger.root / "versions"
    if not vdir.is_dir():
        return
    registered = {ledger.model_path(v).parent.name for v in ledger.versions() if v.id > 0}
    for child in vdir.iterdir():
        if child.name in registered or child.name == keep:
            continue
        if VERSION_DIR.match(child.name) or child.name.startswith(".tmp-"):
            shutil.rmtree(child, ignore_errors=True)


def apply(root: str | Path, rid: int | None = None, apply_all: bool = False,
          progress: bool = True) -> list[int]:
    """Apply the next open request (or `rid`, or all of them in order); returns the new
    version ids. A failed request is recorded as failed with its error, and stops the queue."""
    done: list[int] = []
    with Ledger.open(root) as ledger, ledger.apply_lock():
        queue = _queue(ledger, rid, apply_all)
        if not queue:
            announce(progress, None, "no pending requests")
        for req in queue:
            done.append(_apply_one(ledger, req, progress))
    return done


def _stage_matches(stage: Path, plan: dict[str, Any]) -> bool:
    import json

    try:
        return json.loads((stage / "stage.json").read_text()) == plan
    except (OSError, ValueError):
        return False


def _apply_one(ledger: Ledger, req: Request, progress: bool) -> int:
    """Build the next version for `req` in its folder, then record it in one transaction.
    Any error marks the request failed (with the message); Ctrl-C leaves it pending."""
    parent = ledger.latest_version()
    vid = parent.id + 1
    stage = ledger.root / "versions" / f"v{vid:04d}"
    _clean_versions_dir(ledger, keep=stage.name)
    ledger.start_attempt(req.id)
    say = functools.partial(announce, progress, req.id)
    try:
        say("checking inputs")
        sha, summary, rows = _build_version(ledger, req, parent, stage, say)
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
    exclude: set[str]  # item hashes never trained on again: every forgotten item, this request's
    retain: list[Example]
    dropped: int  # retain items removed because they were forgotten
    cfg: UnlearnConfig
    stop: dict[str, float] | None  # the holdout-level stop, when calibrated


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
               "oracle": measured["oracle_metrics"], "stop": inputs.stop}
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
    exclude = forgotten_hashes(ledger) | ledger.item_hashes(req.id)
    retain, dropped = retain_items(ledger, settings, req, exclude)
    cfg = unlearn_config(req.method, req.overrides, str(parent_dir))
    stop = None
    if (settings.stop_at_holdout and settings.holdout
            and "forget_stop" not in parse_overrides(req.overrides).get("guard", {})):
        stop = calibrated_stop(parent_dir, forget, read_items(settings.holdout, "holdout"),
                               settings, cfg.guard.probe_items)
        cfg.guard.forget_stop = stop["forget_stop"]
    return _Inputs(settings, parent_dir, forget, exclude, retain, dropped, cfg, stop)


def _stage_plan(req: Request, parent: Version, inputs: _Inputs) -> dict[str, Any]:
    """What this folder builds: an interrupted attempt with the same plan can be resumed."""
    return {"request": req.id, "parent": parent.id, "parent_sha256": parent.weights_sha256,
            "forget_digest": req.forget_digest, "retain_dropped": inputs.dropped,
            "config": to_dict(inputs.cfg)}


def _prepare_stage(stage: Path, plan: dict[str, Any]) -> None:
    """Keep the folder of an attempt at the same plan, replace any other, and record the plan."""
    if stage.exists() and not _stage_matches(stage, plan):
        shutil.rmtree(stage)
    stage.mkdir(parents=True, exist_ok=True)
    write_json_atomic(stage / "stage.json", plan)


def _unlearn_or_resume(req: Request, parent: Version, stage: Path, inputs: _Inputs,
                       say: Callable[[str], None], timings: dict[str, float]) -> None:
    """Unlearn into stage/model, unless an interrupted attempt already finished that model."""
    if (stage / "model").is_dir():
        say(f"resuming: the unlearned model in {stage / 'model'} is complete")
        return
    say(f"unlearning with {req.method} from version {parent.id}")
    from ..unlearning import unlearn_examples

    t0 = time.perf_counter()
    unlearn_examples(inputs.cfg, inputs.forget, inputs.retain, stage / "model", progress=False)
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
    from .evidence import EvidenceInputs, evidence_html

    forget, settings = inputs.forget, inputs.settings
    write_text_atomic(stage / "evidence.html", evidence_html(ledger, EvidenceInputs(
        req, parent, parent.id + 1, sha, summary, measured, audit_res,
        [item_hash(x) for x in forget], settings.samples)))


def _write_manifest(stage: Path, req: Request, parent: Version, sha: str) -> None:
    """Write the manifest (hashes of every other file of the folder); it marks the folder done."""
    files = sorted(p for p in stage.rglob("*") if p.is_file() and p.name != "manifest.json")
    write_json_atomic(stage / "manifest.json", {
        "version": parent.id + 1, "request": req.id, "parent": parent.id, "weights_sha256": sha,
        "files": {str(p.relative_to(stage)): file_sha256(p) for p in files}})


def calibrated_stop(parent_dir: Path, forget: list[Example], holdout: list[Example],
                    settings: ProjectSettings, probe_items: int) -> dict[str, float]:
    """The guard's forget_stop (a fraction of the starting forget probability) at which the
    forget items are as likely as holdout items under the parent model. The guard measures
    the first `probe_items` forget items, so the same items set the start here."""
    from ..audits.base import knowledge
    from ..models import load_model

    model, tok = load_model(parent_dir, trust_remote_code=settings.trust_remote_code)
    p_forget = knowledge(model, tok, forget[:probe_items], settings.template)
    p_holdout = knowledge(model, tok, holdout, settings.template)
    # 0 would mean "never stop"; a parent that knows the forget set no better than unseen
    # data stops at the first check
    ratio = min(1.0, max(p_holdout / max(p_forget, 1e-12), 1e-9))
    return {"forget_prob": p_forget, "holdout_prob": p_holdout, "forget_stop": ratio}


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
    before_sets = M.Sets(**{**sets.__dict__, "forget": {req.id: forget}})
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
    from ..audits import AuditConfig, audit
    from ..audits.base import AuditData

    cfg = AuditConfig(model=str(model_dir), target=str(parent_dir), oracle=settings.oracle,
                      audits=list(settings.audits), params=settings.audit_params,
                      template=settings.template, trust_remote_code=settings.trust_remote_code)
    data = AuditData(forget=forget, retain=retain[:64], template=settings.template)
    return audit(cfg, progress=False, data=data)
