"""The HTML layer on hand-made Results, audit results and a ledger (no model is trained):
autoescaping of everything a user or a model wrote, strict template variables, inline SVG,
self-contained pages with one stylesheet, the report's footer naming its input files, the
banner of the checks' findings, the reference's forget quality and every dataset's columns."""

from __future__ import annotations

import re
from importlib import resources

import pytest
from jinja2 import UndefinedError
from markupsafe import Markup

from obliviate.evaluation.results import derive
from obliviate.ledger.evidence import EvidenceInputs, evidence_html, ledger_html
from obliviate.ledger.store import Ledger
from obliviate.report.html import figure_svg, pyplot, render
from obliviate.report.render import render_html, render_markdown, scatter_points

EVIL = '<script>alert(1)</script> "quoted"'
ESCAPED = "&lt;script&gt;alert(1)&lt;/script&gt; &#34;quoted&#34;"


def _results(name: str, fq: float, mu: float) -> dict:
    """The part of a Results dict a report reads (`make_results` plus `derive`'s metrics)."""
    return {"schema": "obliviate.results/1", "name": name, "model": f"/models/{name}",
            "reference": "oracle", "datasets": {},
            "metrics": {"forget_quality": fq, "model_utility": mu, "forget_prob": 0.02,
                        "forget_truth_ratio": "not computed: forget set has no perturbed answers"}}


def _audit(name: str) -> dict:
    """An audit result (audits/run.py): relearning without an oracle, a rephrase residual."""
    return {"schema": "obliviate.audit/1", "name": name, "audits": {
        "relearning": {"model": {"before": 0.1, "forget_k1": 0.3, "forget_k4": 0.5, "score": 0.5},
                       "target": {"before": 0.9, "forget_k1": 0.95, "forget_k4": 0.97, "score": 0.97},
                       "oracle": None, "residual": "not computed: needs an oracle"},
        "rephrase": {"model": {"score": 0.2}, "target": {"score": 0.9}, "oracle": {"score": 0.1},
                     "residual": {"score": 0.125}}}}


def _mia(auc: float) -> dict:
    return {"per_item": {"member_min_k": [0.1, 0.4, 0.8], "nonmember_min_k": [0.2, 0.3, 0.5]},
            "aggregate": {"auc_min_k": auc}}


@pytest.fixture(scope="module")
def report() -> str:
    rows = [_results(EVIL, 0.2, 0.4), _results("oracle", 1.0, 0.5)]
    return render_html(rows, title="report", audits=[_audit(EVIL)],
                       sources=["runs/npo.json", "runs/<b>audit.json"])


@pytest.fixture(scope="module")
def ledger_pages(tmp_path_factory) -> tuple[str, str]:
    """The evidence page of one request (subject, forget path, config, generated answer and
    error text all hostile) and the ledger page after it is recorded."""
    root = tmp_path_factory.mktemp("ledger") / "project"
    with Ledger.create(root, {}, "base", "0" * 64) as ledger:
        rid = ledger.add_request(EVIL, f"/data/{EVIL}.jsonl", ["ab" * 32], None, None, "npo", [])
        failed = ledger.add_request("other", "/data/o.jsonl", ["cd" * 32], None, None, "npo", [])
        ledger.set_status(failed, "failed", error=EVIL)
        measurements = {(0, rid): {"forget_prob": 0.9}, (0, 0): {"model_utility": 0.5},
                        (-1, rid): {"forget_prob": 0.1, "auc_min_k": 0.52}, (-1, 0): {"model_utility": 0.48}}
        after = {"datasets": {f"forget_r{rid}": {"per_item": {"generation": [EVIL + " & more"]}},
                              f"mia_r{rid}": _mia(0.52)}}
        measured = {"measurements": measurements, "oracle_metrics": {str(rid): {"forget_prob": 0.05}},
                    "before": {"datasets": {f"mia_r{rid}": _mia(0.9)}}, "after": after, "oracle": None}
        summary = {"config": {"subject": EVIL}, "timings": {"unlearn_s": 1.0}, "retain_dropped": 0}
        evidence = evidence_html(ledger, EvidenceInputs(
            ledger.request(rid), ledger.version(0), 1, "1" * 64, summary, measured, _audit(EVIL),
            ["ab" * 32], samples=3))
        ledger.record_version(rid, 0, "v1", "1" * 64, {}, measurements)
        return evidence, ledger_html(ledger)


def test_report_escapes_model_names(report):
    assert EVIL not in report and "<script" not in report
    assert report.count(ESCAPED) >= 2  # the results table and the audit table
    assert 'title="not computed: needs an oracle"' in report


def test_evidence_and_ledger_escape_what_users_and_models_wrote(ledger_pages):
    evidence, ledger = ledger_pages
    assert "<script" not in evidence and "<script" not in ledger
    assert evidence.count(ESCAPED) >= 3  # subject, forget file, configuration
    assert ESCAPED + " &amp; more" in evidence  # the generated answer
    assert ledger.count(ESCAPED) == 2  # the subject, and the failed request's error


def test_report_footer_names_its_input_files(report):
    assert "Results read from: npo.json, &lt;b&gt;audit.json." in report
    assert "beside this page" not in report


def test_report_footer_without_files_says_nothing_of_files():
    page = render_html([_results("npo", 0.2, 0.4)], audits=[_audit("npo")])
    assert "Results read from" not in page and "beside" not in page and ".json" not in page
    assert '<p class="note"></p>' not in page  # no empty footer either


def test_pages_are_self_contained_with_one_stylesheet(report, ledger_pages):
    css = resources.files("obliviate").joinpath("report/templates/style.css").read_text()
    for page in (report, *ledger_pages):
        assert page.count("<style") == 1 and css.strip() in page
        assert not re.search(r"<(script|link|img|iframe)\b|@import", page)
        assert all(ref.startswith("#") for ref in re.findall(r'(?:href|src)="([^"]*)"', page))
        assert "<?xml" not in page and "<!DOCTYPE svg" not in page
    assert report.count("<svg") == 3  # scatter, audit bars, relearning curves
    assert ledger_pages[0].count("<svg") == 3  # ROC, relearning curves, sustainability


def test_report_columns_are_data():
    """The template loops over (key, title, direction): a metric it has never heard of shows."""
    page = render("report.html", title="t", checks=[], columns=[("my_metric", "My metric", "↑")],
                  details=[], rows=[{"name": "m", "metrics": {"my_metric": 0.25}}],
                  reference=None, scatter=Markup(""), audits=None, sources=["m.json"],
                  classifier=False, forget_sets={})
    assert "<th>My metric<br><small>↑</small></th>" in page and "<td>0.250</td>" in page
    assert "<th>Forget quality" not in page  # no column the caller did not ask for


def test_a_missing_template_variable_raises():
    with pytest.raises(UndefinedError, match="versions"):
        render("ledger.html", title="t", requests=[], done=[], plot=None, utility_title="u",
               forget_title="f")


def test_figure_svg_is_inline_svg_with_escaped_labels():
    plt = pyplot()
    fig, ax = plt.subplots()
    ax.plot([0, 1], [0, 1], label=EVIL)
    ax.legend()
    svg = figure_svg(fig)
    assert isinstance(svg, Markup) and svg.startswith("<svg") and svg.rstrip().endswith("</svg>")
    assert "<?xml" not in svg and "<style" not in svg and "http://" not in svg.split(">", 1)[1]
    assert "<script" not in svg and "&lt;script&gt;alert(1)&lt;/script&gt;" in svg
    assert not plt.fignum_exists(fig.number)  # closed: a report run draws many figures


# ---- the checks' banner ----------------------------------------------------------------------

def _finding(level: str, message: str, code: str = "c") -> dict:
    """data.checks.Finding.to_json()"""
    return {"level": level, "code": code, "message": message, "where": "forget"}


def _checked_rows() -> list[dict]:
    target = {**_results("target", 0.52, 0.0), "checks": [
        _finding("warning", "model utility is 0"), _finding("error", f"overlap {EVIL}")]}
    oracle = {**_results("oracle", 1.0, 0.5), "checks": [_finding("error", f"overlap {EVIL}")]}
    return [target, oracle]


def test_the_report_opens_with_every_error_and_warning_errors_first():
    page = render_html(_checked_rows())
    banner = page[page.index("<h1>"):page.index('<p class="note"><b>Forget quality')]
    assert '<div class="checks has-errors">' in banner
    error = f'<li class="error"><b>error</b> (target, oracle): overlap {ESCAPED}</li>'
    warning = '<li class="warning"><b>warning</b> (target): model utility is 0</li>'
    assert banner.index(error) < banner.index(warning)  # errors first, a shared one listed once
    assert banner.count("<li") == 2 and "<script" not in page
    css = resources.files("obliviate").joinpath("report/templates/style.css").read_text()
    assert ".checks.has-errors{" in css and ".checks li.error b{" in css


def test_a_banner_of_warnings_only_is_not_marked_as_errors():
    rows = [{**_results("npo", 0.2, 0.4), "checks": [_finding("warning", "few forget items")]}]
    page = render_html(rows)
    assert '<div class="checks">' in page and "has-errors" not in page.split("</style>")[1]


def test_no_banner_without_findings(report):
    body = report.split("</style>")[1]
    assert 'class="checks' not in body and "Check these" not in body


def test_markdown_opens_with_the_findings():
    md = render_markdown(_checked_rows())
    lines = md.splitlines()
    assert lines[0] == "# obliviate report" and lines[2] == "> **Check these before reading the numbers:**"
    assert lines[4].startswith("> - **error** (target, oracle): overlap &lt;script&gt;")
    assert lines[5] == "> - **warning** (target): model utility is 0"
    assert "Check these" not in render_markdown([_results("npo", 0.2, 0.4)])


# ---- the reference's forget quality ----------------------------------------------------------

def test_the_reference_shows_forget_quality_one():
    """The oracle evaluated without a reference has no forget quality of its own; against
    itself it would be 1 (KS statistic 0), so the report shows it so, and plots it at 1."""
    oracle = {**_results("oracle", 0.0, 0.5), "reference": None}
    oracle["metrics"]["forget_quality"] = "not computed: needs a reference"
    rows = [_results("npo", 0.2, 0.4), oracle]
    page, md = render_html(rows), render_markdown(rows)
    assert "<tr><td>oracle</td><td>1 (reference)</td>" in page
    assert "| oracle | 1 (reference) |" in md and "not computed" not in md.split("## ")[0]
    assert scatter_points(rows) == [("npo", 0.4, 0.2), ("oracle", 0.5, 1.0)]
    assert oracle["metrics"]["forget_quality"].startswith("not computed")  # shown, not changed


def test_a_model_that_is_no_ones_reference_keeps_its_text():
    alone = _results("npo", 0.0, 0.4)
    alone["metrics"]["forget_quality"] = "not computed: needs a reference"
    page = render_html([alone])
    assert "1 (reference)" not in page and scatter_points([alone]) == []


# ---- every dataset and suite has its columns -------------------------------------------------

def test_a_utility_set_named_after_its_file_and_every_suite_have_their_columns():
    """A utility set is found by its role, whatever its name; the mia suite's AUCs have their
    table and PrivLeak (a number once there is a reference) its headline column; MUSE's
    numbers their table."""
    def dataset(role):
        return {"role": role, "n": 3, "per_item": {"truth_ratio": [1.5, 2.0, 0.8]},
                "aggregate": {"prob": 0.61, "rougeL_recall": 0.52, "truth_ratio": 0.43}}

    def results(name, auc):
        return {"schema": "obliviate.results/1", "name": name, "reference": "oracle", "datasets": {
            "forget": dataset("forget"), "retain": dataset("retain"),
            "gadgets_general": dataset("utility"),
            "mia": {"role": "mia", "members": "forget", "nonmembers": "holdout", "per_item": {},
                    "aggregate": {"auc_loss": 0.71, "auc_zlib": 0.69, "auc_min_k": auc}},
            "muse": {"role": "muse", "per_item": {}, "aggregate": {
                "verbmem_forget": 0.3, "knowmem_forget": 0.2, "knowmem_retain": 0.4}}}}

    oracle = results("oracle", 0.55)
    npo = results("npo", 0.75)
    npo["metrics"], oracle["metrics"] = derive(npo, oracle), derive(oracle, oracle)
    page, md = render_html([npo, oracle]), render_markdown([npo, oracle])
    for title in ("Gadgets general prob", "Gadgets general ROUGE-L", "Gadgets general truth ratio",
                  "MIA AUC, LOSS", "MIA AUC, ZLib", "MIA AUC, Min-K%", "PrivLeak",
                  "VerbMem (forget)", "KnowMem (forget)", "KnowMem (retain)"):
        assert f"<th>{title}<br>" in page and title.replace("_", "\\_") in md
    assert all(f"<h3>{t}</h3>" in page for t in ("Gadgets general", "MIA", "MUSE"))
    assert "<td>0.610</td>" in page and "<td>0.690</td>" in page
