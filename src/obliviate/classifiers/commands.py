"""The CLI's classifier branch: `finetune`, `unlearn`, `eval` and `audit` come here when their
benchmark or model is a classifier's (`family`), `generate --family classifier` and
`benchmark classifier` write classifier benchmarks. Parse, check outputs, call, print."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..config import load_config
from ..errors import ObliviateError
from ..io import check_output, write_json_atomic
from .family import family

__all__ = ["audit", "create", "evaluate", "family", "finetune", "generate", "unlearn"]


def generate(out: str, dataset: str, seed: int) -> None:
    from .builtin import DATASETS
    from .builtin import generate as write

    if dataset not in DATASETS:
        raise ObliviateError(f"--dataset {dataset!r}: one of {', '.join(DATASETS)}")
    check_output(out, {}, kind="dir")
    path = write(out, dataset, seed)
    print(f"classifier benchmark ({dataset}) written to {path} (datasheet: {path / 'DATASHEET.md'})")


def create(out: str, train: str, test: str | None, test_fraction: float, seed: int) -> None:
    """A classifier benchmark from a user's files (image folder, .npz or labelled JSONL)."""
    from .data import read_source, split_test, write_benchmark

    if not 0 < test_fraction < 1:
        raise ObliviateError(f"--test-fraction must be between 0 and 1 (got {test_fraction})")
    check_output(out, {"training data": train, "test data": test}, kind="dir")
    data, classes = read_source(train)
    if test:
        test_data, test_classes = read_source(test, classes if data.kind == "text" else None)
        if data.kind == "image" and test_classes != classes:
            raise ObliviateError(f"{test}: its classes ({', '.join(test_classes)}) differ from the training data's")
    else:
        data, test_data = split_test(data, test_fraction, seed)
    sheet = (f"# classifier benchmark from {Path(train).name}\n\n{len(data)} training and {len(test_data)} "
             f"test {data.kind}s, {len(classes)} classes ({', '.join(classes[:20])}); test data: "
             f"{Path(test).name if test else f'a seeded {test_fraction:.0%} stratified split (seed {seed})'}.\n")
    path = write_benchmark(out, data, test_data, classes, {"source": str(Path(train).resolve()), "seed": seed},
                           sheet, {"training data": train, "test data": test})
    print(f"classifier benchmark written to {path} (train {len(data)}, test {len(test_data)}, "
          f"{len(classes)} classes)")


def finetune(config: str | None, overrides: list[str], out: str) -> None:
    from .api import ClassifierFinetuneConfig
    from .api import finetune as train

    cfg = load_config(ClassifierFinetuneConfig, config, overrides)
    check_output(out, {"benchmark": cfg.benchmark, "config": config}, kind="dir")
    print(f"classifier written to {train(cfg, out)}")


def unlearn(config: str | None, overrides: list[str], out: str) -> None:
    from .api import ClassifierUnlearnConfig
    from .api import unlearn as run

    cfg = load_config(ClassifierUnlearnConfig, config, overrides)
    check_output(out, {"model": cfg.model, "benchmark": cfg.benchmark, "config": config}, kind="dir")
    print(f"unlearned classifier written to {run(cfg, out)}")


def evaluate(config: str | None, overrides: list[str], out: str, label: str | None) -> dict[str, Any]:
    from .api import ClassifierEvalConfig
    from .api import evaluate as run

    cfg = load_config(ClassifierEvalConfig, config, overrides)
    check_output(out, {"model": cfg.model, "benchmark": cfg.benchmark, "reference results": cfg.reference,
                       "config": config})
    res = run(cfg, name=label)
    write_json_atomic(out, res)
    for key, value in res["metrics"].items():
        print(f"{key:32s} {value:.6g}" if isinstance(value, float) else f"{key:32s} {value}")
    print(f"results written to {out}")
    return res


def audit(config: str | None, overrides: list[str], out: str, label: str | None) -> None:
    from .audits import ClassifierAuditConfig
    from .audits import audit as run

    cfg = load_config(ClassifierAuditConfig, config, overrides)
    check_output(out, {"model": cfg.model, "target": cfg.target, "oracle": cfg.oracle,
                       "benchmark": cfg.benchmark, "config": config})
    print(f"auditing {cfg.model} (residual knowledge: 1 = the target's, 0 = the oracle's)")
    res = run(cfg)
    if label:
        res["name"] = label
    print(f"audit results written to {write_json_atomic(out, res)}")
