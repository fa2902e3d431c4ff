"""The TOFU suite on any (model, forget, retain, utility sets): per-item values + aggregates.

Passes: for each dataset one teacher-forced sweep over answer, paraphrase and perturbed
answers (Engine.stats), and one batched greedy generation for ROUGE.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from ..data.examples import Example
from .engine import Engine
from .tofu_math import (
    normalized_prob,
    rouge_l,
    truth_ratio,
    truth_ratio_forget_score,
    truth_ratio_utility_score,
)

ROLES = ("forget", "retain", "utility")


@dataclass
class EvalSet:
    name: str
    role: str  # forget | retain | utility
    examples: list[Example] = field(repr=False)


def _perturbed_variants(examples: list[Example]) -> list[str]:
    k = min((len(ex.perturbed_answers) for ex in examples), default=0)
    return [f"perturbed:{i}" for i in range(k)]


def evaluate_set(engine: Engine, es: EvalSet, max_new_tokens: int = 48) -> dict[str, Any]:
    """Per-item values and aggregates of one dataset under the TOFU definitions."""
    exs = es.examples
    pert_vs = _perturbed_variants(exs)
    stats = engine.stats(es.name, exs, ["answer", "paraphrase", *pert_vs])
    gt = stats["answer"]
    per_item: dict[str, Any] = {
        "id": [ex.id for ex in exs],
        "nll_answer": gt.nll_mean.tolist(),
        "n_tokens": gt.n_tokens.astype(int).tolist(),
        "exact_memorization": gt.em.tolist(),
        "extraction_strength": gt.es.tolist(),
    }
    agg: dict[str, float] = {}
    if pert_vs:
        para = stats["paraphrase"].nll_mean
        pert = np.stack([stats[v].nll_mean for v in pert_vs], axis=1)  # [N, K]
        r = truth_ratio(para, pert)
        per_item.update(nll_paraphrase=para.tolist(), nll_perturbed=pert.tolist(), truth_ratio=r.tolist())
        agg["truth_ratio"] = (truth_ratio_forget_score(r) if es.role == "forget"
                              else truth_ratio_utility_score(r))
    if es.role == "utility" and pert_vs:
        prob = normalized_prob(gt.nll_mean, pert)
    else:
        prob = gt.prob
    per_item["prob"] = prob.tolist()
    gens = engine.generate(es.name, exs, max_new_tokens)
    rouge = [rouge_l(ex.answer, g)[0] for ex, g in zip(exs, gens, strict=True)]
    per_item.update(generation=gens, rougeL_recall=rouge)
    agg.update(prob=float(np.mean(prob)), rougeL_recall=float(np.mean(rouge)),
               exact_memorization=float(gt.em.mean()),
               extraction_strength=float(gt.es.mean()))
    return {"role": es.role, "n": len(exs), "aggregate": agg, "per_item": per_item}


def evaluate_tofu(engine: Engine, sets: list[EvalSet], max_new_tokens: int = 48,
                  progress: bool = True) -> dict[str, dict[str, Any]]:
    out = {}
    for es in tqdm(sets, desc="evaluating", disable=not progress, leave=False):
        out[es.name] = evaluate_set(engine, es, max_new_tokens)
    return out


def grad_norms(engine: Engine, examples: list[Example]) -> np.ndarray:
    """Per-item norm of the gradient of the answer NLL w.r.t. all trainable parameters: one
    forward and backward per item (the only MIA statistic the shared pass cannot give)."""
    import torch

    from ..encoding import collate, encode
    from ..methods.objectives import mean_nll

    model, out = engine.model, []
    params = [p for p in model.parameters() if p.requires_grad]
    for i, ex in enumerate(examples):
        batch = collate([encode(engine.tokenizer, ex, i, engine.template)], engine.tokenizer.pad_token_id)
        logits = model(input_ids=batch["input_ids"].to(engine.device),
                       attention_mask=batch["attention_mask"].to(engine.device)).logits
        grads = torch.autograd.grad(mean_nll(logits, batch["labels"].to(engine.device)), params,
                                    allow_unused=True)
        out.append(float(torch.sqrt(sum((g.float() ** 2).sum() for g in grads if g is not None))))
    return np.array(out)


def evaluate_mia(engine: Engine, members: EvalSet, nonmembers: EvalSet, k: float = 0.4,
                 reference: Engine | None = None, gradnorm: bool = False) -> dict[str, Any]:
    """The MIA suite: LOSS, ZLib, Min-K% and Min-K%++ scores of members (the forget set) and
    non-members (a holdout set never trained on), from the engine's shared pass (the answer
    variant is usually already cached by the TOFU suite), and each attack's AUC. With a
    `reference` engine (e.g. the base model before fine-tuning) the Reference attack too;
    `gradnorm` adds GradNorm, which costs a backward pass per item."""
    from . import mia

    scores: dict[str, dict[str, np.ndarray]] = {}
    for side, es in (("member", members), ("nonmember", nonmembers)):
        st = engine.stats(es.name, es.examples, ["answer"])["answer"]
        texts = [ex.answer for ex in es.examples]
        scores[side] = {
            "loss": mia.loss_score(st.nll_mean),
            "zlib": mia.zlib_score(st.nll_mean, texts),
            "min_k": mia.min_k_score(st.token_logprobs, k),
            "min_k_pp": mia.min_k_pp_score(st.token_z, k),
        }
        if reference is not None:
            ref = reference.stats(es.name, es.examples, ["answer"])["answer"]
            scores[side]["reference"] = mia.reference_score(st.nll_mean, ref.nll_mean)
        if gradnorm:
            scores[side]["gradnorm"] = mia.gradnorm_score(grad_norms(engine, es.examples))
    agg = {f"auc_{a}": mia.auc(scores["member"][a], scores["nonmember"][a])
           for a in scores["member"]}
    per_item = {f"{side}_{a}": v.tolist() for side, d in scores.items() for a, v in d.items()}
    per_item.update(member_id=[ex.id for ex in members.examples],
                    nonmember_id=[ex.id for ex in nonmembers.examples])
    return {"role": "mia", "n": len(members.examples) + len(nonmembers.examples), "k": k,
            "members": members.name, "nonmembers": nonmembers.name, "aggregate": agg,
            "per_item": per_item}


def evaluate_memorization(engine: Engine, sets: list[EvalSet]) -> dict[str, dict[str, Any]]:
    """The memorization suite alone (no generation): exact memorization and extraction
    strength of each forget/retain set's answers, from the shared pass."""
    out = {}
    for es in sets:
        if es.role not in ("forget", "retain"):
            continue
        st = engine.stats(es.name, es.examples, ["answer"])["answer"]
        out[es.name] = {"role": es.role, "n": len(es.examples),
                        "aggregate": {"exact_memorization": float(st.em.mean()),
                                      "extraction_strength": float(st.es.mean())},
                        "per_item": {"id": [ex.id for ex in es.examples],
                                     "exact_memorization": st.em.tolist(),
                                     "extraction_strength": st.es.tolist()}}
    return out


def _first_answer(text: str) -> str:
    """A few-shot continuation runs on into the next demo: keep the first answer."""
    for stop in ("\n\n", "\nQuestion:"):
        text = text.split(stop, 1)[0]
    return text.strip()


def evaluate_muse(engine: Engine, passages: EvalSet, forget: EvalSet, retain: EvalSet,
                  shots: int = 3, verbmem_tokens: int = 128, knowmem_tokens: int = 32) -> dict[str, Any]:
    """MUSE's VerbMem and KnowMem (Shi et al. 2024), ROUGE-L F1 without stemming.

    VerbMem: each forget passage's first half (by words) is the prompt, the greedy continuation
    is scored against the true second half. KnowMem: `shots` retain QA pairs as
    "Question: q\\nAnswer: a\\n\\n" demos, then the question; forget (lower is better) and
    retain (higher is better, utility). Demo items are not scored."""
    halves = []
    for ex in passages.examples:
        words = ex.answer.split()
        cut = max(1, len(words) // 2)
        halves.append((" ".join(words[:cut]), " ".join(words[cut:])))
    gens = engine.complete(f"{passages.name}/verbmem", [p for p, _ in halves], verbmem_tokens)
    verbmem = [rouge_l(truth, g, stemmer=False)[1] for (_, truth), g in zip(halves, gens, strict=True)]
    demos, scored_retain = retain.examples[:shots], retain.examples[shots:]
    context = "".join(f"Question: {d.question}\nAnswer: {d.answer}\n\n" for d in demos)
    knowmem: dict[str, list[float]] = {}
    for es, items in (("forget", forget.examples), ("retain", scored_retain)):
        prompts = [f"{context}Question: {ex.question}\nAnswer: " for ex in items]
        outs = engine.complete(f"{es}/knowmem", prompts, knowmem_tokens)
        knowmem[es] = [rouge_l(ex.answer, _first_answer(o), stemmer=False)[1]
                       for ex, o in zip(items, outs, strict=True)]
    agg = {"verbmem_forget": (float(np.mean(verbmem)) if verbmem
                              else "not computed: no forget passages (text items)"),
           "knowmem_forget": float(np.mean(knowmem["forget"])),
           "knowmem_retain": float(np.mean(knowmem["retain"]))}
    return {"role": "muse", "n": len(passages.examples), "shots": shots,
            "rouge": "rougeL F1, no stemming (MUSE); the tofu suite's is rougeL recall, stemmed",
            "aggregate": agg,
            "per_item": {"verbmem_forget": verbmem, "verbmem_generation": gens,
                         "knowmem_forget": knowmem["forget"], "knowmem_retain": knowmem["retain"]}}
