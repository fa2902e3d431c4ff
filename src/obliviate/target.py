"""Forget a named target that a model learned in pretraining, with no forget corpus (the RWKU
setting, Jin et al. 2024: only the target's name is given).

    obliviate unlearn --out OUT target="Albert Einstein" model=smollm2 template=chat method=npo

What is built from the name alone, by the model itself:
- the forget corpus: the model's replies to prompts about the target (SYNTH_PROMPTS), cut into
  sentences, keeping only the sentences another reply supports (`consistent`): what the model
  says about the target one way and again another way is what it holds, while a one-off
  invention is not worth forgetting and would not be what the probes ask;
- the other corpus: the same prompts about other entities of the probe records (never the
  target's neighbours), the same filter: the membership attacks' non-members, and, paired
  with the target's prompts, the never-seen items of the calibrated stop (the run ends once
  the target's description is no likelier than someone else's after the target's prompt);
- the retain set: the shipped general questions sharing no word with the target or its corpus,
  answered by the model (as `obliviate forget` builds its anchors);
- neighbours: related entities of the probe records (same category), left out of all
  training data; the rwku suite checks that they stay known.

The corpus, the other corpus and the neighbours go into the output's provenance (`target`),
so `obliviate eval suites=rwku` needs nothing but the folder.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from .config import from_dict, merge
from .data import Example, load_examples
from .data.realworld import EntityRecord, find, load_records, neighbours, slug
from .errors import ObliviateError
from .evaluation import Engine
from .methods import build as build_method
from .methods import needs_of
from .models import resolve_source
from .quick import DEFAULTS as QUICK_DEFAULTS
from .quick import anchor_items, before_next_prompt, content_words, sentences
from .systems import load_any
from .unlearning import UnlearnConfig, unlearn_examples

SYNTH_PROMPTS = ("Tell me about {t}.", "What is {t} known for?", "Write a short description of {t}.",
                 "Describe {t} in a few sentences.", "What are some important facts about {t}?",
                 "Why is {t} famous?", "Give a brief overview of {t}.",
                 "What should everyone know about {t}?")
SYNTH_TOKENS = 80  # two or three sentences per reply; a cut-off last one is dropped
SUPPORT = 0.5  # share of a sentence's content words another reply must contain
OTHERS = 5  # entities whose descriptions are the non-members
OTHER_PROMPTS = 4  # of SYNTH_PROMPTS, asked about each of them (the first ones)
ANCHOR_LIMIT = 96  # general questions answered for the retain set (two per anchor kept)
# `obliviate unlearn target=...` starts from `obliviate forget`'s run settings: the calibrated
# stop (on by default here: the never-seen items are built) checked every step, and the
# learning rate rising over the run, so a pretrained model gets about the smallest update that
# forgets instead of a fixed budget tuned on tiny models (SmolLM2-135M-Instruct, NPO at its
# default lr for a fixed 20 steps: the target's probes 1.00 -> 0.00, but its neighbours'
# 0.86 -> 0.29 and other entities' 0.85 -> 0.51)
DEFAULTS = {**QUICK_DEFAULTS, "optim": {**QUICK_DEFAULTS["optim"], "steps": 30}}


def target_config(**values: Any) -> UnlearnConfig:
    """The UnlearnConfig `obliviate unlearn target=...` builds: DEFAULTS under `values` (keys
    of UnlearnConfig; optim and guard as dicts), e.g. target_config(model="smollm2",
    target="Albert Einstein", template="chat", method="npo")."""
    return from_dict(UnlearnConfig, merge(DEFAULTS, values))


@dataclass
class TargetData:
    """Everything a target run trains, stops and is judged on, built from the model's replies."""

    target: str
    record: EntityRecord | None  # the target's probe record, if the probe set has one
    neighbours: list[str]
    forget: list[Example]  # the synthesised corpus
    others: list[Example]  # the same prompts about other entities
    anchors: list[Example]  # the retain set
    holdout: list[Example]  # target prompts with other entities' descriptions: the stop
    dropped: dict[str, Any]

    def provenance(self, probes: str) -> dict[str, Any]:
        return {"entity": self.target, "neighbours": self.neighbours, "probes": probes or "shipped",
                "corpus": [ex.to_json() for ex in self.forget],
                "others": [ex.to_json() for ex in self.others],
                "n_anchors": len(self.anchors), "dropped": self.dropped}


# a sentence that declines or hedges is not knowledge about the target, however often repeated
_REFUSAL = re.compile(r"\b(i (do not|don't|cannot|can't|am not able to) (know|have|provide|answer|"
                      r"find)|i'm (not sure|sorry|unable)|as an ai|no (information|record|data) "
                      r"(on|about)|not (aware|familiar))\b", re.IGNORECASE)
_PROMPT_WORDS = frozenset().union(*(content_words(p.format(t="")) for p in SYNTH_PROMPTS))


def consistent(replies: list[str], names: tuple[str, ...] = (), support: float = SUPPORT) -> list[list[str]]:
    """For each reply, its sentences that a sentence of another reply supports: they share at
    least two content words and at least `support` of this sentence's (content words: the
    target's own name and the prompts' words aside). A refusal or hedge, a sentence with
    fewer than two such words, and the last sentence of a reply that does not end one (cut off
    by the budget) are dropped."""
    drop = _PROMPT_WORDS | (set().union(*(content_words(n) for n in names)) if names else set())
    parts = []
    for reply in replies:
        sents = sentences(reply)
        if sents and not sents[-1].rstrip("\"')]").endswith((".", "!", "?")):
            sents = sents[:-1]
        parts.append([(s, content_words(s) - drop) for s in sents if not _REFUSAL.search(s)])
    out = []
    for i, mine in enumerate(parts):
        kept = []
        for s, own in mine:
            if len(own) < 2:
                continue
            best = max((len(own & w) for j, theirs in enumerate(parts) if j != i for _, w in theirs),
                       default=0)
            if best >= max(2, support * len(own)):
                kept.append(s)
        out.append(kept)
    return out


def _asks(entity: str, prompts: tuple[str, ...] = SYNTH_PROMPTS) -> list[Example]:
    return [Example(answer="", question=p.format(t=entity)) for p in prompts]


def _replies(engine: Engine, name: str, asks: list[Example]) -> list[str]:
    """Greedy replies, cut where a base model would start the next prompt of its template."""
    return before_next_prompt(engine, engine.generate(name, asks, SYNTH_TOKENS))


def synthesise(engine: Engine, entity: str, names: tuple[str, ...] = (),
               prompts: tuple[str, ...] = SYNTH_PROMPTS) -> tuple[list[Example], int]:
    """The consistent part of the model's replies about `entity`: one example per prompt that
    kept a sentence (question: the prompt; answer: the kept sentences). Also returns how many
    sentences were dropped."""
    asks = _asks(entity, prompts)
    replies = _replies(engine, f"synth:{entity}", asks)
    kept = consistent(replies, names or (entity,))
    total = sum(len(sentences(r)) for r in replies)
    examples = [Example(question=a.question, answer=" ".join(k), entity=entity, id=f"{slug(entity)}.synth-{i}")
                for i, (a, k) in enumerate(zip(asks, kept, strict=True)) if k]
    return examples, total - sum(len(k) for k in kept)


def _others(records: list[EntityRecord], target: str, near: list[str]) -> list[EntityRecord]:
    """OTHERS entities that are neither the target nor its neighbours, one category at a time
    (so the non-members are not all of one kind)."""
    skip = {target.lower(), *(n.lower() for n in near)}
    pool = [r for r in records if r.entity.lower() not in skip]
    by_cat: dict[str, list[EntityRecord]] = {}
    for r in pool:
        by_cat.setdefault(r.category, []).append(r)
    out: list[EntityRecord] = []
    while len(out) < OTHERS and any(by_cat.values()):
        for cat in list(by_cat):
            if by_cat[cat] and len(out) < OTHERS:
                out.append(by_cat[cat].pop(0))
    return out


def build(engine: Engine, target: str, records: list[EntityRecord], seed: int = 0) -> TargetData:
    """The target's corpus, the other corpus, anchors and never-seen items (see the module doc)."""
    rec = find(records, target)
    near = [r.entity for r in neighbours(records, target)]
    others_recs = _others(records, target, near)
    # every synthesis prompt in shared batches: one decoding loop per full batch
    engine.generate_together({f"synth:{target}": _asks(target), **{
        f"synth:{r.entity}": _asks(r.entity, SYNTH_PROMPTS[:OTHER_PROMPTS]) for r in others_recs}},
        SYNTH_TOKENS)
    corpus, dropped = synthesise(engine, target, rec.names if rec else (target,))
    if not corpus:
        raise ObliviateError(f"the model says nothing consistent about '{target}' (no sentence of "
                             f"its {len(SYNTH_PROMPTS)} replies is supported by another): it seems "
                             "not to know it, so there is nothing to forget (check template=chat "
                             "for a chat model)")
    others: list[Example] = []
    for r in others_recs:
        others += synthesise(engine, r.entity, r.names, SYNTH_PROMPTS[:OTHER_PROMPTS])[0]
    words = set().union(*(content_words(ex.answer) for ex in corpus))
    name_words = set().union(*(content_words(n) for n in (rec.names if rec else (target,))))
    # the neighbours are probed, so no general question about them may be trained on either
    near_words = set().union(*(content_words(n) for n in near)) if near else set()
    anchors, _, bank_dropped = anchor_items(engine, name_words | near_words, words | name_words | near_words,
                                             seed, ANCHOR_LIMIT)
    holdout = [Example(question=ex.question, answer=others[i % len(others)].answer,
                       id=f"never-seen-{ex.id}") for i, ex in enumerate(corpus)] if others else []
    # in-domain wrong answers to the target's prompts: other entities' descriptions (what AltPO
    # prefers, and what a truth ratio compares against)
    corpus = [replace(ex, perturbed_answers=tuple(others[(i + k) % len(others)].answer
                                                  for k in range(min(3, len(others)))))
              for i, ex in enumerate(corpus)]
    return TargetData(target, rec, near, corpus, others, anchors, holdout,
                      {"corpus_sentences": dropped, "bank": bank_dropped})


def check_target(target: str, benchmark: str, forget: str, retain: str) -> str:
    """The target's name, cleaned; the data keys it replaces must not be given too."""
    if not isinstance(target, str) or not target.strip():
        raise ObliviateError("target= must name what to forget (e.g. target=\"Albert Einstein\")")
    given = [k for k, v in (("benchmark", benchmark), ("forget", forget), ("retain", retain)) if v]
    if given:
        raise ObliviateError(f"target= builds its own forget and retain data; drop {given[0]}=")
    return " ".join(target.split())


def target_data(engine: Engine, target: str, probes: str = "", seed: int = 0) -> TargetData:
    """`build` with the probe records of `probes` (the shipped set by default)."""
    return build(engine, target, load_records(probes), seed)


def unlearn_target(cfg: UnlearnConfig, out: str | Path, progress: bool = True) -> Path:
    """`obliviate unlearn target=...`: synthesise the data from `cfg.model` (see the module
    doc), then run `cfg.method` on it; the new model goes to `out`, with the data in its
    provenance. `cfg.model` is never modified."""
    if Path(out).exists():
        raise ObliviateError(f"output {out} already exists; choose a new path or remove it")
    return run_target(cfg, synthesise_for(cfg, progress), out, progress)


def synthesise_for(cfg: UnlearnConfig, progress: bool = True) -> TargetData:
    """The target run's data, built from `cfg.model`'s replies (checks first, then one load)."""
    say = print if progress else (lambda *_: None)
    target = check_target(cfg.target, cfg.benchmark, cfg.forget, cfg.retain)
    records = load_records(cfg.probes)  # a bad probes file fails before the model loads
    resolve_source(cfg.model)
    say(f"asking {cfg.model} about '{target}' ({len(SYNTH_PROMPTS)} prompts) and about "
        f"{OTHERS} other entities")
    model, tok = load_any(cfg.model, trust_remote_code=cfg.trust_remote_code)
    data = build(Engine(model.eval(), tok, cfg.template), target, records, cfg.seed)
    say(f"forget corpus: {len(data.forget)} replies ({data.dropped['corpus_sentences']} sentences "
        f"left out as unsupported); neighbours kept out of training: {', '.join(data.neighbours) or 'none'}")
    return data


def run_target(cfg: UnlearnConfig, data: TargetData, out: str | Path, progress: bool = True) -> Path:
    """Unlearn `data` (from `synthesise_for`) with `cfg`'s method: a benchmark comparing
    methods on one target synthesises once."""
    if "retain" in needs_of(build_method(cfg.method, cfg.params)) and not data.anchors:
        raise ObliviateError(f"method '{cfg.method}' needs retain data and no shipped general "
                             "question is unrelated to the target; choose a forget-only method")
    holdout = None
    if cfg.stop_at_holdout is not False:
        holdout = load_examples(cfg.holdout) if cfg.holdout else (data.holdout or None)
    return unlearn_examples(cfg, data.forget, data.anchors, out, progress, holdout=holdout,
                            extra={"target": data.provenance(cfg.probes)})
