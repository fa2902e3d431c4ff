"""Classifier unlearning: every method against retraining, on generated shapes and on
scikit-learn's digits, for random, class-wise, worst-case and one user's forget sets.

    python benchmarks/classifiers.py [--seeds 0,1,2] [--fresh]

Per data set: one target ResNet-8 trained 30 epochs on all training data; per forget set the
oracle is `retrain` (30 epochs on the rest, the target's recipe). Every method starts from the
target at its defaults; its UA, RA, TA and MIA efficacy (Jia et al. 2023's definitions, in
points) are compared with the retrained model's: the average gap, and its run time as a share
of retraining's. Worst-case sets (the gradient-alignment proxy, `worst10`) are compared with
random sets of the same size (`random10`). Writes benchmarks/results/classifiers.md and .json
(a fresh run every time: nothing is cached).
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

import numpy as np
from provenance import line, provenance

from obliviate.classifiers import api, builtin, nets
from obliviate.classifiers.data import load_benchmark
from obliviate.classifiers.methods import CLASSIFIER_METHODS
from obliviate.evaluation.results import derive
from obliviate.threads import configure

HERE = Path(__file__).resolve().parent
WORK = HERE / ".work" / "classifiers"
SPLITS = {"shapes": ("random10", "worst10", "class:triangle", "user:u05"),
          "digits": ("random10", "worst10", "class:3")}
KEYS = (("forget", "ua"), ("retain", "ra"), ("test", "ta"), ("forget", "mia_efficacy"))
TARGET_BUDGET = 0.10  # a method's run time as a share of retraining's
TARGET_GAP = 2.0  # points


def run_split(ds: str, split: str, seed: int, target_dir: Path, bench) -> list[dict]:
    rows, ref = [], None
    for method in ["retrain", *[m for m in CLASSIFIER_METHODS.names() if m != "retrain"]]:
        model, spec, prov = nets.load(target_dir)
        cfg = api.ClassifierUnlearnConfig(model=str(target_dir), benchmark=str(bench.root), split=split,
                                          method=method, seed=seed)
        model, spec, out_prov, _ = api.unlearn_model(cfg, model, spec, prov, bench)
        res = api.evaluate(api.ClassifierEvalConfig(model=str(target_dir), benchmark=str(bench.root), seed=seed),
                           name=method, model=model, spec=spec, prov=out_prov, bench=bench)
        if ref is None:
            ref = res
            ref_path = WORK / f"{ds}-{split.replace(':', '_')}-{seed}-retrain.json"
            ref_path.write_text(json.dumps(res))
        m = derive(res, ref)
        rows.append({"dataset": ds, "split": split, "seed": seed, "method": method,
                     **{f"{k}": res["datasets"][d]["aggregate"][k] for d, k in KEYS},
                     "avg_gap": m["avg_gap"], "seconds": m["run_time"], "time_ratio": m["run_time_ratio"],
                     "forget_n": int(res["datasets"]["forget"]["aggregate"]["n"])})
        print(f"{ds:7s} {split:15s} {method:18s} UA {rows[-1]['ua']:6.2f} RA {rows[-1]['ra']:6.2f} "
              f"TA {rows[-1]['ta']:6.2f} MIA {rows[-1]['mia_efficacy']:6.2f} gap {m['avg_gap']:5.2f} "
              f"time {m['run_time_ratio']:.3f}", flush=True)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", default="0,1,2", help="comma-separated seeds (target, draws, methods)")
    ap.add_argument("--fresh", action="store_true", help="accepted for symmetry: every run is fresh")
    args = ap.parse_args()
    configure()
    shutil.rmtree(WORK, ignore_errors=True)
    WORK.mkdir(parents=True)
    start = time.perf_counter()
    rows: list[dict] = []
    for seed in (int(s) for s in args.seeds.split(",")):
        for ds, splits in SPLITS.items():
            bench_dir, target_dir = WORK / f"{ds}-{seed}", WORK / f"{ds}-{seed}-target"
            builtin.generate(bench_dir, ds, seed)
            api.finetune(api.ClassifierFinetuneConfig(benchmark=str(bench_dir), seed=seed), target_dir)
            bench = load_benchmark(bench_dir)
            for split in splits:
                rows.extend(run_split(ds, split, seed, target_dir, bench))
    write(rows, args, time.perf_counter() - start)


def _mean(rows: list[dict], key: str) -> float:
    return float(np.mean([r[key] for r in rows]))


def _kind(split: str) -> str:
    return split.split(":")[0].rstrip("0123456789")


def _cells(rows: list[dict], ds: str, method: str) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for r in rows:
        if r["dataset"] == ds and r["method"] == method:
            out.setdefault(_kind(r["split"]), []).append(r)
    return out


def overview(rows: list[dict]) -> list[str]:
    """Method x forget-set kind: the mean average gap over seeds, and the run-time share."""
    md = []
    for ds, splits in SPLITS.items():
        kinds = [_kind(s) for s in splits]
        md += [f"### {ds}", "", "| method | " + " | ".join(f"gap, {k}" for k in kinds) + " | time / retrain (max) |",
               "|---|" + "---|" * (len(kinds) + 1)]
        for method in sorted({r["method"] for r in rows if r["dataset"] == ds and r["method"] != "retrain"}):
            cells = _cells(rows, ds, method)
            md.append(f"| {method} | " + " | ".join(f"{_mean(cells[k], 'avg_gap'):.2f}" for k in kinds)
                      + f" | {max(r['time_ratio'] for c in cells.values() for r in c):.3f} |")
        md.append("")
    return md


def summary(rows: list[dict]) -> list[str]:
    """Per data set: the methods within gap and budget, and worst-case vs random sets."""
    out = []
    for ds, splits in SPLITS.items():
        methods = sorted({r["method"] for r in rows if r["dataset"] == ds and r["method"] != "retrain"})
        cells = {m: _cells(rows, ds, m) for m in methods}
        for kind in dict.fromkeys(_kind(s) for s in splits):
            ok = [f"{m} ({_mean(cells[m][kind], 'avg_gap'):.2f})" for m in methods
                  if _mean(cells[m][kind], "avg_gap") <= TARGET_GAP
                  and max(r["time_ratio"] for r in cells[m][kind]) <= TARGET_BUDGET]
            out.append(f"- {ds}, {kind} forgetting: within {TARGET_GAP:g} points of retraining at <= "
                       f"{TARGET_BUDGET:.0%} of its run time: {', '.join(ok) or 'none'}.")
        worse = sum(_mean(cells[m]["worst"], "avg_gap") > _mean(cells[m]["random"], "avg_gap") for m in methods)
        out.append(f"- {ds}, worst-case vs random sets of the same size (10%): mean gap over methods "
                   f"{np.mean([_mean(cells[m]['worst'], 'avg_gap') for m in methods]):.2f} vs "
                   f"{np.mean([_mean(cells[m]['random'], 'avg_gap') for m in methods]):.2f}; larger for "
                   f"{worse} of {len(methods)} methods. Retrained UA on the worst-case set: "
                   f"{_mean([r for r in rows if r['dataset'] == ds and r['method'] == 'retrain' and _kind(r['split']) == 'worst'], 'ua'):.1f} "
                   f"(random: {_mean([r for r in rows if r['dataset'] == ds and r['method'] == 'retrain' and _kind(r['split']) == 'random'], 'ua'):.1f}).")
    return out


def write(rows: list[dict], args, seconds: float) -> None:
    prov = provenance()
    (HERE / "results" / "classifiers.json").write_text(json.dumps(
        {"provenance": prov, "args": vars(args), "rows": rows, "seconds": round(seconds, 1)}, indent=1))
    seeds = sorted({r["seed"] for r in rows})
    md = ["# Classifier unlearning against retraining", "",
          "ResNet-8 targets trained 30 epochs (Adam, lr 2e-3, batch 64) on all training data; the "
          "oracle retrains the same recipe without the forget set. Every other method runs at its "
          "defaults from the target. UA, RA, TA, MIA efficacy in points (Jia et al. 2023); gap = "
          "mean |difference| to the retrained model over those four; time = run time / "
          f"retraining's. Means over seeds {', '.join(map(str, seeds))} (a seed draws the data, the "
          "target, the random forget set and the methods' randomness).", "",
          "## Average gap to retraining", "", *overview(rows), "## Summary", "", *summary(rows), ""]
    for ds, splits in SPLITS.items():
        for split in splits:
            part = [r for r in rows if r["dataset"] == ds and r["split"] == split]
            methods = list(dict.fromkeys(r["method"] for r in part))
            md += [f"## {ds}, {split} ({_mean(part, 'forget_n'):.0f} forget samples on average)", "",
                   "| method | UA | RA | TA | MIA eff. | avg gap | time / retrain |", "|---|---|---|---|---|---|---|"]
            for m in methods:
                rs = [r for r in part if r["method"] == m]
                md.append(f"| {m} | " + " | ".join(f"{_mean(rs, k):.2f}" for k in
                                                     ("ua", "ra", "ta", "mia_efficacy", "avg_gap"))
                          + f" | {_mean(rs, 'time_ratio'):.3f} |")
            md.append("")
    md += [f"Took {seconds / 60:.1f} min.", "", line(prov)]
    (HERE / "results" / "classifiers.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
