"""The audit section of a report: residual knowledge per audit (bar chart, table) and the
relearning recovery curves, from audit results JSON (rendered, never recomputed)."""

from __future__ import annotations

import re
from typing import Any

import numpy as np
from markupsafe import Markup

from .html import figure_svg, pyplot
from .markdown import md_cell


def _residuals(res: dict[str, Any]) -> dict[str, float | str]:
    return {n: (e["residual"] if isinstance(e["residual"], str) else e["residual"]["score"])
            for n, e in res["audits"].items()}


def measured_on(res: dict[str, Any], name: str) -> str:
    """' (in the base weights)' for an audit of a system run on the base it wraps, else ''."""
    on = res["audits"].get(name, {}).get("measured_on")
    return f" (in the {on})" if on else ""


def _audit_names(audits: list[dict[str, Any]]) -> list[str]:
    return sorted({n for a in audits for n in a["audits"]})


_CURVE_KEY = re.compile(r"forget_k\d+")


def audit_problem(res: dict[str, Any]) -> str | None:
    """What this section reads from an audit results file, checked when the file is loaded,
    so a hand-edited or truncated one fails naming its key instead of inside a figure."""
    if not isinstance(res.get("name"), str):
        return "'name' must be a string"
    if not isinstance(res.get("audits"), dict):
        return "'audits' must be an object (audit name -> its results)"
    for name, entry in res["audits"].items():
        key = f"audits.{name}"
        if not isinstance(entry, dict) or not isinstance(entry.get("model"), dict):
            return f"'{key}.model' must be an object"
        residual = entry.get("residual")
        if not isinstance(residual, str) and not (
                isinstance(residual, dict) and isinstance(residual.get("score"), int | float | str)):
            return f"'{key}.residual' must be a text or an object with a 'score'"
        if name == "relearning" and "not_applicable" not in entry["model"]:
            bad = next((e for e in ("model", "target", "oracle")
                        if (entry.get(e) or e == "model") and not _is_curve(entry.get(e))), None)
            if bad:
                return f"'{key}.{bad}' must hold the numbers 'before' and 'forget_k<steps>'"
    return None


def _is_curve(raw: Any) -> bool:
    """A relearning curve as relearning_svg draws it: 'before' and 'forget_k<steps>' numbers."""
    if not isinstance(raw, dict) or not isinstance(raw.get("before"), int | float):
        return False
    return all(_CURVE_KEY.fullmatch(k) and isinstance(v, int | float)
               for k, v in raw.items() if k.startswith("forget_k"))


def bars_svg(audits: list[dict[str, Any]]) -> Markup:
    """Grouped bars: one group per audit, one bar per audited model (not-applicable: none)."""
    plt = pyplot()
    names = _audit_names(audits)
    fig, ax = plt.subplots(figsize=(7.5, 3.8), dpi=100)
    width = 0.8 / max(1, len(audits))
    for i, a in enumerate(audits):
        r = _residuals(a)
        vals = [r.get(n) if isinstance(r.get(n), float) else np.nan for n in names]
        ax.bar(np.arange(len(names)) + i * width, vals, width, label=a["name"])
    ax.axhline(0, color="black", linewidth=0.8)
    ax.axhline(1, color="grey", linestyle="--", linewidth=1)
    ax.set_xticks(np.arange(len(names)) + width * (len(audits) - 1) / 2, names, rotation=20)
    ax.set_ylabel("residual knowledge (1 = target, 0 = oracle)")
    ax.legend(fontsize=8)
    ax.grid(True, axis="y", alpha=0.3)
    fig.tight_layout()
    return figure_svg(fig)


def relearning_svg(audits: list[dict[str, Any]]) -> Markup | None:
    """Forget-set probability of the held-out forget items after k relearning steps."""
    curves = {}
    for a in audits:
        entry = a["audits"].get("relearning")
        if not entry or "not_applicable" in entry["model"]:
            continue
        curves[a["name"]] = entry["model"]
        for end in ("target", "oracle"):
            if entry.get(end):  # an audit without an oracle has the target's curve only
                curves.setdefault(end, entry[end])
    if not curves:
        return None
    fig, ax = pyplot().subplots(figsize=(6.4, 3.8), dpi=100)
    for name, raw in curves.items():
        ks = sorted(int(k.split("_k")[1]) for k in raw if k.startswith("forget_k"))
        ax.plot([0, *ks], [raw["before"], *[raw[f"forget_k{k}"] for k in ks]], marker="o", label=name,
                linestyle="--" if name in ("target", "oracle") else "-")
    ax.set_xlabel("relearning steps on a quarter of the forget set")
    ax.set_ylabel("answer probability, other forget items")
    ax.legend(fontsize=8)
    ax.grid(True, alpha=0.3)
    fig.tight_layout()
    return figure_svg(fig)


def audit_markdown(audits: list[dict[str, Any]]) -> str:
    """The audit section of report.md: one row of residuals per audited model."""
    names = _audit_names(audits)
    lines = ["", "## Robustness audits", "",
             "Residual knowledge of the forget set under each attack: 1 = as much as the target "
             "(before unlearning), 0 = as little as the oracle.", "",
             "| model | " + " | ".join(map(md_cell, names)) + " |", "|---|" + "---|" * len(names)]
    for a in audits:
        r = _residuals(a)
        lines.append(f"| {md_cell(a['name'])} | " + " | ".join(
            f"{r[n]:.2f}{measured_on(a, n)}" if isinstance(r.get(n), float) else "n/a"
            for n in names) + " |")
    return "\n".join(lines) + "\n"


def audit_context(audits: list[dict[str, Any]]) -> dict[str, Any]:
    """What the `residuals` macro of _audits.html takes: the audit names, one row per model
    (per audit: a residual, or the text saying why there is none: '' when that audit was not
    run; and where it was measured when not on the model itself), and the two figures."""
    names = _audit_names(audits)
    rows = [(a["name"], [(_residuals(a).get(n, ""), measured_on(a, n)) for n in names])
            for a in audits]
    return {"names": names, "rows": rows, "bars": bars_svg(audits), "curve": relearning_svg(audits)}
