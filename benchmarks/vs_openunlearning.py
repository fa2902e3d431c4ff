"""obliviate side by side with OpenUnlearning: evaluation speed at identical numbers, NPO step
time and peak memory.

    python benchmarks/vs_openunlearning.py [--pairs 3] [--steps 30,300] [--smollm2-steps 8]
        [--ou-venv DIR] [--fresh] [--skip-smollm2]

The peer is OpenUnlearning at the commit in ../shared/peers/open-unlearning/ (its source
archive). It runs from its own venv outside the repository (`--ou-venv`, default
~/.cache/obliviate-bench/ou-venv, built on first use: torch 2.13.0 CPU, then the peer's own
transformers pin, 4.45.1, and the rest of its requirements) and never imports anything of ours;
it reads the same files.

Data: the built-in benchmark at TOFU's shape (80 people x 20 questions, seed 0), exported in
TOFU's layout (a folder named `locuslab/TOFU` with one JSON-lines file per config, and a dataset
card listing them, which is what OpenUnlearning's `load_dataset` reads offline): forget10 and
holdout10 (160 items each), retain_perturbed (the first 400 retain items), retain90 (all, for
unlearning), and TOFU's own real-authors (100) and world-facts (117) sets from
../shared/reference/tofu/. Model: a 0.79M-parameter Llama (obliviate's tiny model) fine-tuned on
the benchmark, saved by obliviate (the folder loads in transformers 4.45 and 5.x alike: this run
is the check that it does).

Evaluation: OpenUnlearning's `eval=tofu` and `obliviate eval --preset tofu` with the same sets,
template, batch 32 and 200 new tokens, float32 on the CPU, in alternating order (`--pairs`
pairs). The time is the evaluation inside each process (model loading excluded on both sides;
OpenUnlearning's through a wrapper around its evaluator); whole-process times are reported too.
Agreement: OpenUnlearning's per-item values, read with `obliviate import`, against ours on every
metric both compute, and the generations themselves.

Unlearning: NPO (beta 0.1, NLL retain term, alpha 1), batch 8 forget + 8 retain, lr 1e-5, no
warm-up, weight decay 0.01, AdamW, the collapse guard off, at each of `--steps`. Time per step =
(T_long - T_short) / (long - short) steps from each tool's own training-loop time, so start-up
costs cancel; then the same run on SmolLM2-135M-Instruct (saved as a plain folder first) for
peak resident memory (each process's own, from wait4), with obliviate's GA beside it.

Writes benchmarks/results/vs_openunlearning.md and .json. Stages are cached in
benchmarks/.work/vs_openunlearning (--fresh starts over).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tarfile
import time
from pathlib import Path

from provenance import line, provenance

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
SHARED = ROOT.parent / "shared"
PEER = SHARED / "peers" / "open-unlearning" / "open-unlearning-d3d7cf9.tar.gz"
WORK = HERE / ".work" / "vs_openunlearning"
TEMPLATE = "Question: {question}\nAnswer:\n"  # ends in a newline: both tools tokenize it alike
# the peer's own transformers pin (4.45.1): its trainers' compute_loss predates the keyword
# newer releases pass; evaluation runs on it too
OU_PINS = ["transformers==4.45.1", "huggingface-hub>=0.30,<1.0", "numpy==2.2.3", "hydra-core==1.3",
           "hydra_colorlog==1.2.0", "datasets==3.0.1", "accelerate==0.34.2", "rouge-score==0.1.2",
           "scipy==1.14.1", "scikit-learn==1.5.2"]
OU_LATE = ["deepspeed==0.15.4", "lm-eval==0.4.8"]  # imported unconditionally by its trainer
CONFIGS = ("forget10", "forget10_perturbed", "holdout10", "retain90", "retain_perturbed",
           "real_authors_perturbed", "world_facts_perturbed")
OFFLINE = {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
           "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": "2"}
# OpenUnlearning per-item key -> (our dataset, our per-item key), for the agreement table
SHARED_KEYS = {"prob", "rougeL_recall", "truth_ratio"}

# Run inside OpenUnlearning's venv: its eval.py, with the evaluator's evaluate() timed.
EVAL_DRIVER = '''
import os, runpy, sys, time
script = sys.argv[1]
sys.argv = sys.argv[1:]
sys.path.insert(0, os.path.dirname(script))
import evals.base as base
inner = base.Evaluator.evaluate
def timed(self, *a, **kw):
    start = time.perf_counter()
    try:
        return inner(self, *a, **kw)
    finally:
        print("EVAL_SECONDS", time.perf_counter() - start, flush=True)
base.Evaluator.evaluate = timed
runpy.run_path(script, run_name="__main__")
'''


def sh(cmd: list[str], cwd: Path | None = None, env: dict | None = None) -> tuple[str, float, float]:
    """Run a command; (output, wall seconds, the process's own peak RSS in MB)."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=cwd, env={**os.environ, **OFFLINE, **(env or {})},
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    out = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"failed: {' '.join(map(str, cmd))}\n{out[-4000:]}")
    return out, wall, usage.ru_maxrss / 1024


def obliviate(*args: str) -> tuple[str, float, float]:
    return sh([sys.executable, "-m", "obliviate.cli", *args])


# ------------------------------------------------------------------------------ peer setup
def peer(venv: Path) -> tuple[Path, Path]:
    """OpenUnlearning's source (unpacked under .work) and its venv's python, built if missing."""
    src = WORK / "open-unlearning"
    if not (src / "src" / "eval.py").is_file():
        WORK.mkdir(parents=True, exist_ok=True)
        with tarfile.open(PEER) as tar:
            tar.extractall(WORK, filter="data")
    py = venv / "bin" / "python"
    if not (venv / ".ready").exists():
        print(f"building OpenUnlearning's venv at {venv} (a few minutes, needs the package index)")
        subprocess.run(["python3.11", "-m", "venv", str(venv)], check=True)
        pip = [str(py), "-m", "pip", "install", "-q"]
        subprocess.run([*pip, "torch==2.13.0"], check=True)
        subprocess.run([*pip, *OU_PINS], check=True)
        subprocess.run([*pip, *OU_LATE], check=True, env={**os.environ, "DS_BUILD_OPS": "0"})
        (venv / ".ready").write_text("ok\n")
    (WORK / "driver.py").write_text(EVAL_DRIVER)
    return src, py


def peer_model_config(folder: Path, name: str, bos: str) -> Path:
    """A model config for OpenUnlearning (found through hydra.searchpath): our folder, float32,
    eager attention on the CPU, and our template as its tags (the BOS token's text first,
    since our tokenizers add none themselves)."""
    cfg = WORK / "ou_configs" / "model"
    cfg.mkdir(parents=True, exist_ok=True)
    tags = {"apply_chat_template": False, "system_prompt_with_special_tokens": bos,
            "user_start_tag": "Question: ", "user_end_tag": "\n", "asst_start_tag": "Answer:\n",
            "asst_end_tag": ""}
    text = {"model_args": {"pretrained_model_name_or_path": str(folder), "attn_implementation": "eager",
                           "torch_dtype": "float32", "device_map": "cpu"},
            "tokenizer_args": {"pretrained_model_name_or_path": str(folder)}, "template_args": tags}
    (cfg / f"{name}.yaml").write_text(json.dumps(text, indent=1))  # JSON is YAML
    return cfg.parent


# ------------------------------------------------------------------------------ data, model
def export(bench: Path) -> Path:
    """The benchmark in TOFU's layout for both tools; returns the folder holding locuslab/."""
    import obliviate as ob
    from obliviate.data.formats import load_examples, write_jsonl

    root = WORK / "data"
    tofu = root / "locuslab" / "TOFU"
    if (tofu / "README.md").is_file():
        return root
    tofu.mkdir(parents=True, exist_ok=True)
    b = ob.load_benchmark(bench)
    forget, retain = b.forget_set("forget10"), b.retain_set("forget10")
    sets = {"forget10": forget, "forget10_perturbed": forget, "holdout10": b.holdout_set(),
            "retain90": retain, "retain_perturbed": retain[:400],
            "real_authors_perturbed": load_examples(SHARED / "reference/tofu/real_authors_perturbed.json"),
            "world_facts_perturbed": load_examples(SHARED / "reference/tofu/world_facts_perturbed.json")}
    card = ["---", "configs:"]
    for name in CONFIGS:
        write_jsonl(tofu / f"{name}.jsonl", sets[name])
        card += [f"- config_name: {name}", "  data_files:", "  - split: train", f"    path: {name}.jsonl"]
    (tofu / "README.md").write_text("\n".join([*card, "---", ""]))
    return root


def target_model(bench: Path) -> Path:
    out = WORK / "target"
    if not (out / "config.json").is_file():
        obliviate("finetune", "--out", str(out), f"benchmark={bench}", f"template={TEMPLATE}", "epochs=30")
    return out


# ------------------------------------------------------------------------------ evaluation
def eval_peer(src: Path, py: Path, data: Path, model_cfg: Path, tag: str) -> dict:
    out = WORK / "eval_peer" / tag
    shutil.rmtree(out, ignore_errors=True)
    cache = WORK / "hf_cache" / tag  # a fresh datasets cache per run: no stale data
    shutil.rmtree(cache, ignore_errors=True)
    text, wall, rss = sh([str(py), str(WORK / "driver.py"), str(src / "src" / "eval.py"),
                          "model=obliviate_tiny", "eval=tofu", f"task_name={tag}",
                          f"hydra.searchpath=[file://{model_cfg}]", "model.model_args.device_map=cpu",
                          "eval.tofu.forget_split=forget10", "eval.tofu.holdout_split=holdout10",
                          "eval.tofu.batch_size=32", "eval.tofu.overwrite=true",
                          f"paths.output_dir={out}"], cwd=data, env={"HF_DATASETS_CACHE": str(cache)})
    seconds = sum(float(x) for x in re.findall(r"EVAL_SECONDS ([0-9.]+)", text))
    return {"eval_s": seconds, "process_s": wall, "peak_rss_mb": rss, "log": str(out / "TOFU_EVAL.json")}


def eval_ours(model: Path, data: Path, tag: str) -> dict:
    tofu = data / "locuslab" / "TOFU"
    out = WORK / "eval_ours" / f"{tag}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.unlink(missing_ok=True)
    for name, src in (("forget", "forget10_perturbed"), ("retain", "retain_perturbed"),
                      ("holdout", "holdout10"), ("real_authors", "real_authors_perturbed"),
                      ("world_facts", "world_facts_perturbed")):
        link = WORK / "ours_sets" / f"{name}.jsonl"  # file stems name our datasets
        link.parent.mkdir(parents=True, exist_ok=True)
        if not link.exists():
            link.symlink_to(tofu / f"{src}.jsonl")
    sets = WORK / "ours_sets"
    _, wall, rss = obliviate("eval", "--out", str(out), "--preset", "tofu", f"model={model}",
                             f"forget={sets / 'forget.jsonl'}", f"retain={sets / 'retain.jsonl'}",
                             f"holdout={sets / 'holdout.jsonl'}",
                             f"utility=[{sets / 'real_authors.jsonl'},{sets / 'world_facts.jsonl'}]",
                             "suites=[tofu,mia]", "batch_size=32", f"template={TEMPLATE}")
    res = json.loads(out.read_text())
    return {"eval_s": res["timing"]["eval_seconds"], "process_s": wall, "peak_rss_mb": rss, "log": str(out)}


def agreement(ours_path: str, peer_path: str) -> dict:
    """Largest |difference| per (dataset, metric) between the tools' per-item values, and how
    many generations are identical."""
    from obliviate.evaluation.interop import import_openunlearning

    ours = json.loads(Path(ours_path).read_text())
    theirs = import_openunlearning(peer_path)
    rows = {}
    for name, d in theirs["datasets"].items():
        mine = ours["datasets"].get(name, {}).get("per_item", {})
        for key, values in d["per_item"].items():
            if key in SHARED_KEYS and key in mine:
                a = [float(v) for v in values]
                b = [float(v) for v in mine[key]]
                if len(a) == len(b):
                    pairs = list(zip(a, b, strict=True))
                    rows[f"{name}/{key}"] = {
                        "n": len(a), "max_abs_diff": max(abs(x - y) for x, y in pairs),
                        # truth ratios run to the hundreds: their relative difference says more
                        "max_rel_diff": max(abs(x - y) / max(abs(x), abs(y), 1e-12) for x, y in pairs)}
    log = json.loads(Path(peer_path).read_text())
    same = total = 0
    for metric, (name, _) in {"forget_Q_A_ROUGE": ("forget", 0), "retain_Q_A_ROUGE": ("retain", 0),
                              "ra_Q_A_ROUGE": ("real_authors", 0), "wf_Q_A_ROUGE": ("world_facts", 0)}.items():
        gens = [v["generation"] for _, v in sorted(log[metric]["value_by_index"].items(), key=lambda kv: int(kv[0]))]
        mine = ours["datasets"][name]["per_item"].get("generation", [])
        total += len(gens)
        same += sum(a.strip() == b.strip() for a, b in zip(gens, mine, strict=False))
    return {"per_metric": rows, "generations_identical": same, "generations": total}


# ------------------------------------------------------------------------------ unlearning
def npo_peer(src: Path, py: Path, data: Path, model_cfg: Path, name: str, steps: int, tag: str,
             folder: Path) -> dict:
    out = WORK / "npo_peer" / tag
    shutil.rmtree(out, ignore_errors=True)
    cache = WORK / "hf_cache" / f"npo-{tag}"
    shutil.rmtree(cache, ignore_errors=True)
    text, wall, rss = sh([str(py), str(src / "src" / "train.py"), "--config-name=unlearn.yaml",
                          "experiment=unlearn/tofu/default", "trainer=NPO", f"model={name}",
                          # the experiment names a hub model: ours, as a path, instead
                          f"model.model_args.pretrained_model_name_or_path={folder}",
                          f"model.tokenizer_args.pretrained_model_name_or_path={folder}",
                          f"task_name={tag}", f"hydra.searchpath=[file://{model_cfg}]",
                          "forget_split=forget10", "retain_split=retain90", "holdout_split=holdout10",
                          "trainer.args.per_device_train_batch_size=8",
                          "trainer.args.gradient_accumulation_steps=1", f"+trainer.args.max_steps={steps}",
                          "trainer.args.learning_rate=1e-5", "trainer.args.weight_decay=0.01",
                          "trainer.args.warmup_epochs=0", "trainer.args.bf16=false",
                          "trainer.args.bf16_full_eval=false", "trainer.args.optim=adamw_torch",
                          "trainer.args.eval_strategy=no", "trainer.args.eval_on_start=false",
                          "trainer.args.do_eval=false", "trainer.args.report_to=none",
                          "+trainer.args.use_cpu=true", "trainer.args.logging_steps=1000",
                          f"paths.output_dir={out}"], cwd=data, env={"HF_DATASETS_CACHE": str(cache)})
    found = re.findall(r"'train_runtime': ([0-9.]+)", text)
    if not found:
        raise SystemExit(f"no train_runtime in OpenUnlearning's output:\n{text[-3000:]}")
    shutil.rmtree(out, ignore_errors=True)  # the saved model is not needed
    return {"train_s": float(found[-1]), "process_s": wall, "peak_rss_mb": rss}


def unlearn_ours(model: Path, data: Path, method: str, steps: int, tag: str) -> dict:
    tofu = data / "locuslab" / "TOFU"
    out = WORK / "unlearn_ours" / tag
    shutil.rmtree(out, ignore_errors=True)
    _, wall, rss = obliviate("unlearn", "--out", str(out), f"model={model}", f"method={method}",
                             f"forget={tofu / 'forget10.jsonl'}", f"retain={tofu / 'retain90.jsonl'}",
                             f"template={TEMPLATE}", f"optim.steps={steps}", "optim.batch_size=8",
                             "optim.lr=1e-5", "optim.weight_decay=0.01", "guard.retain_floor=0",
                             "guard.forget_stop=0", "guard.keep_last_good=false")
    prov = json.loads((out / "obliviate.json").read_text())
    shutil.rmtree(out, ignore_errors=True)
    return {"train_s": prov["train_seconds"], "process_s": wall, "peak_rss_mb": rss}


def per_step(short: dict, long: dict, s: int, n: int) -> float:
    return (long["train_s"] - short["train_s"]) / (n - s)


# ------------------------------------------------------------------------------ main
def run_eval(src, py, data, model, cfg, pairs: int) -> dict:
    runs = {"peer": [], "ours": []}
    for i in range(pairs):
        for side in (("peer", "ours") if i % 2 == 0 else ("ours", "peer")):
            r = (eval_peer(src, py, data, cfg, f"pair{i}") if side == "peer"
                 else eval_ours(model, data, f"pair{i}"))
            runs[side].append(r)
            print(f"eval {side} pair {i}: {r['eval_s']:.1f} s in the evaluator, "
                  f"{r['process_s']:.1f} s in all", flush=True)
    agree = agreement(runs["ours"][-1]["log"], runs["peer"][-1]["log"])
    ratios = [p["eval_s"] / o["eval_s"] for p, o in zip(runs["peer"], runs["ours"], strict=True)]
    whole = [p["process_s"] / o["process_s"] for p, o in zip(runs["peer"], runs["ours"], strict=True)]
    return {"runs": runs, "speedup": statistics.median(ratios), "speedups": ratios,
            "process_speedup": statistics.median(whole), "agreement": agree}


def run_npo(src, py, data, model, cfg, steps: tuple[int, int], pairs: int) -> dict:
    short, long = steps
    runs: dict[str, list] = {"peer": [], "ours": []}
    for i in range(pairs):
        for side in (("peer", "ours") if i % 2 == 0 else ("ours", "peer")):
            pair = {}
            for n in (short, long):
                pair[n] = (npo_peer(src, py, data, cfg, "obliviate_tiny", n, f"tiny{i}-{n}", model) if side == "peer"
                           else unlearn_ours(model, data, "npo", n, f"tiny{i}-{n}"))
            step = per_step(pair[short], pair[long], short, long)
            runs[side].append({"runs": pair, "step_s": step})
            print(f"npo {side} pair {i}: {1 / step:.1f} steps/s", flush=True)
    ratios = [p["step_s"] / o["step_s"] for p, o in zip(runs["peer"], runs["ours"], strict=True)]
    return {"runs": runs, "speedup": statistics.median(ratios), "speedups": ratios}


def smollm2_folder() -> Path:
    out = WORK / "smollm2"
    if not (out / "config.json").is_file():
        code = ("from obliviate.models import load_model, save_model; "
                f"m, t = load_model('smollm2'); save_model(m, t, {str(out)!r}, {{'produced_by': 'benchmark'}})")
        sh([sys.executable, "-c", code])
    return out


def run_memory(src, py, data, steps: int) -> dict:
    from transformers import AutoTokenizer

    folder = smollm2_folder()
    bos = AutoTokenizer.from_pretrained(folder).bos_token or ""
    cfg = peer_model_config(folder, "obliviate_smollm2", bos)
    rows = {"peer npo": npo_peer(src, py, data, cfg, "obliviate_smollm2", steps, "smollm2", folder),
            "ours npo": unlearn_ours(folder, data, "npo", steps, "smollm2-npo"),
            "ours ga": unlearn_ours(folder, data, "ga", steps, "smollm2-ga")}
    for k, v in rows.items():
        print(f"smollm2 {k}: peak RSS {v['peak_rss_mb']:.0f} MB", flush=True)
    return {"runs": rows, "ours_vs_peer": rows["ours npo"]["peak_rss_mb"] / rows["peer npo"]["peak_rss_mb"],
            "npo_vs_ga": rows["ours npo"]["peak_rss_mb"] / rows["ours ga"]["peak_rss_mb"]}


def write(res: dict, args, prov: dict) -> None:
    ev, npo = res["eval"], res["npo"]
    agree = ev["agreement"]
    worst = max((r["max_rel_diff"] for r in agree["per_metric"].values()), default=float("nan"))
    med = {side: statistics.median(r["eval_s"] for r in ev["runs"][side]) for side in ("peer", "ours")}
    lines = ["# obliviate vs OpenUnlearning (d3d7cf9), side by side", "",
             f"Measured by `python benchmarks/vs_openunlearning.py --pairs {args.pairs} --steps {args.steps}` "
             "on the same 0.79M-parameter Llama and the same TOFU-layout files (built-in benchmark, 80 "
             "people x 20 questions: 160 forget, 160 holdout, 400 retain; TOFU's 100 real-authors and "
             "117 world-facts items), float32 on the CPU, runs alternating.", "",
             "## Evaluation (TOFU protocol: batch 32, 200 new tokens)", "",
             f"Median evaluator time: OpenUnlearning {med['peer']:.1f} s, obliviate {med['ours']:.1f} s: "
             f"**{ev['speedup']:.2f}x** (pairs: {', '.join(f'{r:.2f}' for r in ev['speedups'])}); whole "
             f"processes {ev['process_speedup']:.2f}x.", "",
             f"Agreement: {agree['generations_identical']} of {agree['generations']} generations identical; "
             f"largest relative per-item difference over every shared metric {worst:.2g}.", "",
             "| dataset / metric | items | max abs difference | max relative difference |", "|---|---|---|---|"]
    lines += [f"| {k} | {v['n']} | {v['max_abs_diff']:.2g} | {v['max_rel_diff']:.2g} |"
              for k, v in sorted(agree["per_metric"].items())]
    lines += ["", f"## NPO unlearning (batch 8 + 8, lr 1e-5, {args.steps} steps)", "",
              f"Time per step from each tool's training-loop time (T_long - T_short): obliviate "
              f"**{npo['speedup']:.2f}x** OpenUnlearning's speed (pairs: "
              f"{', '.join(f'{r:.2f}' for r in npo['speedups'])})."]
    if "memory" in res:
        m = res["memory"]["runs"]
        lines += ["", f"## Peak memory on SmolLM2-135M-Instruct ({args.smollm2_steps} steps, full weights)", "",
                  "| run | peak RSS MB |", "|---|---|"]
        lines += [f"| {k} | {v['peak_rss_mb']:.0f} |" for k, v in m.items()]
        lines += ["", f"obliviate's NPO at **{res['memory']['ours_vs_peer']:.2f}x** OpenUnlearning's peak; "
                  f"obliviate's NPO at **{res['memory']['npo_vs_ga']:.2f}x** its GA."]
    lines += ["", line(prov)]
    (HERE / "results" / "vs_openunlearning.md").write_text("\n".join(lines) + "\n")
    (HERE / "results" / "vs_openunlearning.json").write_text(
        json.dumps({"provenance": prov, "args": vars(args), **res}, indent=1) + "\n")
    print("\n".join(lines))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pairs", type=int, default=3)
    ap.add_argument("--steps", default="30,300", help="short,long NPO runs")
    ap.add_argument("--smollm2-steps", type=int, default=8)
    ap.add_argument("--skip-smollm2", action="store_true")
    ap.add_argument("--ou-venv", default=str(Path.home() / ".cache" / "obliviate-bench" / "ou-venv"))
    ap.add_argument("--fresh", action="store_true")
    args = ap.parse_args()
    short, long = (int(x) for x in args.steps.split(","))
    if args.fresh:
        shutil.rmtree(WORK, ignore_errors=True)
    WORK.mkdir(parents=True, exist_ok=True)
    src, py = peer(Path(args.ou_venv))
    bench = WORK / "bench"
    if not bench.exists():
        obliviate("generate", "--seed", "0", "--entities", "80", "--questions", "20", "--out", str(bench))
    data = export(bench)
    model = target_model(bench)
    cfg = peer_model_config(model, "obliviate_tiny", "<s>")
    res = {"eval": run_eval(src, py, data, model, cfg, args.pairs),
           "npo": run_npo(src, py, data, model, cfg, (short, long), args.pairs)}
    if not args.skip_smollm2:
        res["memory"] = run_memory(src, py, data, args.smollm2_steps)
    write(res, args, provenance())


if __name__ == "__main__":
    main()
