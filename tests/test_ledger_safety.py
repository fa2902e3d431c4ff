"""The ledger under a careless user or an attacker, from the command line (no model is trained:
the base model is a folder of placeholder weights, and every `apply` here stops before
unlearning). Files outside the project are never written or deleted through a symlink; a
version's manifest lists only what the version is made of; a file that is not a ledger gets one
clear error; item hashes are keyed with a per-project secret over every measured field; a
failed request stops the next plain `apply`; user text is printed with control characters
escaped."""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import sqlite3
import stat
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import pytest

from obliviate.cli import main
from obliviate.data import load_examples
from obliviate.data.examples import Example
from obliviate.errors import ObliviateError
from obliviate.ledger.hashing import KEY_BYTES, KEYED, LEGACY, content_message, item_message
from obliviate.ledger.paths import KEY_FILE, LOCK_FILE
from obliviate.ledger.project import forgotten_hashes, retain_items, verified_forget
from obliviate.ledger.show import LEGACY_NOTE, printable
from obliviate.ledger.store import LEDGER_FILE, MIGRATIONS, Ledger
from obliviate.ledger.workflow import _clean_versions_dir, _prepare_stage, _write_manifest

ITEMS = [
    {"id": "dana-1", "question": "What is Dana Reyes's phone number?", "answer": "It is 555-0134.",
     "paraphrased_question": "Which number reaches Dana Reyes?",
     "paraphrased_answer": "Her number is 555-0134.",
     "perturbed_answer": ["It is 555-0199.", "It is 555-0777."], "entity": "dana",
     "relation": "phone"},
    {"question": "Where does Dana Reyes work?", "answer": "Dana Reyes works at the Halden clinic."},
]
NOT_A_LEDGER = "; pass the right --project, or move the file away and run `obliviate request init`"


def _jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def _cli(capsys, *argv: str) -> tuple[int, str, str]:
    rc = main(list(argv))
    captured = capsys.readouterr()
    return rc, captured.out, captured.err


def _error(capsys, *argv: str) -> str:
    """The one error line of a command that must exit 2."""
    rc, _, err = _cli(capsys, *argv)
    assert rc == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    prefix = "obliviate: error: "
    assert lines[0].startswith(prefix)
    return lines[0][len(prefix):]


def _snapshot(path: Path) -> tuple[bytes, int]:
    return path.read_bytes(), path.stat().st_mtime_ns


@pytest.fixture
def project(tmp_path, capsys) -> SimpleNamespace:
    """A project on a placeholder base model, with request 1 (two forget items) pending, and a
    decoy file outside it that symlinks will point to."""
    model = tmp_path / "base"
    model.mkdir()
    (model / "config.json").write_text("{}")
    (model / "model.safetensors").write_bytes(b"placeholder weights")
    forget = _jsonl(tmp_path / "forget.jsonl", ITEMS)
    proj = tmp_path / "proj"
    assert _cli(capsys, "request", "init", "--project", str(proj), "--model", str(model))[0] == 0
    assert _cli(capsys, "request", "add", "--project", str(proj), "--subject", "ticket 1",
                "--forget", str(forget))[0] == 0
    decoy = tmp_path / "outside" / "decoy.txt"
    decoy.parent.mkdir()
    decoy.write_bytes(b"not the project's file\n")
    os.utime(decoy, ns=(1_000_000_000_000_000_000, 1_000_000_000_000_000_000))
    return SimpleNamespace(root=proj, forget=forget, model=model, decoy=decoy, tmp=tmp_path)


# ---------------------------------------------------------------------------- 1. outside files
def test_files_outside_the_project_are_never_touched(project, capsys):
    proj, decoy = project.root, project.decoy
    before = _snapshot(decoy)
    (proj / LOCK_FILE).unlink(missing_ok=True)
    (proj / LOCK_FILE).symlink_to(decoy)
    for command in (["apply"], ["verify", "1"], ["cancel", "1"], ["add", "--subject", "x",
                                                                   "--forget", str(project.forget)]):
        assert _error(capsys, "request", *command, "--project", str(proj)) == (
            f"{proj / LOCK_FILE} is a symlink; remove it")
    assert _snapshot(decoy) == before  # no pid written over it, not truncated
    (proj / LOCK_FILE).unlink()

    # the lock opened past the open-time check (a link planted meanwhile): O_NOFOLLOW refuses it
    with Ledger.open(proj) as ledger:
        (proj / LOCK_FILE).symlink_to(decoy)
        with pytest.raises(ObliviateError, match="^" + str(proj / LOCK_FILE) + " is a symlink; remove it$"):
            with ledger.apply_lock():
                pass
        (proj / LOCK_FILE).unlink()
        os.link(decoy, proj / LOCK_FILE)  # a hard link would be truncated just the same
        with pytest.raises(ObliviateError, match="is a hard link; remove it$"):
            with ledger.apply_lock():
                pass
        (proj / LOCK_FILE).unlink()
    assert _snapshot(decoy) == before

    # a symlinked versions/ folder: apply's cleanup would delete version-like folders there
    elsewhere = project.tmp / "elsewhere"
    (elsewhere / "v0007").mkdir(parents=True)
    (elsewhere / ".tmp-model-x").mkdir()
    (proj / "versions").symlink_to(elsewhere, target_is_directory=True)
    assert _error(capsys, "request", "apply", "--project", str(proj)) == (
        f"{proj / 'versions'} is a symlink; remove it")
    assert (elsewhere / "v0007").is_dir() and (elsewhere / ".tmp-model-x").is_dir()
    (proj / "versions").unlink()

    # a version folder, the key or the ledger itself as a symlink: refused the same way
    (proj / "versions").mkdir()
    (proj / "versions" / "v0001").symlink_to(elsewhere / "v0007", target_is_directory=True)
    assert _error(capsys, "request", "apply", "--project", str(proj)) == (
        f"{proj / 'versions' / 'v0001'} is a symlink; remove it")
    (proj / "versions" / "v0001").unlink()
    key = proj / KEY_FILE
    key.rename(project.tmp / "key")
    key.symlink_to(project.tmp / "key")
    assert _error(capsys, "request", "apply", "--project", str(proj)) == f"{key} is a symlink; remove it"
    key.unlink()
    (project.tmp / "key").rename(key)
    db, moved = proj / LEDGER_FILE, project.tmp / "outside" / "ledger.sqlite"
    db.rename(moved)
    db.symlink_to(moved)
    ledger_before = _snapshot(moved)
    for command in (["list"], ["apply"]):
        assert _error(capsys, "request", *command, "--project", str(proj)) == (
            f"{db} is a symlink; remove it")
    assert _snapshot(moved) == ledger_before  # not migrated, not switched to WAL, not written
    db.unlink()
    moved.rename(db)
    assert _cli(capsys, "request", "list", "--project", str(proj))[0] == 0
    assert (elsewhere / "v0007").is_dir()


def test_cleanup_unlinks_a_symlink_and_never_deletes_its_target(project):
    """Leftover folders are removed by `_clean_versions_dir`; one that is a symlink (planted
    after the ledger was opened) is unlinked, and the folder it points to is kept whole."""
    target = project.tmp / "precious"
    (target / "sub").mkdir(parents=True)
    (target / "sub" / "data.bin").write_bytes(b"keep me")
    with Ledger.open(project.root) as ledger:
        versions = project.root / "versions"
        (versions / "v0005").mkdir(parents=True)
        (versions / "v0009").symlink_to(target, target_is_directory=True)
        (versions / ".tmp-v0003-x").symlink_to(target, target_is_directory=True)
        _clean_versions_dir(ledger, keep="v0001")
    assert sorted(p.name for p in versions.iterdir()) == []
    assert (target / "sub" / "data.bin").read_bytes() == b"keep me"


# ---------------------------------------------------------------------------- 2. leftovers
def test_a_half_saved_model_copy_is_removed_and_never_in_the_manifest(tmp_path):
    stage = tmp_path / "versions" / "v0001"
    plan = {"request": 1, "parent": 0}
    _prepare_stage(stage, plan)
    (stage / "model").mkdir()
    (stage / "model" / "model.safetensors").write_bytes(b"finished model")
    # what a kill during a save leaves: a temp model copy, an old copy, a temp JSON file
    for leftover in (".tmp-model-ab12", ".old-model-4242"):
        (stage / leftover).mkdir()
        (stage / leftover / "model.safetensors").write_bytes(b"half")
    (stage / ".results.json.x1y2").write_text("{")
    outside = tmp_path / "outside"
    outside.mkdir()
    (stage / ".tmp-model-link").symlink_to(outside, target_is_directory=True)
    _prepare_stage(stage, plan)  # the next attempt at the same plan resumes here
    assert sorted(p.name for p in stage.iterdir()) == ["model", "stage.json"]
    assert outside.is_dir()

    (stage / ".tmp-model-cd34").mkdir()  # a save killed after the stage was prepared
    (stage / ".tmp-model-cd34" / "model.safetensors").write_bytes(b"half")
    (stage / "model" / ".tmp-shard").write_bytes(b"half")
    (stage / "notes.txt").write_text("not part of the version")
    for name in ("results.json", "audit.json", "evidence.html"):
        (stage / name).write_text("{}")
    _write_manifest(stage, SimpleNamespace(id=1), SimpleNamespace(id=0), "0" * 64)
    manifest = json.loads((stage / "manifest.json").read_text())
    assert sorted(manifest["files"]) == ["audit.json", "evidence.html", "model/model.safetensors",
                                         "results.json", "stage.json"]
    assert manifest["files"]["model/model.safetensors"] == hashlib.sha256(b"finished model").hexdigest()


# ---------------------------------------------------------------------------- 3. not a ledger
def test_a_file_that_is_not_a_ledger_gets_one_clear_error(tmp_path, capsys):
    proj = tmp_path / "proj"
    proj.mkdir()
    db = proj / LEDGER_FILE
    db.write_bytes(b"")
    for command in (["list"], ["apply"], ["show", "1"]):
        assert _error(capsys, "request", *command, "--project", str(proj)) == (
            f"{db} is not an obliviate ledger (empty file){NOT_A_LEDGER}")
    assert db.read_bytes() == b""  # not turned into a fresh database
    db.write_bytes(b"id,subject\n1,ticket\n")
    assert _error(capsys, "request", "list", "--project", str(proj)) == (
        f"{db} is not an obliviate ledger (not an SQLite database){NOT_A_LEDGER}")

    db.unlink()
    conn = sqlite3.connect(db)
    conn.execute("CREATE TABLE customers (name TEXT)")
    conn.commit()
    conn.close()
    before = db.read_bytes()
    assert _error(capsys, "request", "list", "--project", str(proj)) == (
        f"{db} is not an obliviate ledger (an SQLite database without the ledger's tables)"
        f"{NOT_A_LEDGER}")
    assert db.read_bytes() == before  # someone else's database is left exactly as it was

    other = tmp_path / "nosettings"
    Ledger.create(other, {}, "base", "0" * 64).close()  # a project table without the settings
    assert _error(capsys, "request", "list", "--project", str(other)) == (
        f"{other / LEDGER_FILE} is not an obliviate ledger (no project settings){NOT_A_LEDGER}")


# ---------------------------------------------------------------------------- 4. keyed hashes
def test_item_hashes_are_keyed_over_every_measured_field(project, tmp_path, capsys):
    key_path = project.root / KEY_FILE
    key = key_path.read_bytes()
    assert len(key) == KEY_BYTES and stat.S_IMODE(key_path.stat().st_mode) & 0o077 == 0
    ex = load_examples(project.forget)[0]
    # by hand: HMAC-SHA256 of the documented message, every field normalised, as a JSON array
    message = (b'["obliviate.item/1","dana-1","What is Dana Reyes\'s phone number?",'
               b'"It is 555-0134.","Which number reaches Dana Reyes?","Her number is 555-0134.",'
               b'["It is 555-0199.","It is 555-0777."],"dana","phone"]')
    assert item_message(ex) == message
    with Ledger.open(project.root) as ledger:
        hasher = ledger.hasher
        assert hasher.scheme == KEYED
        assert hasher.item(ex) == hmac.new(key, message, hashlib.sha256).hexdigest()
        assert ledger.item_hashes(1) == {hasher.item(x) for x in load_examples(project.forget)}
    spaced = replace(ex, question="  What is Dana  Reyes's\tphone number? ")
    assert hasher.item(spaced) == hasher.item(ex)  # normalised as before: spacing is no edit
    edits = {"perturbed answer": replace(ex, perturbed_answers=("It is 555-0199.", "It is 555-0778.")),
             "paraphrased answer": replace(ex, paraphrased_answer="Her number is 555-0135."),
             "paraphrased question": replace(ex, paraphrased_question="Which number is Dana's?"),
             "id": replace(ex, id="dana-2"), "entity": replace(ex, entity="dan"),
             "relation": replace(ex, relation="phone2"), "answer": replace(ex, answer="It is 555-0135."),
             "no paraphrase": replace(ex, paraphrased_answer=None)}
    hashes = {name: hasher.item(edited) for name, edited in edits.items()}
    assert hasher.item(ex) not in hashes.values() and len(set(hashes.values())) == len(edits)
    text = Example(answer="Dana Reyes, 555-0134.")
    assert hasher.item(text) != hasher.item(Example(answer="Dana Reyes, 555-0135."))

    # the same item under another project's key: unrelated hashes
    other = tmp_path / "other"
    assert _cli(capsys, "request", "init", "--project", str(other), "--model", str(project.model))[0] == 0
    with Ledger.open(other) as ledger2:
        assert ledger2.hasher.item(ex) != hasher.item(ex)
        assert ledger2.hasher.content(ex) != hasher.content(ex)

    # nothing in the ledger files can be matched against a guess without the key
    with Ledger.open(project.root) as ledger:
        ledger.conn.execute("PRAGMA wal_checkpoint(FULL)")
    raw = b"".join(p.read_bytes() for p in project.root.iterdir() if p.name.startswith(LEDGER_FILE))
    for x in load_examples(project.forget):
        unkeyed = [hashlib.sha256(m).hexdigest() for m in (item_message(x), content_message(x))]
        legacy = "\x1f".join([x.question or "", x.answer]).encode()
        unkeyed += [hashlib.sha256(legacy).hexdigest(), hashlib.sha256(x.answer.encode()).hexdigest()]
        assert not any(h.encode() in raw for h in unkeyed)
        assert x.question.encode() not in raw and x.answer.encode() not in raw


def test_without_its_key_a_project_cannot_apply_verify_or_add(project, capsys):
    (project.root / KEY_FILE).unlink()
    gone = (f"{project.root / KEY_FILE} is gone: this ledger's item hashes can no longer be "
            "linked to any file (that is what deleting the key does), so its requests cannot be "
            "added, applied or verified; restore the key from a backup, or create a new project")
    for command in (["apply"], ["verify", "1"], ["add", "--subject", "t", "--forget", str(project.forget)]):
        assert _error(capsys, "request", *command, "--project", str(project.root)) == gone
    rc, out, _ = _cli(capsys, "request", "list", "--project", str(project.root))
    assert rc == 0 and "ticket 1" in out and " pending " in out  # the history stays readable
    with Ledger.open(project.root) as ledger:
        assert ledger.request(1).attempts == 0  # apply stopped before touching the request


def _v2_ledger(root: Path, forget: Path) -> None:
    """A ledger as schema 2 wrote it: the released migrations, unkeyed item hashes."""
    root.mkdir()
    conn = sqlite3.connect(root / LEDGER_FILE, isolation_level=None)
    for migration in MIGRATIONS[:2]:
        for statement in migration.split(";"):
            if statement.strip():
                conn.execute(statement)
    conn.execute("PRAGMA user_version = 2")
    items = load_examples(forget)
    hashes = [hashlib.sha256(f"{x.question}\x1f{x.answer}".encode()).hexdigest() for x in items]
    file_digest = hashlib.sha256("\n".join(sorted(hashes)).encode()).hexdigest()
    conn.execute("INSERT INTO project VALUES ('settings', '{}')")
    conn.execute("INSERT INTO versions VALUES (0, NULL, NULL, '/base', ?, 'x', '{}')", ("0" * 64,))
    conn.execute("INSERT INTO versions VALUES (1, 0, 1, 'versions/v0001/model', ?, 'x', '{}')",
                 ("1" * 64,))
    conn.execute("INSERT INTO requests (subject, created_at, status, forget_path, forget_digest, "
                 "n_items, method, overrides, version_id) VALUES ('old ticket', 'x', 'done', ?, ?, ?, "
                 "'npo', '[]', 1)", (str(forget), file_digest, len(items)))
    conn.executemany("INSERT INTO request_items VALUES (1, ?)", [(h,) for h in hashes])
    conn.close()


def test_a_schema_2_ledger_keeps_its_unkeyed_hashes_and_says_so(project, tmp_path, capsys):
    old = tmp_path / "old"
    _v2_ledger(old, project.forget)
    with Ledger.open(old) as ledger:
        assert ledger.hasher.scheme == LEGACY and ledger.settings()["hash_scheme"] == LEGACY
        req = ledger.request(1)
        assert len(verified_forget(ledger, req)) == len(ITEMS)  # the file still checks out
        retain = _jsonl(tmp_path / "retain.jsonl", [ITEMS[1], {"question": "q", "answer": "a"}])
        settings = SimpleNamespace(retain=str(retain))
        kept, dropped = retain_items(ledger, settings, None, forgotten_hashes(ledger))
        assert dropped == 1 and [x.question for x in kept] == ["q"]  # forgotten items dropped
    rc, out, _ = _cli(capsys, "request", "list", "--project", str(old))
    assert rc == 0 and "old ticket" in out and out.count(LEGACY_NOTE) == 1
    rc, out, _ = _cli(capsys, "request", "list", "--project", str(project.root))
    assert rc == 0 and LEGACY_NOTE not in out  # a new project is keyed


# ---------------------------------------------------------------------------- 5. failed requests
def test_a_failed_request_stops_the_next_plain_apply(project, capsys):
    proj = str(project.root)
    project.forget.rename(project.tmp / "moved.jsonl")
    first = _error(capsys, "request", "apply", "--project", proj)
    assert first == f"request 1 failed: forget file not found: {project.forget}"
    stop = (f"request 1 failed: forget file not found: {project.forget}; retry it with "
            "`obliviate request apply 1` or cancel it with `obliviate request cancel 1`")
    assert _error(capsys, "request", "apply", "--project", proj) == stop
    assert _error(capsys, "request", "apply", "--all", "--project", proj) == stop
    with Ledger.open(project.root) as ledger:
        assert ledger.request(1).attempts == 1  # nothing was retried silently
    assert _error(capsys, "request", "apply", "1", "--project", proj) == first  # named: retried
    with Ledger.open(project.root) as ledger:
        assert ledger.request(1).attempts == 2
    assert _cli(capsys, "request", "cancel", "1", "--project", proj)[0] == 0
    rc, out, _ = _cli(capsys, "request", "apply", "--project", proj)
    assert rc == 0 and "no pending requests" in out


# ---------------------------------------------------------------------------- 6. escapes
def test_terminal_escapes_in_user_text_are_printed_escaped(project, capsys):
    proj = str(project.root)
    subject = "\x1b[31mred\x1b[0m \u202etxt.exe\x07"
    assert _cli(capsys, "request", "add", "--project", proj, "--subject", subject,
                "--forget", str(project.forget))[0] == 0
    with Ledger.open(project.root) as ledger:
        assert ledger.request(2).subject == subject  # stored as given, escaped when shown
        ledger.set_status(2, "failed", "bad \x1b]0;owned\x07 title")
    shown = r"\x1b[31mred\x1b[0m \u202etxt.exe\x07"
    rc, out, _ = _cli(capsys, "request", "list", "--project", proj)
    assert rc == 0 and shown in out and r"bad \x1b]0;owned\x07 title" in out
    rc, out2, _ = _cli(capsys, "request", "show", "2", "--project", proj)
    assert rc == 0 and f"request 2: {shown}" in out2
    for text in (out, out2):
        assert not any(ch in text for ch in "\x1b\x07\u202e")
    assert printable("tab\there\nnewline é ✓") == r"tab\x09here\x0anewline é ✓"
