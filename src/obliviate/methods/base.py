"""What every unlearning method shares: the registry, the data a step sees, the reference cache.

A method is a dataclass of hyper-parameters with a `loss(model, batches, ref)` method and
three class attributes: `description`, `needs` (forget / retain / reference / refusal) and
`paper`. No implementation inheritance between methods (DESIGN.md rule 1): shared math is in
objectives.py.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Protocol

import torch

from ..registry import Registry
from .objectives import mean_nll, sequence_nll


class Method(Protocol):
    description: ClassVar[str]
    needs: ClassVar[tuple[str, ...]]
    paper: ClassVar[str]

    def loss(self, model, batches: dict[str, dict[str, torch.Tensor]],
             ref: ReferenceCache) -> tuple[torch.Tensor, dict[str, float]]: ...


METHODS: Registry[type] = Registry("method")


@dataclass
class ReferenceCache:
    """Reference-model quantities over the fixed forget set, computed once before training.

    `forget_seq_nll[i]` is the summed answer NLL of forget item i under the model as it was
    before unlearning: NPO-style methods need no frozen copy of the model in memory.
    """

    forget_seq_nll: torch.Tensor | None = None  # [n_forget]

    def seq_nll(self, index: torch.Tensor) -> torch.Tensor:
        if self.forget_seq_nll is None:
            raise RuntimeError("reference cache was not computed for this method")
        return self.forget_seq_nll.to(index.device)[index]


def forward(model, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Logits [batch, seq, vocab] of a collated batch."""
    return model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits


def batch_nll(model, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Token-averaged NLL of a batch (scalar)."""
    return mean_nll(forward(model, batch), batch["labels"])


def batch_seq_nll(model, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Summed answer NLL per sequence [batch]."""
    return sequence_nll(forward(model, batch), batch["labels"])[0]


def describe(name: str) -> dict[str, Any]:
    cls = METHODS.get(name)
    return {"name": name, "description": cls.description, "needs": list(cls.needs),
            "paper": cls.paper}
