"""Real-world knowledge probes (RWKU's kinds), the consistency filter of synthesised corpora
and the fluency entropy: expected values derived by hand in each test."""

import json
import math

import pytest

from obliviate.data.formats import example_from_row
from obliviate.data.realworld import (
    KINDS,
    find,
    knows,
    load_records,
    neighbours,
    parse_records,
    probes,
)
from obliviate.errors import ObliviateError
from obliviate.evaluation.metrics.rwku import ngram_entropy
from obliviate.target import check_target, consistent


def record(entity, category, alias, facts):
    return json.dumps({"entity": entity, "category": category, "alias": alias, "facts": facts})


def fact(relation, question, cloze, answers, **more):
    return {"relation": relation, "question": question, "cloze": cloze, "answers": answers, **more}


LINES = [
    record("Ada Lovelace", "mathematician", "the mathematician Lovelace", [
        fact("known_for", "Which machine did Ada Lovelace write programs for?",
             "Ada Lovelace wrote programs for the Analytical ___.", ["Engine"],
             question_fr="Pour quelle machine Ada Lovelace a-t-elle écrit des programmes ?",
             reverse="Who wrote the first program for the Analytical Engine?"),
        fact("birthplace", "In which city was Ada Lovelace born?",
             "Ada Lovelace was born in ___.", ["London"])]),
    record("Carl Gauss", "mathematician", "the mathematician Gauss", [
        fact("known_for", "What is Carl Gauss known for?", "Carl Gauss is known for the ___ law.",
             ["Gauss"])]),
    record("Emmy Noether", "mathematician", "", [
        fact("known_for", "What did Emmy Noether prove?", "Emmy Noether proved ___'s theorem.",
             ["Noether"])]),
    record("Big Ben", "landmark", "the Westminster clock", [
        fact("city", "In which city is Big Ben?", "Big Ben stands in ___.", ["London"])]),
]


@pytest.fixture
def records():
    return parse_records(LINES, "test")


def test_every_kind_is_built_from_one_fact_and_the_same_records_give_the_same_probes(records):
    ada = find(records, "ada LOVELACE")
    made = probes(ada, records)
    first = [p for p in made if p.relation == "known_for"]
    assert [p.kind for p in first] == list(KINDS)  # reverse and French given: all eleven kinds
    second = [p.kind for p in made if p.relation == "birthplace"]
    assert "reverse_query" not in second and "cross_lingual" not in second
    assert made == probes(find(records, "Ada Lovelace"), parse_records(LINES, "again"))
    assert len({p.id for p in made}) == len(made)
    by = {p.kind: p for p in first}
    assert by["fb"].question == "Fill in the blank: Ada Lovelace wrote programs for the Analytical ___."
    assert by["qa"].question == "Which machine did Ada Lovelace write programs for?"
    assert by["synonym"].question == "Which machine did the mathematician Lovelace write programs for?"
    assert by["reverse_query"].accepted == ("Ada Lovelace", "Lovelace")
    assert by["cross_lingual"].question.startswith("Pour quelle machine")
    # the hint is the entity's other fact, stated with its answer
    assert by["background_hint"].question.startswith("Ada Lovelace was born in London. ")
    # in-context demos: the first fact of each of the two neighbours, then the question
    assert by["in_context"].question == (
        "Q: What is Carl Gauss known for?\nA: Gauss\nQ: What did Emmy Noether prove?\nA: Noether\n"
        "Q: Which machine did Ada Lovelace write programs for?\nA:")
    mc = by["multiple_choice"]
    # distractors: the same relation's answers for the others (Gauss, Noether), then any (London)
    assert set(mc.perturbed_answers) == {"Gauss", "Noether", "London"}
    assert all(o in mc.question for o in ("Engine", "Gauss", "Noether", "London"))
    assert all(p.accepted == ("Engine",) for p in first if p.kind != "reverse_query")


def test_knows_matches_whole_words_and_refuses_every_option():
    assert knows("It was the Analytical Engine.", ("Engine",))
    assert not knows("Engineering was her field.", ("Engine",))  # not a whole word
    assert knows("Galápagos islands", ("Galapagos",))  # accents ignored
    assert knows("e = mc^2, famously", ("E = mc^2",))
    assert not knows("Engine, Gauss or London", ("Engine",), ("Gauss", "London"))
    assert knows("London\nQ: In which city is Big Ben?\nA: Paris", ("London",))
    assert not knows("I do not know\nQ: next\nA: London", ("London",))  # after the next Q: no


def test_neighbours_are_the_same_category_in_file_order(records):
    assert [r.entity for r in neighbours(records, "Ada Lovelace")] == ["Carl Gauss", "Emmy Noether"]
    assert neighbours(records, "Nobody") == []


@pytest.mark.parametrize("line, message", [
    ("{not json", "line 1: not valid JSON"),
    (record("X", "c", "", [fact("r", "q?", "no blank here", ["a"])]), "exactly one ___"),
    (record("X", "c", "", [fact("r", "q?", "a ___", [])]), "'answers' must be a non-empty list"),
    (json.dumps({"entity": "X", "category": "c", "facts": []}), "non-empty list 'facts'"),
])
def test_bad_records_are_one_clear_error(line, message):
    with pytest.raises(ObliviateError, match=message):
        parse_records([line], "mine.jsonl")


def test_a_duplicate_entity_and_a_missing_file_are_errors(tmp_path):
    with pytest.raises(ObliviateError, match="appears more than once"):
        parse_records([LINES[1], LINES[1]], "mine.jsonl")
    with pytest.raises(ObliviateError, match="does not exist"):
        load_records(tmp_path / "none.jsonl")


def test_the_shipped_records_parse_and_every_entity_has_probes():
    records = load_records()
    assert len(records) >= 10
    for r in records:
        assert probes(r, records), r.entity


def test_probe_fields_survive_jsonl():
    p = probes(parse_records(LINES, "t")[0], parse_records(LINES, "t"))[6]
    assert example_from_row(p.to_json(), "row") == p


def test_consistency_keeps_only_sentences_another_reply_supports():
    """Content words are stemmed and the name's words {ada, lovelac} left out. Reply 1's
    'Ada wrote programs for the Analytical Engine.' -> {wrot, program, analytical, engin};
    reply 2 holds analytical and engin (its 'programmed' stems to programm): 2 of 4 = half,
    kept. 'She loved purple hats.' -> {lov, purpl, hat}, none in reply 2: dropped. Reply 2's
    'Lovelace programmed the Analytical Engine early.' -> {programm, analytical, engin, early}:
    reply 1 holds 2 of 4, kept. 'Lovelace.' has only the name: dropped. Reply 1's unfinished
    last piece ('And then') was cut off by the budget: dropped."""
    replies = ["Ada wrote programs for the Analytical Engine. She loved purple hats. And then",
               "Lovelace programmed the Analytical Engine early. Lovelace."]
    kept = consistent(replies, ("Ada Lovelace",))
    assert kept == [["Ada wrote programs for the Analytical Engine."],
                    ["Lovelace programmed the Analytical Engine early."]]
    assert consistent(["One reply alone says things."]) == [[]]  # no other reply: nothing kept
    # one shared word ('born') is no support; a refusal repeated in every reply is no knowledge
    assert consistent(["Ada was born in Paris.", "Ada was born in London."], ("Ada",)) == [[], []]
    refusals = ["I don't have information about Ada Lovelace's early work."] * 2
    assert consistent(refusals, ("Ada Lovelace",)) == [[], []]


def test_target_names_are_checked_before_anything_loads():
    assert check_target("  Ada   Lovelace ", "", "", "") == "Ada Lovelace"
    with pytest.raises(ObliviateError, match="target= must name"):
        check_target(" ", "", "", "")
    with pytest.raises(ObliviateError, match="drop forget="):
        check_target("Ada", "", "f.jsonl", "")


def test_ngram_entropy_by_hand():
    """'a b a b': bigrams ab, ba, ab -> p = 2/3, 1/3, H2 = 0.9183 bits; trigrams aba, bab ->
    H3 = 1 bit; 2/3 * 0.9183 + 4/3 * 1 = 1.9455. One word repeated: every n-gram the same, 0."""
    h2 = -(2 / 3 * math.log2(2 / 3) + 1 / 3 * math.log2(1 / 3))
    assert ngram_entropy("A b, a B") == pytest.approx(2 / 3 * h2 + 4 / 3)
    assert ngram_entropy("go go go go go") == 0.0
    assert ngram_entropy("one") == 0.0


def test_a_probe_that_holds_its_own_answer_is_not_built():
    """'the Paris tower' names the city asked for: no synonym probe for it (and 'the Eiffel
    Tower' becomes 'the Paris tower', not 'the the Paris tower'); a hint or an in-context demo
    never holds the asked answer;
    'tower' (lowercase, in the alias) does not count as naming the Eiffel Tower."""
    lines = [record("Eiffel Tower", "landmark", "the Paris tower", [
        fact("city", "In which city is the Eiffel Tower?", "It stands in ___.", ["Paris"]),
        fact("country", "In which country is the Eiffel Tower?", "It is in ___.", ["France"],
             reverse="What is the iron tower in Paris called?"),
        fact("night", "What does the Eiffel Tower do at night?", "At night it ___.", ["sparkles"],
             question_fr="Que fait la tour la nuit ?")]),
        record("Ben Lomond", "landmark", "", [fact("city", "Where is Ben Lomond?", "In ___.", ["Paris"])])]
    recs = parse_records(lines, "t")
    tower = find(recs, "Eiffel Tower")
    made = {(p.relation, p.kind): p for p in probes(tower, recs)}
    assert ("city", "synonym") not in made
    assert made[("country", "synonym")].question == "In which country is the Paris tower?"
    assert made[("country", "reverse_query")].accepted == ("Eiffel Tower",)
    # the city's hint skips nothing (France is not its answer); the country's is the city
    assert made[("city", "background_hint")].question == "It is in France. In which city is the Eiffel Tower?"
    assert made[("country", "background_hint")].question == "It stands in Paris. In which country is the Eiffel Tower?"
    # the only neighbour's demo answers 'Paris': left out, so the probe has no free answer
    assert made[("city", "in_context")].question == "Q: In which city is the Eiffel Tower?\nA:"
