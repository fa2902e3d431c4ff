"""UOE: in a mixture-of-experts model, unlearn only the expert the forget set engages most."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch

from ..errors import ObliviateError
from .base import METHODS, Context
from .objectives import dp_mean


def moe_layers(model) -> dict[int, tuple[str, torch.nn.Module]]:
    """Layer index -> (module name, sparse MoE block): blocks with a router `gate` and `experts`."""
    out = {}
    for name, module in model.named_modules():
        if hasattr(module, "gate") and hasattr(module, "experts") and ".layers." in f".{name}":
            layer = int(name.split("layers.")[1].split(".")[0])
            out[layer] = (name, module)
    return out


def router_probs(model, ctx: Context, stream: str) -> torch.Tensor:
    """Mean routing probability of each expert over stream `stream`'s real tokens
    [moe layers, experts], in layer order."""
    device = next(model.parameters()).device
    items = ctx.items[stream]
    total, count = None, 0
    with torch.no_grad():
        for start in range(0, len(items), 32):
            b = ctx.batch_of(stream, list(range(start, min(start + 32, len(items)))), device)
            out = model(input_ids=b["input_ids"], attention_mask=b["attention_mask"], output_router_logits=True)
            real = b["attention_mask"].flatten().bool()
            probs = torch.stack([torch.softmax(r.float(), -1)[real].sum(0) for r in out.router_logits])
            total = probs if total is None else total + probs
            count += int(real.sum())
    return total / max(count, 1)


def _detach_unless(state: dict):
    """A forward hook for the router: its outputs carry no gradient except in the anchor's pass."""
    def hook(module, args, output):
        if state["anchor"] or not torch.is_grad_enabled():
            return None
        if isinstance(output, tuple):
            return tuple(o.detach() if torch.is_tensor(o) else o for o in output)
        return output.detach()
    return hook


@METHODS.register("uoe")
@dataclass
class UOE:
    """Expert attribution: each expert's mean routing probability over the forget set's tokens,
    minus over the retain set's (where given); the highest one, over all layers, is the only
    expert that unlearns, with any base method (`base`, NPO by default). Its slices of the
    fused expert weights are the only weights that move (a gradient mask), besides that layer's
    router, trained by the anchor loss: -anchor * mean log p(expert | token) over the forget
    tokens, which keeps the forget set routed to the expert being unlearned (otherwise the
    router learns to send it elsewhere, to experts that still know it). Full weights only:
    LoRA cannot adapt one slice of a fused expert tensor.

    The router learns from the anchor alone: during the base method's passes its outputs are
    detached, since the base loss (NPO's, say) would otherwise teach it to route the forget set
    away from the expert, which is the failure the anchor exists to prevent."""

    base: str = "npo"
    base_params: dict[str, Any] = field(default_factory=dict)
    anchor: float = 1.0

    description: ClassVar[str] = "UOE: unlearn only the most forget-engaged expert of a mixture-of-experts model, router anchored"
    needs: ClassVar[tuple[str, ...]] = ()  # the base method's (the retain set is used if given)
    wraps: ClassVar[bool] = True
    paper: ClassVar[str] = "Zhuang et al. 2024, Unlearning One Expert Is Enough for Mixture-of-Experts LLMs"
    default_lr: ClassVar[float] = 1e-3
    full_weights: ClassVar[bool] = True
    architecture: ClassVar[str] = "moe"  # runs only on mixture-of-experts models
    chooses_modules: ClassVar[bool] = True  # no method below it may name its own (checked by the run)

    def __post_init__(self) -> None:
        if not 0 <= self.anchor < float("inf"):
            raise ObliviateError(f"uoe anchor must be finite and 0 or more (got {self.anchor})")

    def setup(self, model, ctx: Context) -> None:
        layers = moe_layers(model)
        if not layers:
            raise ObliviateError("uoe needs a mixture-of-experts model (layers with a router `gate` and "
                                 "`experts`, e.g. Mixtral or Qwen2-MoE); this one has none")
        order = sorted(layers)
        forget = router_probs(model, ctx, "forget")
        score = forget - router_probs(model, ctx, "retain") if ctx.items.get("retain") else forget
        flat = int(score.argmax())
        row, expert = divmod(flat, score.shape[1])
        layer = order[row]
        name, block = layers[layer]
        ctx.state["uoe"] = {"layer": layer, "expert": expert, "module": name,
                            "forget_prob": float(forget[row, expert]), "score": float(score[row, expert])}
        # kept on the instance, not in ctx.state: that is checkpointed, and a hook is not data
        self._pass = {"anchor": False}
        self._hook = block.gate.register_forward_hook(_detach_unless(self._pass)) if self.anchor > 0 else None
        for pname, p in block.experts.named_parameters():
            head = pname.split(".")[0]
            mask = torch.zeros_like(p)
            if head.isdigit():  # one module per expert (experts.3.w1.weight): its own trains
                if int(head) == expert:
                    continue
            else:  # fused [experts, ...] tensors (transformers 5): the expert's slice trains
                mask[expert] = 1
            ctx.grad_masks[p] = mask

    def target_modules(self, model, ctx: Context) -> list[str]:
        """The chosen layer's fused expert tensors (masked to the expert's slice), or the chosen
        expert's own modules; the layer's router when the anchor trains it."""
        st = ctx.state["uoe"]
        name, expert = st["module"], st["expert"]
        own = [n for n, _ in model.named_modules() if n.startswith(f"{name}.experts.{expert}.")]
        return [*(own or [f"{name}.experts"]), *([f"{name}.gate"] if self.anchor > 0 else [])]

    def finish(self, model, ctx: Context) -> None:
        if getattr(self, "_hook", None) is not None:
            self._hook.remove()
            self._hook = None

    def adjust_loss(self, loss, info: dict[str, float], model, batches, ctx: Context):
        st = ctx.state["uoe"]
        info = {**info, "uoe_layer": float(st["layer"]), "uoe_expert": float(st["expert"])}
        if self.anchor <= 0:
            return loss, info
        f = batches["forget"]
        self._pass["anchor"] = True
        try:
            out = model(input_ids=f["input_ids"], attention_mask=f["attention_mask"], output_router_logits=True)
        finally:
            self._pass["anchor"] = False
        row = sorted(moe_layers(model)).index(st["layer"])
        real = f["attention_mask"].flatten().bool()
        logp = torch.log_softmax(out.router_logits[row].float(), -1)[real, st["expert"]]
        anchor = dp_mean(-logp, world=ctx.world_size)  # over the whole batch's forget tokens
        return loss + self.anchor * anchor, {**info, "router_anchor": float(anchor.detach()),
                                             "expert_prob": float(logp.detach().exp().mean())}
