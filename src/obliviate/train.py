"""The single training loop (accelerate), used by fine-tuning and by every unlearning method.

A step = draw one batch from each named stream, call `loss_fn(model, batches)`, backprop,
clip, step. Everything about *what* is optimised lives in `loss_fn`; this file knows only
how to optimise.

The same loop runs on one process or under `accelerate launch` (DDP, FSDP, DeepSpeed): batches
are split across processes (`split_batches`), so the global batch and the result do not depend
on the number of processes, and the objectives average over the whole batch (see
`objectives.data_parallel`). With `Checkpointing`, the trainable weights, the optimiser, the
schedule, the random states, the position in every data stream and the caller's own state are
saved every k steps; a resumed run continues exactly where the saved one was.
"""

from __future__ import annotations

import contextvars
import json
import math
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader, Sampler

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
    # a resumable checkpoint beside the output every k steps (0: off); rerunning the same
    # command after a crash or Ctrl-C continues from it, with the same result
    checkpoint_every: int = 0


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


class GroupedSampler(Sampler):
    """transformers' LengthGroupedSampler with a generator it owns, so a resumed run can replay
    the shuffles of earlier epochs (`skip_epochs`) and draw the same order as the saved run."""

    def __init__(self, lengths: list[int], batch_size: int, seed: int):
        self.lengths, self.batch_size, self.seed = lengths, batch_size, seed
        self.generator = torch.Generator().manual_seed(seed)

    def __len__(self) -> int:
        return len(self.lengths)

    def __iter__(self) -> Iterator[int]:
        from transformers.trainer_pt_utils import LengthGroupedSampler

        return iter(LengthGroupedSampler(self.batch_size, lengths=self.lengths,
                                         generator=self.generator))

    def skip_epochs(self, n: int) -> None:
        for _ in range(n):
            list(iter(self))


def make_loader(items: list[Encoded], batch_size: int, pad_id: int, seed: int) -> DataLoader:
    """Shuffled batches of similar-length items (transformers' LengthGroupedSampler): short QA
    items are not padded to the length of passages, which halves the tokens computed."""
    bs = min(batch_size, len(items))
    sampler = GroupedSampler([len(it.input_ids) for it in items], bs, seed)
    return DataLoader(items, batch_size=bs, sampler=sampler,
                      collate_fn=lambda b: collate(b, pad_id), drop_last=False)


def _cycle(loader: DataLoader, sampler: Sampler | None, start: int) -> Iterator[dict[str, torch.Tensor]]:
    """Endless batches, a fresh shuffle every pass, beginning after `start` batches."""
    epoch, offset = divmod(start, max(1, len(loader)))
    if epoch and isinstance(sampler, GroupedSampler):
        sampler.skip_epochs(epoch)
    while True:
        for i, batch in enumerate(loader):
            if i >= offset:  # skipped batches are only collated, never computed
                yield batch
        offset = 0


@dataclass
class Checkpointing:
    """Resumable training: every `every` steps, state goes (atomically) to `dir`; a run that
    finds a checkpoint of the same `fingerprint` there continues from it. `get_state` /
    `set_state` carry the caller's own state (tensors, numbers, lists, dicts)."""

    dir: Path
    every: int
    fingerprint: str
    get_state: Callable[[], dict[str, Any]] = field(default=lambda: {})
    set_state: Callable[[dict[str, Any]], None] = field(default=lambda state: None)


def fingerprint(config: dict[str, Any], items: list[list[Encoded]]) -> str:
    """What a checkpoint must match to be resumed: the run's config and its token ids."""
    import hashlib

    h = hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode())
    for group in items:
        for it in group:
            h.update(json.dumps([it.input_ids, it.labels]).encode())
    return h.hexdigest()


def checkpoint_dir(out: Path) -> Path:
    return out.with_name(out.name + ".ckpt")


def _save_checkpoint(ck: Checkpointing, model, optimizer, scheduler, step: int,
                     logs: list[dict[str, float]]) -> None:
    from safetensors.torch import save_file

    from .io import atomic_dir

    weights = {n: p.detach().cpu().contiguous() for n, p in model.named_parameters() if p.requires_grad}
    with atomic_dir(ck.dir, overwrite=True) as tmp:
        save_file(weights, str(tmp / "trainable.safetensors"))
        torch.save({"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                    "torch_rng": torch.get_rng_state(), "caller": ck.get_state()},
                   tmp / "state.pt")
        (tmp / "checkpoint.json").write_text(json.dumps(
            {"fingerprint": ck.fingerprint, "step": step, "logs": logs,
             "python_rng": random.getstate()}, indent=1))


def _load_checkpoint(ck: Checkpointing, model, optimizer, scheduler) -> tuple[int, list[dict[str, float]]]:
    """(steps done, logs so far) from `ck.dir`, or (0, []) when there is no checkpoint."""
    meta_path = ck.dir / "checkpoint.json"
    if not meta_path.is_file():
        return 0, []
    from safetensors.torch import load_file

    meta = json.loads(meta_path.read_text())
    if meta["fingerprint"] != ck.fingerprint:
        raise ObliviateError(f"{ck.dir} holds a checkpoint of a different run (other config or "
                             "data); remove it to start over, or rerun with the same settings")
    weights = load_file(str(ck.dir / "trainable.safetensors"))
    params = dict(model.named_parameters())
    missing = sorted(set(weights) - set(params))
    if missing:
        raise ObliviateError(f"{ck.dir}: checkpoint weights {missing[:3]} are not in this model")
    with torch.no_grad():
        for name, value in weights.items():
            params[name].copy_(value.to(params[name].device))
    state = torch.load(ck.dir / "state.pt", map_location="cpu", weights_only=True)
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    torch.set_rng_state(state["torch_rng"])
    version, internal, gauss = meta["python_rng"]
    random.setstate((version, tuple(internal), gauss))
    ck.set_state(state["caller"])
    return meta["step"], meta["logs"]


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


# The backward of the step in progress (None outside a training step): lets a loss with two
# batches backpropagate its first term before computing the second, so only one batch's
# activations are held at a time (NPO + retain term peaks like GA, not like two batches).
_BACKWARD: contextvars.ContextVar[Callable[[torch.Tensor], None] | None] = contextvars.ContextVar(
    "obliviate_backward", default=None)


def partial_backward(term: torch.Tensor) -> torch.Tensor:
    """Backpropagate `term` (one summand of the step's loss) now and return it detached: the
    gradient of the step is unchanged (gradients add up), its graph is freed at once. Outside
    a training step it returns `term` as it is."""
    backward = _BACKWARD.get()
    if backward is None or not term.requires_grad:
        return term
    backward(term)
    return term.detach()


def accelerator_for_training():
    """One Accelerator per run: CPU when there is no GPU; under `accelerate launch` the
    launcher's settings (processes, DDP / FSDP / DeepSpeed). Batches are split across processes
    so that the global batch is `batch_size` whatever their number."""
    from accelerate import Accelerator, DataLoaderConfiguration

    return Accelerator(cpu=not torch.cuda.is_available(),
                       dataloader_config=DataLoaderConfiguration(split_batches=True))


def _check_split(batch_sizes: dict[str, int], world: int) -> None:
    """Each batch is split across the processes: its size must divide evenly."""
    for name, size in batch_sizes.items():
        if size % world:
            raise ObliviateError(f"the {name} batch size {size} does not split evenly over "
                                 f"{world} processes; use a multiple of {world}")


def train(model, loss_fn: LossFn, loaders: dict[str, DataLoader], cfg: OptimConfig,
          desc: str = "training", params: list[torch.nn.Parameter] | None = None,
          on_step: Callable[[int, dict[str, float]], bool | None] | None = None,
          progress: bool = True,
          after_backward: Callable[[], None] | None = None,
          checkpoint: Checkpointing | None = None) -> list[dict[str, float]]:
    """Optimise `loss_fn` for cfg.steps steps; returns per-step logs. Raises on a NaN/inf loss
    (before the step, so the weights are still those of the last finite step).
    `after_backward` may edit gradients (masks) before clipping and the step; `on_step`
    returning True ends training early. With `checkpoint`, resumes from and saves to it."""
    from tqdm.auto import tqdm

    from .methods.objectives import data_parallel

    if cfg.lr is None or cfg.lr <= 0:
        raise ObliviateError(f"learning rate must be positive (got {cfg.lr})")
    if cfg.steps <= 0:
        raise ObliviateError(f"steps must be positive (got {cfg.steps})")
    accelerator = accelerator_for_training()
    world = accelerator.num_processes
    _check_split({n: dl.batch_size for n, dl in loaders.items()}, world)
    trainable = params if params is not None else [p for p in model.parameters() if p.requires_grad]
    if not trainable:
        raise ObliviateError("no trainable parameters")
    optimizer = _optimizer(cfg, trainable)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _lr_lambda(cfg))
    names = list(loaders)
    samplers = [loaders[n].sampler for n in names]  # accelerate keeps the original sampler
    unwrapped = model
    model, optimizer, scheduler, *prepared = accelerator.prepare(
        model, optimizer, scheduler, *[loaders[n] for n in names]
    )
    start, logs = (_load_checkpoint(checkpoint, unwrapped, optimizer, scheduler)
                   if checkpoint is not None else (0, []))
    streams = {n: _cycle(dl, sm, start) for n, dl, sm in zip(names, prepared, samplers, strict=True)}
    model.train()
    bar = tqdm(range(start, cfg.steps), desc=desc, initial=start, total=cfg.steps,
               disable=not progress or not accelerator.is_main_process, leave=False,
               dynamic_ncols=True)
    try:
        for step in bar:
            batches = {n: next(s) for n, s in streams.items()}
            if cfg.optimizer == "sophia" and step % cfg.hessian_every == 0:
                _update_curvature(model, optimizer, next(iter(batches.values())), accelerator)
            token = _BACKWARD.set(accelerator.backward)
            try:
                with data_parallel(world):
                    loss, info = loss_fn(model, batches)
            finally:
                _BACKWARD.reset(token)
            # each process holds its shard's part; their mean is the whole batch's loss, and
            # every process must take the same decision on it
            seen = accelerator.reduce(loss.detach(), reduction="mean") if world > 1 else loss.detach()
            if not torch.isfinite(seen):
                raise ObliviateError(f"{desc}: loss became {seen.item()} at step {step}; "
                                     "lower the learning rate")
            accelerator.backward(loss)
            if after_backward is not None:
                after_backward()
            if cfg.grad_clip > 0:
                accelerator.clip_grad_norm_(trainable, cfg.grad_clip)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            info = {"loss": float(seen), **info, "lr": scheduler.get_last_lr()[0]}
            logs.append(info)
            if step % 10 == 0:
                bar.set_postfix(loss=f"{info['loss']:.3f}")
            if on_step is not None and on_step(step, info):
                break  # the caller's stopping rule is met
            if checkpoint is not None and (step + 1) % checkpoint.every == 0 and step + 1 < cfg.steps:
                if accelerator.is_main_process:
                    _save_checkpoint(checkpoint, unwrapped, optimizer, scheduler, step + 1, logs)
                accelerator.wait_for_everyone()
    finally:
        bar.close()
        model.eval()
    accelerator.wait_for_everyone()
    from accelerate.utils import DistributedType

    if accelerator.distributed_type in (DistributedType.FSDP, DistributedType.DEEPSPEED):
        # sharded weights (FSDP, ZeRO-3): gathered once, on the main process, for the save
        unwrapped.gathered_state_dict = accelerator.get_state_dict(model)
    return logs
