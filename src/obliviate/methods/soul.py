"""SOUL: any unlearning objective, optimised with a Sophia-style second-order optimiser."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

from .base import METHODS, Context, build, hook


@METHODS.register("soul")
@dataclass
class SOUL:
    """The `base` method's loss, stepped by Sophia (clipped diagonal-Hessian preconditioning,
    Hessian estimated every `hessian_every` steps by Gauss-Newton-Bartlett on forget batches).
    Needs what the base method needs."""

    base: str = "npo"
    base_params: dict[str, Any] = field(default_factory=dict)
    rho: float = 0.05
    hessian_every: int = 10

    description: ClassVar[str] = "second-order unlearning: a base method stepped by the Sophia optimiser"
    needs: ClassVar[tuple[str, ...]] = ("forget", "retain", "reference")
    paper: ClassVar[str] = "Jia et al. 2024, SOUL: Unlocking the Power of Second-Order Optimization for LLM Unlearning"
    default_lr: ClassVar[float] = 5e-5
    # On a memorised set the curvature estimate is near zero and Sophia's clipped steps act
    # like sign descent: stop once the forget set's probability has halved.
    forget_stop: ClassVar[float] = 0.5

    def __post_init__(self) -> None:
        self.inner = build(self.base, self.base_params, prefix="params.base_params.")

    @property
    def optimizer(self) -> dict[str, Any]:
        return {"optimizer": "sophia", "sophia_rho": self.rho, "hessian_every": self.hessian_every}

    def setup(self, model, ctx: Context) -> None:
        hook(self.inner, "setup", model, ctx)

    def target_modules(self, model, ctx: Context):
        return hook(self.inner, "target_modules", model, ctx)

    def loss(self, model, batches, ctx: Context):
        return self.inner.loss(model, batches, ctx)

    def finish(self, model, ctx: Context) -> None:
        hook(self.inner, "finish", model, ctx)
