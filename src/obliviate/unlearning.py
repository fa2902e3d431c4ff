"""Apply an unlearning method to a model: data, reference, LoRA, guards, then save.

The order of a run: load the model (never modified on disk) -> encode the forget set (and the
refusal pairs, the retain set) -> compute cached reference quantities on the untouched model
-> the method's `setup` -> choose what trains (all weights, a few modules, or LoRA adapters)
-> snapshot the reference weights only if the method needs live reference activations ->
train with the collapse guard -> the method's `finish` -> merge LoRA -> save atomically.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import time
import warnings
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import torch

from .config import require, to_dict
from .data import Benchmark, Example, load_examples, validate_holdout, validate_split
from .data.files import general_questions
from .encoding import DEFAULT_TEMPLATE, Encoded, encode
from .errors import ObliviateError
from .methods import Context, MethodStack, build, typed_params
from .methods.base import cache_seq_nll, eval_mode, mean_answer_prob
from .methods.passes import PassMeter, worth_metering
from .models import save_model, save_on_main
from .stopping import HoldoutStop
from .systems import System, load_any, save_system
from .train import (
    Checkpointing,
    OptimConfig,
    Step,
    check_finite,
    checkpoint_dir,
    fingerprint,
    make_loader,
    set_seed,
    train,
)

# Adapters start at zero and see a low-rank slice of each update: the usual LoRA learning rate
# is several times the full-weight one, so a method's default is scaled by this under LoRA.
LORA_LR_SCALE = 5.0


@dataclass
class LoraSettings:
    """Train low-rank adapters instead of the weights (peft); merged into the saved model."""

    enabled: bool = False
    r: int = 8
    alpha: int = 16
    dropout: float = 0.0
    target_modules: list[str] = field(default_factory=list)  # empty: the method's, or all linear

    def __post_init__(self) -> None:
        require(self.r > 0, "r", f"must be positive (got {self.r})")
        require(self.alpha > 0, "alpha", f"must be positive (got {self.alpha})")
        require(0.0 <= self.dropout < 1.0, "dropout", f"must be in [0, 1) (got {self.dropout})")


@dataclass
class GuardConfig:
    """Stop a run whose model collapses: every `every` steps the mean answer probability of
    `probe_items` retain items is measured; below `retain_floor` x its starting value the run
    stops, and the last state that passed is saved beside the output as `<out>.last-good`."""

    retain_floor: float = 0.3  # relative to the starting retain probability; 0 disables
    # Stop (successfully) once the forget set's probability is at or below this x its start.
    # None: the method's recommendation (forget-only objectives such as GA stop at 0.5, as
    # Jang et al. stop once the targets are no longer memorised); 0: never.
    forget_stop: float | None = None
    every: int = 5
    probe_items: int = 32
    keep_last_good: bool = True  # keeps a CPU copy of the trainable weights at each check
    # the calibrated stop (holdout=FILE): stop once the LOSS attack's AUC of forget items
    # against never-seen holdout items is at or below stop_auc; both probes hold up to
    # stop_items items (an AUC of 32 against 32 items wanders by about +-0.07)
    stop_auc: float = 0.5
    stop_items: int = 128

    def __post_init__(self) -> None:
        require(0.0 <= self.retain_floor < 1.0, "retain_floor",
                f"must be in [0, 1) (got {self.retain_floor}); 0 turns the guard off")
        require(self.forget_stop is None or 0.0 <= self.forget_stop <= 1.0, "forget_stop",
                f"must be in [0, 1] (got {self.forget_stop}); 0 never stops early")
        require(self.every > 0, "every", f"must be positive (got {self.every})")
        require(self.probe_items > 0, "probe_items", f"must be positive (got {self.probe_items})")
        require(0.0 < self.stop_auc < 1.0, "stop_auc", f"must be in (0, 1) (got {self.stop_auc}); "
                "0.5 = forget items as likely as never-seen ones")
        require(self.stop_items > 1, "stop_items", f"must be at least 2 (got {self.stop_items})")


@dataclass
class UnlearnConfig:
    """Apply an unlearning method to a model for a forget set (and a retain set)."""

    model: str = ""
    method: str = "npo"
    params: dict[str, Any] = field(default_factory=dict)  # the method's hyper-parameters
    benchmark: str = ""  # either a benchmark folder + split ...
    forget_split: str = ""  # "": the benchmark's own (forget10 for a generated one)
    forget: str = ""  # ... or JSONL files / hub ids
    retain: str = ""
    # never-seen items of the forget set's kind: with them the run stops once the forget items
    # are no more likely than these (the calibrated stop, guard.stop_auc). stop_at_holdout:
    # None = on when holdout is given; true = also the benchmark's holdout split; false = off
    holdout: str = ""
    stop_at_holdout: bool | None = None
    # target: forget what the model knows about a named entity, with data it synthesises
    # itself (target.py); probes: entity records to pick neighbours from (the shipped set)
    target: str = ""
    probes: str = ""
    # lr None: the method's own default (`obliviate ls methods` lists them)
    optim: OptimConfig = field(default_factory=lambda: OptimConfig(
        lr=None, steps=60, batch_size=32, warmup_ratio=0.0, schedule="constant"))
    lora: LoraSettings = field(default_factory=LoraSettings)
    guard: GuardConfig = field(default_factory=GuardConfig)
    template: str = DEFAULT_TEMPLATE
    trust_remote_code: bool = False
    seed: int = 0

    def __post_init__(self) -> None:
        # the method and its parameters are checked now, before anything loads; the params
        # are kept typed, so the config written beside results says 0.5, not '0.5'
        self.params = typed_params(self.method, self.params)


def default_lr(method, lora: bool) -> float:
    """The method's default learning rate; under LoRA times LORA_LR_SCALE (or the method's own
    `lora_lr_scale`, where one is declared)."""
    scale = MethodStack(method).declared("lora_lr_scale", LORA_LR_SCALE) if lora else 1.0
    return type(method).default_lr * scale


class CollapseError(ObliviateError):
    """The retain set's probability fell below the guard's floor."""


def load_refusals() -> list[str]:
    """The refusal answers shipped with the package (IdkNLL, IdkPO, FLAT templates)."""
    text = resources.files("obliviate").joinpath("resources/refusals.txt").read_text()
    return [line.strip() for line in text.splitlines() if line.strip()]


def resolve_data(benchmark: str, split: str, forget: str, retain: str) -> tuple[list[Example], list[Example]]:
    """(forget, retain) examples from a benchmark folder + split, or from files / hub ids."""
    if benchmark:
        if forget or retain:
            raise ObliviateError("give either benchmark=... or forget=/retain= files, not both")
        bench = Benchmark.load(benchmark)
        return bench.forget_set(split), bench.retain_set(split)
    if not forget:
        raise ObliviateError("no forget data: give benchmark=<folder> or forget=<file.jsonl>")
    return load_examples(forget), (load_examples(retain) if retain else [])


def _context(tok, forget: list[Example], retain: list[Example], needs: tuple[str, ...],
             template: str, lora: bool, seed: int) -> Context:
    ctx = Context(pad_id=tok.pad_token_id, lora=lora, seed=seed, tokenizer=tok, template=template,
                  encoder=lambda ex, i, t: encode(tok, ex, i, t))
    ctx.examples = {"forget": forget, "retain": retain}
    if "general" in needs:
        ctx.examples["general"] = [Example(question=q, answer="") for q in general_questions()]
    for name, examples in ctx.examples.items():
        if examples:
            ctx.items[name] = [encode(tok, ex, i, template) for i, ex in enumerate(examples)]
    if "refusal" in needs:
        refusals = load_refusals()
        # a fixed, seed-dependent refusal per forget item, so reference caches stay valid
        gen = torch.Generator().manual_seed(seed)
        pick = torch.randint(len(refusals), (len(forget),), generator=gen).tolist()
        ctx.items["idk"] = [encode(tok, dataclasses.replace(ex, answer=refusals[pick[i]]), i, template)
                            for i, ex in enumerate(forget)]
    return ctx


def _select_trainable(model, lora: LoraSettings, targets: list[str] | None):
    """Wrap with LoRA adapters, or freeze everything but `targets` (all weights if None)."""
    if lora.enabled:
        from peft import LoraConfig, get_peft_model

        modules = lora.target_modules or targets or "all-linear"
        config = LoraConfig(r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout,
                            target_modules=modules, task_type="CAUSAL_LM")
        with warnings.catch_warnings():  # peft calls a transformers 5 deprecated alias
            warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*")
            return get_peft_model(model, config)
    if targets is not None:
        wanted = set(targets)
        for name, module in model.named_modules():
            for p in module.parameters(recurse=False):
                p.requires_grad_(name in wanted)
    return model


class RetainGuard:
    """The collapse guard of GuardConfig, called after each optimiser step."""

    def __init__(self, model, ctx: Context, cfg: GuardConfig, forget_stop: float):
        self.model, self.cfg, self.pad_id = model, cfg, ctx.pad_id
        self.probe: list[Encoded] = ctx.items.get("retain", [])[:cfg.probe_items]
        self.forget_probe: list[Encoded] = ctx.items["forget"][:cfg.probe_items]
        self.active = cfg.retain_floor > 0 and bool(self.probe)
        self.forget_stop = forget_stop
        self.start = self.last = self.measure(self.probe) if self.active else None
        self.forget_start = self.forget_last = (self.measure(self.forget_probe)
                                                if forget_stop > 0 else None)
        self.stopped_at: int | None = None
        self.good: dict[str, torch.Tensor] | None = None
        self.good_step = 0
        self._keep()

    def measure(self, items: list[Encoded]) -> float:
        with eval_mode(self.model):
            return mean_answer_prob(self.model, items, self.pad_id)

    def _keep(self) -> None:
        if self.active and self.cfg.keep_last_good:
            self.good = {n: p.detach().to("cpu", copy=True)
                         for n, p in self.model.named_parameters() if p.requires_grad}

    def check(self, step: int, final: bool = False) -> bool:
        """Raise CollapseError on a collapse; return True when the forget target is reached."""
        if not final and (step + 1) % self.cfg.every:
            return False
        if final:  # whatever the guard's settings: a model whose outputs overflow is no result
            self._require_finite(self.measure(self.forget_probe), "forget", step)
        if self.forget_stop > 0 and not final:
            self.forget_last = self.measure(self.forget_probe)
            if self.forget_last <= self.forget_stop * self.forget_start:
                self.stopped_at = step + 1
        if not self.active:
            return self.stopped_at is not None
        self.last = self.measure(self.probe)
        self._require_finite(self.last, "retain", step)
        if self.last < self.cfg.retain_floor * self.start:
            raise CollapseError(
                f"retain probability fell to {self.last:.3g} at step {step + 1} (started at "
                f"{self.start:.3g}; floor {self.cfg.retain_floor} x start): the model is "
                "collapsing. Lower optim.lr or optim.steps, or raise the method's retain weight")
        self.good_step = step + 1
        self._keep()
        return self.stopped_at is not None

    @staticmethod
    def _require_finite(p: float, which: str, step: int) -> None:
        # NaN compares False with everything: a NaN probe would pass the floor test unnoticed
        if not math.isfinite(p):
            raise CollapseError(f"the {which} probability became {p} at step {step + 1}: the "
                                "model's outputs are no longer finite. Lower optim.lr or optim.steps")

    def state_dict(self) -> dict[str, Any]:
        """What a resumed run needs (the start values are re-measured identically)."""
        return {"last": self.last, "forget_last": self.forget_last, "stopped_at": self.stopped_at,
                "good_step": self.good_step, "good": self.good}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for key, value in state.items():
            setattr(self, key, value)

    @torch.no_grad()
    def restore(self) -> bool:
        if self.good is None:
            return False
        for n, p in self.model.named_parameters():
            if n in self.good:
                p.copy_(self.good[n].to(p.device))
        return True


def _mask_gradients(masks: dict[torch.nn.Parameter, torch.Tensor]):
    def apply() -> None:
        for p, m in masks.items():
            if p.grad is not None:
                if m.device != p.grad.device:  # once: the model may have moved to a GPU
                    m = masks[p] = m.to(p.grad.device)
                p.grad.mul_(m)
    return apply


def _finalise(model, lora: bool):
    return model.merge_and_unload() if lora else model


def unlearn(cfg: UnlearnConfig, out: str | Path, progress: bool = True) -> Path:
    """Run `cfg.method` on `cfg.model` and save the result to `out` (a new folder).

    The input model is never modified. A NaN loss or a collapse stops the run with a clear
    error; the last state that passed the guard is saved as `<out>.last-good`."""
    build(cfg.method, cfg.params)  # a bad method name fails before any data is read
    if Path(out).exists():
        raise ObliviateError(f"output {out} already exists; choose a new path or remove it")
    if cfg.target:
        # target.py builds on quick.py, which imports this module
        from .target import unlearn_target

        return unlearn_target(cfg, out, progress)
    forget, retain = resolve_data(cfg.benchmark, cfg.forget_split, cfg.forget, cfg.retain)
    return unlearn_examples(cfg, forget, retain, out, progress, holdout=resolve_holdout(cfg))


def resolve_holdout(cfg: UnlearnConfig) -> list[Example] | None:
    """The never-seen items of the calibrated stop, or None when it is off."""
    if cfg.stop_at_holdout is False:
        return None
    if cfg.holdout:
        return load_examples(cfg.holdout)
    if not cfg.stop_at_holdout:
        return None
    if cfg.benchmark:
        holdout = Benchmark.load(cfg.benchmark).holdout_set()
        if holdout:
            return holdout
        raise ObliviateError(f"stop_at_holdout=true: benchmark {cfg.benchmark} has no holdout "
                             "items; give holdout=<file.jsonl>")
    raise ObliviateError("stop_at_holdout=true needs never-seen items: holdout=<file.jsonl> "
                         "(or a benchmark with a holdout split)")


@dataclass
class _Run:
    """One unlearning run, as its steps build it up."""

    cfg: UnlearnConfig
    method: MethodStack
    optim: OptimConfig
    model: Any = None
    tok: Any = None
    ctx: Context | None = None
    guard: RetainGuard | None = None
    stop: HoldoutStop | None = None
    checkpoint: Checkpointing | None = None


def unlearn_examples(cfg: UnlearnConfig, forget: list[Example], retain: list[Example],
                     out: str | Path, progress: bool = True,
                     holdout: list[Example] | None = None, extra: dict[str, Any] | None = None) -> Path:
    """`unlearn` on examples already in memory (cfg's data fields are ignored): the deletion
    ledger filters its retain set before training. With `holdout` (never-seen items), the run
    stops once the forget items are no more likely than those (stopping.HoldoutStop). `extra`:
    further provenance keys (a target run's synthesised data)."""
    out = Path(out)
    run = _plan(cfg, forget, retain, out, holdout)
    _load(run, forget, retain)
    _prepare_model(run)
    streams = _streams(run)
    run.guard = RetainGuard(run.model, run.ctx, cfg.guard, _forget_stop(run))
    if holdout and run.method.declared("fit", None) is None:
        run.stop = _holdout_stop(run, holdout)
    elif holdout:  # a method that fits without steps reads the holdout items itself
        run.ctx.items["holdout"] = [encode(run.tok, ex, i, cfg.template)
                                    for i, ex in enumerate(holdout[:cfg.guard.stop_items])]
    run.checkpoint = _checkpointing(run, out)
    start = time.perf_counter()
    try:
        logs = _fit(run, streams, progress)
        run.method.finish(run.model, run.ctx)
        if run.stop is not None:
            run.stop.finish(len(logs))
        check_finite(run.model, f"unlearning with {cfg.method}", run.optim)
        run.guard.check(run.optim.steps - 1, final=True)
    except ObliviateError as exc:
        raise ObliviateError(f"{exc}{_save_last_good(run.model, run.tok, cfg, out, run.guard, str(exc))}") from None
    prov = {**_provenance(run, forget, retain, logs, time.perf_counter() - start), **(extra or {})}
    writer = (lambda *a: save_system(*a[:4], cfg.model, a[4])) if isinstance(run.model, System) else save_model
    return save_on_main(_finalise(run.model, cfg.lora.enabled), run.tok, out, prov, (cfg.model,),
                        checkpoint_dir(out) if run.checkpoint else None, writer=writer)


def _fit(run: _Run, streams: dict[str, Any], progress: bool) -> list[dict[str, float]]:
    """The training loop, or a method's own fitting (ECO trains no weights by gradient)."""
    if run.stop is not None and run.stop.stopped_at == 0:
        return []
    own = getattr(run.method.method, "fit", None)
    if own is not None:
        return own(run.model, run.ctx)
    return train(run.model, lambda m, b, step: _step_loss(run, m, b, step), streams, run.optim,
                 desc=f"unlearn {run.cfg.method}", progress=progress,
                 on_step=lambda step, _: _on_step(run, step),
                 after_backward=_mask_gradients(run.ctx.grad_masks) if run.ctx.grad_masks else None,
                 checkpoint=run.checkpoint)


def _plan(cfg: UnlearnConfig, forget: list[Example], retain: list[Example], out: Path,
          holdout: list[Example] | None = None) -> _Run:
    """Check everything that can be checked before the model loads; settle the optimiser."""
    method = MethodStack(build(cfg.method, cfg.params))
    if out.exists():
        raise ObliviateError(f"output {out} already exists; choose a new path or remove it")
    validate_split(forget, retain)
    if holdout is not None:
        validate_holdout(forget, holdout)
    if method.declared("system", "") and cfg.lora.enabled:
        raise ObliviateError(f"method '{cfg.method}' trains its own components and leaves the "
                             "model's weights alone; lora.enabled does not apply to it")
    if len(method.layers) > 1 and (hasattr(method.base, "fit") or getattr(method.base, "system", "")):
        raise ObliviateError(f"method '{cfg.method}' wraps a training loop; its base "
                             f"'{type(method.base).__name__}' fits without one (or builds a system)")
    if method.declared("full_weights", False) and cfg.lora.enabled:
        raise ObliviateError(f"method '{cfg.method}' edits the model's own weight matrices; "
                             "lora.enabled does not apply to it")
    _check_module_choice(cfg, method)
    if "retain" in method.needs() and not retain:
        raise ObliviateError(f"method '{cfg.method}' needs a retain set (retain=<file.jsonl>)")
    lr = cfg.optim.lr or default_lr(method.method, cfg.lora.enabled)
    optim = dataclasses.replace(cfg.optim, lr=lr, **method.declared("optimizer", {}))
    return _Run(cfg, method, optim)


def _check_module_choice(cfg: UnlearnConfig, method: MethodStack) -> None:
    """A wrapper that must choose what trains (UOE: one expert) cannot sit above a method that
    names its own modules, at any depth (the innermost choice wins); a method that keeps
    modules out of its adapters (concept ablation: the edited projections) cannot take the
    user's list instead."""
    for i, layer in enumerate(method.layers):
        if not getattr(type(layer), "chooses_modules", False):
            continue
        for above, below in zip(method.layers[i:], method.layers[i + 1:], strict=False):
            if hasattr(type(below), "target_modules"):
                raise ObliviateError(f"{cfg.method} cannot wrap '{above.base}': it chooses its own "
                                     "modules, so the part this method picks would not be the only one "
                                     "that unlearns")
    if cfg.lora.enabled and cfg.lora.target_modules and method.declared("fixed_lora_modules", False):
        raise ObliviateError(f"method '{cfg.method}' chooses which modules get adapters (a merged "
                             "adapter on an edited module would undo the edit); remove lora.target_modules")


def _load(run: _Run, forget: list[Example], retain: list[Example]) -> None:
    """Load the model, encode the data, and cache the reference quantities on the untouched
    model: the reference, with no copy kept."""
    cfg, needs = run.cfg, run.method.needs()
    set_seed(cfg.seed)
    run.model, run.tok = load_any(cfg.model, trust_remote_code=cfg.trust_remote_code)
    _check_system_input(run)
    run.ctx = _context(run.tok, forget, retain, needs, cfg.template, cfg.lora.enabled, cfg.seed)
    if "reference" in needs:
        for name in ("forget", "idk"):
            if name in run.ctx.items:
                # at the training batch size: a larger no-grad batch would set the run's peak
                # memory with its logits alone, above what a training step needs
                run.ctx.cache[f"seq_nll:{name}"] = cache_seq_nll(
                    run.model, run.ctx.items[name], run.ctx.pad_id, run.optim.batch_size)


def _check_system_input(run: _Run) -> None:
    """An unlearned system is an input only to a method of its own kind that adds a request
    to it (O3's adapters, ECO's classifiers); weight-editing methods need a model folder."""
    if not isinstance(run.model, System):
        return
    kind = run.method.declared("system", "")
    if kind != run.model.kind or not run.method.declared("extends", False):
        raise ObliviateError(
            f"{run.cfg.model} is an unlearned system ({run.model.kind}); method "
            f"'{run.cfg.method}' cannot build on it. Methods that extend a system with a new "
            f"request: o3 and eco, on a system of their own kind. Its base model folder is "
            f"{Path(run.cfg.model) / 'base'}")


def _prepare_model(run: _Run) -> None:
    """The method's setup, then what trains (all weights, its modules, or LoRA adapters), then
    a snapshot of the reference weights if the method compares with them live. A method that
    leaves the weights alone builds its system here instead; only the system's parts train."""
    if run.method.declared("system", ""):
        run.model = run.method.method.build_system(run.model, run.ctx)
        return
    run.method.setup(run.model, run.ctx)
    if run.ctx.grad_masks and run.optim.weight_decay > 0:
        raise ObliviateError(f"method '{run.cfg.method}' freezes part of a weight tensor by masking "
                             "its gradient; weight decay would still move that part. Set "
                             "optim.weight_decay=0")
    targets = run.method.target_modules(run.model, run.ctx)
    run.model = _select_trainable(run.model, run.cfg.lora, targets)
    if "reference_model" in run.method.needs():
        run.ctx.snapshot_reference(run.model)


def _streams(run: _Run) -> dict[str, Any]:
    ctx, bs, seed = run.ctx, run.optim.batch_size, run.cfg.seed
    streams = {"forget": make_loader(ctx.items["forget"], bs, ctx.pad_id, seed)}
    # a method may use a retain set without needing one (`uses_retain`: only where it is given)
    if "retain" in run.method.needs() or (run.method.declared("uses_retain", False)
                                          and ctx.items.get("retain")):
        streams["retain"] = make_loader(ctx.items["retain"], bs, ctx.pad_id, seed + 1)
    return streams


def _forget_stop(run: _Run) -> float:
    """The guard's forget stop: the config's, else the method's recommendation (which the
    calibrated stop replaces: it knows where the forget items should end)."""
    stop = run.cfg.guard.forget_stop
    if stop is None:
        return 0.0 if run.stop is not None or run.cfg.holdout else run.method.declared("forget_stop", 0.0)
    return stop


def _holdout_stop(run: _Run, holdout: list[Example]) -> HoldoutStop:
    g, tok, template = run.cfg.guard, run.tok, run.cfg.template
    items = [encode(tok, ex, i, template) for i, ex in enumerate(holdout[:g.stop_items])]
    stop = HoldoutStop(run.model, run.ctx.items["forget"][:g.stop_items], items, run.ctx.pad_id,
                       every=g.every, target_auc=g.stop_auc)
    stop.start()
    return stop


def _on_step(run: _Run, step: int) -> bool:
    """After each optimiser step: the collapse guard, then the calibrated stop."""
    done = run.guard.check(step)
    return (run.stop is not None and run.stop.check(step)) or done


def _step_loss(run: _Run, model, batches, step: Step):
    """The method's loss; the step's world size and early backward reach it through its Context,
    and on one process the meter that sizes a second pass (methods/passes.py). Not under data
    parallelism: every process must run the same forwards, and each sees only its shard."""
    ctx = run.ctx
    ctx.world_size, ctx.backward, ctx.mean_over_processes = step.world_size, step.backward, step.mean
    meter = (PassMeter(model, run.optim.recompute_retain)
             if step.world_size == 1 and step.backward is not None and worth_metering(model)
             else None)
    try:
        with meter if meter is not None else contextlib.nullcontext():
            ctx.meter = meter
            return run.method.loss(model, batches, ctx)
    finally:
        ctx.backward = ctx.mean_over_processes = ctx.meter = None


def _checkpointing(run: _Run, out: Path) -> Checkpointing | None:
    """Resumable runs: the guard's and the method's state go along with the weights."""
    if run.optim.checkpoint_every <= 0:
        return None
    guard, ctx = run.guard, run.ctx

    stop = run.stop

    def get_state() -> dict[str, Any]:
        return {"guard": guard.state_dict(), "method": dict(ctx.state),
                "stop": stop.state_dict() if stop is not None else None}

    def set_state(state: dict[str, Any]) -> None:
        guard.load_state_dict(state["guard"])
        ctx.state.update(state["method"])
        if stop is not None and state.get("stop") is not None:
            stop.load_state_dict(state["stop"])

    return Checkpointing(checkpoint_dir(out), run.optim.checkpoint_every,
                         fingerprint(to_dict(run.cfg), list(ctx.items.values())), get_state, set_state)


def _provenance(run: _Run, forget: list[Example], retain: list[Example],
                logs: list[dict[str, float]], seconds: float) -> dict[str, Any]:
    guard = run.guard
    return {"produced_by": "obliviate unlearn", "config": to_dict(run.cfg),
            "method_params": dataclasses.asdict(run.method.method),
            "needs": list(run.method.needs()), "optim": dataclasses.asdict(run.optim),
            "n_forget": len(forget), "n_retain": len(retain), "train_seconds": round(seconds, 2),
            "final_loss": logs[-1]["loss"] if logs else None,
            "retain_prob": {"start": guard.start, "end": guard.last},
            "forget_prob_probe": {"start": guard.forget_start, "end": guard.forget_last},
            "steps_run": len(logs), "last_log": logs[-1] if logs else None,
            "stop": run.stop.record(run.optim.steps) if run.stop is not None else None}


def _save_last_good(model, tok, cfg: UnlearnConfig, out: Path, guard: RetainGuard, reason: str) -> str:
    """Save the guard's last passing state beside `out`; returns a sentence for the error."""
    if not guard.restore():
        return ". Nothing was saved."
    dest = out.with_name(out.name + ".last-good")
    if dest.exists():
        return f". The last good state was not saved: {dest} already exists."
    prov = {"produced_by": "obliviate unlearn (stopped)", "config": to_dict(cfg),
            "stopped": reason, "last_good_step": guard.good_step}
    if isinstance(model, System):
        save_system(model, tok, dest, prov, cfg.model, (cfg.model,))
    else:
        save_model(_finalise(model, cfg.lora.enabled), tok, dest, prov, inputs=(cfg.model,))
    return f". The last good state (step {guard.good_step}) is saved in {dest}."
