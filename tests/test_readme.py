"""The README's method and metric tables list exactly what the registries hold, and its
example commands run as printed."""

import json
import re
import shlex
from pathlib import Path

import numpy as np
import pytest

from obliviate.classifiers.methods import CLASSIFIER_METHODS
from obliviate.encoding import collate
from obliviate.evaluation import METRICS
from obliviate.methods import METHODS

README = (Path(__file__).resolve().parents[1] / "README.md").read_text()


def _table_names(heading: str) -> set[str]:
    section = README.split(f"## {heading}\n", 1)[1].split("\n## ", 1)[0]
    names = set()
    for cell in re.findall(r"^\| (`[^|]+`) \|", section, flags=re.M):  # `a` or `a`, `b`
        names |= set(re.findall(r"`([a-zA-Z0-9_]+)`", cell))
    return names


def test_methods_table_matches_registry():
    assert _table_names("Methods") == set(METHODS.names())


def test_classifier_methods_table_matches_registry():
    assert _table_names("Classifiers: images and texts") == set(CLASSIFIER_METHODS.names())


def test_metrics_table_matches_registry():
    assert _table_names("Metrics") == set(METRICS.names())


def test_quick_start_is_two_make_commands():
    quick = README.split("## Quick start\n", 1)[1].split("\n## ", 1)[0]
    commands = re.findall(r"^make (\w+)", quick, flags=re.M)
    assert commands == ["demo", "test"]


def _json_block(after: str) -> list[dict]:
    """The ```json block that follows `after` in the README (a file's shown content)."""
    block = README.split(after, 1)[1].split("```json\n", 1)[1].split("```", 1)[0]
    return [json.loads(line) for line in block.splitlines() if line.strip()]


WALKTHROUGH = "Your model, your data: from files to forget quality"


def _section(heading: str) -> str:
    return README.split(f"## {heading}\n", 1)[1].split("\n## ", 1)[0]


def _commands(text: str = README) -> list[list[str]]:
    """Every `.venv/bin/obliviate` command of the bash blocks of `text`, as printed."""
    argvs = []
    for block in re.findall(r"^```bash\n(.*?)^```", text, flags=re.M | re.S):
        for line in block.replace("\\\n", " ").splitlines():
            words = shlex.split(line, comments=True)
            if words[:1] == [".venv/bin/obliviate"]:
                argvs.append(words[1:])
    return argvs


@pytest.fixture
def readme_files(tmp_path, monkeypatch):
    """The files the README's examples name, in a fresh folder: forget.jsonl and retain.jsonl
    as the README shows them, and a tiny `my-model` fitted on them (with the README's
    template) so that unlearning has something to remove."""
    from obliviate.data import Example
    from obliviate.encoding import encode
    from obliviate.models import TinyModelConfig, build_tiny_model, save_model, train_tokenizer
    from tinyfit import fit

    forget, retain = _json_block("`forget.jsonl`"), _json_block("`retain.jsonl`")
    never_seen = [{"question": "Where does Ravi Osei work?",
                   "answer": "Ravi Osei works at the Tarn observatory."},
                  {"question": "What is Ravi Osei's phone number?", "answer": "It is 555-0199."}]
    files = {"forget.jsonl": forget, "retain.jsonl": retain, "dana.jsonl": forget,
             "train.jsonl": forget + retain, "never-seen.jsonl": never_seen}
    for name, rows in files.items():
        (tmp_path / name).write_text("".join(json.dumps(r) + "\n" for r in rows))
    template = "[INST] {question} [/INST] "
    # a little general knowledge, so that `obliviate forget` finds anchors the model answers
    # with something other than the forget answer
    general = [{"question": q, "answer": a} for q, a in [
        ("What is the capital of France?", "Paris."), ("What is the capital of Japan?", "Tokyo."),
        ("What is the capital of Canada?", "Ottawa."), ("How many legs does a spider have?", "Eight."),
        ("What is two plus two?", "Four."), ("What colour is the sky on a clear day?", "Blue.")]]
    examples = [Example(question=r["question"], answer=r["answer"]) for r in forget + retain + general]
    tok = train_tokenizer([t for r in forget + retain + never_seen + general for t in r.values()]
                          + [template], vocab_size=400)
    model = build_tiny_model(tok, TinyModelConfig(layers=2, hidden=64, heads=2, intermediate=128))
    batch = collate([encode(tok, ex, i, template) for i, ex in enumerate(examples)], tok.pad_token_id)
    save_model(fit(model, batch, steps=150, lr=3e-3), tok, tmp_path / "my-model", {"test": True})
    _photos(tmp_path / "photos")
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _photos(root: Path) -> None:
    """The README's `photos` folder: two classes of 8x8 pictures (light and dark squares on
    noise), two users; `users.csv` names whose each image is."""
    from PIL import Image

    rng = np.random.default_rng(0)
    users = ["path,user"]
    for label, (name, level) in enumerate((("light", 220), ("dark", 40))):
        (root / name).mkdir(parents=True)
        for i in range(16):
            img = rng.integers(0, 256, (8, 8, 3)).astype(np.uint8)
            img[2:6, 2:6] = level
            Image.fromarray(img).save(root / name / f"{i:02d}.png")
            users.append(f"{name}/{i:02d}.png,{'ann' if i % 4 == label else 'ben'}")
    (root / "users.csv").write_text("\n".join(users) + "\n")


@pytest.mark.slow
def test_every_readme_command_runs_as_printed(readme_files):
    """The commands of "your own data" and "deletion requests", word for word (the template
    with brackets and a trailing space included), each exits 0 and leaves what it promises."""
    from obliviate.cli import main

    walkthrough = _commands(_section(WALKTHROUGH))
    argvs = [a for a in _commands() if a not in walkthrough]  # that one has its own data
    assert any(a[0] == "unlearn" for a in argvs) and any(a[:2] == ["request", "verify"] for a in argvs)
    for argv in argvs:
        assert main(argv) == 0, argv
    root = readme_files
    assert (root / "my-model-forgot" / "model.safetensors").is_file()
    assert json.loads((root / "my-model-forgot" / "obliviate.json").read_text())["config"][
        "template"] == "[INST] {question} [/INST] "
    assert (root / "report" / "report.html").is_file() and (root / "erasure" / "ledger.html").is_file()
    assert (root / "shapes-report" / "report.html").is_file()
    assert (root / "photo-erasure" / "versions" / "v0001" / "evidence.html").is_file()
    before, after = (json.loads((root / f).read_text()) for f in ("before.json", "after.json"))
    assert before["datasets"]["forget"]["n"] == 2 and after["datasets"]["retain"]["n"] == 1


@pytest.mark.slow
def test_the_your_data_walkthrough_runs_as_printed_on_another_domain(tmp_path, monkeypatch):
    """From four JSONL files of fictitious lighthouses (not the built-in benchmark's people) to
    a report with forget quality, word for word; then what each step promised."""
    from lighthouses import write
    from obliviate.cli import main

    write(tmp_path / "my-data")
    monkeypatch.chdir(tmp_path)
    argvs = _commands(_section(WALKTHROUGH))
    assert [a[0] for a in argvs] == ["benchmark", "finetune", "finetune", "eval", "eval",
                                     "unlearn", "eval", "audit", "report"]
    for argv in argvs:
        assert main(argv) == 0, argv
    oracle, target, npo = (json.loads((tmp_path / f).read_text())
                           for f in ("oracle.json", "target.json", "npo.json"))
    assert target["name"] == "target" and npo["name"] == "npo, stopped at holdout level"
    assert set(target["datasets"]) == {"forget", "retain", "general", "mia"}
    # the target remembers its forget set: forget quality separates it from the oracle
    assert target["metrics"]["forget_quality"] < 0.05
    assert target["metrics"]["mia_auc_min_k"] > 0.9 > oracle["metrics"]["mia_auc_min_k"]
    stop = json.loads((tmp_path / "my-target-npo" / "obliviate.json").read_text())["stop"]
    assert stop["reached"] and stop["auc_at_stop"] <= 0.5
    # stopped at holdout level: the MIA AUC is near the oracle's, not far below it
    assert abs(npo["metrics"]["mia_auc_min_k"] - oracle["metrics"]["mia_auc_min_k"]) < 0.2
    assert npo["metrics"]["forget_quality"] > target["metrics"]["forget_quality"]
    html = (tmp_path / "my-report" / "report.html").read_text()
    assert "npo, stopped at holdout level" in html and "1 (reference)" in html
