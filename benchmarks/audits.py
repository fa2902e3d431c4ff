"""Audit table: every method of the leaderboard against every robustness audit.

    python benchmarks/audits.py [--work DIR] [--variants full,system]

Takes each method's best run from benchmarks/results/leaderboard.json (the models are kept in
the leaderboard's work folder; run benchmarks/leaderboard.py first) and audits it against the
target and the oracle. Writes benchmarks/results/audits.md and .json: the residual knowledge
per audit (1 = as much as the target, 0 = as little as the oracle), with forget quality. An
unlearned system's weight-level audits run on the base it wraps (marked: what is still in the
weights), its prompt audits on the system itself.
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


RESIDUAL_BAR, FQ_BAR, MU_BAR = 0.3, 0.05, 0.9  # the bar: survives every audit, forgets, keeps utility


def held_back(row: dict, oracle_mu: float) -> list[str]:
    """What keeps a run from the bar: each audit whose residual is above 0.3 (or missing),
    forget quality below 0.05, utility below 90% of the oracle's."""
    out = [n for n, v in sorted(row["residual"].items()) if not (isinstance(v, float) and v <= RESIDUAL_BAR)]
    if row["forget_quality"] < FQ_BAR:
        out.append("FQ")
    if row["model_utility"] < MU_BAR * oracle_mu:
        out.append("MU")
    return out


def table_lines(rows: list[dict], names: list[str], variants: list[str], oracle_mu: float) -> list[str]:
    """The heading, the legend and one row of residuals per audited run (best FQ first), with
    what holds each back from the bar."""
    lines = [f"# Robustness audits: leaderboard methods ({', '.join(variants)}; best run each)", "",
             "Residual knowledge of the forget set under each attack: 1 = as much as the target "
             "(before unlearning), 0 = as little as the oracle (never trained on it); above 0.3 "
             "is marked **bold** (the knowledge is back to a third of the target's). Built-in "
             "benchmark, forget10, 4-layer tiny Llama; FQ = forget quality from the leaderboard. "
             "For an unlearned system (variant *system*) the audits that read or edit weights run "
             "on the base model it wraps, marked †: the knowledge still present in the weights, "
             "which anyone with the base weights has; the prompt audits (rephrase, few_shot, "
             "in_context) attack the system itself, its classifier or detector included. "
             "MU % = model utility relative to the oracle's. *Held back by*: what keeps the run "
             "from the bar (every residual <= 0.3, forget quality >= 0.05, MU >= 90%).", "",
             "| method | variant | FQ | MU % | " + " | ".join(names) + " | held back by |",
             "|---|---|---|---|" + "---|" * len(names) + "---|"]
    for row in sorted(rows, key=lambda r: -r["forget_quality"]):
        cells = []
        for n in names:
            v = row["residual"][n]
            cell = f"**{_fmt(v)}**" if isinstance(v, float) and v > 0.3 else _fmt(v)
            cells.append(cell + ("†" if n in row["on_base"] else ""))
        lines.append(f"| {row['method']} | {row['variant']} | {row['forget_quality']:.3g} | "
                     f"{100 * row['model_utility'] / oracle_mu:.0f} | " + " | ".join(cells)
                     + f" | {', '.join(held_back(row, oracle_mu)) or '(none)'} |")
    return lines


def verdict_lines(rows: list[dict], oracle_mu: float) -> list[str]:
    """Who meets the bar, else the runs closest to it (fewest failed criteria)."""
    misses = {f"{r['method']} ({r['variant']})": held_back(r, oracle_mu) for r in rows}
    meet = [k for k, v in misses.items() if not v]
    fewest = min(len(v) for v in misses.values())
    closest = [f"{k}: {', '.join(v)}" for k, v in misses.items() if len(v) == fewest]
    return [f"Methods whose forgetting survives every attack (all residuals <= {RESIDUAL_BAR}) with "
            f"forget quality >= {FQ_BAR} and >= {MU_BAR:.0%} of the oracle's utility: "
            f"{', '.join(meet) or 'none'}." + ("" if meet else
            f" Closest ({fewest} criteria missed): {'; '.join(closest)}.")]


def main() -> None:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", default=str(HERE / ".work" / "leaderboard"))
    ap.add_argument("--variants", default="full,system", help="comma-separated: full, lora, system")
    args = ap.parse_args()
    import transformers

    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    from obliviate.audits import AUDITS, AuditConfig, audit
    from obliviate.audits.run import scores

    work = Path(args.work)
    board = json.loads((HERE / "results" / "leaderboard.json").read_text())
    variants = args.variants.split(",")
    runs = [r for r in board["best"] if r["variant"] in variants and "error" not in r]
    names = sorted(AUDITS.names())
    ends: dict = {}
    rows, start = [], time.perf_counter()
    for r in runs:
        path = work / "runs" / f"{r['method']}-{r['variant']}-{r['lr']:.1e}"
        if not path.exists():
            raise SystemExit(f"{path} is missing: run benchmarks/leaderboard.py first")
        t = time.perf_counter()
        res = audit(AuditConfig(model=str(path), target=str(work / "target"), oracle=str(work / "oracle"),
                                benchmark=str(work / "bench")), ends=ends, progress=False)
        rows.append({"method": r["method"], "variant": r["variant"], "lr": r["lr"],
                     "forget_quality": r["forget_quality"],
                     "model_utility": r["model_utility"], "residual": scores(res),
                     "on_base": sorted(n for n, e in res["audits"].items() if e.get("measured_on")),
                     "raw": {n: e["model"] for n, e in res["audits"].items()},
                     "seconds": round(time.perf_counter() - t, 1)})
        print(r["method"], {k: _fmt(v) for k, v in rows[-1]["residual"].items()}, flush=True)
    oracle_mu = board["reference"]["oracle"]["model_utility"]
    lines = table_lines(rows, names, variants, oracle_mu) + [""] + verdict_lines(rows, oracle_mu)
    survivors = [f"{r['method']} ({r['variant']})" for r in rows if all(
        isinstance(v, float) and v <= 0.3 for v in r["residual"].values())]
    lines += [f"Methods whose forgetting survives every attack, whatever their forget quality "
              f"and utility: {', '.join(survivors) or 'none'}.",
              f"{len(rows)} models audited in {time.perf_counter() - start:.0f} s (2-core CPU)."]
    prov = provenance()
    lines += ["", line(prov)]
    (HERE / "results" / "audits.md").write_text("\n".join(lines) + "\n")
    (HERE / "results" / "audits.json").write_text(json.dumps(
        {"provenance": prov, "variants": variants, "ends": ends, "rows": rows}, indent=1) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
