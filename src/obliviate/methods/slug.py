"""SLUG: one gradient, one layer, one step of searched size."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch

from ..errors import ObliviateError
from .base import METHODS, Context, eval_mode, mean_answer_prob, nll_gradients


def pareto_front(forget: list[float], retain: list[float]) -> list[int]:
    """Indices not dominated when forget importance is maximised and the retain cost (gradient
    alignment) minimised, ordered by forget importance (highest first). Identical points do not
    dominate each other: twins are both kept."""
    order = sorted(range(len(forget)), key=lambda i: (-forget[i], retain[i]))
    front, best_retain = [], math.inf
    for i in order:
        twin = bool(front) and (forget[i], retain[i]) == (forget[front[-1]], retain[front[-1]])
        if retain[i] < best_retain or twin:
            front.append(i)
            best_retain = retain[i]
    return front


@METHODS.register("slug")
@dataclass
class SLUG:
    """Single layer, single gradient. The gradients of the forget NLL (every forget item) and of
    the retain NLL (the first `retain_items` retain items) are computed once, one backward per
    batch. For each weight matrix of the blocks, forget importance = |g_forget| / |W| and
    gradient alignment = |cos(g_forget, g_retain)| (a step along g_forget moves the retain loss
    in proportion to it); the matrices on the Pareto front of the two (high importance, low
    alignment) are candidates. Each
    candidate is moved alone along the forget gradient, W + s |W| g / |g| (ascent on the forget
    NLL), with s found by bisection: the smallest s at which the forget set's mean answer
    probability falls to the target (the never-seen holdout items' level when the run has a
    holdout, else `forget_ratio` times its start). The candidate that keeps the retain set's
    probability highest wins; every other weight stays bit for bit. Full weights only: the
    step is on one real matrix."""

    forget_ratio: float = 0.5
    max_scale: float = 1.0  # the largest step, relative to the matrix's norm
    search: int = 12  # bisection steps per candidate
    front: int = 4  # candidates tried, best forget-to-retain ratio first
    probe_items: int = 64  # items of each set measured per candidate step
    retain_items: int = 64  # retain items in the retain gradient
    grad_batch: int = 16

    description: ClassVar[str] = "SLUG: one gradient, a single Pareto-chosen layer, one step of searched size"
    needs: ClassVar[tuple[str, ...]] = ("forget", "retain")
    paper: ClassVar[str] = "Cai et al. 2024, Single Layer Single Gradient Unlearning"
    default_lr: ClassVar[float] = 1.0  # unused: no optimiser, the step size is searched
    full_weights: ClassVar[bool] = True

    def __post_init__(self) -> None:
        checks = {"forget_ratio": 0 < self.forget_ratio < 1, "max_scale": 0 < self.max_scale < math.inf,
                  "search": self.search >= 1, "front": self.front >= 1,
                  "probe_items": self.probe_items >= 1, "retain_items": self.retain_items >= 1,
                  "grad_batch": self.grad_batch >= 1}
        for key, ok in checks.items():
            if not ok:
                raise ObliviateError(f"slug {key} out of range (got {getattr(self, key)}): forget_ratio "
                                     "in (0, 1), max_scale finite and positive, the counts 1 or more")

    def fit(self, model, ctx: Context) -> list[dict[str, float]]:
        named = [(n, p) for n, p in model.named_parameters() if p.dim() == 2 and ".layers." in n]
        if not named:
            raise ObliviateError("slug: this model has no weight matrices under '*.layers.*'")
        names, params = [n for n, _ in named], [p for _, p in named]
        forget, retain = ctx.items["forget"], ctx.items["retain"][:self.retain_items]
        with eval_mode(model):
            g_f = nll_gradients(model, forget, ctx.pad_id, params, self.grad_batch)
            g_r = nll_gradients(model, retain, ctx.pad_id, params, self.grad_batch)
        norms = [float(p.detach().float().norm()) or 1.0 for p in params]
        imp = [float(g.float().norm()) / n for g, n in zip(g_f, norms, strict=True)]
        align = [abs(float(torch.nn.functional.cosine_similarity(a.float().flatten(), b.float().flatten(), dim=0)))
                 for a, b in zip(g_f, g_r, strict=True)]
        front = sorted(pareto_front(imp, align), key=lambda i: -imp[i] / max(align[i], 1e-12))[:self.front]
        probe_f, probe_r = forget[:self.probe_items], ctx.items["retain"][:self.probe_items]
        with torch.no_grad(), eval_mode(model):
            start_f = mean_answer_prob(model, probe_f, ctx.pad_id)
            target = (mean_answer_prob(model, ctx.items["holdout"], ctx.pad_id)
                      if ctx.items.get("holdout") else self.forget_ratio * start_f)
            tried = [self._search(model, params[i], g_f[i], probe_f, probe_r, target, ctx.pad_id)
                     for i in front]
        reached = [k for k, t in enumerate(tried) if t[1] <= target]
        # the target reached: keep the retain set best; not reached within max_scale (as a
        # step budget runs out): forget the most, and the log says so
        k = (max(reached, key=lambda k: tried[k][2]) if reached
             else min(range(len(tried)), key=lambda k: tried[k][1]))
        i, (scale, f, r) = front[k], tried[k]
        with torch.no_grad():
            params[i].add_(_step(params[i], g_f[i], scale))
        return [{"loss": f, "layer": names[i], "scale": scale, "forget_prob": f, "retain_prob": r,
                 "forget_start": start_f, "forget_target": target, "target_reached": float(bool(reached)),
                 "forget_importance": imp[i], "gradient_alignment": align[i], "candidates": len(front)}]

    def _search(self, model, w: torch.nn.Parameter, g: torch.Tensor, probe_f, probe_r,
                target: float, pad_id: int) -> tuple[float, float, float]:
        """(step scale, forget prob, retain prob): the smallest scale in (0, max_scale] whose
        forget probability reaches `target`, else max_scale. `w` is restored on return."""
        w0 = w.detach().clone()

        def at(scale: float) -> float:
            w.copy_(w0 + _step(w0, g, scale))
            return mean_answer_prob(model, probe_f, pad_id)

        try:
            lo, hi, f_hi = 0.0, self.max_scale, at(self.max_scale)
            if f_hi <= target:
                for _ in range(self.search):
                    mid = (lo + hi) / 2
                    f_mid = at(mid)
                    if f_mid <= target:
                        hi, f_hi = mid, f_mid
                    else:
                        lo = mid
            at(hi)
            return hi, f_hi, mean_answer_prob(model, probe_r, pad_id)
        finally:
            w.copy_(w0)


def _step(w: torch.Tensor, g: torch.Tensor, scale: float) -> torch.Tensor:
    """scale * |w| * g / |g|: a step along the forget gradient, sized relative to the matrix."""
    return (scale * w.detach().float().norm() / g.float().norm().clamp(min=1e-12) * g.float()).to(w.dtype)
