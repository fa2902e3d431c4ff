"""The README's method and metric tables list exactly what the registries hold."""

import re
from pathlib import Path

from obliviate.evaluation import METRICS
from obliviate.methods import METHODS

README = (Path(__file__).resolve().parents[1] / "README.md").read_text()


def _table_names(heading: str) -> set[str]:
    section = README.split(f"## {heading}\n", 1)[1].split("\n## ", 1)[0]
    names = set()
    for cell in re.findall(r"^\| (`[^|]+`) \|", section, flags=re.M):  # `a` or `a`, `b`
        names |= set(re.findall(r"`([a-zA-Z0-9_]+)`", cell))
    return names


def test_methods_table_matches_registry():
    assert _table_names("Methods") == set(METHODS.names())


def test_metrics_table_matches_registry():
    assert _table_names("Metrics") == set(METRICS.names())


def test_quick_start_is_two_make_commands():
    quick = README.split("## Quick start\n", 1)[1].split("\n## ", 1)[0]
    commands = re.findall(r"^make (\w+)", quick, flags=re.M)
    assert commands == ["demo", "test"]
