"""How many CPU threads torch uses: the cores this process may run on, less those other
processes keep busy, unless OMP_NUM_THREADS says otherwise.

torch's default is one thread per core of the machine. When other processes share those cores
(a laptop, a shared server, two runs side by side) its threads wait on each other at every
operation: on a busy 2-core machine fine-tuning ran at 19 s/step with the default and about
1 step/s with one thread. So the count starts from the cores available to this process (CPU
affinity and a cgroup CPU quota, as containers set) and subtracts the machine's load at start
(the 1-minute load average, which counts runnable processes).

A long run re-checks (`Governor`): a job that starts beside it after it chose its threads
would otherwise meet threads that spin while they wait for each other. Making idle OpenMP
threads sleep instead (OMP_WAIT_POLICY=PASSIVE) was measured too and not taken: it cost a
quiet machine over 40% of a small model's training speed (benchmarks/threads.py).
"""

from __future__ import annotations

import math
import os
import sys
import time
from pathlib import Path

ENV = "OMP_NUM_THREADS"
# set by the user before obliviate was imported (configure may set it itself later)
USER_FIXED = os.environ.get(ENV, "").strip().isdigit()


CGROUP_CPU_MAX = Path("/sys/fs/cgroup/cpu.max")


def available_cores(cpu_max: Path = CGROUP_CPU_MAX) -> int:
    """Cores this process may use: its CPU affinity, capped by a cgroup v2 quota if any."""
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not on Linux
        cores = os.cpu_count() or 1
    try:
        quota, period = cpu_max.read_text().split()[:2]
        if quota != "max":
            cores = min(cores, max(1, math.floor(int(quota) / int(period))))
    except (OSError, ValueError):
        pass
    return max(1, cores)


def _cpu_times() -> tuple[int, int] | None:
    """(busy, total) jiffies of all CPUs since boot, from /proc/stat (Linux)."""
    try:
        fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    except (OSError, ValueError):
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    return sum(fields) - idle, sum(fields)


def busy_cores(window: float = 0.2) -> int:
    """Cores other processes keep busy now: the machine's CPU use over `window` seconds (this
    process sleeps meanwhile), rounded to whole cores. The load average would lag a minute
    behind: a stage started right after another would see the finished one as busy."""
    before = _cpu_times()
    if before is None:
        try:
            return int(os.getloadavg()[0])
        except (AttributeError, OSError):
            return 0
    time.sleep(window)
    after = _cpu_times()
    busy, total = after[0] - before[0], after[1] - before[1]
    if total <= 0:
        return 0
    return round(busy / total * (os.cpu_count() or 1))


def choose() -> int:
    """OMP_NUM_THREADS if set (a positive integer), else available minus busy cores, at least 1."""
    given = os.environ.get(ENV, "").strip()
    if given.isdigit() and int(given) > 0:
        return int(given)
    return max(1, available_cores() - busy_cores())


def configure() -> int:
    """Set torch's thread count (before torch loads: through OMP_NUM_THREADS, which torch and
    the BLAS libraries read at start; after: torch.set_num_threads). Returns the count."""
    n = choose()
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(n)
    else:
        os.environ.setdefault(ENV, str(n))
    return n


def _busy_seconds() -> float | None:
    """CPU seconds all processes have used since boot (/proc/stat), or None off Linux."""
    times = _cpu_times()
    return None if times is None else times[0] / os.sysconf("SC_CLK_TCK")


def _own_seconds() -> float:
    t = os.times()
    return t.user + t.system


class Governor:
    """Follows the machine's load during a long run: every `interval` seconds, the CPU time
    other processes used since the last check (the machine's, less this process's own) sets
    torch's threads to the cores they leave free, at least 1, up to the cores available.
    Checking costs two small reads, no sleep. Off when the user fixed OMP_NUM_THREADS."""

    def __init__(self, interval: float = 3.0) -> None:
        self.interval, self.cores = interval, available_cores()
        self.enabled = not USER_FIXED and _busy_seconds() is not None
        self.changes: list[tuple[float, int]] = []  # (seconds since start, new thread count)
        self._start = self._last = time.monotonic()
        self._prev = (_busy_seconds(), _own_seconds()) if self.enabled else None

    def tick(self) -> None:
        """Call once per step; does something at most once per interval."""
        if not self.enabled:
            return
        now = time.monotonic()
        if now - self._last < self.interval:
            return
        busy, own = _busy_seconds(), _own_seconds()
        others = max(0.0, (busy - self._prev[0]) - (own - self._prev[1])) / (now - self._last)
        self._last, self._prev = now, (busy, own)
        target = max(1, min(self.cores, self.cores - int(others + 0.5)))
        import torch

        if target != torch.get_num_threads():
            torch.set_num_threads(target)
            self.changes.append((round(now - self._start, 1), target))
