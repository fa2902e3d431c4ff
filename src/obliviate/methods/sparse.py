"""Sparsity-aware unlearning: an l1 penalty on the update, optionally prune first."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch

from ..errors import ObliviateError
from .base import METHODS, Context
from .objectives import l1_penalty


def prunable(model) -> list[tuple[str, torch.nn.Parameter]]:
    """Weight matrices of the transformer blocks (not embeddings, norms or the output head)."""
    return [(n, p) for n, p in model.named_parameters()
            if p.dim() == 2 and ".layers." in n and "embed" not in n]


@METHODS.register("sparse")
@dataclass
class SparseUnlearn:
    """The `base` method's loss + l1 * sum|w| over trainable weights (the adapter under LoRA).
    With prune > 0, that fraction of block weights (smallest magnitude, globally) is zeroed
    before unlearning and kept at zero: "prune first, then unlearn". Under LoRA the merged
    model is not sparse again, so prune-then-unlearn needs full weights."""

    base: str = "graddiff"
    base_params: dict[str, Any] = field(default_factory=dict)
    l1: float = 1e-5
    prune: float = 0.0  # fraction of block weights zeroed first

    description: ClassVar[str] = "sparsity-aware unlearning: l1 on weights, optional prune-then-unlearn"
    needs: ClassVar[tuple[str, ...]] = ()  # the base method's
    wraps: ClassVar[bool] = True
    paper: ClassVar[str] = "Jia et al. 2023, Model Sparsity Can Simplify Machine Unlearning"
    default_lr: ClassVar[float] = 1.5e-4

    def __post_init__(self) -> None:
        if not 0.0 <= self.prune < 1.0:
            raise ObliviateError(f"prune must be in [0, 1) (got {self.prune})")

    def setup(self, model, ctx: Context) -> None:
        if self.prune <= 0:
            return
        if ctx.lora:
            raise ObliviateError("sparse: prune > 0 needs full weights (a merged LoRA adapter "
                                 "would fill the pruned weights back in); set lora.enabled=false")
        weights = prunable(model)
        with torch.no_grad():
            magnitudes = torch.cat([p.detach().abs().flatten().cpu() for _, p in weights])
            k = max(1, int(self.prune * magnitudes.numel()))
            threshold = magnitudes.kthvalue(k).values
            for _, p in weights:
                keep = (p.abs() > threshold).to(p.dtype)
                p.mul_(keep)
                ctx.grad_masks[p] = keep

    def adjust_loss(self, loss, info: dict[str, float], model, batches, ctx: Context):
        if self.l1 > 0:
            reg = l1_penalty([p for p in model.parameters() if p.requires_grad])
            loss = loss + self.l1 * reg
            info = {**info, "l1": float(reg.detach())}
        return loss, info
