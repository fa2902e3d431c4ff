"""Methods that wrap a base method (SOUL, sparse, WAGLE): one rule for what comes from where.

A wrapper is a method dataclass with `base: str` and `base_params: dict` fields and the class
attribute `wraps = True`. Like a peft variant it plugs a strategy into a method that runs as it
is (an optimiser, a penalty, a gradient mask), so it declares only what it changes:

- `setup(model, ctx)` runs after the base's, `finish(model, ctx)` after the base's;
- `target_modules(model, ctx)` applies when the base names none: a base method's structural
  choice (RMU's three projections) wins over a wrapper's preference;
- `adjust_loss(loss, info, model, batches, ctx) -> (loss, info)` edits the base's loss (an l1
  term, UOE's router anchor on the forget batch);
- `optimizer`, `forget_stop`, `lora_lr_scale`: the outermost declaration wins, else the base's
  (SOUL declares its own forget stop; sparse and WAGLE inherit their base's);
- `needs`: the base's, plus what the wrapper itself declares.

`build` attaches the base instance as `inner`; `MethodStack` is what the unlearning run calls,
for plain methods and wrappers alike.
"""

from __future__ import annotations

from typing import Any

import torch

from ..systems import SYSTEMS
from .base import METHODS, Context, build


def is_wrapper(method) -> bool:
    return bool(getattr(type(method), "wraps", False))


def inner_of(method):
    """The base method instance of a wrapper (built on first use if `build` did not)."""
    if getattr(method, "inner", None) is None:
        method.inner = build(method.base, method.base_params, prefix="params.base_params.")
    return method.inner


class MethodStack:
    """A method and the base methods it wraps, outermost first, seen as one method."""

    def __init__(self, method) -> None:
        self.layers = [method]
        while is_wrapper(self.layers[-1]):
            self.layers.append(inner_of(self.layers[-1]))
        self.method, self.base = method, self.layers[-1]

    def _hooks(self, name: str) -> list:
        """The layers' own `name` hooks, innermost (the base) first."""
        return [fn for fn in (getattr(m, name, None) for m in reversed(self.layers)) if fn]

    def needs(self) -> tuple[str, ...]:
        needs = list(type(self.base).needs)
        for wrapper in self.layers[:-1]:
            needs += [n for n in type(wrapper).needs if n not in needs]
        if (any(getattr(m, "retain_loss", "nll") == "kl" for m in self.layers)
                and "reference_model" not in needs):
            needs.append("reference_model")  # a KL retain term compares with live reference logits
        return tuple(needs)

    def declared(self, name: str, default: Any) -> Any:
        """The outermost layer's declaration of `name`, else `default`."""
        for m in self.layers:
            if hasattr(m, name):
                return getattr(m, name)
        return default

    def setup(self, model, ctx: Context) -> None:
        for fn in self._hooks("setup"):
            fn(model, ctx)

    def target_modules(self, model, ctx: Context) -> list[str] | None:
        for fn in self._hooks("target_modules"):
            names = fn(model, ctx)
            if names is not None:
                return names
        return None

    def loss(self, model, batches: dict[str, dict[str, torch.Tensor]],
             ctx: Context) -> tuple[torch.Tensor, dict[str, float]]:
        loss, info = self.base.loss(model, batches, ctx)
        for adjust in self._hooks("adjust_loss"):
            loss, info = adjust(loss, info, model, batches, ctx)
        return loss, info

    def finish(self, model, ctx: Context) -> None:
        for fn in self._hooks("finish"):
            fn(model, ctx)


def needs_of(method) -> tuple[str, ...]:
    """What an instance needs: its class's needs, plus the live reference when a retain term is
    KL; for a wrapper, its base method's and its own."""
    return MethodStack(method).needs()


# what breaks a method that edits the weights: no access condition (the weights are the result)
WEIGHTS_THREAT = "no access condition: the weights themselves are changed"


def describe(name: str) -> dict[str, Any]:
    """A method's listing. `system` names the kind of unlearned system it produces (None: it
    edits the weights); `threat` says what access breaks its forgetting (a system's base
    weights still hold the knowledge)."""
    cls = METHODS.get(name)
    kind = getattr(cls, "system", None)
    return {"name": name, "description": cls.description, "needs": list(needs_of(build(name))),
            "paper": cls.paper, "default_lr": cls.default_lr, "system": kind,
            "threat": SYSTEMS.get(kind).threat if kind else WEIGHTS_THREAT}
