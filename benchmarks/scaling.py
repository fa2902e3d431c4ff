"""How the costs grow: evaluation time against items, unlearning step time against model size,
fine-tuning throughput per core. Plots and tables in benchmarks/results/scaling.md.

    python benchmarks/scaling.py [--fresh]

1. Evaluation, TOFU protocol (200 new tokens, every metric of the suite), on the first N of the
   benchmark's 1,600 question-answer items (80 people x 20 questions; shuffled once, seed 0, so
   every N holds the same mix of people and relations) for N = 100 .. 1,600, one
   set, a fresh engine each time, the tiny model fine-tuned on them (10 epochs). A straight line
   through the points (least squares) and its R^2 say whether the time is linear in N.
2. NPO step time (batch 8 forget + 8 retain, full weights, float32) for Llama models of 0.8M,
   5M and 26M parameters built from the tiny configuration (untrained: a step's cost does not
   depend on the weights) and SmolLM2-135M-Instruct (with its chat template, so longer
   sequences). Per step = (T_long - T_short) / (long - short) of the training loop's own time.
3. Fine-tuning throughput, answer and prompt tokens per second, with 1 and 2 threads
   (OMP_NUM_THREADS, which the thread governor leaves alone), per core.

Each measurement runs in its own process. Stages are cached in benchmarks/.work/scaling
(--fresh starts over); the measurements are always rerun.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import shutil
import subprocess
import sys
import time
from pathlib import Path

from provenance import line, provenance

HERE = Path(__file__).resolve().parent
WORK = HERE / ".work" / "scaling"
OUT = HERE / "results"
SIZES = {"0.8M": (4, 128, 4, 256), "5M": (6, 256, 4, 768), "26M": (8, 512, 8, 1536)}
ITEMS = (100, 200, 400, 800, 1600)
ENV = {**os.environ, "TOKENIZERS_PARALLELISM": "false"}


def child(kind: str, arg: str) -> dict:
    """One measurement in this process."""
    return {"eval": eval_time, "step": step_time, "finetune": finetune_rate}[kind](arg)


def eval_time(n: str) -> dict:
    """The TOFU suite on the first `n` items of the shuffled benchmark."""
    import torch

    import obliviate as ob
    from obliviate.evaluation import Engine, EvalSet, evaluate_tofu
    from obliviate.models import load_model

    model, tok = load_model(WORK / "target")
    items = [ex for ex in ob.load_benchmark(WORK / "bench").training_set("", oracle=False)
             if not ex.is_text]
    random.Random(0).shuffle(items)  # every N draws from the same mix of people and relations
    items = items[:int(n)]
    engine = Engine(model.eval(), tok, batch_size=32)
    start = time.perf_counter()
    with torch.no_grad():
        evaluate_tofu(engine, [EvalSet("forget", "forget", items)], 200, progress=False)
    return {"items": len(items), "seconds": time.perf_counter() - start}


def step_time(arg: str) -> dict:
    """The training-loop time of an NPO run of `steps` steps on model `size` ("size:steps")."""
    import obliviate as ob
    from obliviate.encoding import DEFAULT_TEMPLATE
    from obliviate.train import OptimConfig

    size, steps = arg.split(":")
    out = WORK / f"npo-{size}-{steps}"
    shutil.rmtree(out, ignore_errors=True)
    ob.unlearn(ob.UnlearnConfig(model=str(WORK / f"model-{size}"), method="npo",
                                benchmark=str(WORK / "bench"),
                                template="chat" if size == "135M" else DEFAULT_TEMPLATE,
                                optim=OptimConfig(lr=1e-5, steps=int(steps), batch_size=8),
                                guard=ob.GuardConfig(retain_floor=0, keep_last_good=False)),
               out, progress=False)
    prov = json.loads((out / "obliviate.json").read_text())
    shutil.rmtree(out, ignore_errors=True)
    return {"seconds": prov["train_seconds"]}


def finetune_rate(arg: str) -> dict:
    """Fine-tuning tokens/s of model `size` at this process's thread count ("size:threads")."""
    import obliviate as ob
    from obliviate.encoding import encode
    from obliviate.models import TinyModelConfig, load_model

    size, threads = arg.split(":")
    out = WORK / f"ft-{size}-{threads}"
    shutil.rmtree(out, ignore_errors=True)
    layers, hidden, heads, inter = SIZES[size]
    ob.finetune(ob.FinetuneConfig(benchmark=str(WORK / "bench"),
                                  tiny=TinyModelConfig(layers=layers, hidden=hidden, heads=heads,
                                                       intermediate=inter),
                                  optim=ob.FinetuneOptim(steps=40, batch_size=32)), out, progress=False)
    prov = json.loads((out / "obliviate.json").read_text())
    _, tok = load_model(out)
    items = ob.load_benchmark(WORK / "bench").training_set("", oracle=False)
    per_epoch = sum(len(encode(tok, ex, i).input_ids) for i, ex in enumerate(items))
    shutil.rmtree(out, ignore_errors=True)
    tokens = per_epoch * prov["epochs_run"]
    return {"seconds": prov["train_seconds"], "tokens_per_s": tokens / prov["train_seconds"],
            "threads": int(threads)}


def run(kind: str, arg: str, threads: int | None = None) -> dict:
    env = dict(ENV, **({"OMP_NUM_THREADS": str(threads)} if threads else {}))
    res = subprocess.run([sys.executable, __file__, "--child", kind, arg], capture_output=True,
                         text=True, env=env)
    if res.returncode != 0:
        raise SystemExit(f"{kind} {arg} failed:\n{res.stderr[-3000:]}")
    out = json.loads(res.stdout.strip().splitlines()[-1])
    print(kind, arg, threads or "", out, flush=True)
    return out


def prepare() -> None:
    """The benchmark, the fine-tuned tiny target, and a model folder per size."""
    import obliviate as ob
    from obliviate.models import (
        TinyModelConfig,
        build_tiny_model,
        load_model,
        save_model,
        train_tokenizer,
    )

    WORK.mkdir(parents=True, exist_ok=True)
    if not (WORK / "bench").exists():
        ob.generate(WORK / "bench", seed=0, entities=80, questions=20)
    if not (WORK / "target").exists():
        ob.finetune(ob.FinetuneConfig(benchmark=str(WORK / "bench"), epochs=10), WORK / "target")
    bench = ob.load_benchmark(WORK / "bench")
    for size, (layers, hidden, heads, inter) in SIZES.items():
        if not (WORK / f"model-{size}").exists():
            tok = train_tokenizer(bench.texts(), 1024)
            model = build_tiny_model(tok, TinyModelConfig(layers=layers, hidden=hidden, heads=heads,
                                                          intermediate=inter), seed=0)
            save_model(model, tok, WORK / f"model-{size}", {"produced_by": "benchmarks/scaling.py"})
    if not (WORK / "model-135M").exists():
        model, tok = load_model("smollm2")
        save_model(model, tok, WORK / "model-135M", {"produced_by": "benchmarks/scaling.py"})


def linear_fit(x: list[float], y: list[float]) -> tuple[float, float, float]:
    """(intercept, slope, R^2) of the least-squares line."""
    import numpy as np

    slope, intercept = np.polyfit(x, y, 1)
    pred = intercept + slope * np.asarray(x)
    ss_res = float(((np.asarray(y) - pred) ** 2).sum())
    ss_tot = float(((np.asarray(y) - np.mean(y)) ** 2).sum())
    return float(intercept), float(slope), 1 - ss_res / ss_tot


def parameters(folder: Path) -> int:
    """Parameters stored in a model folder (tied weights once), from the safetensors headers."""
    from safetensors import safe_open

    total = 0
    for shard in folder.glob("*.safetensors"):
        with safe_open(str(shard), framework="pt") as fh:
            for key in fh.keys():
                total += math.prod(fh.get_slice(key).get_shape())
    return total


def measure(short: int, long: int) -> dict:
    res = {"eval": [run("eval", str(n)) for n in ITEMS], "step": {}, "finetune": []}
    for size in [*SIZES, "135M"]:
        a, b = run("step", f"{size}:{short}"), run("step", f"{size}:{long}")
        res["step"][size] = {"parameters": parameters(WORK / f"model-{size}"),
                             "s_per_step": (b["seconds"] - a["seconds"]) / (long - short)}
    for size in ("0.8M", "5M"):
        for threads in (1, 2):
            res["finetune"].append({"size": size, **run("finetune", f"{size}:{threads}", threads)})
    return res


def plots(res: dict) -> list[str]:
    from obliviate.report.html import pyplot

    plt = pyplot()
    names = []
    fig, ax = plt.subplots(figsize=(5.6, 3.6), dpi=100)
    x = [r["items"] for r in res["eval"]]
    y = [r["seconds"] for r in res["eval"]]
    a, b, _ = linear_fit(x, y)
    ax.plot(x, y, "o", label="measured")
    ax.plot(x, [a + b * v for v in x], "-", label=f"{b * 1000:.1f} ms/item + {a:.1f} s")
    ax.set(xlabel="items", ylabel="seconds", title="TOFU-protocol evaluation, tiny model")
    ax.legend()
    names.append(_save(fig, "scaling-eval.png"))
    fig, ax = plt.subplots(figsize=(5.6, 3.6), dpi=100)
    steps = res["step"]
    ax.loglog([v["parameters"] for v in steps.values()], [v["s_per_step"] for v in steps.values()], "o-")
    for size, v in steps.items():
        ax.annotate(size, (v["parameters"], v["s_per_step"]))
    ax.set(xlabel="parameters", ylabel="seconds per NPO step", title="NPO step, batch 8 + 8, fp32")
    names.append(_save(fig, "scaling-step.png"))
    fig, ax = plt.subplots(figsize=(5.6, 3.6), dpi=100)
    labels = [f"{r['size']}, {r['threads']} thr" for r in res["finetune"]]
    ax.bar(labels, [r["tokens_per_s"] / r["threads"] for r in res["finetune"]])
    ax.set(ylabel="tokens/s per core", title="Fine-tuning throughput per core")
    names.append(_save(fig, "scaling-finetune.png"))
    return names


def _save(fig, name: str) -> str:
    fig.tight_layout()
    fig.savefig(OUT / name)
    return name


def write(res: dict, names: list[str], prov: dict) -> None:
    a, b, r2 = linear_fit([r["items"] for r in res["eval"]], [r["seconds"] for r in res["eval"]])
    lines = ["# Scaling", "", "Measured by `python benchmarks/scaling.py` (see its docstring for the setup).", "",
             "## Evaluation time against items (TOFU protocol, tiny model)", "",
             "| items | seconds | ms per item |", "|---|---|---|"]
    lines += [f"| {r['items']} | {r['seconds']:.2f} | {1000 * r['seconds'] / r['items']:.1f} |" for r in res["eval"]]
    lines += ["", f"Least-squares line: {1000 * b:.2f} ms per item + {a:.2f} s, R^2 = {r2:.4f}.", "",
              f"![evaluation time]({names[0]})", "", "## NPO step time against model size", "",
              "| model | parameters | seconds per step |", "|---|---|---|"]
    lines += [f"| {size} | {v['parameters']:,} | {v['s_per_step']:.3f} |" for size, v in res["step"].items()]
    lines += ["", f"![step time]({names[1]})", "", "## Fine-tuning throughput per core", "",
              "| model | threads | tokens/s | tokens/s per core |", "|---|---|---|---|"]
    lines += [f"| {r['size']} | {r['threads']} | {r['tokens_per_s']:,.0f} | {r['tokens_per_s'] / r['threads']:,.0f} |"
              for r in res["finetune"]]
    lines += ["", f"![throughput]({names[2]})", "", line(prov)]
    text = "\n".join(lines) + "\n"
    print(text)
    (OUT / "scaling.md").write_text(text)
    (OUT / "scaling.json").write_text(json.dumps({"provenance": prov, **res}, indent=1) + "\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--fresh", action="store_true")
    ap.add_argument("--steps", default="3,8", help="short,long NPO runs")
    ap.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child(*args.child)))
        return
    if args.fresh:
        shutil.rmtree(WORK, ignore_errors=True)
    prepare()
    short, long = (int(v) for v in args.steps.split(","))
    res = measure(short, long)
    OUT.mkdir(exist_ok=True)
    write(res, plots(res), provenance())


if __name__ == "__main__":
    main()
