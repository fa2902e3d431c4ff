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
    lr: float | None = 3e-3  # None: the caller's default (a method's own)
    steps: int = 400
    batch_size: int = 64
    warmup_ratio: float = 0.1
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    schedule: str = "cosine"  # cosine | constant | linear
    optimizer: str = "adamw"  # adamw | sophia (second-order, as SOUL)
    sophia_rho: float = 0.05
    hessian_every: int = 10  # Sophia: steps between curvature estimates


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


def _optimizer(cfg: OptimConfig, params: list[torch.nn.Parameter]) -> torch.optim.Optimizer:
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "sophia":
        from .optim import Sophia

        return Sophia(params, lr=cfg.lr, rho=cfg.sophia_rho, weight_decay=cfg.weight_decay)
    raise ObliviateError(f"unknown optimizer '{cfg.optimizer}' (adamw, sophia)")


def _update_curvature(model, optimizer, batch: dict[str, torch.Tensor], accelerator) -> None:
    """Sophia's Gauss-Newton-Bartlett curvature estimate from one extra forward/backward."""
    from .optim import gnb_loss

    optimizer.zero_grad(set_to_none=True)
    loss, n_tokens = gnb_loss(model, batch)
    accelerator.backward(loss)
    getattr(optimizer, "optimizer", optimizer).update_hessian(scale=float(n_tokens))
    optimizer.zero_grad(set_to_none=True)


def train(model, loss_fn: LossFn, loaders: dict[str, DataLoader], cfg: OptimConfig,
          desc: str = "training", params: list[torch.nn.Parameter] | None = None,
          on_step: Callable[[int, dict[str, float]], bool | None] | None = None,
          progress: bool = True,
          after_backward: Callable[[], None] | None = None) -> list[dict[str, float]]:
    """Optimise `loss_fn` for cfg.steps steps; returns per-step logs. Raises on a NaN/inf loss
    (before the step, so the weights are still those of the last finite step).
    `after_backward` may edit gradients (masks) before clipping and the step; `on_step`
    returning True ends training early."""
    from accelerate import Accelerator
    from tqdm.auto import tqdm

    if cfg.lr is None or cfg.lr <= 0:
        raise ObliviateError(f"learning rate must be positive (got {cfg.lr})")
    if cfg.steps <= 0:
        raise ObliviateError(f"steps must be positive (got {cfg.steps})")
    accelerator = Accelerator(cpu=not torch.cuda.is_available())
    trainable = params if params is not None else [p for p in model.parameters() if p.requires_grad]
    if not trainable:
        raise ObliviateError("no trainable parameters")
    optimizer = _optimizer(cfg, trainable)
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
            if cfg.optimizer == "sophia" and step % cfg.hessian_every == 0:
                _update_curvature(model, optimizer, next(iter(batches.values())), accelerator)
            loss, info = loss_fn(model, batches)
            if not torch.isfinite(loss):
                raise ObliviateError(f"{desc}: loss became {loss.item()} at step {step}; "
                                     "lower the learning rate")
            accelerator.backward(loss)
            if after_backward is not None:
                after_backward()
            if cfg.grad_clip > 0:
                accelerator.clip_grad_norm_(trainable, cfg.grad_clip)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            info = {"loss": float(loss.detach()), **info, "lr": scheduler.get_last_lr()[0]}
            logs.append(info)
            if step % 10 == 0:
                bar.set_postfix(loss=f"{info['loss']:.3f}")
            if on_step is not None and on_step(step, info):
                break  # the caller's stopping rule is met
    finally:
        bar.close()
        model.eval()
    accelerator.wait_for_everyone()
    accelerator.unwrap_model(model)
    return logs
