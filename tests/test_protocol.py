"""preset=tofu follows the published protocol; comparing results measured differently warns."""

from __future__ import annotations

import pytest

import obliviate as ob
from obliviate.api import EvalConfig, _eval_sets
from obliviate.cli import main
from obliviate.data.checks import protocol, protocol_findings
from obliviate.errors import ObliviateError
from obliviate.evaluation.interop import import_tofu
from obliviate.evaluation.results import make_results, save_results


def test_preset_tofu_scores_every_retain_item_with_200_tokens_and_both_utility_sets(tmp_path):
    bench = ob.generate(tmp_path / "b", seed=0, entities=30, questions=20)
    quick = {s.name: len(s.examples) for s in _eval_sets(EvalConfig(model="m", benchmark=str(bench)))}
    cfg = EvalConfig(model="m", benchmark=str(bench), preset="tofu")
    full = {s.name: len(s.examples) for s in _eval_sets(cfg)}
    retain_all = len(ob.load_benchmark(bench).retain_set("forget10"))
    assert cfg.max_new_tokens == 200
    assert quick["retain"] == 200 < retain_all == full["retain"] == 27 * 20
    assert {"world_facts", "real_world"} <= set(full) and "real_world" not in quick


def test_preset_refuses_a_contradicting_setting_and_keeps_an_agreeing_one():
    with pytest.raises(ObliviateError, match="preset=tofu sets max_new_tokens=200"):
        EvalConfig(model="m", preset="tofu", max_new_tokens=64)
    assert EvalConfig(model="m", preset="tofu", max_new_tokens=200).max_new_tokens == 200
    with pytest.raises(ObliviateError, match="did you mean 'tofu'"):
        EvalConfig(model="m", preset="tof")


def _ours(tokens: int, retain: int) -> dict:
    sets = {"forget": {"role": "forget", "n": 40, "aggregate": {}, "per_item": {}},
            "retain": {"role": "retain", "n": retain, "aggregate": {}, "per_item": {}}}
    return make_results("ours", "m", sets, {"max_new_tokens": tokens}, seed=0)


def test_results_measured_differently_from_their_reference_get_a_warning():
    ref = _ours(200, 400)
    found = protocol_findings(_ours(48, 200), ref)
    assert [f.code for f in found] == ["protocol"] and found[0].level == "warning"
    assert "48 new tokens per answer against 200" in found[0].message
    assert "200 retain items against 400" in found[0].message
    assert protocol_findings(_ours(200, 400), ref) == []


def test_a_published_log_counts_as_200_tokens_and_score_warns(tmp_path, reference_dir, capsys):
    published = import_tofu(reference_dir / "tofu" / "llama2-7b_retain90")
    assert protocol(published)["max_new_tokens"] == 200
    ours = _ours(48, published["datasets"]["retain"]["n"])
    ours["datasets"]["forget"]["n"] = published["datasets"]["forget"]["n"]
    found = protocol_findings(ours, published)
    assert len(found) == 1 and "48 new tokens per answer against 200" in found[0].message
    assert "retain items" not in found[0].message  # the same sizes: only the tokens differ
    path = save_results(published, tmp_path / "published.json")
    main(["score", str(path), "--reference", str(path)])
    assert "warning" not in capsys.readouterr().err  # one protocol: nothing to say
    short = {**published, "name": "short", "config": {"max_new_tokens": 48}}
    main(["score", str(save_results(short, tmp_path / "short.json")), "--reference", str(path)])
    err = capsys.readouterr().err
    assert "warning: 'short' and its reference" in err and "48 new tokens per answer against 200" in err
