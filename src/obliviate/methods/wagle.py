"""WAGLE-style weight attribution: only the weights that matter most for forgetting update."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch

from ..errors import ObliviateError
from .base import METHODS, Context, nll_gradients
from .sparse import prunable


@METHODS.register("wagle")
@dataclass
class WAGLE:
    """Before unlearning, each block weight gets the first-order attribution score
    |w * dL_forget/dw| - (1/gamma) |w * dL_retain/dw| (the change in forget loss from removing
    the weight, minus its retain influence; WAGLE's bi-level attribution with a diagonal
    Hessian gamma * I). Full weights: only the top `ratio` of weights update (a gradient mask).
    LoRA: adapters go only on the top `ratio` of block modules by mean score."""

    base: str = "graddiff"
    base_params: dict[str, Any] = field(default_factory=dict)
    ratio: float = 0.2  # fraction of weights (or modules, under LoRA) that update
    gamma: float = 1.0
    batches: int = 4  # batches of forget and retain used for the attribution

    description: ClassVar[str] = "weight attribution mask: only the most forget-relevant weights update"
    needs: ClassVar[tuple[str, ...]] = ()  # the base method's (the retain set is used if given)
    wraps: ClassVar[bool] = True
    paper: ClassVar[str] = "Jia et al. 2024, WAGLE: Strategic Weight Attribution for Effective and Modular Unlearning in LLMs"
    default_lr: ClassVar[float] = 3e-4

    def __post_init__(self) -> None:
        if not 0.0 < self.ratio <= 1.0:
            raise ObliviateError(f"ratio must be in (0, 1] (got {self.ratio})")

    def _gradients(self, model, ctx: Context, stream: str) -> dict[str, torch.Tensor]:
        """The stream's mean NLL gradient for each prunable weight, in `batches` batches."""
        weights, items = prunable(model), ctx.items[stream]
        grads = nll_gradients(model, items, ctx.pad_id, [p for _, p in weights],
                              max(1, -(-len(items) // self.batches)))
        return {n: g for (n, _), g in zip(weights, grads, strict=True)}

    def setup(self, model, ctx: Context) -> None:
        g_f = self._gradients(model, ctx, "forget")
        g_r = self._gradients(model, ctx, "retain") if "retain" in ctx.items else {}
        scores = {}
        for n, p in prunable(model):
            s = (p.detach() * g_f[n]).abs()
            if n in g_r:
                s = s - (p.detach() * g_r[n]).abs() / self.gamma
            scores[n] = s
        if ctx.lora:
            ctx.state["wagle_modules"] = {n.removesuffix(".weight"): float(s.mean())
                                          for n, s in scores.items()}
        else:
            flat = torch.cat([s.flatten().cpu() for s in scores.values()])
            k = max(1, int(self.ratio * flat.numel()))
            threshold = flat.topk(k).values[-1]
            params = dict(model.named_parameters())
            for n, s in scores.items():
                ctx.grad_masks[params[n]] = (s >= threshold).to(s.dtype)

    def target_modules(self, model, ctx: Context):
        """Under LoRA, adapters on the top `ratio` of block modules (when the base method names
        no modules of its own)."""
        scores = ctx.state.get("wagle_modules")
        if scores is None:
            return None
        ranked = sorted(scores, key=scores.get, reverse=True)
        return ranked[:max(1, round(self.ratio * len(ranked)))]
