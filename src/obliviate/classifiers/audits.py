"""Robustness audits of an unlearned classifier: is the forget set's knowledge gone, or hidden?

Each audit measures the forget set's accuracy under one attack; the runner measures the
unlearned model, the target (before unlearning) and the oracle (retrained without the forget
set) and reports the residual (m - oracle) / (target - oracle) per number, as the language
model audits do (1 = the target's knowledge, 0 = the oracle's). The output is the same audit
JSON, so `obliviate report` renders it beside results.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..audits.base import NotApplicable, residual
from ..audits.run import SCHEMA
from ..config import from_dict, require, require_choice, to_dict
from ..errors import ObliviateError
from ..evaluation.results import git_sha, versions
from ..registry import Registry
from . import nets
from .data import ClassData, load_benchmark
from .methods.base import batches, optimise, predict_proba

CLASSIFIER_AUDITS: Registry[type] = Registry("classifier audit")


@dataclass
class AuditSets:
    x_forget: torch.Tensor
    y_forget: torch.Tensor
    x_retain: torch.Tensor  # a sample of the retained training data
    y_retain: torch.Tensor
    seed: int = 0


def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    return float((predict_proba(model, x).argmax(1) == y).float().mean() * 100) if len(y) else float("nan")


def halves(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    order = np.random.default_rng(seed).permutation(n)
    return order[:n // 2], order[n // 2:]


@CLASSIFIER_AUDITS.register("relearning")
@dataclass
class Relearning:
    """Fine-tune on half the forget samples; accuracy on the other half (Lynch et al. 2024's
    relearning attack, for classifiers)."""

    steps: int = 20
    lr: float = 1e-3
    description: ClassVar[str] = "fine-tune on half the forget samples, accuracy on the other half"
    paper: ClassVar[str] = "Lynch et al. 2024, Eight Methods to Evaluate Robust Unlearning in LLMs (relearning)"

    def __post_init__(self) -> None:
        require(self.steps > 0, "steps", f"must be positive (got {self.steps})")
        require(self.lr > 0, "lr", f"must be positive (got {self.lr})")

    def run(self, model: nn.Module, sets: AuditSets) -> dict[str, float]:
        learn, held = halves(len(sets.y_forget), sets.seed)
        if not len(learn) or not len(held):
            raise NotApplicable("needs two or more forget samples (half to relearn, half to score)")
        model = copy.deepcopy(model)
        before = accuracy(model, sets.x_forget[held], sets.y_forget[held])
        order = batches(len(learn), 32, np.random.default_rng(sets.seed), self.steps)

        def loss_of(_: int) -> torch.Tensor:
            idx = torch.from_numpy(learn[next(order)])
            return F.cross_entropy(model(sets.x_forget[idx]), sets.y_forget[idx])

        optimise(model, loss_of, self.steps, self.lr)
        after = accuracy(model, sets.x_forget[held], sets.y_forget[held])
        return {"score": after, "before": before, f"forget_k{self.steps}": after}


def fake_quantize(model: nn.Module, bits: int) -> nn.Module:
    """A copy with every conv and linear weight rounded to `bits`-bit symmetric per-tensor
    integers (round-to-nearest, scale = max|w| / (2^(bits-1) - 1))."""
    model = copy.deepcopy(model)
    levels = 2 ** (bits - 1) - 1
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.Conv2d | nn.Linear | nn.Embedding):
                scale = m.weight.abs().max().clamp(min=1e-12) / levels
                m.weight.copy_((m.weight / scale).round().clamp(-levels, levels) * scale)
    return model


@CLASSIFIER_AUDITS.register("quantization")
@dataclass
class Quantization:
    """Forget accuracy after rounding the weights (Zhang et al. 2024: quantization can bring
    back knowledge that small unlearning updates only hid)."""

    bits: int = 4
    description: ClassVar[str] = "forget accuracy with weights rounded to low-bit integers"
    paper: ClassVar[str] = "Zhang et al. 2024, Catastrophic Failure of LLM Unlearning via Quantization"

    def __post_init__(self) -> None:
        require(2 <= self.bits <= 16, "bits", f"must be 2 to 16 (got {self.bits})")

    def run(self, model: nn.Module, sets: AuditSets) -> dict[str, float]:
        return {"score": accuracy(fake_quantize(model, self.bits), sets.x_forget, sets.y_forget),
                "8bit": accuracy(fake_quantize(model, 8), sets.x_forget, sets.y_forget)}


@CLASSIFIER_AUDITS.register("linear_probe")
@dataclass
class LinearProbe:
    """Is the forget set still linearly decodable from the penultimate features? A logistic
    regression trained on retained samples and half the forget samples, scored on the other
    half (for a forgotten class: is the class still separable?)."""

    description: ClassVar[str] = "logistic regression on penultimate features, accuracy on held-out forget samples"
    paper: ClassVar[str] = "Alain and Bengio 2016, Understanding intermediate layers using linear classifier probes"

    def run(self, model: nn.Module, sets: AuditSets) -> dict[str, float]:
        from sklearn.linear_model import LogisticRegression

        learn, held = halves(len(sets.y_forget), sets.seed)
        if not len(learn) or not len(held):
            raise NotApplicable("needs two or more forget samples (half to fit, half to score)")
        with torch.no_grad():
            f_forget, f_retain = model.eval().features(sets.x_forget).numpy(), model.features(sets.x_retain).numpy()
        x = np.concatenate([f_retain, f_forget[learn]])
        y = np.concatenate([sets.y_retain.numpy(), sets.y_forget.numpy()[learn]])
        probe = LogisticRegression(max_iter=1000).fit(x, y)
        return {"score": float((probe.predict(f_forget[held]) == sets.y_forget.numpy()[held]).mean() * 100)}


@dataclass
class ClassifierAuditConfig:
    model: str = ""
    target: str = ""
    oracle: str = ""
    benchmark: str = ""
    audits: list[str] = field(default_factory=lambda: sorted(CLASSIFIER_AUDITS.names()))
    params: dict[str, dict[str, Any]] = field(default_factory=dict)
    max_retain: int = 300
    seed: int = 0

    def __post_init__(self) -> None:
        for name in [*self.audits, *self.params]:
            require_choice(name, tuple(CLASSIFIER_AUDITS.names()), "audits" if name in self.audits else "params")
        require(self.max_retain > 0, "max_retain", f"must be positive (got {self.max_retain})")
        require(self.seed >= 0, "seed", f"must be 0 or more (got {self.seed})")
        for name, p in self.params.items():
            from_dict(CLASSIFIER_AUDITS.get(name), p, prefix=f"params.{name}.")


def audit_data(prov: dict[str, Any], bench_dir: str, max_retain: int, seed: int) -> tuple[ClassData, ClassData]:
    """The unlearned model's forget set (from its provenance) and a sample of the rest (never
    samples an earlier request removed), as data: each model encodes them its own way (a text
    model's vocabulary shrinks when it forgets)."""
    ids = prov.get("forget_ids")
    if not ids:
        raise ObliviateError("the audited model records no forget set (audit an unlearned model)")
    bench = load_benchmark(bench_dir)
    forget = np.isin(bench.train.ids, ids)
    kept = ~forget & ~np.isin(bench.train.ids, prov.get("excluded_ids", []))
    retain = np.random.default_rng(seed).permutation(np.flatnonzero(kept))[:max_retain]
    return bench.train.take(np.flatnonzero(forget)), bench.train.take(retain)


def encoded(spec: dict[str, Any], data: tuple[ClassData, ClassData], seed: int) -> AuditSets:
    f, r = data
    return AuditSets(nets.inputs(spec, f.x), torch.from_numpy(f.y), nets.inputs(spec, r.x), torch.from_numpy(r.y), seed)


def check_ends(loaded: dict[str, tuple]) -> None:
    """The target and oracle must read the model's inputs and classes, and an oracle must have
    been retrained without the same forget set as the audited model (else its residual scale
    would measure another request)."""
    _, spec, prov = loaded["model"]
    for end, (_, other, _) in loaded.items():
        if other["arch"] != spec["arch"] or other["classes"] != spec["classes"] \
                or other.get("input_shape") != spec.get("input_shape"):
            raise ObliviateError(f"the {end} is not a model of the same kind (architecture, inputs and "
                                 "classes) as the audited one")
    if "oracle" in loaded:
        theirs = sorted(loaded["oracle"][2].get("forget_ids") or [])
        if theirs != sorted(prov.get("forget_ids") or []):
            raise ObliviateError("the oracle was not retrained without the audited model's forget set "
                                 "(its recorded forget samples differ); retrain it on the same split")


def _entry(obj, models: dict[str, tuple[nn.Module, AuditSets]], seed: int) -> dict[str, Any]:
    """One audit's raw numbers on each model and its residual, or why it does not apply."""
    start = time.perf_counter()
    entry: dict[str, Any] = {"description": type(obj).description, "paper": type(obj).paper}
    try:
        raw = {}
        for end, (m, sets) in models.items():
            torch.manual_seed(seed)
            raw[end] = obj.run(m, sets)
    except NotApplicable as exc:
        return {**entry, "model": {"not_applicable": str(exc)}, "target": None, "oracle": None,
                "residual": f"not applicable: {exc}", "seconds": round(time.perf_counter() - start, 2)}
    residuals = ({k: residual(raw["model"][k], raw["target"][k], raw["oracle"][k]) for k in raw["model"]}
                 if "oracle" in raw else "not computed: needs an oracle (a retrained model)")
    return {**entry, "model": raw["model"], "target": raw["target"], "oracle": raw.get("oracle"),
            "residual": residuals, "seconds": round(time.perf_counter() - start, 2)}


def audit(cfg: ClassifierAuditConfig, progress: bool = True) -> dict[str, Any]:
    """The audit JSON: raw numbers for model, target and oracle, and residual scores."""
    for key in ("model", "target", "benchmark"):
        if not getattr(cfg, key):
            raise ObliviateError(f"audit needs {key}=<folder>")
    loaded = {end: nets.load(getattr(cfg, end)) for end in ("model", "target", "oracle") if getattr(cfg, end)}
    check_ends(loaded)
    data = audit_data(loaded["model"][2], cfg.benchmark, cfg.max_retain, cfg.seed)
    models = {end: (m, encoded(spec, data, cfg.seed)) for end, (m, spec, _) in loaded.items()}
    out: dict[str, Any] = {}
    for name in cfg.audits:
        obj = from_dict(CLASSIFIER_AUDITS.get(name), cfg.params.get(name, {}), prefix=f"params.{name}.")
        out[name] = entry = _entry(obj, models, cfg.seed)
        if progress:
            score = entry["residual"] if isinstance(entry["residual"], str) else entry["residual"]["score"]
            print(f"  {name:14s} residual {score if isinstance(score, str) else f'{score:.3f}'}", flush=True)
    return {"schema": SCHEMA, "name": Path(cfg.model).name, "family": "classifier", "config": to_dict(cfg),
            "versions": versions(), "git_sha": git_sha(), "audits": out}
