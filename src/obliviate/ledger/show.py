"""Plain-text views of the ledger for the command line (`request list`, `request show`).

Everything a user or a file supplied (subjects, paths, errors, overrides, event details) goes
through `printable`: a subject holding terminal escape codes is shown as `\\x1b[31m...`, never
sent to the terminal raw."""

from __future__ import annotations

import unicodedata
from pathlib import Path

from ..report.render import fmt
from . import measure as M
from .hashing import LEGACY
from .store import Ledger

HEADLINE = ("forget_prob", "forget_rougeL_recall", "auc_min_k", "forget_quality")
CLASSIFIER_HEADLINE = ("forget_ua", "forget_mia_efficacy", "avg_gap")


def _family(ledger: Ledger) -> tuple[str, str, tuple[str, ...]]:
    """(the per-request number `list` shows, its title, the numbers `show` tabulates)."""
    if ledger.settings().get("family") == "classifier":
        return "forget_ua", "forget UA then", CLASSIFIER_HEADLINE
    return "forget_prob", "forget prob then", HEADLINE
# control and format characters (escape codes, bidi overrides), lone surrogates, line breaks
_UNPRINTABLE = frozenset({"Cc", "Cf", "Cs", "Zl", "Zp"})
LEGACY_NOTE = ("this ledger uses unkeyed SHA-256 item hashes; create a new project for keyed "
               "hashes")


def printable(text: object) -> str:
    """`text` with every control or format character written as a Python escape."""
    out = []
    for ch in str(text):
        if unicodedata.category(ch) not in _UNPRINTABLE:
            out.append(ch)
        else:
            n = ord(ch)
            out.append(f"\\x{n:02x}" if n < 0x100 else f"\\u{n:04x}" if n < 0x10000
                       else f"\\U{n:08x}")
    return "".join(out)


def show_list(root: str | Path) -> str:
    with Ledger.open(root) as ledger:
        reqs = ledger.requests()
        rows = ledger.measurements()
        latest = ledger.latest_version()
        legacy = ledger.hasher.scheme == LEGACY
        key, title, _ = _family(ledger)
    notes = [LEGACY_NOTE] if legacy else []
    if not reqs:
        return "\n".join(["no requests yet (obliviate request add ...)", *notes])
    lines = [f"{'id':>3}  {'status':9s} {'method':18s} {'items':>5}  {'version':>7}  "
             f"{title:>16}  {'now':>9}  subject"]
    for r in reqs:
        then = rows.get((r.version_id, r.id), {}).get(key)
        now = rows.get((latest.id, r.id), {}).get(key)
        lines.append(f"{r.id:>3}  {r.status:9s} {printable(r.method):18s} {r.n_items:>5}  "
                     f"{r.version_id if r.version_id is not None else '—':>7}  "
                     f"{fmt(then) if isinstance(then, float) else '':>16}  "
                     f"{fmt(now) if isinstance(now, float) else '':>9}  {printable(r.subject)}"
                     + (f"\n     error: {printable(r.error)}" if r.error else ""))
    util = rows.get((latest.id, M.MODEL_LEVEL), {}).get("model_utility")
    lines.append(f"latest version: {latest.id}" + (f" (model utility {fmt(util)})"
                                                    if isinstance(util, float) else ""))
    return "\n".join([*lines, *notes])


def show_request(root: str | Path, rid: int) -> str:
    with Ledger.open(root) as ledger:
        r = ledger.request(rid)
        rows = ledger.measurements()
        events = ledger.events(rid)
        version = ledger.version(r.version_id) if r.version_id is not None else None
        later = [v.id for v in ledger.versions() if version is not None and v.id >= version.id]
        root_dir = ledger.root
        _, _, headline = _family(ledger)
    p = printable
    out = [f"request {r.id}: {p(r.subject)}",
           f"  status      {r.status}" + (f" ({p(r.error)})" if r.error else ""),
           f"  added       {p(r.created_at)}",
           f"  method      {p(r.method)} {' '.join(map(p, r.overrides))}".rstrip(),
           f"  forget      {r.n_items} items in {p(r.forget_path)}",
           f"  digest      {p(r.forget_digest)}", f"  attempts    {r.attempts}"]
    if version is not None:
        out += [f"  version     {version.id} (from version {version.parent_id}), weights "
                f"sha256 {version.weights_sha256[:16]}…",
                f"  evidence    {p(root_dir / Path(version.path).parent / 'evidence.html')}",
                "", f"  {'version':>7}  " + "  ".join(f"{k:>20s}" for k in headline)]
        for vid in [version.parent_id, *later]:
            m = rows.get((vid, r.id), {})
            out.append(f"  {vid:>7}  " + "  ".join(f"{fmt(m.get(k)) if isinstance(m.get(k), float) else '—':>20s}"
                                                   for k in headline))
    out += ["", "  events:"] + [f"    {p(ev['at'])}  {p(ev['kind']):11s} {p(ev['detail'])}"
                                for ev in events]
    return "\n".join(out)
