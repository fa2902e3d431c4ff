"""IdkPO: DPO that prefers a refusal over the forget answer."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from .base import METHODS, Context, batch_seq_nll, check_retain_kind, retain_term
from .objectives import dpo


@METHODS.register("idkpo")
@dataclass
class IdkPO:
    """DPO with the refusal as the preferred answer and the forget answer as the rejected one,
    + alpha * retain term. Both reference NLLs are over fixed forget-set inputs, so they are
    cached before training: no second model in memory."""

    beta: float = 0.1
    alpha: float = 1.0
    retain_loss: str = "nll"

    description: ClassVar[str] = "DPO preferring a refusal over the forget answer, plus a retain term"
    needs: ClassVar[tuple[str, ...]] = ("forget", "retain", "refusal", "reference")
    paper: ClassVar[str] = "Maini et al. 2024, TOFU (IdkPO); Rafailov et al. 2023, Direct Preference Optimization"
    default_lr: ClassVar[float] = 5e-4

    def __post_init__(self) -> None:
        check_retain_kind(self.retain_loss)

    def loss(self, model, batches, ctx: Context):
        return preferred_over_forget(self, model, batches, ctx, "idk")


def preferred_over_forget(method, model, batches, ctx: Context, stream: str):
    """DPO preferring stream `stream`'s answer (paired item by item with the forget batch; its
    reference NLLs cached as seq_nll:<stream>) over the forget answer, + alpha * retain term,
    with `method`'s beta, alpha and retain_loss: IdkPO's refusals, AltPO's alternate answers."""
    f = batches["forget"]
    idx = f["index"]
    lose = batch_seq_nll(model, f)
    win = batch_seq_nll(model, ctx.pair(stream, f))
    ref_win = ctx.cached(f"seq_nll:{stream}").to(idx.device)[idx]
    ref_lose = ctx.cached("seq_nll:forget").to(idx.device)[idx]
    forget_loss = ctx.backward_now(dpo(win, lose, ref_win, ref_lose, method.beta, ctx.world_size))
    retain, retain_value = retain_term(model, batches["retain"], method.retain_loss, ctx,
                                       method.alpha)
    return forget_loss + retain, {"dpo": float(forget_loss.detach()), "retain": retain_value}
