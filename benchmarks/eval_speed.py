"""Evaluation speed: the shared-pass engine against bare forward passes and per-metric passes.

    python benchmarks/eval_speed.py [--work DIR] [--repeats 3]

On the leaderboard's target model and benchmark (trained here if missing), prints and writes to
benchmarks/results/eval_speed.md:
(a) throughput of the likelihood part of the tofu + mia + memorization evaluation (every
    statistic those suites read) in tokens/s, divided by the throughput of bare forward passes
    over the same whole token sequences, sorted and batched alike (target >= 0.9). The engine
    reads the prompt an item's answer variants share once per batch, so it can exceed 1;
(b) the speed-up of one shared pass per (dataset, variant) over computing each metric with its
    own pass, as a framework without a shared engine does.
(c) prefix-tree scoring (each item's answer variants in one tree) against the prompt-cache
    path it replaced, on every variant of three sets in different styles: the built-in
    benchmark's retain set, a shipwreck set (benchmarks/domain_data.py: numbers with units,
    lists, long explanations, perturbed answers in the paraphrase's words) and TOFU's own
    real-authors + world-facts sets (short answers), with the largest difference in any
    item's mean NLL between the two.
Both sides of each ratio run in the same process, interleaved, best of --repeats.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import torch
from provenance import line, provenance

HERE = Path(__file__).resolve().parent
# which (dataset, variants) each likelihood metric reads; a per-metric evaluator runs each alone
METRIC_NEEDS = {
    "prob": [("forget", "answer"), ("retain", "answer"), ("world_facts", "answer+perturbed")],
    "truth_ratio": [(d, "paraphrase+perturbed") for d in ("forget", "retain", "world_facts")],
    "exact_memorization": [("forget", "answer"), ("retain", "answer")],
    "extraction_strength": [("forget", "answer"), ("retain", "answer")],
    "auc_loss": [("forget", "answer"), ("holdout", "answer")],
    "auc_zlib": [("forget", "answer"), ("holdout", "answer")],
    "auc_min_k": [("forget", "answer"), ("holdout", "answer")],
    "auc_min_k_pp": [("forget", "answer"), ("holdout", "answer")],
}


def _variants(spec: str, k: int) -> list[str]:
    out = []
    for part in spec.split("+"):
        out += [f"perturbed:{i}" for i in range(k)] if part == "perturbed" else [part]
    return out


def _setup(work: Path):
    """The leaderboard's target and benchmark (trained here if missing): model, tokenizer and
    the evaluation's sets."""
    import transformers

    transformers.logging.set_verbosity_error()
    import obliviate as ob
    from obliviate.data import Benchmark
    from obliviate.models import load_model

    if not (work / "target").exists():
        if not (work / "bench").exists():
            ob.generate(work / "bench", seed=0, entities=40)
        ob.finetune(ob.FinetuneConfig(benchmark=str(work / "bench")), work / "target", progress=False)
    bench = Benchmark.load(work / "bench")
    data = {"forget": bench.qa_of("forget10"), "retain": bench.qa_of("retain90")[:200],
            "world_facts": bench.world_facts, "holdout": bench.qa_of("holdout")}
    model, tok = load_model(work / "target")
    return model.eval(), tok, data


def _best(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def _measure(model, tok, data: dict, repeats: int) -> list[str]:
    """The three ways over the same sequences, interleaved; the report's lines."""
    from obliviate.encoding import collate, encode
    from obliviate.evaluation import Engine

    k = min(len(e.perturbed_answers) for e in data["forget"])
    shared_plan = {d: sorted({v for needs in METRIC_NEEDS.values() for dd, spec in needs
                              if dd == d for v in _variants(spec, k)}) for d in data}

    def shared() -> Engine:
        eng = Engine(model, tok, batch_size=64)
        for d, vs in shared_plan.items():
            eng.stats(d, data[d], vs)
        return eng

    def per_metric() -> int:
        passes = 0
        for needs in METRIC_NEEDS.values():
            eng = Engine(model, tok, batch_size=64)  # a metric with its own pass and no cache
            for d, spec in needs:
                for v in _variants(spec, k):  # one pass per (dataset, variant), as metrics do
                    eng.stats(d, data[d], [v])
            passes += eng.forward_passes
        return passes

    # the bare baseline: the same sequences, sorted and batched as the engine does, forward only
    seqs = [encode(tok, ex, i, variant=v) for d, vs in shared_plan.items()
            for v in vs for i, ex in enumerate(data[d])]
    seqs.sort(key=lambda s: len(s.input_ids))
    batches = [collate(seqs[s:s + 64], tok.pad_token_id) for s in range(0, len(seqs), 64)]
    tokens = sum(len(s.input_ids) for s in seqs)

    def bare() -> None:
        for b in batches:
            model(input_ids=b["input_ids"], attention_mask=b["attention_mask"])

    t_bare, t_shared = _best(bare, repeats), _best(shared, repeats)
    t_bare = min(t_bare, _best(bare, repeats))  # interleave so neither side gets a warmer machine
    t_per = _best(per_metric, repeats)
    eng = shared()
    n_per = per_metric()
    return [f"model: {sum(p.numel() for p in model.parameters()):,} parameters; "
            f"{len(seqs)} sequences, {tokens:,} tokens",
            f"(a) bare forward      {tokens / t_bare:12,.0f} tokens/s  ({t_bare:.2f} s)",
            f"    shared engine     {tokens / t_shared:12,.0f} tokens/s  ({t_shared:.2f} s, "
            f"{eng.forward_passes} forward passes)",
            f"    throughput ratio engine / bare = {t_bare / t_shared:.2f}  (target >= 0.9)",
            f"(b) per-metric passes {t_per:.2f} s ({n_per} forward passes) vs shared {t_shared:.2f} s "
            f"({eng.forward_passes} passes): speed-up {t_per / t_shared:.2f}x"]


def _style_sets(work: Path, data: dict) -> dict:
    """(c)'s sets: the built-in retain set, the shipwrecks' retain set, TOFU's real sets."""
    from domain_data import write_dataset

    from obliviate.data.formats import load_examples

    wrecks = work / "wrecks"
    if not (wrecks / "retain.jsonl").exists():
        write_dataset(wrecks, seed=0, entities=30)
    tofu = HERE.parent.parent / "shared" / "reference" / "tofu"
    return {"built-in retain": data["retain"], "shipwrecks retain": load_examples(wrecks / "retain.jsonl"),
            "TOFU real authors + world facts": load_examples(tofu / "real_authors_perturbed.json")
            + load_examples(tofu / "world_facts_perturbed.json")}


def _trees_vs_cache(model, tok, sets: dict, repeats: int) -> list[str]:
    """(c): each set's every variant scored as prefix trees and through the prompt cache."""
    import numpy as np

    import obliviate.evaluation.engine as engine_mod
    from obliviate.evaluation import Engine
    from obliviate.evaluation.trees import tree_capable
    from obliviate.evaluation.views import perturbed_variants

    lines = ["(c) prefix trees vs prompt cache (every variant of each set, batch 32):"]
    for name, exs in sets.items():
        variants = ["answer", "paraphrase", *perturbed_variants(exs)]

        def run(trees: bool, exs=exs, variants=variants):
            engine_mod.tree_capable = tree_capable if trees else (lambda m: False)
            return Engine(model, tok, batch_size=32).stats("s", exs, variants)

        t_cache, t_tree = _best(lambda: run(False), repeats), _best(lambda: run(True), repeats)
        t_cache = min(t_cache, _best(lambda: run(False), repeats))
        a, b = run(True), run(False)
        engine_mod.tree_capable = tree_capable
        diff = max(float(np.abs(a[v].nll_mean - b[v].nll_mean).max()) for v in variants)
        lines.append(f"    {name:32s} {len(exs):4d} items x {len(variants)} variants: "
                     f"cache {t_cache:.2f} s, trees {t_tree:.2f} s: {t_cache / t_tree:.2f}x  "
                     f"(largest mean-NLL difference {diff:.1e})")
    return lines


def main() -> None:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", default=str(HERE / ".work" / "leaderboard"))
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    model, tok, data = _setup(Path(args.work))
    torch.set_grad_enabled(False)
    out = _measure(model, tok, data, args.repeats)
    out += _trees_vs_cache(model, tok, _style_sets(Path(args.work), data), args.repeats)
    print("\n".join(out))
    text = ["# Evaluation speed: shared engine vs bare forward passes and per-metric passes", "",
            "Measured by `python benchmarks/eval_speed.py` (best of "
            f"{args.repeats}, interleaved).", "", "```", *out, "```", "", line(provenance())]
    (HERE / "results" / "eval_speed.md").write_text("\n".join(text) + "\n")


if __name__ == "__main__":
    main()
