"""Membership-inference attacks: per-sample scores, AUC, and MUSE's PrivLeak.

One sign convention everywhere: a *membership score* is higher for samples the attack thinks
were trained on. So an attack that separates members (the forget set) from non-members (a
holdout set the model never saw) perfectly has AUC 1.0; 0.5 means no signal. Every score is
computed from statistics of the engine's shared forward pass; only GradNorm needs gradients.
"""

from __future__ import annotations

import zlib

import numpy as np

ATTACKS = ("loss", "zlib", "min_k", "min_k_pp")  # from the shared pass; + reference, gradnorm


def loss_score(nll_mean: np.ndarray) -> np.ndarray:
    """LOSS (Yeom et al. 2018): members have lower NLL, so the score is -NLL."""
    return -np.asarray(nll_mean, dtype=float)


def zlib_score(nll_mean: np.ndarray, texts: list[str]) -> np.ndarray:
    """ZLib (Carlini et al. 2021): NLL divided by the zlib-compressed length of the text, which
    discounts text that is simply easy; negated so that members score higher."""
    sizes = np.array([len(zlib.compress(t.encode("utf-8"))) for t in texts], dtype=float)
    return -np.asarray(nll_mean, dtype=float) / sizes


def _lowest_mean(values: np.ndarray, k: float) -> float:
    """Mean of the ceil(k * n) lowest values (at least one)."""
    if len(values) == 0:
        return float("nan")
    n = max(1, int(np.ceil(k * len(values))))
    return float(np.sort(values)[:n].mean())


def min_k_score(token_logprobs: list[np.ndarray], k: float = 0.4) -> np.ndarray:
    """Min-K% (Shi et al. 2024): mean of the k% lowest token log-probs; members have fewer
    very unlikely tokens, so a higher score."""
    return np.array([_lowest_mean(lp, k) for lp in token_logprobs])


def min_k_pp_score(token_z: list[np.ndarray], k: float = 0.4) -> np.ndarray:
    """Min-K%++ (Zhang et al. 2024): the same over z_t = (log p(y_t) - mu_t) / sigma_t, with
    mu_t, sigma_t^2 the mean and variance of log p(v) under the model's own distribution."""
    return np.array([_lowest_mean(z, k) for z in token_z])


# Mean token NLLs that differ by less than this are the same: float32 logits of 10-20 carry
# rounding of about 1e-6 into each token's NLL, and two passes that batch an item differently
# (its answer scored beside its perturbed variants, or alone) differ by about 1e-8. Without
# ties, a model scored against itself would get an AUC from that noise instead of 0.5.
REFERENCE_TIE = 1e-5


def reference_score(nll_model: np.ndarray, nll_reference: np.ndarray) -> np.ndarray:
    """Reference attack (Carlini et al. 2021): NLL relative to a reference model's; members
    are unusually likely under the model, so the score is -(nll_model - nll_reference),
    0 within REFERENCE_TIE."""
    score = -(np.asarray(nll_model, dtype=float) - np.asarray(nll_reference, dtype=float))
    return np.where(np.abs(score) < REFERENCE_TIE, 0.0, score)


def gradnorm_score(grad_norms: np.ndarray) -> np.ndarray:
    """GradNorm: members sit near a minimum of their own loss, so their gradient is small."""
    return -np.asarray(grad_norms, dtype=float)


def auc(member_scores: np.ndarray, nonmember_scores: np.ndarray) -> float:
    """ROC AUC of members (label 1) vs non-members (label 0), the one place AUC is computed."""
    from sklearn.metrics import roc_auc_score

    m, n = np.asarray(member_scores, dtype=float), np.asarray(nonmember_scores, dtype=float)
    labels = np.r_[np.ones(len(m)), np.zeros(len(n))]
    return float(roc_auc_score(labels, np.r_[m, n]))


def privleak(auc_model: float, auc_oracle: float) -> float:
    """PrivLeak (Shi et al. 2024, MUSE), in percent. MUSE's AUC is oriented the other way
    (a model that memorised the forget set has AUC near 0), so with ours, a = 1 - AUC_MUSE:
    PrivLeak = (AUC_MUSE(model) - AUC_MUSE(oracle)) / AUC_MUSE(oracle) * 100
             = (auc_oracle - auc_model) / (1 - auc_oracle) * 100.
    0 is ideal; strongly negative: the model still leaks membership; positive: over-unlearned."""
    return (auc_oracle - auc_model) / (1.0 - auc_oracle) * 100.0
