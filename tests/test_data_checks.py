"""Data and results checks: each check fires on data built to show its problem and stays quiet
on the built-in benchmark; the KS sample size against values derived by hand."""

from __future__ import annotations

import dataclasses
import re
from math import comb

import pytest

from obliviate.data import Example, generate_benchmark
from obliviate.data.checks import Finding, check_results, check_sets, min_forget_items
from obliviate.errors import ObliviateError


@pytest.fixture(scope="module")
def bench():
    return generate_benchmark(seed=0, entities=40)


@pytest.fixture(scope="module")
def sets(bench):
    return {"forget": ("forget", bench.qa_of("forget10")),
            "retain": ("retain", bench.qa_of("retain90")),
            "holdout": ("holdout", bench.qa_of("holdout")),
            "world_facts": ("utility", bench.world_facts)}


def _codes(findings: list[Finding]) -> list[tuple[str, str, str]]:
    return [(f.level, f.code, f.where) for f in findings]


def _with(sets, name, examples):
    return {**sets, name: (sets[name][0], examples)}


# ---- the built-in benchmark ------------------------------------------------------------------

def test_the_builtin_benchmark_is_quiet(sets):
    """forget10 of 40 people: 32 forget items (>= 16), paraphrases and 5 perturbed answers on
    every item, perturbed answers in the paraphrase's wording, no person in two splits."""
    assert [len(ex) for _, ex in sets.values()] == [32, 288, 32, 50]
    assert check_sets(sets) == []


def test_a_one_person_forget_split_is_too_small(bench):
    """forget01 of 40 people is 1 person, 8 items: below 16, so a warning (not an error:
    with 8 items a complete separation gives p = 2 / C(16, 8) = 2 / 12870 < 0.05)."""
    found = check_sets({"forget": ("forget", bench.qa_of("forget01"))})
    assert _codes(found) == [("warning", "few_forget_items", "forget")]
    assert "has 8 items" in found[0].message and "at least 16" in found[0].message


# ---- the KS test's sample size ---------------------------------------------------------------

def test_min_forget_items_with_complete_separation():
    """n per side, D = 1 (every model value below every oracle value): the exact two-sided
    p-value is 2 / C(2n, n), the two orderings out of all C(2n, n) equally likely ones.
    n = 3: 2 / C(6, 3) = 2 / 20 = 0.1, not below 0.05; n = 4: 2 / C(8, 4) = 2 / 70 = 0.0286."""
    assert min_forget_items(1.0, 0.05) == 4
    # alpha 0.1: n = 3 gives exactly 0.1, not below; n = 4 still the first
    assert min_forget_items(1.0, 0.1) == 4
    # alpha 0.2: n = 2 gives 2 / C(4, 2) = 2 / 6 = 0.33; n = 3 gives 0.1 < 0.2
    assert min_forget_items(1.0, 0.2) == 3


def test_min_forget_items_for_a_difference_of_one_half():
    """With n items the statistic is a multiple of 1/n, at most floor(n / 2) / n here. For
    equal sizes, Gnedenko and Korolyuk (1951): P(D >= k/n) = 2 sum_{j>=1} (-1)^(j+1)
    C(2n, n - jk) / C(2n, n).
    n = 15, k = 7: 2 (C(30, 8) - C(30, 1)) / C(30, 15) = 2 (5852925 - 30) / 155117520 = 0.0755
    n = 16, k = 8: 2 (C(32, 8) - C(32, 0)) / C(32, 16) = 2 (10518300 - 1) / 601080390 = 0.0350
    n = 17, k = 8: 2 (C(34, 9) - C(34, 1)) / C(34, 17) = 2 (52451256 - 34) / 2333606220 = 0.0450
    and below 0.05 from then on (the next test checks every size): 16."""
    assert 2 * (5852925 - 30) / 155117520 > 0.05
    assert 2 * (10518300 - 1) / 601080390 < 0.05 and 2 * (52451256 - 34) / 2333606220 < 0.05
    assert min_forget_items() == min_forget_items(0.5, 0.05) == 16


def _closed_form(n: int, k: int) -> float:
    """Gnedenko-Korolyuk's exact P(D_{n,n} >= k/n), in integers (independent of scipy)."""
    return 2 * sum((-1) ** (j + 1) * comb(2 * n, n - j * k) for j in range(1, n // k + 1)) \
        / comb(2 * n, n)


@pytest.mark.parametrize("d", [0.3, 0.4, 0.5, 0.9, 1.0])
def test_min_forget_items_is_the_size_from_which_on_every_set_passes(d):
    """p does not fall monotonically: for d = 0.3, n = 44 passes (k = 13) but n = 46 does not
    (k = 13 again, now a smaller difference): the answer is the size after the last failure."""
    def passes(n):
        k = int(d * n + 1e-9)
        return k > 0 and _closed_form(n, k) < 0.05

    expected = 1 + max(n for n in range(1, 201) if not passes(n))
    assert min_forget_items(d) == expected
    if d == 0.3:
        assert passes(44) and not passes(46) and expected == 47


def test_min_forget_items_refuses_impossible_arguments():
    with pytest.raises(ValueError):
        min_forget_items(0.0)
    with pytest.raises(ValueError):
        min_forget_items(0.5, 1.0)


@pytest.mark.parametrize(("n", "level"), [(3, "error"), (4, "warning"), (15, "warning"), (16, None)])
def test_few_forget_items(bench, n, level):
    """3 items cannot reach p < 0.05 at all (2 / 20 = 0.1); 4 to 15 can, but only for large
    differences; 16 can detect a difference of 0.5."""
    found = check_sets({"forget": ("forget", bench.qa_of("forget10")[:n])})
    assert _codes(found) == ([(level, "few_forget_items", "forget")] if level else [])


# ---- overlap between sets --------------------------------------------------------------------

def test_an_item_in_forget_and_retain_is_an_error(sets):
    forget = sets["forget"][1]
    twin = dataclasses.replace(forget[0], question="  " + forget[0].question.upper(),
                               answer=forget[0].answer.replace(" ", "   "))
    found = check_sets(_with(sets, "retain", [*sets["retain"][1], twin]))
    assert _codes(found) == [("error", "overlap", "forget/retain")]
    assert "1 of 32 items of forget are also in retain" in found[0].message
    assert forget[0].question in found[0].message


def test_a_trained_item_in_holdout_is_an_error(sets):
    found = check_sets(_with(sets, "holdout", [*sets["holdout"][1], *sets["retain"][1][:2]]))
    assert _codes(found) == [("error", "overlap", "retain/holdout")]
    assert "2 of 288 items of retain are also in holdout" in found[0].message
    assert "holdout must be data no model was trained on" in found[0].message


def test_a_near_duplicate_is_a_warning(sets):
    """'Which organisation does Moras Veligox work for' without its '?': not the same text,
    but a cosine of 0.92 or more (threshold 0.85)."""
    ex = sets["forget"][1][3]
    near = dataclasses.replace(ex, question=ex.question.rstrip("?"))
    found = check_sets(_with(sets, "retain", [*sets["retain"][1], near]))
    assert _codes(found) == [("warning", "near_duplicate", "forget/retain")]
    assert "1 of 32 items of forget nearly repeat" in found[0].message


# ---- paraphrased and perturbed answers -------------------------------------------------------

def test_missing_paraphrases_on_a_forget_set(sets):
    forget = sets["forget"][1]
    bare = [dataclasses.replace(ex, paraphrased_answer=None) for ex in forget[:2]] + forget[2:]
    found = check_sets(_with(sets, "forget", bare))
    assert _codes(found) == [("warning", "no_paraphrase", "forget")]
    assert "2 of 32 items" in found[0].message and "forget quality" in found[0].message


def test_a_utility_set_without_paraphrases_is_tofus_convention(sets):
    """TOFU's real-authors and world-facts sets have none: the answer stands in, and their
    perturbed answers are worded like it ('William Shakespeare' / 'Charles Dickens'). Here:
    the benchmark's world facts with the paraphrase's lead-in dropped from every perturbed
    answer ('Pandhaven is in Kelora.' against the answer 'Pandhaven is in Vostria.')."""
    bare = [_answer_worded(ex, paraphrase=None) for ex in sets["world_facts"][1]]
    assert bare[0].perturbed_answers[0].split()[:-1] == bare[0].answer.split()[:-1]
    assert check_sets(_with(sets, "world_facts", bare)) == []


def test_a_utility_set_without_paraphrases_but_perturbed_answers_in_another_wording(sets):
    """The benchmark's world facts without paraphrases: the perturbed answers keep the lead-in
    the answer lacks. Per relation, 10 items each, (answer words + lead-in words) / answer
    words (a wrong fact has as many words as the right one): in_country (4 + 4) / 4 = 2,
    founded (6 + 4) / 6 = 1.667, industry (6 + 3) / 6 = 1.5, known_for (7 + 3) / 7 = 1.429,
    located_in (6 + 3) / 6 = 1.5; mean 8.095 / 5 = 1.62, above 3/2."""
    bare = [dataclasses.replace(ex, paraphrased_answer=None) for ex in sets["world_facts"][1]]
    found = check_sets(_with(sets, "world_facts", bare))
    assert _codes(found) == [("warning", "style_length", "world_facts")]
    assert "1.62 times as long" in found[0].message


def test_missing_perturbed_answers(sets):
    retain = sets["retain"][1]
    bare = [dataclasses.replace(ex, perturbed_answers=()) for ex in retain[:3]] + retain[3:]
    found = check_sets(_with(sets, "retain", bare))
    assert _codes(found) == [("warning", "no_perturbed", "retain")]
    assert "3 of 288 items" in found[0].message and "model utility" in found[0].message


def test_a_single_perturbed_answer(sets):
    world = sets["world_facts"][1]
    one = [dataclasses.replace(ex, perturbed_answers=ex.perturbed_answers[:1]) for ex in world[:5]]
    found = check_sets(_with(sets, "world_facts", one + world[5:]))
    assert _codes(found) == [("warning", "few_perturbed", "world_facts")]
    assert "5 of 50 items" in found[0].message and "normalised prob" in found[0].message


def test_uneven_numbers_of_perturbed_answers(sets):
    forget = sets["forget"][1]
    three = [dataclasses.replace(ex, perturbed_answers=ex.perturbed_answers[:3]) for ex in forget[:1]]
    found = check_sets(_with(sets, "forget", three + forget[1:]))
    assert _codes(found) == [("warning", "uneven_perturbed", "forget")]
    assert "only the first 3" in found[0].message


REWORDED = "The records name {} when asked about this, as far as anyone knows"


def _answer_worded(ex: Example, paraphrase: str | None = REWORDED) -> Example:
    """The reported bug: perturbed answers copy the trained answer with one fact swapped
    ('X was born in Zaerkholt.'), the paraphrase is reworded ('The records name Brelgard...')."""
    lead = len(ex.paraphrased_answer) - len(ex.answer)  # the benchmark's lead-in, dropped
    return dataclasses.replace(
        ex, paraphrased_answer=paraphrase and paraphrase.format(ex.answer.split()[-1]),
        perturbed_answers=tuple(p[lead:] for p in ex.perturbed_answers))


def test_perturbed_answers_worded_like_the_trained_answer(sets):
    """Benchmark: the perturbed answers are the paraphrase with another fact, so the answer's
    ROUGE-L recall is 1 for the paraphrase and lower for the perturbed ones (gap about -0.25).
    Bugged: 'Moras Veligox was born in Zaerkholt.' keeps every word of the answer but the fact
    (1 to 3 of its 6 to 8 words): recall (6 - 3) / 6 = 1/2 or more per item; the reworded
    paraphrase shares the fact's last word (and 'the' of a book title) with it: 2/6 at most.
    Lengths: 6 to 8 words against the paraphrase's 13: at most 8/13 = 0.62 < 2/3."""
    bugged = [_answer_worded(ex) for ex in sets["forget"][1]]
    assert bugged[0].perturbed_answers[0] == "Moras Veligox was born in Zaerkholt."
    found = check_sets(_with(sets, "forget", bugged))
    assert _codes(found) == [("warning", "style_length", "forget"),
                             ("warning", "style_overlap", "forget")]
    assert all("write perturbed answers in the paraphrase's wording" in f.message for f in found)
    pert, para = map(float, re.search(r"perturbed ([\d.]+), paraphrased ([\d.]+)",
                                      found[1].message).groups())
    assert pert >= 0.5 and para <= 0.34 and pert - para > 0.25


def test_perturbed_answers_of_another_length(sets):
    """Each perturbed answer doubled: a length ratio of 2, outside [2/3, 3/2]; the answer's
    recall by the perturbed ones is unchanged (still below the paraphrase's 1)."""
    long = [dataclasses.replace(ex, perturbed_answers=tuple(f"{p} {p}" for p in ex.perturbed_answers))
            for ex in sets["retain"][1]]
    found = check_sets(_with(sets, "retain", long))
    assert _codes(found) == [("warning", "style_length", "retain")]
    assert "2.00 times as long" in found[0].message


def test_unknown_role_is_refused(sets):
    with pytest.raises(ObliviateError, match="did you mean 'forget'"):
        check_sets({"f": ("froget", sets["forget"][1])})


def test_findings_are_json():
    f = Finding("error", "overlap", "one line", "forget/retain")
    assert f.to_json() == {"level": "error", "code": "overlap", "message": "one line",
                           "where": "forget/retain"}


# ---- results -------------------------------------------------------------------------------

def _results(forget_r: list[float], retain_r: list[float], utility: float = 0.5,
             name: str = "m") -> dict:
    """What make_results + derive give, reduced to what the checks read."""
    def dataset(role, r, tr):
        return {"role": role, "n": len(r), "per_item": {"truth_ratio": r},
                "aggregate": {"prob": 0.9, "rougeL_recall": 0.8, "truth_ratio": tr}}

    return {"name": name, "datasets": {"forget": dataset("forget", forget_r, 0.5),
                                       "retain": dataset("retain", retain_r, 0.0 if utility == 0 else 0.6)},
            "metrics": {"model_utility": utility}}


GOOD = [2.0, 3.0, 1.5, 4.0]


def test_a_target_that_prefers_truth_is_quiet():
    assert check_results(_results(GOOD, GOOD), role="target") == []


def test_a_target_that_does_not_prefer_truth_on_its_training_data():
    """R > 1 on 2 of 4 forget items: a share of 0.5, at or below one half: an error; the
    retain set (R > 1 on 4 of 4) is fine."""
    found = check_results(_results([2.0, 0.5, 3.0, 0.9], GOOD), role="target")
    assert _codes(found) == [("error", "target_truth_ratio", "forget")]
    assert "2 of 4 items of forget (50%)" in found[0].message
    assert "run obliviate check" in found[0].message


def test_the_oracle_is_judged_on_retain_only():
    """The oracle never saw the forget set: R < 1 there is expected; on retain it is not."""
    assert check_results(_results([0.5, 0.4, 0.8, 0.9], GOOD), role="oracle") == []
    found = check_results(_results(GOOD, [0.5, 0.4, 2.0, 0.9]), role="oracle")
    assert _codes(found) == [("error", "oracle_truth_ratio", "retain")]
    assert "1 of 4 items of retain (25%)" in found[0].message


def test_an_unknown_model_is_not_judged_on_what_it_was_trained_on():
    assert check_results(_results([0.5] * 4, [0.5] * 4)) == []


def test_a_target_the_oracle_cannot_be_told_from():
    """Same truth ratios as the oracle: KS statistic 0, p = 1 > 0.05: an error. Completely
    separated (all of the target's above all of the oracle's): p = 2 / C(8, 4) = 2 / 70 =
    0.029 <= 0.05: quiet."""
    oracle = _results([1.1, 1.2, 1.3, 1.4], GOOD, name="oracle")
    found = check_results(_results([1.1, 1.2, 1.3, 1.4], GOOD), oracle, role="target")
    assert _codes(found) == [("error", "target_forget_quality", "forget")]
    assert "forget quality 1 against oracle (KS statistic 0.00, 4 forget items)" in found[0].message
    assert check_results(_results(GOOD, GOOD), oracle, role="target") == []


def test_the_oracle_against_itself_says_nothing_of_forget_quality():
    oracle = _results(GOOD, GOOD, name="oracle")
    assert check_results(oracle, oracle, role="oracle") == []


def test_zero_model_utility():
    found = check_results(_results(GOOD, GOOD, utility=0.0))
    assert _codes(found) == [("warning", "zero_utility", "")]
    assert "because retain truth_ratio is 0" in found[0].message
    assert check_results(_results(GOOD, GOOD, utility=0.4)) == []


def test_unknown_model_role_is_refused():
    with pytest.raises(ObliviateError, match="did you mean 'target'"):
        check_results(_results(GOOD, GOOD), role="targte")


def test_the_reported_case_errors_first():
    """The user's data: the target prefers the perturbed answers over the true ones it was
    trained on (R < 1 on 3 of 4 forget and 3 of 4 retain items), matches the oracle (same
    ratios: p = 1) and has a model utility of 0: three errors, then the warning."""
    oracle = _results([0.5, 0.6, 0.7, 1.2], [0.5, 0.6, 0.7, 1.2], utility=0.0, name="oracle")
    target = _results([0.5, 0.6, 0.7, 1.2], [0.5, 0.6, 0.7, 1.2], utility=0.0, name="target")
    assert [f.code for f in check_results(target, oracle, role="target")] == [
        "target_truth_ratio", "target_truth_ratio", "target_forget_quality", "zero_utility"]


def test_a_plain_utility_set_is_not_flagged_but_a_partly_perturbed_one_is():
    plain = [Example(f"a{i}", f"What is q{i}?") for i in range(6)]
    assert [f.code for f in check_sets({"real_world": ("utility", plain)})] == []
    partly = [*plain[:3], *(Example(f"b{i}", f"What is r{i}?", perturbed_answers=("x", "y"))
                            for i in range(3))]
    assert [f.code for f in check_sets({"mixed": ("utility", partly)})] == ["no_perturbed"]
