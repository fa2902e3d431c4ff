"""Batched teacher-forced scoring and greedy generation, cached per (dataset, variant).

One forward pass per (dataset, target variant) yields every per-item likelihood statistic
(summed / mean NLL, token log-probs, exact memorization, extraction strength); metrics read
these and never run a model themselves. An item's answer variants share its prompt (often most
of each sequence's tokens) and often the start of the answer: they are scored as one prefix tree
(trees.py) where the model family allows, else continue from the prompt's KV cache. Works with
anything exposing the causal-LM forward interface (`model(input_ids=, attention_mask=).logits`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import NamedTuple

import numpy as np
import torch

from ..data.examples import Example
from ..decoding import select_rows
from ..encoding import (
    DEFAULT_TEMPLATE,
    IGNORE,
    Encoded,
    bos_ids,
    collate,
    encode,
    labelled_suffix,
    prompt_text,
)
from ..parallel import process_state
from ..systems import (
    cached_prefill,
    forward_kwargs,
    greedy_rows,
    keeps_logits,
    lm_step,
    parkable,
)
from ..threads import Governor
from . import trees
from .trees import tree_capable


class ItemScore(NamedTuple):
    """Teacher-forced statistics of one (item, variant) sequence, from the shared pass."""

    nll_sum: float
    n_tokens: int
    em: float  # exact memorization: share of target tokens the argmax gets right
    es: float  # extraction strength: 1 - k/|y|, k = first index of a fully-right suffix
    token_logprobs: np.ndarray  # [n_tokens]
    token_z: np.ndarray  # [n_tokens] (log p(y_t) - mu_t) / sigma_t under the model's own distribution


@dataclass
class ItemStats:
    """Per-item statistics of one target variant over one dataset: each ItemScore field, for
    all N items (numbers as arrays of length N, token arrays as lists of N arrays)."""

    nll_sum: np.ndarray
    n_tokens: np.ndarray
    em: np.ndarray
    es: np.ndarray
    token_logprobs: list[np.ndarray]
    token_z: list[np.ndarray]

    @classmethod
    def from_scores(cls, scores: list[ItemScore]) -> ItemStats:
        columns = {name: [getattr(s, name) for s in scores] for name in ItemScore._fields}
        return cls(**{f.name: (columns[f.name] if f.type.startswith("list")
                               else np.array(columns[f.name])) for f in fields(cls)})

    @property
    def nll_mean(self) -> np.ndarray:
        return self.nll_sum / np.maximum(self.n_tokens, 1)

    @property
    def prob(self) -> np.ndarray:
        return np.exp(-self.nll_mean)


def _token_stats(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Statistics of the labelled tokens only, in row-major order: (log p(label) [n],
    Min-K%++ z [n], argmax correct [n], labelled tokens per row [batch]). Vocabulary-wide work
    is done at labelled positions alone (prompts and padding skipped)."""
    target = labels[:, 1:]
    mask = target != IGNORE
    return (*_label_stats(logits[:, :-1, :][mask], target[mask]), mask.sum(-1))


def _label_stats(sel: torch.Tensor, target: torch.Tensor,
                 at: torch.Tensor | None = None) -> tuple[torch.Tensor, ...]:
    """(log p(label), Min-K%++ z, argmax correct) of each label in `target` [n], predicted by
    the logits `sel` [positions, vocab] at row `at` [n] (None: row i predicts label i), so a
    position several labels read has its vocabulary-wide numbers computed once.
    z_t = (log p(y_t) - mu_t) / sigma_t, mu_t and sigma_t^2 the mean and variance of log p(v)
    with v drawn from the model's own next-token distribution (Zhang et al. 2024)."""
    sel = sel.float()
    logsm = torch.log_softmax(sel, dim=-1)
    p = logsm.exp()
    mu = (p * logsm).sum(-1)
    var = (p * logsm * logsm).sum(-1) - mu * mu
    best = sel.argmax(-1)
    if at is None:
        at = torch.arange(len(target), device=sel.device)
    logp = logsm[at, target]
    z = (logp - mu[at]) / var[at].clamp(min=1e-12).sqrt()
    return logp, z, best[at] == target


def extraction_strength(correct: np.ndarray) -> float:
    """correct: bool per target token. ES = 1 - k/n, k the smallest index from which all
    remaining predictions are right (k = n when the last token is wrong)."""
    n = len(correct)
    if n == 0:
        return 0.0
    wrong = np.flatnonzero(~correct)
    k = 0 if len(wrong) == 0 else int(wrong[-1]) + 1
    return 1.0 - k / n


def _data_parallel(items: list[Encoded], work: Callable[[list[Encoded]], list]) -> list:
    """`work` on this process's share of `items`, results gathered in item order on every
    process. Under `accelerate launch` the items are dealt out by length (rank r takes every
    N-th of the length-sorted items), so each process pads as little as one process would;
    alone, it is `work(items)`."""
    state = process_state()
    if state.num_processes == 1:
        return work(items)
    from accelerate.utils import gather_object

    order = sorted(range(len(items)), key=lambda i: len(items[i].input_ids))
    mine = order[state.process_index::state.num_processes]
    local = work([items[i] for i in mine]) if mine else []
    out: list = [None] * len(items)
    for idx, results in gather_object([(mine, local)]):
        for i, r in zip(idx, results, strict=True):
            out[i] = r
    return out


def _item_scores(logits: torch.Tensor, labels: torch.Tensor) -> list[ItemScore]:
    """One ItemScore per row of a scored batch (logits aligned with labels, as in a forward)."""
    logp, z, correct, counts = _token_stats(logits, labels)
    return _split_scores(logp, z, correct, counts.cpu().numpy())


def _split_scores(logp: torch.Tensor, z: torch.Tensor, correct: torch.Tensor,
                  counts) -> list[ItemScore]:
    """ItemScores from the labelled tokens' statistics of several sequences, in order, and
    each sequence's count of them."""
    # one device-to-host copy per batch, then split per row on the host
    cuts = np.cumsum(counts)[:-1]
    lps = np.split(logp.cpu().numpy().astype(np.float64), cuts)
    zs = np.split(z.cpu().numpy().astype(np.float64), cuts)
    oks = np.split(correct.cpu().numpy(), cuts)
    return [ItemScore(nll_sum=float(-lp.sum()), n_tokens=len(lp),
                      em=float(ok.mean()) if len(lp) else 0.0, es=extraction_strength(ok),
                      token_logprobs=lp, token_z=zr)
            for lp, ok, zr in zip(lps, oks, zs, strict=True)]


def _prompt_cut(item: Encoded) -> int:
    """Where a sequence's shared part ends: before the token whose logits predict its first
    label (the prompt's last token), which the continuation reads. 0: nothing to share."""
    first = next((j for j, t in enumerate(item.labels) if t != IGNORE), 0)
    return max(first - 1, 0)


def _prompt_groups(items: list[Encoded]) -> tuple[list[int], list[int]]:
    """(indices worth scoring from a shared prompt cache, the rest): a sequence is worth it
    when another one starts with the same prompt."""
    count: dict[tuple[int, ...], int] = {}
    keys = []
    for it in items:
        cut = _prompt_cut(it)
        keys.append(tuple(it.input_ids[:cut]) if cut else None)
        if cut:
            count[keys[-1]] = count.get(keys[-1], 0) + 1
    shared = [i for i, k in enumerate(keys) if k is not None and count[k] > 1]
    taken = set(shared)
    return shared, [i for i in range(len(items)) if i not in taken]


def _by_prompt(items: list[Encoded], cuts: list[int]) -> list[list[int]]:
    """The indices of `items` grouped by their shared part (ids before `cuts`), first seen first."""
    groups: dict[tuple[int, ...], list[int]] = {}
    for i, it in enumerate(items):
        groups.setdefault(tuple(it.input_ids[:cuts[i]]), []).append(i)
    return list(groups.values())


def _group_batches(items: list[Encoded], cuts: list[int], size: int) -> list[list[int]]:
    """Batches of at most `size` rows, sorted by prompt length, then by the longest tail in the
    prompt's group (so both paddings stay small), a group's rows together."""
    ordered = sorted(_by_prompt(items, cuts), key=lambda g: (cuts[g[0]], max(len(items[i].input_ids) for i in g)))
    rows = [i for g in ordered for i in sorted(g, key=lambda i: len(items[i].input_ids))]
    return [rows[s:s + size] for s in range(0, len(rows), size)]


def _distinct(keys: list[tuple[int, ...]]) -> tuple[list[tuple[int, ...]], list[int]]:
    """The distinct keys in first-seen order, and each key's index among them."""
    first: dict[tuple[int, ...], int] = {}
    which = [first.setdefault(k, len(first)) for k in keys]
    return list(first), which

PARK = 4  # a generation batch down to 1/PARK of its rows parks them (see _complete_local)


class Engine:
    """Scores and generates for one model; results are cached by (dataset name, variant)."""

    def __init__(self, model, tokenizer, template: str = DEFAULT_TEMPLATE, batch_size: int = 32,
                 max_length: int = 512) -> None:
        self.model, self.tokenizer = model, tokenizer
        self.template, self.batch_size, self.max_length = template, batch_size, max_length
        self._stats: dict[tuple[str, str], ItemStats] = {}
        self._gens: dict[tuple[str, int], list[str]] = {}
        self.forward_passes = 0  # scoring batches, counted so tests and benchmarks see sharing
        self.governor = Governor()  # threads follow the load through a long generation

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def stats(self, name: str, examples: list[Example], variants: list[str]) -> dict[str, ItemStats]:
        """Stats for each variant; all missing (item, variant) sequences go through the model
        together, sorted by length so batches carry little padding."""
        missing = [v for v in variants if (name, v) not in self._stats]
        if missing:
            memo: dict[str, list[int]] = {}
            encoded: list[tuple[str, Encoded]] = [
                (v, encode(self.tokenizer, ex, i, self.template, v, self.max_length, memo=memo))
                for v in missing for i, ex in enumerate(examples)
            ]
            # a sequence that recurs (a utility item's paraphrase is its answer) is scored once
            first: dict[tuple[tuple[int, ...], tuple[int, ...]], int] = {}
            slot = [first.setdefault((tuple(e.input_ids), tuple(e.labels)), len(first))
                    for _, e in encoded]
            unique = [None] * len(first)
            for j, (_, e) in enumerate(encoded):
                unique[slot[j]] = unique[slot[j]] or e
            scored = self._score(unique)
            per = [scored[k] for k in slot]
            for v in missing:
                rows = [per[j] for j, (vv, _) in enumerate(encoded) if vv == v]
                self._stats[(name, v)] = ItemStats.from_scores(rows)
        return {v: self._stats[(name, v)] for v in variants}

    def _score(self, items: list[Encoded]) -> list[ItemScore]:
        return _data_parallel(items, self._score_local)

    @torch.no_grad()
    def _score_local(self, items: list[Encoded]) -> list[ItemScore]:
        """Sequences that share their prompt with others (an item's answer variants) through
        the prompt's KV cache, computed once per prompt; the rest in whole passes."""
        shared, alone = [], []
        if parkable(self.model):  # a plain causal LM with a KV cache
            shared, alone = _prompt_groups(items)
        else:
            alone = list(range(len(items)))
        grouped = self._score_trees if tree_capable(self.model) else self._score_shared
        out: list = [None] * len(items)
        for part, score in ((alone, self._score_whole), (shared, grouped)):
            for i, result in zip(part, score([items[i] for i in part]), strict=True):
                out[i] = result
        return out

    def _score_whole(self, items: list[Encoded]) -> list[ItemScore]:
        """Whole sequences, sorted by length so batches carry little padding."""
        order = sorted(range(len(items)), key=lambda i: len(items[i].input_ids))
        out: list = [None] * len(items)
        pad = self.tokenizer.pad_token_id
        for start in range(0, len(order), self.batch_size):
            idx = order[start:start + self.batch_size]
            batch = collate([items[i] for i in idx], pad)
            batch = {k: v.to(self.device) for k, v in batch.items()}
            labels, keep = labelled_suffix(batch["labels"], keeps_logits(self.model))
            logits = self.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                                **keep, **forward_kwargs(self.model, batch)).logits  # [batch, kept, vocab]
            self.forward_passes += 1
            for i, score in zip(idx, _item_scores(logits, labels), strict=True):
                out[i] = score
        return out

    def _score_trees(self, items: list[Encoded]) -> list[ItemScore]:
        """Each prompt group as prefix trees (trees.py) of at most `batch_size` sequences (a
        question asked many times must not make one tree too wide to hold), one forward pass
        per batch of trees (trees.batches: within a whole pass's batch's positions and
        attention)."""
        members = [g[s:s + self.batch_size] for g in _by_prompt(items, [_prompt_cut(it) for it in items])
                   for s in range(0, len(g), self.batch_size)]
        forest = [trees.build([items[i] for i in g]) for g in members]
        out: list = [None] * len(items)
        dtype = self.model.get_input_embeddings().weight.dtype  # the attention's dtype
        for batch in trees.batches(forest, [max(len(items[i].input_ids) for i in g) for g in members],
                                   self.batch_size):
            part = [forest[b] for b in batch]
            rows = {k: v.to(self.device) for k, v in
                    trees.collate_trees(part, self.tokenizer.pad_token_id, dtype).items()}
            width = rows["input_ids"].shape[1]
            start = trees.first_read(part) if keeps_logits(self.model) else 0
            keep = {"logits_to_keep": width - start} if start else {}
            logits, _ = lm_step(self.model, rows["attention_mask"], ids=rows["input_ids"],
                                pos=rows["position_ids"], **keep)
            self.forward_passes += 1
            row, col, at, labels, counts = trees.reads(part, start, logits.device)
            scores = _split_scores(*_label_stats(logits[row, col], labels, at), counts)
            for i, score in zip((i for b in batch for i in members[b]), scores, strict=True):
                out[i] = score
        return out

    def _score_shared(self, items: list[Encoded]) -> list[ItemScore]:
        """Batches of whole prompt groups (as _prompt_groups orders them). Each batch reads its
        distinct prompts once, left-padded, into a KV cache; each row then continues from its
        prompt's cache with the rest of its sequence (from the prompt's last token, whose logits
        predict the first answer token), right-padded, at the positions it has in the whole
        sequence. The statistics are a whole pass's, to float rounding."""
        out: list = [None] * len(items)
        cuts = [_prompt_cut(it) for it in items]
        for idx in _group_batches(items, cuts, self.batch_size):
            heads, row_head = _distinct([tuple(items[i].input_ids[:cuts[i]]) for i in idx])
            tails = [Encoded(items[i].input_ids[cuts[i]:], items[i].labels[cuts[i]:], i) for i in idx]
            logits, labels = self._continue(heads, row_head, tails)
            self.forward_passes += 1
            for i, score in zip(idx, _item_scores(logits, labels), strict=True):
                out[i] = score
        return out

    def _continue(self, heads: list[tuple[int, ...]], row_head: list[int],
                  tails: list[Encoded]) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits [rows, tail, vocab] and labels of each tail read after its head's KV cache."""
        pad = self.tokenizer.pad_token_id
        head = collate([Encoded(list(h), [IGNORE] * len(h), 0) for h in heads], pad, left_pad=True)
        tail = collate(tails, pad)
        width = tail["input_ids"].shape[1]
        head_mask = head["attention_mask"].to(self.device)
        _, state = cached_prefill(self.model, head["input_ids"].to(self.device), head_mask, reserve=width)
        pick = torch.tensor(row_head, device=self.device)
        cache = select_rows(state["cache"], pick)
        mask = torch.cat([head_mask[pick], tail["attention_mask"].to(self.device)], dim=1)
        start = head_mask.sum(-1)[pick]  # each row's prompt length: its tail's first position
        pos = start[:, None] + torch.arange(width, device=self.device)
        logits, _ = lm_step(self.model, mask, ids=tail["input_ids"].to(self.device), cache=cache,
                            pos=pos, use_cache=True)
        return logits, tail["labels"].to(self.device)

    def generate(self, name: str, examples: list[Example], max_new_tokens: int = 48) -> list[str]:
        """Greedy, batched, left-padded continuations of each item's prompt (cached)."""
        return self.complete(name, self._prompts(examples), max_new_tokens)

    def _prompts(self, examples: list[Example]) -> list[str]:
        """Each item's prompt in the template (a plain-text item continues from nothing)."""
        return [prompt_text(ex.question, self.template, self.tokenizer) if not ex.is_text else ""
                for ex in examples]

    def generate_together(self, named: dict[str, list[Example]], max_new_tokens: int = 48) -> None:
        """Generate for several datasets in shared batches, each cached under its own name: many
        small sets (a probe set per kind) then cost one decoding loop per full batch instead of
        one per set."""
        todo = {n: exs for n, exs in named.items() if (n, max_new_tokens) not in self._gens and exs}
        if len(todo) < 2:
            return
        prompts = [p for exs in todo.values() for p in self._prompts(exs)]
        texts = self.complete("\x00together:" + "\x00".join(todo), prompts, max_new_tokens)
        start = 0
        for n, exs in todo.items():
            self._gens[(n, max_new_tokens)] = texts[start:start + len(exs)]
            start += len(exs)

    @torch.no_grad()
    def complete(self, name: str, prompts: list[str], max_new_tokens: int = 48) -> list[str]:
        """Greedy continuations of raw prompts, batched and left-padded, cached under `name`."""
        key = (name, max_new_tokens)
        if key in self._gens:
            return self._gens[key]
        tok = self.tokenizer
        encoded = []
        for i, p in enumerate(prompts):
            ids = bos_ids(tok, p) + tok.encode(p, add_special_tokens=False)
            encoded.append(Encoded(ids, [-100] * len(ids), i))
        texts = _data_parallel(encoded, lambda part: self._complete_local(part, max_new_tokens))
        self._gens[key] = texts
        return texts

    def _generation_rows(self, lengths: list[int]) -> int:
        """Rows of the next generation batch, sized by length: as many of the queued rows
        (shortest first) as fit in the tokens of `batch_size` sequences of `max_length`, at
        least `batch_size` when they fit. Decoding holds one KV-cache entry per token and the
        last position's logits, far less than a scoring batch of that many tokens, so this
        stays within the memory the batch size already allows, and short prompts decode in
        fewer, fuller steps."""
        budget = self.batch_size * self.max_length
        rows = 0
        for rows, length in enumerate(lengths, start=1):
            if rows * length > budget:
                return max(1, rows - 1)
        return max(1, rows)

    @torch.no_grad()
    def _complete_local(self, encoded: list[Encoded], max_new_tokens: int) -> list[str]:
        """Batches of prompts by length. A batch down to 1/PARK of its rows stops, when more
        work waits, and its rows still running go back in the queue: they continue later,
        together with the long rows of other batches, from their prompt plus what they have
        generated (read in one pass). So a few answers that never end cost one batch running
        to the token limit, not every batch they are in."""
        tok = self.tokenizer
        eos = tok.eos_token_id
        can_park = eos is not None and parkable(self.model)
        new: list[list[int]] = [[] for _ in encoded]
        queue = sorted(range(len(encoded)), key=lambda i: len(encoded[i].input_ids))
        while queue:
            self.governor.tick()
            n = self._generation_rows([len(encoded[i].input_ids) + max_new_tokens for i in queue])
            idx, queue = queue[:n], queue[n:]
            rows = [encoded[i].input_ids + new[i] for i in idx]
            rows = [Encoded(r, [IGNORE] * len(r), i) for r, i in zip(rows, idx, strict=True)]
            batch = collate(rows, tok.pad_token_id, left_pad=True)
            got = greedy_rows(self.model, batch["input_ids"].to(self.device),
                              batch["attention_mask"].to(self.device),
                              [max_new_tokens - len(new[i]) for i in idx], eos,
                              park_below=n // PARK if can_park and queue else 0)
            for i, tokens in zip(idx, got, strict=True):
                new[i] += tokens
                if len(new[i]) < max_new_tokens and (not new[i] or new[i][-1] != eos):
                    queue.append(i)  # parked: resumes with the other long rows
        return [tok.decode(n, skip_special_tokens=True).strip() for n in new]
