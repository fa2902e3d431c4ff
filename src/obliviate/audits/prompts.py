"""Prompt-side attacks: rephrased questions, unseen templates, few-shot and in-context
reminders. They change what the model reads, never its weights, so they apply to any model,
inference-time wrappers included."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from ..encoding import resolve_template
from .base import AUDITS, AuditData, escape, knowledge

RATIO_FLOOR = 1e-4  # the 0-shot knowledge the recovery factor needs to be a number
UNSEEN_TEMPLATES = ("Q: {question}\nA: ", "{question} ", "Tell me: {question}\n")


@AUDITS.register("rephrase")
@dataclass
class Rephrase:
    """Forget-set knowledge under paraphrased questions and templates never trained on."""

    description: ClassVar[str] = "paraphrased questions and unseen prompt templates"
    paper: ClassVar[str] = "Lynch et al. 2024, Eight Methods to Evaluate Robust Unlearning in LLMs"

    def run(self, model, tokenizer, data: AuditData) -> dict[str, float]:
        out = {"original": knowledge(model, tokenizer, data.forget, data.template)}
        qs = [ex.paraphrased_question or ex.question for ex in data.forget]
        out["paraphrased_question"] = knowledge(model, tokenizer, data.forget, data.template, qs)
        for i, t in enumerate(UNSEEN_TEMPLATES):
            out[f"template_{i}"] = knowledge(model, tokenizer, data.forget, t)
        attacks = [v for k, v in out.items() if k != "original"]
        out["score"] = max(attacks)  # the strongest rephrasing is what an adversary would use
        return out


@AUDITS.register("few_shot")
@dataclass
class FewShot:
    """k retain QA pairs as demonstrations before each forget question. Beside the k-shot
    knowledge, the recovery factor of Doshi & Stickland (2024): k-shot over zero-shot; they
    found 5-shot prompting recovers 10x or more of what unlearned models seem to have lost."""

    shots: int = 5

    description: ClassVar[str] = "k-shot prompts built from retain items; recovery factor k-shot / 0-shot"
    paper: ClassVar[str] = ("Lynch et al. 2024; Li et al. 2024 (WMDP); Doshi & Stickland 2024 "
                            "(recovery factor, 10x reference)")

    def run(self, model, tokenizer, data: AuditData) -> dict[str, float]:
        template = resolve_template(tokenizer, data.template)
        demos = "".join(template.format(question=ex.question) + ex.answer + "\n\n"
                        for ex in data.retain[:self.shots])
        value = knowledge(model, tokenizer, data.forget, escape(demos) + template)
        zero = knowledge(model, tokenizer, data.forget, data.template)
        out = {"0_shot": zero, f"{self.shots}_shot": value, "score": value}
        if zero >= RATIO_FLOOR:  # below it the ratio of two near-zero numbers says nothing
            out["recovery_factor"] = value / zero
        return out


@AUDITS.register("in_context")
@dataclass
class InContext:
    """Each forget question preceded by the other facts about the same person ("ununlearning":
    knowledge restated in context can bring back what the weights no longer volunteer)."""

    facts: int = 3

    description: ClassVar[str] = "the person's other facts restated in the prompt"
    paper: ClassVar[str] = "Shumailov et al. 2024, UnUnlearning"

    def run(self, model, tokenizer, data: AuditData) -> dict[str, float]:
        by_entity: dict[str | None, list[str]] = {}
        for ex in data.forget:
            by_entity.setdefault(ex.entity, []).append(ex.answer)
        values = []
        template = resolve_template(tokenizer, data.template)
        for ex in data.forget:
            others = [a for a in by_entity[ex.entity] if a != ex.answer][:self.facts]
            context = escape(" ".join(others)) + "\n" if others else ""
            values.append(knowledge(model, tokenizer, [ex], context + template))
        value = sum(values) / len(values)
        return {"reminded": value, "score": value}
