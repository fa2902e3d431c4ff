"""Pure loss functions. Each cites its paper; each has a hand-derived unit test.

Shapes: logits [batch, seq, vocab]; labels [batch, seq] with -100 where no loss is taken.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..encoding import IGNORE


def token_logprobs(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Log-prob of each next-token label, shifted for causal LMs.

    Returns (logp [batch, seq-1], mask [batch, seq-1]) with logp = 0 where masked.
    """
    logits = logits[:, :-1, :]  # position t predicts token t+1
    target = labels[:, 1:]
    mask = target != IGNORE
    safe = target.masked_fill(~mask, 0)
    logp = torch.log_softmax(logits.float(), dim=-1).gather(-1, safe.unsqueeze(-1)).squeeze(-1)
    return logp * mask, mask


def sequence_nll(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(summed NLL [batch], labelled-token count [batch]) of each sequence's target."""
    logp, mask = token_logprobs(logits, labels)
    return -logp.sum(-1), mask.sum(-1)


def mean_nll(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Token-averaged NLL over the whole batch: the standard LM loss (scalar)."""
    return F.cross_entropy(logits[:, :-1, :].reshape(-1, logits.size(-1)).float(),
                           labels[:, 1:].reshape(-1), ignore_index=IGNORE)


def gradient_ascent(forget_nll: torch.Tensor) -> torch.Tensor:
    """GA (Jang et al. 2023, "Knowledge Unlearning"): minimise -NLL(forget)."""
    return -forget_nll


def grad_diff(forget_nll: torch.Tensor, retain_loss: torch.Tensor, alpha: float = 1.0,
              gamma: float = 1.0) -> torch.Tensor:
    """GradDiff (Liu et al. 2022; TOFU baseline): -gamma * NLL(forget) + alpha * retain loss."""
    return -gamma * forget_nll + alpha * retain_loss


def npo(seq_nll: torch.Tensor, ref_seq_nll: torch.Tensor, beta: float) -> torch.Tensor:
    """NPO (Zhang et al. 2024, "Negative Preference Optimization"), eq. 3:

    L = -(2/beta) * mean log sigmoid(-beta * log(pi_theta(y|x) / pi_ref(y|x)))
      = -(2/beta) * mean log sigmoid(beta * (nll_theta - nll_ref))
    with nll the summed sequence NLL. At nll_theta = nll_ref the loss is (2/beta) log 2, and
    it falls towards 0 as the model's likelihood of the forget answer drops below ref's.
    """
    return -(2.0 / beta) * F.logsigmoid(beta * (seq_nll - ref_seq_nll)).mean()
