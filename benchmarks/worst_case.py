"""Worst-case forget sets (Fan et al. 2024) against random ones of the same size.

    python benchmarks/worst_case.py [--entities 40] [--size 4] [--draws 5] [--steps 30] [--fresh]

One tiny target (the default 4-layer model) learns the built-in benchmark. `select-forget
--worst-case`'s proxy ranks every person by the cosine of their answer-NLL gradient with the
rest's; the top `size` form the worst-case set, and `draws` seeded random draws of the same
size are the comparison. Each set is unlearned the same way (graddiff at its default learning
rate, a fixed step count, the rest as retain data) and measured: the forget set's and the
rest's answer probability before and after. The proxy claims the worst case costs the rest
more for the same budget. Writes benchmarks/results/worst_case.md and .json; runs are cached
in benchmarks/.work/worst_case unless --fresh.
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

from provenance import line, provenance

import obliviate as ob
from obliviate.data.formats import write_jsonl
from obliviate.encoding import encode
from obliviate.methods.base import mean_answer_prob
from obliviate.models import load_model
from obliviate.selection import alignment, choose
from obliviate.train import OptimConfig

HERE = Path(__file__).resolve().parent
WORK = HERE / ".work" / "worst_case"


def _prob(model_dir: Path, items) -> float:
    model, tok = load_model(model_dir)
    return mean_answer_prob(model.eval(), [encode(tok, ex, i) for i, ex in enumerate(items)], tok.pad_token_id)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--entities", type=int, default=40)
    ap.add_argument("--size", type=int, default=4)
    ap.add_argument("--draws", type=int, default=5)
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--fresh", action="store_true")
    args = ap.parse_args()
    if args.fresh:
        shutil.rmtree(WORK, ignore_errors=True)
    WORK.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    bench_dir, target = WORK / "bench", WORK / "target"
    if not bench_dir.exists():
        ob.generate(bench_dir, seed=0, entities=args.entities)
    if not target.exists():
        ob.finetune(ob.FinetuneConfig(benchmark=str(bench_dir)), target, progress=False)
    groups: dict[str, list] = {}
    for ex in ob.load_benchmark(bench_dir).qa_of("all"):
        groups.setdefault(ex.entity, []).append(ex)
    model, tok = load_model(target)
    scores = alignment(model.eval(), tok, groups, "Question: {question}\nAnswer: ")
    del model
    sets = {"worst case": choose(scores, list(groups), args.size, 0),
            **{f"random {k}": choose(None, list(groups), args.size, k) for k in range(args.draws)}}
    rows = []
    for name, chosen in sets.items():
        forget = [ex for n in chosen for ex in groups[n]]
        rest = [ex for n, exs in groups.items() if n not in chosen for ex in exs]
        folder = WORK / name.replace(" ", "-")
        out = folder / "model"
        if not out.exists():
            write_jsonl(folder / "forget.jsonl", forget)
            write_jsonl(folder / "retain.jsonl", rest)
            ob.unlearn(ob.UnlearnConfig(
                model=str(target), method="graddiff", forget=str(folder / "forget.jsonl"),
                retain=str(folder / "retain.jsonl"),
                optim=OptimConfig(lr=None, steps=args.steps, batch_size=32, warmup_ratio=0.0,
                                  schedule="constant")), out, progress=False)
        rows.append({"set": name, "entities": chosen, "alignment": sum(scores[n] for n in chosen) / len(chosen),
                     "forget_before": _prob(target, forget), "forget_after": _prob(out, forget),
                     "rest_before": _prob(target, rest), "rest_after": _prob(out, rest)})
        print(f"{name}: done ({time.perf_counter() - start:.0f} s)", flush=True)
    write(rows, args, scores, time.perf_counter() - start)


def write(rows: list[dict], args, scores: dict[str, float], seconds: float) -> None:
    prov = provenance()
    (HERE / "results" / "worst_case.json").write_text(json.dumps(
        {"provenance": prov, "args": vars(args), "scores": scores, "rows": rows,
         "seconds": round(seconds, 1)}, indent=1))
    randoms = [r for r in rows if r["set"].startswith("random")]
    worst = rows[0]
    drop = {r["set"]: r["rest_before"] - r["rest_after"] for r in rows}
    md = ["# Worst-case forget sets against random ones (Fan et al. 2024)", "",
          f"Built-in benchmark, {args.entities} people; default 4-layer target. Worst case: the "
          f"{args.size} people whose answer-NLL gradient aligns most with the rest's (cosine; "
          f"`select-forget --worst-case`); random: {args.draws} seeded draws of {args.size}. Each "
          f"set unlearned with graddiff at its default learning rate for {args.steps} steps "
          "(batch 32), the rest as retain data. Probabilities: mean p(answer).", "",
          "| set | mean alignment | forget p before | forget p after | rest p before | rest p after | rest drop |",
          "|---|---|---|---|---|---|---|"]
    md += [f"| {r['set']} | {r['alignment']:.3f} | {r['forget_before']:.3f} | {r['forget_after']:.3f} | "
           f"{r['rest_before']:.3f} | {r['rest_after']:.3f} | {drop[r['set']]:.3f} |" for r in rows]
    mean_drop = sum(drop[r["set"]] for r in randoms) / len(randoms)
    md += ["", f"Rest drop: worst case {drop[worst['set']]:.3f}, random mean {mean_drop:.3f} "
           f"(range {min(drop[r['set']] for r in randoms):.3f} to {max(drop[r['set']] for r in randoms):.3f}); "
           f"forget p after: worst case {worst['forget_after']:.3f}, random mean "
           f"{sum(r['forget_after'] for r in randoms) / len(randoms):.3f}.", "",
           f"Took {seconds / 60:.1f} min.", "", line(prov)]
    (HERE / "results" / "worst_case.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
