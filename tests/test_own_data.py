"""A user's own files end to end: fine-tuning target and oracle on files, benchmark folders
made from files, data checks, labels. The data is another domain than the built-in benchmark
(tests/lighthouses.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import obliviate as ob
from lighthouses import write as write_lighthouses
from obliviate.cli import main
from obliviate.data import Benchmark
from obliviate.errors import ObliviateError

TINY = ["tiny.layers=1", "tiny.hidden=32", "tiny.heads=2", "tiny.intermediate=64",
        "tiny.vocab_size=400"]


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    return write_lighthouses(tmp_path_factory.mktemp("lighthouses") / "data")


@pytest.fixture(scope="module")
def bench(files, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("bench") / "bench"
    assert main(["benchmark", "create", "--forget", str(files["forget"]), "--retain",
                 str(files["retain"]), "--holdout", str(files["holdout"]), "--utility",
                 str(files["general"]), "--out", str(out)]) == 0
    return out


def test_a_benchmark_made_from_files_serves_every_set(bench, files):
    b = Benchmark.load(bench)
    # lighthouses.py: 3 lighthouses x 7 items to forget, 6 x 7 to keep, 3 x 7 never seen, 3 general
    assert (len(b.forget_set()), len(b.retain_set()), len(b.holdout_set())) == (21, 42, 21)
    assert list(b.utility_sets()) == ["general"]
    assert len(b.training_set("", oracle=False)) == 21 + 42 + 3
    assert len(b.training_set("", oracle=True)) == 42 + 3
    assert b.forget_set()[0].id == "varrow-height"  # ids are kept
    meta = json.loads((bench / "benchmark.json").read_text())
    assert meta["kind"] == "files" and meta["counts"]["utility/general"] == 3
    assert "| forget | 21 |" in (bench / "DATASHEET.md").read_text()
    with pytest.raises(ObliviateError, match="one forget split"):
        b.forget_set("forget10")
    sets = ob.tofu_sets(bench)
    assert [(s.name, s.role) for s in sets] == [("forget", "forget"), ("retain", "retain"),
                                                ("general", "utility")]


def _write(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_benchmark_create_refuses_bad_files_and_outputs(files, tmp_path, capsys):
    forget = [json.loads(line) for line in files["forget"].read_text().splitlines()]
    retain = [json.loads(line) for line in files["retain"].read_text().splitlines()]
    both = _write(tmp_path / "both.jsonl", retain[:3] + forget[:1])
    cases = [
        (["--forget", str(files["forget"]), "--retain", str(both)], "both the forget and retain"),
        (["--forget", str(files["forget"]), "--retain", str(files["retain"]), "--holdout",
          str(_write(tmp_path / "h.jsonl", retain[:3]))], "also retain items"),
        (["--forget", str(files["forget"]), "--utility",
          str(_write(tmp_path / "forget.jsonl", retain[:2]))], "reserved set name"),
        (["--forget", str(files["forget"]), "--utility", str(files["general"]), "--utility",
          str(files["general"])], "share a name"),
    ]
    for args, message in cases:
        assert main(["benchmark", "create", *args, "--out", str(tmp_path / "b")]) == 2
        assert message in capsys.readouterr().err
        assert not (tmp_path / "b").exists()  # nothing half-written
    # the output may not be one of the inputs
    assert main(["benchmark", "create", "--forget", str(files["forget"]), "--out",
                 str(files["forget"])]) == 2
    assert files["forget"].is_file()


def test_finetune_trains_on_files_and_the_oracle_never_sees_the_excluded(files, bench, tmp_path):
    data = f"data=[{files['forget']},{files['retain']},{files['general']}]"
    # 2 epochs of 66 items in batches of 16: ceil(132 / 16) = 9 steps
    assert main(["finetune", "--out", str(tmp_path / "t"), data, "epochs=2",
                 "optim.batch_size=16", *TINY]) == 0
    assert main(["finetune", "--out", str(tmp_path / "o"), data, f"exclude={files['forget']}",
                 "epochs=2", "optim.batch_size=16", *TINY]) == 0
    target, oracle = (ob.models.read_provenance(tmp_path / m) for m in ("t", "o"))
    assert (target["n_train_items"], target["steps"], target["role"]) == (66, 9, "target")
    # 45 items left: ceil(90 / 16) = 6 steps
    assert (oracle["n_train_items"], oracle["n_excluded"], oracle["steps"]) == (45, 21, 6)
    assert oracle["role"] == "oracle"
    # target and oracle share the tokenizer: they differ only in what they trained on
    assert ((tmp_path / "t" / "tokenizer.json").read_bytes()
            == (tmp_path / "o" / "tokenizer.json").read_bytes())
    # the same from the benchmark folder: the same items, the same steps
    assert main(["finetune", "--out", str(tmp_path / "bo"), f"benchmark={bench}", "role=oracle",
                 "epochs=2", "optim.batch_size=16", *TINY]) == 0
    assert ob.models.read_provenance(tmp_path / "bo")["n_train_items"] == 45
    # optim.steps instead of epochs
    assert main(["finetune", "--out", str(tmp_path / "s"), data, "optim.steps=3", *TINY]) == 0
    assert ob.models.read_provenance(tmp_path / "s")["steps"] == 3


@pytest.mark.parametrize("args, message", [
    (["epochs=2", "optim.steps=3"], "not both"),
    ([f"exclude={__file__}"], "excludes items of data="),
    (["role=oracle", "data=x.jsonl"], "needs exclude="),
    (["data=x.jsonl", "benchmark=b"], "not both"),
    (["epochs=0"], "must be positive"),
])
def test_finetune_settings_that_contradict_each_other_fail_before_loading(args, message, tmp_path,
                                                                            capsys):
    assert main(["finetune", "--out", str(tmp_path / "m"), *args]) == 2
    assert message in capsys.readouterr().err


def test_an_exclude_file_that_matches_nothing_is_an_error(files, tmp_path, capsys):
    assert main(["finetune", "--out", str(tmp_path / "m"), f"data={files['retain']}",
                 f"exclude={files['holdout']}", "optim.steps=1", *TINY]) == 2
    assert "none of its items is in the training data" in capsys.readouterr().err


def test_check_reports_style_bias_and_small_forget_sets(files, tmp_path, capsys):
    assert main(["check", "--forget", str(files["forget"]), "--retain", str(files["retain"]),
                 "--holdout", str(files["holdout"])]) == 0
    assert capsys.readouterr().out.startswith("no problems found")  # 21 forget items: enough
    # 14 forget items: below the 16 a KS difference of 0.5 needs (test_data_checks derives it)
    rows = [json.loads(line) for line in files["forget"].read_text().splitlines()]
    assert main(["check", "--forget", str(_write(tmp_path / "f14.jsonl", rows[:14]))]) == 0
    out = capsys.readouterr().out
    assert "at least 16 items" in out and "0 error(s), 1 warning(s)" in out
    # perturbed answers that copy the trained answer's wording (one word added), while the
    # paraphrase rewords it: the truth ratio would compare styles
    biased = [{**r, "perturbed_answer": [f"{r['answer']} Zzyx{k}" for k in range(3)]} for r in rows]
    assert main(["check", "--forget", str(_write(tmp_path / "b.jsonl", biased))]) == 0
    assert "wording" in capsys.readouterr().out
    # overlapping forget and holdout: an error, exit status 1
    assert main(["check", "--forget", str(files["forget"]), "--holdout", str(files["forget"])]) == 1


def test_eval_on_a_files_benchmark_keeps_checks_and_labels(files, bench, tmp_path):
    data = f"data=[{files['forget']},{files['retain']},{files['general']}]"
    assert main(["finetune", "--out", str(tmp_path / "t"), data, "optim.steps=2", *TINY]) == 0
    out = tmp_path / "t.json"
    assert main(["eval", "--out", str(out), "--label", "target, 2 steps", f"model={tmp_path / 't'}",
                 f"benchmark={bench}", "suites=[tofu,mia]", "max_new_tokens=4"]) == 0
    res = json.loads(out.read_text())
    assert res["name"] == "target, 2 steps"
    assert set(res["datasets"]) == {"forget", "retain", "general", "mia"}
    codes = {c["code"] for c in res["checks"]}
    assert "few_forget_items" not in codes  # 21 items (hand: 16 suffice for d = 0.5)
    assert "zero_utility" in codes  # 2 steps teach nothing: no answer is generated right
    assert ob.models.model_role(tmp_path / "t") == "target"  # the role checks read
    assert main(["report", str(out), "--out", str(tmp_path / "rep")]) == 0
    html = (tmp_path / "rep" / "report.html").read_text()
    assert "target, 2 steps" in html and "model utility is 0" in html  # the banner
