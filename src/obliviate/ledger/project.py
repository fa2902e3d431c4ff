"""A deletion project: its fixed settings, its requests, and the data a request reads.

`init_project` creates the ledger with the base model as version 0; `add_request` records a
request (item hashes, never the text). The functions below them resolve, at apply time, what a
request's unlearning and measurements read: its forget items (checked against the recorded
digest), the retain set without any forgotten item, and every past request's forget set.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..audits import AUDITS
from ..config import from_dict, merge, parse_overrides, require, require_choice, to_dict
from ..data import load_examples
from ..data.examples import Example
from ..data.formats import write_jsonl
from ..encoding import DEFAULT_TEMPLATE
from ..errors import ObliviateError
from ..io import check_output, ensure_not_inside
from ..methods import build
from ..models import resolve_source
from ..target import synthesise_for
from ..unlearning import UnlearnConfig
from . import measure as M
from .paths import internal_paths
from .store import Ledger, Request, weights_sha256

# fields of UnlearnConfig that the ledger sets itself, never a request's overrides
RESERVED = ("model", "forget", "retain", "benchmark", "forget_split", "target", "probes")


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

    def __post_init__(self) -> None:
        for name in [*self.audits, *self.audit_params]:
            require_choice(name, tuple(AUDITS.names()), "audits")
        require(self.max_retain > 0, "max_retain", f"must be positive (got {self.max_retain})")
        for key in ("max_new_tokens", "samples"):
            require(getattr(self, key) >= 0, key, f"must be 0 or more (got {getattr(self, key)})")


def announce(progress: bool, rid: int | None, text: str) -> None:
    if progress:
        print(f"[request {rid}] {text}" if rid is not None else text, flush=True)


def _abs(path: str) -> str:
    return str(Path(path).expanduser().resolve()) if path else ""


# ---------------------------------------------------------------------------- init / add
def init_project(root: str | Path, settings: ProjectSettings) -> Path:
    """Create the ledger of a project directory with version 0 = `settings.base`."""
    root = Path(root)
    if not settings.base:
        raise ObliviateError("a project needs its base model: --model DIR")
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
    data = parse_overrides(overrides)
    bad = [k for k in RESERVED if k in data]
    if bad:
        raise ObliviateError(f"'{bad[0]}' is set by the ledger for each request; remove it "
                             "(use --forget / --retain / --target)")
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
    """Record a pending request: keyed hashes of `forget`'s items (never their text), method,
    config."""
    if not subject.strip():
        raise ObliviateError("a request needs a subject (a name or a ticket reference)")
    unlearn_config(method, list(overrides))
    items = read_items(forget, "forget")
    kept = read_items(retain, "retain") if retain else None
    with Ledger.open(root) as ledger:
        h = ledger.hasher
        retain_digest = h.digest(h.item(x) for x in kept) if kept is not None else None
        return ledger.add_request(subject.strip(), _abs(forget), [h.item(x) for x in items],
                                  _abs(retain) or None, retain_digest, method, list(overrides),
                                  contents=[h.content(x) for x in items])


def target_forget_file(root: str | Path, target: str, out: str | Path, probes: str = "",
                       progress: bool = True) -> Path:
    """A target request's forget file (`request add --target NAME --forget OUT`): what the
    project's latest version says about `target`, in the sentences its replies agree on
    (target.py), written to `out`, a new file the requester keeps like any forget file; the
    ledger then records its hashes as usual. The target's neighbours are left out of it."""
    out = Path(out)
    if out.exists():
        raise ObliviateError(f"--forget {out} already exists: with --target it is where the "
                             "synthesised forget items are written; name a new file")
    with Ledger.open(root) as ledger:
        settings = project_settings(ledger)
        model = str(ledger.model_path(ledger.latest_version()))
    check_output(out, {"base model": settings.base, "retain data": settings.retain,
                       "holdout data": settings.holdout, "ledger": internal_paths(Path(root)),
                       "probe records": probes})
    cfg = UnlearnConfig(model=model, target=target, probes=probes, template=settings.template,
                        trust_remote_code=settings.trust_remote_code)
    data = synthesise_for(cfg, progress)
    write_jsonl(out, data.forget)
    return out


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
    h = ledger.hasher
    if h.digest(h.item(x) for x in items) != req.forget_digest:
        recorded = ledger.item_hashes(req.id)
        changed = sum(h.item(x) not in recorded for x in items)
        raise ObliviateError(
            f"request {req.id}: {req.forget_path} changed since the request was added "
            f"({changed} of {len(items)} items differ from the {req.n_items} recorded); restore "
            "the original file, or cancel this request and add the new file as a new one")
    return items


def forgotten_hashes(ledger: Ledger, upto_version: int | None = None) -> set[str]:
    """Content hashes of the items of every request done at `upto_version` (all done requests
    if None): what is never trained on again."""
    out: set[str] = set()
    for r in ledger.requests():
        if r.status == "done" and (upto_version is None or r.version_id <= upto_version):
            out |= ledger.content_hashes(r.id)
    return out


def retain_items(ledger: Ledger, settings: ProjectSettings, req: Request | None,
                 exclude: set[str]) -> tuple[list[Example], int]:
    """The retain set without any forgotten item (deleted data is never trained on again);
    returns it and how many items were dropped."""
    path = req.retain_path if req is not None and req.retain_path else settings.retain
    if not path:
        return [], 0
    items = read_items(path, "retain")
    h = ledger.hasher
    if req is not None and req.retain_path and h.digest(h.item(x) for x in items) != req.retain_digest:
        raise ObliviateError(f"request {req.id}: the retain file {path} changed since the "
                             "request was added")
    kept = [x for x in items if h.content(x) not in exclude]
    return kept, len(items) - len(kept)


def measure_sets(settings: ProjectSettings, forget: dict[int, list[Example]],
          retain: list[Example]) -> M.Sets:
    return M.Sets(forget=forget, retain=retain[:settings.max_retain],
                  kept={r: M.kept_items(exs, retain) for r, exs in forget.items()},
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
