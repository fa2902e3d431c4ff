"""Leaderboard: every registered method on the built-in benchmark, against the retrain oracle.

    python benchmarks/leaderboard.py [--entities 40] [--work DIR] [--methods a,b] [--no-lora] [--fresh]

Trains the target and the oracle once (forget10), then runs each method with its defaults and
a small learning-rate sweep, full weights and LoRA (methods that leave the weights alone: their
system, one run where no learning rate applies), each run in its own process so its wall time
and peak memory (max RSS) are its own. Every run is evaluated with the TOFU suite against the
oracle. The best run per method and variant (highest forget quality among runs keeping >= 90%
of the oracle's model utility; when none does, the highest utility) then gets its inference
cost measured: greedy generation on the same prompts and batches as the target, interleaved,
tokens/s relative to the target's. Writes benchmarks/results/leaderboard.{md,json}, every run
in the JSON. Finished runs are kept in the work folder and reused unless --fresh.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from provenance import line, provenance

HERE = Path(__file__).resolve().parent
KEYS = ("forget_quality", "model_utility", "forget_prob", "forget_rougeL_recall", "retain_prob")
LR_MULTS = (0.5, 1.0, 2.0)  # x the method's default lr (its LoRA default under LoRA)
UTILITY_FLOOR = 0.9  # fraction of the oracle's model utility a run must keep
# the bar for unlearned systems: forget quality, share of the oracle's utility, overhead
SYSTEM_BAR = (0.3, 0.98, 1.2)
OVERHEAD_REPEATS = 5  # back-to-back pairs per run; the median ratio is kept


def _quiet() -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import transformers

    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()


def worker(args: argparse.Namespace) -> None:
    """One run: unlearn + evaluate, row written to args.row (runs in a child process)."""
    _quiet()
    import obliviate as ob
    from obliviate.evaluation import load_results
    from obliviate.train import OptimConfig

    work = Path(args.work)
    cfg = ob.UnlearnConfig(model=str(work / "target"), method=args.method, benchmark=str(work / "bench"),
                           optim=OptimConfig(lr=args.lr, steps=args.steps, batch_size=32,
                                             warmup_ratio=0.0, schedule="constant"))
    cfg.lora.enabled = args.variant == "lora"  # "system": the method builds its own components
    out = work / "runs" / Path(args.row).stem
    row = {"method": args.method, "variant": args.variant, "lr": args.lr}
    t = time.perf_counter()
    try:
        ob.unlearn(cfg, out, progress=False)
        row["unlearn_seconds"] = round(time.perf_counter() - t, 2)
        # peak RSS of this process so far: loading + unlearning, before evaluation adds its own
        row["unlearn_peak_mib"] = peak_mib()
        res = ob.evaluate(ob.EvalConfig(model=str(out), benchmark=str(work / "bench")),
                          name=args.method, reference=load_results(work / "oracle.json"), progress=False)
        row.update({k: res["metrics"][k] for k in KEYS})
    except ob.ObliviateError as exc:  # a guarded collapse is a result too
        row["error"] = str(exc).split(". ")[0]
    row["peak_mib"] = peak_mib()
    Path(args.row).write_text(json.dumps(row))


def _generation_rate(model, tok, prompts: list[str], batch_size: int = 32, new_tokens: int = 48) -> float:
    """Generated tokens per second of greedy, left-padded, batched generation of exactly
    `new_tokens` per prompt (no end token): both sides decode the same number of steps on the
    same batches, so the ratio is the cost per token, not a difference in answer lengths."""
    import torch

    from obliviate.encoding import Encoded, bos_ids, collate

    ids = [bos_ids(tok, p) + tok.encode(p, add_special_tokens=False) for p in prompts]
    items = [Encoded(x, [-100] * len(x), i) for i, x in enumerate(ids)]
    made, start = 0, time.perf_counter()
    with torch.no_grad():
        for s in range(0, len(items), batch_size):
            b = collate(items[s:s + batch_size], tok.pad_token_id, left_pad=True)
            out = model.generate(input_ids=b["input_ids"], attention_mask=b["attention_mask"],
                                 max_new_tokens=new_tokens, do_sample=False,
                                 pad_token_id=tok.pad_token_id, eos_token_id=None)
            made += out.shape[0] * (out.shape[1] - b["input_ids"].shape[1])
    return made / (time.perf_counter() - start)


def paired_overhead(reference, model, tok, prompts: list[str], repeats: int) -> dict[str, float]:
    """The reference's generation rate over the model's, from back-to-back pairs whose order
    alternates between repeats (drift in the machine's speed cancels within a pair): the
    median ratio and each side's median tokens/s."""
    import statistics

    runs: dict[str, list[float]] = {"ratio": [], "reference": [], "model": []}
    for rep in range(repeats):
        pair = [("reference", reference), ("model", model)]
        for side, m in (pair if rep % 2 == 0 else pair[::-1]):
            runs[side].append(_generation_rate(m, tok, prompts))
        runs["ratio"].append(runs["reference"][-1] / runs["model"][-1])
    return {k: statistics.median(v) for k, v in runs.items()}


def overhead(args: argparse.Namespace) -> None:
    """Inference cost of one run's output against the target it came from: the same prompts
    (forget and retain questions), paired repeats (runs in a child)."""
    _quiet()
    from obliviate.data import Benchmark
    from obliviate.encoding import DEFAULT_TEMPLATE, prompt_text
    from obliviate.systems import load_any

    work = Path(args.work)
    bench = Benchmark.load(work / "bench")
    target, tok = load_any(work / "target")
    model, _ = load_any(work / "runs" / Path(args.row).stem)
    target.eval(), model.eval()
    questions = [ex.question for ex in bench.forget_set("") + bench.retain_set("")[:64]]
    prompts = [prompt_text(q, DEFAULT_TEMPLATE, tok) for q in questions]
    _generation_rate(model, tok, prompts[:8])  # warm-up: first-call allocations on both
    _generation_rate(target, tok, prompts[:8])
    got = paired_overhead(target, model, tok, prompts, OVERHEAD_REPEATS)
    row = json.loads(Path(args.row).read_text())
    row["tokens_per_s"] = {"target": round(got["reference"], 1), "model": round(got["model"], 1)}
    row["inference_overhead"] = round(got["ratio"], 3)
    Path(args.row).write_text(json.dumps(row))


def peak_mib() -> float:
    """Peak resident memory of this process image (VmHWM). Not getrusage's ru_maxrss: across
    fork and exec a child inherits its parent's maximum, and the parent here has trained the
    target and the oracle, so every run would report at least the parent's peak."""
    for entry in Path("/proc/self/status").read_text().splitlines():
        if entry.startswith("VmHWM:"):
            return round(int(entry.split()[1]) / 1024, 1)
    return float("nan")


def _run_child(argv: list[str]) -> float:
    """Wall seconds of a child process (which records its own peak memory)."""
    start = time.perf_counter()
    res = subprocess.run([sys.executable, __file__, *argv])
    if res.returncode:
        raise RuntimeError(f"child failed ({res.returncode}): {argv}")
    return time.perf_counter() - start


def prepare(work: Path, entities: int, seed: int) -> dict:
    _quiet()
    import obliviate as ob
    from obliviate.evaluation import derive, load_results, save_results

    if not (work / "bench").exists():
        ob.generate(work / "bench", seed=seed, entities=entities)
    for role in ("target", "oracle"):
        if not (work / role).exists():
            ob.finetune(ob.FinetuneConfig(benchmark=str(work / "bench"), role=role, seed=seed),
                        work / role, progress=False)
    if not (work / "oracle.json").exists():
        res = ob.evaluate(ob.EvalConfig(model=str(work / "oracle"), benchmark=str(work / "bench")),
                          name="oracle", progress=False)
        res["metrics"] = derive(res, res)
        save_results(res, work / "oracle.json")
    oracle = load_results(work / "oracle.json")
    target = ob.evaluate(ob.EvalConfig(model=str(work / "target"), benchmark=str(work / "bench")),
                         name="target", reference=oracle, progress=False)
    return {name: {k: r["metrics"][k] for k in KEYS} for name, r in
            (("oracle", oracle), ("target", target))}


def best(runs: list[dict], oracle_mu: float) -> dict:
    ok = [r for r in runs if "error" not in r]
    if not ok:
        return runs[0]
    kept = [r for r in ok if r["model_utility"] >= UTILITY_FLOOR * oracle_mu]
    if kept:
        return max(kept, key=lambda r: (r["forget_quality"], r["model_utility"]))
    return max(ok, key=lambda r: r["model_utility"])


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.2e}" if v and abs(v) < 1e-2 else f"{v:.3f}"
    return str(v)


def _ratio(r: dict) -> str:
    return f"{r['inference_overhead']:.2f}" if "inference_overhead" in r else ""


def _row_line(r: dict, oracle_mu: float) -> str:
    if "error" in r:
        return (f"| {r['method']} | {r['variant']} | {r['lr']:.3g} | every lr stopped: "
                f"{r['error']} | | | | | | | | |")
    return (f"| {r['method']} | {r['variant']} | {r['lr']:.3g} | {_fmt(r['forget_quality'])} | "
            f"{_fmt(r['model_utility'])} | {100 * r['model_utility'] / oracle_mu:.0f} | "
            f"{_fmt(r['forget_prob'])} | {_fmt(r['forget_rougeL_recall'])} | "
            f"{_fmt(r['retain_prob'])} | {r['unlearn_seconds']:.1f} | {r['unlearn_peak_mib']:.0f} | "
            f"{_ratio(r)} |")


def _system_bar(ok: list[dict], utility: float) -> list[dict]:
    fq, mu, cost = SYSTEM_BAR
    return [r for r in ok if r["variant"] == "system" and r["forget_quality"] >= fq
            and r["model_utility"] >= mu * utility and r.get("inference_overhead", 9) <= cost]


def _summary(chosen: list[dict], rows: list[dict], refs: dict) -> list[str]:
    oracle_mu, target_mu = refs["oracle"]["model_utility"], refs["target"]["model_utility"]
    ok = [r for r in chosen if "error" not in r]
    hits = [r for r in ok if r["forget_quality"] >= 0.05 and r["model_utility"] >= UTILITY_FLOOR * oracle_mu]
    fq, mu, cost = SYSTEM_BAR
    names = lambda rs: ", ".join(f"{r['method']} ({r['variant']})" for r in rs) or "none"  # noqa: E731
    lines = ["", f"Runs reaching forget quality >= 0.05 at >= {UTILITY_FLOOR:.0%} of the oracle's "
             f"utility: {names(hits)}.",
             f"Unlearned systems reaching forget quality >= {fq} at >= {mu:.0%} of the oracle's "
             f"utility with an inference overhead <= {cost}x: {names(_system_bar(ok, oracle_mu))}."]
    if target_mu < mu * oracle_mu:
        # a gated system answers every question its gate lets pass as the target does
        lines.append(f"The target itself keeps {100 * target_mu / oracle_mu:.0f}% of the oracle's "
                     "utility, below that bar, and a system whose gate stays shut outside the "
                     "forget set has the target's utility at best. The same bar against the "
                     f"target's utility: {names(_system_bar(ok, target_mu))}.")
    return lines + [f"{len(rows)} runs, {sum(r['wall_seconds'] for r in rows):.0f} s of wall time "
                    "in all (each run: process start, unlearning, evaluation)."]


def write(out_dir: Path, refs: dict, rows: list[dict], meta: dict) -> None:
    oracle_mu = refs["oracle"]["model_utility"]
    lines = ["# Leaderboard: built-in benchmark, forget10", "",
             f"{meta['entities']} fictitious people, 4-layer tiny Llama, {meta['steps']} unlearning "
             f"steps of batch 32, 2-core CPU. Best run per method and variant: highest forget "
             f"quality among runs keeping >= {UTILITY_FLOOR:.0%} of the oracle's model utility "
             "(else the highest utility). Variant: full weights, LoRA, or *system* (the weights "
             "stay; the method saves the base plus its components). lr: the chosen learning rate; "
             "MU %: model utility relative to the oracle's. Time: unlearning alone (load to save); "
             "peak memory: max RSS of the process through unlearning (Python, torch and the model "
             "included; evaluation comes after). Inference x: the target's generation rate "
             "divided by the run's (greedy, exactly 48 new tokens, batch 32, the forget and 64 "
             f"retain questions, median ratio of {OVERHEAD_REPEATS} back-to-back pairs, order alternating; 1.00 = as fast "
             "as the target's own `generate`).", "",
             "| method | variant | lr | forget quality | model utility | MU % | forget prob | "
             "forget ROUGE-L | retain prob | time s | peak MiB | inference x |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for name in ("oracle", "target"):
        r = refs[name]
        lines.append(f"| **{name}** | | | {_fmt(r['forget_quality'])} | {_fmt(r['model_utility'])} | "
                     f"{100 * r['model_utility'] / oracle_mu:.0f} | {_fmt(r['forget_prob'])} | "
                     f"{_fmt(r['forget_rougeL_recall'])} | {_fmt(r['retain_prob'])} | | | |")
    chosen = _chosen(rows, oracle_mu)
    lines += [_row_line(r, oracle_mu) for r in chosen]
    lines += _summary(chosen, rows, refs)
    prov = provenance()
    lines += ["", line(prov)]
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "leaderboard.md").write_text("\n".join(lines) + "\n")
    (out_dir / "leaderboard.json").write_text(json.dumps(
        {"provenance": prov, "meta": meta, "reference": refs, "best": chosen, "runs": rows},
        indent=1) + "\n")


def _plan(cls, no_lora: bool, default_lr) -> list[tuple[str, float]]:
    """(variant, lr) runs of a method: full weights and LoRA over the lr sweep; a method that
    builds an unlearned system runs as "system", once where it fits without a learning rate."""
    mults = (1.0,) if hasattr(cls, "fit") else LR_MULTS
    if getattr(cls, "system", None):
        return [("system", default_lr(cls(), False) * m) for m in mults]
    # a method that fits without an optimiser (SLUG, concept-vector ablation) runs once, and
    # on full weights only: its edit is on the model's own matrices
    variants = ("full",) if no_lora or hasattr(cls, "fit") or getattr(cls, "full_weights", False) else ("full", "lora")
    return [(v, default_lr(cls(), v == "lora") * m) for v in variants for m in mults]


def _row_path(work: Path, method: str, variant: str, lr: float) -> Path:
    return work / "rows" / f"{method}-{variant}-{lr:.1e}.json"


def _run(work: Path, method: str, variant: str, lr: float, args: argparse.Namespace) -> dict:
    """One run in a child process (or its recorded row, resuming without --fresh)."""
    import shutil

    row_path = _row_path(work, method, variant, lr)
    row_path.parent.mkdir(exist_ok=True)
    if row_path.exists() and not args.fresh:
        return json.loads(row_path.read_text())
    run_dir = work / "runs" / row_path.stem
    for d in (run_dir, run_dir.with_name(run_dir.name + ".last-good")):
        if d.exists():
            shutil.rmtree(d)
    wall = _run_child(["--worker", "--work", str(work), "--method", method, "--variant", variant,
                       "--lr", str(lr), "--steps", str(args.steps), "--row", str(row_path)])
    row = json.loads(row_path.read_text()) | {"wall_seconds": round(wall, 1)}
    row_path.write_text(json.dumps(row))
    print(json.dumps(row), flush=True)
    return row


def _chosen(rows: list[dict], oracle_mu: float) -> list[dict]:
    """The best run of each (method, variant), best first."""
    groups: dict[tuple[str, str], list[dict]] = {}
    for r in rows:
        groups.setdefault((r["method"], r["variant"]), []).append(r)
    return sorted((best(g, oracle_mu) for g in groups.values()),
                  key=lambda r: (r.get("model_utility", 0) >= UTILITY_FLOOR * oracle_mu,
                                 r.get("forget_quality", -1)), reverse=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", default=str(HERE / ".work" / "leaderboard"))
    ap.add_argument("--out", default=None, help="default: benchmarks/results for a full run, "
                    "the work folder for a --methods subset (the recorded board stays whole)")
    ap.add_argument("--entities", type=int, default=40)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--methods", default="")
    ap.add_argument("--no-lora", action="store_true")
    ap.add_argument("--fresh", action="store_true", help="rerun runs whose results exist")
    # worker mode (internal)
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--overhead", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--method", help=argparse.SUPPRESS)
    ap.add_argument("--variant", help=argparse.SUPPRESS)
    ap.add_argument("--lr", type=float, help=argparse.SUPPRESS)
    ap.add_argument("--row", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        return worker(args)
    if args.overhead:
        return overhead(args)

    start = time.perf_counter()
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    refs = prepare(work, args.entities, args.seed)
    from obliviate.methods import METHODS
    from obliviate.unlearning import default_lr

    # the leaderboard's subject is a dense Llama: methods for other architectures (UOE needs
    # experts) have their own benchmark (benchmarks/deep.py)
    methods = args.methods.split(",") if args.methods else [
        m for m in METHODS.names() if getattr(METHODS.get(m), "architecture", "") == ""]
    rows = []
    for method in methods:
        for variant, lr in _plan(METHODS.get(method), args.no_lora, default_lr):
            rows.append(_run(work, method, variant, lr, args))
    oracle_mu = refs["oracle"]["model_utility"]
    for chosen in _chosen(rows, oracle_mu):
        if "error" not in chosen and ("inference_overhead" not in chosen or args.fresh):
            row_path = _row_path(work, chosen["method"], chosen["variant"], chosen["lr"])
            _run_child(["--overhead", "--work", str(work), "--row", str(row_path)])
            chosen.update(json.loads(row_path.read_text()))
            print(chosen["method"], chosen["variant"], "overhead", chosen["inference_overhead"], flush=True)
    meta = {"entities": args.entities, "seed": args.seed, "steps": args.steps,
            "lr_multipliers": LR_MULTS, "seconds": time.perf_counter() - start}
    out = Path(args.out or (work / "partial" if args.methods else HERE / "results"))
    write(out, refs, rows, meta)
    print((out / "leaderboard.md").read_text())


if __name__ == "__main__":
    main()
