"""Fine-tuning speed with torch's default threads and with obliviate's, on a quiet machine,
beside a competing process, and when a competing process starts during the run.

    python benchmarks/threads.py [--steps 100] [--repeats 3]

Each run is a fresh process that trains a tiny Llama (4 layers, d=128, batch 16 x 64 tokens,
AdamW) for `--steps` steps after two warm-up steps and reports steps/s. The settings:
- `torch default`: nothing set; torch starts one thread per core and OpenMP's threads spin a
  while when they wait for work.
- `obliviate`: what every obliviate command does: `threads.configure()` at start (the cores
  free then) and a `threads.Governor` ticked every step (the cores free as the run goes on).
- `sleeping waits`: torch's default threads with OMP_WAIT_POLICY=PASSIVE, the other remedy for
  spinning threads, for comparison.
The competitor is another CPU-bound process (a Python busy loop) on one core: `busy` starts it
before the run, `late` right after the run's warm-up (the run has chosen its threads on a quiet
machine). Within each repeat every setting runs in each condition, order alternating between
repeats, so drift in the machine's speed reaches all alike; the medians are reported.
Writes benchmarks/results/threads.md and .json.
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
    "torch default": {"obliviate": False, "env": {}},
    "obliviate": {"obliviate": True, "env": {}},
    "sleeping waits": {"obliviate": False, "env": {"OMP_WAIT_POLICY": "PASSIVE"}},
}
CONDITIONS = ("quiet", "busy", "late")
SCRUB = ("OMP_NUM_THREADS", "OMP_WAIT_POLICY", "MKL_NUM_THREADS", "GOMP_SPINCOUNT")


def child(ours: bool, steps: int) -> None:
    """One timed fine-tuning run. Prints `ready` after the warm-up, waits for a line on stdin
    (the parent starts a late competitor meanwhile), then prints its result as JSON."""
    governor = None
    if ours:
        from obliviate.threads import Governor, configure

        configure()
    import torch

    from obliviate.models import TinyModelConfig, build_tiny_model, train_tokenizer

    tok = train_tokenizer([f"sample text number {i} about rivers and towns" for i in range(50)],
                          vocab_size=512)
    model = build_tiny_model(tok, TinyModelConfig(layers=4, hidden=128, heads=4, intermediate=256))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    ids = torch.randint(0, len(tok), (16, 64), generator=torch.Generator().manual_seed(0))

    def step() -> None:
        if governor is not None:
            governor.tick()
        loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    for _ in range(2):
        step()
    threads_at_start = torch.get_num_threads()
    print("ready", flush=True)
    sys.stdin.readline()
    if ours:
        governor = Governor()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    print(json.dumps({"steps_per_s": steps / (time.perf_counter() - start),
                      "threads": [threads_at_start, torch.get_num_threads()],
                      "changes": governor.changes if governor else []}), flush=True)


def _competitor() -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", "while True: pass"])


def run(setting: str, condition: str, steps: int) -> dict:
    spec = SETTINGS[setting]
    env = {k: v for k, v in os.environ.items() if k not in SCRUB}
    env.update(spec["env"])
    competitor = None
    if condition == "busy":
        competitor = _competitor()
        time.sleep(1.0)  # running before the run chooses its threads
    args = [sys.executable, __file__, "--child", "1" if spec["obliviate"] else "0", "--steps", str(steps)]
    proc = subprocess.Popen(args, env=env, cwd=HERE, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            text=True)
    try:
        assert proc.stdout.readline().strip() == "ready"
        if condition == "late":
            competitor = _competitor()
        proc.stdin.write("go\n")
        proc.stdin.flush()
        out = proc.stdout.read()
        if proc.wait() != 0:
            raise RuntimeError(f"{setting}/{condition} failed")
        return json.loads(out.strip().splitlines()[-1])
    finally:
        if competitor is not None:
            competitor.kill()
            competitor.wait()


def measure(steps: int, repeats: int) -> dict:
    rows: dict[str, dict[str, list[dict]]] = {c: {s: [] for s in SETTINGS} for c in CONDITIONS}
    for r in range(repeats):
        for condition in CONDITIONS:
            order = list(SETTINGS) if r % 2 == 0 else list(reversed(SETTINGS))
            for setting in order:
                rows[condition][setting].append(run(setting, condition, steps))
                print(condition, setting, rows[condition][setting][-1], flush=True)
    return rows


def summarise(rows: dict) -> dict:
    med = {c: {s: statistics.median(x["steps_per_s"] for x in runs) for s, runs in per.items()}
           for c, per in rows.items()}
    threads = {c: {s: sorted({tuple(x["threads"]) for x in runs}) for s, runs in per.items()}
               for c, per in rows.items()}
    return {"median_steps_per_s": med, "threads_start_end": threads}


def write(summary: dict, rows: dict, args, prov: dict) -> None:
    med, thr = summary["median_steps_per_s"], summary["threads_start_end"]
    lines = ["# Threads: torch's default against obliviate's, quiet and beside a competing process",
             "", f"Measured by `python benchmarks/threads.py --steps {args.steps} --repeats {args.repeats}` "
             "(tiny Llama, 4 layers, d=128, batch 16 x 64 tokens, AdamW; median steps/s of the "
             "repeats; the competitor is one CPU-bound process, started before the run (`busy`) or "
             "after its warm-up (`late`); threads as (start, end) of the timed steps).", "",
             "| setting | quiet | busy | late | busy / quiet | late / quiet | threads busy | threads late |",
             "|---|---|---|---|---|---|---|---|"]
    for s in SETTINGS:
        q, b, la = med["quiet"][s], med["busy"][s], med["late"][s]
        lines.append(f"| {s} | {q:.2f} | {b:.2f} | {la:.2f} | {b / q:.2f} | {la / q:.2f} | "
                     f"{thr['busy'][s]} | {thr['late'][s]} |")

    def ratio(c: str, a: str = "obliviate", b: str = "torch default") -> float:
        return med[c][a] / med[c][b]

    lines += ["", f"obliviate / torch default: **{ratio('busy'):.2f}x** beside a competitor started "
              f"first, **{ratio('late'):.2f}x** beside one started during the run, {ratio('quiet'):.2f}x "
              f"on a quiet machine. Sleeping waits instead: {ratio('busy', 'sleeping waits'):.2f}x, "
              f"{ratio('late', 'sleeping waits'):.2f}x and {ratio('quiet', 'sleeping waits'):.2f}x.",
              "", line(prov)]
    (HERE / "results" / "threads.md").write_text("\n".join(lines) + "\n")
    (HERE / "results" / "threads.json").write_text(json.dumps(
        {"provenance": prov, "args": vars(args), "summary": summary, "runs": rows}, indent=1) + "\n")
    print("\n".join(lines))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=100)
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
