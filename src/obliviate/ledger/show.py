"""Plain-text views of the ledger for the command line (`request list`, `request show`)."""

from __future__ import annotations

from pathlib import Path

from ..report.render import fmt
from . import measure as M
from .store import Ledger

HEADLINE = ("forget_prob", "forget_rougeL_recall", "auc_min_k", "forget_quality")


def show_list(root: str | Path) -> str:
    with Ledger.open(root) as ledger:
        reqs = ledger.requests()
        rows = ledger.measurements()
        latest = ledger.latest_version()
    if not reqs:
        return "no requests yet (obliviate request add ...)"
    lines = [f"{'id':>3}  {'status':9s} {'method':10s} {'items':>5}  {'version':>7}  "
             f"{'forget prob then':>16}  {'now':>9}  subject"]
    for r in reqs:
        then = rows.get((r.version_id, r.id), {}).get("forget_prob")
        now = rows.get((latest.id, r.id), {}).get("forget_prob")
        lines.append(f"{r.id:>3}  {r.status:9s} {r.method:10s} {r.n_items:>5}  "
                     f"{r.version_id if r.version_id is not None else '—':>7}  "
                     f"{fmt(then) if isinstance(then, float) else '':>16}  "
                     f"{fmt(now) if isinstance(now, float) else '':>9}  {r.subject}"
                     + (f"\n     error: {r.error}" if r.error else ""))
    util = rows.get((latest.id, M.MODEL_LEVEL), {}).get("model_utility")
    lines.append(f"latest version: {latest.id}" + (f" (model utility {fmt(util)})"
                                                    if isinstance(util, float) else ""))
    return "\n".join(lines)


def show_request(root: str | Path, rid: int) -> str:
    with Ledger.open(root) as ledger:
        r = ledger.request(rid)
        rows = ledger.measurements()
        events = ledger.events(rid)
        version = ledger.version(r.version_id) if r.version_id is not None else None
        later = [v.id for v in ledger.versions() if version is not None and v.id >= version.id]
        root_dir = ledger.root
    out = [f"request {r.id}: {r.subject}", f"  status      {r.status}" + (f" ({r.error})" if r.error else ""),
           f"  added       {r.created_at}", f"  method      {r.method} {' '.join(r.overrides)}".rstrip(),
           f"  forget      {r.n_items} items in {r.forget_path}", f"  digest      {r.forget_digest}",
           f"  attempts    {r.attempts}"]
    if version is not None:
        out += [f"  version     {version.id} (from version {version.parent_id}), weights "
                f"sha256 {version.weights_sha256[:16]}…",
                f"  evidence    {root_dir / Path(version.path).parent / 'evidence.html'}",
                "", f"  {'version':>7}  " + "  ".join(f"{k:>20s}" for k in HEADLINE)]
        for vid in [version.parent_id, *later]:
            m = rows.get((vid, r.id), {})
            out.append(f"  {vid:>7}  " + "  ".join(f"{fmt(m.get(k)) if isinstance(m.get(k), float) else '—':>20s}"
                                                   for k in HEADLINE))
    out += ["", "  events:"] + [f"    {ev['at']}  {ev['kind']:11s} {ev['detail']}" for ev in events]
    return "\n".join(out)
