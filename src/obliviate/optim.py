"""Sophia (Liu et al. 2023, "Sophia: A Scalable Stochastic Second-order Optimizer for Language
Model Pre-training"), the optimiser SOUL builds on, and its Gauss-Newton-Bartlett estimator.

Update per step: m <- b1 m + (1 - b1) g; every k steps h <- b2 h + (1 - b2) h_hat; then
w <- w - lr * clip(m / max(rho * h, eps), -1, 1) (plus decoupled weight decay). Where the
curvature is small the step is clipped to lr * sign(m), so it never explodes.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .methods.base import forward


class Sophia(torch.optim.Optimizer):
    def __init__(self, params, lr: float, betas: tuple[float, float] = (0.965, 0.99),
                 rho: float = 0.05, weight_decay: float = 0.0, eps: float = 1e-15):
        super().__init__(params, {"lr": lr, "betas": betas, "rho": rho,
                                  "weight_decay": weight_decay, "eps": eps})

    def _state(self, p: torch.Tensor) -> dict:
        st = self.state[p]
        if not st:
            st["m"] = torch.zeros_like(p)
            st["h"] = torch.zeros_like(p)
        return st

    @torch.no_grad()
    def update_hessian(self, scale: float) -> None:
        """Fold in h_hat = scale * g^2 from the gradients now in .grad (GNB: the gradient of the
        loss on labels sampled from the model, scale = number of sampled tokens)."""
        for group in self.param_groups:
            b2 = group["betas"][1]
            for p in group["params"]:
                if p.grad is not None:
                    self._state(p)["h"].mul_(b2).addcmul_(p.grad, p.grad, value=(1 - b2) * scale)

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            b1 = group["betas"][0]
            for p in group["params"]:
                if p.grad is None:
                    continue
                st = self._state(p)
                st["m"].mul_(b1).add_(p.grad, alpha=1 - b1)
                if group["weight_decay"]:
                    p.mul_(1 - group["lr"] * group["weight_decay"])
                denom = (group["rho"] * st["h"]).clamp(min=group["eps"])
                p.add_((st["m"] / denom).clamp(-1.0, 1.0), alpha=-group["lr"])
        return None


def gnb_loss(model, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, int]:
    """Loss on labels sampled from the model's own predictions at the answer positions, and the
    number of sampled tokens: its squared gradient, scaled by that number, is an unbiased
    estimate of the Gauss-Newton diagonal (Sophia-G)."""
    logits = forward(model, batch)[:, :-1]
    mask = batch["labels"][:, 1:] != -100
    sel = logits[mask].float()
    with torch.no_grad():
        sampled = torch.multinomial(torch.softmax(sel, -1), 1).squeeze(-1)
    return F.cross_entropy(sel, sampled), int(mask.sum())
