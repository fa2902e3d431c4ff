"""What each reported number means: direction, range, source. `obliviate ls metrics` prints it.

Dataset-level metrics (prob, rougeL_recall, truth_ratio, ...) are reported per dataset with
the dataset's role as prefix (forget_prob, retain_prob, world_facts_prob); on a forget set
lower is better, elsewhere higher is better.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..registry import Registry


@dataclass(frozen=True)
class MetricInfo:
    name: str
    direction: str  # "higher", "lower", "per-role" (lower on forget, higher elsewhere)
    range: str
    description: str
    source: str


METRICS: Registry[MetricInfo] = Registry("metric")


def _metric(name: str, direction: str, range_: str, description: str, source: str) -> None:
    METRICS.register(name)(MetricInfo(name, direction, range_, description, source))


TOFU = "Maini et al. 2024, TOFU"
_metric("prob", "per-role", "[0, 1]",
        "p(answer|question) = exp(-mean token NLL); on utility sets normalised against the "
        "perturbed answers: p / (p + sum p_perturbed)", TOFU)
_metric("rougeL_recall", "per-role", "[0, 1]",
        "ROUGE-L recall of the greedy answer vs the true answer (rouge_score, stemming)", TOFU)
_metric("truth_ratio", "per-role", "[0, 1]",
        "R = P(paraphrase) / geometric-mean P(perturbed); forget: mean min(R, 1/R) "
        "(1 = cannot tell true from false); retain/utility: mean max(0, 1 - 1/R)", TOFU)
_metric("exact_memorization", "per-role", "[0, 1]",
        "share of answer tokens whose teacher-forced argmax equals the label",
        "Tirumala et al. 2022; OpenUnlearning")
_metric("extraction_strength", "per-role", "[0, 1]",
        "1 - k/|y|, k the first position from which the teacher-forced argmax reproduces the "
        "rest of the answer", "Carlini et al. 2021; OpenUnlearning")
_metric("forget_quality", "higher", "[0, 1]",
        "p-value of the KS test between forget-set truth ratios of the model and of the oracle "
        "(retrained without the forget set); 1 = indistinguishable from the oracle", TOFU)
_metric("model_utility", "higher", "[0, 1]",
        "harmonic mean of {prob, rougeL_recall, truth_ratio} on the retain and utility sets",
        TOFU)
_metric("mia_auc", "lower on forget", "[0, 1]",
        "ROC AUC of membership scores, forget set (members) vs holdout (non-members), per attack "
        "(auc_loss, auc_zlib, auc_min_k, auc_min_k_pp); 1 = members fully exposed, 0.5 = no "
        "signal; compare with the oracle's", "Shi et al. 2024 (MUSE); Zhang et al. 2024 (Min-K%++)")
_metric("privleak", "0 is ideal", "[-100, +inf)",
        "(AUC_oracle - AUC_model) / (1 - AUC_oracle) x 100 on Min-K% (k=0.4) AUCs, MUSE's "
        "PrivLeak in our AUC orientation; negative = still leaks, positive = over-unlearned",
        "Shi et al. 2024, MUSE")
MUSE = "Shi et al. 2024, MUSE"
_metric("verbmem_forget", "lower", "[0, 1]",
        "ROUGE-L F1 (no stemming) of the greedy continuation of each forget passage's first half "
        "against its true second half", MUSE)
_metric("knowmem_forget", "lower", "[0, 1]",
        "ROUGE-L F1 (no stemming) of few-shot answers to forget questions", MUSE)
_metric("knowmem_retain", "higher", "[0, 1]",
        "ROUGE-L F1 (no stemming) of few-shot answers to retain questions (utility)", MUSE)
