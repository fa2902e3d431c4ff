"""MUSE's VerbMem and KnowMem (Shi et al. 2024): ROUGE-L F1 without stemming of greedy
continuations. VerbMem: each forget passage's first half (by words) is the prompt, scored
against the true second half. KnowMem: `shots` retain QA pairs as "Question: q\\nAnswer: a\\n\\n"
demos, then the question; demo items are not scored."""

from __future__ import annotations

from ..tofu_math import rouge_l
from ..views import MuseView
from .base import PerItem, metric

MUSE = "Shi et al. 2024, MUSE"
COMMON = {"suite": "muse", "range": "[0, 1]", "roles": ("muse",), "source": MUSE}


def halves(view: MuseView) -> list[tuple[str, str]]:
    out = []
    for ex in view.passages.examples:
        words = ex.answer.split()
        cut = max(1, len(words) // 2)
        out.append((" ".join(words[:cut]), " ".join(words[cut:])))
    return out


def first_answer(text: str) -> str:
    """A few-shot continuation runs on into the next demo: keep the first answer."""
    for stop in ("\n\n", "\nQuestion:"):
        text = text.split(stop, 1)[0]
    return text.strip()


@metric("verbmem_forget", direction="lower", title="VerbMem (forget)", **COMMON,
        description="ROUGE-L F1 (no stemming) of the greedy continuation of each forget "
                    "passage's first half against its true second half")
def verbmem(view: MuseView) -> PerItem | str:
    pairs = halves(view)
    if not pairs:
        return "not computed: no forget passages (text items)"
    gens = view.engine.complete(f"{view.passages.name}/verbmem", [p for p, _ in pairs],
                                view.verbmem_tokens)
    scores = [rouge_l(truth, g, stemmer=False)[1] for (_, truth), g in zip(pairs, gens, strict=True)]
    return PerItem(scores, {"verbmem_generation": gens})


def knowmem(view: MuseView, which: str) -> list[float]:
    demos = view.retain.examples[:view.shots]
    items = view.forget.examples if which == "forget" else view.retain.examples[view.shots:]
    context = "".join(f"Question: {d.question}\nAnswer: {d.answer}\n\n" for d in demos)
    prompts = [f"{context}Question: {ex.question}\nAnswer: " for ex in items]
    outs = view.engine.complete(f"{which}/knowmem", prompts, view.knowmem_tokens)
    return [rouge_l(ex.answer, first_answer(o), stemmer=False)[1]
            for ex, o in zip(items, outs, strict=True)]


@metric("knowmem_forget", direction="lower", title="KnowMem (forget)", **COMMON,
        description="ROUGE-L F1 (no stemming) of few-shot answers to forget questions")
def knowmem_forget(view: MuseView) -> list[float]:
    return knowmem(view, "forget")


@metric("knowmem_retain", direction="higher", title="KnowMem (retain)", **COMMON,
        description="ROUGE-L F1 (no stemming) of few-shot answers to retain questions (utility)")
def knowmem_retain(view: MuseView) -> list[float]:
    return knowmem(view, "retain")
