"""`obliviate demo`: the whole job end to end on built-in defaults, offline.

generate -> finetune target (all people) and oracle (retain people, same init and recipe)
-> unlearn the forget split with each method -> evaluate everything against the oracle
-> results/*.json + report.html -> deletion requests: a ledger on the target where each
forget person's erasure request is applied in turn, with an evidence report per request.
Each stage's output is reused when it already exists, so an interrupted demo resumes where it
stopped.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

from .api import EvalConfig, FinetuneConfig, UnlearnConfig, evaluate, finetune, generate, unlearn
from .audits import AuditConfig, audit
from .config import require, require_choice, to_dict
from .data import Benchmark
from .errors import ObliviateError
from .evaluation import derive, load_results, save_results
from .io import check_output, write_json_atomic, write_text_atomic
from .ledger import Ledger, ProjectSettings, add_request, apply, init_project
from .ledger.evidence import ledger_html
from .methods import METHODS
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
    requests: int = 2  # deletion requests (one forget person each) applied through the ledger
    progress: bool = True

    def __post_init__(self) -> None:
        for method in self.methods:
            require_choice(method, tuple(METHODS.names()), "methods")
        require(self.epochs > 0, "epochs", f"must be positive (got {self.epochs})")
        require(self.unlearn_steps > 0, "unlearn_steps", f"must be positive (got {self.unlearn_steps})")
        require(self.unlearn_lr is None or 0 < self.unlearn_lr <= 100, "unlearn_lr",
                f"must be in (0, 100] (got {self.unlearn_lr})")
        require(self.requests >= 0, "requests", f"must be 0 or more (got {self.requests})")


def _say(msg: str, progress: bool) -> None:
    if progress:
        print(msg, flush=True)


def run_demo(cfg: DemoConfig) -> Path:
    """Run every stage (skipping finished ones); returns the report path."""
    for method in cfg.methods:  # an unknown name fails now, not after training two models
        METHODS.get(method)
    root = Path(cfg.out)
    _check_out(root)
    t0 = time.perf_counter()
    timings: dict[str, float] = {}
    bench = _benchmark_stage(cfg, root)
    models = _models_stage(cfg, root, bench, timings)
    models.update(_unlearning_stage(cfg, root, bench, models["target"], timings))
    rows = _evaluation_stage(cfg, root, bench, models, timings)
    audits = _audits_stage(cfg, root, bench, models, timings)
    report = _report_stage(cfg, root, rows, audits, timings, t0)
    if cfg.requests:
        _requests_stage(cfg, root, bench, models, timings)
    return report


def _check_out(root: Path) -> None:
    """Resume only an earlier demo's folder: a typo like `--out ~` must not fill a home folder
    with models and results. An earlier demo has demo.json or its first stage's benchmark."""
    check_output(root, {}, kind="dir")
    # empty, or holding only what a demo killed while writing its benchmark left
    if not root.is_dir() or all(p.name.startswith(".tmp-benchmark-") for p in root.iterdir()):
        return
    if not ((root / "demo.json").is_file() or (root / "benchmark" / "benchmark.json").is_file()):
        raise ObliviateError(f"{root} exists and is not an earlier demo's folder (no demo.json or "
                             "benchmark/); give a new --out path")


def _benchmark_stage(cfg: DemoConfig, root: Path) -> Path:
    """Generate the built-in benchmark unless it exists; returns its folder."""
    bench = root / "benchmark"
    if not bench.exists():
        generate(bench, seed=cfg.seed, entities=cfg.entities)
    _say(f"[1/6] benchmark: {bench} ({cfg.entities} people, split {cfg.forget_split})", cfg.progress)
    return bench


def _models_stage(cfg: DemoConfig, root: Path, bench: Path,
                  timings: dict[str, float]) -> dict[str, Path]:
    """Fine-tune the target (all people) and the oracle (retain people) unless they exist."""
    models = {}
    for role in ("target", "oracle"):
        path = root / "models" / role
        if not path.exists():
            t = time.perf_counter()
            finetune(FinetuneConfig(benchmark=str(bench), forget_split=cfg.forget_split, role=role,
                                    epochs=cfg.epochs, seed=cfg.seed), path, progress=cfg.progress)
            timings[f"finetune_{role}"] = time.perf_counter() - t
        models[role] = path
    _say(f"[2/6] target and oracle models: {root / 'models'}", cfg.progress)
    return models


def _unlearning_stage(cfg: DemoConfig, root: Path, bench: Path, target: Path,
                      timings: dict[str, float]) -> dict[str, Path]:
    """Unlearn the forget split from the target with each method unless already done."""
    models = {}
    for method in cfg.methods:
        path = root / "models" / f"target-{method}"
        if not path.exists():
            t = time.perf_counter()
            unlearn(UnlearnConfig(model=str(target), method=method, benchmark=str(bench),
                                  forget_split=cfg.forget_split, seed=cfg.seed,
                                  optim=OptimConfig(lr=cfg.unlearn_lr, steps=cfg.unlearn_steps,
                                                    batch_size=32, warmup_ratio=0.0,
                                                    schedule="constant")),
                    path, progress=cfg.progress)
            timings[f"unlearn_{method}"] = time.perf_counter() - t
        models[method] = path
    _say(f"[3/6] unlearned with: {', '.join(cfg.methods)}", cfg.progress)
    return models


def _evaluation_stage(cfg: DemoConfig, root: Path, bench: Path, models: dict[str, Path],
                      timings: dict[str, float]) -> list[dict]:
    """Evaluate oracle, target and each unlearned model against the oracle (reusing results)."""
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
    _say(f"[4/6] evaluated {len(rows)} models against the oracle; results in {results_dir}",
         cfg.progress)
    return rows


def _report_stage(cfg: DemoConfig, root: Path, rows: list[dict], audits: list[dict],
                  timings: dict[str, float], t0: float) -> Path:
    """Write the report and the demo's config and timings; returns the report path."""
    names = ["oracle", "target", *cfg.methods]
    sources = [f"results/{n}.json" for n in names] + [f"results/audit-{m}.json" for m in cfg.methods]
    report = write_report(rows, root, title="obliviate demo: unlearning the built-in benchmark",
                          audits=audits, sources=sources)
    timings["total"] = time.perf_counter() - t0
    write_json_atomic(root / "demo.json", {"config": to_dict(cfg), "seconds": timings})
    _say(f"[5/6] audited {len(audits)} unlearned models; report: {report}", cfg.progress)
    return report


def _requests_stage(cfg: DemoConfig, root: Path, bench: Path, models: dict[str, Path],
                    timings: dict[str, float]) -> None:
    """Apply the deletion requests through the ledger and add their time to demo.json."""
    t = time.perf_counter()
    ledger_page = _requests(cfg, root, bench, models)
    timings["requests"] = time.perf_counter() - t
    write_json_atomic(root / "demo.json", {"config": to_dict(cfg), "seconds": timings})
    _say(f"[6/6] deletion requests applied; ledger: {ledger_page}", cfg.progress)


def _requests(cfg: DemoConfig, root: Path, bench_dir: Path, models: dict[str, Path]) -> Path:
    """The deletion-request workflow on the target: one request per forget person, applied
    in order with NPO, each with its evidence report; returns the ledger page."""
    bench = Benchmark.load(bench_dir)
    data, project = root / "requests" / "data", root / "requests" / "project"
    people = bench.splits[cfg.forget_split][:cfg.requests]
    files = {"retain": bench.qa_of("all"), "holdout": bench.qa_of("holdout"),
             "world_facts": bench.world_facts,
             **{p: [x for x in bench.qa if x.entity == p] for p in people}}
    for name, items in files.items():
        if not (data / f"{name}.jsonl").exists():
            write_text_atomic(data / f"{name}.jsonl",
                              "".join(json.dumps(x.to_json()) + "\n" for x in items))
    if not project.exists():  # the oracle never saw any forget person: a valid oracle here
        init_project(project, ProjectSettings(
            base=str(models["target"]), retain=str(data / "retain.jsonl"),
            holdout=str(data / "holdout.jsonl"), oracle=str(models["oracle"]),
            utility=[str(data / "world_facts.jsonl")],
            audits=["rephrase", "quantization", "relearning"]))
    with Ledger.open(project) as ledger:
        known = {r.subject for r in ledger.requests()}
    for person in people:
        if f"person {person}" not in known:
            add_request(project, f"person {person}", str(data / f"{person}.jsonl"), method="npo")
    apply(project, apply_all=True, progress=cfg.progress)
    with Ledger.open(project) as ledger:
        return write_text_atomic(project / "ledger.html", ledger_html(ledger))


def _audits_stage(cfg: DemoConfig, root: Path, bench: Path, models: dict[str, Path],
            timings: dict[str, float]) -> list[dict]:
    """Robustness audits of each unlearned model (target and oracle measured once)."""
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
