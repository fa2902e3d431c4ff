"""Structural unlearning (PISTOL-style): does forgetting a better connected company cost its
partners' other contracts more?

    python benchmarks/structural.py [--entities 40] [--degrees 1,2,4,8] [--steps 30] [--fresh]

The built-in generator's graph mode (`obliviate generate --graph`): companies tied by
contracts, one company to forget per degree. One tiny target (the default 4-layer model) learns
every contract; each method then forgets each degree's company with the same budget (its
default learning rate, a fixed step count, batch 32), and the tofu suite measures the forget
set, the retain set and the partners' other contracts (`neighbour_contracts`), with ROUGE-1
and the Deviation Score (LUNAR's: 100 x the distance of (forget ROUGE-1, retain ROUGE-1) from
(0, 1)). Writes benchmarks/results/structural.md and .json; runs are cached in
benchmarks/.work/structural unless --fresh.
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

from provenance import line, provenance

import obliviate as ob
from obliviate.train import OptimConfig

HERE = Path(__file__).resolve().parent
WORK = HERE / ".work" / "structural"
METHODS = ("graddiff", "npo", "rmu")


def _eval(model: Path, bench: Path, split: str, name: str) -> dict:
    path = WORK / f"eval-{name}.json"
    if path.exists():
        return json.loads(path.read_text())
    res = ob.evaluate(ob.EvalConfig(model=str(model), benchmark=str(bench), forget_split=split,
                                    max_retain=300), name=name, progress=False)
    keep = {k: v for k, v in res["metrics"].items() if isinstance(v, float)}
    path.write_text(json.dumps(keep))
    return keep


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--entities", type=int, default=40)
    ap.add_argument("--degrees", default="1,2,4,8")
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--fresh", action="store_true")
    args = ap.parse_args()
    if args.fresh:
        shutil.rmtree(WORK, ignore_errors=True)
    WORK.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    degrees = [int(d) for d in args.degrees.split(",")]
    bench = WORK / "bench"
    if not bench.exists():
        ob.generate(bench, seed=0, entities=args.entities, degrees=tuple(degrees))
    target = WORK / "target"
    if not target.exists():
        ob.finetune(ob.FinetuneConfig(benchmark=str(bench)), target, progress=False)
    rows = []
    for d in degrees:
        split = f"forget_deg{d}"
        rows.append({"degree": d, "method": "target", **_eval(target, bench, split, f"target-{d}")})
        for method in METHODS:
            out = WORK / f"{method}-{d}"
            if not out.exists():
                ob.unlearn(ob.UnlearnConfig(
                    model=str(target), method=method, benchmark=str(bench), forget_split=split,
                    optim=OptimConfig(lr=None, steps=args.steps, batch_size=32, warmup_ratio=0.0,
                                      schedule="constant")), out, progress=False)
            rows.append({"degree": d, "method": method, **_eval(out, bench, split, f"{method}-{d}")})
        print(f"degree {d}: done ({time.perf_counter() - start:.0f} s)", flush=True)
    write(rows, args, time.perf_counter() - start)


def _f(v) -> str:
    return f"{v:.3f}" if isinstance(v, float) else "n/a"


def write(rows: list[dict], args, seconds: float) -> None:
    prov = provenance()
    (HERE / "results" / "structural.json").write_text(json.dumps(
        {"provenance": prov, "steps": args.steps, "rows": rows, "seconds": round(seconds, 1)}, indent=1))
    bench = ob.load_benchmark(WORK / "bench")
    md = ["# Structural unlearning: forgetting cost against connectivity (PISTOL-style)", "",
          f"Graph mode of the built-in generator: {args.entities} companies tied by contracts; "
          "for each degree one company signs exactly that many contracts (3 QA items each) with "
          "the background companies. One tiny target learned every contract; each method forgot "
          f"each company with its default learning rate for {args.steps} steps (batch 32). "
          "Probabilities are TOFU's p(answer); ROUGE-1 recall of greedy answers; the Deviation "
          "Score is LUNAR's (100 x distance of (forget ROUGE-1, retain ROUGE-1) from (0, 1), lower "
          "is better). Partners' contracts: the forgotten company's partners' other contracts "
          "(retained facts one hop away).", "",
          "| degree | forget items | partners' items | method | forget prob | forget ROUGE-1 | "
          "partners' prob | partners' ROUGE-1 | retain ROUGE-1 | Deviation Score |",
          "|" + "---|" * 10]
    for r in rows:
        split = f"forget_deg{r['degree']}"
        md.append(f"| {r['degree']} | {len(bench.forget_set(split))} | {len(bench.linked_set(split))} | "
                  f"{r['method']} | {_f(r.get('forget_prob'))} | {_f(r.get('forget_rouge1_recall'))} | "
                  f"{_f(r.get('neighbour_contracts_prob'))} | {_f(r.get('neighbour_contracts_rouge1_recall'))} | "
                  f"{_f(r.get('retain_rouge1_recall'))} | {_f(r.get('deviation_score'))} |")
    md += ["", f"Took {seconds / 60:.1f} min.", "", line(prov)]
    (HERE / "results" / "structural.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
