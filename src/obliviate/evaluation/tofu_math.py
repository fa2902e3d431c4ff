"""TOFU's aggregation formulas (Maini et al. 2024, "TOFU: A Task of Fictitious Unlearning").

Pure numpy on per-item arrays, so the same code scores our own runs and imported TOFU logs.
Inputs are mean token NLLs: `para` [N], `pert` [N, K], `gt` [N].
"""

from __future__ import annotations

import functools
import math

import numpy as np
from rouge_score import rouge_scorer
from scipy.stats import hmean, ks_2samp

_SCORERS: dict[bool | str, rouge_scorer.RougeScorer] = {}


def truth_ratio(para_nll: np.ndarray, pert_nll: np.ndarray) -> np.ndarray:
    """R = exp(mean_k nll(perturbed_k) - nll(paraphrase)) = P_para / geometric-mean P_pert."""
    return np.exp(np.asarray(pert_nll, dtype=np.float64).mean(axis=-1)
                  - np.asarray(para_nll, dtype=np.float64))


def truth_ratio_forget_score(r: np.ndarray) -> float:
    """Forget set: mean(min(R, 1/R)); 1 when the model cannot tell true from false."""
    r = np.asarray(r, dtype=np.float64)
    return float(np.mean(np.minimum(r, 1.0 / r)))


def truth_ratio_utility_score(r: np.ndarray) -> float:
    """Retain / utility sets: mean(max(0, 1 - 1/R)); higher = prefers the truth."""
    r = np.asarray(r, dtype=np.float64)
    return float(np.mean(np.maximum(0.0, 1.0 - 1.0 / r)))


def normalized_prob(gt_nll: np.ndarray, pert_nll: np.ndarray) -> np.ndarray:
    """Per item p(answer) / (p(answer) + sum_k p(perturbed_k)), p = exp(-mean NLL)."""
    p_true = np.exp(-np.asarray(gt_nll, dtype=np.float64))
    p_false = np.exp(-np.asarray(pert_nll, dtype=np.float64)).sum(axis=-1)
    return p_true / (p_true + p_false)


def forget_quality(r_model: np.ndarray, r_oracle: np.ndarray) -> tuple[float, float]:
    """(p-value, KS statistic) of the two-sample KS test between forget-set truth ratios."""
    res = ks_2samp(np.asarray(r_model, dtype=np.float64), np.asarray(r_oracle, dtype=np.float64))
    return float(res.pvalue), float(res.statistic)


def model_utility(components: list[float]) -> float:
    """Harmonic mean of the utility components (0 if any is 0, as scipy's hmean)."""
    vals = np.asarray(components, dtype=np.float64)
    if np.any(vals <= 0):
        return 0.0
    return float(hmean(vals))


class _CachedStemmer:
    """rouge-score's Porter stemmer with each word's stem remembered: stemming is most of
    ROUGE's time, and answers repeat their words. The stems are the stemmer's own."""

    def __init__(self, inner) -> None:
        self.stem = functools.lru_cache(maxsize=1 << 16)(inner.stem)


def _scorer(key: bool | str, rouge_type: str, stemmer: bool) -> rouge_scorer.RougeScorer:
    if key not in _SCORERS:
        scorer = rouge_scorer.RougeScorer([rouge_type], use_stemmer=stemmer)
        inner = getattr(getattr(scorer, "_tokenizer", None), "_stemmer", None)
        if inner is not None:  # the library's layout as pinned; otherwise left as it is
            scorer._tokenizer._stemmer = _CachedStemmer(inner)
        _SCORERS[key] = scorer
    return _SCORERS[key]


def rouge_l(target: str, prediction: str, stemmer: bool = True) -> tuple[float, float]:
    """(recall, F1) of ROUGE-L. TOFU: recall with stemming; MUSE: F1 without stemming."""
    s = _scorer(stemmer, "rougeL", stemmer).score(target, prediction)["rougeL"]
    return float(s.recall), float(s.fmeasure)


def rouge_1_recall(target: str, prediction: str) -> float:
    """ROUGE-1 recall with stemming (the unigram overlap PISTOL and LUNAR report)."""
    return float(_scorer("rouge1", "rouge1", True).score(target, prediction)["rouge1"].recall)


def deviation_score(forget_rouge1: float, retain_rouge1: float) -> float:
    """LUNAR's Deviation Score on PISTOL: 100 x the distance of (forget ROUGE-1, retain
    ROUGE-1) from the ideal point (0, 1); 0 = all forgotten and all kept, lower is better."""
    return 100.0 * math.hypot(forget_rouge1, 1.0 - retain_rouge1)
