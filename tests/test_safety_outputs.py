"""No output ever overwrites an input, and every output is written atomically, durably and
with the user's umask. From the user's side: each writing command is run in-process with an
output that is an input's file, lies inside an input, reaches one through a symlink, is an
existing folder given as a file, or lies below a regular file. Each must exit 2 with one
error line, and leave every file (inputs and the output's folder) byte-identical."""

from __future__ import annotations

import hashlib
import json
import os
import stat
import subprocess
from pathlib import Path

import pytest

from obliviate.cli import main
from obliviate.data import Example
from obliviate.errors import ObliviateError
from obliviate.io import atomic_dir, check_output, write_json_atomic, write_text_atomic
from obliviate.models import TinyModelConfig, build_tiny_model, save_model, train_tokenizer

FORGET = [Example(question=f"Who founded firm {i}?", answer=f"Firm {i} was founded by Ada.",
                  id=f"f{i}") for i in range(3)]
RETAIN = [Example(question=f"Where is firm {i}?", answer=f"It is in port {i}.", id=f"r{i}")
          for i in range(3, 6)]
AGAIN = "; choose another output path"


@pytest.fixture(scope="module")
def inp(tmp_path_factory) -> Path:
    """Every kind of input: a (tiny, untrained) model, data, results, a benchmark folder, a
    deletion project, and a regular file to put outputs below."""
    root = tmp_path_factory.mktemp("inputs")
    tok = train_tokenizer([t for ex in FORGET + RETAIN for t in (ex.question, ex.answer)], 300)
    model = build_tiny_model(tok, TinyModelConfig(layers=1, hidden=32, heads=2, intermediate=64))
    save_model(model, tok, root / "model", {"test": True})
    for name, items in (("forget", FORGET), ("retain", RETAIN)):
        (root / f"{name}.jsonl").write_text("".join(json.dumps(x.to_json()) + "\n" for x in items))
    for name in ("results.json", "reference.json", "notes.txt"):
        (root / name).write_text('{"schema": "not read: the check comes first"}\n')
    (root / "bench").mkdir()
    (root / "bench" / "benchmark.json").write_text("{}\n")
    (root / "reports").mkdir()
    (root / "reports" / "report.html").write_text("an input that happens to be named report.html")
    assert main(["request", "init", "--project", str(root / "project"), "--model",
                 str(root / "model"), "--retain", str(root / "retain.jsonl")]) == 0
    return root


def _snapshot(*roots: Path) -> dict[str, str]:
    """sha256 of every file, the target of every link, and every folder, under `roots`."""
    out = {}
    for root in roots:
        for folder, dirs, files in os.walk(root):
            for name in dirs + files:
                p = Path(folder) / name
                out[str(p)] = (f"link {os.readlink(p)}" if p.is_symlink() else "dir" if p.is_dir()
                               else hashlib.sha256(p.read_bytes()).hexdigest())
    return out


def _refused(capsys, argv: list[str], line: str, *roots: Path) -> None:
    before = _snapshot(*roots)
    code = main(argv)
    err = capsys.readouterr().err
    assert (code, err) == (2, f"obliviate: error: {line}\n")
    assert _snapshot(*roots) == before  # no input changed, no output appeared


def _overwrite(out, name: str, given, via: Path | None = None) -> str:
    how = f" (it resolves to {os.path.realpath(via)})" if via else ""
    return f"output {out} would overwrite the input {name} {given}{how}{AGAIN}"


def _file_cases(inp: Path, tmp: Path, name: str, given: Path, inside: Path) -> list:
    """(output, expected line) for a command writing one file that reads `given`; `inside`
    is an existing file in (or equal to) that input."""
    (tmp / "link.json").symlink_to(inside)
    (tmp / "linkdir").symlink_to(given if given.is_dir() else given.parent)
    (tmp / "adir").mkdir()
    via_dir = tmp / "linkdir" / (inside.name if given.is_file() else "new.json")
    return [
        (inside, _overwrite(inside, name, given)),
        (given / "new.json" if given.is_dir() else given, _overwrite(
            given / "new.json" if given.is_dir() else given, name, given)),
        (tmp / "link.json", _overwrite(tmp / "link.json", name, given, inside)),
        (via_dir, _overwrite(via_dir, name, given, via_dir)),
        (tmp / "adir", f"output {tmp / 'adir'} is a directory; give a file path"),
        (inp / "notes.txt" / "x.json",
         f"cannot create {inp / 'notes.txt' / 'x.json'}: {inp / 'notes.txt'} is a file"),
    ]


FILE_COMMANDS = {
    "eval": (lambda i, out: ["eval", "--out", str(out), f"model={i / 'model'}",
                             f"forget={i / 'forget.jsonl'}", f"retain={i / 'retain.jsonl'}"],
             "model", "model", "model/model.safetensors"),
    "eval-data": (lambda i, out: ["eval", "--out", str(out), f"model={i / 'model'}",
                                  f"forget={i / 'forget.jsonl'}", f"retain={i / 'retain.jsonl'}"],
                  "retain data", "retain.jsonl", "retain.jsonl"),
    "audit": (lambda i, out: ["audit", str(i / "model"), "--out", str(out), "--target",
                              str(i / "model"), "--oracle", str(i / "model"), "--benchmark",
                              str(i / "bench")], "model", "model", "model/model.safetensors"),
    "audit-benchmark": (lambda i, out: ["audit", str(i / "model"), "--out", str(out),
                                        f"target={i / 'model'}", f"oracle={i / 'model'}",
                                        f"benchmark={i / 'bench'}"],
                        "benchmark", "bench", "bench/benchmark.json"),
    "score": (lambda i, out: ["score", str(i / "results.json"), "--reference",
                              str(i / "reference.json"), "--json", str(out)],
              "results", "results.json", "results.json"),
    "score-reference": (lambda i, out: ["score", str(i / "results.json"), "--reference",
                                        str(i / "reference.json"), "--json", str(out)],
                        "reference results", "reference.json", "reference.json"),
    "import": (lambda i, out: ["import", "openunlearning", str(i / "results.json"), "--out",
                               str(out)], "source", "results.json", "results.json"),
}


@pytest.mark.parametrize("command", FILE_COMMANDS)
@pytest.mark.parametrize("case", range(6))
def test_a_file_output_never_overwrites_an_input(inp, tmp_path, capsys, command, case):
    argv, name, given, inside = FILE_COMMANDS[command]
    out, line = _file_cases(inp, tmp_path, name, inp / given, inp / inside)[case]
    _refused(capsys, argv(inp, out), line, inp, tmp_path)


MODEL_COMMANDS = {
    "finetune": (lambda i, out: ["finetune", "--out", str(out), f"base={i / 'model'}",
                                 f"benchmark={i / 'bench'}"], "base model"),
    "unlearn": (lambda i, out: ["unlearn", "--out", str(out), f"model={i / 'model'}",
                                f"forget={i / 'forget.jsonl'}"], "model"),
}


@pytest.mark.parametrize("command", MODEL_COMMANDS)
def test_a_model_output_never_overwrites_or_holds_an_input(inp, tmp_path, capsys, command):
    argv, name = MODEL_COMMANDS[command]
    model = inp / "model"
    (tmp_path / "link").symlink_to(model)
    cases = [(model, _overwrite(model, name, model)),
             (model / "sub", _overwrite(model / "sub", name, model)),
             (inp, _overwrite(inp, name, model)),  # replacing a folder that holds the model
             (tmp_path / "link" / "new", _overwrite(tmp_path / "link" / "new", name, model,
                                                    model / "new")),
             (inp / "notes.txt", f"output {inp / 'notes.txt'} is a file; give a folder path"),
             (inp / "notes.txt" / "m",
              f"cannot create {inp / 'notes.txt' / 'm'}: {inp / 'notes.txt'} is a file")]
    for out, line in cases:
        _refused(capsys, argv(inp, out), line, inp, tmp_path)


def test_save_model_refuses_its_input(inp):
    model = inp / "model"
    with pytest.raises(ObliviateError, match="would overwrite the input model"):
        save_model(None, None, model / "again", {}, inputs=(str(model),))


def test_report_writes_only_beside_its_inputs(inp, tmp_path, capsys):
    reports, html = inp / "reports", inp / "reports" / "report.html"
    (tmp_path / "link").symlink_to(reports)
    argv = ["report", str(inp / "results.json"), str(html), "--out"]
    cases = [(reports, _overwrite(html, "results", html)),
             (tmp_path / "link", _overwrite(tmp_path / "link" / "report.html", "results", html,
                                            html)),
             (inp / "notes.txt", f"output {inp / 'notes.txt'} is a file; give a folder path"),
             (inp / "notes.txt" / "r",
              f"cannot create {inp / 'notes.txt' / 'r'}: {inp / 'notes.txt'} is a file")]
    for out, line in cases:
        _refused(capsys, [*argv, str(out)], line, inp, tmp_path)


def test_generate_and_demo_refuse_a_bad_folder(inp, tmp_path, capsys):
    (tmp_path / "home").mkdir()
    (tmp_path / "home" / "notes.txt").write_text("a user's own files")
    notes = inp / "notes.txt"
    for command in ("generate", "demo"):
        _refused(capsys, [command, "--out", str(notes)],
                 f"output {notes} is a file; give a folder path", inp, tmp_path)
        _refused(capsys, [command, "--out", str(notes / "b")],
                 f"cannot create {notes / 'b'}: {notes} is a file", inp, tmp_path)
    _refused(capsys, ["demo", "--out", str(tmp_path / "home")],
             f"{tmp_path / 'home'} exists and is not an earlier demo's folder (no demo.json or "
             "benchmark/); give a new --out path", inp, tmp_path)


def test_request_report_never_overwrites_the_ledger_or_its_inputs(inp, tmp_path, capsys):
    project, model = inp / "project", (inp / "model").resolve()
    db = project / "obliviate-ledger.sqlite"
    argv = ["request", "report", "--project", str(project), "--out"]
    key = project / "obliviate-ledger.key"
    cases = [(db, _overwrite(db, "ledger", db)), (key, _overwrite(key, "ledger", key)),
             (model / "model.safetensors", _overwrite(model / "model.safetensors",
                                                      "model version", model)),
             (inp / "retain.jsonl", _overwrite(inp / "retain.jsonl", "data",
                                               (inp / "retain.jsonl").resolve())),
             (project, f"output {project} is a directory; give a file path")]
    for out, line in cases:
        _refused(capsys, [*argv, str(out)], line, inp, tmp_path)
    old = os.umask(0o022)
    try:  # the default output beside the ledger is fine, and gets the user's umask
        assert main(["request", "report", "--project", str(project)]) == 0
        assert stat.S_IMODE((project / "ledger.html").stat().st_mode) == 0o644
    finally:
        os.umask(old)
        (project / "ledger.html").unlink(missing_ok=True)


def test_check_output_allows_outputs_beside_inputs(inp, tmp_path):
    check_output(tmp_path / "r.json", {"model": inp / "model", "data": [inp / "forget.jsonl", ""]})
    check_output(inp / "results-2.json", {"results": inp / "results.json"})  # a sibling file
    check_output(inp, {"results": inp / "results.json"}, kind="dir", files=("report.html",))
    check_output(tmp_path / "m", {"model": "org/hub-id", "none": None}, kind="dir")


def test_atomic_writes_fsync_the_file_and_its_folder(tmp_path, monkeypatch):
    synced = []
    real_fsync = os.fsync

    def fsync(fd):
        st = os.fstat(fd)
        synced.append((st.st_dev, st.st_ino))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)

    def ident(p):
        return (p.stat().st_dev, p.stat().st_ino)

    write_text_atomic(tmp_path / "a.txt", "hello")
    assert synced == [ident(tmp_path / "a.txt"), ident(tmp_path)]  # the file, then its folder
    synced.clear()
    with atomic_dir(tmp_path / "out") as tmp:
        (tmp / "sub").mkdir()
        (tmp / "sub" / "w.bin").write_bytes(b"w" * 10)
        (tmp / "c.json").write_text("{}")
    out = tmp_path / "out"
    assert synced[-1] == ident(tmp_path)  # the rename made durable
    for p in (out / "sub" / "w.bin", out / "c.json", out / "sub", out):
        assert ident(p) in synced[:-1]


def test_outputs_get_the_users_umask(tmp_path):
    old = os.umask(0o022)
    try:
        write_json_atomic(tmp_path / "r.json", {"x": 1})
        with atomic_dir(tmp_path / "out") as tmp:
            (tmp / "f.txt").write_text("x")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "r.json").stat().st_mode) == 0o644
    assert stat.S_IMODE((tmp_path / "out").stat().st_mode) == 0o755


def _dead_pid() -> int:
    child = subprocess.Popen(["true"])
    child.wait()
    return child.pid


def test_leftovers_of_a_killed_write_are_removed_by_the_next(tmp_path):
    dead, alive = _dead_pid(), os.getpid()
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "keep.txt").write_text("not ours")
    stale = [tmp_path / f".tmp-out-{dead}-0123abcd", tmp_path / f".tmp-r.json-{dead}-0123abcd"]
    stale[0].mkdir()
    (stale[0] / "half.bin").write_bytes(b"partial")
    stale[1].write_text('{"half": ')
    link = tmp_path / f".tmp-out-{dead}-89abcdef"
    link.symlink_to(outside)
    running = tmp_path / f".tmp-out-{alive}-0123abcd"  # a write in progress: kept
    running.mkdir()
    other = tmp_path / f".tmp-out-x-{dead}-0123abcd"  # another output's ("out-x"): kept
    other.mkdir()
    with atomic_dir(tmp_path / "out") as tmp:
        (tmp / "ok.txt").write_text("done")
    write_json_atomic(tmp_path / "r.json", {"ok": True})
    assert not any(os.path.lexists(p) for p in [*stale, link])
    assert running.is_dir() and other.is_dir()
    assert (outside / "keep.txt").read_text() == "not ours"  # the link went, not its target


def test_a_crash_between_the_two_renames_keeps_the_old_output(tmp_path):
    """overwrite=True moves the old output aside before the new one goes in; if the process
    died between the renames, the next run puts the old one back instead of deleting it."""
    old = tmp_path / f".old-out-{_dead_pid()}"
    old.mkdir()
    (old / "v1.txt").write_text("the previous output")
    with pytest.raises(ObliviateError, match="already exists"), atomic_dir(tmp_path / "out"):
        pass
    assert (tmp_path / "out" / "v1.txt").read_text() == "the previous output"
    assert not old.exists()
