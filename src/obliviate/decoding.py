"""Greedy decoding in which finished rows leave the batch.

A batch used to decode until its slowest row ended: rows that had emitted the end token went on
decoding padding, through the whole model, for every remaining step (all 200 of TOFU's when one
row never ends). Here ended rows leave the logits, the token ids and every tensor and KV cache of
the decoding state, so a step costs about what its live rows cost. They leave in groups (1/SLACK
of the batch at a time), since each cut copies the live rows' caches. Greedy decoding is
deterministic per row, so leaving a row out changes no other row's tokens.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import torch

Step = tuple[torch.Tensor, Any]  # (logits [rows, seq, vocab], decoding state)
SLACK = 8  # ended rows leave the batch once they are 1/SLACK of it (see greedy_loop)


def reserved_cache(model, reserve: int) -> Any:
    """A transformers KV cache whose full-attention layers keep their keys and values in
    buffers with room for `reserve` more tokens after the prompt: each decoding step writes
    its token in place, where the default cache concatenates, copying the whole cache every
    step (about a third of a 200-token answer's decoding time on small models). The attention
    reads the same values either way. None when the model has no config to build layers from."""
    from transformers import DynamicCache
    from transformers.cache_utils import DynamicLayer

    config = getattr(model, "config", None)
    if config is None:
        return None
    cache = DynamicCache(config=config)
    cache.layers = [_reserved_layer_class()(reserve) if type(layer) is DynamicLayer else layer
                    for layer in cache.layers]
    return cache


@functools.cache
def _reserved_layer_class():
    """Built on first use, so importing this module does not load transformers."""
    from transformers.cache_utils import DynamicLayer

    class ReservedLayer(DynamicLayer):
        """A DynamicLayer over a preallocated buffer: `keys` and `values` are views of its
        first `length` positions."""

        def __init__(self, reserve: int) -> None:
            super().__init__()
            self.reserve, self.length = reserve, 0
            self.k_buf = self.v_buf = None

        def update(self, key_states, value_states, *args, **kwargs):
            if not self.is_initialized:
                self.lazy_initialization(key_states, value_states)
            n = key_states.shape[-2]
            if self.k_buf is None or self.length + n > self.k_buf.shape[-2]:
                self._grow(key_states, value_states, self.length + n + self.reserve)
            self.k_buf[..., self.length:self.length + n, :] = key_states
            self.v_buf[..., self.length:self.length + n, :] = value_states
            self.length += n
            self.keys = self.k_buf[..., :self.length, :]
            self.values = self.v_buf[..., :self.length, :]
            return self.keys, self.values

        def _grow(self, key_states, value_states, capacity: int) -> None:
            def bigger(buf, like):
                shape = (*like.shape[:-2], capacity, like.shape[-1])
                out = torch.empty(shape, dtype=like.dtype, device=like.device)
                if buf is not None:
                    out[..., :self.length, :] = buf[..., :self.length, :]
                return out

            self.k_buf, self.v_buf = bigger(self.k_buf, key_states), bigger(self.v_buf, value_states)

        def batch_select_indices(self, indices: torch.Tensor) -> None:
            if self.k_buf is not None:
                # copy the filled positions only: early in a long reserve most are empty
                def keep(buf):
                    out = buf.new_empty((len(indices), *buf.shape[1:]))
                    out[..., :self.length, :] = buf[..., :self.length, :].index_select(0, indices)
                    return out

                self.k_buf, self.v_buf = keep(self.k_buf), keep(self.v_buf)
                self.keys = self.k_buf[..., :self.length, :]
                self.values = self.v_buf[..., :self.length, :]

        def crop(self, tokens_to_remove: int) -> None:
            super().crop(tokens_to_remove)
            if self.k_buf is not None:
                self.length = self.keys.shape[-2]

        def reset(self) -> None:
            super().reset()
            self.k_buf = self.v_buf = None
            self.length = 0

    return ReservedLayer


def length_parts(mask: torch.Tensor) -> list[torch.Tensor]:
    """The rows of a left-padded batch in groups by real length (shortest first), a group's
    longest row at most twice its shortest: read group by group, a batch of rows resumed with
    their generated tokens (lengths from a prompt to a prompt plus 200 tokens) no longer runs
    the model over its padding, which was most of its positions."""
    lengths = mask.sum(-1).clamp(min=1)  # an empty prompt reads as one (masked) position
    order = torch.argsort(lengths, stable=True)
    sizes = lengths[order].tolist()
    parts, start = [], 0
    for j in range(1, len(sizes) + 1):
        if j == len(sizes) or sizes[j] > 2 * sizes[start]:
            parts.append(order[start:j])
            start = j
    return parts


def all_reserved(cache: Any) -> bool:
    """Whether every layer of a cache is one of reserved_cache's (so parts of it can merge)."""
    layers = getattr(cache, "layers", None)
    return bool(layers) and all(type(layer) is _reserved_layer_class() for layer in layers)


def merge_parts(caches: list[Any], parts: list[torch.Tensor], rows: int, width: int,
                reserve: int) -> Any:
    """One reserved cache of `rows` rows, `width` positions and room for `reserve` more, from
    the caches of `parts` (row indices), each read left-padded to its own longest row (with
    no room reserved: only the merged cache is decoded into): each row's keys and values end
    at `width`, as one left-padded read of all rows leaves them; the padding before them is
    zeros (finite, so the mask's lowest value hides it in the softmax)."""
    out = caches[0]
    for i, layer in enumerate(out.layers):
        like = layer.k_buf
        shape = (rows, like.shape[1], width + reserve, like.shape[3])
        k, v = like.new_zeros(shape), layer.v_buf.new_zeros(shape)
        for cache, idx in zip(caches, parts, strict=True):
            part = cache.layers[i]
            idx = idx.to(like.device)
            k[idx, :, width - part.length:width] = part.k_buf[:, :, :part.length]
            v[idx, :, width - part.length:width] = part.v_buf[:, :, :part.length]
        layer.k_buf, layer.v_buf, layer.length, layer.reserve = k, v, width, reserve
        layer.keys, layer.values = k[..., :width, :], v[..., :width, :]
    return out


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
                n_rows: int, max_new_tokens: int | list[int], eos: int | None,
                park_below: int = 0) -> list[list[int]]:
    """The new tokens of each row (its end token included, nothing after it). `prefill()`
    returns the logits over the prompts and the state; `decode(ids [rows, 1], state)` the
    logits of one more token per row and the next state. `max_new_tokens`: one limit for all
    rows or one per row. `park_below`: stop once fewer rows than this are still running (the
    caller continues them, merged with others); 0 runs every row to its end."""
    limits = [max_new_tokens] * n_rows if isinstance(max_new_tokens, int) else list(max_new_tokens)
    out: list[list[int]] = [[] for _ in range(n_rows)]
    if n_rows == 0 or max(limits) <= 0:
        return out
    logits, state = prefill()
    rows: list[int | None] = list(range(n_rows))  # each batch row's original row; None: ended
    while True:
        nxt = logits[:, -1, :].argmax(-1)  # [batch rows]
        keep = []
        for j, (r, t) in enumerate(zip(rows, nxt.tolist(), strict=True)):
            if r is None:
                continue
            if len(out[r]) < limits[r]:
                out[r].append(t)
            if t != eos and len(out[r]) < limits[r]:
                keep.append(j)
            else:
                rows[j] = None
        if not keep or len(keep) < park_below:
            return out
        # ended rows leave once they are 1/SLACK of the batch: cutting copies every live
        # row's cache, which costs about what carrying a few idle rows for some steps does
        if (len(rows) - len(keep)) * SLACK >= len(rows):
            idx = torch.tensor(keep, device=nxt.device)
            state = select_rows(state, idx)
            rows = [rows[j] for j in keep]
            nxt = nxt[idx]
        logits, state = decode(nxt[:, None], state)


def pad_rows(prompts: torch.Tensor, new: list[list[int]], pad: int) -> torch.Tensor:
    """The prompts followed by each row's new tokens, right-padded to one width (what
    transformers' generate returns)."""
    width = max((len(r) for r in new), default=0)
    tail = torch.full((len(new), width), pad, dtype=prompts.dtype, device=prompts.device)
    for i, r in enumerate(new):
        if r:
            tail[i, :len(r)] = torch.tensor(r, dtype=prompts.dtype)
    return torch.cat([prompts, tail], dim=1)
