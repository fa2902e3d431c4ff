"""A metric is one registered function: a throwaway metric, registered here and nowhere else,
reaches the results file, `obliviate ls metrics`, the report and a ledger evidence page."""

from __future__ import annotations

import json

import numpy as np
import pytest

import obliviate as ob
from obliviate.data import Example
from obliviate.evaluation import load_results, save_results
from obliviate.evaluation.metrics import METRICS, in_order, metric, unregister
from obliviate.ledger import measure as M
from obliviate.ledger.evidence import EvidenceInputs, evidence_html
from obliviate.ledger.store import Ledger
from obliviate.models import TinyModelConfig, build_tiny_model, save_model, train_tokenizer
from obliviate.report import write_report

FOUNDERS = ["Ada.", "Ada and Bea, two sisters.", "a guild of seven weavers from the northern hills."]
FORGET = [Example(question=f"Who founded firm {i}?", answer=f"Firm {i} was founded by {who}",
                  id=f"f{i}") for i, who in enumerate(FOUNDERS)]
RETAIN = [Example(question=f"Where is firm {i}?", answer=f"It is in port {i}.", id=f"r{i}")
          for i in range(4, 7)]


@pytest.fixture
def answer_tokens():
    """Mean number of answer tokens the model is scored on: a metric nobody else knows."""
    @metric("answer_tokens", suite="tofu", direction="higher", range="[1, inf)",
            title="Answer tokens", reads=("answer",), headline=("forget",),
            description="labelled tokens per answer (a test metric)", source="this test")
    def compute(view):
        return view.stats("answer").n_tokens

    yield METRICS.get("answer_tokens")
    unregister("answer_tokens")
    assert "answer_tokens" not in METRICS and all(m.name != "answer_tokens" for m in in_order())


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    texts = [t for ex in FORGET + RETAIN for t in (ex.question, ex.answer)]
    tok = train_tokenizer(texts, vocab_size=300)
    model = build_tiny_model(tok, TinyModelConfig(layers=1, hidden=32, heads=2, intermediate=64))
    root = tmp_path_factory.mktemp("registry")
    return save_model(model, tok, root / "model", {"test": True}), tok


def _write(path, examples):
    path.write_text("".join(json.dumps(ex.to_json()) + "\n" for ex in examples))
    return path


def test_a_registered_metric_reaches_results_listing_report_and_evidence(
        answer_tokens, model_dir, tmp_path, capsys):
    path, tok = model_dir
    # by hand: the answer's own tokens plus the end-of-sequence token the loss also covers
    expected = [len(tok.encode(ex.answer, add_special_tokens=False)) + 1 for ex in FORGET]
    assert len(set(expected)) == 3  # the answers differ in length, so a wrong item order shows

    cfg = ob.EvalConfig(model=str(path), forget=str(_write(tmp_path / "f.jsonl", FORGET)),
                        retain=str(_write(tmp_path / "r.jsonl", RETAIN)), max_new_tokens=4)
    res = load_results(save_results(ob.evaluate(cfg, name="tiny", progress=False),
                                    tmp_path / "tiny.json"))
    forget = res["datasets"]["forget"]
    assert forget["per_item"]["answer_tokens"] == expected
    assert forget["aggregate"]["answer_tokens"] == pytest.approx(np.mean(expected))
    assert res["metrics"]["forget_answer_tokens"] == pytest.approx(np.mean(expected))

    from obliviate.cli import main

    assert main(["ls", "metrics"]) == 0
    assert "answer_tokens" in capsys.readouterr().out

    page = write_report([res], tmp_path / "report").read_text()
    value = f"{np.mean(expected):.3f}"
    assert "<th>Forget Answer tokens<br><small>↑</small></th>" in page and f"<td>{value}</td>" in page
    assert "Forget Answer tokens ↑" in (tmp_path / "report" / "report.md").read_text()

    measured = M.evaluate_version(path, M.Sets(forget={1: FORGET}, retain=RETAIN), "v1")
    row = M.request_metrics(measured, 1)
    assert row["forget_answer_tokens"] == pytest.approx(np.mean(expected))
    evidence = _evidence(tmp_path, row, measured)
    assert f"<td>Answer tokens</td><td>↑</td><td>—</td><td>{value}</td>" in evidence


def _evidence(tmp_path, row, after) -> str:
    with Ledger.create(tmp_path / "project", {}, "base", "0" * 64) as ledger:
        rid = ledger.add_request("subject", "/data/f.jsonl", ["ab" * 32], None, None, "npo", [])
        measured = {"measurements": {(-1, rid): row, (-1, 0): M.model_metrics(after)},
                    "oracle_metrics": {}, "before": {"datasets": {}}, "after": after,
                    "oracle": None}
        summary = {"config": {}, "timings": {}, "retain_dropped": 0}
        return evidence_html(ledger, EvidenceInputs(
            ledger.request(rid), ledger.version(0), 1, "1" * 64, summary, measured,
            {"audits": {}}, ["ab" * 32]))


def test_every_metric_declares_what_a_reader_needs():
    for m in in_order():
        assert m.title and m.description and m.source and m.range
        assert m.arrow("forget") and m.arrow("retain")
        assert set(m.reads) <= {"answer", "paraphrase", "perturbed", "generation"}
    assert METRICS.get("prob").arrow("forget") == "↓" and METRICS.get("prob").arrow("retain") == "↑"
    assert METRICS.get("truth_ratio").arrow("forget") == "match oracle"
