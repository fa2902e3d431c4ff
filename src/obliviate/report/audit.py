"""The audit section of a report: residual knowledge per audit (bar chart, table) and the
relearning recovery curves, from audit results JSON (rendered, never recomputed)."""

from __future__ import annotations

import html
import io
from typing import Any


def svg(fig) -> str:
    import matplotlib.pyplot as plt

    buf = io.StringIO()
    fig.savefig(buf, format="svg")
    plt.close(fig)
    svg = buf.getvalue()
    return svg[svg.index("<svg"):]


def _residuals(res: dict[str, Any]) -> dict[str, float | str]:
    return {n: (e["residual"] if isinstance(e["residual"], str) else e["residual"]["score"])
            for n, e in res["audits"].items()}


def bars_svg(audits: list[dict[str, Any]]) -> str:
    """Grouped bars: one group per audit, one bar per audited model (not-applicable: none)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    names = sorted({n for a in audits for n in a["audits"]})
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
    return svg(fig)


def relearning_svg(audits: list[dict[str, Any]]) -> str | None:
    """Forget-set probability of the held-out forget items after k relearning steps."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

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
    fig, ax = plt.subplots(figsize=(6.4, 3.8), dpi=100)
    for name, raw in curves.items():
        ks = sorted(int(k.split("_k")[1]) for k in raw if k.startswith("forget_k"))
        ax.plot([0, *ks], [raw["before"], *[raw[f"forget_k{k}"] for k in ks]], marker="o", label=name,
                linestyle="--" if name in ("target", "oracle") else "-")
    ax.set_xlabel("relearning steps on a quarter of the forget set")
    ax.set_ylabel("answer probability, other forget items")
    ax.legend(fontsize=8)
    ax.grid(True, alpha=0.3)
    fig.tight_layout()
    return svg(fig)


def audit_markdown(audits: list[dict[str, Any]]) -> str:
    names = sorted({n for a in audits for n in a["audits"]})
    lines = ["", "## Robustness audits", "",
             "Residual knowledge of the forget set under each attack: 1 = as much as the target "
             "(before unlearning), 0 = as little as the oracle.", "",
             "| model | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
    for a in audits:
        r = _residuals(a)
        lines.append(f"| {a['name']} | " + " | ".join(
            f"{r[n]:.2f}" if isinstance(r.get(n), float) else "n/a" for n in names) + " |")
    return "\n".join(lines) + "\n"


def audit_html(audits: list[dict[str, Any]]) -> str:
    e = html.escape
    names = sorted({n for a in audits for n in a["audits"]})
    head = "".join(f"<th>{e(n)}</th>" for n in names)
    rows = ""
    for a in audits:
        r = _residuals(a)
        cells = "".join(f"<td>{r[n]:.2f}</td>" if isinstance(r.get(n), float)
                        else f"<td title=\"{e(str(r.get(n, '')))}\">n/a</td>" for n in names)
        rows += f"<tr><td>{e(a['name'])}</td>{cells}</tr>"
    curve = relearning_svg(audits)
    return (f"<h2>Robustness audits</h2><p class=\"note\">Residual knowledge of the forget set "
            "under each attack: 1 = as much as the target (before unlearning), 0 = as little as "
            "the oracle (never trained on it). Knowledge that returns under an attack was hidden, "
            f"not removed.</p><table><tr><th>model</th>{head}</tr>{rows}</table>{bars_svg(audits)}"
            + (f"<h3>Relearning</h3>{curve}" if curve else ""))
