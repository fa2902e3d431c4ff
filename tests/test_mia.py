"""Membership-inference scores, AUC orientation and PrivLeak by hand; the mia suite on a model
that memorised its forget set."""

import math

import numpy as np
import pytest
import torch

from obliviate.evaluation import mia
from obliviate.evaluation.engine import _token_stats


def test_scores_are_higher_for_member_like_samples():
    """LOSS: nll 0.5 -> -0.5. ZLib: nll / zlib length; 'aaaa' compresses to 12 bytes, so
    -0.6 / 12 = -0.05. Reference: -(1.0 - 3.0) = 2.0 (much likelier than under the reference).
    GradNorm: norm 2 -> -2."""
    assert mia.loss_score(np.array([0.5])).tolist() == [-0.5]
    assert mia.zlib_score(np.array([0.6]), ["aaaa"]).tolist() == pytest.approx([-0.05])
    assert mia.reference_score(np.array([1.0]), np.array([3.0])).tolist() == [2.0]
    assert mia.gradnorm_score(np.array([2.0])).tolist() == [-2.0]


def test_reference_differences_within_float_rounding_are_ties():
    """A model against itself, its items batched differently in the two passes: NLLs 0.25 and
    0.25 + 1.5e-8 (the size measured) score 0, not a sign from rounding, so the AUC is 0.5;
    1e-3 nats, a real difference, stays. Without ties, members at +1.5e-8 against non-members
    at 0 would give AUC 1: a perfect attack made of rounding."""
    score = mia.reference_score(np.array([0.25 + 1.5e-8, 0.25 - 1.5e-8, 0.5]),
                                np.array([0.25, 0.25, 0.501]))
    assert score.tolist() == [0.0, 0.0, pytest.approx(1e-3)]
    assert mia.auc(mia.reference_score(np.full(2, 0.25 - 1.5e-8), np.full(2, 0.25)),
                   np.zeros(2)) == 0.5


def test_min_k_takes_the_lowest_fraction():
    """Log-probs (-1, -2, -3, -4, -5), k = 0.4: ceil(0.4 * 5) = 2 lowest, (-5 - 4)/2 = -4.5.
    k small still takes one token: -5. The same rule applies to Min-K%++'s z values."""
    lp = [np.array([-1.0, -2.0, -3.0, -4.0, -5.0])]
    assert mia.min_k_score(lp, 0.4).tolist() == [-4.5]
    assert mia.min_k_score(lp, 0.01).tolist() == [-5.0]
    assert mia.min_k_pp_score([np.array([0.5, -1.5, 2.0])], 0.4).tolist() == [-0.5]


def test_min_k_pp_z_from_the_models_own_distribution():
    """Logits (0, ln 3): p = (1/4, 3/4). Label 1: log p = ln 3/4.
    mu = 1/4 ln 1/4 + 3/4 ln 3/4, E[(log p)^2] = 1/4 ln^2 1/4 + 3/4 ln^2 3/4,
    var = E - mu^2; for a two-point distribution z = (ln(3/4) - mu) / sigma = sqrt(p0/p1)
    = 1/sqrt(3). Only the labelled position is returned; its argmax (token 1) is right."""
    logits = torch.tensor([[[0.0, math.log(3)], [0.0, math.log(3)], [0.0, 0.0]]])
    logp, z, correct, counts = _token_stats(logits, torch.tensor([[-100, 1, -100]]))
    assert counts.tolist() == [1] and correct.tolist() == [True]  # only position 0 is labelled
    assert logp.tolist() == pytest.approx([math.log(0.75)])
    assert z.tolist() == pytest.approx([1 / math.sqrt(3)], rel=1e-5)


def test_auc_orientation_and_privleak_sign():
    """Members scored above every non-member: AUC 1 (our convention); below: 0; identical: 0.5.
    PrivLeak = (auc_oracle - auc_model) / (1 - auc_oracle) * 100: a model that still separates
    the forget set perfectly (1.0) against an oracle at 0.5 gives -100 (leaks); the oracle
    itself 0; a model at 0.4 gives +20 (over-unlearned: forget set looks *less* familiar than
    never-seen data)."""
    assert mia.auc([3.0, 4.0], [1.0, 2.0]) == 1.0
    assert mia.auc([1.0, 2.0], [3.0, 4.0]) == 0.0
    assert mia.auc([1.0, 1.0], [1.0, 1.0]) == 0.5
    assert mia.privleak(1.0, 0.5) == -100.0
    assert mia.privleak(0.5, 0.5) == 0.0
    assert mia.privleak(0.4, 0.5) == pytest.approx(20.0)


@pytest.mark.slow
def test_mia_suite_separates_a_memorised_forget_set(memorised):
    import obliviate as ob

    cfg = ob.EvalConfig(model=str(memorised / "target"), benchmark=str(memorised / "bench"),
                        suites=["tofu", "mia"], mia_gradnorm=True,
                        mia_reference=str(memorised / "target"))
    res = ob.evaluate(cfg, name="target", progress=False)
    m = res["datasets"]["mia"]
    assert m["aggregate"]["auc_loss"] > 0.9 and m["aggregate"]["auc_min_k"] > 0.9
    assert m["aggregate"]["auc_gradnorm"] > 0.9  # memorised items sit at a minimum
    # the model as its own reference: every score is 0, no signal at all
    assert m["aggregate"]["auc_reference"] == 0.5
    assert set(m["aggregate"]) == {f"auc_{a}" for a in (*mia.ATTACKS, "reference", "gradnorm")}
    assert len(m["per_item"]["member_min_k_pp"]) == res["datasets"]["forget"]["n"]
    assert res["metrics"]["privleak"] == "not computed: needs a reference"
    import copy

    from obliviate.evaluation import derive

    oracle_like = copy.deepcopy(res)
    oracle_like["datasets"]["mia"]["aggregate"]["auc_min_k"] = 0.5
    # plumbing (the formula on hand-picked AUCs: test_derived.py): near -100, still leaks
    expected = (0.5 - m["aggregate"]["auc_min_k"]) / 0.5 * 100
    assert derive(res, oracle_like)["privleak"] == pytest.approx(expected)
    assert expected < -80
    assert "undefined" in derive(oracle_like, res)["privleak"]
    with pytest.raises(ob.ObliviateError, match="suites: unknown value 'muse2' \\(did you mean 'muse'"):
        ob.evaluate(ob.EvalConfig(model=str(memorised / "target"), benchmark=str(memorised / "bench"),
                                  suites=["muse2"]), progress=False)


@pytest.mark.slow
def test_muse_and_memorization_suites(memorised):
    """The target memorised its forget people's passages: VerbMem is high. It learned forget and
    retain people alike, so KnowMem (few-shot prompts, a format the tiny model never trained
    on) is clearly non-zero and similar on both. The memorization suite generates nothing."""
    import obliviate as ob
    from obliviate.evaluation import Engine
    from obliviate.evaluation.suite import evaluate_memorization
    from obliviate.models import load_model

    res = ob.evaluate(ob.EvalConfig(model=str(memorised / "target"), benchmark=str(memorised / "bench"),
                                    suites=["muse"]), progress=False)
    muse = res["datasets"]["muse"]["aggregate"]
    assert muse["verbmem_forget"] > 0.5
    assert muse["knowmem_forget"] > 0.2 and muse["knowmem_retain"] > 0.2
    assert abs(muse["knowmem_forget"] - muse["knowmem_retain"]) < 0.25
    assert "forget" not in res["datasets"]  # only the suites asked for
    model, tok = load_model(memorised / "target")
    engine = Engine(model, tok)
    sets = ob.tofu_sets(memorised / "bench")
    out = evaluate_memorization(engine, sets)
    assert set(out) == {"forget", "retain"} and out["forget"]["aggregate"]["exact_memorization"] > 0.9
    assert engine._gens == {} and engine.forward_passes > 0
