"""The deletion-request ledger: one SQLite file per project directory.

What it keeps: each request's subject label, a keyed hash of every forget item (never the text
itself; see `hashing`), the model versions (version 0 is the base, never modified), the
measurements of every version on every past request, and an event log. SQLite in WAL mode with
`synchronous=FULL`: every state change is one transaction, so a killed process leaves the
ledger as it was before that transaction or after it, never between. Long work (unlearning,
evaluation) happens outside transactions; `apply` holds an OS file lock instead, which the
kernel releases when the process dies, so a crash never leaves a stale lock behind.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import hashlib
import json
import os
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import ObliviateError
from ..systems import BASE, is_system
from .hashing import KEYED, Hasher, create_key, read_key
from .paths import (
    KEY_FILE,
    LEDGER_FILE,
    LOCK_FILE,
    SQLITE_SIDE_FILES,
    open_nofollow,
    refuse_symlinks,
    remove,
)
from .schema import MIGRATIONS, SCHEMA_VERSION, check_sqlite_header, not_a_ledger

STATUSES = ("pending", "done", "failed", "cancelled")

class LedgerBusy(ObliviateError):
    """Another process holds the ledger's apply lock."""


def now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


# ---------------------------------------------------------------------------- files
def file_sha256(path: Path, chunk: int = 1 << 22) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def weights_sha256(model: Path) -> str:
    """SHA-256 over a model's weight files (relative name and content, in name order): a
    folder's safetensors (or GGUF) files, or one .gguf file; for an unlearned system, its
    components and its base's weights."""
    model = Path(model)
    files = ([model] if model.is_file() else
             sorted(model.glob("*.safetensors")) or sorted(model.glob("*.gguf")))
    if model.is_dir() and (model / BASE / "config.json").is_file() and is_system(model):
        files += sorted((model / BASE).glob("*.safetensors"))
    if not files:
        raise ObliviateError(f"{model}: no *.safetensors or *.gguf weights")
    h = hashlib.sha256()
    for f in files:
        name = f.name if f.parent == model or model.is_file() else f.relative_to(model).as_posix()
        h.update(name.encode() + b"\0" + file_sha256(f).encode())
    return h.hexdigest()


# ---------------------------------------------------------------------------- records
@dataclass(frozen=True)
class Request:
    id: int
    subject: str
    created_at: str
    status: str
    forget_path: str
    forget_digest: str
    n_items: int
    retain_path: str | None
    retain_digest: str | None
    method: str
    overrides: list[str]
    error: str | None
    attempts: int
    version_id: int | None


@dataclass(frozen=True)
class Version:
    id: int
    parent_id: int | None
    request_id: int | None
    path: str
    weights_sha256: str
    created_at: str
    summary: dict[str, Any]


class Ledger:
    """The ledger of one project directory. Open with `Ledger.open(dir)` (migrates) or
    `Ledger.create(dir, ...)`."""

    def __init__(self, root: Path, conn: sqlite3.Connection):
        self.root, self.conn = root, conn
        self.hasher = Hasher(KEYED, None, root / KEY_FILE)

    # ------------------------------------------------------------------ open / create
    @staticmethod
    def _connect(path: Path, new: bool = False) -> sqlite3.Connection:
        # autocommit mode: transactions are explicit (BEGIN IMMEDIATE in `transaction`)
        conn = sqlite3.connect(path, timeout=10.0, isolation_level=None)
        conn.row_factory = sqlite3.Row
        if not new and conn.execute("PRAGMA user_version").fetchone()[0] == 0:
            conn.close()  # someone else's database: change nothing in it, not even its journal
            raise ObliviateError(not_a_ledger(path, "an SQLite database without the ledger's "
                                                     "tables"))
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute("PRAGMA foreign_keys=ON")
        return conn

    @classmethod
    def open(cls, root: str | Path) -> Ledger:
        """Open (and migrate) a project's ledger; refuses symlinked project paths, a file that
        is not a ledger, and a ledger without its settings."""
        root = Path(root)
        path = root / LEDGER_FILE
        refuse_symlinks(root)
        if not path.is_file():
            raise ObliviateError(f"no ledger in {root}: run `obliviate request init --project "
                                 f"{root} --model BASE` first")
        check_sqlite_header(path)
        try:
            ledger = cls(root, cls._connect(path))
            ledger.migrate()
            if "settings" not in ledger.settings():
                ledger.close()
                raise ObliviateError(not_a_ledger(path, "no project settings"))
        except sqlite3.DatabaseError as exc:
            raise ObliviateError(f"{path}: not a readable ledger ({exc})") from None
        scheme = ledger.settings()["hash_scheme"]
        ledger.hasher = Hasher(scheme, read_key(root) if scheme == KEYED else None, root / KEY_FILE)
        return ledger

    @classmethod
    def create(cls, root: str | Path, settings: dict[str, Any], base_path: str,
               base_sha: str) -> Ledger:
        """A new ledger with version 0 = the base model, and the project's new hash key."""
        root = Path(root)
        path = root / LEDGER_FILE
        if path.exists() or path.is_symlink():
            raise ObliviateError(f"{root} already has a ledger ({path.name})")
        root.mkdir(parents=True, exist_ok=True)
        refuse_symlinks(root)
        key = create_key(root)
        ledger = None
        try:
            ledger = cls(root, cls._connect(path, new=True))
            ledger.migrate()
            ledger.hasher = Hasher(KEYED, key, root / KEY_FILE)
            with ledger.transaction() as c:
                for name, value in {**settings, "hash_scheme": KEYED}.items():
                    c.execute("INSERT OR REPLACE INTO project VALUES (?, ?)",
                              (name, json.dumps(value)))
                c.execute("INSERT INTO versions VALUES (0, NULL, NULL, ?, ?, ?, ?)",
                          (base_path, base_sha, now(), json.dumps({"note": "the base model"})))
                ledger._event(c, None, "init", f"base model {base_path} (weights {base_sha[:12]})")
        except BaseException:
            if ledger is not None:
                ledger.close()
            for name in (LEDGER_FILE, *SQLITE_SIDE_FILES, KEY_FILE):  # init can run again
                remove(root / name, ignore_errors=True)
            raise
        return ledger

    def close(self) -> None:
        self.conn.close()

    def __enter__(self) -> Ledger:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def schema_version(self) -> int:
        return self.conn.execute("PRAGMA user_version").fetchone()[0]

    def migrate(self) -> None:
        """Bring the schema to SCHEMA_VERSION, one transaction per step."""
        current = self.schema_version()
        if current > SCHEMA_VERSION:
            raise ObliviateError(f"this ledger has schema version {current}, newer than this "
                                 f"obliviate knows ({SCHEMA_VERSION}): upgrade obliviate")
        for version in range(current, SCHEMA_VERSION):
            with self.transaction() as c:
                for statement in MIGRATIONS[version].split(";"):
                    if statement.strip():
                        c.execute(statement)
                c.execute(f"PRAGMA user_version = {version + 1}")

    @contextlib.contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """BEGIN IMMEDIATE ... COMMIT, rolled back on any exception."""
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            yield self.conn
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise
        self.conn.execute("COMMIT")

    @contextlib.contextmanager
    def apply_lock(self) -> Iterator[None]:
        """An exclusive, non-blocking lock for work that changes versions (apply, verify).
        flock is released by the kernel when the holder dies, so SIGKILL leaves no stale lock."""
        import fcntl

        fd = open_nofollow(self.root / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "unknown"
                raise LedgerBusy(f"ledger busy: another obliviate process (pid {holder}) is applying "
                                 f"or verifying requests in {self.root}; wait for it to finish "
                                 "and run the command again") from None
            os.ftruncate(fd, 0)
            os.pwrite(fd, str(os.getpid()).encode(), 0)
            yield
        finally:
            os.close(fd)  # closing the descriptor releases the lock

    # ------------------------------------------------------------------ project settings
    def settings(self) -> dict[str, Any]:
        return {r["key"]: json.loads(r["value"]) for r in self.conn.execute("SELECT * FROM project")}

    # ------------------------------------------------------------------ requests
    def add_request(self, subject: str, forget_path: str, hashes: list[str],
                    retain_path: str | None, retain_digest: str | None, method: str,
                    overrides: list[str], contents: list[str] | None = None) -> int:
        """Record a pending request from its items' hashes (`contents`: their content hashes,
        in the same order; the item hashes when not given)."""
        pairs = dict(zip(hashes, contents if contents is not None else hashes, strict=True))
        with self.transaction() as c:
            cur = c.execute(
                "INSERT INTO requests (subject, created_at, status, forget_path, forget_digest, "
                "n_items, retain_path, retain_digest, method, overrides) "
                "VALUES (?, ?, 'pending', ?, ?, ?, ?, ?, ?, ?)",
                (subject, now(), forget_path, self.hasher.digest(hashes), len(hashes), retain_path,
                 retain_digest, method, json.dumps(overrides)))
            rid = cur.lastrowid
            c.executemany("INSERT INTO request_items (request_id, sha256, content_hash) "
                          "VALUES (?, ?, ?)", [(rid, h, pairs[h]) for h in sorted(pairs)])
            self._event(c, rid, "add", f"{len(hashes)} forget items, method {method}")
        return rid

    @staticmethod
    def _request(row: sqlite3.Row) -> Request:
        d = dict(row)
        d["overrides"] = json.loads(d["overrides"])
        return Request(**d)

    def request(self, rid: int) -> Request:
        row = self.conn.execute("SELECT * FROM requests WHERE id = ?", (rid,)).fetchone()
        if row is None:
            raise ObliviateError(f"no request {rid} in this ledger")
        return self._request(row)

    def requests(self) -> list[Request]:
        return [self._request(r) for r in self.conn.execute("SELECT * FROM requests ORDER BY id")]

    def item_hashes(self, rid: int) -> set[str]:
        return {r[0] for r in self.conn.execute(
            "SELECT sha256 FROM request_items WHERE request_id = ?", (rid,))}

    def content_hashes(self, rid: int) -> set[str]:
        """What training would read of the request's items (see `hashing`)."""
        return {r[0] for r in self.conn.execute(
            "SELECT content_hash FROM request_items WHERE request_id = ?", (rid,))}

    def set_status(self, rid: int, status: str, error: str | None = None, event: str = "") -> None:
        with self.transaction() as c:
            c.execute("UPDATE requests SET status = ?, error = ? WHERE id = ?", (status, error, rid))
            self._event(c, rid, status, event or error or "")

    def start_attempt(self, rid: int) -> None:
        with self.transaction() as c:
            c.execute("UPDATE requests SET attempts = attempts + 1 WHERE id = ?", (rid,))
            self._event(c, rid, "apply", "started")

    # ------------------------------------------------------------------ versions
    @staticmethod
    def _version(row: sqlite3.Row) -> Version:
        d = dict(row)
        d["summary"] = json.loads(d["summary"])
        return Version(**d)

    def versions(self) -> list[Version]:
        return [self._version(r) for r in self.conn.execute("SELECT * FROM versions ORDER BY id")]

    def version(self, vid: int) -> Version:
        row = self.conn.execute("SELECT * FROM versions WHERE id = ?", (vid,)).fetchone()
        if row is None:
            raise ObliviateError(f"no version {vid} in this ledger")
        return self._version(row)

    def latest_version(self) -> Version:
        return self._version(self.conn.execute(
            "SELECT * FROM versions ORDER BY id DESC LIMIT 1").fetchone())

    def model_path(self, v: Version) -> Path:
        """Versions made by the ledger are stored relative to the project directory."""
        p = Path(v.path)
        return p if p.is_absolute() else self.root / p

    def record_version(self, rid: int, parent_id: int, path: str, sha: str,
                       summary: dict[str, Any], measurements: dict[tuple[int, int], dict[str, Any]]) -> int:
        """The one transaction that makes a request done: the version row, its measurements
        and the request's status commit together or not at all."""
        with self.transaction() as c:
            vid = c.execute("INSERT INTO versions (parent_id, request_id, path, weights_sha256, "
                            "created_at, summary) VALUES (?, ?, ?, ?, ?, ?)",
                            (parent_id, rid, path, sha, now(), json.dumps(summary))).lastrowid
            self._put_measurements(c, measurements, vid)
            c.execute("UPDATE requests SET status = 'done', error = NULL, version_id = ? WHERE id = ?",
                      (vid, rid))
            self._event(c, rid, "done", f"version {vid}")
        return vid

    # ------------------------------------------------------------------ measurements
    @staticmethod
    def _put_measurements(c: sqlite3.Connection, measurements: dict[tuple[int, int], dict[str, Any]],
                          new_vid: int | None = None) -> None:
        rows = []
        for (vid, rid), metrics in measurements.items():
            vid = new_vid if vid == -1 else vid  # -1: the version being recorded
            for metric, value in metrics.items():
                number = isinstance(value, int | float) and not isinstance(value, bool)
                rows.append((vid, rid, metric, float(value) if number else None,
                             None if number else str(value)))
        c.executemany("INSERT OR REPLACE INTO measurements VALUES (?, ?, ?, ?, ?)", rows)

    def measurements(self) -> dict[tuple[int, int], dict[str, float | str]]:
        """{(version, request): {metric: value or 'not computed: ...'}}; request 0 = model-level."""
        out: dict[tuple[int, int], dict[str, float | str]] = {}
        for r in self.conn.execute("SELECT * FROM measurements ORDER BY version_id, request_id"):
            out.setdefault((r["version_id"], r["request_id"]), {})[r["metric"]] = (
                r["value"] if r["note"] is None else r["note"])
        return out

    # ------------------------------------------------------------------ events
    @staticmethod
    def _event(c: sqlite3.Connection, rid: int | None, kind: str, detail: str) -> None:
        c.execute("INSERT INTO events (at, request_id, kind, detail) VALUES (?, ?, ?, ?)",
                  (now(), rid, kind, detail))

    def event(self, rid: int | None, kind: str, detail: str) -> None:
        with self.transaction() as c:
            self._event(c, rid, kind, detail)

    def events(self, rid: int | None = None) -> list[dict[str, Any]]:
        q, args = "SELECT * FROM events", ()
        if rid is not None:
            q, args = q + " WHERE request_id = ?", (rid,)
        return [dict(r) for r in self.conn.execute(q + " ORDER BY id", args)]

    def check(self) -> list[str]:
        """Consistency problems (empty when consistent): SQLite's own integrity check, done
        requests without a version, versions whose folder or weights are missing or changed."""
        problems = []
        integrity = self.conn.execute("PRAGMA integrity_check").fetchone()[0]
        if integrity != "ok":
            problems.append(f"sqlite integrity: {integrity}")
        for r in self.requests():
            if (r.status == "done") != (r.version_id is not None):
                problems.append(f"request {r.id} is {r.status} with version {r.version_id}")
        for v in self.versions():
            path = self.model_path(v)
            if not path.exists():
                problems.append(f"version {v.id}: {path} is missing")
            elif v.id > 0 and not (path.parent / "manifest.json").is_file():
                problems.append(f"version {v.id}: no manifest beside {path}")
        return problems
