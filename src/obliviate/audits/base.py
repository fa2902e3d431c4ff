"""What every audit shares: the registry, the knowledge measure, the residual score.

An audit is a dataclass with `run(model, tokenizer, data) -> dict[str, float]`: raw forget-set
knowledge measurements under one attack (mean answer probability, TOFU's normalised p). The
runner applies it to the audited model, the target and the oracle, and reports each raw
number plus the residual score (m - m_oracle) / (m_target - m_oracle): 1 = as much knowledge
as the target, 0 = as little as the oracle. An audit that cannot apply to a model (e.g.
weight quantization of a forward-only wrapper) says why instead. An audit that reads or edits
the weights declares `weights = True`; on an unlearned system it runs on the base model the
system wraps, and its result is reported as knowledge present in the weights.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar, Protocol

import torch

from ..data.examples import Example
from ..encoding import DEFAULT_TEMPLATE, encode
from ..methods.base import mean_answer_prob
from ..registry import Registry

AUDITS: Registry[type] = Registry("audit")


@dataclass
class AuditData:
    """The sets an audit reads: the forget set, retain items (demos, relearning data), the
    forget people's other facts (in-context reminders) and the prompt template."""

    forget: list[Example]
    retain: list[Example]
    template: str = DEFAULT_TEMPLATE
    related: list[Example] = field(default_factory=list)  # retained people linked to forgotten ones


class NotApplicable(Exception):
    """Raised by an audit that does not apply to a model; the message says why."""


def knowledge(model, tokenizer, examples: list[Example], template: str = DEFAULT_TEMPLATE,
              questions: list[str] | None = None) -> float:
    """Mean answer probability of `examples` (optionally with rewritten questions), no grad."""
    items = [encode(tokenizer, ex, i, template, question=None if questions is None else questions[i])
             for i, ex in enumerate(examples)]
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            return mean_answer_prob(model, items, tokenizer.pad_token_id)
    finally:
        model.train(was_training)


def escape(text: str) -> str:
    """Literal text inside a prompt template (which is filled with str.format)."""
    return text.replace("{", "{{").replace("}", "}}")


def residual(value: float, target: float, oracle: float) -> float | str:
    """(value - oracle) / (target - oracle); a string when the attack cannot separate them."""
    if abs(target - oracle) < 1e-6:
        return "not computed: target and oracle measure the same under this attack"
    return (value - oracle) / (target - oracle)


class Audit(Protocol):
    """What the runner calls; audits are dataclasses and do not inherit from this."""

    description: ClassVar[str]
    paper: ClassVar[str]

    def run(self, model, tokenizer, data: AuditData) -> dict[str, float]: ...
