"""Worst-case forget sets (Fan et al. 2024): the first-order proxy on a toy whose answer is
known, and the select-forget command."""

import json

import pytest
import torch

from obliviate.cli import main
from obliviate.data import Example
from obliviate.data.formats import write_jsonl
from obliviate.encoding import collate, encode
from obliviate.methods.base import batch_nll
from obliviate.models import TinyModelConfig, build_tiny_model, save_model, train_tokenizer
from obliviate.selection import alignment, choose
from tinyfit import fit

UNIQUE = {"ann": ("Where does Ann live?", "Ann lives in a red barn."),
          "bo": ("What does Bo eat?", "Bo eats plums at noon."),
          "cy": ("Which sport does Cy play?", "Cy plays polo on Sundays."),
          "dee": ("What does Dee drive?", "Dee drives an old tractor."),
          "eli": ("What does Eli sing?", "Eli sings sea shanties.")}
TWIN = ("Where does the keeper work?", "The keeper works at the Brackenport lighthouse.")


def _items():
    """Two entities ('twin1', 'twin2') hold the same fact, worded the same; the others hold
    one fact each that nobody else shares. Forgetting a twin fights its twin's fact, which
    must stay: the worst case, known by construction."""
    items = [Example(question=q, answer=a, entity=e, id=e) for e, (q, a) in UNIQUE.items()]
    items += [Example(question=TWIN[0], answer=TWIN[1], entity=t, id=t) for t in ("twin1", "twin2")]
    return items


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    root = tmp_path_factory.mktemp("select")
    items = _items()
    tok = train_tokenizer([t for ex in items for t in (ex.question, ex.answer)], vocab_size=300)
    torch.manual_seed(0)
    model = build_tiny_model(tok, TinyModelConfig(layers=2, hidden=64, heads=2, intermediate=128))
    batch = collate([encode(tok, ex, i) for i, ex in enumerate(items)], tok.pad_token_id)
    save_model(fit(model, batch, steps=120, lr=3e-3), tok, root / "model", {"test": True})
    write_jsonl(root / "pool.jsonl", items)
    return root, model, tok, items


def _rest_loss_after_ascent(model, tok, items, chosen, lr=0.05):
    """The rest's answer NLL after one gradient-ascent step on the chosen entities' items."""
    import copy

    m = copy.deepcopy(model).train()
    forget = [encode(tok, ex, i) for i, ex in enumerate(items) if ex.entity in chosen]
    rest = [encode(tok, ex, i) for i, ex in enumerate(items) if ex.entity not in chosen]
    (-batch_nll(m, collate(forget, tok.pad_token_id))).backward()
    with torch.no_grad():
        for p in m.parameters():
            if p.grad is not None:
                p -= lr * p.grad
        return float(batch_nll(m.eval(), collate(rest, tok.pad_token_id)))


def test_worst_case_picks_the_twins_and_costs_the_rest_more_than_random(toy):
    _, model, tok, items = toy
    groups = {}
    for ex in items:
        groups.setdefault(ex.entity, []).append(ex)
    scores = alignment(model, tok, groups, "Question: {question}\nAnswer: ")
    assert choose(scores, list(groups), 1, 0)[0] in ("twin1", "twin2")
    worst = choose(scores, list(groups), 1, 0)
    # the same step on every other single entity hurts the rest less
    cost = _rest_loss_after_ascent(model, tok, items, worst)
    others = [_rest_loss_after_ascent(model, tok, items, [n]) for n in UNIQUE]
    assert cost > max(others)
    draws = [choose(None, list(groups), 1, seed) for seed in range(5)]
    assert all(d[0] in groups for d in draws) and len({d[0] for d in draws}) > 1  # seeded, varied
    assert choose(None, list(groups), 2, 3) == choose(None, list(groups), 2, 3)


def test_select_forget_cli_writes_both_sides(toy, tmp_path, capsys):
    root, *_ = toy
    out = tmp_path / "sel"
    assert main(["select-forget", "--worst-case", "--out", str(out), f"model={root / 'model'}",
                 f"data={root / 'pool.jsonl'}", "size=1"]) == 0
    sel = json.loads((out / "selection.json").read_text())
    assert sel["mode"] == "worst_case" and sel["chosen"][0].startswith("twin")
    forget = [json.loads(x) for x in (out / "forget.jsonl").read_text().splitlines()]
    retain = [json.loads(x) for x in (out / "retain.jsonl").read_text().splitlines()]
    assert {r["entity"] for r in forget} == set(sel["chosen"])
    assert not {r["entity"] for r in forget} & {r["entity"] for r in retain}
    assert len(forget) + len(retain) == len(_items())
    capsys.readouterr()
    assert main(["select-forget", "--out", str(out), f"data={root / 'pool.jsonl'}", "size=1"]) != 0
    assert "already exists" in capsys.readouterr().err
    assert main(["select-forget", "--worst-case", "--out", str(tmp_path / "x"),
                 f"data={root / 'pool.jsonl'}", "size=1"]) != 0
    assert "give model=" in capsys.readouterr().err
    assert main(["select-forget", "--out", str(tmp_path / "y"), f"data={root / 'pool.jsonl'}",
                 "size=7"]) != 0
    err = capsys.readouterr().err
    assert "leaves nothing to retain" in err and len(err.strip().splitlines()) == 1
