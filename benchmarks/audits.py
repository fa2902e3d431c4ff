"""Audit table: every method of the leaderboard against every robustness audit.

    python benchmarks/audits.py [--work DIR] [--variant full]

Takes each method's best run from benchmarks/results/leaderboard.json (the models are kept in
the leaderboard's work folder; run benchmarks/leaderboard.py first) and audits it against the
target and the oracle. Writes benchmarks/results/audits.md and .json: the residual knowledge
per audit (1 = as much as the target, 0 = as little as the oracle), with forget quality.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

from provenance import line, provenance

HERE = Path(__file__).resolve().parent


def _fmt(v) -> str:
    return f"{v:.2f}" if isinstance(v, float) else "n/a"


def main() -> None:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", default=str(HERE / ".work" / "leaderboard"))
    ap.add_argument("--variant", default="full", choices=["full", "lora"])
    args = ap.parse_args()
    import transformers

    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    from obliviate.audits import AUDITS, AuditConfig, audit
    from obliviate.audits.run import scores

    work = Path(args.work)
    board = json.loads((HERE / "results" / "leaderboard.json").read_text())
    runs = [r for r in board["best"] if r["variant"] == args.variant and "error" not in r]
    names = sorted(AUDITS.names())
    ends: dict = {}
    rows, start = [], time.perf_counter()
    for r in runs:
        path = work / "runs" / f"{r['method']}-{args.variant}-{r['lr']:.1e}"
        if not path.exists():
            raise SystemExit(f"{path} is missing: run benchmarks/leaderboard.py first")
        t = time.perf_counter()
        res = audit(AuditConfig(model=str(path), target=str(work / "target"), oracle=str(work / "oracle"),
                                benchmark=str(work / "bench")), ends=ends, progress=False)
        rows.append({"method": r["method"], "lr": r["lr"], "forget_quality": r["forget_quality"],
                     "model_utility": r["model_utility"], "residual": scores(res),
                     "raw": {n: e["model"] for n, e in res["audits"].items()},
                     "seconds": round(time.perf_counter() - t, 1)})
        print(r["method"], {k: _fmt(v) for k, v in rows[-1]["residual"].items()}, flush=True)
    lines = [f"# Robustness audits: leaderboard methods ({args.variant} weights, best run each)", "",
             "Residual knowledge of the forget set under each attack: 1 = as much as the target "
             "(before unlearning), 0 = as little as the oracle (never trained on it); above 0.3 "
             "is marked **bold** (the knowledge is back to a third of the target's). Built-in "
             "benchmark, forget10, 4-layer tiny Llama; FQ = forget quality from the leaderboard.", "",
             "| method | FQ | " + " | ".join(names) + " |", "|---|---|" + "---|" * len(names)]
    for row in sorted(rows, key=lambda r: -r["forget_quality"]):
        cells = [f"**{_fmt(v)}**" if isinstance(v, float) and v > 0.3 else _fmt(v)
                 for v in (row["residual"][n] for n in names)]
        lines.append(f"| {row['method']} | {row['forget_quality']:.3g} | " + " | ".join(cells) + " |")
    survivors = [r["method"] for r in rows if all(
        isinstance(v, float) and v <= 0.3 for v in r["residual"].values())]
    lines += ["", f"Methods whose forgetting survives every attack (all residuals <= 0.3): "
              f"{', '.join(survivors) or 'none'}.",
              f"{len(rows)} models audited in {time.perf_counter() - start:.0f} s (2-core CPU)."]
    prov = provenance()
    lines += ["", line(prov)]
    (HERE / "results" / "audits.md").write_text("\n".join(lines) + "\n")
    (HERE / "results" / "audits.json").write_text(json.dumps(
        {"provenance": prov, "variant": args.variant, "ends": ends, "rows": rows}, indent=1) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
