"""UnSTAR: fine-tune on anti-samples, a wrong answer with a misleading rationale."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import ClassVar

from ..data.examples import Example
from ..errors import ObliviateError
from .altpo import alternate_answers
from .base import METHODS, Context, batch_nll, check_retain_kind, retain_term

# Misleading rationales for models too small to write their own (the paper has the model
# generate them): each asserts the wrong answer as settled fact.
RATIONALES = (
    "{answer} The records of that time confirm it.",
    "{answer} Every account of it agrees on this.",
    "{answer} That is how it has always been told.",
)


def anti_samples(forget: list[Example], retain: list[Example], seed: int,
                 paraphrases: bool) -> list[Example]:
    """One anti-sample per forget item, aligned with it: its question with a wrong in-domain
    answer (altpo.alternate_answers) followed by a misleading rationale; with `paraphrases`,
    also one per paraphrased question (same wrong answer), after the aligned ones."""
    wrong = alternate_answers(forget, retain, seed, method="unstar")
    out = [dataclasses.replace(ex, answer=RATIONALES[i % len(RATIONALES)].format(answer=w))
           for i, (ex, w) in enumerate(zip(forget, wrong, strict=True))]
    if paraphrases:
        out += [dataclasses.replace(anti, question=ex.paraphrased_question)
                for ex, anti in zip(forget, list(out), strict=True) if ex.paraphrased_question]
    return out


@METHODS.register("unstar")
@dataclass
class UnSTAR:
    """Each forget question (and its paraphrase, where the data has one) is fine-tuned towards
    an anti-sample: a plausible wrong answer and a rationale that asserts it. NLL on the
    anti-samples + alpha * retain term + siblings * NLL on the retain items of the forget
    items' own entities (every step: a wrong fact about a person spreads to that person's
    other facts first, and the random retain batches rarely hold them). That is what makes it
    fine-grained: with a split that forgets some relations of an entity ("forget10.born_in"),
    the entity's other relations are those retain items, and they stay."""

    alpha: float = 1.0
    siblings: float = 1.0  # weight of the forget entities' other facts (retain items naming them)
    paraphrases: bool = True
    retain_loss: str = "nll"
    seed: int = 0

    description: ClassVar[str] = "UnSTAR: fine-tune on anti-samples (wrong answer + misleading rationale), plus a retain term"
    needs: ClassVar[tuple[str, ...]] = ("forget", "retain")
    paper: ClassVar[str] = "Sinha et al. 2024, UnSTAR: Unlearning with Self-Taught Anti-Sample Reasoning for LLMs"
    default_lr: ClassVar[float] = 1e-3

    def __post_init__(self) -> None:
        check_retain_kind(self.retain_loss)
        for key in ("alpha", "siblings"):
            if not 0 <= getattr(self, key) < float("inf"):
                raise ObliviateError(f"unstar {key} must be finite and 0 or more (got {getattr(self, key)})")

    def setup(self, model, ctx: Context) -> None:
        if ctx.encoder is None:
            raise ObliviateError("unstar encodes anti-samples: its Context needs the run's encoder")
        forget = ctx.examples["forget"]
        samples = anti_samples(forget, ctx.examples.get("retain", []), self.seed, self.paraphrases)
        ctx.items["anti"] = [ctx.encoder(ex, i, ctx.template) for i, ex in enumerate(samples)]
        # paraphrase anti-samples follow the aligned ones; a batch with item i trains on both
        with_para = [i for i, ex in enumerate(forget) if ex.paraphrased_question] if self.paraphrases else []
        ctx.cache["unstar_paraphrase"] = {i: len(forget) + k for k, i in enumerate(with_para)}
        entities = {ex.entity for ex in forget if ex.entity}
        ctx.cache["unstar_siblings"] = [i for i, ex in enumerate(ctx.examples.get("retain", []))
                                        if ex.entity in entities]

    def loss(self, model, batches, ctx: Context):
        f = batches["forget"]
        idx = f["index"].tolist()
        extra = ctx.cache["unstar_paraphrase"]
        rows = idx + [extra[i] for i in idx if i in extra]
        anti = ctx.batch_of("anti", rows, f["input_ids"].device)
        forget = ctx.backward_now(batch_nll(model, anti, ctx.world_size))
        info = {"anti_nll": float(forget.detach())}
        siblings = ctx.cache["unstar_siblings"]
        if siblings and self.siblings > 0:
            pick = [siblings[(ctx.state.get("unstar_step", 0) * 32 + k) % len(siblings)]
                    for k in range(min(32, len(siblings)))]  # all of them, or 32 in turn
            ctx.state["unstar_step"] = ctx.state.get("unstar_step", 0) + 1
            near = self.siblings * batch_nll(model, ctx.batch_of("retain", pick, f["input_ids"].device),
                                             ctx.world_size)
            forget = forget + ctx.backward_now(near)
            info["siblings"] = float(near.detach()) / self.siblings
        retain, retain_value = retain_term(model, batches["retain"], self.retain_loss, ctx,
                                           self.alpha)
        return forget + retain, {**info, "retain": retain_value}
