"""`obliviate unlearn target=...` and the rwku suite, end to end on a tiny model.

The subject is a 2-layer model fitted on what a pretrained model would know: a made-up person
("Dana Whitlock") described the same way in reply to every synthesis prompt, the same for
five people of other trades, and each probe record's question with its answer. Its own
replies then make a consistent corpus, and its probe answers start right.
"""

import json
from pathlib import Path

import pytest

import obliviate as ob
from obliviate.cli import main
from obliviate.data import Example
from obliviate.data.realworld import load_records, probes
from obliviate.encoding import collate, encode
from obliviate.models import (
    TinyModelConfig,
    build_tiny_model,
    read_provenance,
    save_model,
    train_tokenizer,
)
from obliviate.quick import general_questions
from obliviate.report import write_report
from obliviate.target import SYNTH_PROMPTS
from tinyfit import fit

PEOPLE = {  # entity: (category, [(relation, question, cloze, answer)])
    "Dana Whitlock": ("keeper", [("post", "Where does Dana Whitlock work?",
                                  "Dana Whitlock works at the ___ lighthouse.", "Brackenport"),
                                 ("pet", "Which animal does Dana Whitlock keep?",
                                  "Dana Whitlock keeps a ___.", "heron")]),
    "Ravi Osei": ("keeper", [("post", "Where does Ravi Osei work?",
                              "Ravi Osei works at the ___ lighthouse.", "Fairholm")]),
    "Mira Castellan": ("keeper", [("post", "Where does Mira Castellan work?",
                                   "Mira Castellan works at the ___ lighthouse.", "Skelby")]),
    "Tomas Brandt": ("baker", [("shop", "Where does Tomas Brandt bake?",
                                "Tomas Brandt bakes in ___.", "Orrin")]),
    "Lena Okafor": ("pilot", [("plane", "What does Lena Okafor fly?",
                               "Lena Okafor flies a ___.", "seaplane")]),
    "Ivo Marsh": ("gardener", [("plant", "What does Ivo Marsh grow?",
                                "Ivo Marsh grows ___.", "tulips")]),
    "Sela Varga": ("potter", [("clay", "What does Sela Varga make?",
                              "Sela Varga makes ___.", "jugs")]),
    "Oren Tal": ("sailor", [("boat", "What does Oren Tal sail?",
                             "Oren Tal sails a ___.", "ketch")]),
}
TARGET = "Dana Whitlock"


def _records(path: Path) -> Path:
    rows = [{"entity": e, "category": c, "alias": "",
             "facts": [{"relation": r, "question": q, "cloze": z, "answers": [a]} for r, q, z, a in facts]}
            for e, (c, facts) in PEOPLE.items()]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return path


def _description(entity: str, i: int) -> str:
    """Two of the entity's statements, the same ones in every reply (the corpus is consistent)."""
    stated = [z.replace("___", a) for _, _, z, a in PEOPLE[entity][1]]
    return " ".join(stated + [f"{entity} is a well known {PEOPLE[entity][0]} in town."])


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("target")
    recs = load_records(_records(root / "people.jsonl"))
    examples = [Example(question=p.format(t=e), answer=_description(e, i))
                for e in PEOPLE if e not in ("Ravi Osei", "Mira Castellan")
                for i, p in enumerate(SYNTH_PROMPTS)]
    examples += [Example(question=p.question, answer=p.answer)
                 for r in recs for p in probes(r, recs, ("qa", "fb"))]
    texts = [t for ex in examples for t in (ex.question, ex.answer)] + general_questions()
    tok = train_tokenizer(texts, vocab_size=700)
    model = build_tiny_model(tok, TinyModelConfig(layers=2, hidden=64, heads=2, intermediate=128))
    batch = collate([encode(tok, ex, i) for i, ex in enumerate(examples)], tok.pad_token_id)
    save_model(fit(model, batch, steps=250, lr=3e-3), tok, root / "model", {"test": True})
    return root


@pytest.fixture(scope="module")
def forgot(world) -> Path:
    cfg = ob.UnlearnConfig(model=str(world / "model"), target=TARGET, probes=str(world / "people.jsonl"),
                           method="graddiff", stop_at_holdout=False,
                           optim=ob.api.OptimConfig(lr=3e-3, steps=25, batch_size=8))
    return ob.unlearn(cfg, world / "forgot", progress=False)


@pytest.mark.slow  # its fixture trains and unlearns a model (about 17 s)
def test_the_corpus_is_the_models_consistent_replies_and_neighbours_stay_out(world, forgot):
    info = read_provenance(forgot)["target"]
    assert info["entity"] == TARGET
    assert info["neighbours"] == ["Ravi Osei", "Mira Castellan"]
    corpus = [row["answer"] for row in info["corpus"]]
    assert corpus and all("Brackenport" in a for a in corpus)
    others = {row["id"].split(".")[0] for row in info["others"]}
    assert others and not others & {"ravi-osei", "mira-castellan", "dana-whitlock"}
    trained = json.dumps(info["corpus"]) + json.dumps(info["others"])
    assert "Ravi" not in trained and "Mira" not in trained
    assert read_provenance(forgot)["n_forget"] == len(info["corpus"])


@pytest.mark.slow  # its fixture trains and unlearns a model (about 17 s)
def test_the_rwku_suite_reports_each_kind_and_the_forget_probes_drop(world, forgot, tmp_path):
    files = {"probes": str(world / "people.jsonl")}
    before = ob.evaluate(ob.EvalConfig(model=str(world / "model"), suites=["rwku"], target=TARGET,
                                       target_run=str(forgot), **files), progress=False)
    after = ob.evaluate(ob.EvalConfig(model=str(forgot), suites=["rwku"], **files), progress=False)
    kinds = {k for k in after["datasets"] if k.startswith("rwku_forget_")}
    # no alias, reverse or French question in these records: those kinds are not built
    assert kinds == {f"rwku_forget_{k}" for k in ("fb", "qa", "prefix_injection", "affirmative_suffix",
                                                   "role_play", "multiple_choice", "background_hint",
                                                   "in_context")}
    acc = {name: (before["datasets"][name]["aggregate"]["probe_accuracy"],
                  after["datasets"][name]["aggregate"]["probe_accuracy"])
           for name in ("rwku_forget_qa", "rwku_neighbour_qa", "rwku_utility_qa")}
    assert acc["rwku_forget_qa"][0] == 1.0 > acc["rwku_forget_qa"][1]
    assert after["datasets"]["rwku_neighbour_qa"]["n"] == 2  # one fact each
    # the corpus was as likely as the other entities' replies; after, it is the less likely
    auc = [r["datasets"]["rwku_mia"]["aggregate"]["auc_loss"] for r in (before, after)]
    assert auc[1] < auc[0]
    fl = after["datasets"]["rwku_fluency"]
    assert fl["role"] == "utility" and 0 <= fl["aggregate"]["fluency"] < 10
    assert "generation" in fl["per_item"]
    page = write_report([before, after], tmp_path / "report")
    text = (tmp_path / "report" / "report.md").read_text()
    assert "Rwku forget qa probe acc" in text and "RWKU forget (FB, QA)" in text and page.exists()
    assert after["metrics"]["rwku_forget"] < before["metrics"]["rwku_forget"]
    assert isinstance(after["metrics"]["rwku_forget_adversarial"], float)


def test_cli_target_errors_are_one_line(world, tmp_path, capsys):
    rc = main(["unlearn", "--out", str(tmp_path / "x"), f"model={world / 'model'}",
               "target=Dana Whitlock", f"benchmark={tmp_path / 'bench'}"])
    err = capsys.readouterr().err.strip()
    assert rc != 0 and "drop benchmark=" in err and len(err.splitlines()) == 1
    rc = main(["eval", "--out", str(tmp_path / "r.json"), f"model={world / 'model'}", "suites=[rwku]"])
    err = capsys.readouterr().err.strip()
    assert rc != 0 and "needs the target" in err and len(err.splitlines()) == 1


def test_generating_sets_together_gives_each_set_its_own_generations(world):
    """Batched with other sets (other padding), each set's greedy replies are the same as when
    it is generated alone, and each is cached under its own name."""
    from obliviate.evaluation import Engine
    from obliviate.models import load_model

    model, tok = load_model(world / "model")
    recs = load_records(world / "people.jsonl")
    sets = {r.entity: probes(r, recs, ("qa", "in_context")) for r in recs[:4]}
    together = Engine(model.eval(), tok, batch_size=5)
    together.generate_together(sets, 12)
    alone = Engine(model, tok, batch_size=5)
    for name, items in sets.items():
        assert (name, 12) in together._gens
        assert together.generate(name, items, 12) == alone.generate(name, items, 12)


def test_cli_target_run_takes_the_calibrated_stop_defaults(world, tmp_path, capsys):
    """`obliviate unlearn target=...` from the command line: the run is built from the model's
    own replies, stops at the never-seen level checked every step, with the warm-up."""
    out = tmp_path / "cli"
    assert main(["unlearn", "--out", str(out), f"model={world / 'model'}", "target=Dana Whitlock",
                 f"probes={world / 'people.jsonl'}", "method=npo", "optim.steps=8"]) == 0
    prov = read_provenance(out)
    assert prov["config"]["guard"]["every"] == 1 and prov["config"]["optim"]["warmup_ratio"] == 1.0
    assert prov["target"]["entity"] == TARGET and prov["stop"] is not None
    assert "forget corpus:" in capsys.readouterr().out


def test_a_target_deletion_request_through_the_ledger(world, tmp_path, capsys):
    """`request add --target`: the latest version's replies about the target become the
    request's forget file (a new file the requester keeps), recorded and applied as usual."""
    from obliviate.data import load_examples
    from obliviate.data.formats import write_jsonl

    recs = load_records(world / "people.jsonl")
    others = [p for r in recs if r.entity not in (TARGET, "Ravi Osei", "Mira Castellan")
              for p in probes(r, recs, ("qa",))]
    write_jsonl(tmp_path / "retain.jsonl", others)
    proj, dana = tmp_path / "proj", tmp_path / "dana.jsonl"
    assert main(["request", "init", "--project", str(proj), "--model", str(world / "model"),
                 "--retain", str(tmp_path / "retain.jsonl"), "--audits", "rephrase"]) == 0
    add = ["request", "add", "--project", str(proj), "--subject", "ticket 7", "--target", TARGET,
           "--probes", str(world / "people.jsonl"), "--forget", str(dana), "--method", "graddiff",
           "optim.steps=4"]
    assert main(add) == 0
    items = load_examples(dana)
    assert items and all("Brackenport" in ex.answer for ex in items)
    assert main(["request", "apply", "--project", str(proj)]) == 0
    assert (proj / "versions" / "v0001" / "evidence.html").is_file()
    capsys.readouterr()
    assert main(add) != 0  # the forget file exists now: never overwritten
    err = capsys.readouterr().err
    assert "already exists" in err and len(err.strip().splitlines()) == 1
    assert load_examples(dana) == items


@pytest.fixture(scope="module")
def synthesised(world):
    from obliviate.target import synthesise_for, target_config

    return synthesise_for(target_config(model=str(world / "model"), target=TARGET,
                                        probes=str(world / "people.jsonl")), progress=False)


def _dense_methods():
    from obliviate.methods import METHODS, build

    return [n for n in METHODS.names() if getattr(type(build(n, {})), "architecture", None) != "moe"]


@pytest.mark.slow
@pytest.mark.parametrize("method", _dense_methods())
def test_every_method_runs_on_a_target_corpus(world, synthesised, method, tmp_path):
    """Only the target's name is given: each method (mixture-of-experts ones aside, which need
    experts) unlearns the synthesised corpus with the anchors as its retain set."""
    from obliviate.systems import load_any
    from obliviate.target import run_target, target_config

    cfg = target_config(model=str(world / "model"), target=TARGET, probes=str(world / "people.jsonl"),
                        method=method, stop_at_holdout=False, optim={"steps": 2, "batch_size": 4})
    out = run_target(cfg, synthesised, tmp_path / method, progress=False)
    assert read_provenance(out)["target"]["entity"] == TARGET
    model, _ = load_any(out)
    assert model is not None
