"""`obliviate demo`: the whole job end to end on built-in defaults, offline.

generate -> finetune target (all people) and oracle (retain people, same init and recipe)
-> unlearn the forget split with each method -> evaluate everything against the oracle
-> results/*.json + report.html. Each stage's output is reused when it already exists, so an
interrupted demo resumes where it stopped.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

from .api import EvalConfig, FinetuneConfig, UnlearnConfig, evaluate, finetune, generate, unlearn
from .config import to_dict
from .evaluation import derive, load_results, save_results
from .io import write_json_atomic
from .report import write_report
from .train import OptimConfig


@dataclass
class DemoConfig:
    out: str = "obliviate-demo"
    seed: int = 0
    entities: int = 40
    forget_split: str = "forget10"
    methods: list[str] = field(default_factory=lambda: ["graddiff", "npo"])
    epochs: float = 40.0
    unlearn_steps: int = 60
    unlearn_lr: float | None = None  # None: each method's default
    progress: bool = True


def _say(msg: str, progress: bool) -> None:
    if progress:
        print(msg, flush=True)


def run_demo(cfg: DemoConfig) -> Path:
    """Run every stage (skipping finished ones); returns the report path."""
    from .methods import METHODS

    for method in cfg.methods:  # an unknown name fails now, not after training two models
        METHODS.get(method)
    root = Path(cfg.out)
    t0 = time.perf_counter()
    timings: dict[str, float] = {}
    bench = root / "benchmark"
    if not bench.exists():
        generate(bench, seed=cfg.seed, entities=cfg.entities)
    _say(f"[1/5] benchmark: {bench} ({cfg.entities} people, split {cfg.forget_split})", cfg.progress)

    models = {}
    for role in ("target", "oracle"):
        path = root / "models" / role
        if not path.exists():
            t = time.perf_counter()
            finetune(FinetuneConfig(benchmark=str(bench), forget_split=cfg.forget_split, role=role,
                                    epochs=cfg.epochs, seed=cfg.seed), path, progress=cfg.progress)
            timings[f"finetune_{role}"] = time.perf_counter() - t
        models[role] = path
    _say(f"[2/5] target and oracle models: {root / 'models'}", cfg.progress)

    for method in cfg.methods:
        path = root / "models" / f"target-{method}"
        if not path.exists():
            t = time.perf_counter()
            unlearn(UnlearnConfig(model=str(models["target"]), method=method, benchmark=str(bench),
                                  forget_split=cfg.forget_split, seed=cfg.seed,
                                  optim=OptimConfig(lr=cfg.unlearn_lr, steps=cfg.unlearn_steps,
                                                    batch_size=32, warmup_ratio=0.0,
                                                    schedule="constant")),
                    path, progress=cfg.progress)
            timings[f"unlearn_{method}"] = time.perf_counter() - t
        models[method] = path
    _say(f"[3/5] unlearned with: {', '.join(cfg.methods)}", cfg.progress)

    results_dir = root / "results"
    rows = []
    oracle_res = None
    for name in ["oracle", "target", *cfg.methods]:  # oracle first: it is everyone's reference
        path = results_dir / f"{name}.json"
        if path.exists():
            res = load_results(path)
        else:
            t = time.perf_counter()
            res = evaluate(EvalConfig(model=str(models[name]), benchmark=str(bench),
                                      forget_split=cfg.forget_split, seed=cfg.seed),
                           name=name, reference=oracle_res, progress=cfg.progress)
            if name == "oracle":  # the oracle is its own reference: forget quality 1.0
                res["metrics"], res["reference"] = derive(res, res), name
            timings[f"eval_{name}"] = time.perf_counter() - t
            save_results(res, path)
        if name == "oracle":
            oracle_res = res
        rows.append(res)
    audits = _audits(cfg, root, bench, models, timings)
    report = write_report(rows, root, title="obliviate demo: unlearning the built-in benchmark",
                          audits=audits)
    timings["total"] = time.perf_counter() - t0
    write_json_atomic(root / "demo.json", {"config": to_dict(cfg), "seconds": timings})
    _say(f"[5/5] evaluated {len(rows)} models and audited {len(audits)}; results in "
         f"{results_dir}", cfg.progress)
    return report


def _audits(cfg: DemoConfig, root: Path, bench: Path, models: dict[str, Path],
            timings: dict[str, float]) -> list[dict]:
    """Robustness audits of each unlearned model (target and oracle measured once)."""
    import json

    from .audits import AuditConfig, audit

    out, ends = [], {}
    for method in cfg.methods:
        path = root / "results" / f"audit-{method}.json"
        if path.exists():
            out.append(json.loads(path.read_text()))
            continue
        t = time.perf_counter()
        res = audit(AuditConfig(model=str(models[method]), target=str(models["target"]),
                                oracle=str(models["oracle"]), benchmark=str(bench),
                                forget_split=cfg.forget_split), ends=ends, progress=False)
        timings[f"audit_{method}"] = time.perf_counter() - t
        write_json_atomic(path, res)
        out.append(res)
    return out
