"""The single training loop (accelerate), used by fine-tuning and by every unlearning method.

A step = draw one batch from each named stream, call `loss_fn(model, batches)`, backprop,
clip, step. Everything about *what* is optimised lives in `loss_fn`; this file knows only
how to optimise.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch.utils.data import DataLoader

from .encoding import Encoded, collate
from .errors import ObliviateError

LossFn = Callable[[Any, dict[str, dict[str, torch.Tensor]]], tuple[torch.Tensor, dict[str, float]]]


@dataclass
class OptimConfig:
    lr: float = 3e-3
    steps: int = 400
    batch_size: int = 64
    warmup_ratio: float = 0.1
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    schedule: str = "cosine"  # cosine | constant | linear


def set_seed(seed: int) -> None:
    random.seed(seed)
    torch.manual_seed(seed)


def _lr_lambda(cfg: OptimConfig) -> Callable[[int], float]:
    warm = int(cfg.steps * cfg.warmup_ratio)

    def f(step: int) -> float:
        if warm and step < warm:
            return (step + 1) / warm
        if cfg.schedule == "constant":
            return 1.0
        progress = (step - warm) / max(1, cfg.steps - warm)
        if cfg.schedule == "linear":
            return max(0.0, 1.0 - progress)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    if cfg.schedule not in ("cosine", "constant", "linear"):
        raise ObliviateError(f"unknown schedule '{cfg.schedule}' (cosine, constant, linear)")
    return f


def make_loader(items: list[Encoded], batch_size: int, pad_id: int, seed: int) -> DataLoader:
    """Shuffled batches of similar-length items (transformers' LengthGroupedSampler): short QA
    items are not padded to the length of passages, which halves the tokens computed."""
    from transformers.trainer_pt_utils import LengthGroupedSampler

    gen = torch.Generator().manual_seed(seed)
    bs = min(batch_size, len(items))
    sampler = LengthGroupedSampler(bs, lengths=[len(it.input_ids) for it in items], generator=gen)
    return DataLoader(items, batch_size=bs, sampler=sampler,
                      collate_fn=lambda b: collate(b, pad_id), drop_last=False)


def _cycle(loader: DataLoader) -> Iterator[dict[str, torch.Tensor]]:
    while True:  # a fresh shuffle every pass
        yield from loader


def train(model, loss_fn: LossFn, loaders: dict[str, DataLoader], cfg: OptimConfig,
          desc: str = "training", params: list[torch.nn.Parameter] | None = None,
          on_step: Callable[[int, dict[str, float]], None] | None = None,
          progress: bool = True) -> list[dict[str, float]]:
    """Optimise `loss_fn` for cfg.steps steps; returns per-step logs. Raises on a NaN/inf loss."""
    from accelerate import Accelerator
    from tqdm.auto import tqdm

    if cfg.steps <= 0:
        raise ObliviateError(f"steps must be positive (got {cfg.steps})")
    accelerator = Accelerator(cpu=not torch.cuda.is_available())
    trainable = params if params is not None else [p for p in model.parameters() if p.requires_grad]
    if not trainable:
        raise ObliviateError("no trainable parameters")
    optimizer = torch.optim.AdamW(trainable, lr=cfg.lr, weight_decay=cfg.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _lr_lambda(cfg))
    names = list(loaders)
    model, optimizer, scheduler, *prepared = accelerator.prepare(
        model, optimizer, scheduler, *[loaders[n] for n in names]
    )
    streams = {n: _cycle(dl) for n, dl in zip(names, prepared, strict=True)}
    model.train()
    logs: list[dict[str, float]] = []
    bar = tqdm(range(cfg.steps), desc=desc, disable=not progress or not accelerator.is_main_process,
               leave=False, dynamic_ncols=True)
    try:
        for step in bar:
            batches = {n: next(s) for n, s in streams.items()}
            loss, info = loss_fn(model, batches)
            if not torch.isfinite(loss):
                raise ObliviateError(f"{desc}: loss became {loss.item()} at step {step}; "
                                     "lower the learning rate")
            accelerator.backward(loss)
            if cfg.grad_clip > 0:
                accelerator.clip_grad_norm_(trainable, cfg.grad_clip)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            info = {"loss": float(loss.detach()), **info, "lr": scheduler.get_last_lr()[0]}
            logs.append(info)
            if step % 10 == 0:
                bar.set_postfix(loss=f"{info['loss']:.3f}")
            if on_step is not None:
                on_step(step, info)
    finally:
        bar.close()
        model.eval()
    accelerator.wait_for_everyone()
    accelerator.unwrap_model(model)
    return logs
