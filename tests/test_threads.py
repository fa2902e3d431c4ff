"""Torch's thread count: the free cores, or OMP_NUM_THREADS when the user sets it."""

import os

import torch

from obliviate import threads
from obliviate.cli import main


def test_omp_num_threads_wins(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    monkeypatch.setattr(threads, "available_cores", lambda: 64)
    assert threads.choose() == 3


def test_available_minus_busy_cores_at_least_one(monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(threads, "available_cores", lambda: 8)
    monkeypatch.setattr(threads, "busy_cores", lambda: 3)
    assert threads.choose() == 5
    monkeypatch.setattr(threads, "busy_cores", lambda: 12)  # a machine busier than its cores
    assert threads.choose() == 1
    monkeypatch.setenv("OMP_NUM_THREADS", "zero")  # not a count: ignored
    assert threads.choose() == 1


def test_a_cgroup_quota_caps_the_cores(tmp_path):
    cpu_max = tmp_path / "cpu.max"
    cpu_max.write_text("150000 100000\n")  # 1.5 CPUs of quota: 1 whole core
    assert threads.available_cores(cpu_max) == 1
    cpu_max.write_text("max 100000\n")  # no quota: the affinity decides
    assert threads.available_cores(cpu_max) == len(os.sched_getaffinity(0))


def test_busy_cores_is_a_core_count():
    assert 0 <= threads.busy_cores(window=0.05) <= (os.cpu_count() or 1)


def test_commands_that_run_a_model_set_torch_threads(monkeypatch, tmp_path):
    before = torch.get_num_threads()
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    try:
        torch.set_num_threads(2)
        main(["eval", "--out", str(tmp_path / "r.json"), "model=missing-folder/x"])  # fails late
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
