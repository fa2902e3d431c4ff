"""A project directory's own paths, and the only ways the ledger opens or removes them.

Nothing the ledger writes or deletes may lie outside the project: a symlink planted at one of
its paths would otherwise make `apply` truncate or delete whatever it points to. So the
project's internal paths must not be symlinks (checked whenever the ledger is opened), files
are opened with O_NOFOLLOW, and removal unlinks a symlink itself, never its target.
"""

from __future__ import annotations

import errno
import os
import shutil
import stat
from pathlib import Path

from ..errors import ObliviateError

LEDGER_FILE = "obliviate-ledger.sqlite"
LOCK_FILE = "obliviate-ledger.lock"
KEY_FILE = "obliviate-ledger.key"
VERSIONS_DIR = "versions"
# SQLite's own files beside the ledger (WAL mode)
SQLITE_SIDE_FILES = (LEDGER_FILE + "-wal", LEDGER_FILE + "-shm")


def internal_paths(root: Path) -> list[Path]:
    """Every path inside the project the ledger opens, writes or removes."""
    names = [LEDGER_FILE, *SQLITE_SIDE_FILES, LOCK_FILE, KEY_FILE, VERSIONS_DIR]
    paths = [root / n for n in names]
    versions = root / VERSIONS_DIR
    if versions.is_dir() and not versions.is_symlink():
        paths += sorted(versions.iterdir())
    return paths


def refuse_symlinks(root: Path) -> None:
    """A project whose internal paths are symlinks could point `apply` at files elsewhere."""
    for path in internal_paths(root):
        if path.is_symlink():
            raise ObliviateError(f"{path} is a symlink; remove it")


def open_nofollow(path: Path, flags: int, mode: int = 0o600, one_link: bool = True) -> int:
    """os.open with O_NOFOLLOW; the descriptor must be a regular file (with one link when
    `one_link`), so writing to it cannot reach a file outside the project."""
    try:
        fd = os.open(path, flags | os.O_NOFOLLOW, mode)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise ObliviateError(f"{path} is a symlink; remove it") from None
        raise
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode) or (one_link and info.st_nlink != 1):
        os.close(fd)
        what = "not a regular file" if not stat.S_ISREG(info.st_mode) else "a hard link"
        raise ObliviateError(f"{path} is {what}; remove it")
    return fd


def remove(path: Path, ignore_errors: bool = False) -> None:
    """Remove a file or folder of the project; a symlink is unlinked, never followed."""
    try:
        if path.is_symlink() or not path.is_dir():
            path.unlink(missing_ok=True)
        else:  # rmtree unlinks symlinks inside the tree, it never follows them
            shutil.rmtree(path)
    except OSError:
        if not ignore_errors:
            raise


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
