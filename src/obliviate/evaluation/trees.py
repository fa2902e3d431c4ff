"""Prefix trees: the sequences that share a prompt (an item's answer, paraphrase and perturbed
answers) scored together in one row.

A group's sequences become one trie: each distinct prefix is one position, so the prompt is
read once and so is every answer token several variants share up to it ("X was born in"
before five different places: about two fifths of the answer tokens of TOFU-style sets). A
position attends to its ancestors alone (a 4D attention mask) at its depth as position id, so
its logits are those of any sequence through it, to float rounding, and one forward pass per
batch scores what a prompt cache took two passes and a cache copy per row to score. The
vocabulary-wide statistics are computed once per position and read by every sequence through it.

Only for decoder families whose attention takes a custom 4D mask and whose positions come from
the position ids (rotary or learned), without sliding windows (TREE_FAMILIES).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..encoding import IGNORE, Encoded

# families whose attention honours a custom 4D mask and whose positions are the position ids:
# ALiBi families (bloom, mpt, falcon) derive positions from a 2D mask, sliding windows and
# attention sinks would be overridden by a full mask, so those take the prompt-cache path
TREE_FAMILIES = frozenset({"llama", "mistral", "qwen2", "qwen3", "gemma", "phi3", "olmo", "olmo2",
                           "granite", "gpt2", "gpt_neox", "mixtral"})


def tree_capable(model) -> bool:
    """Whether a plain transformers causal LM can score prefix trees (see TREE_FAMILIES): the
    library's own class (remote code only claims a family), all layers full attention."""
    config = getattr(model, "config", None)
    if config is None or getattr(config, "model_type", None) not in TREE_FAMILIES:
        return False
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    if getattr(model, "peft_type", None) not in (None, "LORA") or \
            not type(inner).__module__.startswith("transformers.models."):
        return False  # prompt-learning adapters join their own 2D mask to ours
    if getattr(config, "_attn_implementation", None) not in ("sdpa", "eager"):
        return False
    if any(kind != "full_attention" for kind in getattr(config, "layer_types", None) or ()):
        return False
    window = getattr(config, "sliding_window", None)
    return window is None or getattr(config, "use_sliding_window", True) is False


@dataclass(frozen=True)
class Tree:
    """One trie over a group's sequences; nodes in creation order (a parent before its children)."""

    ids: list[int]  # each node's token
    parent: list[int]  # each node's parent node, -1 for a root
    depth: list[int]  # each node's position in the sequences through it
    # per sequence: (node whose logits predict it, label) for each labelled token
    reads: list[list[tuple[int, int]]]

    def ancestors(self) -> np.ndarray:
        """[nodes, nodes] bool: row i marks i and its ancestors, the positions i attends to."""
        n = len(self.ids)
        out = np.zeros((n, n), dtype=bool)
        for i, p in enumerate(self.parent):
            if p >= 0:
                out[i] = out[p]
            out[i, i] = True
        return out


def build(items: list[Encoded]) -> Tree:
    """The trie of `items`' token ids. Labels are read as the whole pass reads them: the
    logits at position t-1 predict the label at t (a label at position 0 has no predictor)."""
    child: dict[tuple[int, int], int] = {}
    ids: list[int] = []
    parent: list[int] = []
    depth: list[int] = []
    reads = []
    for it in items:
        node, path = -1, []
        for tok in it.input_ids:
            nxt = child.get((node, tok))
            if nxt is None:
                nxt = child[(node, tok)] = len(ids)
                ids.append(tok)
                parent.append(node)
                depth.append(depth[node] + 1 if node >= 0 else 0)
            node = nxt
            path.append(node)
        reads.append([(path[t - 1], lab) for t, lab in enumerate(it.labels) if t and lab != IGNORE])
    return Tree(ids, parent, depth, reads)


def collate_trees(trees: list[Tree], pad_id: int, dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """Right-padded rows of trees: input_ids and position_ids [rows, width] and the additive
    attention mask [rows, 1, width, width] (0 where a node sees an ancestor or itself, the
    dtype's lowest value elsewhere; padding sees itself alone, so no row of the softmax is empty)."""
    width = max(len(t.ids) for t in trees)
    ids = torch.full((len(trees), width), pad_id, dtype=torch.long)
    pos = torch.zeros((len(trees), width), dtype=torch.long)
    seen = np.zeros((len(trees), width, width), dtype=bool)
    seen[:, np.arange(width), np.arange(width)] = True
    for r, t in enumerate(trees):
        n = len(t.ids)
        ids[r, :n] = torch.tensor(t.ids)
        pos[r, :n] = torch.tensor(t.depth)
        seen[r, :n, :n] = t.ancestors()
    mask = torch.zeros(seen.shape, dtype=dtype)
    mask.masked_fill_(~torch.from_numpy(seen), torch.finfo(dtype).min)
    return {"input_ids": ids, "position_ids": pos, "attention_mask": mask[:, None]}


def batches(forest: list[Tree], longest: list[int], size: int) -> list[list[int]]:
    """Batches of trees (their indices), smallest first: each pads to no more positions
    (rows x widest tree), nor attention scores (rows x widest^2), than `size` rows of its
    longest sequence would, so a batch holds what a whole pass's batch may; a tree wider than
    that goes alone."""
    out: list[list[int]] = []
    rows = seq = 0
    for i in sorted(range(len(forest)), key=lambda i: len(forest[i].ids)):
        n = len(forest[i].ids)  # sorted: the widest tree so far
        most = max(seq, longest[i])
        if not out or (rows + 1) * n > size * most or (rows + 1) * n * n > size * most * most:
            out.append([])
            rows = seq = 0
        out[-1].append(i)
        rows, seq = rows + 1, max(seq, longest[i])
    return out


def first_read(trees: list[Tree]) -> int:
    """The first position any sequence's label is predicted from: logits start there."""
    return min((node for t in trees for reads in t.reads for node, _ in reads), default=0)


def reads(trees: list[Tree], start: int, device: torch.device) -> tuple[torch.Tensor, ...]:
    """Where every labelled token of every tree's sequences (in order) is read, for logits
    [rows, width - start, vocab] from position `start` on: (row, column) of each distinct
    predicting position, each label's index among those positions, the labels, and the
    labelled tokens per sequence. A position several sequences share appears once."""
    slot: dict[tuple[int, int], int] = {}
    where, labels, counts = [], [], []
    for r, t in enumerate(trees):
        for seq in t.reads:
            counts.append(len(seq))
            for node, lab in seq:
                where.append(slot.setdefault((r, node), len(slot)))
                labels.append(lab)

    def tensor(values: list[int]) -> torch.Tensor:
        return torch.tensor(values, dtype=torch.long, device=device)

    return (tensor([r for r, _ in slot]), tensor([n - start for _, n in slot]), tensor(where),
            tensor(labels), counts)
