"""Sequential deletion requests through the ledger, against one batch run of the same data.

    python benchmarks/ledger.py [--work DIR] [--method npo]

Uses the leaderboard's benchmark, target and oracle (run benchmarks/leaderboard.py first).
Each forget10 person is one request, applied in order through `obliviate request`; a second
project forgets all of them in a single request; a third repeats the sequence without the
holdout-level stop (every request runs its full step budget). Prints and writes benchmarks/results/
ledger.md and .json: every request's forget probability, MIA AUC and forget quality at every
version (does a later version still forget the earlier requests?), utility per version, the
sequential/batch ratios, and where the time of an apply goes (unlearning vs the evidence).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import time
from pathlib import Path

from provenance import line, provenance

HERE = Path(__file__).resolve().parent


def _f(v) -> str:
    if not isinstance(v, float):
        return "n/a"
    return f"{v:.3g}" if v != 0 and abs(v) < 1e-2 else f"{v:.3f}"


def _write(path: Path, exs) -> Path:
    path.write_text("".join(json.dumps(x.to_json()) + "\n" for x in exs))
    return path


def main() -> None:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", default=str(HERE / ".work" / "leaderboard"))
    ap.add_argument("--method", default="npo")
    args = ap.parse_args()
    import transformers

    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    from obliviate.data import Benchmark
    from obliviate.ledger import Ledger, ProjectSettings, add_request, apply, init_project

    work = Path(args.work)
    for name in ("bench", "target", "oracle"):
        if not (work / name).exists():
            raise SystemExit(f"{work / name} is missing: run benchmarks/leaderboard.py first")
    bench = Benchmark.load(work / "bench")
    out = HERE / ".work" / "ledger"
    shutil.rmtree(out, ignore_errors=True)
    data = out / "data"
    data.mkdir(parents=True)
    people = bench.splits["forget10"]
    files = {p: _write(data / f"{p}.jsonl", [x for x in bench.qa if x.entity == p]) for p in people}
    files["all"] = _write(data / "forget10.jsonl", bench.qa_of("forget10"))
    settings = dict(base=str(work / "target"), oracle=str(work / "oracle"),
                    retain=str(_write(data / "retain.jsonl", bench.qa_of("all"))),
                    holdout=str(_write(data / "holdout.jsonl", bench.qa_of("holdout"))),
                    utility=[str(_write(data / "world_facts.jsonl", bench.world_facts))],
                    audits=["rephrase", "quantization", "relearning"])
    runs = {}
    variants = (("sequential", people, True), ("batch", ["all"], True),
                ("sequential-full-budget", people, False))  # no holdout-level stop
    for kind, requests, stop in variants:
        proj = out / kind
        init_project(proj, ProjectSettings(**settings, stop_at_holdout=stop))
        for p in requests:
            add_request(proj, p, str(files[p]), method=args.method)
        t = time.perf_counter()
        apply(proj, apply_all=True, progress=False)
        wall = time.perf_counter() - t
        with Ledger.open(proj) as ledger:
            runs[kind] = {"wall_s": round(wall, 1), "measurements": ledger.measurements(),
                          "versions": [v.summary for v in ledger.versions()[1:]],
                          "requests": [(r.id, r.subject) for r in ledger.requests()]}
        print(f"{kind}: {len(requests)} request(s) applied in {wall:.1f} s", flush=True)

    seq, batch = runs["sequential"], runs["batch"]
    m, n = seq["measurements"], len(people)
    lines = [f"# Sequential deletion requests ({args.method}, full weights)", "",
             f"Built-in benchmark (40 people, 4-layer tiny Llama, leaderboard models). Each of the "
             f"{n} forget10 people is one request, applied in order through the ledger; version k "
             "is the model after request k. Forget quality is the KS p-value against the oracle "
             "(which never saw any of them); MIA AUC is Min-K% against the holdout people "
             "(0.5 = indistinguishable). Measured by `python benchmarks/ledger.py` "
             "on a 2-core CPU.", "",
             "## Forget probability of each request at each version", "",
             "| version | model utility | " + " | ".join(f"request {i + 1}" for i in range(n)) + " |",
             "|---|---|" + "---|" * n]
    for v in range(n + 1):
        cells = [_f(m.get((v, r + 1), {}).get("forget_prob")) if v >= r else "·" for r in range(n)]
        lines.append(f"| {v} | {_f(m[(v, 0)]['model_utility'])} | " + " | ".join(cells) + " |")
    rise = max(((m[(n, r)]["forget_prob"] / m[(r, r)]["forget_prob"], r) for r in range(1, n)),
               default=None)
    if rise:
        k, r = rise
        lines += ["", f"Largest drift back of an earlier request by version {n}: request {r}, "
                  f"{_f(m[(r, r)]['forget_prob'])} right after it was applied, "
                  f"{_f(m[(n, r)]['forget_prob'])} now (x{k:.1f}): the ledger measures every "
                  "past request at every version so that such drift is seen."]
    lines += ["", "`·`: not yet applied (the request's probability is measured on its parent, "
              "version k-1, when it is applied: the before value).", "",
              "## At the last version", "", f"| request | forget prob before | after (v{n}) | MIA AUC | "
              "forget quality |", "|---|---|---|---|---|"]
    for r in range(1, n + 1):
        last = m[(n, r)]
        lines.append(f"| {r} | {_f(m[(r - 1, r)]['forget_prob'])} | {_f(last['forget_prob'])} | "
                     f"{_f(last['auc_min_k'])} | {_f(last['forget_quality'])} |")
    b = batch["measurements"]
    fq_seq = [m[(n, r)]["forget_quality"] for r in range(1, n + 1)]
    seq_time = [s["timings"] for s in seq["versions"]]
    unlearn = sum(t.get("unlearn_s", 0) for t in seq_time)
    rest = sum(t["evaluate_s"] + t["audit_s"] for t in seq_time)
    full = runs["sequential-full-budget"]["measurements"]
    ratios = [
        ("model utility, sequential / batch", m[(n, 0)]["model_utility"] / b[(1, 0)]["model_utility"]),
        ("model utility, sequential / sequential with the full step budget",
         m[(n, 0)]["model_utility"] / full[(n, 0)]["model_utility"]),
        ("model utility, sequential with the full step budget / base",
         full[(n, 0)]["model_utility"] / full[(0, 0)]["model_utility"]),
        ("model utility, sequential final / base", m[(n, 0)]["model_utility"] / m[(0, 0)]["model_utility"]),
        ("mean forget prob of all requests, sequential / batch",
         sum(m[(n, r)]["forget_prob"] for r in range(1, n + 1)) / n / b[(1, 1)]["forget_prob"]),
        ("wall time, sequential / batch", seq["wall_s"] / batch["wall_s"]),
        ("evaluation + audits / unlearning time, per apply", rest / unlearn),
    ]
    lines += ["", "## Sequential vs one batch request", "",
              f"Batch: one request with all {n} people ({b[(1, 1)]['forget_prob']:.3g} forget prob, "
              f"forget quality {_f(b[(1, 1)]['forget_quality'])}, utility "
              f"{_f(b[(1, 0)]['model_utility'])}); sequential forget quality per request at the "
              f"end: {', '.join(_f(x) for x in fq_seq)}.", "",
              "| ratio | value |", "|---|---|"] + [f"| {k} | {v:.2f} |" for k, v in ratios]
    lines += ["", "## Utility components at the last version", "",
              "The retain set is trained on by the method's retain term; the world facts are "
              "not (general knowledge the model must keep without help).", "",
              "| run | model utility | retain prob | retain ROUGE-L | world-facts prob | "
              "world-facts ROUGE-L |", "|---|---|---|---|---|---|"]
    last = {"base": (m, 0), "sequential": (m, n), "batch": (b, 1),
            "sequential, full step budget": (full, n)}
    for name, (meas, v) in last.items():
        u = meas[(v, 0)]
        lines.append(f"| {name} | " + " | ".join(_f(u[k]) for k in (
            "model_utility", "retain_prob", "retain_rougeL_recall", "world_facts_prob",
            "world_facts_rougeL_recall")) + " |")
    lines += ["", "Full step budget: the same requests with `stop_at_holdout=false` (each runs all "
              "its steps instead of stopping once the forget items are as likely as never-seen "
              "ones). Forget quality per request at its last version: "
              + ", ".join(_f(full[(n, r)]["forget_quality"]) for r in range(1, n + 1))
              + "; Min-K% MIA AUC: " + ", ".join(_f(full[(n, r)]["auc_min_k"]) for r in range(1, n + 1))
              + " (below 0.5: over-unlearned, the items are now less likely than unseen ones)."]
    lines += ["", f"Wall time: sequential {seq['wall_s']} s for {n} applies (unlearning "
              f"{unlearn:.1f} s, evaluation and audits {rest:.1f} s), batch {batch['wall_s']} s."]
    prov = provenance()
    lines += ["", line(prov)]
    text = "\n".join(lines) + "\n"
    print(text)
    (HERE / "results").mkdir(exist_ok=True)
    (HERE / "results" / "ledger.md").write_text(text)
    serial = {k: {**v, "measurements": {f"{a},{c}": x for (a, c), x in v["measurements"].items()}}
              for k, v in runs.items()}
    (HERE / "results" / "ledger.json").write_text(json.dumps({"provenance": prov, **serial},
                                                             indent=1) + "\n")


if __name__ == "__main__":
    main()
