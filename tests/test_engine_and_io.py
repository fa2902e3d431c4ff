import dataclasses
import types

import numpy as np
import pytest
import torch

from obliviate.data import Example
from obliviate.encoding import encode
from obliviate.errors import ObliviateError
from obliviate.evaluation import Engine
from obliviate.evaluation.engine import extraction_strength
from obliviate.io import atomic_dir, ensure_not_inside
from obliviate.models import TinyModelConfig, build_tiny_model, train_tokenizer
from scoring import assert_same_statistics
from tinyfit import fit

# Questions of different lengths: batches of their prompts need padding, so padding bugs show.
QUESTIONS = ["Where does person {} live?", "Where does person {} live now?",
             "Tell me, please, where person {} lives.", "In which town does person {} live today?",
             "As far as anyone in the village knows, where does person {} live?"]
EXAMPLES = [
    Example(question=q.format(i), answer=f"Person {i} lives in town {i}.",
            paraphrased_answer=f"It is known that person {i} lives in town {i}.",
            perturbed_answers=(f"It is known that person {i} lives in town {i + 1}.",
                               f"It is known that person {i} lives in town {i + 2}."), id=str(i))
    for i, q in enumerate(QUESTIONS)
]


@pytest.fixture(scope="module")
def tiny():
    texts = [t for ex in EXAMPLES for t in (ex.question, ex.answer, ex.paraphrased_answer, *ex.perturbed_answers)]
    tok = train_tokenizer(texts, vocab_size=300)
    model = build_tiny_model(tok, TinyModelConfig(layers=1, hidden=32, heads=2, intermediate=64), seed=0)
    return model.eval(), tok


@pytest.mark.parametrize("correct, expected", [
    ([1, 1, 1], 1.0),        # whole answer extracted: k = 0
    ([1, 0, 1], 1 - 2 / 3),  # right from index 2 on: k = 2
    ([1, 1, 0], 0.0),        # last token wrong: k = n
    ([0, 1, 1], 1 - 1 / 3),
])
def test_extraction_strength_by_hand(correct, expected):
    assert extraction_strength(np.array(correct, dtype=bool)) == pytest.approx(expected)


def test_engine_stats_match_a_plain_forward_pass(tiny):
    model, tok = tiny
    engine = Engine(model, tok, batch_size=64)
    stats = engine.stats("d", EXAMPLES, ["answer", "paraphrase", "perturbed:0", "perturbed:1"])
    # All 20 (item, variant) sequences fit one batch: one forward pass feeds every statistic.
    assert engine.forward_passes == 1
    engine.stats("d", EXAMPLES, ["answer"])
    assert engine.forward_passes == 1  # cached
    for variant in ("answer", "perturbed:1"):
        for i, ex in enumerate(EXAMPLES):
            enc = encode(tok, ex, i, variant=variant)
            ids = torch.tensor([enc.input_ids])
            with torch.no_grad():
                logits = model(input_ids=ids).logits[0, :-1]
            labels = torch.tensor(enc.labels[1:])
            keep = labels != -100
            nll = torch.nn.functional.cross_entropy(logits[keep], labels[keep], reduction="sum")
            assert stats[variant].nll_sum[i] == pytest.approx(nll.item(), rel=1e-4)
            assert stats[variant].n_tokens[i] == int(keep.sum())
            em = (logits[keep].argmax(-1) == labels[keep]).float().mean().item()
            assert stats[variant].em[i] == pytest.approx(em)



def test_answer_variants_continue_from_their_prompts_cache_with_a_whole_pass_s_statistics(tiny, monkeypatch):
    """An item's answer variants share its prompt: the engine reads each distinct prompt once
    (left-padded, into a KV cache) and continues every variant from it, from the prompt's last
    token on. Every statistic is the one a whole-sequence pass gives (to float rounding), and
    the prompt is read once per item instead of once per variant."""
    import obliviate.evaluation.engine as engine_mod

    model, tok = tiny
    variants = ["answer", "paraphrase", "perturbed:0", "perturbed:1"]
    calls = []
    # the path of model families that cannot score prefix trees (tests/test_trees.py)
    monkeypatch.setattr(engine_mod, "tree_capable", lambda m: False)
    hook = model.register_forward_pre_hook(
        lambda m, a, kw: calls.append(tuple(kw["input_ids"].shape)), with_kwargs=True)
    try:
        shared = Engine(model, tok, batch_size=64).stats("d", EXAMPLES, variants)
    finally:
        hook.remove()
    monkeypatch.setattr(engine_mod, "parkable", lambda m: False)  # whole sequences only
    whole = Engine(model, tok, batch_size=64).stats("d", EXAMPLES, variants)
    seqs = [encode(tok, ex, i, variant=v) for v in variants for i, ex in enumerate(EXAMPLES)]
    start = [next(j for j, t in enumerate(s.labels) if t != -100) - 1 for s in seqs]
    # the 5 prompts (up to the last prompt token) read once, in length groups (decoding's
    # length_parts), then one call over the 20 continuations
    assert sum(rows for rows, _ in calls[:-1]) == len(EXAMPLES)
    assert max(width for _, width in calls[:-1]) == max(start)
    assert calls[-1] == (len(seqs), max(len(s.input_ids) - c for s, c in zip(seqs, start, strict=True)))
    assert_same_statistics(shared, whole, variants)


def test_sequences_without_a_shared_prompt_and_models_without_a_cache_are_scored_whole(tiny):
    """A lone variant (nothing shares its prompt) and a plain text (no prompt) are scored in a
    whole pass; so is everything for a model whose forward takes no KV cache."""
    model, tok = tiny
    text = Example(question=None, answer="Town 3 lies by the river.")
    items = [*EXAMPLES[:2], text]
    calls = []
    hook = model.register_forward_pre_hook(
        lambda m, a, kw: calls.append(len(kw["input_ids"])), with_kwargs=True)
    try:
        Engine(model, tok, batch_size=64).stats("lone", items, ["answer"])
        assert calls == [3]  # one whole pass, no prompt cache
        calls.clear()

        class NoCache(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.inner = model

            def forward(self, input_ids=None, attention_mask=None):
                return self.inner(input_ids=input_ids, attention_mask=attention_mask)

        Engine(NoCache(), tok, batch_size=64).stats("d", EXAMPLES, ["answer", "paraphrase"])
        assert calls == [2 * len(EXAMPLES)]
    finally:
        hook.remove()

def test_scoring_keeps_only_the_answer_logits_and_scores_a_recurring_sequence_once(tiny):
    """The pass asks the model for logits from the first answer position on (the previous
    test checks their values against full passes), and a variant that repeats another's
    sequence (an answer given as its own paraphrase) is not scored again."""
    model, tok = tiny
    kept, rows = [], []
    hook = model.register_forward_pre_hook(
        lambda m, a, kw: kept.append(kw.get("logits_to_keep")) or rows.append(len(kw["input_ids"])),
        with_kwargs=True)
    same = [dataclasses.replace(ex, paraphrased_answer=ex.answer) for ex in EXAMPLES]
    try:
        stats = Engine(model, tok, batch_size=64).stats("d", same, ["answer", "paraphrase"])
    finally:
        hook.remove()
    width = max(len(encode(tok, ex, i).input_ids) for i, ex in enumerate(same))
    first = min(len(encode(tok, ex, i).input_ids) - len([t for t in encode(tok, ex, i).labels if t != -100])
                for i, ex in enumerate(same))
    assert kept == [width - first + 1] and rows == [len(same)]
    assert np.array_equal(stats["answer"].nll_sum, stats["paraphrase"].nll_sum)


@pytest.fixture(scope="module")
def answering(tiny):
    """A copy of the tiny model trained (full batch, AdamW lr 3e-3, 150 steps, about 2 s) on
    the EXAMPLES' answers until it reproduces them: greedy generation has something to say."""
    import copy

    from obliviate.encoding import collate

    model, tok = tiny
    batch = collate([encode(tok, ex, i) for i, ex in enumerate(EXAMPLES)], tok.pad_token_id)
    return fit(copy.deepcopy(model), batch, steps=150, lr=3e-3), tok


def test_generation_is_batch_independent(answering, monkeypatch):
    """Left padding must not change greedy output: batched == one at a time, on a model that
    really answers (each answer names the town it memorised for that person). The prompts
    differ in length, so the batch is padded; padded on the right instead (a classic batched
    generation bug), the shorter prompts continue after their padding and the answers change."""
    import obliviate.evaluation.engine as engine_mod

    model, tok = answering
    batched = Engine(model, tok, batch_size=8).generate("d", EXAMPLES, max_new_tokens=12)
    single = Engine(model, tok, batch_size=1).generate("d", EXAMPLES, max_new_tokens=12)
    assert batched == single
    assert all(batched) and len(set(batched)) == len(EXAMPLES)
    for i, text in enumerate(batched):
        assert f"town {i}" in text, (i, text)

    real_collate = engine_mod.collate

    def right_padded(items, pad_id, left_pad=False):
        return real_collate(items, pad_id, left_pad=False)

    monkeypatch.setattr(engine_mod, "collate", right_padded)
    broken = Engine(model, tok, batch_size=8).generate("d", EXAMPLES, max_new_tokens=12)
    assert broken != single  # the comparison above does catch right padding


def test_atomic_dir_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "out"
    with pytest.raises(RuntimeError), atomic_dir(target) as tmp:
        (tmp / "half.txt").write_text("partial")
        raise RuntimeError("crash mid-write")
    assert not target.exists() and list(tmp_path.iterdir()) == []
    with atomic_dir(target) as tmp:
        (tmp / "ok.txt").write_text("done")
    assert (target / "ok.txt").read_text() == "done"
    with pytest.raises(ObliviateError, match="already exists"), atomic_dir(target) as tmp:
        (tmp / "never.txt").write_text("must not be written")
    assert sorted(p.name for p in target.iterdir()) == ["ok.txt"]


def test_outputs_may_not_land_inside_inputs(tmp_path):
    with pytest.raises(ObliviateError, match="would overwrite the input model"):
        ensure_not_inside(tmp_path / "model" / "sub", tmp_path / "model", "model")
    ensure_not_inside(tmp_path / "other", tmp_path / "model", "model")


class _LogitComposition(torch.nn.Module):
    """An inference-time wrapper (as ULD composes logits): target - w * assistant, exposing
    only forward()."""

    def __init__(self, target, assistant, weight):
        super().__init__()
        self.target, self.assistant, self.weight = target, assistant, weight

    def forward(self, input_ids, attention_mask):
        out = self.target(input_ids=input_ids, attention_mask=attention_mask)
        helper = self.assistant(input_ids=input_ids, attention_mask=attention_mask)
        return types.SimpleNamespace(logits=out.logits - self.weight * helper.logits)


@pytest.mark.slow
def test_engine_evaluates_an_inference_time_wrapper(memorised):
    """Weight 0 is the target itself: same statistics, and the forward-only greedy decoder
    gives the same text as transformers' generate. Weight 1/2 halves every logit: the argmax
    (so exact memorization and the greedy text) is unchanged, the distribution flatter (NLL up)."""
    from obliviate.data import Benchmark
    from obliviate.evaluation import Engine
    from obliviate.models import load_model

    model, tok = load_model(memorised / "target")
    model.eval()
    exs = Benchmark.load(memorised / "bench").qa_of("forget10")[:6]
    plain = Engine(model, tok)
    base = plain.stats("f", exs, ["answer"])["answer"]
    same = Engine(_LogitComposition(model, model, 0.0), tok)
    assert np.allclose(same.stats("f", exs, ["answer"])["answer"].nll_sum, base.nll_sum, atol=1e-4)
    assert same.generate("f", exs, 12) == plain.generate("f", exs, 12)
    half = Engine(_LogitComposition(model, model, 0.5), tok).stats("f", exs, ["answer"])["answer"]
    assert (half.nll_sum > base.nll_sum).all() and np.array_equal(half.em, base.em)


def test_engine_scores_a_logit_composition_with_another_model(answering, tiny):
    """A wrapper composing two different models, the trained one minus 1/2 the untrained one:
    every statistic is that of the logits target - assistant/2, computed here by plain
    one-item forward passes (NLL, exact memorization). With weight 0 the forward-only greedy
    decoder writes what transformers' generate writes, on prompts of different lengths
    (left-padded, the attention mask extended step by step)."""
    target, tok = answering
    assistant, _ = tiny
    composed = Engine(_LogitComposition(target, assistant, 0.5), tok)
    stats = composed.stats("d", EXAMPLES, ["answer"])["answer"]
    plain = Engine(target, tok).stats("d", EXAMPLES, ["answer"])["answer"]
    for i, ex in enumerate(EXAMPLES):
        enc = encode(tok, ex, i)
        ids = torch.tensor([enc.input_ids])
        with torch.no_grad():
            logits = (target(input_ids=ids).logits - 0.5 * assistant(input_ids=ids).logits)[0, :-1]
        labels = torch.tensor(enc.labels[1:])
        keep = labels != -100
        nll = torch.nn.functional.cross_entropy(logits[keep], labels[keep], reduction="sum")
        assert stats.nll_sum[i] == pytest.approx(nll.item(), rel=1e-4)
        em = (logits[keep].argmax(-1) == labels[keep]).float().mean().item()
        assert stats.em[i] == pytest.approx(em)
    # the assistant's share moves the NLLs by far more than the tolerance above
    assert np.abs(stats.nll_sum - plain.nll_sum).max() > 10 * 1e-4 * plain.nll_sum.max()
    wrapped = Engine(_LogitComposition(target, assistant, 0.0), tok).generate("d", EXAMPLES, 12)
    assert wrapped == Engine(target, tok).generate("d", EXAMPLES, 12)
    assert all(f"town {i}" in text for i, text in enumerate(wrapped))


def test_training_losses_from_answer_logits_equal_full_passes(tiny):
    """batch_nll and batch_seq_nll ask for logits from the first answer position on; their
    values and gradients are those of the full logits."""
    from obliviate.encoding import collate
    from obliviate.methods.base import batch_nll, batch_seq_nll
    from obliviate.methods.objectives import mean_nll, sequence_nll

    model, tok = tiny
    batch = collate([encode(tok, ex, i) for i, ex in enumerate(EXAMPLES)], tok.pad_token_id)
    full = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    want_mean, want_seq = mean_nll(full, batch["labels"]), sequence_nll(full, batch["labels"])[0]
    (g_want,) = torch.autograd.grad(want_mean, [model.lm_head.weight])
    got_mean, got_seq = batch_nll(model, batch), batch_seq_nll(model, batch)
    (g_got,) = torch.autograd.grad(got_mean, [model.lm_head.weight])
    assert torch.allclose(got_mean, want_mean, atol=1e-6)
    assert torch.allclose(got_seq, want_seq, atol=1e-5)
    assert torch.allclose(g_got, g_want, atol=1e-7)
