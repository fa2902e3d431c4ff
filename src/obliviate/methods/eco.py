"""ECO: a prompt classifier gates embedding corruption; the model's weights stay."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch

from ..encoding import Encoded
from ..errors import ObliviateError
from ..systems import (
    SYSTEMS,
    System,
    gate_features,
    lm_step,
    positions,
    prompt_features,
    prompt_positions,
    prompt_window,
    scoring_positions,
    youden_threshold,
)
from .base import METHODS, Context, mean_answer_prob
from .objectives import zo_step

NOISE_POSITIONS = 4096  # the noise table repeats after this many positions


class Classifiers(torch.nn.Module):
    """One logistic classifier per request over standardised pooled hidden states; a prompt is
    flagged when any request's probability reaches its threshold."""

    def __init__(self, requests: int, width: int) -> None:
        super().__init__()
        for name, shape in (("weight", (requests, width)), ("bias", (requests,)),
                            ("mean", (requests, width)), ("scale", (requests, width)),
                            ("threshold", (requests,)), ("sigma", (requests,))):
            self.register_parameter(name, torch.nn.Parameter(torch.zeros(shape), requires_grad=False))

    def strength(self, pooled: torch.Tensor) -> torch.Tensor:
        """Corruption strength per row [batch]: the largest sigma of the requests that flag it
        (0 when none does)."""
        z = (pooled.float()[:, None, :] - self.mean) / self.scale  # [batch, requests, d]
        p = torch.sigmoid((z * self.weight).sum(-1) + self.bias)
        flagged = p >= self.threshold
        return (flagged.float() * self.sigma).amax(-1)


@SYSTEMS.register("eco")
class ECOSystem(System):
    """Flagged prompts have their token embeddings corrupted by Gaussian noise of strength
    sigma (relative to each embedding's RMS), fixed per position by the system's seed; the
    answer is then generated from the corrupted prompt. Unflagged prompts run the base as is."""

    kind: ClassVar[str] = "eco"
    threat: ClassVar[str] = ("access to the base weights, or a question the classifier does not "
                             "flag (it reaches the untouched model)")

    def __init__(self, base, settings: dict[str, Any]) -> None:
        super().__init__(base, settings)
        width = base.config.hidden_size
        self.parts["classifiers"] = Classifiers(int(settings["requests"]), width)
        self.layer = int(settings["layer"])
        if not 0 < self.layer <= base.config.num_hidden_layers:
            raise ValueError(f"layer {self.layer} is not a layer of this base")
        self.window = int(settings.get("window", 0))
        gen = torch.Generator().manual_seed(int(settings["seed"]))
        self.register_buffer("noise", torch.randn(NOISE_POSITIONS, width, generator=gen),
                             persistent=False)
        self.force: float | None = None  # a fixed strength for every row (sigma's fit)

    def prefill(self, ids, mask, prompt_mask, use_cache, part: str | None = None):
        pm = prompt_positions(mask, prompt_mask)
        pos = positions(mask) if use_cache else scoring_positions(mask)
        base_out = None
        if self.force is not None:
            strength = torch.full((len(ids),), self.force, device=ids.device)
        else:
            feats, base_out = gate_features(self.base, ids, mask, prompt_mask, [self.layer],
                                            self.window, pos, use_cache)
            strength = self.parts["classifiers"].strength(feats[:, 0])
        if not bool((strength > 0).any()):  # nothing flagged: the base as it is
            logits, cache = base_out or lm_step(self.base, mask, ids=ids, pos=pos, use_cache=use_cache)
            return logits, self.base_state(mask, cache)
        del base_out  # not needed once a row is flagged: free the base's logits and cache first
        embeds = self.base.get_input_embeddings()(ids)
        rms = embeds.float().pow(2).mean(-1, keepdim=True).sqrt()
        noise = self.noise[positions(mask) % NOISE_POSITIONS].to(embeds.device)
        scale = (strength[:, None, None] * pm[..., None]).to(embeds.dtype)
        embeds = embeds + scale * (rms * noise).to(embeds.dtype)
        logits, cache = lm_step(self.base, mask, embeds=embeds, pos=pos, use_cache=use_cache)
        return logits, self.base_state(mask, cache)


def _features(system: ECOSystem, items: list[Encoded], pad_id: int) -> np.ndarray:
    """Pooled prompt states at the system's layer, one row per item [n, d]."""
    return prompt_features(system.base, items, pad_id, [system.layer], system.window)[:, 0].numpy()


@METHODS.register("eco")
@dataclass
class ECO:
    """Embedding-corrupted prompts. A logistic classifier over the base's pooled prompt states
    (layer `layer`) separates the forget questions from negatives (the retain questions and the
    shipped general questions); its threshold is calibrated on a held-out quarter (Youden's J),
    then it is refit on everything. The corruption strength sigma is fit by zeroth-order
    descent (central differences, on log sigma) so the forget answers' mean probability under
    corruption reaches `target_prob` (or, given never-seen holdout items, their probability).
    No gradient reaches any weight. Each request adds a classifier (sequential requests)."""

    layer: int = -1  # -1: the middle of the stack
    target_prob: float = 0.05
    sigma_start: float = 1.0
    zo_steps: int = 12
    zo_lr: float = 0.5
    seed: int = 0

    description: ClassVar[str] = ("embedding-corrupted prompts: a classifier flags forget "
                                  "questions, whose embeddings get noise (weights untouched)")
    needs: ClassVar[tuple[str, ...]] = ("forget", "retain", "general")
    paper: ClassVar[str] = ("Liu et al. 2024, Large Language Model Unlearning via "
                            "Embedding-Corrupted Prompts")
    default_lr: ClassVar[float] = 1.0  # unused: sigma is fit by zeroth-order steps (zo_lr)
    system: ClassVar[str] = "eco"
    extends: ClassVar[bool] = True

    def __post_init__(self) -> None:
        if not 0.0 < self.target_prob < 1.0:
            raise ObliviateError(f"eco target_prob must be in (0, 1) (got {self.target_prob})")
        if not self.sigma_start > 0 or self.zo_steps < 0 or not self.zo_lr > 0:
            raise ObliviateError("eco sigma_start and zo_lr must be positive, zo_steps >= 0")

    def build_system(self, model, ctx: Context) -> ECOSystem:
        old = model if isinstance(model, ECOSystem) else None
        base = old.base if old is not None else model
        n = base.config.num_hidden_layers
        layer = (old.layer if old is not None else
                 (self.layer if self.layer >= 0 else max(1, n // 2)))
        if not 0 < layer <= n:
            raise ObliviateError(f"eco layer must be in 1..{n} (got {layer})")
        requests = (int(old.settings["requests"]) if old is not None else 0) + 1
        seed = int(old.settings["seed"]) if old is not None else self.seed
        window = old.window if old is not None else prompt_window(ctx.items["forget"])
        system = ECOSystem(base, {"requests": requests, "layer": layer, "seed": seed, "window": window})
        if old is not None:
            with torch.no_grad():
                for name, p in old.parts["classifiers"].named_parameters():
                    getattr(system.parts["classifiers"], name)[:-1].copy_(p)
        return system

    def fit(self, system: ECOSystem, ctx: Context) -> list[dict[str, float]]:
        clf_log = self._fit_classifier(system, ctx)
        sigma, trace = self._fit_sigma(system, ctx)
        with torch.no_grad():
            system.parts["classifiers"].sigma[-1] = sigma
        return [{"loss": trace[-1], **clf_log, "sigma": sigma, "zo_steps": len(trace) - 1}]

    def _fit_classifier(self, system: ECOSystem, ctx: Context) -> dict[str, float]:
        from sklearn.linear_model import LogisticRegression

        pos = _features(system, ctx.items["forget"], ctx.pad_id)
        neg = _features(system, ctx.items.get("retain", []) + ctx.items["general"], ctx.pad_id)
        x, y = np.concatenate([pos, neg]), np.r_[np.ones(len(pos)), np.zeros(len(neg))]
        rng = np.random.default_rng(self.seed)
        calib = rng.random(len(y)) < 0.25
        if calib[y == 1].sum() == 0 or calib[y == 0].sum() == 0:
            calib[:] = False  # too few items to hold any out: calibrate on the training scores
        train = ~calib if calib.any() else np.ones(len(y), dtype=bool)
        mean, scale = x[train].mean(0), x[train].std(0) + 1e-6
        clf = LogisticRegression(class_weight="balanced", max_iter=2000)
        clf.fit((x[train] - mean) / scale, y[train])
        held = calib if calib.any() else train
        p = clf.predict_proba((x[held] - mean) / scale)[:, 1]
        threshold, tpr, fpr = youden_threshold(p[y[held] == 1], p[y[held] == 0])
        mean, scale = x.mean(0), x.std(0) + 1e-6  # refit on everything, same threshold
        clf.fit((x - mean) / scale, y)
        c = system.parts["classifiers"]
        with torch.no_grad():
            c.weight[-1] = torch.as_tensor(clf.coef_[0], dtype=torch.float32)
            c.bias[-1] = float(clf.intercept_[0])
            c.mean[-1] = torch.as_tensor(mean, dtype=torch.float32)
            c.scale[-1] = torch.as_tensor(scale, dtype=torch.float32)
            c.threshold[-1] = threshold
        return {"classifier_tpr": tpr, "classifier_fpr": fpr, "threshold": threshold,
                "calibrated_on": int(held.sum())}

    def _fit_sigma(self, system: ECOSystem, ctx: Context) -> tuple[float, list[float]]:
        items = ctx.items["forget"][:128]
        holdout = ctx.items.get("holdout")
        target = (mean_answer_prob(system.base, holdout, ctx.pad_id) if holdout
                  else self.target_prob)

        def objective(log_sigma: float) -> float:
            system.force = math.exp(log_sigma)
            try:
                p = mean_answer_prob(system, items, ctx.pad_id)
            finally:
                system.force = None
            return (math.log(max(p, 1e-12)) - math.log(max(target, 1e-12))) ** 2

        x = math.log(self.sigma_start)
        trace = [objective(x)]
        for _ in range(self.zo_steps):
            x, _ = zo_step(objective, x, mu=0.1, lr=self.zo_lr, lower=-math.inf)
            trace.append(objective(x))
        return math.exp(x), trace
