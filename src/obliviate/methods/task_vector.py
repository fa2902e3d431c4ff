"""Task-vector negation: learn the forget set harder, then subtract what that added."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from .base import METHODS, Context, batch_nll
from .objectives import negate_task_vector


@METHODS.register("task_vector")
@dataclass
class TaskVector:
    """Fine-tune on the forget set (the "reinforced" model, as in Eldan & Russinovich's WHP),
    then set w = w0 - scale * (w_ft - w0). Full weights keep a CPU copy of w0 for the final
    subtraction. Under LoRA the delta is the adapter's B A, so negating it is scaling B by
    -scale: no copy at all."""

    scale: float = 3.0  # a memorised forget set gives a small delta: amplify it

    description: ClassVar[str] = "task-vector negation: fine-tune on forget, subtract the scaled delta"
    needs: ClassVar[tuple[str, ...]] = ("forget",)
    paper: ClassVar[str] = "Ilharco et al. 2023, Editing Models with Task Arithmetic; Eldan & Russinovich 2023, Who's Harry Potter?"
    default_lr: ClassVar[float] = 1e-4

    def setup(self, model, ctx: Context) -> None:
        if not ctx.lora:
            ctx.state["w0"] = {n: p.detach().to("cpu", copy=True)
                               for n, p in model.named_parameters() if p.requires_grad}

    def loss(self, model, batches, ctx: Context):
        nll = batch_nll(model, batches["forget"], ctx.world_size)
        return nll, {"forget_nll": float(nll.detach())}

    @torch.no_grad()
    def finish(self, model, ctx: Context) -> None:
        if ctx.lora:
            for name, p in model.named_parameters():
                if "lora_B" in name:
                    p.mul_(-self.scale)
            return
        w0 = ctx.state.pop("w0")
        for name, p in model.named_parameters():
            if name in w0:
                p.copy_(negate_task_vector(w0[name].to(p.device), p, self.scale))
