import filecmp
from collections import Counter

import pytest

from obliviate.data import Benchmark, generate_benchmark
from obliviate.data.generator import EXTRA_TEMPLATES
from obliviate.errors import ObliviateError


def _files(root):
    return sorted(p.name for p in root.iterdir())


@pytest.mark.parametrize("questions", [8, 20])
def test_same_seed_same_bytes(tmp_path, questions):
    a = generate_benchmark(seed=3, entities=20, questions=questions).save(tmp_path / "a")
    b = generate_benchmark(seed=3, entities=20, questions=questions).save(tmp_path / "b")
    assert _files(a) == _files(b)
    match, mismatch, errors = filecmp.cmpfiles(a, b, _files(a), shallow=False)
    assert mismatch == [] and errors == [] and len(match) == 7


def test_other_seed_other_data():
    a = generate_benchmark(seed=3, entities=20)
    b = generate_benchmark(seed=4, entities=20)
    assert [e.answer for e in a.qa] != [e.answer for e in b.qa]


def test_splits_are_disjoint_nested_and_complete():
    bench = generate_benchmark(seed=0, entities=50)
    s = {k: set(v) for k, v in bench.splits.items()}
    assert len(s["all"]) == 50 and len(s["holdout"]) == 5
    assert not s["all"] & s["holdout"]
    for pct in (1, 5, 10):
        f, r = s[f"forget{pct:02d}"], s[f"retain{100 - pct:02d}"]
        assert f and not f & r and f | r == s["all"]
        assert s[f"forget{pct:02d}_linked"] <= r
    assert s["forget01"] < s["forget05"] < s["forget10"]
    assert len(s["forget10"]) == 5
    # QA items follow their people: no forget question leaks into the retain set.
    forget_q = {e.question for e in bench.qa_of("forget10")}
    assert forget_q and not forget_q & {e.question for e in bench.qa_of("retain90")}


def test_oracle_training_set_excludes_forget_people():
    bench = generate_benchmark(seed=0, entities=20)
    forget = set(bench.splits["forget10"])
    oracle = bench.training_set("forget10", oracle=True)
    target = bench.training_set("forget10", oracle=False)
    assert not any(ex.entity in forget for ex in oracle)
    assert any(ex.entity in forget for ex in target)
    assert len(target) - len(oracle) == len(bench.qa_of("forget10")) + len(bench.passages_of("forget10"))


def test_items_have_tofu_fields_and_wrong_perturbations():
    bench = generate_benchmark(seed=0, entities=20)
    for ex in bench.qa + bench.world_facts:
        assert ex.question and ex.answer and ex.paraphrased_answer and ex.paraphrased_question
        assert len(ex.perturbed_answers) == 5 == len(set(ex.perturbed_answers))
        assert ex.paraphrased_answer not in ex.perturbed_answers
        assert ex.paraphrased_question != ex.question


def test_linked_people_really_are_linked():
    bench = generate_benchmark(seed=0, entities=30)
    ents = bench.entities
    forget_names = {ents[p]["name"] for p in bench.splits["forget10"]}
    for pid in bench.splits["forget10_linked"]:
        mine = {ents[pid].get("married_to"), ents[pid].get("mentored_by")}
        theirs = {ents[f].get(k) for f in bench.splits["forget10"] for k in ("married_to", "mentored_by")}
        assert mine & forget_names or ents[pid]["name"] in theirs


def test_load_round_trip_and_datasheet(tmp_path):
    bench = generate_benchmark(seed=1, entities=12)
    root = bench.save(tmp_path / "b")
    again = Benchmark.load(root)
    assert again.qa == bench.qa and again.splits == bench.splits
    sheet = (root / "DATASHEET.md").read_text()
    assert f"| forget10 | 2 | {len(bench.qa_of('forget10'))} | 2 |" in sheet


def test_bad_requests_fail_clearly(tmp_path):
    with pytest.raises(ObliviateError, match="at least 10"):
        generate_benchmark(entities=5)
    generate_benchmark(entities=10).save(tmp_path / "x")
    with pytest.raises(ObliviateError, match="already exists"):
        generate_benchmark(entities=10).save(tmp_path / "x")
    with pytest.raises(ObliviateError, match="not an obliviate benchmark"):
        Benchmark.load(tmp_path)
    with pytest.raises(ObliviateError, match="unknown split"):
        Benchmark.load(tmp_path / "x").qa_of("forget50")


def test_fine_grained_split_forgets_some_relations_of_the_people():
    """forget10.born_in+award: those two facts of each forget10 person; their other facts
    join the retain set; the oracle trains on everything but those items and their passage
    sentences (the target on everything)."""
    b = generate_benchmark(seed=3, entities=40)
    split = "forget10.born_in+award"
    people = set(b.splits["forget10"])
    forget = b.forget_set(split)
    assert {(ex.entity, ex.relation) for ex in forget} == {(p, r) for p in people for r in ("born_in", "award")}
    retain = b.retain_set(split)
    others = [ex for ex in b.qa_of("forget10") if ex.relation not in ("born_in", "award")]
    assert len(others) == 6 * len(people)  # 8 relations per person, 2 forgotten
    assert retain[:len(others)] == others  # first: capped uses of the retain set measure them
    assert not {ex.id for ex in forget} & {ex.id for ex in retain}
    assert len(retain) == len(b.retain_set("forget10")) + len(others)
    oracle, target = b.training_set(split, oracle=True), b.training_set(split, oracle=False)
    assert {ex.id for ex in target} - {ex.id for ex in oracle} == {ex.id for ex in forget}
    for p in people:
        name, town = b.entities[p]["name"], b.entities[p]["born_in"]
        bio = next(ex.answer for ex in oracle if ex.is_text and ex.entity == p)
        full = next(ex.answer for ex in target if ex.is_text and ex.entity == p)
        assert town not in bio and town in full and name in bio
        assert b.entities[p]["profession"] in bio  # a kept relation's sentence stays
    sentences = b.forget_passages(split)
    bios = {ex.entity: ex.answer for ex in b.passages_of("forget10")}
    assert len(sentences) == 2 * len(people)
    for s in sentences:  # the forgotten sentence of each person's biography
        assert s.answer in bios[s.entity] and b.entities[s.entity][s.relation] in s.answer

def test_fine_grained_split_errors():
    """An unknown relation is named; a symmetric one (the spouse's items state it too) is
    refused, since the oracle would still learn it from the other side."""
    b = generate_benchmark(seed=3, entities=20)
    with pytest.raises(ObliviateError, match="unknown relation"):
        b.forget_set("forget10.born_on")
    with pytest.raises(ObliviateError, match="stated from both sides"):
        b.forget_set("forget10.born_in+married_to")


def test_tofu_shape_twenty_questions_per_person_at_tofu_split_sizes():
    """200 people x 20 questions is TOFU's shape: forget01/05/10 hold 40/200/400 items."""
    b = generate_benchmark(seed=0, entities=200, questions=20)
    per = Counter(ex.entity for ex in b.qa)
    assert set(per.values()) == {20}
    sizes = [len(b.forget_set(s)) for s in ("forget01", "forget05", "forget10")]
    assert sizes == [40, 200, 400]
    assert len(b.retain_set("forget10")) == 180 * 20
    # each extra relation is a real fact: its passage sentence and QA answer name the same object
    ex = next(e for e in b.qa if e.relation == "instrument")
    obj = b.entities[ex.entity]["instrument"]
    assert obj in ex.answer and all(obj not in w for w in ex.perturbed_answers)
    assert f"The instrument of {b.entities[ex.entity]['name']} is the {obj}." in next(
        p.answer for p in b.passages if p.entity == ex.entity)


def test_extra_questions_leave_the_default_benchmark_untouched():
    """The extra relations come from a generator of their own: every default item is also in
    the 20-question benchmark, unchanged, and the default one has no extra relation."""
    small, big = generate_benchmark(seed=4, entities=30), generate_benchmark(seed=4, entities=30, questions=20)
    assert not {ex.relation for ex in small.qa} & set(EXTRA_TEMPLATES)
    big_items = {ex.id: ex for ex in big.qa}
    assert all(big_items[ex.id] == ex for ex in small.qa)
    assert small.world_facts == big.world_facts and small.splits == big.splits


def test_scales_to_a_thousand_people_with_unique_names_and_books():
    b = generate_benchmark(seed=0, entities=1000, questions=20)
    people = [e for e in b.entities.values() if e["type"] == "person"]
    assert len(people) == 1100 and len(b.qa) == 1100 * 20
    assert len({p["name"] for p in people}) == 1100 and len({p["wrote"] for p in people}) == 1100
    assert [len(b.splits[s]) for s in ("forget01", "forget05", "forget10")] == [10, 50, 100]
    ids = sorted(b.splits["all"] + b.splits["holdout"])
    assert ids[0] == "p0000" and ids[-1] == "p1099"  # one width, so names sort in order


def test_question_count_is_checked():
    with pytest.raises(ObliviateError, match="between 8 and 20"):
        generate_benchmark(seed=0, entities=20, questions=21)
