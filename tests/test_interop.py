"""Reading other tools' evaluation logs, against TOFU's published logs and golden numbers
(../shared/reference/tofu/README.md)."""

import json
import math
from pathlib import Path

import pytest

from obliviate.cli import main
from obliviate.evaluation.interop import import_openunlearning, import_tofu
from obliviate.evaluation.tofu_math import rouge_l

# Component scores of llama2-7b_full listed in the reference README (TOFU's aggregation).
GOLDEN_FULL = {
    "real_authors_rougeL_recall": 0.933, "real_authors_prob": 0.455482,
    "real_authors_truth_ratio": 0.596229, "world_facts_rougeL_recall": 0.882479,
    "world_facts_prob": 0.418562, "world_facts_truth_ratio": 0.539033,
    "retain_rougeL_recall": 0.985655, "retain_prob": 0.989527, "retain_truth_ratio": 0.474699,
    "forget_rougeL_recall": 0.98545, "forget_prob": 0.990939, "forget_truth_ratio": 0.515985,
}


@pytest.fixture(scope="module")
def tofu(reference_dir):
    return reference_dir / "tofu"


def test_import_and_score_reproduce_the_published_numbers(tofu, tmp_path, capsys):
    full, oracle = tmp_path / "full.json", tmp_path / "retain90.json"
    assert main(["import", "tofu", str(tofu / "llama2-7b_full"), "--out", str(full)]) == 0
    assert main(["import", "tofu", str(tofu / "llama2-7b_retain90"), "--out", str(oracle)]) == 0
    out = tmp_path / "scores.json"
    assert main(["score", str(full), "--reference", str(oracle), "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "model_utility" in printed and "forget_quality" in printed
    scores = json.loads(out.read_text())["scores"]
    assert scores["model_utility"] == pytest.approx(0.6226773637, rel=1e-6)
    assert scores["forget_quality"] == pytest.approx(1.834066e-21, rel=1e-6)
    assert scores["forget_quality_ks"] == pytest.approx(0.396667, rel=1e-5)
    for key, value in GOLDEN_FULL.items():
        assert scores[key] == pytest.approx(value, abs=1e-6), key
    # the oracle against itself, straight from its log folder
    assert main(["score", str(tofu / "llama2-7b_retain90"), "--reference", str(oracle),
                 "--json", str(out)]) == 0
    scores = json.loads(out.read_text())["scores"]
    assert scores["model_utility"] == pytest.approx(0.6137449952, rel=1e-6)
    assert scores["forget_quality"] == 1.0 and scores["forget_quality_ks"] == 0.0


def test_our_rouge_reproduces_every_stored_rouge_recall(tofu):
    """Each log's generated_text is [prompt, generation, ground truth]; TOFU scored
    rougeL recall (stemmed) of the generation against the ground truth."""
    checked = 0
    for model in ("llama2-7b_full", "llama2-7b_retain90"):
        log = json.loads((tofu / model / "eval_log_forget.json").read_text())
        for i, (_, gen, truth) in log["generated_text"].items():
            assert rouge_l(truth, gen)[0] == pytest.approx(log["rougeL_recall"][i], abs=1e-12), (model, i)
            checked += 1
    assert checked == 600


def test_openunlearning_eval_json_as_a_reference(tofu, tmp_path):
    """An OpenUnlearning TOFU_EVAL.json written from the published llama2 logs (aggregates as
    OpenUnlearning names them, per-item truth ratios in its P(perturbed)/P(paraphrased)
    orientation) reads back to the same forget quality and model utility."""
    from obliviate.evaluation import derive

    def to_openunlearning(res):
        names = {"forget": "forget", "retain": "retain", "real_authors": "ra", "world_facts": "wf"}
        out = {}
        for ds, d in res["datasets"].items():
            p = names[ds]
            prob = f"{p}_Q_A_Prob" + ("_normalised" if d["role"] == "utility" else "")
            tr = "forget_truth_ratio" if ds == "forget" else f"{p}_Truth_Ratio"
            out[prob] = {"agg_value": d["aggregate"]["prob"]}
            out[f"{p}_Q_A_ROUGE"] = {"agg_value": d["aggregate"]["rougeL_recall"]}
            out[tr] = {"agg_value": d["aggregate"]["truth_ratio"], "value_by_index": {
                i: {"score": 1.0 / r} for i, r in zip(d["per_item"]["id"], d["per_item"]["truth_ratio"],
                                                      strict=True)}}
        return out

    full, oracle = import_tofu(tofu / "llama2-7b_full"), import_tofu(tofu / "llama2-7b_retain90")
    path = tmp_path / "TOFU_EVAL.json"
    path.write_text(json.dumps(to_openunlearning(oracle)))
    ou_oracle = import_openunlearning(path)
    scores = derive(full, ou_oracle)
    assert scores["forget_quality"] == pytest.approx(1.834066e-21, rel=1e-6)
    assert derive(ou_oracle)["model_utility"] == pytest.approx(0.6137449952, rel=1e-6)
    assert ou_oracle["datasets"]["forget"]["per_item"]["truth_ratio"] == pytest.approx(
        oracle["datasets"]["forget"]["per_item"]["truth_ratio"], rel=1e-12)


# Hand-written OpenUnlearning logs; format sources and derivations in its README.md.
OU_FIXTURES = Path(__file__).parent / "data" / "openunlearning"


def _check_fixture_scores(scores: dict) -> None:
    """What the two fixtures must score (tests/data/openunlearning/README.md derives each):
    forget prob (0.9 + 0.8 + 0.7 + 0.6)/4 = 0.75, ROUGE-L recall (1 + 1 + 1/2 + 1/2)/4 = 0.75,
    truth-ratio aggregate (e^-2 + e^-1.5 + e^-1 + 1)/4 as OpenUnlearning stored it; forget
    quality 8/35 with KS statistic 3/4 (exact p of the t t t r t r r r order); model utility
    9/16 (reciprocals of the nine components sum to 16)."""
    assert scores["forget_quality"] == pytest.approx(8 / 35, rel=1e-9)
    assert scores["forget_quality_ks"] == pytest.approx(0.75)
    assert scores["model_utility"] == pytest.approx(9 / 16, rel=1e-8)
    assert scores["forget_prob"] == pytest.approx(0.75)
    assert scores["forget_rougeL_recall"] == pytest.approx(0.75)
    assert scores["forget_truth_ratio"] == pytest.approx(
        (math.exp(-2) + math.exp(-1.5) + math.exp(-1) + 1) / 4, rel=1e-8)
    expected = {"retain_prob": 0.75, "retain_rougeL_recall": 0.5, "retain_truth_ratio": 0.75,
                "real_authors_prob": 0.5, "real_authors_rougeL_recall": 1.0,
                "real_authors_truth_ratio": 0.4, "world_facts_prob": 0.5,
                "world_facts_rougeL_recall": 0.75, "world_facts_truth_ratio": 0.4}
    for key, value in expected.items():
        assert scores[key] == pytest.approx(value, rel=1e-8), key


def _check_fixture_items(res: dict) -> None:
    """Per item: OpenUnlearning's truth ratios e^-2, e^-1.5, e^-1, 1 (wrong / correct) read
    back inverted, TOFU's orientation: e^2, e^1.5, e, 1; ids are its dataset indices."""
    forget = res["datasets"]["forget"]
    assert forget["n"] == 4 and forget["per_item"]["id"] == ["0", "1", "2", "3"]
    assert forget["per_item"]["truth_ratio"] == pytest.approx(
        [math.exp(2), math.exp(1.5), math.e, 1.0], rel=1e-8)
    assert res["reported"]["model_utility"] == pytest.approx(9 / 16, rel=1e-8)


def test_openunlearning_eval_json_fixture_as_written(tmp_path, capsys):
    """`obliviate import openunlearning` and `obliviate score --reference` on the fixtures
    exactly as OpenUnlearning writes them: the scores of _check_fixture_scores, plus the
    per-item probabilities (0.9, 0.8, 0.7, 0.6) and ROUGE-L recalls (1, 1, 1/2, 1/2)."""
    from obliviate.evaluation import load_results

    imported, out = tmp_path / "target.json", tmp_path / "scores.json"
    assert main(["import", "openunlearning", str(OU_FIXTURES / "target_TOFU_EVAL.json"),
                 "--out", str(imported)]) == 0
    assert main(["score", str(imported), "--reference", str(OU_FIXTURES / "retain_TOFU_EVAL.json"),
                 "--json", str(out)]) == 0
    _check_fixture_scores(json.loads(out.read_text())["scores"])
    res = load_results(imported)
    _check_fixture_items(res)
    assert res["datasets"]["forget"]["per_item"]["prob"] == pytest.approx([0.9, 0.8, 0.7, 0.6])
    assert res["datasets"]["forget"]["per_item"]["rougeL_recall"] == pytest.approx([1, 1, 0.5, 0.5])


def test_openunlearning_eval_json_fixture_aggregates_and_truth_ratios(tmp_path):
    """The fixtures with the per-item entries of their probability and ROUGE metrics left out
    (aggregates and truth ratios alone must be enough): aggregates, per-item truth ratios
    and the derived scores are those of _check_fixture_scores."""
    from obliviate.evaluation import derive

    def stripped(name):
        log = json.loads((OU_FIXTURES / name).read_text())
        for metric, entry in log.items():
            if "Prob" in metric or "ROUGE" in metric:
                entry.pop("value_by_index", None)
        path = tmp_path / name
        path.write_text(json.dumps(log))
        return path

    res = import_openunlearning(stripped("target_TOFU_EVAL.json"))
    ref = import_openunlearning(stripped("retain_TOFU_EVAL.json"))
    scores = derive(res, ref)
    _check_fixture_scores(scores)
    _check_fixture_items(res)
    assert derive(ref, res)["forget_quality"] == pytest.approx(8 / 35, rel=1e-9)


def test_bad_logs_are_clear_errors(tofu, tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert main(["import", "tofu", str(tmp_path / "empty"), "--out", str(tmp_path / "x.json")]) == 2
    assert "no eval_log_forget.json" in capsys.readouterr().err
    bad = tmp_path / "bad.json"
    bad.write_text('{"accuracy": 3}')
    assert main(["score", str(bad)]) == 2
    assert "not an OpenUnlearning" in capsys.readouterr().err
    bad.write_text("{not json")
    assert main(["import", "openunlearning", str(bad), "--out", str(tmp_path / "x.json")]) == 2
    assert "not valid JSON" in capsys.readouterr().err
    assert not (tmp_path / "x.json").exists()
