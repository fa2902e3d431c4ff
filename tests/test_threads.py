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



def test_governor_gives_up_a_core_when_another_process_takes_one(monkeypatch):
    """Other processes' CPU time over the interval (the machine's less this process's) sets
    the thread count: 1.2 cores used by others of 2 leave 1; when they stop, back to 2."""
    monkeypatch.setattr(threads, "USER_FIXED", False)
    monkeypatch.setattr(threads, "available_cores", lambda: 2)
    clock = {"t": 100.0}
    counters = {"busy": 50.0, "own": 10.0}
    monkeypatch.setattr(threads.time, "monotonic", lambda: clock["t"])
    monkeypatch.setattr(threads, "_busy_seconds", lambda: counters["busy"])
    monkeypatch.setattr(threads, "_own_seconds", lambda: counters["own"])
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        gov = threads.Governor(interval=3.0)
        clock["t"] += 1.0  # within the interval: nothing checked
        counters["busy"] += 10.0
        gov.tick()
        assert torch.get_num_threads() == 2
        clock["t"] += 9.0  # 10 s since the start: we used 8 s, the machine 20 s -> others 1.2
        counters["busy"] += 10.0
        counters["own"] += 8.0
        gov.tick()
        assert torch.get_num_threads() == 1
        clock["t"] += 10.0  # others gone: the machine's time is all ours
        counters["busy"] += 10.0
        counters["own"] += 10.0
        gov.tick()
        assert torch.get_num_threads() == 2
        assert gov.changes == [(10.0, 1), (20.0, 2)]
    finally:
        torch.set_num_threads(before)


def test_governor_leaves_a_user_fixed_count_alone(monkeypatch):
    monkeypatch.setattr(threads, "USER_FIXED", True)
    gov = threads.Governor(interval=0.0)
    before = torch.get_num_threads()
    gov.tick()
    assert not gov.enabled and torch.get_num_threads() == before
