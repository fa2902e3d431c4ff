"""The ledger's schema, migrated forward on open, and what a ledger file must look like."""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import ObliviateError
from .hashing import LEGACY
from .paths import open_nofollow

# Each entry upgrades the schema by one version; a ledger is migrated forward on open, inside
# one transaction per step. Never edit a released step: append a new one.
MIGRATIONS: list[str] = [
    # 1: requests, their item hashes, model versions, the event log
    """
    CREATE TABLE project (key TEXT PRIMARY KEY, value TEXT NOT NULL);
    CREATE TABLE requests (
        id INTEGER PRIMARY KEY,
        subject TEXT NOT NULL,
        created_at TEXT NOT NULL,
        status TEXT NOT NULL CHECK (status IN ('pending', 'done', 'failed', 'cancelled')),
        forget_path TEXT NOT NULL,
        forget_digest TEXT NOT NULL,
        n_items INTEGER NOT NULL,
        retain_path TEXT,
        retain_digest TEXT,
        method TEXT NOT NULL,
        overrides TEXT NOT NULL,
        error TEXT,
        attempts INTEGER NOT NULL DEFAULT 0,
        version_id INTEGER REFERENCES versions(id)
    );
    CREATE TABLE request_items (
        request_id INTEGER NOT NULL REFERENCES requests(id),
        sha256 TEXT NOT NULL,
        PRIMARY KEY (request_id, sha256)
    );
    CREATE TABLE versions (
        id INTEGER PRIMARY KEY,
        parent_id INTEGER REFERENCES versions(id),
        request_id INTEGER REFERENCES requests(id),
        path TEXT NOT NULL,
        weights_sha256 TEXT NOT NULL,
        created_at TEXT NOT NULL,
        summary TEXT NOT NULL
    );
    CREATE TABLE events (
        id INTEGER PRIMARY KEY,
        at TEXT NOT NULL,
        request_id INTEGER,
        kind TEXT NOT NULL,
        detail TEXT NOT NULL
    );
    """,
    # 2: per-(version, request) measurements, so forgetting is tracked across versions
    """
    CREATE TABLE measurements (
        version_id INTEGER NOT NULL REFERENCES versions(id),
        request_id INTEGER NOT NULL,  -- 0: a model-level number (utility)
        metric TEXT NOT NULL,
        value REAL,
        note TEXT,
        PRIMARY KEY (version_id, request_id, metric)
    );
    """,
    # 3: the item hash scheme. Ledgers made so far hash without a key ('sha256': question and
    # answer only, so their item and content hashes are the same); `create` then records the
    # keyed scheme for a new ledger.
    f"""
    ALTER TABLE request_items ADD COLUMN content_hash TEXT;
    UPDATE request_items SET content_hash = sha256;
    INSERT OR REPLACE INTO project VALUES ('hash_scheme', '"{LEGACY}"');
    """,
]
SCHEMA_VERSION = len(MIGRATIONS)


def not_a_ledger(path: Path, why: str) -> str:
    return (f"{path} is not an obliviate ledger ({why}); pass the right --project, or move the "
            "file away and run `obliviate request init`")


def check_sqlite_header(path: Path) -> None:
    """Refuse an empty or non-SQLite file before SQLite turns it into a fresh database."""
    fd = open_nofollow(path, os.O_RDONLY, one_link=False)
    try:
        header = os.read(fd, 16)
    finally:
        os.close(fd)
    if not header:
        raise ObliviateError(not_a_ledger(path, "empty file"))
    if header != b"SQLite format 3\x00":
        raise ObliviateError(not_a_ledger(path, "not an SQLite database"))
