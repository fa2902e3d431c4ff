"""Atomic outputs: write into a sibling temp folder or file, then rename into place.

A crash or Ctrl-C leaves either the complete output or nothing (plus a `.tmp-<name>-<pid>-*`
entry that the next write of the same output removes once its process is gone), and an
existing output is never half-overwritten. Files and folders are fsynced before the rename
and the parent folder after it, so a power loss cannot leave a renamed but empty file.
Outputs are created with the user's umask (mode 0666 / 0777 less the umask), like any file
the user makes. `check_output` refuses an output that would overwrite an input.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import secrets
import shutil
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

from .errors import ObliviateError

InputPath = str | Path | None
Inputs = Mapping[str, InputPath | Sequence[InputPath]]


# ---------------------------------------------------------------------------- output checks
def check_output(path: str | Path, inputs: Inputs, kind: Literal["file", "dir"] = "file",
                 files: Sequence[str] = ()) -> None:
    """Refuse an output that is, is inside, or resolves (through any symlink) into an input.

    `inputs` maps a description ("model", "reference results") to paths (or lists of them);
    empty and missing ones are skipped, as they cannot be overwritten. kind="file": one file.
    kind="dir": a folder made whole (it must not hold an input either) or, with `files`, an
    existing folder that gets only those files (a report beside its results)."""
    path = Path(path)
    _check_parents(path)
    if kind == "file" and path.is_dir():
        raise ObliviateError(f"output {path} is a directory; give a file path")
    if kind == "dir" and os.path.lexists(path) and not path.is_dir():
        raise ObliviateError(f"output {path} is a file; give a folder path")
    outputs = [path / f for f in files] if files else [path]
    for name, given in _flatten(inputs):
        for out in outputs:
            if _overlaps(out, given, whole_dir=kind == "dir" and not files):
                real = Path(os.path.realpath(out))
                via = "" if real == Path(os.path.abspath(out)) else f" (it resolves to {real})"
                raise ObliviateError(f"output {out} would overwrite the input {name} {given}{via}; "
                                     "choose another output path")


def _check_parents(path: Path) -> None:
    """The nearest existing parent must be a folder (a link to one is fine)."""
    for parent in path.parents:
        if parent.is_dir():
            return
        if os.path.lexists(parent):
            what = "a file" if parent.is_file() else "not a folder"
            raise ObliviateError(f"cannot create {path}: {parent} is {what}")


def _flatten(inputs: Inputs) -> Iterator[tuple[str, Path]]:
    for name, value in inputs.items():
        values = value if isinstance(value, list | tuple) else [value]
        for v in values:
            if v and os.path.lexists(v):  # a hub id or a missing file cannot be overwritten
                yield name, Path(v)


def _overlaps(out: Path, given: Path, whole_dir: bool) -> bool:
    """By resolved path (symlinks of the output, the input or any parent) and by identity
    (st_dev, st_ino) of the output's existing ancestors (bind mounts, hard links)."""
    real, inp = Path(os.path.realpath(out)), Path(os.path.realpath(given))
    if real == inp or inp in real.parents or (whole_dir and real in inp.parents):
        return True
    ident = _identity(inp)
    return ident is not None and any(_identity(p) == ident for p in (real, *real.parents))


def _identity(path: Path) -> tuple[int, int] | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return st.st_dev, st.st_ino


# ---------------------------------------------------------------------------- atomic writes
@contextlib.contextmanager
def atomic_dir(target: str | Path, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temp folder next to `target`; on success it becomes `target`."""
    target = Path(target)
    check_output(target, {}, kind="dir")
    target.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale(target)
    if target.exists() and not overwrite:
        raise ObliviateError(f"output {target} already exists; choose a new path or remove it")
    tmp, _ = _make_temp(target, lambda p: os.mkdir(p, 0o777))  # 0777 less the umask
    try:
        yield tmp
        _fsync_tree(tmp)
        if target.exists():  # overwrite=True: swap, keeping the old one until the new is in
            old = target.with_name(f".old-{target.name}-{os.getpid()}")
            target.rename(old)
            tmp.rename(target)
            _fsync_dir(target.parent)
            shutil.rmtree(old, ignore_errors=True)
        else:
            tmp.rename(target)
            _fsync_dir(target.parent)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def write_json_atomic(path: str | Path, obj: Any) -> Path:
    """Write JSON through a temp file and os.replace (atomic on POSIX). A non-finite value
    (an overflowed ratio of a collapsed model) is kept as Infinity/NaN rather than lost."""
    text = json.dumps(obj, indent=1, sort_keys=True, ensure_ascii=False)
    return write_text_atomic(path, text + "\n")


def write_text_atomic(path: str | Path, text: str) -> Path:
    path = Path(path)
    check_output(path, {})
    path.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale(path)
    # O_EXCL never follows a planted link; mode 0666 less the umask, as for any new file
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
    tmp, fd = _make_temp(path, lambda p: os.open(p, flags, 0o666))
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    _fsync_dir(path.parent)
    return path


def _make_temp(target: Path, create: Callable[[Path], Any]) -> tuple[Path, Any]:
    """`create` a new `.tmp-<name>-<pid>-<8 hex>` beside `target`: the pid tells a later run
    whether its owner is gone, and the fixed-length suffix keeps `<name>` unambiguous."""
    while True:
        tmp = target.with_name(f".tmp-{target.name}-{os.getpid()}-{secrets.token_hex(4)}")
        try:
            return tmp, create(tmp)
        except FileExistsError:
            continue


def _remove_stale(target: Path) -> None:
    """Remove the temp entries of `target` left by a process that no longer runs (killed
    during a write). A left `.old-` folder is the previous output: it is dropped once the new
    one is in place, and put back if a crash came between the two renames."""
    name = re.escape(target.name)
    pattern = re.compile(rf"\.(tmp)-{name}-(\d+)-[0-9a-f]{{8}}|\.(old)-{name}-(\d+)")
    for entry in target.parent.iterdir():
        m = pattern.fullmatch(entry.name)
        if m is None or _alive(int(m.group(2) or m.group(4))):
            continue
        with contextlib.suppress(FileNotFoundError):  # another run may be cleaning up too
            if m.group(3) and not os.path.lexists(target) and not entry.is_symlink():
                entry.rename(target)
            elif entry.is_symlink() or not entry.is_dir():
                entry.unlink()  # the link itself, never what it points to
            else:
                shutil.rmtree(entry, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    except OverflowError:  # not a pid this system can have
        return False
    return True


def _fsync_tree(root: Path) -> None:
    """fsync every file and folder under `root` (files before the folders that list them)."""
    for folder, _, names in os.walk(root, topdown=False):
        for name in names:
            p = os.path.join(folder, name)
            if not os.path.islink(p):
                fd = os.open(p, os.O_RDONLY)
                try:
                    os.fsync(fd)
                finally:
                    os.close(fd)
        _fsync_dir(Path(folder))


def _fsync_dir(folder: Path) -> None:
    """Make a rename durable. Some file systems cannot fsync a folder; that is not an error."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    except OSError as exc:
        if exc.errno not in (errno.EINVAL, errno.ENOTSUP, errno.EBADF):
            raise
    finally:
        os.close(fd)


def ensure_not_inside(output: Path, protected: Path, what: str) -> None:
    """Refuse an output path equal to or inside an input (never overwrite an input model)."""
    out, prot = output.resolve(), protected.resolve()
    if out == prot or prot in out.parents:
        raise ObliviateError(f"output {output} would overwrite the input {what} {protected}")
