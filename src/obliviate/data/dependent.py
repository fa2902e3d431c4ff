"""Dependent queries (Thaker et al. 2024, Position: LLM Unlearning Benchmarks are Weak Measures
of Progress): when forget and retain questions are independent, a benchmark overstates
success; questions that tie a forgotten fact to a retained one expose it.

Built from two items of a benchmark, A and B, where A's answer names the entity B is about:
- A retained, B forgotten: a *dependent forget* query (reaching a forgotten fact through a
  retained one: "Where was the spouse of <retained person> born?"), to be forgotten too;
- A forgotten, B retained: a *dependent retain* query (a retained fact reached through a
  forgotten entity: "Where was the spouse of <forgotten person> born?"), to be kept.
The composed question replaces the entity's name in B's question by a phrase through A: the
relation's own phrase where one is known (`phrases`: "the spouse of {s}"), else "X" defined
by A's question. The answer, paraphrase and perturbed answers are B's.
"""

from __future__ import annotations

import re
from dataclasses import replace

from .examples import Example

MAX_ITEMS = 100  # per set: enough for a stable mean, cheap beside the forget set
PER_PAIR = 4  # B items per (A, entity) pair


def _names(name: str, text: str) -> bool:
    """`name` occurs in `text` as whole words ('Ann' is not in 'Annual')."""
    return re.search(rf"(?<!\w){re.escape(name)}(?!\w)", text) is not None


def compose(first: Example, second: Example, name: str, phrase: str | None = None) -> Example:
    """`second` asked through `first`: `name` (the entity `first`'s answer names, whom
    `second` is about) is replaced by `phrase` (with {s}: `first`'s subject) or by X."""
    if phrase is not None:
        question = (second.question or "").replace(name, phrase)
    else:
        question = (f"Let X be the answer to this question: {first.question} "
                    f"Now answer: {(second.question or '').replace(name, 'X')}")
    return replace(second, question=question, paraphrased_question=None,
                   id=f"{first.id}+{second.id}", kind="dependent")


def _phrase(first: Example, names: dict[str, str], phrases: dict[str, str]) -> str | None:
    template = phrases.get(first.relation or "")
    subject = names.get(first.entity or "")
    return template.format(s=subject) if template and subject else None


def dependent_sets(forget: list[Example], retain: list[Example], names: dict[str, str],
                   phrases: dict[str, str] | None = None) -> dict[str, list[Example]]:
    """{"dependent_forget": [...], "dependent_retain": [...]} (see the module doc); empty lists
    when no answer names another entity of the benchmark. `names`: entity label -> the name
    its questions use."""
    phrases = phrases or {}
    by_entity: dict[str, list[tuple[Example, bool]]] = {}
    for ex, forgotten in [*((e, True) for e in forget), *((e, False) for e in retain)]:
        if ex.entity and not ex.is_text:
            by_entity.setdefault(ex.entity, []).append((ex, forgotten))
    out: dict[str, list[Example]] = {"dependent_forget": [], "dependent_retain": []}
    for first, first_forgotten in [(e, f) for items in by_entity.values() for e, f in items]:
        subject = names.get(first.entity or "", "")
        for other, name in names.items():
            if other == first.entity or not name or not _names(name, first.answer):
                continue
            # B: the other entity's items of the opposite side, asked by its name, whose answer
            # does not name A's subject back (that would be A's fact again)
            picks = [b for b, b_forgotten in by_entity.get(other, [])
                     if b_forgotten != first_forgotten and b.question and _names(name, b.question)
                     and not (subject and _names(subject, b.answer))][:PER_PAIR]
            key = "dependent_retain" if first_forgotten else "dependent_forget"
            out[key] += [compose(first, b, name, _phrase(first, names, phrases)) for b in picks]
    return {k: v[:MAX_ITEMS] for k, v in out.items()}


def with_roles(sets: dict[str, list[Example]]) -> dict[str, tuple[str, list[Example]]]:
    """The dependent sets as a benchmark's side sets: dependent forget queries are judged as a
    forget set, dependent retain queries as a utility set."""
    return {name: ("forget" if name == "dependent_forget" else "utility", items)
            for name, items in sets.items()}
