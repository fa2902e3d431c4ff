"""Headline numbers derived from Results (forget quality, model utility, PrivLeak) on Results
written by hand, each expected value derived in the test's docstring: the end-to-end tests
compare a model with itself (forget quality 1), which a bug that reads the wrong numbers
passes too."""

import math

import pytest

from obliviate.evaluation import derive


def _results(name, datasets):
    return {"schema": "obliviate.results/1", "name": name, "datasets": datasets}


def _forget(truth_ratios, prob=0.01):
    return {"role": "forget", "n": len(truth_ratios),
            "aggregate": {"prob": prob, "rougeL_recall": 0.02, "truth_ratio": 0.03},
            "per_item": {"truth_ratio": list(truth_ratios)}}


def _utility(role, prob, rouge, tr, per_item_tr=(1.0,)):
    return {"role": role, "n": len(per_item_tr),
            "aggregate": {"prob": prob, "rougeL_recall": rouge, "truth_ratio": tr,
                          "exact_memorization": 0.001},  # not a utility component
            "per_item": {"truth_ratio": list(per_item_tr)}}


MODEL_R = [math.exp(x) for x in (2.0, 1.5, 1.0, 0.0)]      # still prefers the true answers
ORACLE_R = [math.exp(x) for x in (0.5, -0.25, -0.5, -1.0)]  # never saw them


def test_forget_quality_is_the_exact_ks_p_value_of_the_truth_ratios():
    """Model R = e^(2, 1.5, 1, 0), oracle R = e^(0.5, -0.25, -0.5, -1). Sorted together:
    o o o m o m m m (e^-1, e^-0.5, e^-0.25, e^0, e^0.5, e^1, e^1.5, e^2). The difference of the
    empirical CDFs, in steps of 1/4, walks -1 -2 -3 -2 -3 -2 -1 0: D = 3/4.
    Exact two-sided p = P(D >= 3/4) over the C(8, 4) = 70 equally likely orders = the share of
    +-1 walks of four ups and four downs that touch +3 or -3. By reflection, walks ending at 0
    that touch +3 are as many as walks ending at 6 (7 ups, 1 down): C(8, 1) = 8; likewise 8 for
    -3; none touches both in 8 steps. p = 16/70 = 8/35 = 0.228571.
    The retain set's per-item ratios equal the oracle's forget ratios: a derive that read the
    retain set instead would report p = 1."""
    model = _results("model", {"forget": _forget(MODEL_R),
                               "retain": _utility("retain", 0.9, 0.9, 0.5, ORACLE_R)})
    oracle = _results("oracle", {"forget": _forget(ORACLE_R),
                                 "retain": _utility("retain", 0.9, 0.9, 0.5, MODEL_R)})
    out = derive(model, oracle)
    assert out["forget_quality"] == pytest.approx(8 / 35, rel=1e-9)
    assert out["forget_quality_ks"] == pytest.approx(0.75)
    assert derive(oracle, model)["forget_quality"] == pytest.approx(8 / 35, rel=1e-9)  # symmetric
    assert derive(model)["forget_quality"] == "not computed: needs a reference"


def test_model_utility_is_the_harmonic_mean_of_nine_components():
    """retain (prob 0.75, ROUGE 0.5, TR 0.75), real authors (0.5, 1, 0.4), world facts
    (0.5, 0.75, 0.4): reciprocals 4/3 + 2 + 4/3 + 2 + 1 + 5/2 + 2 + 4/3 + 5/2 = 16, so the
    harmonic mean is 9/16 = 0.5625. The forget set's numbers (0.01 ...) and other aggregates
    (exact memorization 0.001) are not components: with either, it would fall below 0.1."""
    res = _results("m", {"forget": _forget(MODEL_R),
                         "retain": _utility("retain", 0.75, 0.5, 0.75),
                         "real_authors": _utility("utility", 0.5, 1.0, 0.4),
                         "world_facts": _utility("utility", 0.5, 0.75, 0.4)})
    out = derive(res)
    assert out["model_utility"] == pytest.approx(9 / 16, rel=1e-12)
    assert out["retain_prob"] == 0.75 and out["world_facts_rougeL_recall"] == 0.75


def _mia(auc_min_k, auc_loss):
    return {"role": "mia", "n": 8, "aggregate": {"auc_min_k": auc_min_k, "auc_loss": auc_loss},
            "per_item": {}}


def test_privleak_from_the_min_k_aucs():
    """MUSE (Shi et al. 2024): PrivLeak = (AUC_MUSE(model) - AUC_MUSE(oracle)) / AUC_MUSE(oracle)
    x 100 on the Min-K% attack, where MUSE's AUC is oriented so that a memorised forget set
    scores near 0, i.e. AUC_MUSE = 1 - ours (OpenUnlearning's `privleak` in
    src/evals/metrics/privacy.py converts the same way: score = 1 - auc).
    Ours: model 0.9, oracle 0.6 -> AUC_MUSE 0.1 and 0.4: (0.1 - 0.4) / 0.4 x 100 = -75 (the
    model still leaks). The LOSS attack's AUCs (0.7, 0.55) would give -33.3; the model and the
    oracle swapped, +300. An oracle at 0.55 and a model at 0.4 (AUC_MUSE 0.45 and 0.6):
    (0.6 - 0.45) / 0.45 x 100 = +33.3 (over-unlearned)."""
    model = _results("model", {"forget": _forget(MODEL_R), "mia": _mia(0.9, 0.7)})
    oracle = _results("oracle", {"forget": _forget(ORACLE_R), "mia": _mia(0.6, 0.55)})
    assert derive(model, oracle)["privleak"] == pytest.approx(-75.0)
    over = _results("over", {"forget": _forget(MODEL_R), "mia": _mia(0.4, 0.5)})
    neutral = _results("oracle", {"forget": _forget(ORACLE_R), "mia": _mia(0.55, 0.5)})
    assert derive(over, neutral)["privleak"] == pytest.approx(100 / 3)
    assert derive(model, model)["privleak"] == pytest.approx(0.0)  # plumbing: itself
    perfect = _results("oracle", {"forget": _forget(ORACLE_R), "mia": _mia(1.0, 1.0)})
    assert "undefined" in derive(model, perfect)["privleak"]
    assert derive(_results("x", {"forget": _forget(MODEL_R)}), oracle)["privleak"] == (
        "not computed: no mia suite in these results")
