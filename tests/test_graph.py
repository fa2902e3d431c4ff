"""The built-in benchmark's graph mode (PISTOL-style): degrees, splits and what the oracle sees."""

import hashlib

import pytest

from obliviate.cli import main
from obliviate.data import Benchmark
from obliviate.data.graph import generate_graph
from obliviate.errors import ObliviateError


def _digest(folder):
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


def test_each_forget_company_has_exactly_its_degree_and_only_its_contracts_go():
    g = generate_graph(seed=3, entities=30, degrees=(1, 3, 6))
    for d in (1, 3, 6):
        split = f"forget_deg{d}"
        (company,) = g.splits[split]
        contracts = {e for e, v in g.entities.items() if v["type"] == "contract" and company in (v["a"], v["b"])}
        assert len(contracts) == d == len(g.neighbours(split))
        forget = g.forget_set(split)
        assert {ex.entity for ex in forget} == contracts and len(forget) == 3 * d
        name = g.entities[company]["name"]
        assert all(name in ex.question for ex in forget)
        oracle = g.training_set(split, oracle=True)
        assert not {ex.id for ex in oracle} & {ex.id for ex in forget}
        assert {ex.id for ex in g.training_set(split, oracle=False)} == {ex.id for ex in oracle} | {ex.id for ex in forget}
        linked = g.linked_set(split)
        assert linked and all(name not in ex.question for ex in linked)
        assert all(ex.id in {o.id for o in oracle} for ex in linked)  # retained facts
    held = {ex.entity for ex in g.holdout_set()}
    trained = {ex.entity for ex in g.training_set("forget_deg1", oracle=False)}
    assert held and not held & trained


def test_same_seed_same_bytes_and_it_loads_back(tmp_path):
    assert main(["generate", "--graph", "--degrees", "2,5", "--entities", "20", "--seed", "1",
                 "--out", str(tmp_path / "a")]) == 0
    assert main(["generate", "--graph", "--degrees", "5,2", "--entities", "20", "--seed", "1",
                 "--out", str(tmp_path / "b")]) == 0
    assert _digest(tmp_path / "a") == _digest(tmp_path / "b")
    g = Benchmark.load(tmp_path / "a")
    assert g.default_split == "forget_deg5" and len(g.forget_set("")) == 15
    assert "neighbour_contracts" in g.side_sets("")
    with pytest.raises(ObliviateError, match="unknown split 'forget10'"):
        g.forget_set("forget10")


@pytest.mark.parametrize("argv, message", [
    (["--degrees", "2,x"], "--degrees must be integers"),
    (["--degrees", "30", "--entities", "20"], "too few for degree 30"),
    (["--degrees", "0"], "positive"),
])
def test_bad_graph_options_are_one_line(tmp_path, capsys, argv, message):
    assert main(["generate", "--graph", *argv, "--out", str(tmp_path / "g")]) != 0
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1
