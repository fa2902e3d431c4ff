"""The calibrated stop: unlearning ends once the forget items are no more likely than
never-seen (holdout) items, checked at adaptive intervals so it does not overshoot."""

from __future__ import annotations

import pytest

import obliviate as ob
from obliviate.cli import main
from obliviate.data import Example
from obliviate.errors import ObliviateError
from obliviate.stopping import HoldoutStop
from obliviate.train import OptimConfig
from obliviate.unlearning import resolve_holdout


def _scripted(values: list[float], every: int = 5) -> HoldoutStop:
    """A stop whose measurements are `values` in order (no model needed)."""
    stop = HoldoutStop(model=None, forget=[], holdout=[], pad_id=0, every=every)
    feed = iter(values)
    stop.measure = lambda: next(feed)
    return stop


def test_the_check_interval_shrinks_as_the_auc_nears_the_target():
    """By hand, every = 5, target 0.5. Start 1.0; first check after 5 steps (no trend yet).
    Step 5: 0.8, a drop of 0.04/step; 0.3 left = 7.5 steps, capped at 5 -> next check at 10.
    Step 10: 0.6, 0.04/step; 0.1 left = 2.5 steps -> floor 2 -> check at 12.
    Step 12: 0.52, 0.04/step; 0.02 left = 0.5 steps -> at least 1 -> check at 13.
    Step 13: 0.48 <= 0.5 -> stop after 13 steps."""
    stop = _scripted([1.0, 0.8, 0.6, 0.52, 0.48])
    stop.start()
    fired = [step + 1 for step in range(40) if stop.check(step)]
    assert stop.checks == [(0, 1.0), (5, 0.8), (10, 0.6), (12, 0.52), (13, 0.48)]
    assert stop.stopped_at == 13 and fired[0] == 13
    rec = stop.record(steps_planned=40)
    assert rec["reached"] and rec["step"] == 13 and rec["auc_at_stop"] == 0.48
    assert rec["auc_start"] == 1.0 and rec["n_checks"] == 5


def test_a_flat_or_rising_auc_keeps_the_full_interval_and_the_budget_end_is_measured():
    stop = _scripted([0.9, 0.9, 0.95, 0.93])
    stop.start()
    assert not any(stop.check(step) for step in range(12))
    assert [s for s, _ in stop.checks] == [0, 5, 10]  # no trend toward 0.5: every 5 steps
    stop.finish(12)  # the run ended at its budget: the model it ends with is measured
    rec = stop.record(steps_planned=12)
    assert not rec["reached"] and rec["step"] == 12 and rec["auc_at_stop"] == 0.93


def test_a_model_already_at_holdout_level_stops_before_any_step():
    stop = _scripted([0.45])
    stop.start()
    assert stop.stopped_at == 0 and stop.check(0)


def test_a_non_finite_auc_stops_rather_than_running_on():
    stop = _scripted([0.9, float("nan")])
    stop.start()
    assert [stop.check(s) for s in range(5)] == [False, False, False, False, True]


def test_holdout_input_is_checked_before_anything_loads(tmp_path):
    forget = [Example("Paris", "Capital of France?")]
    with pytest.raises(ObliviateError, match="both the forget and holdout"):
        ob.data.validate_holdout(forget, [forget[0], Example("Rome", "Capital of Italy?")])
    with pytest.raises(ObliviateError, match="at least 2"):
        ob.data.validate_holdout(forget, [Example("Rome", "Capital of Italy?")])
    with pytest.raises(ObliviateError, match="stop_at_holdout=true needs never-seen items"):
        resolve_holdout(ob.UnlearnConfig(forget="f.jsonl", stop_at_holdout=True))
    assert resolve_holdout(ob.UnlearnConfig(forget="f.jsonl", holdout="h.jsonl",
                                            stop_at_holdout=False)) is None
    assert main(["unlearn", "--out", str(tmp_path / "o"), "model=m", "guard.stop_auc=1.5"]) == 2


@pytest.mark.slow
def test_unlearning_stops_where_forget_items_meet_the_holdout(memorised, tmp_path):
    """NPO with the benchmark's holdout split: the run stops before its budget, at the first
    check where the LOSS-attack AUC is <= 0.5, the check before it was above 0.5; the saved
    model's AUC, measured independently by the mia suite (the same items: both sets are below
    stop_items), is the recorded AUC at stop."""
    cfg = ob.UnlearnConfig(model=str(memorised / "target"), method="npo",
                           benchmark=str(memorised / "bench"), stop_at_holdout=True,
                           optim=OptimConfig(lr=None, steps=300, batch_size=16,
                                             warmup_ratio=0.0, schedule="constant"))
    out = ob.unlearn(cfg, tmp_path / "npo", progress=False)
    prov = ob.models.read_provenance(out)
    stop = prov["stop"]
    assert stop["reached"] and 0 < stop["step"] == prov["steps_run"] < 300
    assert stop["auc_start"] > 0.9  # the target knows its forget set far better than unseen data
    assert stop["auc_at_stop"] <= 0.5 < stop["checks"][-2][1]
    gaps = [b[0] - a[0] for a, b in zip(stop["checks"][:-1], stop["checks"][1:], strict=True)]
    assert all(1 <= g <= 5 for g in gaps)
    res = ob.evaluate(ob.EvalConfig(model=str(out), benchmark=str(memorised / "bench"),
                                    suites=["mia"]), progress=False)
    assert res["datasets"]["mia"]["aggregate"]["auc_loss"] == pytest.approx(stop["auc_at_stop"],
                                                                            abs=1e-6)


def test_the_cli_says_where_the_stop_ended_or_that_it_never_did(tmp_path, capsys):
    from obliviate.cli import _say_stop
    from obliviate.io import write_json_atomic

    stop = _scripted([0.9, 0.8, 0.7])
    stop.start()
    for step in range(10):
        stop.check(step)
    write_json_atomic(tmp_path / "obliviate.json", {"stop": stop.record(steps_planned=10)})
    _say_stop(tmp_path)
    assert "WARNING: the forget items are still more likely" in capsys.readouterr().out
    stop = _scripted([0.9, 0.45])
    stop.start()
    assert [stop.check(s) for s in range(5)][-1]
    write_json_atomic(tmp_path / "obliviate.json", {"stop": stop.record(steps_planned=10)})
    _say_stop(tmp_path)
    assert capsys.readouterr().out.startswith("stopped at step 5: forget vs never-seen items")
