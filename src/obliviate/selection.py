"""Which entities to forget: the worst case (Fan et al. 2024, Challenging Forgets: Unveiling the
Worst-Case Forget Sets in Machine Unlearning) or a random draw of the same size.

    obliviate select-forget --worst-case --out DIR model=target benchmark=bench size=4

Fan et al. pick the forget set by a bi-level optimisation: the upper level maximises the
difficulty of unlearning, the lower level trains and unlearns. The proxy here replaces the
lower level by its first-order step: one gradient-ascent step on a forget set S moves the
retain loss by about lr * g_S . g_R (g the gradients of the mean answer NLL), so the damage to
what must stay per unit of forgetting grows with the alignment of S's gradient with the
retain data's. g_S is the mean of its entities' gradients, so the upper level is linear in
per-entity terms and solved exactly by taking the `size` entities whose gradients align most
with the rest of the data (cosine). One backward pass per entity and one for the reference;
no unlearning run. `benchmarks/worst_case.py` checks the proxy against real unlearning runs
(worst-case against random sets of the same size).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .config import require
from .data import Benchmark, Example, load_examples
from .data.formats import write_jsonl
from .encoding import DEFAULT_TEMPLATE, encode
from .errors import ObliviateError
from .io import atomic_dir, check_output, write_json_atomic
from .methods.base import nll_gradients
from .models import load_model


@dataclass
class SelectConfig:
    """Choose `size` entities to forget from a benchmark's trained entities or a file's."""

    model: str = ""
    benchmark: str = ""  # a benchmark folder: its trained people ('all' split) are the pool
    data: str = ""  # or a JSONL file whose items carry an `entity` label
    size: int = 4
    worst_case: bool = False  # False: a random draw (seed) of the same size
    template: str = DEFAULT_TEMPLATE
    seed: int = 0
    trust_remote_code: bool = False

    def __post_init__(self) -> None:
        require(self.size > 0, "size", f"must be positive (got {self.size})")
        if bool(self.benchmark) == bool(self.data):
            raise ObliviateError("give the pool as benchmark=<folder> or data=<file.jsonl> (one of them)")
        if self.worst_case and not self.model:
            raise ObliviateError("--worst-case scores entities with a model: give model=<the trained model>")


def _items(cfg: SelectConfig) -> list[Example]:
    """The pool: a generated benchmark's trained people's QA, a file benchmark's forget and
    retain items, or the data file's."""
    if not cfg.benchmark:
        return load_examples(cfg.data)
    bench = Benchmark.load(cfg.benchmark)
    if bench.kind == "generated":
        return bench.qa_of("all")
    if bench.kind == "files":
        return [*bench.forget_set(), *bench.retain_set()]
    raise ObliviateError(f"select-forget groups items by entity; a {bench.kind} benchmark's "
                         "forget splits are fixed (its companies by degree): give data=<file.jsonl>")


def pool(cfg: SelectConfig) -> tuple[dict[str, list[Example]], list[Example]]:
    """(entity -> its QA items in first-seen order, the items no entity owns: they stay)."""
    groups: dict[str, list[Example]] = {}
    rest: list[Example] = []
    for ex in _items(cfg):
        if ex.entity and not ex.is_text:
            groups.setdefault(ex.entity, []).append(ex)
        else:
            rest.append(ex)
    if len(groups) <= cfg.size:
        raise ObliviateError(f"size={cfg.size} leaves nothing to retain: the pool has {len(groups)} "
                             "entities (items need an 'entity' label to be grouped)")
    return groups, rest


def _flat(grads: list[torch.Tensor]) -> torch.Tensor:
    return torch.cat([g.reshape(-1).float() for g in grads])


def alignment(model, tok, groups: dict[str, list[Example]], template: str) -> dict[str, float]:
    """Cosine between each entity's answer-NLL gradient and the mean gradient of every other
    entity's items: higher = unlearning it costs the rest more. The rest's mean comes from
    one pass over all items, less the entity's own share."""
    params = [p for p in model.parameters() if p.dtype.is_floating_point]
    every = [ex for exs in groups.values() for ex in exs]
    total = _flat(nll_gradients(model, [encode(tok, ex, i, template) for i, ex in enumerate(every)],
                                tok.pad_token_id, params)) * len(every)
    scores = {}
    for name, items in groups.items():
        g_e = _flat(nll_gradients(model, [encode(tok, ex, i, template) for i, ex in enumerate(items)],
                                  tok.pad_token_id, params))
        g_rest = (total - g_e * len(items)) / (len(every) - len(items))
        scores[name] = float(torch.nn.functional.cosine_similarity(g_e, g_rest, dim=0))
    return scores


def choose(scores: dict[str, float] | None, names: list[str], size: int, seed: int) -> list[str]:
    """The `size` highest-scoring names (ties by name), or a seeded random draw without scores."""
    if scores is None:
        return sorted(random.Random(seed).sample(names, size))
    return sorted(sorted(names, key=lambda n: (-scores[n], n))[:size])


def select_forget(cfg: SelectConfig, out: str | Path) -> dict[str, Any]:
    """Write OUT/forget.jsonl (the chosen entities' items), OUT/retain.jsonl (the rest) and
    OUT/selection.json (the choice, the scores), atomically; returns the selection."""
    check_output(out, {"model": cfg.model, "benchmark": cfg.benchmark, "data": cfg.data}, kind="dir")
    if Path(out).exists():
        raise ObliviateError(f"output {out} already exists; choose a new path or remove it")
    groups, rest = pool(cfg)
    scores = None
    if cfg.worst_case:
        model, tok = load_model(cfg.model, trust_remote_code=cfg.trust_remote_code)
        scores = alignment(model.eval(), tok, groups, cfg.template)
    chosen = choose(scores, list(groups), cfg.size, cfg.seed)
    selection = {"mode": "worst_case" if cfg.worst_case else "random", "size": cfg.size,
                 "seed": cfg.seed, "chosen": chosen, "scores": scores,
                 "proxy": "cosine of the entity's answer-NLL gradient with the rest's (first-order "
                          "lower level, Fan et al. 2024)" if cfg.worst_case else None,
                 "config": {k: v for k, v in vars(cfg).items()}}
    with atomic_dir(out) as tmp:
        write_jsonl(tmp / "forget.jsonl", [ex for n in chosen for ex in groups[n]])
        write_jsonl(tmp / "retain.jsonl",
                    [ex for n, exs in groups.items() if n not in chosen for ex in exs] + rest)
        write_json_atomic(tmp / "selection.json", selection)
    return selection
