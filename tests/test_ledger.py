"""The deletion-request ledger: hashing, schema migrations, input errors, sequential requests,
the evidence report, and crash / concurrency safety of `apply` (SIGKILL, two processes)."""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from obliviate.data import Benchmark, load_examples
from obliviate.data.examples import Example
from obliviate.errors import ObliviateError
from obliviate.ledger import (
    Ledger,
    LedgerBusy,
    ProjectSettings,
    add_request,
    apply,
    init_project,
    verify,
)
from obliviate.ledger.hashing import KEYED, LEGACY, Hasher
from obliviate.ledger.store import (
    LEDGER_FILE,
    MIGRATIONS,
    SCHEMA_VERSION,
    weights_sha256,
)

PEOPLE = ("p017", "p018", "p019")
FAST = ["optim.steps=60", "optim.batch_size=16"]  # NPO at its default lr; stops early (holdout level)


def _write(path: Path, exs: list[Example]) -> Path:
    path.write_text("".join(json.dumps(x.to_json()) + "\n" for x in exs), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def data(memorised, tmp_path_factory) -> Path:
    """Request files (one per person), the project's retain file (every trained item: the
    ledger must drop forgotten ones itself) and the holdout (non-members)."""
    bench = Benchmark.load(memorised / "bench")
    out = tmp_path_factory.mktemp("ledger-data")
    _write(out / "retain.jsonl", bench.qa_of("all"))
    _write(out / "holdout.jsonl", bench.qa_of("holdout"))
    for p in PEOPLE:
        _write(out / f"{p}.jsonl", [x for x in bench.qa if x.entity == p])
    return out


def _project(root: Path, memorised: Path, data: Path, **kw) -> Path:
    settings = ProjectSettings(base=str(memorised / "target"), retain=str(data / "retain.jsonl"),
                               holdout=str(data / "holdout.jsonl"), audits=["rephrase", "quantization"],
                               samples=3, **kw)
    return init_project(root, settings)


# ---------------------------------------------------------------------------- hashing
def test_item_hash_is_keyed_over_normalised_text():
    # by definition: HMAC-SHA256 under the project key of the normalised fields as a JSON array
    key = bytes(range(32))
    item_hash = Hasher(KEYED, key, Path("k")).item
    digest = Hasher(KEYED, key, Path("k")).digest
    ex = Example(question="Where was Ana born?", answer="In Tula.")
    message = b'["obliviate.item/1","","Where was Ana born?","In Tula.",null,null,[],null,null]'
    assert item_hash(ex) == hmac.new(key, message, hashlib.sha256).hexdigest()
    # spacing and compatibility forms (the "ﬁ" ligature, a full-width digit) are the same item
    assert item_hash(Example(question=" Where  was Ana\tborn? ", answer="In Tula.\n")) == item_hash(ex)
    assert (item_hash(Example(question="ﬁle ２", answer="x"))
            == item_hash(Example(question="file 2", answer="x")))
    # any other edit is a different item, case included
    assert item_hash(Example(question="Where was Ana born?", answer="In tula.")) != item_hash(ex)
    # the file digest ignores item order
    assert digest(["b", "a"]) == digest(["a", "b"]) != digest(["a", "c"])


# ---------------------------------------------------------------------------- schema
def test_migrates_a_version_1_ledger_and_refuses_a_newer_one(tmp_path):
    conn = sqlite3.connect(tmp_path / LEDGER_FILE, isolation_level=None)
    for statement in MIGRATIONS[0].split(";"):
        if statement.strip():
            conn.execute(statement)
    conn.execute("INSERT INTO project VALUES ('settings', '{}')")  # written by every init
    conn.execute("INSERT INTO requests (subject, created_at, status, forget_path, forget_digest, "
                 "n_items, method, overrides) VALUES ('t-1', 'x', 'pending', '/f', 'd', 3, 'npo', '[]')")
    conn.execute("PRAGMA user_version = 1")
    conn.close()
    with Ledger.open(tmp_path) as ledger:
        assert ledger.schema_version() == SCHEMA_VERSION == 3
        assert [r.subject for r in ledger.requests()] == ["t-1"]  # data survives the migration
        assert ledger.measurements() == {}  # the table added by migration 2 exists
        assert ledger.hasher.scheme == LEGACY  # migration 3: its hashes stay unkeyed
        assert ledger.conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        ledger.conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    with pytest.raises(ObliviateError, match="newer than this obliviate"):
        Ledger.open(tmp_path)


# ---------------------------------------------------------------------------- add
@pytest.mark.slow
def test_add_stores_hashes_not_text_and_rejects_bad_input(tmp_path, memorised, data):
    proj = _project(tmp_path / "proj", memorised, data)
    forget = data / "p018.jsonl"
    rid = add_request(proj, "ticket 42", str(forget), method="npo", overrides=FAST)
    with Ledger.open(proj) as ledger:
        req = ledger.request(rid)
        items = load_examples(forget)
        assert (req.status, req.n_items) == ("pending", len(items))
        assert ledger.item_hashes(rid) == {ledger.hasher.item(x) for x in items}
        ledger.conn.execute("PRAGMA wal_checkpoint(FULL)")
    raw = b"".join(p.read_bytes() for p in proj.iterdir() if p.name.startswith(LEDGER_FILE))
    for x in items:  # neither questions nor answers are stored anywhere in the ledger files
        assert x.question.encode() not in raw and x.answer.encode() not in raw

    (tmp_path / "empty.jsonl").write_text("\n")
    (tmp_path / "bad.jsonl").write_text('{"question": "q", "answer": "a"}\n{"question": \n')
    bad = [
        (dict(forget=str(tmp_path / "missing.jsonl")), "forget file not found"),
        (dict(forget=str(tmp_path / "empty.jsonl")), "holds no items"),
        (dict(forget=str(tmp_path / "bad.jsonl")), r"bad.jsonl:2: not valid JSON"),
        (dict(forget=str(forget), method="nop"), "did you mean 'npo'"),
        (dict(forget=str(forget), overrides=["optim.stepz=3"]), r"unknown config key 'optim.stepz' \(did you mean 'steps'"),
        (dict(forget=str(forget), overrides=["model=/elsewhere"]), "set by the ledger"),
        (dict(forget=str(forget), retain=str(tmp_path / "missing.jsonl")), "retain file not found"),
    ]
    for kwargs, message in bad:
        with pytest.raises(ObliviateError, match=message):
            add_request(proj, "ticket 43", **kwargs)
    with pytest.raises(ObliviateError, match="needs a subject"):
        add_request(proj, "  ", str(forget))
    with Ledger.open(proj) as ledger:
        assert [r.id for r in ledger.requests()] == [rid]  # nothing else was recorded


@pytest.mark.slow
def test_apply_refuses_changed_or_missing_forget_files_and_keeps_order(tmp_path, memorised, data):
    proj = _project(tmp_path / "proj", memorised, data)
    forget = tmp_path / "f.jsonl"
    original = (data / "p018.jsonl").read_text()
    forget.write_text(original)
    r1 = add_request(proj, "a", str(forget), overrides=FAST)
    r2 = add_request(proj, "b", str(data / "p019.jsonl"), overrides=FAST)
    rows = [json.loads(line) for line in original.splitlines()]
    rows[0]["answer"] += " (corrected)"  # one item edited after the request was added
    forget.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(ObliviateError, match="changed since the request was added"):
        apply(proj, progress=False)
    forget.unlink()
    with pytest.raises(ObliviateError, match="forget file not found"):
        apply(proj, r1, progress=False)  # a failed request is retried only when named
    with Ledger.open(proj) as ledger:
        req = ledger.request(r1)
        assert req.status == "failed" and "not found" in req.error and req.version_id is None
        assert len(ledger.versions()) == 1 and ledger.check() == []
    # a failed request blocks the queue loudly: the next one cannot jump ahead of it
    with pytest.raises(ObliviateError, match=f"request {r1} \\(failed\\) comes before request {r2}"):
        apply(proj, r2, progress=False)
    with pytest.raises(ObliviateError, match=f"request {r1} failed: forget file not found"):
        apply(proj, progress=False)
    forget.write_text(original)  # restored: the failed request is retried and done
    assert apply(proj, r1, progress=False) == [1]
    with Ledger.open(proj) as ledger:
        assert ledger.request(r1).status == "done" and ledger.request(r2).status == "pending"
        kinds = [e["kind"] for e in ledger.events(r1)]
        assert kinds.count("failed") == 2 and kinds[-1] == "done"


# ---------------------------------------------------------------------------- sequence
@pytest.fixture(scope="module")
def sequence(memorised, data, tmp_path_factory) -> Path:
    """Three requests (one person each) applied in order on one project."""
    proj = _project(tmp_path_factory.mktemp("seq") / "proj", memorised, data)
    subjects = ["<img src=x onerror=alert(1)>", "person p018", "person p019"]
    for p, subject in zip(PEOPLE, subjects, strict=True):
        add_request(proj, subject, str(data / f"{p}.jsonl"), overrides=FAST)
    base_sha = weights_sha256(memorised / "target")
    assert apply(proj, apply_all=True, progress=False) == [1, 2, 3]
    assert weights_sha256(memorised / "target") == base_sha  # the base is never modified
    return proj


@pytest.mark.slow
def test_three_requests_each_later_version_still_forgets_the_earlier(sequence, data):
    with Ledger.open(sequence) as ledger:
        assert ledger.check() == []  # every version folder, manifest and hash in place
        rows = ledger.measurements()
        reqs = ledger.requests()
        assert [(r.status, r.version_id) for r in reqs] == [("done", 1), ("done", 2), ("done", 3)]
        for r in reqs:
            parent = r.version_id - 1
            before = rows[(parent, r.id)]["forget_prob"]
            assert before > 0.8  # the version it was applied to still knew the person
            for v in range(r.version_id, 4):  # its own version and every later one
                assert rows[(v, r.id)]["forget_prob"] < 0.2 * before, (r.id, v)
        utility = [rows[(v, 0)]["model_utility"] for v in range(4)]
        assert all(u > 0.8 * utility[0] for u in utility[1:]), utility
        # unlearning stops once the forget items are as likely as never-seen (holdout) ones
        for r in reqs:
            stop = ledger.version(r.version_id).summary["stop"]
            # the stop's own logic is tested in test_holdout_stop.py; here, that the ledger uses it
            steps = json.loads((ledger.model_path(ledger.version(r.version_id)) / "obliviate.json")
                               .read_text())["steps_run"]
            assert stop["reached"] and steps == stop["step"] < 60  # stopped early, at the target
            assert stop["auc_at_stop"] <= 0.5 < stop["auc_start"]
        # retain items of forgotten people are dropped before training, cumulatively
        dropped = [ledger.version(v).summary["retain_dropped"] for v in (1, 2, 3)]
        assert dropped == [8, 16, 24]


@pytest.mark.slow
def test_evidence_report_is_self_contained_escaped_and_holds_no_forget_text(sequence, data):
    page = (sequence / "versions" / "v0001" / "evidence.html").read_text()
    # self-contained: no scripts, stylesheets or fetched assets; links only within the page
    assert not any(tag in page for tag in ("<script", "<link", "@import", "<iframe", "<img"))
    assert all(ref.startswith("#") for ref in re.findall(r'(?:href|src)="([^"]*)"', page))
    assert "&lt;img src=x onerror=alert(1)&gt;" in page
    for section in ("Forget set: before and after", "Membership inference", "Robustness audits",
                    "Utility", "Earlier requests", "What the model now answers", "Configuration"):
        assert section in page
    assert page.count("<svg") >= 2  # ROC curves and the sustainability plot
    # a whole-person request leaves none of the person's facts: not a fine-grained request
    assert "The same entities' other facts" not in page
    with Ledger.open(sequence) as ledger:
        stop = ledger.version(1).summary["stop"]
    assert f"at step {stop['step']}: forget vs never-seen (holdout) items" in page
    questions = [json.loads(line)["question"] for line in (data / "p017.jsonl").read_text().splitlines()]
    assert not any(q in page for q in questions)
    manifest = json.loads((sequence / "versions" / "v0001" / "manifest.json").read_text())
    assert manifest["files"]["evidence.html"] == hashlib.sha256(page.encode()).hexdigest()


@pytest.mark.slow
def test_fine_grained_request_measures_the_same_entitys_other_facts(tmp_path, memorised, data):
    """A request that forgets two facts of a person: the ledger measures the person's other
    facts (the retain items about the same entity) before and after, as their own set, and the
    evidence page shows them. Before, that set's probability is the parent's mean answer
    probability of exactly those items, computed here independently."""
    from obliviate.encoding import encode
    from obliviate.methods.base import mean_answer_prob
    from obliviate.models import load_model

    bench = Benchmark.load(memorised / "bench")
    person = "p010"
    facts = [x for x in bench.qa if x.entity == person]
    gone = [x for x in facts if x.relation in ("born_in", "award")]
    others = [x for x in facts if x not in gone]
    assert gone and others
    proj = _project(tmp_path / "proj", memorised, data)
    add_request(proj, "two facts of p010", str(_write(tmp_path / "fine.jsonl", gone)), overrides=FAST)
    assert apply(proj, progress=False) == [1]
    with Ledger.open(proj) as ledger:
        rows = ledger.measurements()
    before, after = rows[(0, 1)], rows[(1, 1)]
    assert before["kept_items"] == after["kept_items"] == len(others)
    model, tok = load_model(str(memorised / "target"))
    expected = mean_answer_prob(model.eval(), [encode(tok, x, i) for i, x in enumerate(others)], tok.pad_token_id)
    assert before["kept_prob"] == pytest.approx(expected, rel=1e-4)
    assert after["forget_prob"] < 0.5 * before["forget_prob"]
    assert all(isinstance(m.get("kept_rougeL_recall"), float) for m in (before, after))
    page = (proj / "versions" / "v0001" / "evidence.html").read_text()
    section = page.split("The same entities' other facts</h2>")[1].split("<h2>")[0]
    assert f"({len(others)} retain items) went from" in page
    assert "ROUGE-L" in section and "prob" in section
    # verify re-measures the kept set too and finds what was recorded
    ok, checks = verify(proj, 1, progress=False)
    assert ok and {"kept_prob", "kept_items"} <= {c.metric for c in checks}


@pytest.mark.slow
def test_verify_reproduces_and_detects_tampering(sequence):
    ok, checks = verify(sequence, 1, progress=False)
    assert ok, [c for c in checks if not c.ok]
    assert {"forget_prob", "auc_min_k", "model_utility", "audit_rephrase"} <= {c.metric for c in checks}
    with Ledger.open(sequence) as ledger:
        weights = next(ledger.model_path(ledger.version(2)).glob("*.safetensors"))
    with weights.open("r+b") as fh:  # flip one byte of version 2's weights
        fh.seek(-1, os.SEEK_END)
        last = fh.read(1)
        fh.seek(-1, os.SEEK_END)
        fh.write(bytes([last[0] ^ 1]))
    ok, checks = verify(sequence, 2, progress=False)
    assert not ok and checks[0].metric == "weights_sha256" and not checks[0].ok
    with Ledger.open(sequence) as ledger:
        assert ledger.events(2)[-1]["detail"].startswith("differs: weights_sha256")


# ---------------------------------------------------------------------------- processes
def _apply_process(proj: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen([sys.executable, "-m", "obliviate.cli", "request", "apply", "--all",
                             "--project", str(proj)], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env=env)


def _read_until(proc: subprocess.Popen, marker: str) -> list[str]:
    lines = []
    for line in proc.stdout:
        lines.append(line)
        if marker in line:
            return lines
    raise AssertionError(f"the process ended before printing {marker!r}:\n{''.join(lines)}")


@pytest.mark.slow
def test_sigkill_at_each_stage_leaves_the_ledger_consistent_and_apply_resumes(tmp_path, memorised, data):
    proj = _project(tmp_path / "proj", memorised, data)
    add_request(proj, "p019", str(data / "p019.jsonl"), overrides=FAST)
    stages = ["checking inputs", "unlearning with", "evaluating", "auditing", "writing the evidence"]
    for stage in stages:
        proc = _apply_process(proj)
        _read_until(proc, stage)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        with Ledger.open(proj) as ledger:
            req = ledger.request(1)
            assert (req.status, req.version_id) == ("pending", None), stage
            assert [v.id for v in ledger.versions()] == [0], stage  # nothing half-registered
            assert ledger.check() == [], stage
    proc = _apply_process(proj)
    out = proc.communicate(timeout=300)[0]
    assert proc.returncode == 0, out
    assert "resuming: the unlearned model" in out  # the model of an earlier attempt is reused
    with Ledger.open(proj) as ledger:
        assert ledger.request(1).status == "done" and ledger.request(1).attempts == len(stages) + 1
        assert ledger.check() == []
    assert sorted(p.name for p in (proj / "versions").iterdir()) == ["v0001"]  # no leftovers


@pytest.mark.slow
def test_concurrent_apply_gets_ledger_busy_and_add_still_works(tmp_path, memorised, data):
    proj = _project(tmp_path / "proj", memorised, data)
    add_request(proj, "p018", str(data / "p018.jsonl"), overrides=FAST)
    first = _apply_process(proj)
    try:
        _read_until(first, "unlearning with")  # the first process holds the lock now
        with pytest.raises(LedgerBusy, match=f"ledger busy: another obliviate process \\(pid {first.pid}\\)"):
            apply(proj, progress=False)
        second = subprocess.run([sys.executable, "-m", "obliviate.cli", "request", "apply",
                                 "--project", str(proj)], capture_output=True, text=True)
        assert second.returncode == 2 and "ledger busy" in second.stderr
        # WAL: recording a new request does not wait for the running apply
        assert add_request(proj, "p019", str(data / "p019.jsonl"), overrides=FAST) == 2
    finally:
        out = first.communicate(timeout=300)[0]
    assert first.returncode == 0, out
    with Ledger.open(proj) as ledger:
        assert ledger.check() == []
        assert [(r.status, r.version_id) for r in ledger.requests()] == [("done", 1), ("pending", None)]


@pytest.mark.slow
def test_with_an_oracle_forget_quality_and_audit_residuals_are_measured(tmp_path, memorised_oracle, data):
    root = memorised_oracle
    proj = _project(tmp_path / "proj", root, data, oracle=str(root / "oracle"))
    forget = _write(tmp_path / "forget10.jsonl", Benchmark.load(root / "bench").qa_of("forget10"))
    # the request's own guard.forget_stop wins over the project's holdout-level stop
    add_request(proj, "forget10", str(forget), overrides=[*FAST, "guard.forget_stop=0.1"])
    apply(proj, progress=False)
    with Ledger.open(proj) as ledger:
        before, after = ledger.measurements()[(0, 1)], ledger.measurements()[(1, 1)]
        oracle = ledger.version(1).summary["oracle"]["1"]
        assert ledger.version(1).summary["stop"] is None
        prov = json.loads((ledger.model_path(ledger.version(1)) / "obliviate.json").read_text())
    assert prov["config"]["guard"]["forget_stop"] == 0.1
    assert before["forget_quality"] < 0.05 < after["forget_quality"] <= 1.0  # KS p-values
    assert oracle["forget_quality"] == 1.0  # the oracle against itself
    for audit in ("rephrase", "quantization"):
        assert isinstance(after[f"audit_{audit}_residual"], float)
        assert after[f"audit_{audit}_residual"] < 0.5  # most of the knowledge is gone under attack


@pytest.mark.slow
def test_cli_request_commands(sequence, tmp_path, capsys, memorised):
    from obliviate.cli import main

    assert main(["request", "list", "--project", str(sequence)]) == 0
    out = capsys.readouterr().out
    assert out.count(" done ") == 3 and "latest version: 3" in out
    assert main(["request", "show", "2", "--project", str(sequence)]) == 0
    out = capsys.readouterr().out
    assert "version     2 (from version 1)" in out and "events:" in out
    assert main(["request", "report", "--project", str(sequence), "--out", str(tmp_path / "l.html")]) == 0
    assert "Across versions" in (tmp_path / "l.html").read_text()
    assert main(["request", "init", "--project", str(tmp_path / "p"), "--model",
                 str(memorised / "target"), "--audits", "rephrse"]) == 2
    assert "did you mean 'rephrase'" in capsys.readouterr().err
    assert not (tmp_path / "p").exists()
    assert main(["request", "apply", "--project", str(tmp_path / "nowhere")]) == 2
    assert "no ledger in" in capsys.readouterr().err
