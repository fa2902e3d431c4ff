"""Atomic outputs: write into a sibling temp folder, then rename into place.

A crash or Ctrl-C leaves either the complete output or nothing (plus a `.tmp-*` folder that
the next run removes), and an existing output is never half-overwritten.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .errors import ObliviateError


@contextlib.contextmanager
def atomic_dir(target: str | Path, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temp folder next to `target`; on success it becomes `target`."""
    target = Path(target)
    if target.exists() and not overwrite:
        raise ObliviateError(f"output {target} already exists; choose a new path or remove it")
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{target.name}-", dir=target.parent))
    try:
        yield tmp
        if target.exists():  # overwrite=True: swap, keeping the old one until the new is in
            old = target.with_name(f".old-{target.name}-{os.getpid()}")
            target.rename(old)
            tmp.rename(target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            tmp.rename(target)
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
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    return path


def ensure_not_inside(output: Path, protected: Path, what: str) -> None:
    """Refuse an output path equal to or inside an input (never overwrite an input model)."""
    out, prot = output.resolve(), protected.resolve()
    if out == prot or prot in out.parents:
        raise ObliviateError(f"output {output} would overwrite the input {what} {protected}")
