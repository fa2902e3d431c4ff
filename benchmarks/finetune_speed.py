"""Fine-tuning with each batch split by length (`split_batch_nll`) against one forward per
batch, side by side, on the built-in benchmark and on a dataset of another domain.

    python benchmarks/finetune_speed.py [--epochs 40] [--pairs 2]

The data: the built-in benchmark (40 people, 410 training items, mostly short questions with
a tail of long ones) and the shipwreck dataset of benchmarks/domain_data.py (30 wrecks as
user files: numbers with units, lists and 20-40 word explanations). Each run fine-tunes the
default tiny model as `obliviate finetune` does (batch 64, lr 3e-3, `--epochs`) in its own
process; "whole" sets SPLIT_BELOW to 0, which turns the split off. Whole and split runs
alternate, so drift in the machine's speed reaches both. Reported per dataset: seconds of
training, the tokens computed per real token (padding), the final training loss and the mean
answer probability of the training items after training. Split and whole are the same math,
so these differ only by float rounding carried through the run's steps; a control measures how
much that is: the whole run again with each batch's rows in reverse order (the same items and
math, another summation order). (Another thread count was tried as the control first: its
results were bit-identical, so it measured nothing.) Writes benchmarks/results/finetune_speed.md and .json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

from provenance import line, provenance

HERE = Path(__file__).resolve().parent
WORK = HERE / ".work" / "finetune_speed"
CONTROL = "whole, rows reversed"


def child(dataset: str, mode: str, epochs: float) -> dict:
    """One fine-tune; returns its seconds, padding, final loss and training-set probability."""
    import shutil

    import torch

    import obliviate as ob
    from obliviate.encoding import collate, encode
    from obliviate.methods import base
    from obliviate.models import load_model, read_provenance

    if mode in ("whole", CONTROL):
        base.SPLIT_BELOW = 0.0
    padded, real = [0], [0]
    split = base.split_batch_nll

    def counted(model, batch, world=1):  # the tokens each forward computes
        groups = base.length_split(batch["attention_mask"]) if base.SPLIT_BELOW else None
        widths = [(len(r), w) for r, w in groups] if groups else [tuple(batch["input_ids"].shape)]
        padded[0] += sum(n * w for n, w in widths)
        real[0] += int(batch["attention_mask"].sum())
        if mode == CONTROL:
            batch = {k: v.flip(0) for k, v in batch.items()}
        return split(model, batch, world)

    ob.api.split_batch_nll = counted
    out = WORK / f"{dataset}-{mode.replace(', ', '-').replace(' ', '')}"
    shutil.rmtree(out, ignore_errors=True)
    cfg = ob.FinetuneConfig(benchmark=str(WORK / dataset), epochs=epochs)
    ob.finetune(cfg, out, progress=False)
    prov = read_provenance(out)
    model, tok = load_model(out)
    data, _, _ = ob.api._training_data(cfg)
    items = [encode(tok, ex, i, cfg.template) for i, ex in enumerate(data)]
    probs = []
    with torch.no_grad():
        for start in range(0, len(items), 64):
            batch = collate(items[start:start + 64], tok.pad_token_id)
            probs += torch.exp(-base.batch_seq_nll(model, batch)).tolist()
    return {"seconds": prov["train_seconds"], "final_loss": prov["final_loss"],
            "padding": padded[0] / real[0], "train_prob": statistics.mean(probs),
            "items": len(items)}


def prepare() -> None:
    """Both datasets, once (same seed, same bytes)."""
    import obliviate as ob

    if not (WORK / "builtin").exists():
        ob.generate(WORK / "builtin", seed=0, entities=40)
    if not (WORK / "shipwrecks").exists():
        files = WORK / "shipwreck-files"
        subprocess.run([sys.executable, str(HERE / "domain_data.py"), "--out", str(files),
                        "--entities", "30"], check=True)
        from obliviate.cli import main

        assert main(["benchmark", "create", "--out", str(WORK / "shipwrecks"),
                     "--forget", str(files / "forget.jsonl"), "--retain", str(files / "retain.jsonl"),
                     "--holdout", str(files / "holdout.jsonl"),
                     "--utility", str(files / "general.jsonl")]) == 0


def run(dataset: str, mode: str, epochs: float) -> dict:
    res = subprocess.run([sys.executable, __file__, "--child", dataset, mode, str(epochs)],
                         capture_output=True, text=True, check=True)
    return json.loads(res.stdout.strip().splitlines()[-1])


def write(res: dict, args: argparse.Namespace, prov: dict) -> None:
    rows = ["| data | items | mode | train s (median) | tokens computed / real | final loss | "
            "training-item prob |", "|---|---|---|---|---|---|---|"]
    for dataset, modes in res.items():
        for mode, runs in modes.items():
            med = statistics.median(r["seconds"] for r in runs)
            each = ", ".join(f"{r['seconds']:.1f}" for r in runs)
            rows.append(f"| {dataset} | {runs[0]['items']} | {mode} | {med:.1f} ({each}) | "
                        f"{runs[0]['padding']:.2f} | {runs[0]['final_loss']:.4f} | "
                        f"{runs[0]['train_prob']:.4f} |")
    ratios = {d: statistics.median(w["seconds"] / s["seconds"]  # the control has no pair
                                   for w, s in zip(m["whole"], m["split"], strict=True))
              for d, m in res.items()}
    text = "\n".join([
        "# Fine-tuning: batches split by length vs one forward per batch", "",
        line(prov), "",
        f"Default tiny model, batch 64, lr 3e-3, {args.epochs:g} epochs, {args.pairs} "
        "interleaved pairs per dataset, each run its own process.", "", *rows, "",
        "Speed-up (median over pairs of whole / split seconds): "
        + ", ".join(f"{d} **{r:.2f}x**" for d, r in ratios.items()) + ".", ""])
    (HERE / "results" / "finetune_speed.md").write_text(text)
    (HERE / "results" / "finetune_speed.json").write_text(
        json.dumps({"provenance": prov, "epochs": args.epochs, "runs": res, "speedup": ratios},
                   indent=1))
    print(text)


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        print(json.dumps(child(sys.argv[2], sys.argv[3], float(sys.argv[4]))))
        return
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=float, default=40)
    ap.add_argument("--pairs", type=int, default=2)
    args = ap.parse_args()
    WORK.mkdir(parents=True, exist_ok=True)
    prepare()
    res: dict = {}
    for dataset in ("builtin", "shipwrecks"):
        res[dataset] = {"whole": [], "split": []}
        for i in range(args.pairs):
            for mode in (("whole", "split") if i % 2 == 0 else ("split", "whole")):
                res[dataset][mode].append(run(dataset, mode, args.epochs))
                print(dataset, mode, res[dataset][mode][-1], flush=True)
        res[dataset][CONTROL] = [run(dataset, CONTROL, args.epochs)]
    write(res, args, provenance())


if __name__ == "__main__":
    main()
