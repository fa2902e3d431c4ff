import json

import pytest

from obliviate.data import Example, load_examples, read_tofu_jsonl, validate_split
from obliviate.errors import ObliviateError


def test_reads_tofu_reference_file(reference_dir):
    items = read_tofu_jsonl(reference_dir / "tofu" / "real_authors_perturbed.json")
    assert len(items) == 100
    first = items[0]
    assert first.question == "Who wrote the play 'Romeo and Juliet'?"
    assert first.answer == "William Shakespeare"
    assert first.perturbed_answers == ("Charles Dickens", "Virginia Woolf", "Mark Twain")
    assert first.paraphrased_answer is None  # utility sets have none; the answer stands in
    assert len({ex.id for ex in items}) == 100


def test_plain_jsonl_question_answer_and_text(tmp_path):
    p = tmp_path / "mine.jsonl"
    p.write_text(json.dumps({"question": "Q?", "answer": "A."}) + "\n\n"
                 + json.dumps({"text": "Some passage."}) + "\n")
    qa, text = load_examples(p)
    assert (qa.question, qa.answer, qa.is_text) == ("Q?", "A.", False)
    assert (text.answer, text.is_text) == ("Some passage.", True)


@pytest.mark.parametrize("content, message", [
    ('{"question": "Q?", "answer": "A."}\n{"question": "Q2?"\n', r"mine.jsonl:2: not valid JSON"),
    ('{"question": "Q?"}\n', r"mine.jsonl:1: missing field 'answer'"),
    ('{"answer": "A."}\n', r"missing field 'question'"),
    ('{"question": "Q?", "answer": ""}\n', r"'answer' must be a non-empty string"),
    ('{"question": "Q?", "answer": "A", "perturbed_answer": [1]}\n', r"list of strings"),
    ('[1, 2]', r"expected a JSON object"),
])
def test_malformed_input_names_line_and_field(tmp_path, content, message):
    p = tmp_path / "mine.jsonl"
    p.write_text(content)
    with pytest.raises(ObliviateError, match=message):
        read_tofu_jsonl(p)


def test_missing_file_and_unknown_source(tmp_path):
    with pytest.raises(ObliviateError, match="not found"):
        load_examples(tmp_path / "nope.jsonl")
    with pytest.raises(ObliviateError, match="not found"):
        load_examples("nope")


def test_empty_forget_and_overlap_are_errors():
    a, b = Example(question="q1", answer="a1"), Example(question="q2", answer="a2")
    with pytest.raises(ObliviateError, match="forget set is empty"):
        validate_split([], [a])
    with pytest.raises(ObliviateError, match="1 item\\(s\\) are in both"):
        validate_split([a, b], [Example(question="q1", answer="a1", id="other-id")])
    validate_split([a], [b])  # disjoint: fine
