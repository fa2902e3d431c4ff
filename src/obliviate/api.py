"""The Python API; the CLI is a thin layer over these functions.

    import obliviate as ob
    ob.generate("bench", seed=0, entities=40)
    ob.finetune(ob.FinetuneConfig(benchmark="bench", role="target"), "target")
    ob.finetune(ob.FinetuneConfig(benchmark="bench", role="oracle"), "oracle")
    ob.unlearn(ob.UnlearnConfig(model="target", method="npo", benchmark="bench"), "target-npo")
    oracle = ob.evaluate(ob.EvalConfig(model="oracle", benchmark="bench"), name="oracle")
    res = ob.evaluate(ob.EvalConfig(model="target-npo", benchmark="bench"), reference=oracle)
    res["metrics"]["forget_quality"], res["metrics"]["model_utility"]
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .config import require, require_choice, to_dict
from .data import (
    REAL_WORLD,
    Benchmark,
    Example,
    generate_benchmark,
    load_examples,
    real_world_examples,
)
from .data.checks import check_results, check_sets
from .data.graph import generate_graph
from .data.userbench import example_texts
from .encoding import DEFAULT_TEMPLATE, encode
from .errors import ObliviateError
from .evaluation import Engine, EvalSet, derive, evaluate_tofu, load_results, make_results
from .evaluation.rwku import evaluate_rwku
from .evaluation.rwku import plan as rwku_plan
from .evaluation.suite import evaluate_memorization, evaluate_mia, evaluate_muse
from .methods.base import split_batch_nll
from .models import (
    TinyModelConfig,
    build_tiny_model,
    count_parameters,
    load_model,
    model_role,
    save_on_main,
    train_tokenizer,
)
from .parallel import process_state
from .systems import load_any
from .train import (
    Checkpointing,
    OptimConfig,
    check_finite,
    checkpoint_dir,
    fingerprint,
    make_loader,
    set_seed,
    train,
)
from .unlearning import GuardConfig, LoraSettings, UnlearnConfig, resolve_data, unlearn

SUITES = ("tofu", "mia", "memorization", "muse", "rwku")
__all__ = ["EvalConfig", "FinetuneConfig", "FinetuneOptim", "GuardConfig", "LoraSettings", "UnlearnConfig",
           "evaluate", "finetune", "generate", "load_benchmark", "tofu_sets", "unlearn"]


# ---------------------------------------------------------------------------- configs
DEFAULT_EPOCHS = 40.0


@dataclass
class FinetuneOptim(OptimConfig):
    """Fine-tuning's optimiser settings: `steps` 0 (the default) means "from epochs"."""

    lr: float | None = 3e-3
    steps: int = 0
    batch_size: int = 64

    def __post_init__(self) -> None:
        if self.steps == 0:  # checked against epochs by FinetuneConfig
            self.steps = 1
            super().__post_init__()
            self.steps = 0
        else:
            super().__post_init__()


@dataclass
class FinetuneConfig:
    """Train a model: on a benchmark (target: everything; oracle: without the forget split)
    or on files (`data`, minus the items of `exclude` for the oracle). The length of training
    is `epochs` passes over the data or `optim.steps` optimiser steps, never both (40 epochs
    when neither is given)."""

    benchmark: str = ""
    forget_split: str = ""  # "": the benchmark's own (forget10 for a generated one)
    role: str = "target"  # target | oracle (with a benchmark)
    data: list[str] = field(default_factory=list)  # ... or the training files themselves
    exclude: list[str] = field(default_factory=list)  # items never trained on (the oracle's)
    base: str = "tiny"  # "tiny" (built from config), a model folder, a .gguf, smollm2, a hub id
    tiny: TinyModelConfig = field(default_factory=TinyModelConfig)
    epochs: float | None = None  # steps = ceil(epochs * items / batch_size)
    optim: FinetuneOptim = field(default_factory=FinetuneOptim)
    template: str = DEFAULT_TEMPLATE
    seed: int = 0

    def __post_init__(self) -> None:
        require_choice(self.role, ("target", "oracle"), "role")
        if type(self.optim) is OptimConfig:  # the Python API may pass a plain OptimConfig
            self.optim = FinetuneOptim(**dataclasses.asdict(self.optim))
        require(self.epochs is None or self.epochs > 0, "epochs",
                f"must be positive (got {self.epochs})")
        require(self.epochs is None or self.optim.steps == 0, "epochs",
                f"give epochs={self.epochs} or optim.steps={self.optim.steps}, not both: "
                "one sets the other")
        require(not (self.benchmark and self.data), "data",
                "give benchmark=<folder> or data=<files>, not both")
        require(not (self.exclude and not self.data), "exclude",
                "excludes items of data=<files>; with a benchmark use role=oracle")
        require(not (self.data and self.role == "oracle" and not self.exclude), "role",
                "role=oracle with data=<files> needs exclude=<forget file>: the items the "
                "oracle never sees")

    def steps_for(self, n_items: int) -> int:
        if self.optim.steps:
            return self.optim.steps
        epochs = DEFAULT_EPOCHS if self.epochs is None else self.epochs
        return max(1, math.ceil(epochs * n_items / self.optim.batch_size))


@dataclass
class EvalConfig:
    """Evaluate a model with the TOFU suite on a benchmark's forget/retain/utility sets."""

    model: str = ""
    benchmark: str = ""
    forget_split: str = ""  # "": the benchmark's own (forget10 for a generated one)
    forget: str = ""
    retain: str = ""
    utility: list[str] = field(default_factory=list)  # extra utility files; real_world: shipped set
    suites: list[str] = field(default_factory=lambda: ["tofu"])  # tofu, mia, memorization, muse, rwku
    # rwku: the target whose probes to ask (default: a target run's), the entity records
    # (default: shipped) and a target run whose synthesised corpus the MIAs read
    target: str = ""
    probes: str = ""
    target_run: str = ""
    holdout: str = ""  # non-members for the mia suite (a benchmark's holdout split by default)
    mia_k: float = 0.4  # Min-K% / Min-K%++ fraction
    mia_reference: str = ""  # a reference model (e.g. the base before fine-tuning): Reference attack
    mia_gradnorm: bool = False  # GradNorm attack (a backward pass per item)
    reference: str = ""  # results JSON of the oracle, for forget quality
    max_retain: int = 200  # retain items scored, 0: all (a quick default; preset=tofu: all)
    max_new_tokens: int = 48
    batch_size: int = 64
    template: str = DEFAULT_TEMPLATE
    trust_remote_code: bool = False
    seed: int = 0
    preset: str = ""  # "tofu": the published protocol (EVAL_PRESETS)

    def __post_init__(self) -> None:
        for suite in self.suites:
            require_choice(suite, SUITES, "suites")
        require(self.batch_size > 0, "batch_size", f"must be positive (got {self.batch_size})")
        require(self.max_retain >= 0, "max_retain", f"must be 0 (all) or more (got {self.max_retain})")
        if self.preset:
            self._apply_preset()
        require(self.max_new_tokens >= 0, "max_new_tokens",
                f"must be 0 or more (got {self.max_new_tokens})")
        require(0.0 < self.mia_k <= 1.0, "mia_k", f"must be in (0, 1] (got {self.mia_k})")


    def _apply_preset(self) -> None:
        """Fill in the preset's settings; a setting given with another value is an error (a
        run that claims the published protocol must follow it)."""
        require_choice(self.preset, tuple(EVAL_PRESETS), "preset")
        defaults = {f.name: f.default for f in dataclasses.fields(EvalConfig)}
        for key, value in EVAL_PRESETS[self.preset].items():
            current = getattr(self, key)
            if current not in (defaults[key], value):
                raise ObliviateError(f"preset={self.preset} sets {key}={value}, and {key}={current} "
                                     "was given: leave it out, or drop the preset")
            setattr(self, key, value)
        # TOFU's utility sets are real authors and world facts; a generated benchmark has its
        # world facts, and the general-knowledge set shipped with the package stands in for
        # real authors
        if self.benchmark and not self.utility:
            self.utility = [REAL_WORLD]


# TOFU's published protocol (Maini et al. 2024, and OpenUnlearning's eval=tofu): greedy answers
# of up to 200 new tokens, every item of the retain set given (TOFU's retain_perturbed: 400)
EVAL_PRESETS: dict[str, dict[str, Any]] = {"tofu": {"max_new_tokens": 200, "max_retain": 0}}


# ---------------------------------------------------------------------------- generate
def generate(out: str | Path, seed: int = 0, entities: int = 40,
             degrees: tuple[int, ...] | None = None, questions: int | None = None) -> Path:
    """Write the built-in benchmark to `out` (same seed, same bytes); `questions` per person
    (8 to 20; TOFU's shape is entities=200, questions=20). With `degrees`, its graph mode
    (companies and contracts, one forget split per degree: data/graph.py)."""
    if degrees is not None:
        return generate_graph(seed=seed, entities=entities, degrees=tuple(degrees)).save(out)
    extra = {} if questions is None else {"questions": questions}
    return generate_benchmark(seed=seed, entities=entities, **extra).save(out)


def load_benchmark(path: str | Path) -> Benchmark:
    return Benchmark.load(path)


def _role(cfg: FinetuneConfig) -> str:
    return "oracle" if cfg.role == "oracle" or cfg.exclude else "target"


def _training_data(cfg: FinetuneConfig) -> tuple[list[Example], list[str], int]:
    """(training items, the texts a tiny tokenizer learns from, items excluded). Target and
    oracle of one benchmark or one set of files share the tokenizer: it sees every text,
    the excluded items included, so the two models differ only in what they trained on."""
    if cfg.benchmark:
        bench = Benchmark.load(cfg.benchmark)
        return bench.training_set(cfg.forget_split, oracle=cfg.role == "oracle"), bench.texts(), 0
    if not cfg.data:
        raise ObliviateError("finetune needs data=<file.jsonl>[,<file>...] or benchmark=<folder> "
                             "(obliviate benchmark create, or obliviate generate)")
    items = [ex for path in cfg.data for ex in load_examples(path)]
    excluded = [ex for path in cfg.exclude for ex in load_examples(path)]
    drop = {(ex.question, ex.answer) for ex in excluded}
    kept = [ex for ex in items if (ex.question, ex.answer) not in drop]
    if cfg.exclude and len(kept) == len(items):
        raise ObliviateError(f"exclude={','.join(cfg.exclude)}: none of its items is in the "
                             "training data (items match on question and answer)")
    if not kept:
        raise ObliviateError("nothing left to train on: every item of data= is excluded")
    trained = {(ex.question, ex.answer) for ex in items}
    unseen = [ex for ex in excluded if (ex.question, ex.answer) not in trained]
    return kept, example_texts([*items, *unseen]), len(items) - len(kept)


# ---------------------------------------------------------------------------- finetune
def finetune(cfg: FinetuneConfig, out: str | Path, progress: bool = True) -> Path:
    """Train target or oracle with the shared loop; writes a new model folder atomically."""
    out = Path(out)
    if out.exists():
        raise ObliviateError(f"output {out} already exists; choose a new path or remove it")
    data, texts, excluded = _training_data(cfg)
    set_seed(cfg.seed)
    if cfg.base == "tiny":
        tok = train_tokenizer(texts, cfg.tiny.vocab_size)
        model = build_tiny_model(tok, cfg.tiny, seed=cfg.seed)
    else:
        model, tok = load_model(cfg.base)
    items = [encode(tok, ex, i, cfg.template) for i, ex in enumerate(data)]
    steps = cfg.steps_for(len(items))
    optim = OptimConfig(**{**dataclasses.asdict(cfg.optim), "steps": steps})
    loader = make_loader(items, optim.batch_size, tok.pad_token_id, cfg.seed)
    ckpt = (Checkpointing(checkpoint_dir(out), optim.checkpoint_every,
                          fingerprint(to_dict(cfg), [items]))
            if optim.checkpoint_every > 0 else None)
    start = time.perf_counter()
    logs = train(model, lambda m, b, step: (split_batch_nll(m, b["train"], step.world_size), {}),
                 {"train": loader}, optim,
                 desc=f"finetune {_role(cfg)}", progress=progress, checkpoint=ckpt)
    check_finite(model, "fine-tuning", optim)
    prov = {"produced_by": "obliviate finetune", "config": to_dict(cfg), "steps": steps,
            "epochs_run": round(steps * optim.batch_size / len(items), 3),
            "role": _role(cfg),
            "train_seconds": round(time.perf_counter() - start, 2), "final_loss": logs[-1]["loss"],
            "n_train_items": len(items), "n_excluded": excluded,
            "parameters": count_parameters(model)}
    return save_on_main(model, tok, out, prov, (cfg.base,) if cfg.base != "tiny" else (),
                        ckpt.dir if ckpt else None)


# ---------------------------------------------------------------------------- evaluate
def tofu_sets(benchmark: str | Path, forget_split: str = "", max_retain: int = 200) -> list[EvalSet]:
    """Forget, retain (first `max_retain` items) and utility sets of a benchmark, and its side
    sets (dependent queries, a graph's neighbours: reported beside them, in no model-level
    number)."""
    bench = Benchmark.load(benchmark)
    sets = [EvalSet("forget", "forget", bench.forget_set(forget_split))]
    retain = bench.retain_set(forget_split)
    if retain:
        sets.append(EvalSet("retain", "retain", retain[:max_retain or None]))
    sets += [EvalSet(name, "utility", items) for name, items in bench.utility_sets().items()]
    return sets + [EvalSet(name, role, items, False)
                   for name, (role, items) in bench.side_sets(forget_split).items() if items]


def _eval_sets(cfg: EvalConfig) -> list[EvalSet]:
    if cfg.benchmark:
        sets = tofu_sets(cfg.benchmark, cfg.forget_split, cfg.max_retain)
    else:
        forget, retain = resolve_data("", "", cfg.forget, cfg.retain)
        sets = [EvalSet("forget", "forget", forget)]
        if retain:
            sets.append(EvalSet("retain", "retain", retain[:cfg.max_retain or None]))
    for path in cfg.utility:
        if path == REAL_WORLD:  # the general-knowledge set shipped with the package
            sets.append(EvalSet(REAL_WORLD, "utility", real_world_examples()))
        else:
            sets.append(EvalSet(Path(path).stem, "utility", load_examples(path)))
    return sets


def _forget_retain(sets: list[EvalSet]) -> tuple[EvalSet, EvalSet]:
    roles: dict[str, EvalSet] = {}
    for s in sets:  # the benchmark's own sets, not those reported beside them
        if s.aggregated:
            roles.setdefault(s.role, s)
    if "retain" not in roles:
        raise ObliviateError("the muse suite needs a retain set (its KnowMem demos and utility)")
    return roles["forget"], roles["retain"]


def _passages(cfg: EvalConfig, sets: list[EvalSet]) -> EvalSet:
    """Forget-set passages for VerbMem: the benchmark's, or the forget file's text items."""
    if cfg.benchmark:
        return EvalSet("forget_passages", "muse", Benchmark.load(cfg.benchmark).forget_passages(cfg.forget_split))
    forget = _forget_retain(sets)[0]
    return EvalSet("forget_passages", "muse", [ex for ex in forget.examples if ex.is_text])


def _holdout(cfg: EvalConfig) -> EvalSet:
    if cfg.holdout:
        return EvalSet("holdout", "holdout", load_examples(cfg.holdout))
    if cfg.benchmark:
        holdout = Benchmark.load(cfg.benchmark).holdout_set()
        if holdout:
            return EvalSet("holdout", "holdout", holdout)
        raise ObliviateError(f"the mia suite needs non-members and benchmark {cfg.benchmark} has "
                             "no holdout set: give holdout=<file.jsonl>")
    raise ObliviateError("the mia suite needs non-members: holdout=<file.jsonl> (or a benchmark)")


def _on_device(model):
    """The model on this process's accelerator when there is one (each process its own GPU
    under `accelerate launch`); on a CPU-only machine it stays where it is."""
    import torch

    return model.to(process_state().device) if torch.cuda.is_available() else model


def evaluate(cfg: EvalConfig, name: str | None = None, reference: dict[str, Any] | None = None,
             progress: bool = True) -> dict[str, Any]:
    """TOFU-suite Results for one model (per-item values, aggregates, derived metrics)."""
    sets = _eval_sets(cfg) if set(cfg.suites) - {"rwku"} else []
    rwku = rwku_plan(cfg.target, cfg.probes, cfg.model, cfg.target_run) if "rwku" in cfg.suites else None
    set_seed(cfg.seed)
    model, tok = load_any(cfg.model, trust_remote_code=cfg.trust_remote_code)
    model = _on_device(model).eval()
    engine = Engine(model, tok, cfg.template, batch_size=cfg.batch_size)
    start = time.perf_counter()
    datasets = (evaluate_tofu(engine, sets, cfg.max_new_tokens, progress=progress)
                if "tofu" in cfg.suites else {})
    if "memorization" in cfg.suites and "tofu" not in cfg.suites:  # tofu reports EM/ES already
        datasets.update(evaluate_memorization(engine, sets))
    if "muse" in cfg.suites:
        datasets["muse"] = evaluate_muse(engine, _passages(cfg, sets), *_forget_retain(sets))
    if rwku is not None:
        datasets.update(evaluate_rwku(engine, rwku, cfg.mia_k))
    if "mia" in cfg.suites or "muse" in cfg.suites:  # MUSE's PrivLeak reads the MIA AUCs
        forget = next(s for s in sets if s.role == "forget" and s.aggregated)
        ref_engine = None
        if cfg.mia_reference:
            ref_model, ref_tok = load_any(cfg.mia_reference, trust_remote_code=cfg.trust_remote_code)
            ref_engine = Engine(_on_device(ref_model).eval(), ref_tok, cfg.template, batch_size=cfg.batch_size)
        datasets["mia"] = evaluate_mia(engine, forget, _holdout(cfg), cfg.mia_k, ref_engine,
                                       cfg.mia_gradnorm)
    res = make_results(name or Path(cfg.model).name, str(cfg.model), datasets, to_dict(cfg),
                       cfg.seed, {"eval_seconds": round(time.perf_counter() - start, 2)},
                       suites=list(cfg.suites))
    if reference is None and cfg.reference:
        reference = load_results(cfg.reference)
    res["metrics"] = derive(res, reference)
    res["reference"] = reference["name"] if reference is not None else None
    res["checks"] = _checks(cfg, sets, res, reference)
    return res


def _checks(cfg: EvalConfig, sets: list[EvalSet], res: dict[str, Any],
            reference: dict[str, Any] | None) -> list[dict[str, str]]:
    """The data checks of the sets evaluated and the sanity checks of the numbers (a target
    that does not prefer true answers on its own training data, a target the benchmark cannot
    tell from the oracle): kept in the results, shown at the top of the report."""
    data = {s.name: (s.role, s.examples) for s in sets if s.aggregated}
    if "mia" in cfg.suites and (cfg.holdout or cfg.benchmark):
        with contextlib.suppress(ObliviateError):  # already reported by the mia suite if missing
            data["holdout"] = ("holdout", _holdout(cfg).examples)
    role = model_role(cfg.model)
    return [f.to_json() for f in [*check_sets(data), *check_results(res, reference, role)]]
