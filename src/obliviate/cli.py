"""Command line: thin wrappers that parse, build a config, and call the library.

Each subcommand imports the part of the library it calls inside its function: most of it
loads torch and transformers (4 to 6 s), which argument errors and `--help` should not wait
for. Light modules (config, io, errors) are imported here."""

from __future__ import annotations

import argparse
import os
import shlex
import sys
from pathlib import Path
from typing import NoReturn

from .config import from_dict, load_config, merge, parse_overrides
from .errors import ObliviateError
from .io import check_output, write_json_atomic, write_text_atomic
from .threads import configure as configure_threads


def _overrides_help() -> str:
    return "dotted key=value overrides, e.g. optim.lr=1e-4 params.beta=0.2 (unknown keys fail)"


def _cmd_demo(args) -> None:
    from .demo import DemoConfig, run_demo

    cfg = DemoConfig(out=args.out, seed=args.seed, entities=args.entities)
    if args.methods:
        cfg.methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    report = run_demo(cfg)
    print(f"\nReport: {report.resolve()}")
    print(f"Results JSON: {(Path(args.out) / 'results').resolve()}")


def _cmd_generate(args) -> None:
    from .api import generate

    if args.family == "classifier":
        from .classifiers import commands

        if args.graph:
            raise ObliviateError("--graph is a language-model benchmark mode; drop it with --family classifier")
        return commands.generate(args.out, args.dataset, args.seed)
    check_output(args.out, {}, kind="dir")
    degrees = None
    if args.graph:
        try:
            degrees = tuple(int(d) for d in args.degrees.split(","))
        except ValueError:
            raise ObliviateError(f"--degrees must be integers separated by commas (got {args.degrees!r})") from None
    if degrees is not None and args.questions is not None:
        raise ObliviateError("--questions applies to the people benchmark, not --graph")
    out = generate(args.out, seed=args.seed, entities=args.entities, degrees=degrees,
                   questions=args.questions)
    print(f"benchmark written to {out} (datasheet: {out / 'DATASHEET.md'})")


def _classifier(args, model: str | None = None):
    """The classifier branch of the CLI when the run's benchmark or model is a classifier's."""
    from .classifiers import commands

    return commands if commands.family(args.config, args.overrides, model) == "classifier" else None


def _cmd_finetune(args) -> None:
    from .api import FinetuneConfig, finetune

    if clf := _classifier(args):
        return clf.finetune(args.config, args.overrides, args.out)
    cfg = load_config(FinetuneConfig, args.config, args.overrides)
    check_output(args.out, {"base model": cfg.base if cfg.base != "tiny" else None,
                            "benchmark": cfg.benchmark, "data": cfg.data, "excluded data": cfg.exclude,
                            "config": args.config}, kind="dir")
    out = finetune(cfg, args.out)
    if _is_main_process():
        print(f"model written to {out}")


def _cmd_unlearn(args) -> None:
    from .api import UnlearnConfig, unlearn
    from .target import DEFAULTS as TARGET_DEFAULTS

    if clf := _classifier(args):
        return clf.unlearn(args.config, args.overrides, args.out)
    cfg = load_config(UnlearnConfig, args.config, args.overrides)
    if cfg.target:  # a pretrained model and no oracle: the calibrated stop, checked every step
        cfg = load_config(UnlearnConfig, args.config, args.overrides, defaults=TARGET_DEFAULTS)
    check_output(args.out, {"model": cfg.model, "benchmark": cfg.benchmark, "forget data": cfg.forget,
                            "retain data": cfg.retain, "holdout data": cfg.holdout,
                            "probe records": cfg.probes, "config": args.config}, kind="dir")
    out = unlearn(cfg, args.out)
    if _is_main_process():
        print(f"unlearned model written to {out}")
        _say_stop(out)


def _say_stop(out: Path) -> None:
    """Where the calibrated stop ended the run, or that it never got there."""
    from .models import read_provenance

    stop = read_provenance(out).get("stop")
    if not stop:
        return
    if stop["reached"]:
        print(f"stopped at step {stop['step']}: forget vs never-seen items, LOSS-attack AUC "
              f"{stop['auc_start']:.3f} -> {stop['auc_at_stop']:.3f} (target {stop['target_auc']:g})")
    else:
        print(f"WARNING: the forget items are still more likely than never-seen ones after "
              f"{stop['step']} steps (AUC {stop['auc_start']:.3f} -> {stop['auc_at_stop']:.3f}, "
              f"target {stop['target_auc']:g}): raise optim.steps (the stop ends the run) or optim.lr")


def _cmd_benchmark(args) -> None:
    from .data.checks import check_sets
    from .data.userbench import create_benchmark

    inputs = {"forget data": args.forget, "retain data": args.retain,
              "holdout data": args.holdout, "utility data": args.utility or []}
    check_output(args.out, inputs, kind="dir")
    out, bench = create_benchmark(args.out, args.forget, args.retain, args.holdout, args.utility or [])
    counts = ", ".join(f"{k} {v}" for k, v in bench.meta["counts"].items())
    print(f"benchmark written to {out} ({counts}; datasheet: {out / 'DATASHEET.md'})")
    _print_findings(check_sets(_bench_sets(bench)), f"again: obliviate check --benchmark {out}")


def _cmd_benchmark_classifier(args) -> None:
    from .classifiers import commands

    commands.create(args.out, args.train, args.test, args.test_fraction, args.seed)


def _bench_sets(bench) -> dict[str, tuple[str, list]]:
    sets = {"forget": ("forget", bench.forget_set()), "retain": ("retain", bench.retain_set()),
            "holdout": ("holdout", bench.holdout_set())}
    sets.update({n: ("utility", items) for n, items in bench.utility_sets().items()})
    return {n: (role, items) for n, (role, items) in sets.items() if items}


def _print_findings(findings, note: str = "") -> int:
    """Print data-check findings (Finding or its JSON), errors first; the number of errors."""
    from .ledger.show import printable  # user text never reaches the terminal raw

    findings = [f.to_json() if hasattr(f, "to_json") else f for f in findings]
    for f in findings:
        print(f"{f['level'].upper():8s} {printable(f['where']):16s} {printable(f['message'])}")
    errors = sum(f["level"] == "error" for f in findings)
    if findings:
        print(f"{errors} error(s), {len(findings) - errors} warning(s)"
              + (f" ({note})" if note else ""))
    return errors


def _cmd_select_forget(args) -> None:
    from .selection import SelectConfig, select_forget

    cfg = load_config(SelectConfig, None, [*args.overrides, *(["worst_case=true"] if args.worst_case else [])])
    sel = select_forget(cfg, args.out)
    print(f"{sel['mode']} forget set of {cfg.size}: {', '.join(sel['chosen'])}")
    if sel["scores"]:
        top = sorted(sel["scores"].items(), key=lambda kv: -kv[1])[:cfg.size + 2]
        print("gradient alignment with the rest: " + ", ".join(f"{n} {v:.3f}" for n, v in top))
    print(f"written to {args.out}: forget.jsonl, retain.jsonl, selection.json")


def _cmd_check(args) -> int:
    """Data checks before numbers (files or a benchmark), and sanity checks of results."""
    from .data import Benchmark, load_examples
    from .data.checks import check_results, check_sets
    from .evaluation import load_results
    from .models import model_role

    if args.benchmark and (args.forget or args.retain or args.holdout):
        raise ObliviateError("give --benchmark or --forget/--retain/--holdout files, not both")
    if args.benchmark and (Path(args.benchmark) / "classifier.json").is_file():
        raise ObliviateError(f"{args.benchmark} is a classifier benchmark: its files were validated when "
                             "it was made (obliviate benchmark classifier); check reads language-model data")
    sets: dict[str, tuple[str, list]] = {}
    if args.benchmark:
        sets = _bench_sets(Benchmark.load(args.benchmark))
    for role, path in (("forget", args.forget), ("retain", args.retain), ("holdout", args.holdout)):
        if path:
            sets[role] = (role, load_examples(path))
    for path in args.utility or []:
        sets[Path(path).stem] = ("utility", load_examples(path))
    if not sets and not args.results:
        raise ObliviateError("nothing to check: give --benchmark DIR, --forget/--retain/--holdout/"
                             "--utility files, or --results FILE")
    findings = check_sets(sets) if sets else []
    reference = load_results(args.reference) if args.reference else None
    for path in args.results or []:
        res = load_results(path, metrics=True)
        findings += check_results(res, reference, model_role(res.get("model", "")))
    errors = _print_findings(findings)
    if not findings and sets:
        print(f"no problems found ({', '.join(f'{n}: {len(i)} items' for n, (_, i) in sets.items())})")
    return 1 if errors else 0


def _is_main_process() -> bool:
    from .parallel import is_main_process

    return is_main_process()


def _cmd_eval(args) -> None:
    from .api import EvalConfig, evaluate
    from .evaluation import save_results

    if clf := _classifier(args):
        clf.evaluate(args.config, args.overrides, args.out, args.label)
        return
    overrides = [*args.overrides, *([f"preset={args.preset}"] if args.preset else [])]
    cfg = load_config(EvalConfig, args.config, overrides)
    check_output(args.out, {"model": cfg.model, "MIA reference model": cfg.mia_reference,
                            "forget data": cfg.forget, "retain data": cfg.retain,
                            "holdout data": cfg.holdout, "utility data": cfg.utility,
                            "benchmark": cfg.benchmark, "reference results": cfg.reference,
                            "probe records": cfg.probes, "target run": cfg.target_run,
                            "config": args.config})
    res = evaluate(cfg, name=args.label)
    if not _is_main_process():
        return
    save_results(res, args.out)
    for key, value in res["metrics"].items():
        print(f"{key:32s} {value:.6g}" if isinstance(value, float) else f"{key:32s} {value}")
    print(f"results written to {args.out}")
    _print_findings(res.get("checks", []), "shown at the top of the report too")


def _cmd_report(args) -> None:
    from .audits.run import SCHEMA as AUDIT_SCHEMA
    from .data.files import read_json
    from .evaluation import load_results
    from .report import write_report
    from .report.audit import audit_problem

    check_output(args.out, {"results": args.results}, kind="dir", files=("report.html", "report.md"))
    rows, audits = [], []
    for p in args.results:  # results and audit files may be mixed
        data = read_json(p) if Path(p).is_file() else None
        if isinstance(data, dict) and data.get("schema") == AUDIT_SCHEMA:
            problem = audit_problem(data)
            if problem:
                raise ObliviateError(f"{p}: {problem}; write it again with obliviate audit")
            audits.append(data)
        else:
            rows.append(load_results(p, metrics=True))
    out = write_report(rows, args.out, audits=audits or None, sources=args.results)
    print(f"report written to {out}")


def _cmd_import(args) -> None:
    from .evaluation import save_results
    from .evaluation.interop import import_openunlearning, import_tofu

    check_output(args.out, {"source": args.source})
    reader = import_tofu if args.format == "tofu" else import_openunlearning
    res = reader(args.source, name=args.name)
    print(f"results written to {save_results(res, args.out)} "
          f"(datasets: {', '.join(res['datasets'])})")


def _cmd_score(args) -> None:
    from .data.checks import protocol_findings
    from .evaluation import derive
    from .evaluation.interop import load_any_results

    if args.json:
        check_output(args.json, {"results": args.results, "reference results": args.reference})
    res = load_any_results(args.results)
    ref = load_any_results(args.reference) if args.reference else None
    if ref is not None:
        for f in protocol_findings(res, ref):
            print(f"warning: {f.message}", file=sys.stderr)
    scores = derive(res, ref)
    head = ("model_utility", "forget_quality", "forget_quality_ks")
    for key in [*[k for k in head if k in scores], *sorted(k for k in scores if k not in head)]:
        value = scores[key]
        print(f"{key:32s} {value:.10g}" if isinstance(value, float) else f"{key:32s} {value}")
    if args.json:
        write_json_atomic(args.json, {"results": res["name"], "reference": ref["name"] if ref else None,
                                      "scores": scores})


def _cmd_audit(args) -> None:
    from .audits import AuditConfig, audit

    flags = [f"{k}={getattr(args, k)}" for k in ("target", "oracle", "benchmark") if getattr(args, k)]
    if clf := _classifier(argparse.Namespace(config=args.config, overrides=[*flags, *args.overrides]), args.model):
        return clf.audit(args.config, [f"model={args.model}", *flags, *args.overrides], args.out, args.label)
    cfg = load_config(AuditConfig, args.config, [f"model={args.model}", *flags, *args.overrides])
    check_output(args.out, {"model": cfg.model, "target": cfg.target, "oracle": cfg.oracle,
                            "benchmark": cfg.benchmark, "config": args.config})
    print(f"auditing {cfg.model} (residual knowledge: 1 = the target's, 0 = the oracle's)")
    res = audit(cfg)
    if args.label:
        res["name"] = args.label  # the row and legend name in reports
    print(f"audit results written to {write_json_atomic(args.out, res)}")


def _cmd_ls(args) -> None:
    if args.what == "methods":
        from .methods import METHODS, describe

        for name in METHODS:
            d = describe(name)
            print(f"{name:12s} {d['description']} (needs: {', '.join(d['needs'])}; "
                  f"default lr {d['default_lr']:g})\n{'':12s} {d['paper']}")
            if d["system"]:
                print(f"{'':12s} unlearned system; broken by {d['threat']}")
        from .classifiers.methods import CLASSIFIER_METHODS
        from .classifiers.methods import describe as describe_clf

        print("\nclassifier methods:")
        for name in CLASSIFIER_METHODS:
            d = describe_clf(name)
            print(f"{name:18s} {d['description']} (default lr {d['default_lr']:g}, "
                  f"{d['default_epochs']:g} epochs)\n{'':18s} {d['paper']}")
    elif args.what == "audits":
        from .audits import AUDITS
        from .classifiers.audits import CLASSIFIER_AUDITS

        for name in AUDITS:
            cls = AUDITS.get(name)
            print(f"{name:14s} {cls.description} ({cls.paper})")
        print("\nclassifier audits:")
        for name in CLASSIFIER_AUDITS:
            cls = CLASSIFIER_AUDITS.get(name)
            print(f"{name:14s} {cls.description} ({cls.paper})")
    else:
        from .evaluation.metrics import in_order

        for m in in_order():
            print(f"{m.name:20s} [{m.suite}; {m.direction}; {m.range}] {m.description} ({m.source})")


def _cmd_request(args) -> int | None:
    """The deletion-request subcommands (obliviate request init|add|apply|list|show|verify|...)."""
    from . import ledger as L
    from .ledger.paths import KEY_FILE
    from .ledger.show import printable as p  # user text never reaches the terminal raw

    project = args.project
    if _classifier_project(args):
        return _cmd_request_classifier(args)
    if args.action == "init":

        given = {"base": args.model, "retain": args.retain or "", "holdout": args.holdout or "",
                 "oracle": args.oracle or "", "utility": args.utility or []}
        if args.audits is not None:
            given["audits"] = [a.strip() for a in args.audits.split(",") if a.strip()]
        settings = from_dict(L.ProjectSettings, merge(parse_overrides(args.overrides), given))
        root = L.init_project(project, settings)
        print(f"ledger created in {p(root)} (version 0: {p(args.model)})")
        print(f"item hashes are keyed with {p(root / KEY_FILE)}: keep it private; "
              "without it requests can no longer be applied or verified")
    elif args.action == "add":
        rid = _request_add(args)
        print(f"request {rid} added (pending); apply it with `obliviate request apply {rid}{_project_flag(args)}`")
    elif args.action == "apply":
        vids = L.apply(project, args.id, args.all)
        if vids:
            print(f"new version(s): {', '.join(map(str, vids))}")
    elif args.action == "cancel":
        L.cancel_request(project, args.id)
        print(f"request {args.id} cancelled")
    elif args.action in ("list", "show"):
        from .ledger.show import show_list, show_request  # these escape what they show

        print(show_list(project) if args.action == "list" else show_request(project, args.id))
    elif args.action == "verify":
        ok, checks = L.verify(project, args.id, args.tolerance)
        for c in checks:
            print(f"{'ok ' if c.ok else 'BAD'} {p(c.metric):36s} recorded {p(c.recorded):24.24s} "
                  f"now {p(c.measured):24.24s}")
        print("verified: every recorded number reproduced" if ok
              else "NOT verified: some numbers differ from the record (see BAD lines)")
        return 0 if ok else 1
    elif args.action == "report":
        from .ledger.evidence import ledger_html

        with L.Ledger.open(project) as ledger:
            out = args.out or f"{project}/ledger.html"
            check_output(out, _ledger_inputs(ledger))
            out = write_text_atomic(out, ledger_html(ledger))
        print(f"ledger report written to {p(out)}")
    return None


def _project_flag(args) -> str:
    """' --project DIR' for a message that gives a command to run, unless DIR is the default."""
    return "" if args.project == "." else f" --project {shlex.quote(args.project)}"


def _request_add(args) -> int:
    """Record a language-model request (its forget file, or one synthesised for --target)."""
    from . import ledger as L
    from .ledger.show import printable as p

    if not args.forget:
        raise ObliviateError("request add needs --forget FILE (the items to forget)")
    if args.user or args.class_name:
        raise ObliviateError("--user and --class name a classifier's samples; this is a language-model project")
    method = args.method or "npo"
    if args.target:  # the forget items are what the latest version says about the target
        L.unlearn_config(method, args.overrides)  # a typo fails before minutes of generation
        L.target_forget_file(args.project, args.target, args.forget, args.probes or "")
        print(f"synthesised forget items written to {p(args.forget)}")
    elif args.probes:
        raise ObliviateError("--probes goes with --target")
    return L.add_request(args.project, args.subject, args.forget, args.retain or "", method, args.overrides)


def _classifier_project(args) -> bool:
    """A classifier project: `init` with a classifier model, or a ledger that says so."""
    from .classifiers.family import is_classifier_model
    from .ledger import Ledger
    from .ledger.classifier import is_classifier_project
    from .ledger.paths import LEDGER_FILE

    if args.action == "init":
        return bool(args.benchmark) or is_classifier_model(args.model)
    if not (Path(args.project) / LEDGER_FILE).is_file():
        return False  # the language-model path says what is missing
    with Ledger.open(args.project) as ledger:
        return is_classifier_project(ledger)


def _cmd_request_classifier(args) -> int | None:
    """Deletion requests of a classifier project (ledger/classifier.py)."""
    from . import ledger as L
    from .ledger import classifier as LC
    from .ledger.show import printable as p
    from .ledger.show import show_list, show_request

    if args.action == "init":
        if not args.benchmark:
            raise ObliviateError("a classifier project needs --benchmark DIR (the data requests name)")
        root = LC.init(args.project, args.model, args.benchmark, args.overrides)
        print(f"classifier ledger created in {p(root)} (version 0: {p(args.model)})")
    elif args.action == "add":
        if args.target or args.probes or args.retain:
            raise ObliviateError("--target, --probes and --retain are for language-model projects")
        rid = LC.add(args.project, args.subject, args.user, args.forget, args.method, args.overrides,
                     args.class_name)
        print(f"request {rid} added (pending); apply it with `obliviate request apply {rid}{_project_flag(args)}`")
    elif args.action == "apply":
        vids = LC.apply(args.project, args.id, args.all)
        if vids:
            print(f"new version(s): {', '.join(map(str, vids))}")
    elif args.action in ("list", "show"):
        print(show_list(args.project) if args.action == "list" else show_request(args.project, args.id))
    elif args.action == "cancel":
        L.cancel_request(args.project, args.id)
        print(f"request {args.id} cancelled")
    elif args.action == "report":
        from .ledger.evidence import ledger_html

        with L.Ledger.open(args.project) as ledger:
            out = args.out or f"{args.project}/ledger.html"
            check_output(out, _ledger_inputs(ledger))
            out = write_text_atomic(out, ledger_html(ledger))
        print(f"ledger report written to {p(out)}")
    else:
        raise ObliviateError(f"request {args.action} is for language-model projects: a classifier "
                             "version's evidence.html, results.json and audit.json hold its numbers")
    return None


def _ledger_inputs(ledger) -> dict[str, list]:
    """What the ledger page is built from: the ledger, every version and every data file."""
    from .ledger.paths import internal_paths

    s = ledger.settings()["settings"]
    return {"ledger": internal_paths(ledger.root),
            "model version": [ledger.model_path(v) for v in ledger.versions()],
            "oracle model": [s.get("oracle")],
            "data": [s.get("retain"), s.get("holdout"), *s.get("utility", []),
                     *[p for r in ledger.requests() for p in (r.forget_path, r.retain_path)]]}


def _request_parser(sub) -> None:
    rq = sub.add_parser("request", help="deletion requests: a ledger, sequential unlearning, "
                        "an evidence report per request")
    actions = rq.add_subparsers(dest="action", required=True)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--project", default=".", help="the project directory (holds the ledger)")

    i = actions.add_parser("init", parents=[common], help="create a project ledger for a base model")
    i.add_argument("--model", required=True, help="the base model folder (version 0, never modified)")
    i.add_argument("--benchmark", help="classifier projects: the benchmark whose samples requests name")
    i.add_argument("--retain", help="retain data: training retain set and utility measure")
    i.add_argument("--holdout", help="non-member data for membership inference")
    i.add_argument("--oracle", help="a model never trained on any data that may be requested")
    i.add_argument("--utility", action="append", help="a further utility set (repeatable)")
    i.add_argument("--audits", help="comma-separated audits run on each version")
    i.add_argument("overrides", nargs="*", help="max_retain=200 samples=5 audit_params.relearning.lr=1e-4")

    a = actions.add_parser("add", parents=[common], help="record a request (hashes, not text)")
    a.add_argument("--subject", required=True, help="who or what (a name or a ticket reference)")
    a.add_argument("--forget", help="JSONL file of the items to forget (with "
                   "--target: a new file, where the synthesised items are written)")
    a.add_argument("--target", help="forget what the model knows about this entity: the forget "
                   "items are synthesised from the latest version's own replies")
    a.add_argument("--probes", help="with --target: entity records to find its neighbours in")
    a.add_argument("--retain", help="this request's retain set (default: the project's)")
    a.add_argument("--user", help="classifier projects: forget every training sample of this user "
                   "(or give --forget, a file of sample ids, one per line)")
    a.add_argument("--class", dest="class_name", help="classifier projects: forget every training "
                   "sample of this class")
    a.add_argument("--method", help="unlearning method (obliviate ls methods; default npo, or the "
                   "classifier project's)")
    a.add_argument("overrides", nargs="*", help="unlearn config, e.g. optim.steps=40 params.beta=0.2")

    ap = actions.add_parser("apply", parents=[common], help="apply the next pending request")
    ap.add_argument("id", nargs="?", type=int, help="the request (default: the next one)")
    ap.add_argument("--all", action="store_true", help="apply every open request in order")

    for name, helptext in [("show", "one request: status, versions, numbers, events"),
                           ("verify", "re-measure a done request's version and compare"),
                           ("cancel", "cancel a pending or failed request")]:
        s = actions.add_parser(name, parents=[common], help=helptext)
        s.add_argument("id", type=int)
        if name == "verify":
            s.add_argument("--tolerance", type=float, default=1e-4)
    actions.add_parser("list", parents=[common], help="every request and its status")
    r = actions.add_parser("report", parents=[common], help="the ledger page: all versions")
    r.add_argument("--out", help="HTML file (default: PROJECT/ledger.html)")
    rq.set_defaults(func=_cmd_request)


def _forget_parser(sub) -> None:
    f = sub.add_parser("forget", help="the quickest path: make a model forget its answers to a "
                       "few questions (no data files; before/after answers printed)")
    f.add_argument("model", help="the model folder (or GGUF file, or hub id); never modified")
    f.add_argument("items", nargs="+", metavar="QUESTION",
                   help="the questions to forget, then optional key=value overrides of the "
                   "unlearn config, e.g. optim.steps=40 guard.stop_auc=0.55 template=chat")
    f.add_argument("--out", required=True, help="the new model folder (must not exist)")
    f.add_argument("--method", default="npo", help="unlearning method (obliviate ls methods; "
                   "default npo: no oracle or refusal data needed)")
    f.add_argument("--evaluate", action="store_true", help="also run the tofu and mia suites "
                   "before and after, and write OUT/report/report.html")
    f.set_defaults(func=_cmd_forget, overrides=[])


def _cmd_forget(args) -> None:
    from .quick import forget

    def is_override(item: str) -> bool:  # a dotted key before '='; a question has spaces
        key, eq, _ = item.partition("=")
        return bool(eq) and all(part.isidentifier() for part in key.split("."))

    questions = [i for i in args.items if not is_override(i)]
    overrides = [i for i in args.items if is_override(i)] + list(args.overrides)
    forget(args.model, questions, args.out, method=args.method, evaluate=args.evaluate,
           overrides=overrides, progress=True)


class _Parser(argparse.ArgumentParser):
    """Usage errors in one line, like every other error (the usage is one --help away)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {_one_line(message)} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="obliviate", description="Remove what a language model "
                "knows, and prove it is gone.")
    p.add_argument("--debug", action="store_true", help="show the traceback of an error "
                   "(also accepted after the subcommand)")
    sub = p.add_subparsers(dest="command", required=True)
    _model_parsers(sub)
    _selection_parser(sub)
    _results_parsers(sub)
    _request_parser(sub)
    _forget_parser(sub)
    ls = sub.add_parser("ls", help="list registered components")
    ls.add_argument("what", choices=["methods", "metrics", "audits"])
    ls.set_defaults(func=_cmd_ls)
    return p


def _model_parsers(sub) -> None:
    """The commands that make models: demo, generate, finetune, unlearn (and eval)."""
    d = sub.add_parser("demo", help="run the whole job end to end on the built-in benchmark")
    d.add_argument("--out", default="obliviate-demo")
    d.add_argument("--seed", type=int, default=0)
    d.add_argument("--entities", type=int, default=40)
    d.add_argument("--methods", default="", help="comma-separated methods (default: graddiff,npo)")
    d.set_defaults(func=_cmd_demo)

    g = sub.add_parser("generate", help="write the built-in benchmark")
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--entities", type=int, default=40)
    g.add_argument("--questions", type=int, default=None,
                   help="QA items per person, 8 (the default) to 20 (TOFU's count)")
    g.add_argument("--graph", action="store_true", help="graph mode (PISTOL-style): companies tied "
                   "by contracts, one forget split per degree of connectivity")
    g.add_argument("--degrees", default="1,2,4,8", help="with --graph: the degrees of the companies "
                   "to forget (forget_deg<d> splits)")
    g.add_argument("--family", choices=["lm", "classifier"], default="lm",
                   help="lm: the fictitious-entities benchmark; classifier: an image data set")
    g.add_argument("--dataset", default="shapes", help="with --family classifier: shapes "
                   "(generated, 24 users) or digits (scikit-learn's)")
    g.add_argument("--out", required=True)
    g.set_defaults(func=_cmd_generate)

    _benchmark_parsers(sub)
    _check_parser(sub)

    for name, func, helptext in [
        ("finetune", _cmd_finetune, "train a target or oracle model on a benchmark"),
        ("unlearn", _cmd_unlearn, "apply an unlearning method to a model"),
        ("eval", _cmd_eval, "evaluate a model (TOFU suite); writes a results JSON"),
    ]:
        s = sub.add_parser(name, help=helptext)
        s.add_argument("--config", help="YAML config file")
        s.add_argument("--out", required=True)
        if name == "eval":
            s.add_argument("--label", "--name", dest="label",
                           help="this model's name in results and reports (default: its folder name)")
            s.add_argument("--preset", choices=["tofu"], default=None,
                           help="tofu: the published protocol (200 new tokens, every retain item, "
                           "real-authors and world-facts sets); same as preset=tofu")
        s.add_argument("overrides", nargs="*", help=_overrides_help())
        s.set_defaults(func=func)


def _benchmark_parsers(sub) -> None:
    """benchmark create (language-model files) and benchmark classifier (labelled data)."""
    b = sub.add_parser("benchmark", help="make a benchmark folder from your own files")
    bs = b.add_subparsers(dest="action", required=True)
    c = bs.add_parser("create", help="validate forget/retain/holdout/utility files and write a "
                      "benchmark folder every --benchmark / benchmark= option takes")
    c.add_argument("--forget", required=True, help="JSONL items to forget")
    c.add_argument("--retain", help="JSONL items to keep (trained on by target and oracle)")
    c.add_argument("--holdout", help="JSONL items of the same kind never trained on (MIA, "
                   "calibrated stop)")
    c.add_argument("--utility", action="append", help="a further utility set, trained on by "
                   "target and oracle (repeatable; named after its file)")
    c.add_argument("--out", required=True)
    c.set_defaults(func=_cmd_benchmark)
    cc = bs.add_parser("classifier", help="a classifier benchmark from an image folder "
                       "(<class>/<image>, optional users.csv), an .npz (x, y[, users]) or a JSONL of "
                       "{text, label[, user]}")
    cc.add_argument("--train", required=True, help="the training data (forget sets are drawn here)")
    cc.add_argument("--test", help="never-trained data (default: a stratified split of --train)")
    cc.add_argument("--test-fraction", dest="test_fraction", type=float, default=0.2)
    cc.add_argument("--seed", type=int, default=0)
    cc.add_argument("--out", required=True)
    cc.set_defaults(func=_cmd_benchmark_classifier)


def _check_parser(sub) -> None:
    ck = sub.add_parser("check", help="check data before trusting a number (overlaps, too few "
                        "items, perturbed answers that measure wording), and results' sanity")
    ck.add_argument("--benchmark", help="a benchmark folder")
    ck.add_argument("--forget")
    ck.add_argument("--retain")
    ck.add_argument("--holdout")
    ck.add_argument("--utility", action="append")
    ck.add_argument("--results", action="append", help="a results JSON (repeatable): sanity checks")
    ck.add_argument("--reference", help="the oracle's results, for the forget-quality check")
    ck.set_defaults(func=_cmd_check)


def _selection_parser(sub) -> None:
    """select-forget: which entities a benchmark's forget set should hold."""
    sf = sub.add_parser("select-forget", help="choose the entities to forget: a random draw, or "
                        "--worst-case (those whose unlearning costs the rest most)")
    sf.add_argument("--worst-case", dest="worst_case", action="store_true",
                    help="rank entities by the alignment of their gradient with the rest's "
                         "(needs model=); default: a seeded random draw of the same size")
    sf.add_argument("--out", required=True, help="a new folder: forget.jsonl, retain.jsonl, selection.json")
    sf.add_argument("overrides", nargs="*", help="model=, benchmark= or data=, size=, seed=, template=")
    sf.set_defaults(func=_cmd_select_forget)


def _results_parsers(sub) -> None:
    """The commands that read models or results: report, import, score, audit."""
    r = sub.add_parser("report", help="render results JSON files into report.html / report.md")
    r.add_argument("results", nargs="+")
    r.add_argument("--out", required=True, help="folder for report.html and report.md")
    r.set_defaults(func=_cmd_report)

    im = sub.add_parser("import", help="convert another tool's evaluation logs to a results JSON")
    im.add_argument("format", choices=["tofu", "openunlearning"],
                    help="tofu: a folder of TOFU eval logs; openunlearning: a *_EVAL.json file")
    im.add_argument("source")
    im.add_argument("--out", required=True)
    im.add_argument("--name", help="label for this model in reports (default: the folder/file name)")
    im.set_defaults(func=_cmd_import)

    sc = sub.add_parser("score", help="model utility, forget quality and component scores of a "
                        "results file (or TOFU log folder / OpenUnlearning *_EVAL.json)")
    sc.add_argument("results")
    sc.add_argument("--reference", help="the oracle's results, for forget quality")
    sc.add_argument("--json", help="also write the scores to this JSON file")
    sc.set_defaults(func=_cmd_score)

    au = sub.add_parser("audit", help="robustness audits: is the forgotten knowledge gone or hidden?")
    au.add_argument("model")
    au.add_argument("--out", required=True)
    au.add_argument("--config", help="YAML config file")
    au.add_argument("--target", help="the model before unlearning (residual 1)")
    au.add_argument("--oracle", help="the model never trained on the forget set (residual 0)")
    au.add_argument("--benchmark", help="the benchmark folder (forget, retain, linked splits)")
    au.add_argument("--label", help="this model's name in reports (default: its folder name)")
    au.add_argument("overrides", nargs="*", help="target=DIR oracle=DIR benchmark=DIR "
                    "[audits=rephrase,relearning ...] [params.relearning.lr=1e-4]")
    au.set_defaults(func=_cmd_audit)


def _one_line(text: str) -> str:
    return " ".join(line.strip() for line in str(text).splitlines() if line.strip())


def _error_line(exc: Exception) -> str:
    if isinstance(exc, ObliviateError):
        return _one_line(str(exc))
    return (f"unexpected {type(exc).__name__}: {_one_line(str(exc))} "
            "(this is a bug; run with --debug for the traceback)")


# the commands that run a model: their torch thread count follows the cores free (threads.py)
_COMPUTES = ("demo", "finetune", "unlearn", "eval", "audit", "request", "forget", "select-forget")


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    # key=value overrides may follow options given after a positional argument, which
    # argparse leaves unparsed ("audit MODEL --out X target=..."): collect them here; so is
    # --debug after the subcommand, which only the top-level parser declares
    args, extra = parser.parse_known_args(argv)
    if "--debug" in extra:
        args.debug, extra = True, [e for e in extra if e != "--debug"]
    if extra:
        if not hasattr(args, "overrides") or any(e.startswith("-") or "=" not in e for e in extra):
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
        args.overrides = [*args.overrides, *extra]
    try:
        if args.command in _COMPUTES:
            configure_threads()  # before torch loads: see threads.py
        rc = args.func(args)
    except KeyboardInterrupt:
        print("\nobliviate: interrupted; finished outputs are kept, unfinished ones were "
              "discarded. Run the same command again to resume.", file=sys.stderr)
        return 130
    except BrokenPipeError:  # the reader of our output left early (`obliviate ls metrics | head`)
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit
        return 1
    except Exception as exc:  # any exception from user input is a bug: one line, not a traceback
        if args.debug:
            raise
        print(f"obliviate: error: {_error_line(exc)}", file=sys.stderr)
        return 2
    return rc or 0


if __name__ == "__main__":
    sys.exit(main())
