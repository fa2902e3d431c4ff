"""Fine-tuning speed with torch's default threads and with obliviate's, on a quiet machine and
beside a competing process.

    python benchmarks/threads.py [--steps 40] [--repeats 3]

Each run is a fresh process that trains a tiny Llama (4 layers, d=128, batch 16 x 64 tokens,
AdamW) for `--steps` steps after two warm-up steps and reports steps/s. The settings:
- `torch default`: nothing set; torch starts one thread per core and OpenMP's threads spin
  while they wait for work.
- `obliviate`: `threads.configure()` as every obliviate command calls it: the cores free at
  start, and waiting threads that sleep instead of spinning (OMP_WAIT_POLICY=PASSIVE).
- `2 threads, spinning` and `2 threads, sleeping`: both with OMP_NUM_THREADS=2, as when a run
  chose its threads on a quiet machine and another job started after it: the wait policy alone.
The competitor is another CPU-bound process (a Python busy loop) on one core. Runs of each
setting alternate within each repeat, so drift in the machine's speed reaches all alike; the
medians are reported. Writes benchmarks/results/threads.md and .json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from provenance import line, provenance

HERE = Path(__file__).resolve().parent
SETTINGS = {
    "torch default": {"configure": False, "env": {}},
    "obliviate": {"configure": True, "env": {}},
    "2 threads, spinning": {"configure": False, "env": {"OMP_NUM_THREADS": "2", "OMP_WAIT_POLICY": "ACTIVE"}},
    "2 threads, sleeping": {"configure": True, "env": {"OMP_NUM_THREADS": "2"}},
}
SCRUB = ("OMP_NUM_THREADS", "OMP_WAIT_POLICY", "MKL_NUM_THREADS", "GOMP_SPINCOUNT")


def child(configure: bool, steps: int) -> None:
    """One timed fine-tuning run; prints its steps/s and thread count as JSON."""
    if configure:
        from obliviate.threads import configure as configure_threads

        configure_threads()
    import torch

    from obliviate.models import TinyModelConfig, build_tiny_model, train_tokenizer

    tok = train_tokenizer([f"sample text number {i} about rivers and towns" for i in range(50)],
                          vocab_size=512)
    model = build_tiny_model(tok, TinyModelConfig(layers=4, hidden=128, heads=4, intermediate=256))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(0, len(tok), (16, 64), generator=gen)

    def step() -> None:
        loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    for _ in range(2):
        step()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    print(json.dumps({"steps_per_s": steps / (time.perf_counter() - start),
                      "threads": torch.get_num_threads(),
                      "wait_policy": os.environ.get("OMP_WAIT_POLICY", "(unset)")}))


def run(setting: str, steps: int) -> dict:
    spec = SETTINGS[setting]
    env = {k: v for k, v in os.environ.items() if k not in SCRUB}
    env.update(spec["env"])
    args = [sys.executable, __file__, "--child", "1" if spec["configure"] else "0", "--steps", str(steps)]
    res = subprocess.run(args, env=env, capture_output=True, text=True, check=True, cwd=HERE)
    return json.loads(res.stdout.strip().splitlines()[-1])


def measure(steps: int, repeats: int) -> dict:
    rows: dict[str, dict[str, list[dict]]] = {c: {s: [] for s in SETTINGS} for c in ("quiet", "busy")}
    for r in range(repeats):
        for condition in ("quiet", "busy"):
            competitor = None
            if condition == "busy":
                competitor = subprocess.Popen([sys.executable, "-c", "while True: pass"])
                time.sleep(1.0)  # let it show as load before the run chooses its threads
            try:
                order = list(SETTINGS) if r % 2 == 0 else list(reversed(SETTINGS))
                for setting in order:
                    rows[condition][setting].append(run(setting, steps))
                    print(condition, setting, rows[condition][setting][-1], flush=True)
            finally:
                if competitor is not None:
                    competitor.kill()
                    competitor.wait()
    return rows


def summarise(rows: dict) -> dict:
    med = {c: {s: statistics.median(x["steps_per_s"] for x in runs) for s, runs in per.items()}
           for c, per in rows.items()}
    threads = {c: {s: sorted({x["threads"] for x in runs}) for s, runs in per.items()}
               for c, per in rows.items()}
    return {"median_steps_per_s": med, "threads": threads}


def write(summary: dict, rows: dict, args, prov: dict) -> None:
    med, thr = summary["median_steps_per_s"], summary["threads"]
    lines = ["# Threads: torch's default against obliviate's choice, quiet and beside a competing process",
             "", f"Measured by `python benchmarks/threads.py --steps {args.steps} --repeats {args.repeats}` "
             "(tiny Llama, 4 layers, d=128, batch 16 x 64 tokens, AdamW; median of the repeats; "
             "the competitor is one CPU-bound process).", "",
             "| setting | threads (quiet / busy) | quiet steps/s | busy steps/s | busy / quiet |",
             "|---|---|---|---|---|"]
    for s in SETTINGS:
        lines.append(f"| {s} | {thr['quiet'][s]} / {thr['busy'][s]} | {med['quiet'][s]:.2f} | "
                     f"{med['busy'][s]:.2f} | {med['busy'][s] / med['quiet'][s]:.2f} |")
    ob, de = med["busy"]["obliviate"], med["busy"]["torch default"]
    sl, sp = med["busy"]["2 threads, sleeping"], med["busy"]["2 threads, spinning"]
    lines += ["", f"Beside a competing process obliviate's threads train **{ob / de:.2f}x** as fast "
              f"as torch's default; quiet, {med['quiet']['obliviate'] / med['quiet']['torch default']:.2f}x. "
              f"With two threads fixed (a competitor that starts after the run chose its threads), "
              f"sleeping waits give {sl / sp:.2f}x the speed of spinning ones.", "", line(prov)]
    (HERE / "results" / "threads.md").write_text("\n".join(lines) + "\n")
    (HERE / "results" / "threads.json").write_text(json.dumps(
        {"provenance": prov, "args": vars(args), "summary": summary, "runs": rows}, indent=1) + "\n")
    print("\n".join(lines))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--child", default=None)
    args = ap.parse_args()
    if args.child is not None:
        child(args.child == "1", args.steps)
        return
    rows = measure(args.steps, args.repeats)
    write(summarise(rows), rows, args, provenance())


if __name__ == "__main__":
    main()
