"""benchmarks/gpu.py, the one-accelerator benchmark, at tiny size on the CPU: every stage
(fine-tune, NPO with full weights and with LoRA, TOFU-protocol evaluation) runs in its own
process and reports its time, throughput and peak memory, so the script is known to work
before a GPU run spends its minutes on it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.mark.slow
def test_gpu_benchmark_runs_every_stage_at_tiny_size(tmp_path):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(BENCH.parent / "src"),
                                                                     os.environ.get("PYTHONPATH")]))}
    res = subprocess.run([sys.executable, "gpu.py", "--tiny", "--precision", "bf16", "--work",
                          str(tmp_path / "work"), "--results", str(tmp_path / "results")],
                         cwd=BENCH, env=env, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-2000:]
    data = json.loads((tmp_path / "results" / "gpu-tiny.json").read_text())
    rows = data["rows"]
    assert set(rows) == {"finetune", "npo_full", "npo_lora", "eval"}
    assert all(r["peak_mb"] > 100 for r in rows.values())  # a torch process holds more than that
    assert rows["finetune"]["tokens_per_s"] > 0 and rows["eval"]["items"] > 0
    assert rows["npo_full"]["s_per_step"] > 0 and rows["npo_lora"]["s_per_step"] > 0
    table = (tmp_path / "results" / "gpu-tiny.md").read_text()
    assert table.count("\n| ") == 5  # header and four stages
