"""SOUL: any unlearning objective, optimised with a Sophia-style second-order optimiser."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

from .base import METHODS


@METHODS.register("soul")
@dataclass
class SOUL:
    """The `base` method's loss, stepped by Sophia (clipped diagonal-Hessian preconditioning,
    Hessian estimated every `hessian_every` steps by Gauss-Newton-Bartlett on forget batches).
    Needs what the base method needs (a wrapper: see wrapping.py)."""

    base: str = "npo"
    base_params: dict[str, Any] = field(default_factory=dict)
    rho: float = 0.05
    hessian_every: int = 10

    description: ClassVar[str] = "second-order unlearning: a base method stepped by the Sophia optimiser"
    needs: ClassVar[tuple[str, ...]] = ()  # the base method's
    wraps: ClassVar[bool] = True
    paper: ClassVar[str] = "Jia et al. 2024, SOUL: Unlocking the Power of Second-Order Optimization for LLM Unlearning"
    default_lr: ClassVar[float] = 5e-5
    # On a memorised set the curvature estimate is near zero and Sophia's clipped steps act
    # like sign descent, whatever the base objective: stop once the forget set's probability
    # has halved (overrides the base's stop; 0 through guard.forget_stop turns it off).
    forget_stop: ClassVar[float] = 0.5

    @property
    def optimizer(self) -> dict[str, Any]:
        return {"optimizer": "sophia", "sophia_rho": self.rho, "hessian_every": self.hessian_every}
