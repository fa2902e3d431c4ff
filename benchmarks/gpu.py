"""One accelerator, end to end: fine-tune SmolLM2-135M-Instruct on the built-in benchmark,
unlearn it with NPO (full weights and LoRA), evaluate it with the TOFU protocol; throughput and
peak memory of each stage.

    bash benchmarks/gpu.sh                 # on a GPU machine: sets up, then runs this
    python benchmarks/gpu.py [--precision bf16|fp32] [--entities 40] [--epochs 2] [--steps 60]
    python benchmarks/gpu.py --tiny        # the same stages with the tiny model, on any CPU

Sized to fit in 8 minutes on one large GPU (bf16 mixed precision for training, as
`accelerate` applies it; evaluation in float32, the protocol's numbers). Each stage runs in a
process of its own, so each peak is the stage's: the device's peak allocated memory on a GPU,
the process's peak RSS on the CPU. `--tiny` (the tiny model, 10 people, a few steps) is what
the test suite runs to keep this script working where no GPU is lent.

Writes benchmarks/results/gpu.md and .json (gpu-tiny.* with --tiny).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

from provenance import line, provenance

HERE = Path(__file__).resolve().parent
STAGES = ("finetune", "npo_full", "npo_lora", "eval")


def settings(args) -> dict:
    if args.tiny:
        return {"base": "tiny", "template": "Question: {question}\nAnswer: ", "entities": 10,
                "questions": 8, "epochs": 1, "steps": 4, "batch": 8, "finetune_batch": 16}
    return {"base": "smollm2", "template": "chat", "entities": args.entities, "questions": 20,
            "epochs": args.epochs, "steps": args.steps, "batch": 8, "finetune_batch": 16}


def peak_mb() -> float:
    import torch

    if torch.cuda.is_available():
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def train_tokens(bench: Path, template: str, tokenizer) -> int:
    """Real (unpadded) tokens in one pass over the benchmark's training items."""
    import obliviate as ob
    from obliviate.encoding import encode

    items = ob.load_benchmark(bench).training_set("", oracle=False)
    return sum(len(encode(tokenizer, ex, i, template).input_ids) for i, ex in enumerate(items))


def stage(name: str, work: Path, s: dict) -> dict:
    """One stage in this process; returns its measurements."""
    import obliviate as ob
    from obliviate.models import load_model
    from obliviate.train import OptimConfig

    bench, target = work / "bench", work / "target"
    start = time.perf_counter()
    if name == "finetune":
        shutil.rmtree(target, ignore_errors=True)
        ob.finetune(ob.FinetuneConfig(benchmark=str(bench), base=s["base"], template=s["template"],
                                      epochs=s["epochs"], optim=ob.FinetuneOptim(
                                          lr=1e-4 if s["base"] != "tiny" else 3e-3,
                                          batch_size=s["finetune_batch"])), target, progress=False)
        prov = json.loads((target / "obliviate.json").read_text())
        seconds = prov["train_seconds"]
        _, tok = load_model(target)
        tokens = train_tokens(bench, s["template"], tok) * prov["epochs_run"]
        return {"seconds": seconds, "tokens_per_s": tokens / seconds, "peak_mb": peak_mb()}
    if name.startswith("npo"):
        out = work / f"out-{name}"
        shutil.rmtree(out, ignore_errors=True)
        ob.unlearn(ob.UnlearnConfig(model=str(target), method="npo", benchmark=str(bench),
                                    template=s["template"],
                                    optim=OptimConfig(lr=1e-5, steps=s["steps"], batch_size=s["batch"]),
                                    lora=ob.LoraSettings(enabled=name == "npo_lora")),
                   out, progress=False)
        seconds = json.loads((out / "obliviate.json").read_text())["train_seconds"]
        shutil.rmtree(out, ignore_errors=True)
        return {"seconds": seconds, "s_per_step": seconds / s["steps"], "peak_mb": peak_mb()}
    res = ob.evaluate(ob.EvalConfig(model=str(target), benchmark=str(bench), template=s["template"],
                                    preset="tofu", batch_size=32), progress=False)
    items = sum(d.get("n", 0) for d in res["datasets"].values() if isinstance(d, dict))
    return {"seconds": res["timing"]["eval_seconds"], "items": items,
            "wall_s": time.perf_counter() - start, "peak_mb": peak_mb()}


def device_name() -> str:
    import torch

    return torch.cuda.get_device_name(0) if torch.cuda.is_available() else "CPU (no GPU)"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tiny", action="store_true", help="tiny model, few steps: a check that runs anywhere")
    ap.add_argument("--precision", choices=("bf16", "fp32"), default="bf16")
    ap.add_argument("--entities", type=int, default=40)
    ap.add_argument("--epochs", type=float, default=2)
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--work", default=str(HERE / ".work" / "gpu"))
    ap.add_argument("--results", default=str(HERE / "results"))
    ap.add_argument("--child", choices=STAGES, help=argparse.SUPPRESS)
    args = ap.parse_args()
    s, work = settings(args), Path(args.work)
    if args.child:
        print(json.dumps(stage(args.child, work, s)))
        return
    import obliviate as ob

    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    ob.generate(work / "bench", seed=0, entities=s["entities"], questions=s["questions"])
    env = {**os.environ, "ACCELERATE_MIXED_PRECISION": "bf16" if args.precision == "bf16" else "no",
           "TOKENIZERS_PARALLELISM": "false"}
    rows = {}
    for name in STAGES:
        cmd = [sys.executable, __file__, "--child", name, "--work", str(work),
               "--precision", args.precision, "--entities", str(args.entities),
               "--epochs", str(args.epochs), "--steps", str(args.steps), *(["--tiny"] if args.tiny else [])]
        res = subprocess.run(cmd, capture_output=True, text=True, env=env)
        if res.returncode != 0:
            raise SystemExit(f"stage {name} failed:\n{res.stderr[-3000:]}")
        rows[name] = json.loads(res.stdout.strip().splitlines()[-1])
        print(name, rows[name], flush=True)
    write(rows, s, args)


def write(rows: dict, s: dict, args) -> None:
    prov = provenance()
    memory = "peak allocated on the device" if "CPU" not in device_name() else "peak RSS"
    ft, ev = rows["finetune"], rows["eval"]
    lines = [f"# One accelerator end to end ({'tiny model' if args.tiny else 'SmolLM2-135M-Instruct'})", "",
             f"Device: {device_name()}; training precision {args.precision}; benchmark "
             f"{s['entities']} people x {s['questions']} questions; measured by "
             f"`python benchmarks/gpu.py{' --tiny' if args.tiny else ''}`.", "",
             f"| stage | time | throughput | {memory} MB |", "|---|---|---|---|",
             f"| fine-tune ({s['epochs']} epochs, batch {s['finetune_batch']}) | {ft['seconds']:.1f} s | "
             f"{ft['tokens_per_s']:,.0f} tokens/s | {ft['peak_mb']:.0f} |"]
    for name, label in (("npo_full", "NPO, full weights"), ("npo_lora", "NPO, LoRA")):
        r = rows[name]
        lines.append(f"| {label} ({s['steps']} steps, batch {s['batch']}) | {r['seconds']:.1f} s | "
                     f"{1 / r['s_per_step']:.1f} steps/s | {r['peak_mb']:.0f} |")
    lines += [f"| evaluation (TOFU protocol, 200 new tokens) | {ev['seconds']:.1f} s | "
              f"{ev['items'] / ev['seconds']:.1f} items/s | {ev['peak_mb']:.0f} |", "", line(prov)]
    text = "\n".join(lines) + "\n"
    print(text)
    stem = "gpu-tiny" if args.tiny else "gpu"
    out = Path(args.results)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{stem}.md").write_text(text)
    (out / f"{stem}.json").write_text(json.dumps({"provenance": prov, "settings": s, "rows": rows}, indent=1) + "\n")


if __name__ == "__main__":
    main()
