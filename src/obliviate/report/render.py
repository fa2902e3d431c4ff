"""HTML + Markdown reports from Results files. Numbers come from `results['metrics']` only."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from markupsafe import Markup

from ..io import write_text_atomic
from .audit import audit_context, audit_markdown
from .columns import detail_tables, headline_columns
from .html import figure_svg, fmt, pyplot, render
from .markdown import md_cell

__all__ = ["fmt", "render_html", "render_markdown", "write_report"]


REFERENCE_FQ = "1 (reference)"
REFERENCE_VALUES = {"forget_quality": REFERENCE_FQ, "privleak": "0 (reference)"}
LEVELS = ("error", "warning")  # of the findings a report shows, in this order


def _with_reference_fq(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The rows as shown: the reference's forget quality, when it was not computed (it was
    evaluated without a reference of its own), is that of a model against itself, 1 by
    definition. Other rows, and the results dicts, are left as they are."""
    out = []
    for res in rows:
        named = any(other is not res and other.get("reference") == res.get("name") for other in rows)
        metrics = dict(res.get("metrics", {}))
        for key, shown in REFERENCE_VALUES.items():  # PrivLeak too: the oracle against itself
            value = metrics.get(key)
            if named and isinstance(value, str) and value.startswith("not computed: needs a reference"):
                metrics[key] = shown
        out.append({**res, "metrics": metrics} if named else res)
    return out


def forget_sets(rows: list[dict[str, Any]]) -> dict[str, list[str]]:
    """Classifier results by the forget set they measured ("split, n samples, benchmark" ->
    row names): rows of different forget sets do not compare."""
    out: dict[tuple, list[str]] = {}
    for res in rows:
        fs = res.get("forget_set")
        if isinstance(fs, dict):
            out.setdefault((fs.get("digest"), f"{fs.get('split')}, {fs.get('n')} samples of "
                            f"{fs.get('benchmark')}"), []).append(res["name"])
    return {label: names for (_, label), names in out.items()}


def findings(rows: list[dict[str, Any]]) -> list[tuple[str, list[str], str]]:
    """(level, names of the rows it was found in, message) of every error and warning the rows'
    `checks` hold (data.checks.Finding.to_json()), errors first; a finding shared by several
    rows (the same data evaluated under several models) is listed once. Classifier rows that
    measured different forget sets are a warning too."""
    sets = forget_sets(rows)
    if len(sets) > 1:
        rows = [*rows, {"name": ", ".join(n for names in sets.values() for n in names), "checks": [
            {"level": "warning", "message": "these results measure different forget sets ("
             + "; ".join(sets) + "): compare rows of one forget set only"}]}]
    seen: dict[tuple[str, str], list[str]] = {}
    for res in rows:
        for f in res.get("checks") or []:
            if isinstance(f, dict) and f.get("level") in LEVELS and isinstance(f.get("message"), str):
                names = seen.setdefault((f["level"], f["message"]), [])
                if res["name"] not in names:
                    names.append(res["name"])
    return [(level, names, message) for (level, message), names
            in sorted(seen.items(), key=lambda kv: LEVELS.index(kv[0][0]))]


def scatter_points(rows: list[dict[str, Any]]) -> list[tuple[str, float, float]]:
    """(name, model utility, forget quality) of each model that has both as numbers, the
    reference's shown forget quality at 1 and a p-value of exactly 0 at the log axis' floor."""
    points = []
    for res in _with_reference_fq(rows):
        m = res["metrics"]
        fq, mu = m.get("forget_quality"), m.get("model_utility")
        fq = 1.0 if fq == REFERENCE_FQ else fq
        if isinstance(fq, float) and isinstance(mu, float):
            points.append((res["name"], mu, max(fq, 1e-30)))
    return points


def _scatter_svg(rows: list[dict[str, Any]]) -> Markup:
    """Forget quality (log scale) vs model utility, one labelled point per model."""
    fig, ax = pyplot().subplots(figsize=(6.4, 4.2), dpi=100)
    for name, mu, fq in scatter_points(rows):
        ax.scatter([mu], [fq], s=60)
        ax.annotate(name, (mu, fq), textcoords="offset points", xytext=(6, 4), fontsize=9)
    ax.set_yscale("log")
    ax.margins(x=0.15)  # room for the labels of the outermost points
    ax.axhline(0.05, color="grey", linestyle="--", linewidth=1)
    ax.text(ax.get_xlim()[0], 0.05, " p = 0.05", va="bottom", fontsize=8, color="grey")
    ax.set_xlabel("model utility (higher is better)")
    ax.set_ylabel("forget quality (KS p-value vs oracle, higher is better)")
    ax.set_title("Forgetting vs utility")
    ax.grid(True, alpha=0.3)
    fig.tight_layout()
    return figure_svg(fig)


def _reference(rows: list[dict[str, Any]]) -> str | None:
    return next((r.get("reference") for r in rows if r.get("reference")), None)


def _markdown_table(rows: list[dict[str, Any]], columns) -> list[str]:
    """Every cell through md_cell: names, titles (they hold dataset names) and values all come
    from results files."""
    head = "| model | " + " | ".join(md_cell(f"{t} {d}".strip()) for _, t, d in columns) + " |"
    lines = [head, "|" + "---|" * (len(columns) + 1)]
    for res in rows:
        m = res.get("metrics", {})
        lines.append(f"| {md_cell(res['name'])} | "
                     + " | ".join(md_cell(fmt(m.get(k))) for k, _, _ in columns) + " |")
    return lines


def _markdown_banner(rows: list[dict[str, Any]]) -> list[str]:
    found = findings(rows)
    if not found:
        return []
    lines = ["> **Check these before reading the numbers:**", ">"]
    lines += [f"> - **{level}** ({md_cell(', '.join(names))}): {md_cell(message)}"
              for level, names, message in found]
    return [*lines, ""]


def render_markdown(rows: list[dict[str, Any]], title: str = "obliviate report") -> str:
    """report.md: the errors and warnings of the checks, the headline table, one row per
    Results, then every dataset's numbers."""
    rows = _with_reference_fq(rows)
    lines = [f"# {md_cell(title)}", "", *_markdown_banner(rows),
             *_markdown_table(rows, headline_columns(rows))]
    for name, columns in detail_tables(rows):
        lines += ["", f"## {md_cell(name)}", "", *_markdown_table(rows, columns)]
    ref = _reference(rows)
    if ref:
        what = "The average gap is" if any(r.get("family") == "classifier" for r in rows) else "Forget quality is"
        lines += ["", f"{what} measured against {md_cell(ref)}."]
    lines += [f"Forget set: {md_cell(label)} ({md_cell(', '.join(names))})." for label, names in forget_sets(rows).items()]
    return "\n".join(lines) + "\n"


def render_html(rows: list[dict[str, Any]], title: str = "obliviate report",
                audits: list[dict[str, Any]] | None = None,
                sources: Sequence[str | Path] | None = None) -> str:
    """report.html: the errors and warnings of the checks, the headline table, the
    forget-quality/utility plot, every dataset's numbers and, with `audits`, the audit section
    (columns from the metric registry). `sources` are the files the Results were read from,
    named in the footer."""
    rows = _with_reference_fq(rows)
    classifier = any(r.get("family") == "classifier" for r in rows)
    return render("report.html", title=title, checks=findings(rows), columns=headline_columns(rows),
                  classifier=classifier, forget_sets=forget_sets(rows),
                  details=detail_tables(rows), rows=rows,
                  reference=_reference(rows), scatter=_scatter_svg(rows),
                  audits=audit_context(audits) if audits else None,
                  sources=[Path(p).name for p in sources] if sources else None)


def write_report(rows: list[dict[str, Any]], out_dir: str | Path, title: str = "obliviate report",
                 audits: list[dict[str, Any]] | None = None,
                 sources: Sequence[str | Path] | None = None) -> Path:
    """report.md and report.html from Results (and optionally audit results); `sources` are the
    files they were read from, named in the page's footer."""
    out_dir = Path(out_dir)
    md = render_markdown(rows, title) + (audit_markdown(audits) if audits else "")
    write_text_atomic(out_dir / "report.md", md)
    return write_text_atomic(out_dir / "report.html", render_html(rows, title, audits, sources))
