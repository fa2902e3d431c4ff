"""generate -> finetune (target, oracle) -> unlearn (graddiff, npo) -> eval -> report, through
the CLI in-process, on a configuration small enough for CI (about a minute)."""

import hashlib
import json
import shutil

import pytest

from obliviate.cli import main
from obliviate.demo import DemoConfig, run_demo
from obliviate.evaluation import load_results

pytestmark = pytest.mark.slow
TINY = ["tiny.layers=2", "tiny.hidden=64", "tiny.intermediate=128", "epochs=100",
        "optim.batch_size=32"]
METHODS = ("graddiff", "npo")


def _sha(path):
    return hashlib.sha256((path / "model.safetensors").read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("e2e")
    assert main(["generate", "--seed", "1", "--entities", "20", "--out", str(root / "bench")]) == 0
    for role in ("target", "oracle"):
        assert main(["finetune", "--out", str(root / role), f"benchmark={root / 'bench'}",
                     f"role={role}", *TINY]) == 0
    target_sha = _sha(root / "target")
    assert main(["eval", "--out", str(root / "oracle.json"), "--name", "oracle",
                 f"model={root / 'oracle'}", f"benchmark={root / 'bench'}"]) == 0
    for name in ("target", *METHODS):
        if name != "target":
            assert main(["unlearn", "--out", str(root / name), f"model={root / 'target'}",
                         f"benchmark={root / 'bench'}", f"method={name}", "optim.steps=30"]) == 0
        assert main(["eval", "--out", str(root / f"{name}.json"), "--name", name,
                     f"model={root / name}", f"benchmark={root / 'bench'}",
                     f"reference={root / 'oracle.json'}"]) == 0
    return root, target_sha


def test_target_is_far_from_the_oracle(run):
    root, _ = run
    target = load_results(root / "target.json")["metrics"]
    assert target["forget_quality"] < 0.01
    assert target["forget_prob"] > 0.9  # the target really learned the forget people


def test_oracle_matches_itself_and_never_learned_the_forget_set(run):
    root, _ = run
    oracle = load_results(root / "oracle.json")
    assert oracle["metrics"]["forget_quality"] == "not computed: needs a reference"
    from obliviate.evaluation import derive

    assert derive(oracle, oracle)["forget_quality"] == 1.0  # plumbing; values: test_derived.py
    assert oracle["metrics"]["forget_prob"] < 0.2 < oracle["metrics"]["retain_prob"]


def test_dependent_queries_are_reported_beside_and_left_out_of_model_numbers(run):
    """The benchmark's dependent sets are evaluated (the oracle never learned the forget
    people, so their facts asked through a retained spouse or mentor stay unlikely for it)
    and enter neither forget quality nor model utility."""
    from obliviate.evaluation import derive

    root, _ = run
    target, oracle = (load_results(root / f"{n}.json") for n in ("target", "oracle"))
    dep = target["datasets"]["dependent_forget"]
    assert dep["role"] == "forget" and dep["aggregated"] is False and dep["n"] > 0
    assert target["datasets"]["dependent_retain"]["aggregated"] is False
    assert oracle["metrics"]["dependent_forget_prob"] < target["metrics"]["dependent_forget_prob"]
    bare = {**target, "datasets": {n: d for n, d in target["datasets"].items() if not n.startswith("dependent")}}
    assert derive(bare, oracle)["model_utility"] == target["metrics"]["model_utility"]
    assert derive(bare, oracle)["forget_quality"] == target["metrics"]["forget_quality"]


@pytest.mark.parametrize("method", METHODS)
def test_each_method_lowers_forget_probability(run, method):
    root, _ = run
    target = load_results(root / "target.json")["metrics"]
    after = load_results(root / f"{method}.json")
    assert after["metrics"]["forget_prob"] < 0.5 * target["forget_prob"]
    assert after["metrics"]["retain_prob"] > 0.5  # the model did not collapse
    # provenance of the run travels with the results
    assert after["config"]["model"].endswith(method) and after["versions"]["torch"]
    assert len(after["datasets"]["forget"]["per_item"]["truth_ratio"]) == after["datasets"]["forget"]["n"]


def test_inputs_are_never_overwritten(run, capsys):
    root, target_sha = run
    assert _sha(root / "target") == target_sha  # unlearning read the target, never wrote it
    code = main(["unlearn", "--out", str(root / "npo"), f"model={root / 'target'}",
                 f"benchmark={root / 'bench'}", "method=npo", "optim.steps=1"])
    assert code == 2 and "already exists" in capsys.readouterr().err
    code = main(["unlearn", "--out", str(root / "target" / "inner"), f"model={root / 'target'}",
                 f"benchmark={root / 'bench'}", "method=npo", "optim.steps=1"])
    assert code == 2 and "would overwrite the input model" in capsys.readouterr().err
    assert not (root / "target" / "inner").exists()


def test_bad_cli_input_is_a_clear_error(run, capsys):
    root, _ = run
    code = main(["unlearn", "--out", str(root / "x"), f"model={root / 'target'}",
                 f"benchmark={root / 'bench'}", "method=npoo"])
    assert code == 2 and "did you mean 'npo'" in capsys.readouterr().err
    code = main(["eval", "--out", str(root / "x.json"), f"model={root / 'bench'}",
                 f"benchmark={root / 'bench'}"])
    assert code == 2 and "not a Hugging Face model folder" in capsys.readouterr().err


def test_report_and_resumable_demo(run, tmp_path):
    """The demo reuses finished stages: seeded with the trained models it only unlearns
    (already done: reused too), evaluates and reports."""
    root, _ = run
    demo = tmp_path / "demo"
    shutil.copytree(root / "bench", demo / "benchmark")
    for name in ("target", "oracle"):
        shutil.copytree(root / name, demo / "models" / name)
    for name in METHODS:
        shutil.copytree(root / name, demo / "models" / f"target-{name}")
    report = run_demo(DemoConfig(out=str(demo), methods=list(METHODS), progress=False))
    html = report.read_text()
    assert "<svg" in html and "Forget quality" in html and "npo" in html
    oracle = json.loads((demo / "results" / "oracle.json").read_text())
    assert oracle["metrics"]["forget_quality"] == 1.0
    md, audit_md = (demo / "report.md").read_text().split("## Robustness audits")
    headline, *details = md.split("\n## ")
    assert headline.count("\n| ") == 1 + 2 + len(METHODS)  # header + oracle, target + methods
    # a table per dataset (forget, retain, world facts, then the dependent queries reported
    # beside them), each a header and one row per model
    assert [d.split("\n", 1)[0] for d in details] == ["Forget", "Retain", "World facts",
                                                      "Dependent forget", "Dependent retain"]
    assert all(d.count("\n| ") == 1 + 2 + len(METHODS) for d in details)
    assert "Results read from: oracle.json, target.json" in html
    assert audit_md.count("\n| ") == 1 + len(METHODS)  # header + one row per unlearned model
    assert "Robustness audits" in html and html.count("<svg") == 3  # scatter, bars, relearning
    for name in METHODS:
        audit = json.loads((demo / "results" / f"audit-{name}.json").read_text())
        assert audit["schema"] == "obliviate.audit/1" and "relearning" in audit["audits"]
    timings = json.loads((demo / "demo.json").read_text())["seconds"]
    assert not any(k.startswith(("finetune", "unlearn")) for k in timings)  # all reused
    from obliviate.ledger import Ledger

    with Ledger.open(demo / "requests" / "project") as ledger:  # the deletion-request stage
        assert [(r.status, r.version_id) for r in ledger.requests()] == [("done", 1), ("done", 2)]
        assert ledger.check() == []
    assert (demo / "requests" / "project" / "versions" / "v0002" / "evidence.html").is_file()
    assert "Across versions" in (demo / "requests" / "project" / "ledger.html").read_text()


def test_your_own_model_and_jsonl_files(run, tmp_path):
    """The README's worked example: plain {question, answer} files and a model folder."""
    root, _ = run
    from obliviate.data import Benchmark

    bench = Benchmark.load(root / "bench")
    forget, retain = tmp_path / "forget.jsonl", tmp_path / "retain.jsonl"
    forget.write_text("".join(json.dumps({"question": e.question, "answer": e.answer}) + "\n"
                              for e in bench.qa_of("forget10")))
    retain.write_text("".join(json.dumps({"question": e.question, "answer": e.answer}) + "\n"
                              for e in bench.qa_of("retain90")[:40]))
    out = tmp_path / "my-model-forgot"
    assert main(["unlearn", "--out", str(out), f"model={root / 'target'}", f"forget={forget}",
                 f"retain={retain}", "method=npo", "optim.steps=30"]) == 0
    before_json, after_json = tmp_path / "before.json", tmp_path / "after.json"
    for model, path in ((root / "target", before_json), (out, after_json)):
        assert main(["eval", "--out", str(path), f"model={model}", f"forget={forget}",
                     f"retain={retain}"]) == 0
    before, after = load_results(before_json)["metrics"], load_results(after_json)["metrics"]
    assert after["forget_prob"] < 0.5 * before["forget_prob"]
    assert after["retain_prob"] > 0.5
    assert "truth_ratio" not in load_results(after_json)["datasets"]["forget"]["aggregate"]
