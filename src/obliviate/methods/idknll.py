"""IdkNLL: teach the model to answer forget questions with a refusal."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from .base import METHODS, Context, batch_nll, check_retain_kind, retain_term


@METHODS.register("idknll")
@dataclass
class IdkNLL:
    """NLL of a refusal ("I don't know.", ...) on each forget question + alpha * retain term."""

    alpha: float = 1.0
    retain_loss: str = "nll"

    description: ClassVar[str] = "fine-tune forget questions towards refusal answers, plus a retain term"
    needs: ClassVar[tuple[str, ...]] = ("forget", "retain", "refusal")
    paper: ClassVar[str] = "Maini et al. 2024, TOFU: A Task of Fictitious Unlearning for LLMs"
    default_lr: ClassVar[float] = 2.5e-4

    def __post_init__(self) -> None:
        check_retain_kind(self.retain_loss)

    def loss(self, model, batches, ctx: Context):
        idk = ctx.backward_now(batch_nll(model, ctx.pair("idk", batches["forget"]), ctx.world_size))
        retain, retain_value = retain_term(model, batches["retain"], self.retain_loss, ctx,
                                           self.alpha)
        return idk + retain, {"idk_nll": float(idk.detach()), "retain": retain_value}
