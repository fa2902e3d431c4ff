"""The evidence report of one applied request, and the ledger's sustainability page.

Self-contained HTML (templates evidence.html and ledger.html): inline CSS and SVG plots, no
scripts, no external assets. Everything that came from a model or a user (generated answers,
subject, paths, error text) reaches the page through autoescaped template variables: model
output is untrusted input. The forget items' own text never appears, only their hashes and the
unlearned model's answers.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import numpy as np
from markupsafe import Markup

from ..evaluation.results import versions as library_versions
from ..report.audit import measured_on, relearning_svg
from ..report.columns import forget_rows, key_title
from ..report.html import figure_svg, fmt, pyplot, render
from . import measure as M
from .store import Ledger, Request, Version

Measurements = dict[tuple[int, int], dict[str, Any]]


@dataclass(frozen=True)
class EvidenceInputs:
    """One applied request, before its version is recorded in the ledger.

    `measured` holds what the workflow measured (before / after / oracle Results, the
    new measurements keyed by (version, request) with -1 for the new version, the oracle's
    metrics per request); `summary` the version summary (config, timings, retain_dropped);
    `hashes` the forget items' item hashes in file order; `samples` how many answers to show."""

    request: Request
    parent: Version
    version_id: int
    weights_sha256: str
    summary: dict[str, Any]
    measured: dict[str, Any]
    audit: dict[str, Any]
    hashes: list[str]
    samples: int = 0


def roc_svg(curves: dict[str, dict[str, Any] | None], attack: str = "min_k") -> Markup | None:
    """ROC curves of one MIA attack: forget items (members) vs holdout items (non-members)."""
    from sklearn.metrics import roc_curve

    plt = pyplot()
    fig, ax = plt.subplots(figsize=(4.8, 4.2), dpi=100)
    drawn = 0
    for name, mia in curves.items():
        if mia is None:
            continue
        pi = mia["per_item"]
        member, nonmember = np.array(pi[f"member_{attack}"]), np.array(pi[f"nonmember_{attack}"])
        y = np.r_[np.ones(len(member)), np.zeros(len(nonmember))]
        fpr, tpr, _ = roc_curve(y, np.r_[member, nonmember])
        ax.plot(fpr, tpr, label=f"{name} (AUC {mia['aggregate'][f'auc_{attack}']:.2f})")
        drawn += 1
    if not drawn:
        plt.close(fig)
        return None
    ax.plot([0, 1], [0, 1], color="grey", linestyle="--", linewidth=1)
    ax.set_xlabel("false positive rate (holdout flagged as member)")
    ax.set_ylabel("true positive rate (forget item flagged)")
    ax.set_title(f"Membership inference, {attack}")
    ax.legend(fontsize=8, loc="lower right")
    ax.grid(True, alpha=0.3)
    fig.tight_layout()
    return figure_svg(fig)


def sustainability_svg(measurements: Measurements, request_ids: list[int]) -> Markup | None:
    """Forget-set answer probability of every request, and model utility, across versions."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7.0, 3.8), dpi=100)
    drawn = 0
    for rid in request_ids:
        pts = sorted((v, m["forget_prob"]) for (v, r), m in measurements.items()
                     if r == rid and isinstance(m.get("forget_prob"), float))
        if pts:
            ax.plot(*zip(*pts, strict=True), marker="o", label=f"request {rid}: forget prob")
            drawn += 1
    util = sorted((v, m["model_utility"]) for (v, r), m in measurements.items()
                  if r == M.MODEL_LEVEL and isinstance(m.get("model_utility"), float))
    if util:
        ax.plot(*zip(*util, strict=True), marker="s", color="black", linewidth=2, label="model utility")
        drawn += 1
    if not drawn:
        plt.close(fig)
        return None
    ax.set_xlabel("model version")
    ax.set_ylabel("value")
    ax.set_ylim(-0.02, 1.02)
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.legend(fontsize=8)
    ax.grid(True, alpha=0.3)
    ax.set_title("Sustainability: earlier requests stay forgotten, utility stays")
    fig.tight_layout()
    return figure_svg(fig)


# ---------------------------------------------------------------------------- evidence sections
def _all_measurements(ledger: Ledger, inputs: EvidenceInputs) -> Measurements:
    """The ledger's measurements plus the new version's (keyed -1 until it is recorded)."""
    rows = {**ledger.measurements()}
    for (v, r), m in inputs.measured["measurements"].items():
        rows[(inputs.version_id if v == -1 else v, r)] = m
    return rows


def _facts(inputs: EvidenceInputs) -> list[list[str]]:
    req, parent, summary = inputs.request, inputs.parent, inputs.summary
    return [["subject", req.subject], ["request added", req.created_at],
            ["method", req.method], ["versions", f"{parent.id} → {inputs.version_id} (base: version 0)"],
            ["forget items", f"{req.n_items} (digest {req.forget_digest})"],
            ["forget file", req.forget_path],
            ["retain items dropped (forgotten data)", str(summary["retain_dropped"])],
            ["parent weights sha256", parent.weights_sha256],
            ["new weights sha256", inputs.weights_sha256],
            ["stop", _stop_text(summary.get("stop"))],
            ["timings (s)", json.dumps(summary["timings"])]]


def _stop_text(stop: dict[str, Any] | None) -> str:
    """The calibrated stop in one line: where it stopped and the forget-vs-holdout AUC there."""
    if not stop:
        return "no calibrated stop (the full step budget, or the request's own guard.forget_stop)"
    where = f"at step {stop['step']}" if stop["reached"] else f"not reached in {stop['step']} steps"
    return (f"{where}: forget vs never-seen (holdout) items, LOSS-attack AUC "
            f"{stop['auc_start']:.3f} before, {stop['auc_at_stop']:.3f} at stop "
            f"(target {stop['target_auc']:g})")


def _verdict(before: dict[str, Any], after: dict[str, Any], mb: dict[str, Any],
             ma: dict[str, Any], pid: int, vid: int) -> str:
    """One sentence a person can read first: what changed, in numbers ('' when none)."""
    parts = []
    b, a = before.get("forget_prob"), after.get("forget_prob")
    if isinstance(b, float) and isinstance(a, float):
        parts.append(f"the model's probability of the forgotten answers fell from {fmt(b)} "
                     f"(version {pid}) to {fmt(a)} (version {vid})")
    auc = after.get("auc_min_k")
    if isinstance(auc, float):
        parts.append(f"a membership attack now scores AUC {auc:.2f} (0.5 = indistinguishable "
                     "from unseen data)")
    kb, ka = before.get("kept_prob"), after.get("kept_prob")
    if isinstance(kb, float) and isinstance(ka, float):
        parts.append(f"the same entities' other facts ({int(after.get('kept_items', 0))} retain "
                     f"items) went from {fmt(kb)} to {fmt(ka)}")
    ub, ua = mb.get("model_utility"), ma.get("model_utility")
    if isinstance(ub, float) and isinstance(ua, float):
        parts.append(f"model utility went from {fmt(ub)} to {fmt(ua)}")
    return "; ".join(parts)


def _forget_and_utility(rows: Measurements, inputs: EvidenceInputs) -> dict[str, Any]:
    """The before/after numbers of the request's forget set and of the model, and the verdict."""
    rid, pid, vid = inputs.request.id, inputs.parent.id, inputs.version_id
    before, after = rows.get((pid, rid), {}), rows.get((vid, rid), {})
    mb, ma = rows.get((pid, M.MODEL_LEVEL), {}), rows.get((vid, M.MODEL_LEVEL), {})
    oracle = inputs.measured["oracle_metrics"].get(str(rid), {})
    kept = [[key_title(k.removeprefix("kept_")), fmt(before.get(k)), fmt(after.get(k)), fmt(oracle.get(k))]
            for k in (f"kept_{m}" for m in M.KEPT_METRICS) if k in after]
    return {"forget_rows": forget_rows(after), "before": before, "after": after, "oracle": oracle, "kept": kept,
            "utility": [[key_title(k), fmt(mb.get(k)), fmt(ma.get(k))] for k in ma],
            "verdict": _verdict(before, after, mb, ma, pid, vid)}


def _mia(inputs: EvidenceInputs) -> Markup | None:
    """ROC curves before, after and (where there is one) of the oracle; none without holdout."""
    measured, name = inputs.measured, M.mia_name(inputs.request.id)
    curves = {f"before (version {inputs.parent.id})": measured["before"]["datasets"].get(name),
              f"after (version {inputs.version_id})": measured["after"]["datasets"].get(name)}
    if measured["oracle"] is not None:
        curves["oracle"] = measured["oracle"]["datasets"].get(name)
    return roc_svg(curves)


def _audits(audit_res: dict[str, Any]) -> dict[str, Any]:
    """The `detail` macro's rows: each audit's knowledge before, after, of the oracle, residual."""
    rows = []
    for name, entry in audit_res["audits"].items():
        raw, res = entry["model"], entry["residual"]
        if "not_applicable" in raw:
            rows.append([name, "—", "—", "—", str(res)])
            continue
        oracle = entry.get("oracle")
        rows.append([name + measured_on(audit_res, name), fmt(entry["target"]["score"]),
                     fmt(raw["score"]), fmt(oracle["score"]) if oracle else "no oracle",
                     res if isinstance(res, str) else fmt(res["score"])])
    return {"rows": rows, "curve": relearning_svg([audit_res])}


def _sustainability(ledger: Ledger, rows: Measurements, inputs: EvidenceInputs) -> dict[str, Any]:
    """Every done request and this one: its forget probability when applied and now."""
    vid = inputs.version_id
    past = [r for r in ledger.requests() if r.status == "done"] + [inputs.request]
    own = {r.id: (r.version_id if r.version_id is not None else vid) for r in past}
    table = [[f"request {r.id}", f"v{own[r.id]}",
              fmt(rows.get((own[r.id], r.id), {}).get("forget_prob")),
              fmt(rows.get((vid, r.id), {}).get("forget_prob")),
              fmt(rows.get((vid, r.id), {}).get("auc_min_k"))] for r in past]
    return {"rows": table, "plot": sustainability_svg(rows, [r.id for r in past])}


def _samples(after: dict[str, Any], rid: int, hashes: list[str], n: int) -> list[list[str]] | None:
    """The first `n` generated answers of the new version, by item hash; None: not shown."""
    if n <= 0:
        return None
    gens = after["datasets"][M.forget_name(rid)]["per_item"]["generation"][:n]
    return [[h[:12], g] for h, g in zip(hashes, gens, strict=False)]


def evidence_html(ledger: Ledger, inputs: EvidenceInputs) -> str:
    """The evidence page of `inputs.request`, applied as version `inputs.version_id`."""
    rows = _all_measurements(ledger, inputs)
    return render(
        "evidence.html", title=f"Deletion request {inputs.request.id}: evidence",
        parent_id=inputs.parent.id, vid=inputs.version_id, facts=_facts(inputs),
        **_forget_and_utility(rows, inputs), roc=_mia(inputs), audits=_audits(inputs.audit),
        sustain=_sustainability(ledger, rows, inputs),
        samples=_samples(inputs.measured["after"], inputs.request.id, inputs.hashes, inputs.samples),
        config_json=json.dumps(inputs.summary["config"], indent=1),
        software_json=json.dumps(library_versions(), indent=1))


def ledger_html(ledger: Ledger) -> str:
    """The project page: every request's status and each version's measurements."""
    reqs = ledger.requests()
    rows = ledger.measurements()
    requests = [[str(r.id), r.status, r.subject, r.method, str(r.n_items),
                 str(r.version_id) if r.version_id is not None else "—", r.error or ""] for r in reqs]
    done = [r.id for r in reqs if r.status == "done"]
    classifier = ledger.settings().get("family") == "classifier"
    # a classifier project measures remaining accuracy and unlearning accuracy (points)
    utility, forget = (("retain_ra", "RA"), ("forget_ua", "UA")) if classifier else \
        (("model_utility", "model utility"), ("forget_prob", "forget prob"))
    grid = []
    for v in ledger.versions():
        m = rows.get((v.id, M.MODEL_LEVEL), {})
        grid.append([str(v.id), fmt(m.get(utility[0]))]
                    + [fmt(rows.get((v.id, rid), {}).get(forget[0])) for rid in done])
    return render("ledger.html", title=f"Deletion ledger: {ledger.root.name}", requests=requests,
                  done=done, versions=grid, utility_title=utility[1], forget_title=forget[1],
                  plot=None if classifier else sustainability_svg(rows, done))
