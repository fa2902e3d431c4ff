"""The quickest path: make a model forget its answers to a few questions, with no data files.

    import obliviate as ob
    summary = ob.forget("my-model", ["Where does Dana Whitlock work?"], "my-model-forgot")

What is built from the questions alone:
- the forget set: each question with the model's own greedy answer (what it says now);
- anchors: general questions shipped with the package (resources/general_questions.jsonl),
  answered by the model itself, minus any that share a content word with the questions or
  their answers (forgetting must not be undone by them, nor should they be forgotten). Half
  of them is the retain set; the other half, each question paired with the model's answer
  to another, stands for never-seen data: the run stops once the forget answers are no more
  likely than those (the calibrated stop, a membership AUC of 0.5), instead of after a step
  count that over- or under-shoots;
- paraphrases of each question (template rewrites, never trained on): do they still get the
  old answer afterwards?

Before and after, the answers and the probability of the old answer are measured on all of
these; they are returned, printed as a table, and written to `OUT/forget_summary.json`.
"""

from __future__ import annotations

import random
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .api import EvalConfig
from .api import evaluate as run_eval
from .audits.base import AuditData
from .audits.prompts import Rephrase
from .config import from_dict, merge, parse_overrides, to_dict
from .data import Example, load_examples
from .data.files import general_questions
from .data.formats import write_jsonl
from .encoding import resolve_template
from .errors import ObliviateError
from .evaluation import Engine, save_results
from .evaluation.tofu_math import rouge_l
from .io import check_output, write_json_atomic
from .methods import build, needs_of
from .models import load_model, read_provenance, resolve_source
from .report import write_report
from .systems import load_any
from .unlearning import UnlearnConfig, unlearn_examples

SUMMARY = "forget_summary.json"
MAX_NEW_TOKENS = 48  # answers are short facts; the evaluation suites use the same limit
ANCHOR_CAP = 64  # anchors and never-seen items each: enough for a stable AUC, cheap to answer
PARAPHRASES = ("Tell me: {q}", "{bare} — what is the answer?", "I would like to know: {q}")
# set by the command itself: the data comes from the questions, the model and method from
# their arguments
FIXED_KEYS = ("model", "method", "benchmark", "forget_split", "forget", "retain")
# The stop is checked after every step, and the learning rate rises from lr/steps to the
# method's lr over the run (warm-up over all steps): the run ends at about the smallest
# update that forgets. A few forget items move fast: at a constant lr checked every 5 steps
# (SmolLM2-135M-Instruct, NPO, lr 2.5e-4) the membership AUC went from 0.99 to 0.0 and the old
# answers' probability from 0.37 to 5e-5; checked every step, one step at that lr took the
# AUC to 0.04 and the anchors' probability from 0.48 to 0.19. A check is one forward pass over
# the forget and never-seen items, about a third of a training step at the default batch size.
DEFAULTS = {"guard": {"every": 1}, "optim": {"warmup_ratio": 1.0}}
_STOPWORDS = frozenset("""
a about above after again against all also am an and any are as at be because been before being
below between both but by can could did do does doing down during each few for from further had
has have having he her here hers him his how i if in into is it its just me more most my no nor
not now of off on once only or other our out over own same she should so some such than that
the their them then there these they this those through to too under until up very was we were
what when where which while who whom why will with would you your tell know like please many
much called name kind type known
""".split())


@dataclass
class QuickData:
    """What the questions become: the sets a run trains, stops and is judged on."""

    forget: list[Example]  # the questions with the model's answers
    paraphrases: list[Example]  # rewrites of each question, the same answers
    anchors: list[Example]  # the retain set: general questions, the model's answers
    holdout: list[Example]  # never-seen items for the stop: the other half, answers rotated
    dropped: dict[str, int]  # bank questions left out, by reason


# ---------------------------------------------------------------------------- text helpers
def _stem(word: str) -> str:
    """A crude suffix stripper: 'lives', 'lived', 'living' and 'live' all become 'liv'."""
    for suffix, repl in (("ies", "y"), ("sses", "ss"), ("ing", ""), ("ed", ""), ("s", "")):
        if word.endswith(suffix) and not word.endswith("ss") and len(word) - len(suffix) >= 3:
            word = word[:-len(suffix)] + repl
            break
    return word[:-1] if word.endswith("e") and len(word) > 3 else word


def content_words(text: str) -> set[str]:
    """Lowercased, stemmed words of `text` that are not stopwords (numbers included)."""
    words = re.findall(r"[a-z0-9]+", text.lower())
    return {_stem(w) for w in words if w not in _STOPWORDS and (len(w) > 1 or w.isdigit())}


def paraphrase(question: str) -> list[str]:
    """Template rewrites of a question: the same request in words never trained on."""
    bare = question.strip().rstrip("?").rstrip()
    return [t.format(q=question.strip(), bare=bare) for t in PARAPHRASES]


# ---------------------------------------------------------------------------- checks
def quick_config(model: str, method: str, overrides: Sequence[str] = ()) -> UnlearnConfig:
    """The run's UnlearnConfig: defaults, the model and method given, then the overrides."""
    given = parse_overrides(list(overrides))
    fixed = [k for k in FIXED_KEYS if k in given]
    if fixed:
        raise ObliviateError(f"{fixed[0]}= cannot be overridden here: forget builds its data from "
                             "the questions and takes the model and --method as arguments")
    cfg = from_dict(UnlearnConfig, merge(merge(DEFAULTS, given), {"model": str(model),
                                                                   "method": method}))
    build(cfg.method, cfg.params)  # a wrapper method checks its base method now
    return cfg


def _check_questions(questions: Sequence[str]) -> list[str]:
    if isinstance(questions, str):
        questions = [questions]
    if not questions:
        raise ObliviateError("no question given: name at least one question to forget")
    for i, q in enumerate(questions, 1):
        if not isinstance(q, str) or not q.strip():
            raise ObliviateError(f"question {i} is empty: give the text of each question to forget")
    return [q.strip() for q in questions]


def _check_out(out: str | Path, model: str) -> Path:
    out = Path(out)
    check_output(out, {"model": model}, kind="dir")
    if out.exists():
        raise ObliviateError(f"output {out} already exists; choose a new path or remove it")
    return out


# ---------------------------------------------------------------------------- answering
# a sentence ends at '.', '!' or '?' (and any closing quote) before white space, unless the
# period closes an abbreviation or an initial ('Dr. Fleming', 'J. K. Rowling'); or at a blank line
_SENTENCE_END = re.compile(r"(\w*)([.!?])[\"')\]]?(?=\s)|\n\s*\n")
_ABBREVIATIONS = frozenset("dr mr mrs ms prof st jr sr vs etc eg ie no mt ft approx".split())


def sentences(text: str) -> list[str]:
    """The text's sentences (or paragraphs), cut as `first_sentence` cuts; the last piece is
    whatever follows the last end (an answer cut off by the token budget ends unfinished)."""
    text, out, start = text.strip(), [], 0
    for m in _SENTENCE_END.finditer(text):
        word = (m.group(1) or "").lower()
        if m.group(2) == "." and (word in _ABBREVIATIONS or (len(word) == 1 and word.isalpha())):
            continue
        out.append(text[start:m.end()].strip())
        start = m.end()
    out.append(text[start:].strip())
    return [s for s in out if s]


def first_sentence(text: str) -> str:
    """The answer's first sentence (or paragraph). Chat models go on for the whole token budget
    after the fact asked for; a cut-off answer ends where the model would not stop, and scores
    as unlikely for that alone, so answers are compared sentence to sentence."""
    parts = sentences(text)
    return parts[0] if parts else ""


def _answers(engine: Engine, name: str, questions: list[str]) -> list[str]:
    """Greedy answers: the first sentence, before any next prompt a base model starts."""
    texts = engine.generate(name, [Example(answer="", question=q) for q in questions],
                            MAX_NEW_TOKENS)
    return [first_sentence(t) for t in before_next_prompt(engine, texts)]


def before_next_prompt(engine: Engine, texts: list[str]) -> list[str]:
    """Each text up to where a base model starts the next prompt of its template."""
    prefix = resolve_template(engine.tokenizer, engine.template).split("{question}")[0].strip()
    return [t.split(prefix)[0] if prefix and t.find(prefix) > 0 else t for t in texts]


def _probs(engine: Engine, name: str, examples: list[Example]) -> list[float]:
    """TOFU's normalised probability of each example's answer (exp of -mean token NLL)."""
    if not examples:
        return []
    return engine.stats(name, examples, ["answer"])["answer"].prob.tolist()


def build_data(engine: Engine, questions: list[str], seed: int = 0) -> QuickData:
    """The forget set, paraphrases, anchors and never-seen items, answered by `engine`'s model."""
    answers = _answers(engine, "quick_forget", questions)
    for q, a in zip(questions, answers, strict=True):
        if not a:
            raise ObliviateError(f"the model gives an empty answer to {q!r}: there is nothing to "
                                 "forget (check the prompt template: template=...)")
    forget = [Example(question=q, answer=a, paraphrased_question=paraphrase(q)[0], id=f"forget-{i}")
              for i, (q, a) in enumerate(zip(questions, answers, strict=True))]
    paraphrases = [Example(question=p, answer=ex.answer, id=f"{ex.id}-para-{j}")
                   for ex in forget for j, p in enumerate(paraphrase(ex.question))]
    q_words = set().union(*(content_words(q) for q in questions))
    a_words = set().union(*(content_words(a) for a in answers))
    anchors, holdout, dropped = anchor_items(engine, q_words, a_words, seed)
    return QuickData(forget, paraphrases, anchors, holdout, dropped)


def anchor_items(engine: Engine, q_words: set[str], a_words: set[str], seed: int = 0,
                 limit: int | None = None) -> tuple[list[Example], list[Example], dict[str, int]]:
    """(anchors, never-seen items, dropped counts): the shipped general questions that share no
    content word with `q_words`, answered by `engine`'s model, minus answers sharing one with
    `a_words`; shuffled, half the anchors (a retain set), half never-seen (see never_seen).
    `limit`: answer only that many of the questions (a fixed draw), to save generation."""
    bank = general_questions()
    kept = [q for q in bank if not content_words(q) & q_words]
    if limit is not None and len(kept) > limit:
        kept = sorted(random.Random(seed).sample(kept, limit), key=bank.index)
    bank_answers = _answers(engine, "quick_bank", kept)
    items = [Example(question=q, answer=a, id=f"anchor-{bank.index(q) + 1:03d}")
             for q, a in zip(kept, bank_answers, strict=True) if a and not content_words(a) & a_words]
    dropped = {"topic": len(bank) - len(kept), "empty_answer": sum(not a for a in bank_answers),
               "answer_overlap": sum(bool(a) for a in bank_answers) - len(items)}
    random.Random(seed).shuffle(items)
    return items[0::2][:ANCHOR_CAP], never_seen(items[1::2][:ANCHOR_CAP]), dropped


def never_seen(items: list[Example]) -> list[Example]:
    """Each question with the model's answer to the next one: fluent text in the model's own
    words that it does not hold as the answer to that question. The stop then means: the old
    answer is no more likely than an answer to a different question. The model's own answers
    would not do: a greedy answer is the most likely text there is, so forget answers start no
    likelier than those (SmolLM2-135M-Instruct, 4 questions: LOSS AUC 0.41 before any step,
    the run stops at step 0 and nothing is forgotten; against rotated answers the AUC starts
    at 1.0, their median probability 0.06 against 0.35 to 0.55 for the forget answers)."""
    if len(items) < 2:
        return []
    return [Example(question=ex.question, answer=items[(i + 1) % len(items)].answer,
                    id=f"never-seen-{ex.id}") for i, ex in enumerate(items)]


def measure(engine: Engine, data: QuickData, answers_known: bool = False) -> dict[str, Any]:
    """Answers and the probability of the old answers on every set. `answers_known`: the model
    that wrote `data` (its greedy answers are the examples' answers)."""
    out: dict[str, Any] = {}
    for name in ("forget", "paraphrases", "anchors"):
        examples = getattr(data, name)
        answers = ([ex.answer for ex in examples] if answers_known and name != "paraphrases"
                   else _answers(engine, f"quick_{name}", [ex.question for ex in examples]))
        out[name] = {"answers": answers, "probs": _probs(engine, f"quick_{name}", examples)}
    out["holdout"] = {"probs": _probs(engine, "quick_holdout", data.holdout)}
    audit = AuditData(forget=data.forget, retain=data.anchors, template=engine.template)
    out["rephrase"] = Rephrase().run(engine.model, engine.tokenizer, audit)
    return out


# ---------------------------------------------------------------------------- the run
def _holdout_for(cfg: UnlearnConfig, data: QuickData) -> list[Example] | None:
    """The never-seen items of the stop: the user's file, else the bank's other half."""
    if cfg.stop_at_holdout is False:
        return None
    return load_examples(cfg.holdout) if cfg.holdout else data.holdout


def _require_data(cfg: UnlearnConfig, data: QuickData) -> None:
    needs = needs_of(build(cfg.method, cfg.params))
    if "retain" in needs and not data.anchors:
        raise ObliviateError(
            f"method '{cfg.method}' needs retain data, and none of the shipped general questions "
            f"is unrelated to yours ({data.dropped}); choose a forget-only method (ga, ceu, "
            "task_vector) with --method")
    if cfg.stop_at_holdout is not False and not cfg.holdout and len(data.holdout) < 2:
        raise ObliviateError("too few general questions are unrelated to yours to calibrate the "
                             "stop; give never-seen items with holdout=<file.jsonl>, or "
                             "stop_at_holdout=false and a step count (optim.steps=...)")


def forget(model: str | Path, questions: str | Sequence[str], out: str | Path, method: str = "npo",
           evaluate: bool = False, overrides: Sequence[str] = (), progress: bool = True) -> dict[str, Any]:
    """Make `model` forget its answers to `questions`; the new model goes to `out` (a new folder,
    written atomically; `model` is never modified). Returns the before/after summary, also
    written to `out/forget_summary.json` (and printed when `progress`).

    `overrides`: UnlearnConfig keys as key=value text (optim.steps=40, guard.stop_auc=0.55,
    stop_at_holdout=false, holdout=FILE, template=chat). `evaluate`: TOFU and MIA suites on the
    model before and after, and an HTML report in `out/report/`."""
    say = print if progress else (lambda *_: None)
    questions = _check_questions(questions)
    cfg = quick_config(str(model), method, overrides)
    out = _check_out(out, cfg.model)
    resolve_source(cfg.model)  # a missing model fails now, in one line
    say(f"answering {len(questions)} question(s) and {len(general_questions())} general ones "
        f"with {cfg.model}")
    base, tok = load_model(cfg.model, trust_remote_code=cfg.trust_remote_code)
    engine = Engine(base.eval(), tok, cfg.template)
    data = build_data(engine, questions, cfg.seed)
    _require_data(cfg, data)
    before = measure(engine, data, answers_known=True)
    del engine, base  # unlearning loads its own copy
    holdout = _holdout_for(cfg, data)
    unlearn_examples(cfg, data.forget, data.anchors, out, progress, holdout=holdout)
    new, tok = load_any(out, trust_remote_code=cfg.trust_remote_code)
    after = measure(Engine(new.eval(), tok, cfg.template), data)
    del new
    summary = make_summary(cfg, out, data, before, after)
    if evaluate:
        summary["evaluation"] = _evaluate(cfg, out, data, holdout or data.holdout, progress)
    write_json_atomic(out / SUMMARY, summary)
    say(format_table(summary))
    return summary


# ---------------------------------------------------------------------------- the summary
def _rows(examples: list[Example], before: dict[str, Any], after: dict[str, Any]) -> list[dict[str, Any]]:
    """Per item: both answers, and the probability and ROUGE-L recall (TOFU's) of the old
    answer (the example's: for a paraphrase, the original question's) in each."""
    return [{"question": ex.question, "answer_before": before["answers"][i],
             "answer_after": after["answers"][i], "prob_before": before["probs"][i],
             "prob_after": after["probs"][i],
             "rouge_before": rouge_l(ex.answer, before["answers"][i])[0],
             "rouge_after": rouge_l(ex.answer, after["answers"][i])[0],
             "changed": before["answers"][i] != after["answers"][i]}
            for i, ex in enumerate(examples)]


def _mean(values: list[float]) -> float | str:
    return float(np.mean(values)) if values else "not computed: no items"


def make_summary(cfg: UnlearnConfig, out: Path, data: QuickData, before: dict[str, Any],
                 after: dict[str, Any]) -> dict[str, Any]:
    """Before/after answers and probabilities (of the old answer), and where the run stopped."""
    prov = read_provenance(out)
    per = len(PARAPHRASES)
    paras = _rows(data.paraphrases, before["paraphrases"], after["paraphrases"])
    questions = [{**row, "paraphrases": paras[i * per:(i + 1) * per]}
                 for i, row in enumerate(_rows(data.forget, before["forget"], after["forget"]))]
    anchors = _rows(data.anchors, before["anchors"], after["anchors"])
    flat = {"forget": questions, "paraphrases": paras, "anchors": anchors}
    return {
        "model": cfg.model, "out": str(out), "method": cfg.method, "config": to_dict(cfg),
        "questions": questions, "anchors": anchors,
        "means": {name: {"before": _mean(before[name]["probs"]), "after": _mean(after[name]["probs"])}
                  for name in ("forget", "paraphrases", "anchors", "holdout")},
        "rouge": {name: {"before": _mean([r["rouge_before"] for r in rows]),
                         "after": _mean([r["rouge_after"] for r in rows])}
                  for name, rows in flat.items()},
        "anchors_unchanged": (sum(not r["changed"] for r in anchors) / len(anchors)
                              if anchors else "not computed: no anchors"),
        "rephrase": {"before": before.get("rephrase"), "after": after.get("rephrase")},
        "n": {"forget": len(data.forget), "anchors": len(data.anchors),
              "holdout": len(data.holdout), "bank_dropped": data.dropped},
        "stop": {"steps_run": prov.get("steps_run"), "steps_max": prov.get("optim", {}).get("steps"),
                 "calibrated": prov.get("stop"), "retain_prob": prov.get("retain_prob")},
        "paths": {"model": str(out), "summary": str(out / SUMMARY)},
    }


def _cell(text: str, width: int) -> str:
    text = " ".join(str(text).split()) or "(empty)"
    return text if len(text) <= width else text[:width - 1] + "…"


def format_table(summary: dict[str, Any], width: int = 34) -> str:
    """The before/after table: each question, two of its paraphrases, three anchors."""
    rows = []
    for q in summary["questions"]:
        rows.append(("question", q))
        rows += [("paraphrase", p) for p in q["paraphrases"][:2]]
    rows += [("anchor", a) for a in summary["anchors"][:3]]
    head = (f"{'':10s}  {'question':{width}s}  {'answer before':{width}s}  "
            f"{'answer after':{width}s}  p(old answer)    ROUGE-L")
    lines = [_stop_line(summary), head]
    for kind, r in rows:
        lines.append(f"{kind:10s}  {_cell(r['question'], width):{width}s}  "
                     f"{_cell(r['answer_before'], width):{width}s}  "
                     f"{_cell(r['answer_after'], width):{width}s}  "
                     f"{r['prob_before']:.3f} -> {r['prob_after']:.3f}  "
                     f"{r['rouge_before']:.2f} -> {r['rouge_after']:.2f}")
    lines.append("p(old answer) and ROUGE-L (recall): of the answer given before unlearning "
                 "(for a paraphrase, the original question's)")
    for name, label in (("forget", "questions"), ("paraphrases", "paraphrases"), ("anchors", "anchors")):
        p, r = summary["means"][name], summary["rouge"][name]
        if isinstance(p["before"], float):
            lines.append(f"{label}: mean p(old answer) {p['before']:.3f} -> {p['after']:.3f}, "
                         f"ROUGE-L {r['before']:.2f} -> {r['after']:.2f}")
    lines.append(f"model written to {summary['paths']['model']}; summary: {summary['paths']['summary']}")
    return "\n".join(lines)


def _stop_line(summary: dict[str, Any]) -> str:
    stop, cal = summary["stop"], summary["stop"]["calibrated"]
    line = f"{summary['method']}: {stop['steps_run']} of {stop['steps_max']} steps"
    if not cal:
        return line + " (no calibrated stop)"
    if cal["reached"] and cal["step"] == 0:
        return (line + f"; the answers were already no more likely than never-seen ones (AUC "
                f"{cal['auc_start']:.2f}): nothing was trained. Force steps with stop_at_holdout=false")
    reached = "reached" if cal["reached"] else "NOT reached (raise optim.steps)"
    return (line + f"; membership AUC against never-seen items {cal['auc_start']:.2f} -> "
            f"{cal['auc_at_stop']:.2f}, target {cal['target_auc']} {reached}")


# ---------------------------------------------------------------------------- --evaluate
def _write_jsonl(path: Path, examples: list[Example]) -> str:
    return str(write_jsonl(path, examples))


def _evaluate(cfg: UnlearnConfig, out: Path, data: QuickData, holdout: list[Example],
              progress: bool) -> dict[str, Any]:
    """TOFU and MIA suites on the model before and after, on the sets this run built (written
    to out/data/; the MIA's non-members are the stop's never-seen items), and the report in
    out/report/."""
    files = {name: _write_jsonl(out / "data" / f"{name}.jsonl", examples)
             for name, examples in (("forget", data.forget), ("retain", data.anchors),
                                    ("holdout", holdout))}
    rows, paths = [], {}
    for label, model in (("before", cfg.model), ("after", str(out))):
        ecfg = EvalConfig(model=model, suites=["tofu", "mia"], template=cfg.template,
                          trust_remote_code=cfg.trust_remote_code, seed=cfg.seed,
                          max_new_tokens=MAX_NEW_TOKENS, **files)
        res = run_eval(ecfg, name=f"{label}: {Path(model).name}", progress=progress)
        paths[label] = str(save_results(res, out / "report" / f"results-{label}.json"))
        rows.append(res)
    report = write_report(rows, out / "report", title=f"obliviate forget: {cfg.model}",
                          sources=list(paths.values()))
    return {"results": paths, "report": str(report), "data": files,
            "metrics": {r["name"]: r["metrics"] for r in rows}}
