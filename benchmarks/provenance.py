"""What every benchmark result names: the commit it measured, whether the tree was clean,
when and on what machine. Results files without it cannot be matched to the code."""

from __future__ import annotations

import datetime as dt
import os
import platform
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _git(*args: str) -> str:
    try:
        res = subprocess.run(["git", *args], capture_output=True, text=True, cwd=ROOT, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return res.stdout.strip() if res.returncode == 0 else ""


def provenance() -> dict[str, object]:
    """Commit, tree state, date, CPU count and torch threads of this run."""
    import torch

    # results files are what benchmarks write: one benchmark's output does not make the next
    # one's code uncommitted
    dirty = bool(_git("status", "--porcelain", "--untracked-files=no", "--", "src", "benchmarks",
                      ":(exclude)benchmarks/results"))
    return {"commit": _git("rev-parse", "HEAD") or "unknown", "dirty": dirty,
            "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            "machine": f"{platform.machine()}, {os.cpu_count()} CPUs",
            "torch_threads": torch.get_num_threads()}


def line(p: dict[str, object]) -> str:
    """One Markdown line naming the commit measured."""
    state = "uncommitted changes in src/ or benchmarks/" if p["dirty"] else "clean tree"
    return (f"Measured on commit `{str(p['commit'])[:12]}` ({state}), {p['date']}, "
            f"{p['machine']}, torch threads {p['torch_threads']}.")
