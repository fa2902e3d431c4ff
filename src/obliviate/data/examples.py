"""The one record type every component consumes."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Example:
    """A QA item (TOFU fields) or, with `question=None`, a plain text to learn verbatim.

    `answer` is the supervised target: for QA only the answer tokens carry a loss, for plain
    text every token does. Paraphrase and perturbed answers feed the truth ratio.
    """

    answer: str
    question: str | None = None
    paraphrased_answer: str | None = None
    paraphrased_question: str | None = None
    perturbed_answers: tuple[str, ...] = ()
    id: str = ""
    entity: str | None = None
    relation: str | None = None
    # a probe (real-world knowledge): the answers that count as knowing it, and its kind
    accepted: tuple[str, ...] = ()
    kind: str | None = None

    @property
    def is_text(self) -> bool:
        return self.question is None

    def to_json(self) -> dict[str, Any]:
        """TOFU field names (`perturbed_answer`, a list), plus our own id/entity/relation."""
        out: dict[str, Any] = {"id": self.id}
        if self.is_text:
            out["text"] = self.answer
        else:
            out["question"] = self.question
            out["answer"] = self.answer
        if self.paraphrased_question is not None:
            out["paraphrased_question"] = self.paraphrased_question
        if self.paraphrased_answer is not None:
            out["paraphrased_answer"] = self.paraphrased_answer
        if self.perturbed_answers:
            out["perturbed_answer"] = list(self.perturbed_answers)
        if self.entity is not None:
            out["entity"] = self.entity
        if self.relation is not None:
            out["relation"] = self.relation
        if self.accepted:
            out["accepted_answers"] = list(self.accepted)
        if self.kind is not None:
            out["probe_kind"] = self.kind
        return out
