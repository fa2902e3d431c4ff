"""PDU: flatten the forget answers' next-token distribution under a retain-loss constraint."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from .base import METHODS, Context, batch_nll, forward
from .objectives import answer_logits, dual_ascent, logit_flatness


@METHODS.register("pdu")
@dataclass
class PDU:
    """min gamma * flatness(forget) subject to NLL(retain) <= eps, solved primal-dual: the loss
    is gamma * flatness + lam * (NLL(retain) - eps) and lam rises by dual ascent while the
    constraint is violated, falls back to 0 while it holds. eps = retain NLL at the first step
    + `retain_slack` unless given."""

    gamma: float = 0.01  # flatness is in squared logits (hundreds at the start): a small weight
    lam: float = 1.0  # initial dual variable (the retain weight)
    dual_step: float = 1.0
    retain_eps: float | None = None
    retain_slack: float = 0.05  # nats above the starting retain NLL

    description: ClassVar[str] = "primal-dual: flatten forget predictions, retain NLL kept under a bound"
    needs: ClassVar[tuple[str, ...]] = ("forget", "retain")
    paper: ClassVar[str] = "Entesari et al. 2025, Constrained Entropic Unlearning: A Primal-Dual Framework for LLMs"
    default_lr: ClassVar[float] = 1e-4

    def loss(self, model, batches, ctx: Context):
        f = batches["forget"]
        logits, _ = answer_logits(forward(model, f), f["labels"])
        forget = logit_flatness(logits, ctx.world_size)
        retain = batch_nll(model, batches["retain"], ctx.world_size)
        st = ctx.state.setdefault("pdu", {"lam": self.lam, "eps": self.retain_eps})
        # the bound and the dual step read the whole batch's retain loss, so every
        # data-parallel process keeps the same dual variable
        whole = ctx.global_value(retain)
        if st["eps"] is None:
            st["eps"] = whole + self.retain_slack
        loss = self.gamma * forget + st["lam"] * (retain - st["eps"])
        info = {"flatness": float(forget.detach()), "retain": whole, "lam": st["lam"]}
        st["lam"] = dual_ascent(st["lam"], whole - st["eps"], self.dual_step)
        return loss, info
