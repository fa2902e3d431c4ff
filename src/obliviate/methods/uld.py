"""ULD: unlearning from a logit difference with a small assistant; the base's weights stay."""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from ..errors import ObliviateError
from ..systems import SYSTEMS, System, lm_step, positions, scoring_positions
from .base import METHODS, Context, label_mask
from .objectives import mean_nll, uniform_kl


def build_assistant(base, layers: int):
    """The base's first `layers` decoder layers, its embeddings, final norm and head, as a
    model of the same class (a copy: the base is never shared with what trains)."""
    from transformers import AutoModelForCausalLM

    n = base.config.num_hidden_layers
    if not 0 < layers <= n:
        raise ObliviateError(f"uld assistant_layers must be in 1..{n} (got {layers})")
    cfg = copy.deepcopy(base.config)
    cfg.num_hidden_layers = layers
    if isinstance(getattr(cfg, "layer_types", None), list):
        cfg.layer_types = cfg.layer_types[:layers]
    assistant = AutoModelForCausalLM.from_config(cfg, dtype=next(base.parameters()).dtype)
    state = base.state_dict()
    missing = assistant.load_state_dict({k: v for k, v in state.items()
                                         if k in assistant.state_dict()}, strict=False).missing_keys
    if [k for k in missing if "lm_head" not in k]:  # a tied head is rebuilt from the embeddings
        raise ObliviateError(f"uld: the assistant could not take the base's weights ({missing[0]})")
    return assistant


@SYSTEMS.register("uld")
class ULDSystem(System):
    """logits = base logits - weight x assistant logits (settings: layers, weight)."""

    kind: ClassVar[str] = "uld"
    threat: ClassVar[str] = ("access to the base weights (run without the assistant, the base "
                             "still answers)")

    def __init__(self, base, settings: dict[str, Any]) -> None:
        super().__init__(base, settings)
        self.parts["assistant"] = build_assistant(base, int(settings["layers"]))
        self.weight = float(settings["weight"])

    def prefill(self, ids, mask, prompt_mask, use_cache, part: str | None = None):
        pos = positions(mask) if use_cache else scoring_positions(mask)
        if part == "assistant":
            return lm_step(self.parts["assistant"], mask, ids=ids, pos=pos)[0], None
        logits, cache = lm_step(self.base, mask, ids=ids, pos=pos, use_cache=use_cache)
        a_logits, a_cache = lm_step(self.parts["assistant"], mask, ids=ids, pos=pos, use_cache=use_cache)
        state = {**self.base_state(mask, cache), "assistant": a_cache}
        return logits - self.weight * a_logits, state

    def decode(self, ids, state):
        mask = torch.cat([state["mask"], torch.ones_like(ids)], dim=1)
        pos = state["pos"] + 1
        logits, cache = lm_step(self.base, mask, ids=ids, cache=state["cache"], pos=pos, use_cache=True)
        a_logits, a_cache = lm_step(self.parts["assistant"], mask, ids=ids, cache=state["assistant"],
                                    pos=pos, use_cache=True)
        return logits - self.weight * a_logits, {"mask": mask, "pos": pos, "cache": cache,
                                                  "assistant": a_cache}


@METHODS.register("uld")
@dataclass
class ULD:
    """Train a small assistant with the objectives reversed: remember the forget set (its
    answer NLL goes down) and know nothing of the retain set (its predictions there go to
    uniform, KL(U || p)). The unlearned system's logits are the target's minus `weight` times
    the assistant's: where the assistant is flat nothing changes; where it is confident (the
    forget answers) those tokens are pushed down. The assistant is the target's first
    `assistant_layers` layers with its embeddings and head; its layers and final norm train."""

    assistant_layers: int = 1
    weight: float = 1.0
    alpha: float = 1.0  # retain (flatten) weight
    start_flat: bool = True  # zero the assistant's final norm: uniform predictions at step 0

    description: ClassVar[str] = ("logit difference: a small assistant learns the forget set, and "
                                  "its logits are subtracted from the target's (weights untouched)")
    needs: ClassVar[tuple[str, ...]] = ("forget", "retain")
    paper: ClassVar[str] = ("Ji et al. 2024, Reversing the Forget-Retain Objectives: An Efficient "
                            "LLM Unlearning Framework from Logit Difference")
    default_lr: ClassVar[float] = 3e-2
    system: ClassVar[str] = "uld"

    def __post_init__(self) -> None:
        if self.assistant_layers < 1:
            raise ObliviateError(f"uld assistant_layers must be at least 1 (got {self.assistant_layers})")
        if not self.weight > 0:
            raise ObliviateError(f"uld weight must be positive (got {self.weight})")
        if self.alpha < 0:
            raise ObliviateError(f"uld alpha must be >= 0 (got {self.alpha})")

    def build_system(self, model, ctx: Context) -> ULDSystem:
        system = ULDSystem(model, {"layers": self.assistant_layers, "weight": self.weight})
        assistant = system.parts["assistant"]
        head = {id(p) for p in (*assistant.get_input_embeddings().parameters(),
                                *assistant.get_output_embeddings().parameters())}
        for p in assistant.parameters():
            # embeddings and head stay the target's (the final norm trains: scaling it down is
            # how the assistant's logits go flat)
            p.requires_grad_(id(p) not in head)
        norm = getattr(getattr(assistant, "model", None), "norm", None)
        if self.start_flat and norm is not None and hasattr(norm, "weight"):
            with torch.no_grad():  # flat logits everywhere at the start: only what the
                norm.weight.zero_()  # forget loss teaches is ever subtracted
        return system

    def loss(self, model, batches, ctx: Context):
        f, r = batches["forget"], batches["retain"]
        logits = model(input_ids=f["input_ids"], attention_mask=f["attention_mask"], part="assistant").logits
        remember = mean_nll(logits, f["labels"], ctx.world_size)
        info = {"assistant_nll": float(remember.detach())}
        if self.alpha == 0:
            return remember, info
        remember = ctx.backward_now(remember)
        r_logits = model(input_ids=r["input_ids"], attention_mask=r["attention_mask"], part="assistant").logits
        flat = uniform_kl(r_logits[:, :-1][label_mask(r)], ctx.world_size)
        info["assistant_flat"] = float(flat.detach())
        return remember + self.alpha * flat, info
