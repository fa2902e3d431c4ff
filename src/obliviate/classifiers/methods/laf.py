"""Label-Agnostic Forgetting (LAF): unlearning without labels (Shen et al. 2024, Label-Agnostic
Forgetting: A Supervision-Free Unlearning in Deep Models).

1. Two small variational autoencoders learn the distribution of the original extractor's
   representations: one of the retained data, one of the forget data.
2. Extractor unlearning: the feature extractor is updated so that forget representations
   become ones the forget VAE cannot reconstruct (their information is gone) and the retain
   VAE can (they look like the remaining data's).
3. Representation alignment: a contrastive loss pulls each retained sample's new
   representation to the original model's representation of the same sample and away from
   the others' and from the forget representations, so predictions on the rest are kept
   without any label.
4. Optional supervised repair (`repair_epochs` > 0): cross-entropy on the retained data, the
   paper's semi-supervised variant. Phases 1-3 read no label: `ctx.y_*` are not touched.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from ...config import require
from .base import CLASSIFIER_METHODS, Context, batches, optimise, steps_for, supervised


class VAE(nn.Module):
    def __init__(self, dim: int, latent: int = 8, hidden: int = 64) -> None:
        super().__init__()
        self.enc = nn.Sequential(nn.Linear(dim, hidden), nn.ReLU(), nn.Linear(hidden, 2 * latent))
        self.dec = nn.Sequential(nn.Linear(latent, hidden), nn.ReLU(), nn.Linear(hidden, dim))

    def loss(self, z: torch.Tensor) -> torch.Tensor:
        """Per-sample negative ELBO: squared reconstruction error + KL(q(h|z) || N(0, I)); [n]"""
        mu, logvar = self.enc(z).chunk(2, dim=-1)
        h = mu + torch.randn_like(mu) * (0.5 * logvar).exp()
        recon = ((self.dec(h) - z) ** 2).sum(-1)
        kl = 0.5 * (mu ** 2 + logvar.exp() - 1 - logvar).sum(-1)
        return recon + kl


def fit_vae(z: torch.Tensor, steps: int, seed: int) -> VAE:
    torch.manual_seed(seed)
    vae = VAE(z.shape[1])
    optimise(vae, lambda _: vae.loss(z).mean(), steps, 3e-3)
    for p in vae.parameters():
        p.requires_grad_(False)
    return vae


def contrastive(new: torch.Tensor, old: torch.Tensor, negatives: torch.Tensor, tau: float) -> torch.Tensor:
    """InfoNCE: sample i's new representation should be closest (cosine) to its own old one,
    among the batch's old representations and the forget representations."""
    new, old, negatives = (F.normalize(t, dim=-1) for t in (new, old, negatives))
    logits = torch.cat([new @ old.T, new @ negatives.T], dim=1) / tau  # [b, b + n_neg]
    return F.cross_entropy(logits, torch.arange(len(new)))


def extractor_params(model: nn.Module) -> list[nn.Parameter]:
    head = {id(p) for p in model.head.parameters()}
    return [p for p in model.parameters() if id(p) not in head]


@CLASSIFIER_METHODS.register("laf")
@dataclass
class LabelAgnosticForgetting:
    vae_steps: int = 200
    tau: float = 0.5
    forget_epochs: float = 5.0  # extractor unlearning: passes over the (small) forget set
    repair_epochs: float = 0.0  # > 0: the supervised repair (reads retained labels)

    description: ClassVar[str] = "reshape representations with VAEs and a contrastive loss, no labels"
    paper: ClassVar[str] = "Shen et al. 2024, Label-Agnostic Forgetting: A Supervision-Free Unlearning in Deep Models"
    default_lr: ClassVar[float] = 1e-3
    default_epochs: ClassVar[float] = 1  # the alignment pass over the retained data

    def __post_init__(self) -> None:
        require(self.vae_steps > 0, "params.vae_steps", f"must be positive (got {self.vae_steps})")
        require(self.tau > 0, "params.tau", f"must be positive (got {self.tau})")
        require(self.forget_epochs > 0, "params.forget_epochs", f"must be positive (got {self.forget_epochs})")
        require(self.repair_epochs >= 0, "params.repair_epochs", f"must be 0 or more (got {self.repair_epochs})")

    def run(self, model: nn.Module, ctx: Context) -> nn.Module:
        original = copy.deepcopy(model)
        with torch.no_grad():
            z_retain, z_forget = original.features(ctx.x_retain), original.features(ctx.x_forget)
        vae_r, vae_f = fit_vae(z_retain, self.vae_steps, ctx.seed), fit_vae(z_forget, self.vae_steps, ctx.seed + 1)
        params = extractor_params(model)
        steps = steps_for(len(ctx.x_forget), ctx.batch_size, self.forget_epochs)
        order = batches(len(ctx.x_forget), ctx.batch_size, ctx.rng(1), steps)

        def unlearn_extractor(_: int) -> torch.Tensor:
            z = model.features(ctx.x_forget[torch.from_numpy(next(order))])
            return vae_r.loss(z).mean() - torch.log1p(vae_f.loss(z)).mean()

        ctx.log["extractor_loss"] = optimise(model, unlearn_extractor, steps, ctx.lr, params=params)[-1]
        steps = steps_for(len(ctx.x_retain), ctx.batch_size, ctx.epochs)
        order_r = batches(len(ctx.x_retain), ctx.batch_size, ctx.rng(2), steps)

        def align(_: int) -> torch.Tensor:
            idx = torch.from_numpy(next(order_r))
            with torch.no_grad():
                negatives = model.features(ctx.x_forget[:ctx.batch_size])
            return contrastive(model.features(ctx.x_retain[idx]), z_retain[idx], negatives, self.tau)

        ctx.log["align_loss"] = optimise(model, align, steps, ctx.lr, params=params)[-1]
        if self.repair_epochs > 0:
            ctx.log["repair_loss"] = supervised(model, ctx.x_retain, ctx.y_retain, self.repair_epochs,
                                                ctx.lr, ctx.batch_size, ctx.rng(3))[-1]
        return model
