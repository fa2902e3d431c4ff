"""Your model, your data: the walkthrough on a dataset in another domain (fictitious shipwrecks).

    python benchmarks/own_data.py [--entities 80] [--forget-fraction 0.2] [--seed 0]
        [--epochs 40] [--methods npo,graddiff,simnpo,rmu] [--audits a,b] [--name own_data]
        [--work DIR] [--results DIR] [--fresh]

Writes the shipwreck dataset of benchmarks/domain_data.py (forget, retain, holdout and general
JSON lines) and runs what a user with their own files would: `obliviate benchmark create`
from the four files, fine-tunes the tiny model as target (everything) and oracle (everything
but the forget wrecks), evaluates both with the tofu and mia suites (the oracle is the
reference), then unlearns with each method twice, at its defaults and with the calibrated stop
(`stop_at_holdout=true`: stop once forget items are no more likely than holdout items), and
evaluates every unlearned model against the oracle (and, with --audits, audits it against
the target and the oracle: for an unlearned system the weight-level audits run on its base).
Every stage is its own `obliviate` process, so its wall time and peak memory (max RSS) are its own. Stages are cached in
benchmarks/.work/own_data (--work to choose another folder, --fresh to start over).
Writes NAME.md and NAME.json (--name, default own_data) into benchmarks/results (--results
to choose another folder), with findings computed from the numbers.

The defaults give about 140 forget items. The paraphrases of this dataset are full
rewordings, which a model trained from scratch carries its facts into only weakly (on 40
wrecks its truth ratios favour the true answer for ~60% of trained items against ~47% of
unseen ones), so forget quality, a KS test on those truth ratios, needs that many items to
tell a memorising target from the oracle; with ~30 forget items it usually cannot.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from domain_data import write_dataset
from provenance import line, provenance

HERE = Path(__file__).resolve().parent
METHODS = ("npo", "graddiff", "simnpo", "rmu")
SUITES = "suites=[tofu,mia]"
FQ_FLOOR = 0.05  # forget quality below this: told apart from the oracle (TOFU's threshold)
MU_FLOOR = 0.8  # model utility below this fraction of the oracle's: utility lost
PRIVLEAK_BAND = 10.0  # |PrivLeak| above this (percent): far from the oracle's exposure
MEMORISED = 0.9  # the target's forget-set probability at or above this: memorised


# ---- stages ----------------------------------------------------------------------------------
STOP_BUDGET = 300  # steps a calibrated run may take at most

def _log(work: Path) -> dict:
    path = work / "stages.json"
    return json.loads(path.read_text()) if path.exists() else {}


def _record(work: Path, name: str, entry: dict) -> dict:
    done = _log(work)
    done[name] = entry
    (work / "stages.json").write_text(json.dumps(done, indent=1) + "\n")
    return entry


def run_stage(work: Path, name: str, out: Path, args: list[str], may_fail: bool = False) -> dict:
    """One obliviate command in a child process: wall seconds and the child's max RSS.
    A stage already in the log is skipped; an output left by a run that did not reach the log
    is removed first (obliviate refuses to overwrite). With `may_fail`, a failed command is a
    result (its one-line error is recorded) rather than the end of the benchmark."""
    done = _log(work)
    if name in done:
        return done[name]
    if out.is_dir():
        shutil.rmtree(out)
    elif out.exists():
        out.unlink()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
           "TOKENIZERS_PARALLELISM": "false"}
    start = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "obliviate.cli", *args], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    text = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)  # the child's own resource usage
    code = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - start
    if code != 0 and may_fail:
        error = next((ln for ln in reversed(text.splitlines()) if "error:" in ln), f"exit {code}")
        print(f"{name}: failed: {error}", flush=True)
        return _record(work, name, {"wall_s": round(wall, 1), "failed": error.split("error: ", 1)[-1]})
    if code != 0:
        raise SystemExit(f"stage {name} failed (exit {code}): obliviate {' '.join(args)}\n"
                         f"{text[-3000:]}")
    rss = usage.ru_maxrss / 1024  # Linux: KiB
    print(f"{name}: {wall:.0f} s, peak RSS {rss:.0f} MB", flush=True)
    return _record(work, name, {"wall_s": round(wall, 1), "peak_rss_mb": round(rss)})


def _check_params(work: Path, params: dict) -> None:
    """Cached stages belong to one set of options; other options need --fresh."""
    path = work / "params.json"
    if path.exists():
        before = json.loads(path.read_text())
        if before != params:
            changed = ", ".join(f"{k} {before.get(k)!r} -> {v!r}" for k, v in params.items()
                                if before.get(k) != v)
            raise SystemExit(f"{work} holds stages run with other options ({changed}); "
                             "rerun with --fresh, or choose another --work folder")
    path.write_text(json.dumps(params, indent=1) + "\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--entities", type=int, default=80, help="trained wrecks (forget + retain)")
    ap.add_argument("--forget-fraction", type=float, default=0.2,
                    help="share of the trained wrecks to forget (as many more are held out)")
    ap.add_argument("--seed", type=int, default=0, help="dataset seed")
    ap.add_argument("--epochs", type=float, default=40.0,
                    help="fine-tuning epochs of target and oracle (enough to memorise)")
    ap.add_argument("--methods", default=",".join(METHODS),
                    help="comma-separated unlearning methods")
    ap.add_argument("--audits", default="", help="comma-separated audits run on every unlearned "
                    "model (none by default)")
    ap.add_argument("--name", default="own_data", help="stem of the results files")
    ap.add_argument("--work", type=Path, default=HERE / ".work" / "own_data",
                    help="folder for the cached stages")
    ap.add_argument("--results", type=Path, default=HERE / "results",
                    help="folder for own_data.md and own_data.json")
    ap.add_argument("--fresh", action="store_true", help="delete the work folder first")
    args = ap.parse_args()
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    if not methods:
        raise SystemExit("--methods names no method")
    work = args.work.resolve()
    if args.fresh:
        shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True, exist_ok=True)
    _check_params(work, {"entities": args.entities, "forget_fraction": args.forget_fraction,
                         "seed": args.seed, "epochs": args.epochs})
    stages = build_and_run(work, args, methods)
    done = [n for n in runs_of(methods) if not stages[n].get("failed")]
    results = {name: json.loads((work / "results" / f"{name}.json").read_text())
               for name in ["oracle", "target", *done]}
    stops = {name: read_stop(work / name) for name in done if name.endswith("-stop")}
    write(work, args, methods, results, stops, stages)


def runs_of(methods: list[str]) -> list[str]:
    return [name for m in methods for name in (m, f"{m}-stop")]


def build_and_run(work: Path, args, methods: list[str]) -> dict[str, dict]:
    """Every stage, in order; returns each stage's wall time and peak RSS."""
    stages: dict[str, dict] = {}
    data = work / "data"
    if "dataset" not in _log(work):
        start = time.perf_counter()
        shutil.rmtree(data, ignore_errors=True)
        write_dataset(data, seed=args.seed, entities=args.entities,
                      forget_fraction=args.forget_fraction)
        _record(work, "dataset", {"wall_s": round(time.perf_counter() - start, 1)})
    stages["dataset"] = _log(work)["dataset"]
    bench = work / "bench"
    stages["benchmark"] = run_stage(work, "benchmark", bench, [
        "benchmark", "create", "--forget", str(data / "forget.jsonl"),
        "--retain", str(data / "retain.jsonl"), "--holdout", str(data / "holdout.jsonl"),
        "--utility", str(data / "general.jsonl"), "--out", str(bench)])
    for role in ("target", "oracle"):
        stages[role] = run_stage(work, role, work / role, [
            "finetune", "--out", str(work / role), f"benchmark={bench}", f"role={role}",
            f"epochs={args.epochs}"])
    for name in runs_of(methods):
        method = name.removesuffix("-stop")
        # with the calibrated stop the step budget is only a ceiling: the stop ends the run
        stop = (["stop_at_holdout=true", f"optim.steps={STOP_BUDGET}"] if name.endswith("-stop")
                else [])
        stages[name] = run_stage(work, name, work / name, [
            "unlearn", "--out", str(work / name), f"model={work / 'target'}",
            f"method={method}", f"benchmark={bench}", *stop], may_fail=True)
    done = [n for n in runs_of(methods) if not stages[n].get("failed")]
    oracle_json = work / "results" / "oracle.json"
    (work / "results").mkdir(exist_ok=True)
    for name in ["oracle", "target", *done]:
        ref = [] if name == "oracle" else [f"reference={oracle_json}"]
        out = work / "results" / f"{name}.json"
        stages[f"eval-{name}"] = run_stage(work, f"eval-{name}", out, [
            "eval", "--out", str(out), "--name", name, f"model={work / name}",
            f"benchmark={bench}", SUITES, *ref])
    for name in done if args.audits else []:
        out = work / "audits" / f"{name}.json"
        out.parent.mkdir(exist_ok=True)
        stages[f"audit-{name}"] = run_stage(work, f"audit-{name}", out, [
            "audit", str(work / name), "--target", str(work / "target"), "--oracle",
            str(work / "oracle"), "--benchmark", str(bench), "--label", name, "--out", str(out),
            f"audits={args.audits}"])
    return stages


# ---- reading results -------------------------------------------------------------------------
def _find(obj, key: str):
    """The first value stored under `key` anywhere in a JSON tree (breadth first)."""
    queue = [obj]
    while queue:
        cur = queue.pop(0)
        if isinstance(cur, dict):
            if key in cur:
                return cur[key]
            queue.extend(cur.values())
        elif isinstance(cur, list):
            queue.extend(cur)
    return None


def read_stop(model_dir: Path) -> dict | None:
    """The calibrated stop recorded in the unlearned model's provenance (obliviate.json):
    {'step': ..., 'auc': ..., 'raw': {...}}, or None when no 'stop' entry is there."""
    path = model_dir / "obliviate.json"
    if not path.is_file():
        return None
    stop = _find(json.loads(path.read_text()), "stop")
    if not isinstance(stop, dict):
        return None
    step = next((stop[k] for k in ("step", "stopped_at", "stop_step")
                 if isinstance(stop.get(k), int | float)), None)
    # the AUC the run stopped at, not its target or starting value
    auc_keys = ["auc_at_stop", "auc"] + [k for k in stop if "auc" in k.lower()
                                         and not any(w in k for w in ("target", "start"))]
    auc = next((stop[k] for k in auc_keys if isinstance(stop.get(k), int | float)), None)
    return {"step": step, "auc": auc, "reached": stop.get("reached"), "raw": stop}


def _num(v) -> float | None:
    return float(v) if isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) else None


def _f(v) -> str:
    v = _num(v)
    if v is None:
        return "—"
    return f"{v:.3g}" if v != 0 and abs(v) < 1e-2 else f"{v:.3f}"


def _pct(v) -> str:
    v = _num(v)
    return "—" if v is None else f"{100 * v:.0f}%"


def rows(results: dict, stops: dict) -> dict[str, dict]:
    """The numbers of each model's row."""
    oracle_mu = _num(results["oracle"]["metrics"].get("model_utility"))
    out = {}
    for name, res in results.items():
        m = res["metrics"]
        mu = _num(m.get("model_utility"))
        stop = stops.get(name)
        out[name] = {
            "forget_quality": _num(m.get("forget_quality")),
            "model_utility": mu,
            "mu_rel": mu / oracle_mu if mu is not None and oracle_mu else None,
            "forget_prob": _num(m.get("forget_prob")),
            "mia_auc_min_k": _num(m.get("mia_auc_min_k")),
            "privleak": _num(m.get("privleak")),
            "stop_step": stop["step"] if stop else None,
            "stop_auc": stop["auc"] if stop else None,
        }
    # the reference itself: forget quality 1 (a KS test of a sample against itself) and
    # PrivLeak 0 by definition; its results file, written without a reference, has neither
    if out["oracle"]["forget_quality"] is None:
        out["oracle"]["forget_quality"] = 1.0
    if out["oracle"]["privleak"] is None:
        out["oracle"]["privleak"] = 0.0
    return out


# ---- findings --------------------------------------------------------------------------------
def findings(table: dict[str, dict], methods: list[str], stops: dict) -> list[str]:
    """Sentences computed from the numbers: memorisation, then each run's verdict, then what
    the calibrated stop changed."""
    return [*_reference_findings(table), *_run_verdicts(table, methods),
            *_stop_findings(table, methods, stops)]


def _reference_findings(table: dict[str, dict]) -> list[str]:
    """Whether the target memorised, and what forget quality and the MIA can tell apart."""
    out = []
    oracle, target = table["oracle"], table["target"]
    tp, op = target["forget_prob"], oracle["forget_prob"]
    if tp is not None:
        state = ("memorised" if tp >= MEMORISED else
                 f"did not memorise (below {MEMORISED}: raise --epochs)")
        out.append(f"Forget-set probability of the target {_f(tp)}, of the oracle {_f(op)}: the "
                   f"target {state}.")
    tq = target["forget_quality"]
    if tq is not None:
        if tq >= FQ_FLOOR:
            out.append(f"The target's own forget quality is {_f(tq)} (>= {FQ_FLOOR}): on this "
                       "data the truth-ratio test cannot tell the target from the oracle, so the "
                       "runs' forget quality says little; MIA AUC and PrivLeak still can.")
        else:
            out.append(f"The target's forget quality is {_f(tq)} (< {FQ_FLOOR}): the truth-ratio "
                       "test tells the target from the oracle.")
    ta, oa = target["mia_auc_min_k"], oracle["mia_auc_min_k"]
    if ta is not None and oa is not None:
        out.append(f"Min-K% MIA AUC, forget against holdout items: target {_f(ta)}, oracle "
                   f"{_f(oa)} (0.5: members look like non-members).")
    return out


def _run_verdicts(table: dict[str, dict], methods: list[str]) -> list[str]:
    """Each run against the thresholds: over- or under-unlearning, utility, membership."""
    out = []
    op = table["oracle"]["forget_prob"]
    for name in runs_of(methods):
        if name not in table:
            continue  # a failed run: reported with its error
        r = table[name]
        verdicts = []
        fq, rel, pl, fp = r["forget_quality"], r["mu_rel"], r["privleak"], r["forget_prob"]
        if fq is not None and fq < FQ_FLOOR:
            if fp is not None and op is not None:
                way = "over-unlearns" if fp < op else "under-unlearns"
                verdicts.append(f"{way} (forget quality {_f(fq)} < {FQ_FLOOR}; forget prob "
                                f"{_f(fp)} vs the oracle's {_f(op)})")
            else:
                verdicts.append(f"is told apart from the oracle (forget quality {_f(fq)})")
        if rel is not None and rel < MU_FLOOR:
            verdicts.append(f"loses utility ({_pct(rel)} of the oracle's, below "
                            f"{_pct(MU_FLOOR)})")
        if pl is not None and abs(pl) > PRIVLEAK_BAND:
            way = "still leaks membership" if pl < 0 else "is over-unlearned by MIA"
            verdicts.append(f"{way} (PrivLeak {pl:+.1f})")
        if verdicts:
            out.append(f"`{name}` " + "; ".join(verdicts) + ".")
        elif fq is not None:
            out.append(f"`{name}` is within every threshold (forget quality {_f(fq)}, utility "
                       f"{_pct(rel)} of the oracle's, PrivLeak "
                       f"{'—' if pl is None else f'{pl:+.1f}'}).")
    return out


def _stop_findings(table: dict[str, dict], methods: list[str], stops: dict) -> list[str]:
    """What the calibrated stop changed per method, and the best run within utility."""
    out = []
    for m in methods:
        if m not in table or f"{m}-stop" not in table:
            continue
        a, b = table[m], table[f"{m}-stop"]
        if a["forget_quality"] is None or b["forget_quality"] is None:
            continue
        step, stop = b["stop_step"], stops.get(f"{m}-stop")
        if step is None:
            at = "no stop step recorded"
        elif stop and stop.get("reached") is False:
            at = f"holdout level not reached in {step:g} steps"
        else:
            at = f"stopped at step {step:g}"
        util = (f", utility {_pct(a['mu_rel'])} -> {_pct(b['mu_rel'])} of the oracle's"
                if a["mu_rel"] is not None and b["mu_rel"] is not None else "")
        out.append(f"Calibrated stop on `{m}` ({at}): forget quality {_f(a['forget_quality'])} "
                   f"-> {_f(b['forget_quality'])}{util}, forget prob {_f(a['forget_prob'])} "
                   f"-> {_f(b['forget_prob'])}, Min-K% AUC {_f(a['mia_auc_min_k'])} -> "
                   f"{_f(b['mia_auc_min_k'])}.")
    ok = [n for n in table if n not in ("oracle", "target") and table[n]["mu_rel"] is not None
          and table[n]["mu_rel"] >= MU_FLOOR and table[n]["forget_quality"] is not None]
    if ok:
        best = max(ok, key=lambda n: table[n]["forget_quality"])
        out.append(f"Highest forget quality keeping >= {_pct(MU_FLOOR)} of the oracle's "
                   f"utility: `{best}` ({_f(table[best]['forget_quality'])}).")
    else:
        out.append(f"No run keeps {_pct(MU_FLOOR)} of the oracle's utility.")
    return out


# ---- audits ----------------------------------------------------------------------------------
def read_audits(work: Path, runs: list[str]) -> dict[str, dict]:
    """Each run's residual per audit, and which audits ran on a system's base weights."""
    out = {}
    for name in runs:
        res = json.loads((work / "audits" / f"{name}.json").read_text())["audits"]
        out[name] = {a: {"residual": e["residual"] if isinstance(e["residual"], str)
                         else e["residual"]["score"], "on_base": bool(e.get("measured_on"))}
                     for a, e in res.items()}
    return out


def audit_lines(audits: dict[str, dict]) -> list[str]:
    if not audits:
        return []
    names = sorted({a for entry in audits.values() for a in entry})
    lines = ["", "## Robustness audits", "",
             "Residual knowledge under each attack (1 = the target's, 0 = the oracle's; above "
             "0.3 in **bold**). † = an unlearned system's audit run on the base it wraps: the "
             "knowledge still in the weights, which anyone holding the base weights has.", "",
             "| model | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
    for name, entry in audits.items():
        cells = []
        for a in names:
            v = entry.get(a, {}).get("residual")
            cell = (f"**{v:.2f}**" if v > 0.3 else f"{v:.2f}") if isinstance(v, float) else "n/a"
            cells.append(cell + ("†" if entry.get(a, {}).get("on_base") else ""))
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return lines


# ---- output ----------------------------------------------------------------------------------
def _table_rows(table: dict[str, dict], cols: list[tuple[str, str]], stops: dict,
                stages: dict) -> list[str]:
    """One markdown row per model: its numbers, then its stage and evaluation seconds."""
    lines = []
    for name, r in table.items():
        cells = []
        for key, _ in cols:
            v = r[key]
            if key == "mu_rel":
                cells.append(_pct(v))
            elif key == "privleak":
                cells.append("—" if v is None else f"{v:+.1f}")
            elif key == "stop_step":
                # a run that used its whole budget without reaching holdout level
                unreached = stops.get(name) and stops[name].get("reached") is False
                cells.append("—" if v is None else f"{v:g}" + (" (budget)" if unreached else ""))
            else:
                cells.append(_f(v))
        lines.append(f"| {name} | " + " | ".join(cells)
                     + f" | {stages.get(name, {}).get('wall_s', '—')} "
                     f"| {stages.get(f'eval-{name}', {}).get('wall_s', '—')} |")
    return lines


def write(work: Path, args, methods: list[str], results: dict, stops: dict,
          stages: dict) -> None:
    table = rows(results, stops)
    counts = {s: sum(1 for _ in (work / "data" / f"{s}.jsonl").open(encoding="utf-8"))
              for s in ("forget", "retain", "holdout", "general")}
    cols = [("forget_quality", "FQ"), ("model_utility", "MU"), ("mu_rel", "MU / oracle"),
            ("forget_prob", "forget prob"), ("mia_auc_min_k", "MIA AUC (Min-K%)"),
            ("privleak", "PrivLeak"), ("stop_step", "stop step"), ("stop_auc", "LOSS AUC at stop")]
    lines = [
        "# Your model, your data: fictitious shipwrecks", "",
        f"Dataset of `benchmarks/domain_data.py` (seed {args.seed}, {args.entities} trained "
        f"wrecks, {args.forget_fraction:g} of them forgotten): {counts['forget']} forget, {counts['retain']} retain, {counts['holdout']} "
        f"holdout and {counts['general']} general items, turned into a benchmark with "
        "`obliviate benchmark create`. Tiny model fine-tuned for "
        f"{args.epochs:g} epochs (target: forget + retain + general; oracle: retain + general). "
        "Each method unlearns at its defaults (60 steps) and again with `stop_at_holdout=true` "
        f"and a ceiling of `optim.steps={STOP_BUDGET}` "
        "(`-stop`: the run stops once a LOSS attack can no longer tell forget items from "
        "holdout items, AUC at or below `guard.stop_auc`; stop step and AUC from the model's "
        "`obliviate.json`, `(budget)` where the run used every step without getting there). Every model is evaluated with the tofu and mia suites against the oracle "
        "(mia: forget items as members, holdout items as non-members). Measured by "
        "`python benchmarks/own_data.py`; each stage is its own process.", "",
        "| model | " + " | ".join(c for _, c in cols) + " | stage s | eval s |",
        "|---|" + "---|" * (len(cols) + 2)]
    lines += _table_rows(table, cols, stops, stages)
    lines += ["", "Stage wall time (s) and peak RSS (MB): "
              + ", ".join(f"{n} {s['wall_s']}" + (f" / {s['peak_rss_mb']}" if "peak_rss_mb" in s
                                                   else "")
                          for n, s in stages.items()) + ".",
              "", "## Findings", "",
              f"Thresholds: forget quality < {FQ_FLOOR}, utility < {_pct(MU_FLOOR)} of the "
              f"oracle's, |PrivLeak| > {PRIVLEAK_BAND:g}. Over- or under-unlearning is read from "
              "the forget-set probability against the oracle's.", ""]
    lines += [f"- {s}" for s in findings(table, methods, stops)]
    lines += [f"- `{n}` failed: {st['failed']}" for n, st in stages.items() if st.get("failed")]
    audits = read_audits(work, [n for n in table if n not in ("oracle", "target")]) if args.audits else {}
    lines += audit_lines(audits)
    prov = provenance()
    lines += ["", line(prov)]
    text = "\n".join(lines) + "\n"
    print(text)
    args.results.mkdir(parents=True, exist_ok=True)
    (args.results / f"{args.name}.md").write_text(text)
    (args.results / f"{args.name}.json").write_text(json.dumps(
        {"provenance": prov,
         "options": {"entities": args.entities, "forget_fraction": args.forget_fraction,
                     "seed": args.seed, "epochs": args.epochs, "methods": methods},
         "items": counts, "stages": stages, "rows": table,
         "stops": {n: (s["raw"] if s else None) for n, s in stops.items()},
         "metrics": {n: r["metrics"] for n, r in results.items()},
         "audits": audits}, indent=1) + "\n")


if __name__ == "__main__":
    main()
