"""Dependent queries (Thaker et al. 2024): forget and retain facts asked through each other."""

from obliviate.data.dependent import compose, dependent_sets
from obliviate.data.examples import Example

F_SPOUSE = Example(question="Who is Ann Lee married to?", answer="Ann Lee is married to Bo Lin.",
                   entity="ann", relation="married_to", id="ann.married_to")
F_BORN = Example(question="Where was Ann Lee born?", answer="Ann Lee was born in Hull.",
                 entity="ann", relation="born_in", id="ann.born_in", perturbed_answers=("Ely",))
R_SPOUSE = Example(question="Who is Bo Lin married to?", answer="Bo Lin is married to Ann Lee.",
                   entity="bo", relation="married_to", id="bo.married_to")
R_BORN = Example(question="Where was Bo Lin born?", answer="Bo Lin was born in York.",
                 entity="bo", relation="born_in", id="bo.born_in")
R_OTHER = Example(question="Where was Cy Roe born?", answer="Cy Roe was born in Bath.",
                  entity="cy", relation="born_in", id="cy.born_in")
NAMES = {"ann": "Ann Lee", "bo": "Bo Lin", "cy": "Cy Roe"}


def test_a_dependent_query_is_the_second_fact_asked_through_the_first():
    q = compose(R_SPOUSE, F_BORN, "Ann Lee", "the spouse of Bo Lin")
    assert q.question == "Where was the spouse of Bo Lin born?"
    assert (q.answer, q.perturbed_answers, q.id) == (F_BORN.answer, ("Ely",), "bo.married_to+ann.born_in")
    x = compose(R_SPOUSE, F_BORN, "Ann Lee")
    assert x.question == ("Let X be the answer to this question: Who is Bo Lin married to? "
                          "Now answer: Where was X born?")


def test_forgotten_through_retained_is_forgotten_and_the_reverse_is_kept():
    """Ann (forgotten) is married to Bo (retained). Through Bo's spouse item: Ann's birthplace,
    a forgotten fact (Ann's own spouse item names Bo back, so it is not asked). Through Ann's
    spouse item: Bo's birthplace, a retained fact. Cy is named by no answer: no query."""
    sets = dependent_sets([F_SPOUSE, F_BORN], [R_SPOUSE, R_BORN, R_OTHER], NAMES,
                          {"married_to": "the spouse of {s}"})
    assert [(e.question, e.answer) for e in sets["dependent_forget"]] == [
        ("Where was the spouse of Bo Lin born?", "Ann Lee was born in Hull.")]
    assert [(e.question, e.answer) for e in sets["dependent_retain"]] == [
        ("Where was the spouse of Ann Lee born?", "Bo Lin was born in York.")]


def test_no_links_no_queries():
    assert dependent_sets([F_BORN], [R_OTHER], NAMES) == {"dependent_forget": [], "dependent_retain": []}
