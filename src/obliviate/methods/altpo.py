"""AltPO: preference optimisation towards in-domain alternate answers."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import ClassVar

import torch

from ..data.examples import Example
from ..errors import ObliviateError
from .base import METHODS, Context, cache_seq_nll, check_retain_kind
from .idkpo import preferred_over_forget


def alternate_answers(forget: list[Example], retain: list[Example], seed: int,
                      method: str = "altpo") -> list[str]:
    """One plausible wrong answer per forget item, fixed by `seed`: one of its perturbed
    answers (TOFU's and the built-in benchmark's), else the answer of another item with the
    same relation (another entity's fact of that kind), else an error naming what is missing."""
    gen = torch.Generator().manual_seed(seed)
    by_relation: dict[str, list[str]] = {}
    for ex in (*retain, *forget):
        if ex.relation:
            by_relation.setdefault(ex.relation, []).append(ex.answer)
    out = []
    for ex in forget:
        pool = list(ex.perturbed_answers) or [a for a in by_relation.get(ex.relation or "", []) if a != ex.answer]
        if not pool:
            raise ObliviateError(f"{method}: forget item {ex.id or ex.question!r} has no alternate answer: "
                                 "give it perturbed_answer, or a relation shared with other items")
        out.append(pool[int(torch.randint(len(pool), (1,), generator=gen))])
    return out


@METHODS.register("altpo")
@dataclass
class AltPO:
    """DPO with an in-domain alternate answer preferred over the forget answer, + alpha * retain
    term (OpenUnlearning's AltPO recipe: its DPO trainer on alternate answers). The paper
    generates the alternates with the model; here they are the items' own perturbed answers,
    or another entity's answer to the same relation, so a run needs no generation. Both
    reference NLLs are over fixed inputs and cached before training."""

    beta: float = 0.1
    alpha: float = 1.0
    retain_loss: str = "nll"
    seed: int = 0

    description: ClassVar[str] = "DPO preferring an in-domain alternate answer over the forget answer, plus a retain term"
    needs: ClassVar[tuple[str, ...]] = ("forget", "retain", "reference")
    paper: ClassVar[str] = "Mekala et al. 2025, Alternate Preference Optimization for Unlearning Factual Knowledge in LLMs"
    default_lr: ClassVar[float] = 5e-4

    def __post_init__(self) -> None:
        check_retain_kind(self.retain_loss)
        if not 0 < self.beta < float("inf") or not 0 <= self.alpha < float("inf"):
            raise ObliviateError("altpo beta must be finite and positive, alpha finite and 0 or more")

    def setup(self, model, ctx: Context) -> None:
        if ctx.encoder is None:
            raise ObliviateError("altpo encodes alternate answers: its Context needs the run's encoder")
        forget = ctx.examples["forget"]
        answers = alternate_answers(forget, ctx.examples.get("retain", []), self.seed)
        ctx.items["alt"] = [ctx.encoder(dataclasses.replace(ex, answer=a), i, ctx.template)
                            for i, (ex, a) in enumerate(zip(forget, answers, strict=True))]
        ctx.cache["seq_nll:alt"] = cache_seq_nll(model, ctx.items["alt"], ctx.pad_id)

    def loss(self, model, batches, ctx: Context):
        return preferred_over_forget(self, model, batches, ctx, "alt")
