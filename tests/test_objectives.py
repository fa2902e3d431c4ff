"""Loss functions against values derived by hand (each derivation in the docstring)."""

import math

import pytest
import torch

from obliviate.methods.objectives import grad_diff, gradient_ascent, mean_nll, npo, sequence_nll


def test_sequence_nll_uniform_logits_and_masking():
    """Vocab 2, all-zero logits: every token has p = 1/2, NLL = ln 2.
    labels [-100, 1, 0]: after the causal shift, positions 0 and 1 predict labels 1 and 0,
    so the summed NLL is 2 ln 2 over 2 tokens. With labels [-100, -100, 0] only one token
    counts: ln 2 over 1 token."""
    logits = torch.zeros(2, 3, 2)
    labels = torch.tensor([[-100, 1, 0], [-100, -100, 0]])
    total, count = sequence_nll(logits, labels)
    assert count.tolist() == [2, 1]
    assert total.tolist() == pytest.approx([2 * math.log(2), math.log(2)])


def test_sequence_nll_skewed_logits():
    """Position 0 logits [0, ln 3] give p(token 1) = 3/(1+3) = 3/4, so NLL = ln(4/3);
    p(token 0) = 1/4, NLL = ln 4."""
    logits = torch.tensor([[[0.0, math.log(3)], [0.0, 0.0]]])
    assert sequence_nll(logits, torch.tensor([[-100, 1]]))[0].item() == pytest.approx(math.log(4 / 3))
    assert sequence_nll(logits, torch.tensor([[-100, 0]]))[0].item() == pytest.approx(math.log(4))
    # mean_nll over the batch: one labelled token, the same value.
    assert mean_nll(logits, torch.tensor([[-100, 0]])).item() == pytest.approx(math.log(4))


def test_npo_value_and_gradient_at_reference():
    """At nll = nll_ref: L = -(2/b) log sigmoid(0) = (2/b) ln 2; with b = 0.1, 20 ln 2.
    dL/dnll_i = -(2/b) * b * (1 - sigmoid(0)) / N = -1/N: with N = 2, -0.5 each. Negative:
    gradient descent on L raises the forget NLL (forgetting)."""
    nll = torch.tensor([5.0, 7.0], requires_grad=True)
    loss = npo(nll, torch.tensor([5.0, 7.0]), beta=0.1)
    assert loss.item() == pytest.approx(20 * math.log(2))
    loss.backward()
    assert nll.grad.tolist() == pytest.approx([-0.5, -0.5])


def test_npo_is_bounded_as_forgetting_proceeds():
    """nll - ref = 100, b = 1: L = -2 log sigmoid(100) ~ 2 e^-100 ~ 0; gradient ~ 0, unlike GA
    whose gradient stays -1 forever (NPO's motivation)."""
    nll = torch.tensor([105.0], requires_grad=True)
    loss = npo(nll, torch.tensor([5.0]), beta=1.0)
    loss.backward()
    assert loss.item() == pytest.approx(0.0, abs=1e-12)
    assert abs(nll.grad.item()) < 1e-12


def test_ga_and_graddiff_signs():
    """GA: L = -x, dL/dx = -1. GradDiff with gamma=1, alpha=2: L = -f + 2r, so dL/df = -1
    (ascend on forget) and dL/dr = +2 (descend on retain). f=3, r=1 gives -1."""
    x = torch.tensor(2.0, requires_grad=True)
    gradient_ascent(x).backward()
    assert x.grad.item() == -1.0
    f = torch.tensor(3.0, requires_grad=True)
    r = torch.tensor(1.0, requires_grad=True)
    loss = grad_diff(f, r, alpha=2.0, gamma=1.0)
    loss.backward()
    assert loss.item() == -1.0 and f.grad.item() == -1.0 and r.grad.item() == 2.0


# ---------------------------------------------------------------------------- wave 1 objectives
from obliviate.methods.objectives import (  # noqa: E402
    answer_logits,
    cross_entropy_unlearning,
    dpo,
    dual_ascent,
    flat,
    kl_to_reference,
    l1_penalty,
    logit_flatness,
    mean_token_prob,
    negate_task_vector,
    rmu_forget,
    rmu_retain,
    satimp_weights,
    simnpo,
    undial,
    weighted_ascent,
    wga_weights,
)

LN3 = math.log(3)


def test_answer_logits_keeps_labelled_positions_in_order():
    """labels [[-100, 5, 6], [-100, -100, 7]]: after the shift, row 0 positions 0, 1 predict
    5, 6 and row 1 position 1 predicts 7; rows come out in that (row-major) order."""
    logits = torch.arange(2 * 3 * 1, dtype=torch.float).reshape(2, 3, 1)
    sel, targets = answer_logits(logits, torch.tensor([[-100, 5, 6], [-100, -100, 7]]))
    assert targets.tolist() == [5, 6, 7]
    assert sel.squeeze(-1).tolist() == [0.0, 1.0, 4.0]  # (row 0, pos 0), (0, 1), (1, 1)


def test_kl_to_reference_value_gradient_and_mask():
    """p_ref = (1/2, 1/2), p = softmax(0, ln 3) = (1/4, 3/4):
    KL(ref || model) = 1/2 ln(1/2 / 1/4) + 1/2 ln(1/2 / 3/4) = 1/2 ln(4/3).
    d KL / d logits = p - p_ref = (-1/4, +1/4). The second position is masked out, so its
    (very different) logits change nothing."""
    logits = torch.tensor([[[0.0, LN3], [9.0, -9.0]]], requires_grad=True)
    ref = torch.tensor([[[0.0, 0.0], [-9.0, 9.0]]])
    kl = kl_to_reference(logits, ref, torch.tensor([[True, False]]))
    assert kl.item() == pytest.approx(0.5 * math.log(4 / 3), rel=1e-6)
    kl.backward()
    assert logits.grad[0, 0].tolist() == pytest.approx([-0.25, 0.25], abs=1e-6)
    assert logits.grad[0, 1].tolist() == [0.0, 0.0]


def test_simnpo_value_length_normalisation_and_gradient_sign():
    """nll 2 over 4 tokens, beta 2, gamma 0: x = 2 * 2/4 = 1, L = -(2/2) log sigmoid(1)
    = ln(1 + e^-1) = 0.3132617. dL/dnll = -(2/b) * sigmoid(-x) * b/|y| = -2 sigmoid(-1)/4
    = -0.1344707: negative, so descent raises the NLL. nll 4 over 8 tokens: same loss."""
    nll = torch.tensor([2.0], requires_grad=True)
    loss = simnpo(nll, torch.tensor([4]), beta=2.0, gamma=0.0)
    assert loss.item() == pytest.approx(math.log(1 + math.exp(-1)), rel=1e-6)
    loss.backward()
    assert nll.grad.item() == pytest.approx(-0.5 / (1 + math.e), rel=1e-6)
    assert simnpo(torch.tensor([4.0]), torch.tensor([8]), 2.0, 0.0).item() == pytest.approx(loss.item())


def test_dpo_at_reference_and_gradient_directions():
    """All NLLs equal their reference: margin 0, L = -(2/b) ln(1/2) = (2/b) ln 2 = 4 ln 2 at
    b = 0.5. dL/dmargin = -(2/b) * b * sigmoid(0) = -1; margin = (ref_w - w) - (ref_l - l), so
    dL/dw = +1 (descent lowers the refusal's NLL) and dL/dl = -1 (raises the answer's)."""
    win = torch.tensor([3.0], requires_grad=True)
    lose = torch.tensor([5.0], requires_grad=True)
    loss = dpo(win, lose, torch.tensor([3.0]), torch.tensor([5.0]), beta=0.5)
    assert loss.item() == pytest.approx(4 * math.log(2))
    loss.backward()
    assert win.grad.item() == pytest.approx(1.0) and lose.grad.item() == pytest.approx(-1.0)


def test_wga_and_satimp_weights_and_detached_ascent():
    """Token probabilities 1/2 and 1/4. WGA beta 1: w = (1/2, 1/4); the loss mean(w log p)
    = (1/2 ln 1/2 + 1/4 ln 1/4)/2 = -ln(2)/2. Its gradient w.r.t. log p is w/N = (1/4, 1/8)
    (the weights are constants: no p-derivative of w), positive, so descent lowers log p.
    SatImp beta1 = beta2 = 1: w = p(1-p) = (1/4, 3/16)."""
    logp = torch.log(torch.tensor([0.5, 0.25])).requires_grad_(True)
    w = wga_weights(logp, beta=1.0)
    assert w.tolist() == pytest.approx([0.5, 0.25])
    loss = weighted_ascent(logp, w)
    assert loss.item() == pytest.approx(-math.log(2) / 2)
    loss.backward()
    assert logp.grad.tolist() == pytest.approx([0.25, 0.125])
    assert satimp_weights(logp, 1.0, 1.0).tolist() == pytest.approx([0.25, 3 / 16])


def test_undial_target_and_gradient():
    """Reference logits (0, 0), true token 0, strength ln 3: adjusted (-ln 3, 0) gives the
    target (1/4, 3/4). The model's (0, 0) is (1/2, 1/2): CE = -(1/4 + 3/4) ln 1/2 = ln 2.
    d/dlogits = p - target = (1/4, -1/4): the true token's logit goes down."""
    logits = torch.zeros(1, 2, requires_grad=True)
    loss = undial(logits, torch.zeros(1, 2), torch.tensor([0]), strength=LN3)
    assert loss.item() == pytest.approx(math.log(2))
    loss.backward()
    assert logits.grad[0].tolist() == pytest.approx([0.25, -0.25])


def test_cross_entropy_unlearning_value_and_gradient():
    """Logits (0, 0, 0), true token 0: q = (0, 1/2, 1/2), log p = ln 1/3 everywhere,
    CE = -(1/2 + 1/2) ln 1/3 = ln 3. d/dlogits = p - q = (1/3, -1/6, -1/6)."""
    logits = torch.zeros(1, 3, requires_grad=True)
    loss = cross_entropy_unlearning(logits, torch.tensor([0]))
    assert loss.item() == pytest.approx(LN3)
    loss.backward()
    assert logits.grad[0].tolist() == pytest.approx([1 / 3, -1 / 6, -1 / 6])


def test_logit_flatness_and_dual_ascent():
    """(0, 3, 0): max 3, mean 1, (3 - 1)^2 = 4; (1, 1, 1) is uniform: 0; the mean is 2.
    Dual ascent: lam 1 + 1 * 0.5 = 1.5 while violated; 1 + 1 * (-3) < 0 projects to 0."""
    assert logit_flatness(torch.tensor([[0.0, 3.0, 0.0], [1.0, 1.0, 1.0]])).item() == 2.0
    assert dual_ascent(1.0, 0.5, 1.0) == 1.5
    assert dual_ascent(1.0, -3.0, 1.0) == 0.0


def test_flat_kl_and_tv_values_and_gradient_signs():
    """KL: g*(v) = v, f*(t) = e^(t-1). Good score 0.8, bad 0.5: L = -0.8 + e^-0.5.
    dL/dgood = -1 (raise the template answer), dL/dbad = e^-0.5 > 0 (lower the forget answer).
    TV: g*(v) = tanh(v)/2, f*(t) = t: L = -tanh(0.8)/2 + tanh(0.5)/2."""
    good = torch.tensor([0.8], requires_grad=True)
    bad = torch.tensor([0.5], requires_grad=True)
    loss = flat(good, bad, "kl")
    assert loss.item() == pytest.approx(-0.8 + math.exp(-0.5))
    loss.backward()
    assert good.grad.item() == pytest.approx(-1.0)
    assert bad.grad.item() == pytest.approx(math.exp(-0.5))
    tv = flat(torch.tensor([0.8]), torch.tensor([0.5]), "tv")
    assert tv.item() == pytest.approx(-math.tanh(0.8) / 2 + math.tanh(0.5) / 2)
    with pytest.raises(ValueError, match="unknown divergence"):
        flat(good, bad, "hellinger")


def test_mean_token_prob_with_masking():
    """Position 0 logits (0, ln 3) predict token 1 with p = 3/4; position 1 logits (0, 0)
    predict token 0 with p = 1/2: mean 5/8. Masking the first label leaves 1/2."""
    logits = torch.tensor([[[0.0, LN3], [0.0, 0.0], [0.0, 0.0]]])
    assert mean_token_prob(logits, torch.tensor([[-100, 1, 0]])).item() == pytest.approx(0.625)
    assert mean_token_prob(logits, torch.tensor([[-100, -100, 0]])).item() == pytest.approx(0.5)


def test_rmu_terms_are_masked_mean_squared_distances():
    """Hidden (1, 1) and (3, 3), control (1, 1): the first position is at distance 0, the
    second at ((3-1)^2 + (3-1)^2)/2 = 4 per dimension. Each mask picks one of them."""
    h = torch.tensor([[[1.0, 1.0], [3.0, 3.0]]])
    c = torch.tensor([1.0, 1.0])
    assert rmu_forget(h, c, torch.tensor([[1, 0]])).item() == 0.0
    assert rmu_forget(h, c, torch.tensor([[0, 1]])).item() == 4.0
    assert rmu_retain(h, torch.ones_like(h), torch.tensor([[1, 1]])).item() == 2.0


def test_l1_and_task_vector_negation():
    """|1| + |-2| + |3| = 6 with gradient sign(w) = (1, -1, 1). Negation with scale 1/2:
    base 1, fine-tuned 3 gives 1 - (3 - 1)/2 = 0; scale 0 gives the base back."""
    a = torch.tensor([[1.0, -2.0]], requires_grad=True)
    b = torch.tensor([3.0], requires_grad=True)
    reg = l1_penalty([a, b])
    assert reg.item() == 6.0
    reg.backward()
    assert a.grad.tolist() == [[1.0, -1.0]] and b.grad.tolist() == [1.0]
    assert negate_task_vector(torch.tensor(1.0), torch.tensor(3.0), 0.5).item() == 0.0
    assert negate_task_vector(torch.tensor(1.0), torch.tensor(3.0), 0.0).item() == 1.0


def test_sophia_clips_flat_directions_and_preconditions_curved_ones():
    """Sophia with b1 = 0.965, b2 = 0.99, lr 0.1. Gradient 2 at w = 1:
    m = (1 - 0.965) * 2 = 0.07. With no curvature yet (h = 0) m / max(rho h, eps) is huge, so
    the step is clipped to lr: w = 0.9. With h from update_hessian (scale 1):
    h = (1 - 0.99) * 2^2 = 0.04, and rho = 1000: m / (rho h) = 0.07 / 40 = 0.00175, unclipped,
    so w = 1 - 0.1 * 0.00175 = 0.999825."""
    from obliviate.optim import Sophia

    for rho, hess, expected in ((0.05, False, 0.9), (1000.0, True, 1 - 0.1 * 0.00175)):
        w = torch.nn.Parameter(torch.tensor([1.0]))
        opt = Sophia([w], lr=0.1, rho=rho)
        w.grad = torch.tensor([2.0])
        if hess:
            opt.update_hessian(scale=1.0)
        opt.step()
        assert w.item() == pytest.approx(expected, rel=1e-6)
