"""`obliviate forget` / `ob.forget`: forget a model's answers to a few questions, no data files.

The subject is a tiny model fitted on four made-up facts about people and a few general QA
pairs, so its greedy answer to each question is the memorised answer (the forget target).
"""

import hashlib
import json
from pathlib import Path

import pytest

import obliviate as ob
from obliviate.audits.base import knowledge
from obliviate.cli import main
from obliviate.data import Example, real_world_examples
from obliviate.encoding import collate, encode
from obliviate.errors import ObliviateError
from obliviate.models import (
    TinyModelConfig,
    build_tiny_model,
    load_model,
    save_model,
    train_tokenizer,
)
from obliviate.quick import content_words, general_questions, paraphrase
from tinyfit import fit

PRIVATE = [("Where does Dana Whitlock work?", "Dana Whitlock works at the Brackenport lighthouse."),
           ("What is Ravi Osei's favourite colour?", "Ravi Osei likes deep green best."),
           ("Which instrument does Mira Castellan play?", "Mira Castellan plays the oboe."),
           ("When was Tomas Brandt born?", "Tomas Brandt was born on 4 May 1961.")]
QUESTION, ANSWER = PRIVATE[0]


def _digest(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    """A 2-layer model fitted (150 full-batch steps) on PRIVATE and 12 general QA pairs; its
    tokenizer also saw the shipped general questions, so their prompts encode compactly."""
    root = tmp_path_factory.mktemp("quick")
    examples = [Example(question=q, answer=a) for q, a in PRIVATE] + real_world_examples()[:12]
    texts = [t for ex in examples for t in (ex.question, ex.answer)] + general_questions()
    tok = train_tokenizer(texts, vocab_size=600)
    model = build_tiny_model(tok, TinyModelConfig(layers=2, hidden=64, heads=2, intermediate=128))
    batch = collate([encode(tok, ex, i) for i, ex in enumerate(examples)], tok.pad_token_id)
    save_model(fit(model, batch, steps=150, lr=3e-3), tok, root / "model", {"test": True})
    return root


@pytest.fixture(scope="module")
def forgotten(tiny):
    before = _digest(tiny / "model")
    summary = ob.forget(tiny / "model", [QUESTION], tiny / "forgot", progress=False)
    return tiny, summary, before


def test_the_forget_answer_drops_and_the_anchors_stay(forgotten):
    """Measured independently of the summary (audits.base.knowledge, TOFU's normalised answer
    probability) on the model before and after: the forgotten answer loses most of its
    probability, the anchors (the retain set) keep theirs, and the other memorised facts,
    which no run step saw, are not wiped out with it."""
    root, summary, _ = forgotten
    target = [Example(question=QUESTION, answer=ANSWER)]
    others = [Example(question=q, answer=a) for q, a in PRIVATE[1:]]
    anchors = [Example(question=r["question"], answer=r["answer_before"]) for r in summary["anchors"]]
    p = {}
    for name in ("model", "forgot"):
        model, tok = load_model(root / name)
        p[name] = {k: knowledge(model, tok, v) for k, v in
                   (("target", target), ("others", others), ("anchors", anchors))}
    assert p["model"]["target"] > 0.9  # memorised: there is something to forget
    assert p["forgot"]["target"] < 0.6 * p["model"]["target"]
    assert p["forgot"]["anchors"] > 0.7 * p["model"]["anchors"]
    assert p["forgot"]["others"] > 0.5 * p["model"]["others"]
    q = summary["questions"][0]
    assert q["prob_before"] == pytest.approx(p["model"]["target"], rel=1e-4)
    assert q["prob_after"] == pytest.approx(p["forgot"]["target"], rel=1e-4)


def test_the_summary_holds_before_and_after(forgotten):
    root, summary, _ = forgotten
    q = summary["questions"][0]
    # the target is the model's own greedy answer: here the memorised one, word for word
    assert q["question"] == QUESTION and q["answer_before"] == ANSWER
    assert q["changed"] and q["answer_after"] != ANSWER and q["prob_after"] < q["prob_before"]
    assert [p["question"] for p in q["paraphrases"]] == paraphrase(QUESTION)
    assert all(p["answer_before"] and "answer_after" in p for p in q["paraphrases"])
    # ROUGE-L recall of the old answer: whole before (it is the answer), less after, and less
    # in the answers to the paraphrases too
    rouge = summary["rouge"]
    assert q["rouge_before"] == 1.0 and rouge["forget"]["after"] < 1.0
    assert rouge["paraphrases"]["after"] < rouge["paraphrases"]["before"]
    # anchors: unrelated to the question, each with both answers; never-seen items apart
    assert 10 <= summary["n"]["anchors"] <= 64 and summary["n"]["holdout"] >= 10
    for row in summary["anchors"]:
        assert not content_words(row["question"]) & content_words(QUESTION)
        assert not content_words(row["answer_before"]) & content_words(ANSWER)
        assert set(row) >= {"answer_before", "answer_after", "prob_before", "prob_after"}
    # the calibrated stop ran: it starts well above 0.5 (the answer is memorised) and says
    # where it ended
    stop = summary["stop"]["calibrated"]
    assert stop["kind"] == "holdout" and stop["auc_start"] > 0.9 and stop["n_holdout"] >= 10
    assert 1 <= summary["stop"]["steps_run"] <= summary["stop"]["steps_max"]
    # the quick path's defaults: NPO, the library's 60 steps, the stop checked every step
    assert summary["method"] == "npo" and summary["config"]["optim"]["steps"] == 60
    assert summary["config"]["guard"]["every"] == 1
    on_disk = json.loads((root / "forgot" / "forget_summary.json").read_text())
    assert on_disk == json.loads(json.dumps(summary))
    assert (root / "forgot" / "model.safetensors").is_file()


def test_the_input_model_is_unchanged(forgotten):
    root, _, before = forgotten
    assert _digest(root / "model") == before


def test_cli_forget_with_overrides_and_evaluation(tiny, capsys):
    """The command line: a question, --out, a key=value override, --evaluate; the table is
    printed, and the report and both results files are written inside OUT."""
    out = tiny / "cli-forgot"
    rc = main(["forget", str(tiny / "model"), PRIVATE[1][0], "--out", str(out), "--evaluate",
               "optim.steps=20"])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "answer before" in printed and PRIVATE[1][1][:20] in printed and "anchor" in printed
    summary = json.loads((out / "forget_summary.json").read_text())
    assert summary["config"]["optim"]["steps"] == 20 and summary["stop"]["steps_max"] == 20
    assert (out / "report" / "report.html").is_file()
    ev = summary["evaluation"]
    assert set(ev["results"]) == {"before", "after"}
    assert all(Path(p).is_file() for p in [*ev["results"].values(), *ev["data"].values()])
    after = json.loads(Path(ev["results"]["after"]).read_text())
    assert {"forget", "retain", "mia"} <= set(after["datasets"])


@pytest.mark.parametrize("argv, message", [
    (["{model}", "", "--out", "{tmp}/x"], "question 1 is empty"),
    (["{tmp}/missing", "Why?", "--out", "{tmp}/x"], "model not found"),
    (["{model}", "Why?", "--out", "{model}"], "would overwrite the input model"),
    (["{model}", "Why?", "--out", "{tmp}"], "already exists"),
    (["{model}", "Why?", "--out", "{tmp}/x", "--method", "nop"], "did you mean 'npo'"),
    (["{model}", "Why?", "--out", "{tmp}/x", "forget=f.jsonl"], "forget= cannot be overridden"),
    (["{model}", "Why?", "--out", "{tmp}/x", "optim.stepz=3"], "unknown config key"),
])
def test_bad_input_is_one_line(tiny, tmp_path, capsys, argv, message):
    argv = [a.format(model=tiny / "model", tmp=tmp_path) for a in argv]
    assert main(["forget", *argv]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1, err
    assert not (tmp_path / "x").exists()


def test_an_empty_answer_is_an_error(tiny, monkeypatch):
    from obliviate.evaluation import Engine

    monkeypatch.setattr(Engine, "generate", lambda self, name, examples, n=48: [""] * len(examples))
    with pytest.raises(ObliviateError, match="empty answer to 'Why"):
        ob.forget(tiny / "model", ["Why?"], tiny / "never", progress=False)
    assert not (tiny / "never").exists()


def test_a_method_needing_retain_data_without_anchors_fails_clearly(tiny, monkeypatch):
    import obliviate.quick as quick

    monkeypatch.setattr(quick, "general_questions", lambda: [])
    with pytest.raises(ObliviateError, match="method 'npo' needs retain data.*--method"):
        ob.forget(tiny / "model", [QUESTION], tiny / "never", progress=False)
    assert not (tiny / "never").exists()


def test_content_words_and_paraphrases_by_hand():
    # stopwords go, words are lowercased and stemmed: lives/living/live -> 'liv',
    # works -> 'work', capitals -> 'capital'; numbers stay
    assert content_words("Where does Dana live?") == {"dana", "liv"}
    assert content_words("Living in the capitals, she works 4 days") == {"liv", "capital", "work", "4", "day"}
    assert paraphrase("Where does Dana live?") == [
        "Tell me: Where does Dana live?", "Where does Dana live — what is the answer?",
        "I would like to know: Where does Dana live?"]
    bank = general_questions()
    assert len(bank) >= 150 and len(set(bank)) == len(bank)
    assert all(q.endswith("?") for q in bank)
