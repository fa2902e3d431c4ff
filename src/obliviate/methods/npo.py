"""Negative preference optimisation with a retain NLL term."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from .base import METHODS, ReferenceCache, batch_nll, batch_seq_nll
from .objectives import npo


@METHODS.register("npo")
@dataclass
class NPO:
    """NPO loss on forget (reference NLLs cached before training) + alpha * NLL(retain)."""

    beta: float = 0.1
    alpha: float = 1.0  # retain weight; 0 gives plain NPO

    description: ClassVar[str] = ("negative preference optimisation: push forget likelihood "
                                  "below the reference model's, bounded, plus a retain term")
    needs: ClassVar[tuple[str, ...]] = ("forget", "retain", "reference")
    paper: ClassVar[str] = "Zhang et al. 2024, Negative Preference Optimization"

    def loss(self, model, batches, ref: ReferenceCache):
        f = batches["forget"]
        seq = batch_seq_nll(model, f)
        forget_loss = npo(seq, ref.seq_nll(f["index"]), self.beta)
        info = {"npo": float(forget_loss.detach())}
        if self.alpha == 0:
            return forget_loss, info
        retain = batch_nll(model, batches["retain"])
        info["retain_nll"] = float(retain.detach())
        return forget_loss + self.alpha * retain, info
