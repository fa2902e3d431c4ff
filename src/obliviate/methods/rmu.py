"""RMU: scramble the forget set's hidden states at one layer, keep the retain set's."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from ..errors import ObliviateError
from .base import METHODS, Context, label_mask, layer_output
from .objectives import rmu_forget, rmu_retain


@METHODS.register("rmu")
@dataclass
class RMU:
    """Representation misdirection. At decoder layer `layer`, the forget set's hidden states
    (at answer positions) are pushed towards c * u, u a fixed random unit vector; the retain
    set's stay equal to the reference's. Only the `train` modules of layers layer-2..layer
    change (WMDP trains the MLP down-projections). The retain term compares activations on
    changing retain batches, so the reference is live: a snapshot of just those few matrices
    (or the LoRA adapter disabled), not a copy of the model."""

    layer: int = -1  # -1: a third of the way up the stack, as WMDP's layer 7 of 32
    steering_coeff: float | None = None  # None: 4 x the mean norm of the reference's forget activations
    alpha: float = 30.0  # retain weight
    train: str = "mlp.down_proj"  # module suffix trained in layers layer-2 .. layer
    seed: int = 0

    description: ClassVar[str] = "representation misdirection: steer forget activations to noise at one layer"
    needs: ClassVar[tuple[str, ...]] = ("forget", "retain", "reference_model")
    paper: ClassVar[str] = "Li et al. 2024, The WMDP Benchmark: Measuring and Reducing Malicious Use With Unlearning"
    default_lr: ClassVar[float] = 1e-2

    def _layer(self, model) -> int:
        n = model.config.num_hidden_layers
        layer = self.layer if self.layer >= 0 else min(n - 1, max(1, n // 3))
        if layer >= n:
            raise ObliviateError(f"rmu layer {layer} does not exist (the model has {n} layers)")
        return layer

    def target_modules(self, model, ctx: Context) -> list[str]:
        layer = self._layer(model)
        wanted = [f"layers.{i}.{self.train}" for i in range(max(0, layer - 2), layer + 1)]
        names = [n for n, _ in model.named_modules() if any(n.endswith(w) for w in wanted)]
        if not names:
            raise ObliviateError(f"rmu: no modules named '*layers.N.{self.train}' in this model; "
                                 "set params.train to a module suffix it has")
        return names

    def setup(self, model, ctx: Context) -> None:
        layer = self._layer(model)
        gen = torch.Generator().manual_seed(self.seed)
        u = torch.rand(model.config.hidden_size, generator=gen)
        u = u / u.norm()
        coeff = self.steering_coeff
        if coeff is None:  # scale-free default: hidden-state norms differ by orders of magnitude
            device = next(model.parameters()).device
            f = ctx.batch_of("forget", list(range(min(64, len(ctx.items["forget"])))), device)
            with torch.no_grad():
                h = layer_output(model, f, layer)[:, :-1]
            coeff = 4.0 * float(h[label_mask(f)].norm(dim=-1).mean())
        ctx.state["rmu"] = {"layer": layer, "control": coeff * u, "coeff": coeff}

    def loss(self, model, batches, ctx: Context):
        st = ctx.state["rmu"]
        f, r = batches["forget"], batches["retain"]
        h_f = layer_output(model, f, st["layer"])[:, :-1]
        forget = rmu_forget(h_f, st["control"].to(h_f.device), label_mask(f), ctx.world_size)
        h_r = layer_output(model, r, st["layer"])
        with ctx.reference_model(model) as ref:
            h_ref = layer_output(ref, r, st["layer"])
        retain = rmu_retain(h_r, h_ref, r["attention_mask"], ctx.world_size)
        return forget + self.alpha * retain, {"rmu_forget": float(forget.detach()),
                                              "rmu_retain": float(retain.detach())}
