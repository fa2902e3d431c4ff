"""Greedy decoding in which finished rows leave the batch.

A batch used to decode until its slowest row ended: rows that had emitted the end token went on
decoding padding, through the whole model, for every remaining step (all 200 of TOFU's when one
row never ends). Here each step keeps only the rows still running, in the logits, the token ids
and every tensor and KV cache of the decoding state, so a step costs what its live rows cost.
Greedy decoding is deterministic per row, so leaving a row out changes no other row's tokens.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

Step = tuple[torch.Tensor, Any]  # (logits [rows, seq, vocab], decoding state)


def select_rows(state: Any, keep: torch.Tensor) -> Any:
    """The decoding state of the rows `keep` (indices into the current rows): tensors are cut
    along their first (row) dimension, KV caches through their own batch selection, dicts,
    lists and tuples element by element; anything else (settings, None) is shared by all rows."""
    if isinstance(state, torch.Tensor):
        return state[keep.to(state.device)] if state.dim() else state
    if isinstance(state, dict):
        return {k: select_rows(v, keep) for k, v in state.items()}
    if isinstance(state, (list, tuple)):
        return type(state)(select_rows(v, keep) for v in state)
    if hasattr(state, "batch_select_indices"):  # a transformers Cache: cut in place
        state.batch_select_indices(keep.to(_cache_device(state, keep)))
        return state
    return state


def _cache_device(cache: Any, default: torch.Tensor) -> torch.device:
    layers = getattr(cache, "layers", None) or []
    keys = getattr(layers[0], "keys", None) if layers else None
    return keys.device if isinstance(keys, torch.Tensor) else default.device


def greedy_loop(prefill: Callable[[], Step], decode: Callable[[torch.Tensor, Any], Step],
                n_rows: int, max_new_tokens: int, eos: int | None) -> list[list[int]]:
    """The new tokens of each row (its end token included, nothing after it). `prefill()`
    returns the logits over the prompts and the state; `decode(ids [rows, 1], state)` the
    logits of one more token per row and the next state."""
    out: list[list[int]] = [[] for _ in range(n_rows)]
    if max_new_tokens <= 0 or n_rows == 0:
        return out
    logits, state = prefill()
    rows = list(range(n_rows))  # the original row of each live row
    for step in range(max_new_tokens):
        nxt = logits[:, -1, :].argmax(-1)  # [live]
        for r, t in zip(rows, nxt.tolist(), strict=True):
            out[r].append(t)
        if step + 1 == max_new_tokens:
            break
        if eos is not None:
            live = nxt != eos
            if not bool(live.any()):
                break
            if not bool(live.all()):
                keep = torch.nonzero(live).flatten()
                state = select_rows(state, keep)
                rows = [rows[i] for i in keep.tolist()]
                nxt = nxt[keep]
        logits, state = decode(nxt[:, None], state)
    return out


def pad_rows(prompts: torch.Tensor, new: list[list[int]], pad: int) -> torch.Tensor:
    """The prompts followed by each row's new tokens, right-padded to one width (what
    transformers' generate returns)."""
    width = max((len(r) for r in new), default=0)
    tail = torch.full((len(new), width), pad, dtype=prompts.dtype, device=prompts.device)
    for i, r in enumerate(new):
        if r:
            tail[i, :len(r)] = torch.tensor(r, dtype=prompts.dtype)
    return torch.cat([prompts, tail], dim=1)
