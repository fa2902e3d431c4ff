"""Item hashes: how the ledger recognises a forget item without keeping its text.

A new project hashes with HMAC-SHA256 under its own secret, 32 random bytes in
`PROJECT/obliviate-ledger.key` (created by `init`, mode 0600). Without the key a hash reveals
nothing about its item, not even to someone who guesses the text: an unkeyed SHA-256 of a
short answer ("It is 555-0134.") falls to a few hundred guesses. With the key, anyone can test
a guess, so the key is as sensitive as the forget files. Deleting it makes the recorded hashes
unlinkable to any file for good: the ledger's history stays, but its requests can no longer
be applied or verified.

The item hash covers every field of an item that a measurement reads, each normalised
(NFKC, whitespace runs collapsed, trimmed; absent fields null), as a compact JSON array:

    hmac_sha256(key, json.dumps(["obliviate.item/1", id, question, answer,
        paraphrased_question, paraphrased_answer, [perturbed answers...], entity, relation],
        separators=(",", ":")).encode())          # ensure_ascii: pure ASCII, unambiguous

A plain text item has question null and its text as answer. The content hash covers only what
training reads (question and answer, the same array headed "obliviate.content/1"): retain items
are dropped when their content matches a forgotten item, whatever their id or paraphrases.
The digest of a file is the HMAC of ["obliviate.digest/1", sorted item hashes...].

Ledgers made before keyed hashes (hash scheme "sha256") keep their unkeyed hashes: SHA-256 of
the normalised question and answer joined by 0x1f, for items and content alike.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from ..data.examples import Example
from ..errors import ObliviateError
from .paths import KEY_FILE, fsync_dir, open_nofollow

KEYED = "hmac-sha256"
LEGACY = "sha256"
KEY_BYTES = 32


def normalise(text: str) -> str:
    """NFKC, whitespace runs collapsed to one space, trimmed: an edit that only changes
    spacing or Unicode composition is the same item; any other edit is a different one."""
    return " ".join(unicodedata.normalize("NFKC", text).split())


def _norm(value):
    """A field's normalised value: text normalised, None (absent) and other JSON values as is."""
    return normalise(value) if isinstance(value, str) else value


def _message(fields: list) -> bytes:
    return json.dumps(fields, separators=(",", ":")).encode("ascii")


def item_message(ex: Example) -> bytes:
    """The bytes an item hash is the HMAC of (see the module docstring)."""
    return _message(["obliviate.item/1", _norm(ex.id), _norm(ex.question), _norm(ex.answer),
                     _norm(ex.paraphrased_question), _norm(ex.paraphrased_answer),
                     [_norm(p) for p in ex.perturbed_answers], _norm(ex.entity),
                     _norm(ex.relation)])


def content_message(ex: Example) -> bytes:
    """The bytes a content hash is the HMAC of: what training reads of an item."""
    return _message(["obliviate.content/1", _norm(ex.question), _norm(ex.answer)])


def legacy_hash(ex: Example) -> str:
    """The unkeyed hash of schema-2 ledgers: SHA-256 of question 0x1f answer, normalised."""
    parts = [normalise(ex.question or ""), normalise(ex.answer)]
    return hashlib.sha256("\x1f".join(parts).encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class Hasher:
    """A project's item hashing: its scheme, and its key (None: unkeyed, or the key is gone)."""

    scheme: str
    key: bytes | None
    key_path: Path

    def _key(self) -> bytes:
        if self.key is None:
            raise ObliviateError(
                f"{self.key_path} is gone: this ledger's item hashes can no longer be linked to "
                "any file (that is what deleting the key does), so its requests cannot be added, "
                "applied or verified; restore the key from a backup, or create a new project")
        return self.key

    def check(self) -> None:
        """Raise the clear error now when a keyed ledger lost its key."""
        if self.scheme == KEYED:
            self._key()

    def _mac(self, message: bytes) -> str:
        return hmac.new(self._key(), message, hashlib.sha256).hexdigest()

    def item(self, ex: Example) -> str:
        return legacy_hash(ex) if self.scheme == LEGACY else self._mac(item_message(ex))

    def content(self, ex: Example) -> str:
        return legacy_hash(ex) if self.scheme == LEGACY else self._mac(content_message(ex))

    def record(self, fields: list) -> str:
        """Keyed hash of a record given as JSON fields (a classifier sample: its id, the
        SHA-256 of its content and its label)."""
        return self._mac(_message(fields))

    def digest(self, hashes: Iterable[str]) -> str:
        """One digest of a set of items, independent of their order in the file."""
        ordered = sorted(hashes)
        if self.scheme == LEGACY:
            return hashlib.sha256("\n".join(ordered).encode("ascii")).hexdigest()
        return self._mac(_message(["obliviate.digest/1", *ordered]))


def create_key(root: Path) -> bytes:
    """Write a new project's secret: 32 random bytes, mode 0600, never over an existing file."""
    path = root / KEY_FILE
    try:
        fd = open_nofollow(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise ObliviateError(f"{path} already exists without a ledger beside it; restore the "
                             "ledger it belongs to, or remove it and run init again") from None
    key = secrets.token_bytes(KEY_BYTES)
    try:
        os.write(fd, key)
        os.fsync(fd)
    finally:
        os.close(fd)
    fsync_dir(root)
    return key


def read_key(root: Path) -> bytes | None:
    """The project's secret, or None when the file is gone."""
    path = root / KEY_FILE
    try:
        fd = open_nofollow(path, os.O_RDONLY, one_link=False)
    except FileNotFoundError:
        return None
    try:
        key = os.read(fd, KEY_BYTES + 1)
    finally:
        os.close(fd)
    if len(key) != KEY_BYTES:
        raise ObliviateError(f"{path} is not an obliviate key ({len(key)} bytes, expected "
                             f"{KEY_BYTES}); restore it from a backup")
    return key
