"""FLAT: forget-data-only loss adjustment."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from ..errors import ObliviateError
from .base import METHODS, Context, forward
from .objectives import F_DIVERGENCES, flat, mean_token_prob


@METHODS.register("flat")
@dataclass
class FLAT:
    """Maximise an f-divergence between template answers (the shipped refusals) and the forget
    answers, using the forget questions only: no retain set, no reference model."""

    divergence: str = "kl"  # kl | tv | js | pearson

    description: ClassVar[str] = "forget-data-only f-divergence between template and forget answers"
    needs: ClassVar[tuple[str, ...]] = ("forget", "refusal")
    paper: ClassVar[str] = "Wang et al. 2025, LLM Unlearning via Loss Adjustment with Only Forget Data"
    default_lr: ClassVar[float] = 1e-4
    # Forget-only: on data that shares its answer format with the retain set, retain
    # probability falls with forget probability, so the run stops once the forget set's
    # probability has halved (Jang et al. likewise stop once the targets are forgotten).
    forget_stop: ClassVar[float] = 0.5

    def __post_init__(self) -> None:
        if self.divergence not in F_DIVERGENCES:
            raise ObliviateError(f"flat divergence must be one of {sorted(F_DIVERGENCES)} "
                                 f"(got '{self.divergence}')")

    def loss(self, model, batches, ctx: Context):
        f = batches["forget"]
        good = ctx.pair("idk", f)
        bad_score = mean_token_prob(forward(model, f), f["labels"])
        good_score = mean_token_prob(forward(model, good), good["labels"])
        loss = flat(good_score, bad_score, self.divergence, ctx.world_size)
        return loss, {"good_p": float(good_score.detach().mean()),
                      "bad_p": float(bad_score.detach().mean())}
