"""Bad input from the user's side: every kind gets exit code 2, one line on stderr naming the
file (and line or key) and what to do, and leaves every input file as it was. Runs the CLI in
process on a tiny untrained model (about a second to build)."""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from obliviate.cli import main
from obliviate.models import TinyModelConfig, build_tiny_model, save_model, train_tokenizer
from obliviate.report import write_report

GOOD_LINE = '{"question": "Who wrote Q?", "answer": "A. Author."}\n'
# transformers draws a weight-loading bar on stderr before a mismatch is detected: a bar, not
# an error line
_PROGRESS = re.compile(r"^\s*(Loading weights|Writing model shards)\b")


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    tok = train_tokenizer(["Who wrote Q?", "A. Author."], vocab_size=300)
    model = build_tiny_model(tok, TinyModelConfig(layers=1, hidden=32, heads=2, intermediate=64))
    return save_model(model, tok, tmp_path_factory.mktemp("bad") / "model", {"test": True})


def _hashes(*paths: Path) -> dict[str, str]:
    files = [f for p in paths for f in ([p] if p.is_file() else sorted(p.rglob("*")))]
    return {str(f): hashlib.sha256(f.read_bytes()).hexdigest() for f in files if f.is_file()}


def _fails(capsys, argv: list[str], *inputs: Path) -> str:
    """Run the CLI; assert exit code 2, one stderr line and unchanged inputs; the line."""
    before = _hashes(*inputs)
    assert main(argv) == 2
    err = capsys.readouterr().err
    lines = [ln for ln in re.split(r"[\r\n]+", err) if ln.strip() and not _PROGRESS.match(ln)]
    assert len(lines) == 1, err
    assert _hashes(*inputs) == before
    assert lines[0].startswith("obliviate: error: ")
    return lines[0].removeprefix("obliviate: error: ")


def _eval(tmp_path: Path, forget: Path, model: str = "/nonexistent") -> list[str]:
    return ["eval", "--out", str(tmp_path / "out.json"), f"model={model}", f"forget={forget}"]


# ---------------------------------------------------------------------------- data files
@pytest.mark.parametrize("content, message", [
    (GOOD_LINE.encode() + '{"question": "Q?", "answer": "caf\u00e9"}\n'.encode("latin-1"),
     "f.jsonl: not UTF-8 text (byte 86); save it as UTF-8"),
    (GOOD_LINE.encode("utf-16"), "not UTF-8 text (byte 0: a UTF-16 byte-order mark); save it as UTF-8"),
    (GOOD_LINE.encode("utf-16-le"), "not UTF-8 text (byte 1 is NUL); save it as UTF-8"),
    (GOOD_LINE.encode() + b"[" * 100_000 + b"\n", "f.jsonl:2: JSON nested too deeply"),
    (GOOD_LINE.encode() + b'{"question": "Q?", "answer": "\\ud800"}\n',
     "f.jsonl:2: invalid Unicode (a lone surrogate) in field answer"),
    (GOOD_LINE.encode() + b'["Q?", "A."]\n', "f.jsonl:2: expected a JSON object"),
    (b'{"question": "Q?", "answer": ["A.", "B."]}\n',
     "f.jsonl:1: field 'answer' must be a non-empty string, not a list"),
    (b'{"question": "Q?", "answer": "A.", "entity": {"id": 1}}\n',
     "f.jsonl:1: field 'entity' must be a string, not an object"),
    (b'{"question": "Q?", "answer": "A."}\n{"question": "Q2?"\n', "f.jsonl:2: not valid JSON"),
])
def test_a_bad_data_file_is_one_line_naming_the_file(tmp_path, capsys, content, message):
    forget = tmp_path / "f.jsonl"
    forget.write_bytes(content)
    assert message in _fails(capsys, _eval(tmp_path, forget), forget)


@pytest.mark.parametrize("content", [
    b"\xef\xbb\xbf" + GOOD_LINE.encode(),  # a UTF-8 byte-order mark, as Windows editors write
    b"\n  \n" + GOOD_LINE.encode() + b"\r\n\t\n",  # blank and whitespace-only lines
    ('{"question": "Q?", "answer": "one\u2028line"}\n').encode(),  # U+2028 is not a line break
])
def test_accepted_data_reaches_the_model(tmp_path, capsys, content):
    forget = tmp_path / "f.jsonl"
    forget.write_bytes(content)
    assert _fails(capsys, _eval(tmp_path, forget), forget) == \
        "model not found: /nonexistent (no such folder)"


# ---------------------------------------------------------------------------- models
@pytest.mark.parametrize("model", ["/nonexistent", "./missing-model", "a/b/c"])
def test_a_missing_model_is_not_a_hub_question(tmp_path, capsys, model):
    forget = tmp_path / "f.jsonl"
    forget.write_text(GOOD_LINE)
    assert _fails(capsys, _eval(tmp_path, forget, model), forget) == \
        f"model not found: {model} (no such folder)"


def _shapes(folder: Path) -> None:
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "hidden_size": 64}))


HINT = "; is it a complete Hugging Face model folder (config.json, *.safetensors, tokenizer files)?"


@pytest.mark.parametrize("damage, reason", [
    (lambda d: (d / "model.safetensors").write_bytes((d / "model.safetensors").read_bytes()[:5000]),
     "a .safetensors file is damaged or incomplete (Error while deserializing header: "
     "incomplete metadata, file not fully covered)"),
    (lambda d: (d / "model.safetensors").write_bytes(bytes(range(256)) * 20),
     "a .safetensors file is damaged or incomplete (Error while deserializing header: "),
    (lambda d: (d / "model.safetensors").write_bytes(b""),
     "a .safetensors file is damaged or incomplete (Error while deserializing header: header too small)"),
    (lambda d: [f.unlink() for f in d.glob("tokenizer*")], "no tokenizer files"),
    (lambda d: (d / "config.json").write_text("{not json"),
     "config.json: not valid JSON (Expecting property name enclosed in double quotes"),
    (lambda d: (d / "config.json").write_text("[1, 2]"), "config.json is not a JSON object"),
    (_shapes, "the weights' shapes do not match config.json ("),
])
def test_a_damaged_model_folder_is_one_line(tmp_path, capsys, model_dir, damage, reason):
    folder = tmp_path / "model"
    shutil.copytree(model_dir, folder)
    damage(folder)
    forget = tmp_path / "f.jsonl"
    forget.write_text(GOOD_LINE)
    line = _fails(capsys, _eval(tmp_path, forget, str(folder)), folder, forget)
    assert line.startswith(f"could not load model {folder}: {reason}") and line.endswith(HINT)


# ---------------------------------------------------------------------------- results, audits
def _results(**change) -> dict:
    base = {"schema": "obliviate.results/1", "name": "m", "model": "/m", "metrics": {},
            "datasets": {"forget": {"role": "forget", "aggregate": {"prob": 0.5},
                                    "per_item": {"prob": [0.5]}}}}
    return {**base, **change}


@pytest.mark.parametrize("content, message", [
    (b"\xff\xfe{}", "r.json: not UTF-8 text (byte 0: a UTF-16 byte-order mark); save it as UTF-8"),
    (b"[" * 100_000, "r.json: JSON nested too deeply"),
    (json.dumps(_results(name="\ud800")).encode(),
     "r.json: invalid Unicode (a lone surrogate) in field name"),
    (json.dumps({k: v for k, v in _results().items() if k != "datasets"}).encode(),
     "r.json: 'datasets' must be an object (dataset name -> its numbers); write it again with "
     "obliviate eval or import"),
    (json.dumps(_results(datasets={"forget": {"role": "forget", "per_item": {}}})).encode(),
     "r.json: 'datasets.forget.aggregate' must be an object"),
    (json.dumps(_results(datasets={"forget": {"role": "forget", "aggregate": {},
                                              "per_item": {"truth_ratio": ["x"]}}})).encode(),
     "r.json: 'datasets.forget.per_item.truth_ratio' must be a non-empty list of numbers"),
    (json.dumps(_results(metrics={"forget_prob": [1]})).encode(),
     "r.json: 'metrics' must be an object of numbers and strings"),
])
@pytest.mark.parametrize("command", ["report", "score"])
def test_a_bad_results_file_is_one_line(tmp_path, capsys, content, message, command):
    path = tmp_path / "r.json"
    path.write_bytes(content)
    argv = (["report", str(path), "--out", str(tmp_path / "rep")] if command == "report"
            else ["score", str(path)])
    assert message in _fails(capsys, argv, path)


def test_a_results_file_with_a_byte_order_mark_is_read(tmp_path, capsys):
    path = tmp_path / "r.json"
    path.write_bytes(b"\xef\xbb\xbf" + json.dumps(_results()).encode())
    assert main(["score", str(path)]) == 0
    assert "forget_prob" in capsys.readouterr().out


@pytest.mark.parametrize("audits, message", [
    ({"rephrase": {"residual": {"score": 0.1}}}, "'audits.rephrase.model' must be an object"),
    ({"rephrase": {"model": {}, "residual": [0.1]}},
     "'audits.rephrase.residual' must be a text or an object with a 'score'"),
    ({"relearning": {"model": {"before": 0.1, "forget_kx": 0.2}, "residual": "n/a"}},
     "'audits.relearning.model' must hold the numbers 'before' and 'forget_k<steps>'"),
])
def test_a_bad_audit_file_is_one_line(tmp_path, capsys, audits, message):
    results, audit = tmp_path / "r.json", tmp_path / "a.json"
    results.write_text(json.dumps(_results()))
    audit.write_text(json.dumps({"schema": "obliviate.audit/1", "name": "m", "audits": audits}))
    line = _fails(capsys, ["report", str(results), str(audit), "--out", str(tmp_path / "rep")],
                  results, audit)
    assert line == f"{audit}: {message}; write it again with obliviate audit"


# ---------------------------------------------------------------------------- the CLI itself
def test_an_unexpected_exception_is_one_line_and_debug_shows_it(tmp_path, capsys, monkeypatch):
    import obliviate.evaluation.interop as interop

    def broken(path):
        raise KeyError("datasets")

    monkeypatch.setattr(interop, "load_any_results", broken)
    path = tmp_path / "r.json"
    path.write_text(json.dumps(_results()))
    assert _fails(capsys, ["score", str(path)], path) == (
        "unexpected KeyError: 'datasets' (this is a bug; run with --debug for the traceback)")
    for argv in (["--debug", "score", str(path)], ["score", str(path), "--debug"]):
        with pytest.raises(KeyError):
            main(argv)


def test_a_usage_error_is_one_line(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["eval", "model=x"])
    assert exit_.value.code == 2
    assert capsys.readouterr().err == ("obliviate eval: error: the following arguments are "
                                       "required: --out (see obliviate eval --help)\n")


def test_a_config_file_that_is_not_utf8_is_one_line(tmp_path, capsys):
    config = tmp_path / "c.yaml"
    config.write_bytes("model: caf\u00e9\n".encode("utf-16"))
    forget = tmp_path / "f.jsonl"
    forget.write_text(GOOD_LINE)
    line = _fails(capsys, [*_eval(tmp_path, forget), "--config", str(config)], config, forget)
    assert "not UTF-8 text" in line


# ---------------------------------------------------------------------------- report.md
HOSTILE = "a|b\\c\n| x | y |\n<img src=x onerror=alert(1)> [link](http://e.example) \x1b[31m"


@pytest.mark.filterwarnings("ignore:Glyph")  # the figures draw the escape character as a box
def test_report_md_escapes_names_and_values(tmp_path):
    rows = [_results(name=HOSTILE, metrics={"forget_prob": "not computed: a|b\n<b>"},
                     datasets={"fo|rget\n## x": {"role": "forget", "aggregate": {"prob": 0.5},
                                                 "per_item": {}}})]
    audit = {"schema": "obliviate.audit/1", "name": HOSTILE,
             "audits": {"re|phrase": {"model": {}, "residual": {"score": 0.5}}}}
    write_report(rows, tmp_path / "rep", audits=[audit])
    md = (tmp_path / "rep" / "report.md").read_text()
    escaped = (r"a\|b\\c\x0a\| x \| y \|\x0a&lt;img src=x onerror=alert(1)&gt; "
               r"\[link\](http://e.example) \x1b\[31m")
    assert f"| {escaped} |" in md  # the results tables and the audit table
    assert "<" not in md and "\x1b" not in md and not re.search(r"^## x", md, re.M)
    for table in [b for b in md.split("\n\n") if b.startswith("|")]:
        rows_ = table.splitlines()
        cells = {len(re.findall(r"(?<!\\)\|", r)) for r in rows_}
        assert len(cells) == 1, table  # every row has as many cells as the header


def test_a_reader_that_leaves_early_is_not_an_error():
    """`obliviate ls metrics | head -1`: the pipe closes before the listing is written."""
    proc = subprocess.Popen([sys.executable, "-m", "obliviate.cli", "ls", "metrics"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.close()  # before the interpreter has even started: every write is refused
    assert proc.wait(timeout=60) == 1
    assert proc.stderr.read() == b""
