"""The single training loop (accelerate), used by fine-tuning and by every unlearning method.

A step = draw one batch from each named stream, call `loss_fn(model, batches, step)`,
backprop, clip, step. Everything about *what* is optimised lives in `loss_fn`; this file knows only
how to optimise.

The same loop runs on one process or under `accelerate launch` (DDP, FSDP, DeepSpeed): batches
are split across processes (`split_batches`), so the global batch and the result do not depend
on the number of processes, and the objectives average over the whole batch (the loss sees the
number of processes in its `Step`). With `Checkpointing`, accelerate's `save_state` keeps the
weights, the optimiser, the schedule and every random state (CPU and device, per process;
sharded under FSDP / ZeRO-3), and the position in every data stream and the caller's own state
go beside them; a resumed run continues exactly where the saved one was.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader, Sampler

from .config import require, require_choice
from .encoding import Encoded, collate
from .errors import ObliviateError
from .optim import Sophia, gnb_loss
from .threads import Governor


@dataclass(frozen=True)
class Step:
    """What a loss function sees of the step in progress.

    `world_size`: processes sharing the batch (objectives divide by the global count).
    `backward(term)`: backpropagate one summand of the step's loss at once, so a loss with two
    batches holds one batch's activations at a time (gradients add up: the step is unchanged).
    `mean(t)`: the mean of a per-process value over the processes (None on one process), for
    decisions every process must take alike.
    """

    index: int
    world_size: int = 1
    backward: Callable[[torch.Tensor], None] | None = None
    mean: Callable[[torch.Tensor], torch.Tensor] | None = None  # mean over the processes


LossFn = Callable[[Any, dict[str, dict[str, torch.Tensor]], Step],
                  tuple[torch.Tensor, dict[str, float]]]


SCHEDULES = ("cosine", "constant", "linear")
OPTIMIZERS = ("adamw", "sophia")


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
    # recompute each decoder layer's activations in the backward pass instead of keeping
    # them: less memory (a two-batch objective's second batch then costs little beside the
    # first's gradients), about a third more compute; the same gradients
    gradient_checkpointing: bool = False
    # a two-batch objective's retain pass recomputes its activations when, beside the
    # gradients the forget pass left, they would raise the step's peak memory (methods/passes.py):
    # about a sixth more step time there; false keeps them
    recompute_retain: bool = True

    def __post_init__(self) -> None:
        # above 100 no optimiser here does anything useful, and past float32's range the
        # update itself fails inside torch
        require(self.lr is None or 0 < self.lr <= 100, "lr", f"must be in (0, 100] (got {self.lr})")
        for key in ("steps", "batch_size", "hessian_every"):
            require(getattr(self, key) > 0, key, f"must be positive (got {getattr(self, key)})")
        require(0.0 <= self.warmup_ratio <= 1.0, "warmup_ratio",
                f"must be between 0 and 1 (got {self.warmup_ratio})")
        for key in ("weight_decay", "grad_clip", "checkpoint_every"):
            require(getattr(self, key) >= 0, key, f"must be 0 or more (got {getattr(self, key)})")
        require(self.sophia_rho > 0, "sophia_rho", f"must be positive (got {self.sophia_rho})")
        require_choice(self.schedule, SCHEDULES, "schedule")
        require_choice(self.optimizer, OPTIMIZERS, "optimizer")


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
    """Shuffled batches of similar-length items (transformers' LengthGroupedSampler), which
    sorts within megabatches of min(50, items // (4 * batch)) batches: data of fewer than 8
    batches is drawn in random order (fine-tuning then splits each batch by length instead:
    `split_batch_nll`)."""
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
    `set_state` carry the caller's own state (tensors, numbers, strings, lists, dicts)."""

    dir: Path
    every: int
    fingerprint: str
    get_state: Callable[[], dict[str, Any]] = field(default=lambda: {})
    set_state: Callable[[dict[str, Any]], None] = field(default=lambda state: None)


def fingerprint(config: dict[str, Any], items: list[list[Encoded]]) -> str:
    """What a checkpoint must match to be resumed: the run's config and its token ids."""
    h = hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode())
    for group in items:
        for it in group:
            h.update(json.dumps([it.input_ids, it.labels]).encode())
    return h.hexdigest()


def checkpoint_dir(out: Path) -> Path:
    return out.with_name(out.name + ".ckpt")


# The caller's state is saved and loaded here rather than registered with accelerate, whose
# load_custom_state unpickles arbitrary objects; this file loads with weights_only=True.
CALLER_STATE = "caller_state.pt"
META = "checkpoint.json"


def _save_checkpoint(ck: Checkpointing, accelerator, step: int, logs: list[dict[str, float]]) -> None:
    """Every process writes its part into `<dir>.partial` (accelerate: weights, optimiser,
    schedule, per-process random states); the main process adds the caller's state and the
    metadata, then swaps the folder in, keeping the previous checkpoint until the new one is
    complete."""
    partial = ck.dir.with_name(ck.dir.name + ".partial")
    if accelerator.is_main_process:
        shutil.rmtree(partial, ignore_errors=True)
        partial.mkdir(parents=True)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(partial))
    if accelerator.is_main_process:
        torch.save(ck.get_state(), partial / CALLER_STATE)
        (partial / META).write_text(json.dumps(
            {"fingerprint": ck.fingerprint, "step": step, "logs": logs}, indent=1))
        old = ck.dir.with_name(ck.dir.name + ".old")
        shutil.rmtree(old, ignore_errors=True)
        if ck.dir.exists():
            ck.dir.rename(old)
        partial.rename(ck.dir)
        shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()


def _load_checkpoint(ck: Checkpointing, accelerator) -> tuple[int, list[dict[str, float]]]:
    """(steps done, logs so far) from `ck.dir`, or (0, []) when there is no checkpoint."""
    meta_path = ck.dir / META
    if not meta_path.is_file():
        return 0, []
    meta = json.loads(meta_path.read_text())
    if meta["fingerprint"] != ck.fingerprint:
        raise ObliviateError(f"{ck.dir} holds a checkpoint of a different run (other config or "
                             "data); remove it to start over, or rerun with the same settings")
    try:
        accelerator.load_state(str(ck.dir))
    except (OSError, RuntimeError, KeyError, ValueError) as exc:
        raise ObliviateError(f"{ck.dir}: the checkpoint cannot be loaded ({exc}); remove it "
                             "to start over") from None
    ck.set_state(torch.load(ck.dir / CALLER_STATE, map_location="cpu", weights_only=True))
    return meta["step"], meta["logs"]


def _optimizer(cfg: OptimConfig, params: list[torch.nn.Parameter]) -> torch.optim.Optimizer:
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "sophia":
        return Sophia(params, lr=cfg.lr, rho=cfg.sophia_rho, weight_decay=cfg.weight_decay)
    raise ObliviateError(f"unknown optimizer '{cfg.optimizer}' (adamw, sophia)")


def _update_curvature(model, optimizer, batch: dict[str, torch.Tensor], accelerator) -> None:
    """Sophia's Gauss-Newton-Bartlett curvature estimate from one extra forward/backward."""
    optimizer.zero_grad(set_to_none=True)
    loss, n_tokens = gnb_loss(model, batch)
    accelerator.backward(loss)
    getattr(optimizer, "optimizer", optimizer).update_hessian(scale=float(n_tokens))
    optimizer.zero_grad(set_to_none=True)


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


@dataclass
class _Run:
    """The prepared objects of one training run."""

    accelerator: Any
    model: Any
    optimizer: Any
    scheduler: Any
    trainable: list[torch.nn.Parameter]
    streams: dict[str, Iterator[dict[str, torch.Tensor]]]
    start: int
    logs: list[dict[str, float]]


def _prepare(model, loaders: dict[str, DataLoader], cfg: OptimConfig,
             params: list[torch.nn.Parameter] | None, checkpoint: Checkpointing | None) -> _Run:
    """Check the settings, build optimiser and schedule, hand everything to accelerate and
    resume from the checkpoint if there is one."""
    if cfg.lr is None or cfg.lr <= 0:
        raise ObliviateError(f"learning rate must be positive (got {cfg.lr})")
    if cfg.steps <= 0:
        raise ObliviateError(f"steps must be positive (got {cfg.steps})")
    accelerator = accelerator_for_training()
    _check_split({n: dl.batch_size for n, dl in loaders.items()}, accelerator.num_processes)
    trainable = params if params is not None else [p for p in model.parameters() if p.requires_grad]
    if not trainable:
        raise ObliviateError("no trainable parameters")
    optimizer = _optimizer(cfg, trainable)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _lr_lambda(cfg))
    names = list(loaders)
    samplers = [loaders[n].sampler for n in names]  # accelerate keeps the original sampler
    model, optimizer, scheduler, *prepared = accelerator.prepare(
        model, optimizer, scheduler, *[loaders[n] for n in names])
    start, logs = _load_checkpoint(checkpoint, accelerator) if checkpoint is not None else (0, [])
    streams = {n: _cycle(dl, sm, start) for n, dl, sm in zip(names, prepared, samplers, strict=True)}
    return _Run(accelerator, model, optimizer, scheduler, trainable, streams, start, logs)


def _step(run: _Run, loss_fn: LossFn, cfg: OptimConfig, step: int, desc: str,
          after_backward: Callable[[], None] | None) -> dict[str, float]:
    """One optimiser step; raises before stepping on a non-finite loss, so the weights are
    still those of the last finite step."""
    acc = run.accelerator
    batches = {n: next(s) for n, s in run.streams.items()}
    if cfg.optimizer == "sophia" and step % cfg.hessian_every == 0:
        _update_curvature(run.model, run.optimizer, next(iter(batches.values())), acc)
    mean = (lambda t: acc.reduce(t, reduction="mean")) if acc.num_processes > 1 else None
    loss, info = loss_fn(run.model, batches, Step(step, acc.num_processes, acc.backward, mean))
    # each process holds its shard's part; their mean is the whole batch's loss, and every
    # process must take the same decision on it
    seen = acc.reduce(loss.detach(), reduction="mean") if acc.num_processes > 1 else loss.detach()
    if not torch.isfinite(seen):
        raise ObliviateError(f"{desc}: loss became {seen.item()} at step {step}; "
                             "lower the learning rate")
    acc.backward(loss)
    if after_backward is not None:
        after_backward()
    if cfg.grad_clip > 0:
        acc.clip_grad_norm_(run.trainable, cfg.grad_clip)
    run.optimizer.step()
    run.scheduler.step()
    run.optimizer.zero_grad(set_to_none=True)
    return {"loss": float(seen), **info, "lr": run.scheduler.get_last_lr()[0]}


def check_finite(model, what: str, cfg: OptimConfig) -> None:
    """A model with a NaN or infinite weight is a failed run, never a result."""
    for name, p in model.named_parameters():
        if not bool(torch.isfinite(p.detach()).all()):
            raise ObliviateError(f"{what} produced non-finite weights ({name} holds NaN or inf); "
                                 f"lower optim.lr (it was {cfg.lr:g}) or optim.steps")


def train(model, loss_fn: LossFn, loaders: dict[str, DataLoader], cfg: OptimConfig,
          desc: str = "training", params: list[torch.nn.Parameter] | None = None,
          on_step: Callable[[int, dict[str, float]], bool | None] | None = None,
          progress: bool = True,
          after_backward: Callable[[], None] | None = None,
          checkpoint: Checkpointing | None = None) -> list[dict[str, float]]:
    """Optimise `loss_fn` for cfg.steps steps; returns per-step logs. Raises on a NaN/inf loss.
    `after_backward` may edit gradients (masks) before clipping and the step; `on_step`
    returning True ends training early. With `checkpoint`, resumes from and saves to it."""
    from tqdm.auto import tqdm

    unwrapped = model
    if cfg.gradient_checkpointing:
        _recompute_activations(model, True)
    run = _prepare(model, loaders, cfg, params, checkpoint)
    run.model.train()
    bar = tqdm(range(run.start, cfg.steps), desc=desc, initial=run.start, total=cfg.steps,
               disable=not progress or not run.accelerator.is_main_process, leave=False,
               dynamic_ncols=True)
    governor = Governor()  # threads follow the machine's load as the run goes on
    try:
        for step in bar:
            governor.tick()
            info = _step(run, loss_fn, cfg, step, desc, after_backward)
            run.logs.append(info)
            if step % 10 == 0:
                bar.set_postfix(loss=f"{info['loss']:.3f}")
            if on_step is not None and on_step(step, info):
                break  # the caller's stopping rule is met
            if checkpoint is not None and (step + 1) % checkpoint.every == 0 and step + 1 < cfg.steps:
                _save_checkpoint(checkpoint, run.accelerator, step + 1, run.logs)
    finally:
        bar.close()
        run.model.eval()
        if cfg.gradient_checkpointing:
            _recompute_activations(unwrapped, False)
    _gather_for_save(run, unwrapped)
    return run.logs


def _recompute_activations(model, on: bool) -> None:
    """Turn transformers' activation (gradient) checkpointing on, non-reentrant (no input needs
    a gradient, so LoRA and frozen embeddings work), or off again, so the saved model is
    unchanged. transformers 5 names it `activation_checkpointing_*`, 4.x `gradient_*`."""
    new = hasattr(model, "activation_checkpointing_enable")
    if not new and not hasattr(model, "gradient_checkpointing_enable"):
        raise ObliviateError("optim.gradient_checkpointing: this model does not support it "
                             "(a transformers model does)")
    kwargs = {"use_reentrant": False}
    if on and new:
        model.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
    elif on:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
    else:
        (model.activation_checkpointing_disable if new else model.gradient_checkpointing_disable)()


def _gather_for_save(run: _Run, unwrapped) -> None:
    """Under FSDP / ZeRO-3 the module holds shards: gather the weights once, on the main
    process, for the save (models.save_model reads `gathered_state_dict`)."""
    from accelerate.utils import DistributedType

    run.accelerator.wait_for_everyone()
    if run.accelerator.distributed_type in (DistributedType.FSDP, DistributedType.DEEPSPEED):
        unwrapped.gathered_state_dict = run.accelerator.get_state_dict(run.model)
