"""Helpers for tests that need a tiny model which really answers: fit it on a batch in a few
hundred milliseconds, on one thread (tiny matrices: fastest, and immune to a busy machine)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch


@contextlib.contextmanager
def one_thread() -> Iterator[None]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def fit(model, batch: dict[str, torch.Tensor], steps: int, lr: float):
    """Full-batch AdamW on the batch's labelled tokens; returns the model in eval mode."""
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=lr)
    with one_thread():
        for _ in range(steps):
            logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
            loss = torch.nn.functional.cross_entropy(
                logits[:, :-1].reshape(-1, logits.size(-1)), batch["labels"][:, 1:].reshape(-1),
                ignore_index=-100)
            opt.zero_grad()
            loss.backward()
            opt.step()
    return model.eval()
