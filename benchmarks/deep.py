"""Fine-grained requests and mixture-of-experts unlearning, where the leaderboard cannot look.

    python benchmarks/deep.py [--entities 40] [--steps 60] [--work DIR] [--fresh]

1. Fine-grained: each method forgets three facts of every forget10 person (split
   forget10.born_in+award+wrote) from the dense 4-layer target. Reported: the answer
   probability of the forgotten facts, of the same people's other facts, and of the other
   people's facts, with the target and a fine-grained oracle (trained without just those
   facts) as the two ends.
2. Mixture of experts: a 4-layer tiny Mixtral (4 experts, 2 per token) target; NPO on every
   weight against UOE (NPO on one expert, router anchored): forget and retain probability and
   routing: the chosen expert's share of the forget tokens, and how far every layer's routing
   distribution moved on forget and retain tokens (total variation from the target's).

Writes benchmarks/results/deep.{md,json}. Each run is recomputed unless its folder exists and
--fresh is not given.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

from provenance import line, provenance

HERE = Path(__file__).resolve().parent
SPLIT = "forget10.born_in+award+wrote"
FINE_METHODS = ("npo", "graddiff", "rmu", "altpo", "unstar", "whp", "lunar", "slug", "concept_ablation")


def _probs(path: Path, sets: dict[str, list]) -> dict[str, float]:
    from obliviate.encoding import encode
    from obliviate.methods.base import mean_answer_prob
    from obliviate.systems import load_any

    model, tok = load_any(path)
    model.eval()
    return {name: mean_answer_prob(model, [encode(tok, ex, i) for i, ex in enumerate(exs)], tok.pad_token_id)
            for name, exs in sets.items()}


def _unlearn(work: Path, target: Path, method: str, steps: int, out: Path, split: str = "",
             params: dict | None = None) -> Path:
    import obliviate as ob
    from obliviate.train import OptimConfig

    if out.exists():
        return out
    cfg = ob.UnlearnConfig(model=str(target), method=method, benchmark=str(work / "bench"),
                           forget_split=split, params=params or {},
                           optim=OptimConfig(lr=None, steps=steps, batch_size=32, warmup_ratio=0.0,
                                             schedule="constant"))
    return ob.unlearn(cfg, out, progress=False)


def fine_grained(work: Path, steps: int) -> list[dict]:
    import obliviate as ob
    from obliviate.data import Benchmark

    bench = Benchmark.load(work / "bench")
    for role in ("target", "oracle_fine"):
        if not (work / role).exists():
            ob.finetune(ob.FinetuneConfig(benchmark=str(work / "bench"), forget_split=SPLIT,
                                          role="oracle" if role == "oracle_fine" else "target"),
                        work / role, progress=False)
    people = set(bench.splits["forget10"])
    sets = {"forgotten": bench.forget_set(SPLIT),
            "same_people": [ex for ex in bench.retain_set(SPLIT) if ex.entity in people],
            "other_people": bench.retain_set("forget10")[:64]}
    rows = [{"method": name, **_probs(work / name, sets)} for name in ("target", "oracle_fine")]
    for method in FINE_METHODS:
        try:
            out = _unlearn(work, work / "target", method, steps, work / "runs" / f"fine-{method}", SPLIT)
            rows.append({"method": method, **_probs(out, sets)})
        except ob.ObliviateError as exc:
            rows.append({"method": method, "error": str(exc).splitlines()[0]})
        print(json.dumps(rows[-1]), flush=True)
    return rows


def _routing(path: Path, bench) -> dict[str, object]:
    """Mean routing probabilities [layers, experts] on forget and retain tokens."""
    from obliviate.encoding import DEFAULT_TEMPLATE
    from obliviate.methods.uoe import router_probs
    from obliviate.models import load_model
    from obliviate.unlearning import _context

    model, tok = load_model(str(path))
    ctx = _context(tok, bench.forget_set("forget10"), bench.retain_set("forget10")[:64],
                   ("forget", "retain"), DEFAULT_TEMPLATE, False, 0)
    return {s: router_probs(model.eval(), ctx, s) for s in ("forget", "retain")}


def moe(work: Path, steps: int) -> list[dict]:
    import obliviate as ob
    from obliviate.data import Benchmark
    from obliviate.models import TinyModelConfig, read_provenance

    bench = Benchmark.load(work / "bench")
    target = work / "moe_target"
    if not target.exists():
        ob.finetune(ob.FinetuneConfig(benchmark=str(work / "bench"), tiny=TinyModelConfig(experts=4)),
                    target, progress=False)
    sets = {"forget": bench.forget_set("forget10"), "retain": bench.retain_set("forget10")[:64]}
    runs = {m: _unlearn(work, target, m, steps, work / "runs" / f"moe-{m}") for m in ("npo", "uoe")}
    # the expert UOE's own attribution chose (over the whole retain set), as its run logged it
    log = read_provenance(runs["uoe"])["last_log"]
    layer, expert = int(log["uoe_layer"]), int(log["uoe_expert"])
    before = _routing(target, bench)
    rows = [{"method": "target", **_probs(target, sets), "expert_share": float(before["forget"][layer, expert])}]
    for method, out in runs.items():
        after = _routing(out, bench)
        moved = {f"routing_tv_{s}": float(0.5 * (after[s] - before[s]).abs().sum(-1).max()) for s in after}
        rows.append({"method": method, **_probs(out, sets), "expert_share": float(after["forget"][layer, expert]),
                     **moved})
        print(json.dumps(rows[-1]), flush=True)
    for r in rows:
        r["expert"] = f"layer {layer}, expert {expert}"
    return rows


def render(fine: list[dict], experts: list[dict], prov: dict) -> str:
    out = ["# Fine-grained requests and mixture-of-experts unlearning", "", line(prov), "",
           f"## Fine-grained: split `{SPLIT}` (three facts of each forget10 person)", "",
           "Mean answer probability. *forgotten*: the three facts; *same people*: their five other "
           "facts (retain items); *other people*: 64 retained people's facts. The fine-grained "
           "oracle never saw the three facts.", "",
           "| method | forgotten | same people | other people |", "|---|---|---|---|"]
    for r in fine:
        if "error" in r:
            out.append(f"| {r['method']} | error: {r['error']} | | |")
        else:
            out.append(f"| {r['method']} | {r['forgotten']:.3f} | {r['same_people']:.3f} | {r['other_people']:.3f} |")
    out += ["", "## Mixture of experts: NPO on every weight against UOE (NPO on one expert)", "",
            f"Expert chosen by UOE's attribution (as its run logged it): {experts[0]['expert']}. "
            "*expert share*: its mean "
            "routing probability on the forget tokens; *routing moved*: the largest total-variation "
            "distance, over layers, between a layer's mean routing distribution and the target's.", "",
            "| model | forget prob | retain prob | expert share | routing moved (forget) | routing moved (retain) |",
            "|---|---|---|---|---|---|"]
    for r in experts:
        out.append(f"| {r['method']} | {r['forget']:.3f} | {r['retain']:.3f} | {r['expert_share']:.3f} | "
                   f"{r.get('routing_tv_forget', 0):.3f} | {r.get('routing_tv_retain', 0):.3f} |")
    return "\n".join(out) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--entities", type=int, default=40)
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--work", default=str(HERE / ".work" / "deep"))
    ap.add_argument("--fresh", action="store_true", help="recompute everything")
    args = ap.parse_args()
    import transformers

    import obliviate as ob

    transformers.logging.set_verbosity_error()
    work = Path(args.work)
    if args.fresh and work.exists():
        shutil.rmtree(work)
    if not (work / "bench").exists():
        ob.generate(work / "bench", seed=0, entities=args.entities)
    fine, experts = fine_grained(work, args.steps), moe(work, args.steps)
    prov = provenance()
    results = HERE / "results"
    (results / "deep.json").write_text(json.dumps({"provenance": prov, "fine_grained": fine, "moe": experts},
                                                  indent=1) + "\n")
    (results / "deep.md").write_text(render(fine, experts, prov))
    print(render(fine, experts, prov))


if __name__ == "__main__":
    main()
