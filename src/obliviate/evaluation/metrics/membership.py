"""Membership-inference attacks as metrics: each scores every item (higher = "was trained
on", see evaluation/mia.py for the formulas) and is reported as the ROC AUC of the forget set
(members) against a holdout set (non-members); 0.5 = no signal, compare with the oracle's."""

from __future__ import annotations

import numpy as np
import torch

from ...encoding import collate, encode
from ...methods.objectives import mean_nll
from .. import mia
from ..views import MembershipView, SideView
from .base import metric

MUSE = "Shi et al. 2024 (MUSE)"
COMMON = {"suite": "mia", "direction": "→ oracle's", "range": "[0, 1]", "roles": ("mia",)}


@metric("auc_loss", title="MIA AUC, LOSS", **COMMON, source=f"Yeom et al. 2018; {MUSE}",
        description="ROC AUC of -NLL: members are more likely than non-members")
def loss_attack(side: SideView, view: MembershipView) -> np.ndarray:
    return mia.loss_score(side.stats().nll_mean)


@metric("auc_zlib", title="MIA AUC, ZLib", **COMMON, source=f"Carlini et al. 2021; {MUSE}",
        description="ROC AUC of -NLL / zlib-compressed length of the answer")
def zlib_attack(side: SideView, view: MembershipView) -> np.ndarray:
    return mia.zlib_score(side.stats().nll_mean, [ex.answer for ex in side.examples])


@metric("auc_min_k", title="MIA AUC, Min-K%", **COMMON, headline=("mia",),
        source=f"Shi et al. 2024, Min-K%; {MUSE}",
        description="ROC AUC of the mean of the k% lowest token log-probs (k = mia_k)")
def min_k_attack(side: SideView, view: MembershipView) -> np.ndarray:
    return mia.min_k_score(side.stats().token_logprobs, view.k)


@metric("auc_min_k_pp", title="MIA AUC, Min-K%++", **COMMON, source="Zhang et al. 2024, Min-K%++",
        description="ROC AUC of Min-K% over z-scores of token log-probs under the model's own "
                    "next-token distribution")
def min_k_pp_attack(side: SideView, view: MembershipView) -> np.ndarray:
    return mia.min_k_pp_score(side.stats().token_z, view.k)


@metric("auc_reference", title="MIA AUC, Reference", **COMMON, optional=True, source="Carlini et al. 2021",
        description="ROC AUC of NLL relative to a reference model's (mia_reference=MODEL)")
def reference_attack(side: SideView, view: MembershipView) -> np.ndarray | None:
    ref = side.reference_stats()
    return None if ref is None else mia.reference_score(side.stats().nll_mean, ref.nll_mean)


@metric("auc_gradnorm", title="MIA AUC, GradNorm", **COMMON, optional=True, source="MUSE; OpenUnlearning",
        description="ROC AUC of -|gradient of the answer NLL| (mia_gradnorm=true; a backward "
                    "pass per item)")
def gradnorm_attack(side: SideView, view: MembershipView) -> np.ndarray | None:
    if not view.gradnorm:
        return None
    return mia.gradnorm_score(grad_norms(view.engine, side.examples))


def grad_norms(engine, examples) -> np.ndarray:
    """Per-item norm of the gradient of the answer NLL w.r.t. all trainable parameters: one
    forward and backward per item (the only MIA statistic the shared pass cannot give)."""
    model, out = engine.model, []
    params = [p for p in model.parameters() if p.requires_grad]
    for i, ex in enumerate(examples):
        batch = collate([encode(engine.tokenizer, ex, i, engine.template)], engine.tokenizer.pad_token_id)
        logits = model(input_ids=batch["input_ids"].to(engine.device),
                       attention_mask=batch["attention_mask"].to(engine.device)).logits
        grads = torch.autograd.grad(mean_nll(logits, batch["labels"].to(engine.device)), params,
                                    allow_unused=True)
        out.append(float(torch.sqrt(sum((g.float() ** 2).sum() for g in grads if g is not None))))
    return np.array(out)
