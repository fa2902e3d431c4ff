"""Greedy decoding with finished rows leaving the batch, against transformers' own generate."""

from __future__ import annotations

import pytest
import torch
from transformers import DynamicCache

from obliviate.decoding import SLACK, greedy_loop, select_rows
from obliviate.models import TinyModelConfig, build_tiny_model, train_tokenizer
from obliviate.systems import greedy_rows

TEXTS = ["Who wrote the book about the river?", "The river flows to the sea.",
         "Where was Ada Lovelace born?", "She was born in London."] * 5
PROMPTS = ["Where was Ada", "The river flows to the", "Who", "She was born in", "The book"]


@pytest.fixture(scope="module")
def lm():
    tok = train_tokenizer(TEXTS, vocab_size=300)
    model = build_tiny_model(tok, TinyModelConfig(layers=2, hidden=32, heads=2, intermediate=64), seed=3)
    return model.eval(), tok


def _left_batch(tok, texts):
    rows = [[tok.bos_token_id] + tok.encode(t, add_special_tokens=False) for t in texts]
    width = max(map(len, rows))
    ids = torch.full((len(rows), width), tok.pad_token_id)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, width - len(r):], mask[i, width - len(r):] = torch.tensor(r), 1
    return ids, mask


def _hf_rows(model, ids, mask, steps, eos, pad):
    """transformers' generate, its padding after each row's end token removed."""
    out = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=steps, do_sample=False,
                         eos_token_id=eos, pad_token_id=pad)[:, ids.shape[1]:].tolist()
    return [r[:r.index(eos) + 1] if eos in r else r for r in out]


def _eos_ending_some_rows(model, ids, mask, steps, pad):
    """A token that row 0 emits within 3 steps and some other row never does."""
    free = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=steps, do_sample=False,
                          eos_token_id=None, pad_token_id=pad)[:, ids.shape[1]:]
    for t in free[0, :3].tolist():
        if any(t not in r for r in free[1:].tolist()):
            return t
    raise AssertionError("the fixed seed gives a separating token")


class Uncached(torch.nn.Module):
    """A causal LM whose forward takes no cache; it records each call's batch size."""

    def __init__(self, model):
        super().__init__()
        self.model, self.rows = model, []

    def forward(self, input_ids=None, attention_mask=None):
        self.rows.append(len(input_ids))
        return self.model(input_ids=input_ids, attention_mask=attention_mask)


@torch.no_grad()
def test_cached_rows_equal_transformers_generate_and_finished_rows_leave(lm):
    model, tok = lm
    ids, mask = _left_batch(tok, PROMPTS)
    steps = 10
    eos = _eos_ending_some_rows(model, ids, mask, steps, tok.pad_token_id)
    want = _hf_rows(model, ids, mask, steps, eos, tok.pad_token_id)
    assert any(len(r) < steps for r in want) and any(len(r) == steps for r in want)
    assert greedy_rows(model, ids, mask, steps, eos) == want
    # the batch shrinks: each decoding call carries only the rows without their end token yet
    calls = []
    handle = model.register_forward_pre_hook(lambda m, a, kw: calls.append(kw["input_ids"].shape),
                                             with_kwargs=True)
    try:
        greedy_rows(model, ids, mask, steps, eos)
    finally:
        handle.remove()
    # the prompts are read in length groups (test below), then one token per live row per call
    reads = [rows for rows, width in calls if width > 1]
    decodes = [rows for rows, width in calls if width == 1]
    assert sum(reads) == len(PROMPTS)
    live = [sum(len(r) > s for r in want) for s in range(steps)]
    assert decodes == live[1:len(decodes) + 1]
    assert decodes[-1] < len(PROMPTS)


@torch.no_grad()
def test_model_without_a_cache_decodes_the_same_tokens_with_whole_sequences(lm):
    model, tok = lm
    ids, mask = _left_batch(tok, PROMPTS)
    eos = _eos_ending_some_rows(model, ids, mask, 8, tok.pad_token_id)
    plain = Uncached(model)
    got = greedy_rows(plain, ids, mask, 8, eos)
    # no cache: every call re-reads the whole sequence, so its positions are the model's own
    # (0.. from the left edge, padding included); transformers' generate with the same
    # positions is the step-by-step loop below
    seq, m = ids, mask
    done = [False] * len(PROMPTS)
    rows = [[] for _ in PROMPTS]
    for _ in range(8):
        nxt = model(input_ids=seq, attention_mask=m).logits[:, -1].argmax(-1)
        for i, t in enumerate(nxt.tolist()):
            if not done[i]:
                rows[i].append(t)
                done[i] = t == eos
        seq, m = torch.cat([seq, nxt[:, None]], 1), torch.cat([m, torch.ones_like(nxt[:, None])], 1)
    assert got == rows
    assert plain.rows[0] == len(PROMPTS) and plain.rows[-1] < len(PROMPTS)


def test_select_rows_cuts_tensors_caches_and_nested_state():
    cache = DynamicCache()
    k = torch.arange(4 * 2 * 3 * 5, dtype=torch.float32).reshape(4, 2, 3, 5)
    cache.update(k.clone(), -k.clone(), 0)
    state = {"mask": torch.arange(8).reshape(4, 2), "cache": cache, "pair": (torch.arange(4), 7),
             "scalar": torch.tensor(2.0), "name": "x"}
    keep = torch.tensor([3, 1])
    out = select_rows(state, keep)
    assert out["mask"].tolist() == [[6, 7], [2, 3]]
    assert torch.equal(out["cache"].layers[0].keys, k[[3, 1]])
    assert torch.equal(out["cache"].layers[0].values, -k[[3, 1]])
    assert out["pair"][0].tolist() == [3, 1] and out["pair"][1] == 7
    assert float(out["scalar"]) == 2.0 and out["name"] == "x"


def test_greedy_loop_stops_rows_at_their_end_token_and_the_loop_when_all_end():
    # a fake model over 3 rows: row r emits token 10+r until step r, then the end token 0
    def logits_for(rows, step):
        out = torch.zeros(len(rows), 1, 20)
        for j, r in enumerate(rows):
            out[j, 0, 0 if step >= r else 10 + r] = 1.0
        return out

    seen = []

    def prefill():
        return logits_for([0, 1, 2], 0), {"rows": torch.tensor([0, 1, 2]), "step": 0}

    def decode(ids, state):
        seen.append(state["rows"].tolist())
        step = state["step"] + 1
        return logits_for(state["rows"].tolist(), step), {"rows": state["rows"], "step": step}

    got = greedy_loop(prefill, decode, 3, max_new_tokens=10, eos=0)
    assert got == [[0], [11, 0], [12, 12, 0]]
    assert seen == [[1, 2], [2]]  # row 0 left after step 0, row 1 after step 1; then the end
    assert greedy_loop(prefill, decode, 3, max_new_tokens=0, eos=0) == [[], [], []]
    assert greedy_loop(prefill, decode, 3, max_new_tokens=2, eos=None) == [[0, 0], [11, 0], [12, 12]]



def test_ended_rows_stay_in_the_batch_until_they_are_an_eighth_of_it():
    # 16 rows; row 0 ends at step 0, row 1 at step 2, the rest run to the limit of 4 tokens.
    # Cutting a batch copies every live row's cache, so one ended row of 16 is carried along
    # (its tokens ignored) until a second one ends: 2/16 is the 1/SLACK that triggers a cut.
    assert SLACK == 8
    ends = {0: 0, 1: 2}

    def logits_for(rows, step):
        out = torch.zeros(len(rows), 1, 20)
        for j, r in enumerate(rows):
            out[j, 0, 0 if ends.get(r, 99) <= step else 10] = 1.0
        return out

    seen = []

    def decode(ids, state):
        seen.append(state["rows"].tolist())
        step = state["step"] + 1
        return logits_for(state["rows"].tolist(), step), {"rows": state["rows"], "step": step}

    rows = torch.arange(16)
    got = greedy_loop(lambda: (logits_for(rows.tolist(), 0), {"rows": rows, "step": 0}), decode,
                      16, max_new_tokens=4, eos=0)
    assert got == [[0], [10, 10, 0]] + [[10] * 4] * 14
    assert seen == [list(range(16)), list(range(16)), list(range(2, 16))]

@torch.no_grad()
def test_reserved_cache_gives_the_default_cache_logits_bit_for_bit(lm, monkeypatch):
    """Keys and values written in place into a buffer with room to spare read the same as the
    default cache's concatenated ones, through decoding steps and a row selection."""
    import obliviate.systems as systems
    from obliviate.systems import cached_decode, cached_prefill

    model, tok = lm
    ids, mask = _left_batch(tok, PROMPTS)
    monkeypatch.setattr(systems, "length_parts", lambda m: [])  # one read (parts: test below)
    a_logits, a = cached_prefill(model, ids, mask)
    b_logits, b = cached_prefill(model, ids, mask, reserve=3)  # grows past its room below
    assert torch.equal(a_logits, b_logits)
    nxt = a_logits[:, -1].argmax(-1)[:, None]
    for step in range(6):
        if step == 2:
            keep = torch.tensor([0, 2, 4])
            a, b, nxt = select_rows(a, keep), select_rows(b, keep), nxt[keep]
        a_logits, a = cached_decode(model, nxt, a)
        b_logits, b = cached_decode(model, nxt, b)
        assert torch.equal(a_logits, b_logits)
        nxt = a_logits[:, -1].argmax(-1)[:, None]
    assert b["cache"].get_seq_length() == a["cache"].get_seq_length() == ids.shape[1] + 6


class Counting(torch.nn.Module):
    """A causal LM with a cache whose rows answer by rule: a prompt starting with token v
    answers v tokens (10, 11, ...) then the end token 0. Its cache is the token history, so a
    row resumed from its prompt plus its tokens continues exactly where it stopped."""

    class History:
        def __init__(self, ids):
            self.ids = ids

        def batch_select_indices(self, keep):
            self.ids = self.ids[keep]

    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(1))
        self.calls = []

    def forward(self, input_ids=None, attention_mask=None, position_ids=None, use_cache=False,
                cache=None, **_):
        self.calls.append(len(input_ids))
        hist = input_ids if cache is None else torch.cat([cache.ids, input_ids], 1)
        mask = attention_mask.bool()
        logits = torch.full((len(hist), 1, 40), -1.0)
        for row in range(len(hist)):
            real = hist[row][mask[row]].tolist()  # padding (1) is masked out
            made = len(real) - 2  # every prompt is [v, 5]
            logits[row, 0, 0 if made >= real[0] else 10 + made] = 1.0
        return type("Out", (), {"logits": logits, "cache": Counting.History(hist)})()


class CountingTok:
    eos_token_id, pad_token_id, bos_token_id, bos_token = 0, 1, None, None

    def encode(self, text, add_special_tokens=False):
        return [int(text), 5]

    def decode(self, ids, skip_special_tokens=True):
        return " ".join(str(t) for t in ids if not (skip_special_tokens and t == 0))


def test_engine_parks_long_rows_and_resumes_them_with_the_same_answers():
    """Batches of 8 rows in which one row answers long: once a batch is down to one running
    row it stops, and that row resumes later with the other long rows, from its prompt plus
    its tokens. Every answer is the one an uninterrupted batch gives."""
    from obliviate.evaluation import engine as E

    lengths = [1, 2, 1, 1, 2, 1, 1, 9] * 3  # one long answer in each batch of 8
    prompts = [str(v) for v in lengths]
    want = [" ".join(str(10 + k) for k in range(v)) for v in lengths]
    one = Counting()
    assert E.Engine(one, CountingTok(), "{question}", batch_size=64).complete("a", prompts, 12) == want
    parked = Counting()
    # budget: 8 rows of 2 prompt + 12 new tokens
    got = E.Engine(parked, CountingTok(), "{question}", batch_size=8, max_length=14).complete("b", prompts, 12)
    assert got == want
    # each batch of 8: prefill, a step of 8, a step of the 3 still running; then down to its
    # long row it parks it. The 3 parked rows run together: prefill and 6 steps to the end.
    assert parked.calls == [8, 8, 3] * 3 + [3] * 7


def test_length_parts_group_rows_whose_longest_is_at_most_twice_the_shortest():
    """Real lengths 3, 10, 4, 7, 2: sorted 2 3 4 | 7 10 (7 > 2 x 2 opens a group; 10 <= 14)."""
    from obliviate.decoding import length_parts

    lengths = [3, 10, 4, 7, 2]
    mask = torch.tensor([[0] * (10 - n) + [1] * n for n in lengths])
    assert [p.tolist() for p in length_parts(mask)] == [[4, 0, 2], [3, 1]]
    assert [p.tolist() for p in length_parts(torch.ones(3, 5))] == [[0, 1, 2]]


@torch.no_grad()
def test_rows_of_very_different_lengths_read_in_parts_decode_as_one_read(lm, monkeypatch):
    """A resumed batch mixes prompts with prompts plus many generated tokens: read one length
    group at a time, its caches merged, the logits and every decoding step's logits are one
    read's to float rounding, and the tokens the same. Each part reads only its own width."""
    import obliviate.systems as systems
    from obliviate.decoding import length_parts
    from obliviate.systems import cached_decode, cached_prefill

    model, tok = lm
    texts = ["Who", "Where was Ada", " ".join(["The river flows to the sea."] * 4), "The book"]
    ids, mask = _left_batch(tok, texts)
    assert len(length_parts(mask)) == 2  # the long row alone, the short ones together
    widths = []
    hook = model.register_forward_pre_hook(lambda m, a, kw: widths.append(kw["input_ids"].shape),
                                           with_kwargs=True)
    try:
        a_logits, a = cached_prefill(model, ids, mask, reserve=2)  # decoded past its room below
    finally:
        hook.remove()
    short = int(mask[[0, 1, 3]].sum(-1).max())
    assert widths == [(3, short), (1, ids.shape[1])]
    layer = a["cache"].layers[0]
    assert torch.all(layer.keys[0, :, :ids.shape[1] - int(mask[0].sum())] == 0)  # padding: zeros
    assert layer.reserve == 2 and layer.k_buf.shape[2] == ids.shape[1] + 2
    monkeypatch.setattr(systems, "length_parts", lambda m: [])  # one read of every row
    b_logits, b = cached_prefill(model, ids, mask, reserve=2)
    torch.testing.assert_close(a_logits, b_logits, rtol=1e-5, atol=1e-5)
    nxt = b_logits[:, -1].argmax(-1)[:, None]
    assert torch.equal(nxt, a_logits[:, -1].argmax(-1)[:, None])
    for _ in range(5):
        a_logits, a = cached_decode(model, nxt, a)
        b_logits, b = cached_decode(model, nxt, b)
        torch.testing.assert_close(a_logits, b_logits, rtol=1e-5, atol=1e-5)
        nxt = b_logits[:, -1].argmax(-1)[:, None]
        assert torch.equal(nxt, a_logits[:, -1].argmax(-1)[:, None])


@torch.no_grad()
def test_a_batch_with_an_empty_row_or_right_padding_is_read_in_one_pass(lm):
    """Length groups cut each row's tokens from the right edge: a row with no token (an empty
    prompt, no BOS) or a right-padded batch is read whole, as before."""
    from obliviate.systems import cached_prefill

    model, tok = lm
    ids, mask = _left_batch(tok, ["Who", " ".join(["The river flows to the sea."] * 4)])
    empty_ids = torch.cat([ids, torch.full_like(ids[:1], tok.pad_token_id)])
    empty_mask = torch.cat([mask, torch.zeros_like(mask[:1])])
    right = mask.flip(1)
    calls = []
    hook = model.register_forward_pre_hook(lambda mod, a, kw: calls.append(1), with_kwargs=True)
    try:
        for i, m in ((empty_ids, empty_mask), (ids.flip(1), right)):
            calls.clear()
            logits, _ = cached_prefill(model, i, m, reserve=4)
            assert calls == [1] and logits.shape[0] == len(i)
    finally:
        hook.remove()
