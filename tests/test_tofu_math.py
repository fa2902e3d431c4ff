"""TOFU aggregation: hand-derived cases, then parity with TOFU's published logs."""

import json
import math

import numpy as np
import pytest

from obliviate.evaluation.tofu_math import (
    forget_quality,
    model_utility,
    normalized_prob,
    rouge_l,
    truth_ratio,
    truth_ratio_forget_score,
    truth_ratio_utility_score,
)


def test_truth_ratio_and_its_two_aggregates():
    """para NLL 1, perturbed NLLs [1, 3] (mean 2): R = e^(2-1) = e.
    forget: min(e, 1/e) = 1/e; utility: max(0, 1 - 1/e). For R = 1/e (model prefers the
    wrong answers) the utility score is max(0, 1 - e) = 0."""
    r = truth_ratio(np.array([1.0]), np.array([[1.0, 3.0]]))
    assert r[0] == pytest.approx(math.e)
    assert truth_ratio_forget_score(r) == pytest.approx(1 / math.e)
    assert truth_ratio_utility_score(r) == pytest.approx(1 - 1 / math.e)
    assert truth_ratio_utility_score(np.array([1 / math.e])) == 0.0


def test_normalized_prob():
    """gt NLL ln 2 -> p = 1/2; two perturbed with NLL ln 4 -> 1/4 each: 0.5 / (0.5 + 0.5)."""
    p = normalized_prob(np.array([math.log(2)]), np.array([[math.log(4), math.log(4)]]))
    assert p[0] == pytest.approx(0.5)


def test_model_utility_is_a_harmonic_mean():
    """hmean(1, 1/2) = 2 / (1 + 2) = 2/3; any zero component gives 0."""
    assert model_utility([1.0, 0.5]) == pytest.approx(2 / 3)
    assert model_utility([0.9, 0.0, 0.8]) == 0.0


def test_forget_quality_ks():
    """Identical samples: KS statistic 0, p = 1. Fully separated samples of 3 and 3: D = 1 and
    the exact two-sided p-value is 2 / C(6, 3) = 2/20 = 0.1 (only the two extreme orderings)."""
    assert forget_quality(np.array([0.2, 0.5, 0.9]), np.array([0.2, 0.5, 0.9])) == (1.0, 0.0)
    p, d = forget_quality(np.array([1.0, 2.0, 3.0]), np.array([4.0, 5.0, 6.0]))
    assert d == 1.0 and p == pytest.approx(0.1)


def test_rouge_variants():
    """Target 'the cat sat' vs prediction 'the cat': LCS 2, recall 2/3, precision 1,
    F1 = 2 * (2/3) / (2/3 + 1) = 0.8. Stemming makes 'cats' match 'cat'."""
    assert rouge_l("the cat sat", "the cat") == pytest.approx((2 / 3, 0.8))
    assert rouge_l("cats", "cat", stemmer=True)[0] == 1.0
    assert rouge_l("cats", "cat", stemmer=False)[0] == 0.0


# ---- parity with the published TOFU logs (../shared/reference/tofu) -------------------
LOGS = ["eval_log.json", "eval_log_forget.json", "eval_real_author_wo_options.json",
        "eval_real_world_wo_options.json"]


def _components(folder):
    out = {}
    for name in LOGS:
        log = json.loads((folder / name).read_text())
        keys = list(log["avg_gt_loss"])
        gt = np.array([log["avg_gt_loss"][k] for k in keys])
        para = np.array([log["avg_paraphrased_loss"][k] for k in keys])
        pert = np.array([log["average_perturb_loss"][k] for k in keys])
        r = truth_ratio(para, pert)
        real = "real" in name
        out[name] = {
            "prob": float(np.mean(normalized_prob(gt, pert) if real else np.exp(-gt))),
            "rouge": float(np.mean([log["rougeL_recall"][k] for k in keys])),
            "tr": truth_ratio_forget_score(r) if "forget" in name else truth_ratio_utility_score(r),
            "r": r,
        }
    return out


def test_golden_tofu_numbers(reference_dir):
    """Golden values from reference/tofu/README.md (TOFU's own aggregation of its logs)."""
    full = _components(reference_dir / "tofu" / "llama2-7b_full")
    oracle = _components(reference_dir / "tofu" / "llama2-7b_retain90")
    utility = [full[n][k] for n in LOGS if "forget" not in n for k in ("prob", "rouge", "tr")]
    assert model_utility(utility) == pytest.approx(0.6226773637, rel=1e-6)
    p, ks = forget_quality(full["eval_log_forget.json"]["r"], oracle["eval_log_forget.json"]["r"])
    assert p == pytest.approx(1.834066e-21, rel=1e-6)
    assert ks == pytest.approx(0.396667, rel=1e-5)
    oracle_utility = [oracle[n][k] for n in LOGS if "forget" not in n for k in ("prob", "rouge", "tr")]
    assert model_utility(oracle_utility) == pytest.approx(0.6137449952, rel=1e-6)
    expected = {  # component scores listed in the reference README
        ("eval_real_author_wo_options.json", "prob"): 0.455482,
        ("eval_real_author_wo_options.json", "tr"): 0.596229,
        ("eval_real_world_wo_options.json", "rouge"): 0.882479,
        ("eval_log.json", "tr"): 0.474699,
        ("eval_log_forget.json", "prob"): 0.990939,
        ("eval_log_forget.json", "tr"): 0.515985,
    }
    for (name, key), value in expected.items():
        assert full[name][key] == pytest.approx(value, abs=1e-6)


def test_rouge1_recall_and_the_deviation_score_by_hand():
    """'the cat sat' vs 'a cat sat down': 2 of the reference's 3 unigrams are found: 2/3.
    Deviation score: forget ROUGE-1 0.3, retain 0.6 -> 100 * sqrt(0.3^2 + 0.4^2) = 50; the
    ideal (0, 1) scores 0, the worst (1, 0) 100 * sqrt(2)."""
    from obliviate.evaluation.tofu_math import deviation_score, rouge_1_recall

    assert rouge_1_recall("the cat sat", "a cat sat down") == pytest.approx(2 / 3)
    assert deviation_score(0.3, 0.6) == pytest.approx(50.0)
    assert deviation_score(0.0, 1.0) == 0.0
    assert deviation_score(1.0, 0.0) == pytest.approx(100 * 2 ** 0.5)


def test_rouge_with_remembered_stems_equals_rouge_score_itself():
    from rouge_score import rouge_scorer

    plain = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)
    pairs = [("The running dogs were happily jumping", "dogs ran and jumped happily"),
             ("Organisations organised organising", "organization organizes"),
             ("The running dogs were happily jumping", "running dog jumps")]
    for target, pred in pairs * 2:  # the second round reads stems from the cache
        s = plain.score(target, pred)["rougeL"]
        assert rouge_l(target, pred) == (float(s.recall), float(s.fmeasure))
