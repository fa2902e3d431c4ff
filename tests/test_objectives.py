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
