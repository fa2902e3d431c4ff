"""Prefix-tree scoring (evaluation/trees.py): the trie and its mask by hand, and the engine's
statistics from trees against whole passes on several model families."""

import numpy as np
import pytest
import torch

from obliviate.data import Example
from obliviate.encoding import IGNORE, Encoded
from obliviate.evaluation import Engine, trees
from obliviate.models import train_tokenizer
from scoring import assert_same_statistics

N = IGNORE


def test_trie_by_hand():
    """Two sequences share their first two tokens: five nodes, the shared ones read once.
    Each label is predicted by the node of the token before it."""
    t = trees.build([Encoded([1, 2, 3, 4], [N, N, 3, 4], 0), Encoded([1, 2, 5], [N, N, 5], 1)])
    assert t.ids == [1, 2, 3, 4, 5]
    assert t.parent == [-1, 0, 1, 2, 1]
    assert t.depth == [0, 1, 2, 3, 2]
    assert t.reads == [[(1, 3), (2, 4)], [(1, 5)]]
    # node 4 (token 5, second sequence) sees the shared prefix and itself, not tokens 3 and 4
    assert t.ancestors()[4].tolist() == [True, True, False, False, True]
    assert t.ancestors()[3].tolist() == [True, True, True, True, False]


def test_a_plain_text_s_first_label_has_no_predictor_and_identical_sequences_share_every_node():
    t = trees.build([Encoded([7, 8], [7, 8], 0), Encoded([7, 8], [7, 8], 1)])
    assert t.ids == [7, 8] and t.reads == [[(0, 8)], [(0, 8)]]


def test_collated_rows_mask_everything_but_ancestors_and_pad_to_themselves():
    a = trees.build([Encoded([1, 2, 3], [N, 2, 3], 0), Encoded([1, 4], [N, 4], 1)])  # 4 nodes
    b = trees.build([Encoded([5, 6], [N, 6], 2)])  # 2 nodes: padded to 4
    rows = trees.collate_trees([a, b], pad_id=0, dtype=torch.float32)
    assert rows["input_ids"].tolist() == [[1, 2, 3, 4], [5, 6, 0, 0]]
    assert rows["position_ids"].tolist() == [[0, 1, 2, 1], [0, 1, 0, 0]]
    seen = (rows["attention_mask"][:, 0] == 0).int().tolist()
    assert seen[0] == [[1, 0, 0, 0], [1, 1, 0, 0], [1, 1, 1, 0], [1, 0, 0, 1]]
    assert seen[1] == [[1, 0, 0, 0], [1, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]]
    assert rows["attention_mask"].min().item() == torch.finfo(torch.float32).min


def test_batches_hold_no_more_positions_than_a_whole_pass_batch():
    """Trees of 3, 4, 6 and 10 nodes whose longest sequences are 3 tokens, at size 4: a
    batch may pad to 4 x 3 = 12 positions. 3 and 4 fit (2 x 4 = 8), adding 6 would need 18;
    6 alone is 6; 10 goes alone (wider than the budget, never split)."""
    forest = [trees.build([Encoded(list(range(n)), [N] * n, 0)]) for n in (10, 3, 6, 4)]
    assert trees.batches(forest, [3, 3, 3, 3], 4) == [[1, 3], [2], [0]]
    # two trees of 5: 10 positions fit 12, but 2 x 5^2 = 50 attention scores exceed 4 x 3^2 = 36
    five = [trees.build([Encoded(list(range(5)), [N] * 5, 0)])] * 2
    assert trees.batches(five, [3, 3], 4) == [[0], [1]]


FAMILIES = ["llama", "qwen2", "gpt2", "gpt_neox", "mixtral"]


def _model(family: str, tok):
    import transformers as tf

    torch.manual_seed(0)
    # a wide initialisation: peaked next-token distributions. Near-uniform ones (the default
    # init's) make Min-K%++'s z ill-conditioned (its variance cancels to ~0), and then two
    # passes' float rounding differs by far more than the logits' own 1e-7
    common = dict(vocab_size=len(tok), pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id,
                  eos_token_id=tok.eos_token_id, initializer_range=0.5)
    if family == "gpt2":
        cfg = tf.GPT2Config(n_embd=32, n_layer=2, n_head=2, n_positions=256, **common)
        return tf.GPT2LMHeadModel(cfg).eval()
    if family == "gpt_neox":
        cfg = tf.GPTNeoXConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                               intermediate_size=64, max_position_embeddings=256, **common)
        return tf.GPTNeoXForCausalLM(cfg).eval()
    shape = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=1,
                 intermediate_size=64, max_position_embeddings=256, **common)
    if family == "qwen2":
        return tf.Qwen2ForCausalLM(tf.Qwen2Config(**shape)).eval()
    if family == "mixtral":
        return tf.MixtralForCausalLM(tf.MixtralConfig(**shape, num_local_experts=4,
                                                      num_experts_per_tok=2)).eval()
    return tf.LlamaForCausalLM(tf.LlamaConfig(**shape)).eval()


# answers and perturbed answers that share beginnings of different lengths, a paraphrase that
# shares nothing, questions of different lengths (so trees of different widths pad)
ITEMS = [Example(question=q, answer=f"The clock tower of {c} was built in {y}.",
                 paraphrased_answer=f"Builders finished it in {y}, in {c}.",
                 perturbed_answers=(f"The clock tower of {c} was built in {y + 7}.",
                                    f"The clock tower of {c} fell in {y}.",
                                    f"A bridge of {c} was built in {y}."), id=str(i))
         for i, (q, c, y) in enumerate([("When was the clock tower built?", "Arn", 1901),
                                        ("In which year did the town of Belt get its clock tower?",
                                         "Belt", 1877),
                                        ("Clock tower, Cray: year?", "Cray", 1930)])]
VARIANTS = ["answer", "paraphrase", "perturbed:0", "perturbed:1", "perturbed:2"]


@pytest.fixture(scope="module")
def tok():
    texts = [t for ex in ITEMS for t in (ex.question, ex.answer, ex.paraphrased_answer,
                                          *ex.perturbed_answers)]
    return train_tokenizer(texts, vocab_size=300)


@pytest.mark.parametrize("family", FAMILIES)
def test_tree_statistics_are_a_whole_pass_s(family, tok, monkeypatch):
    """Every statistic from the trees equals the whole-sequence pass's, to float rounding,
    in one forward pass for the 15 sequences (three trees) instead of 15 rows."""
    import obliviate.evaluation.engine as engine_mod

    model = _model(family, tok)
    assert trees.tree_capable(model)
    calls = []
    hook = model.register_forward_pre_hook(
        lambda m, a, kw: calls.append(kw["attention_mask"].dim()), with_kwargs=True)
    try:
        got = Engine(model, tok, batch_size=64).stats("d", ITEMS, VARIANTS)
    finally:
        hook.remove()
    assert calls == [4]  # one pass, with the trees' 4D mask
    monkeypatch.setattr(engine_mod, "parkable", lambda m: False)  # whole sequences only
    whole = Engine(model, tok, batch_size=64).stats("d", ITEMS, VARIANTS)
    assert_same_statistics(got, whole, VARIANTS)


def test_tree_scoring_in_small_batches_matches_one_batch(tok, monkeypatch):
    """At batch size 2 each item's five sequences make trees of 2, 2 and 1 (a question asked
    many times never makes one tree too wide to hold): same numbers as one batch."""
    model = _model("llama", tok)
    built = []
    build = trees.build
    monkeypatch.setattr(trees, "build", lambda items: built.append(len(items)) or build(items))
    a = Engine(model, tok, batch_size=2).stats("d", ITEMS, VARIANTS)
    assert built == [2, 2, 1] * len(ITEMS)
    b = Engine(model, tok, batch_size=64).stats("d", ITEMS, VARIANTS)
    for v in VARIANTS:
        np.testing.assert_allclose(a[v].nll_sum, b[v].nll_sum, rtol=1e-5)


def test_families_and_settings_without_tree_support_keep_the_prompt_cache(tok):
    import transformers as tf

    assert not trees.tree_capable(torch.nn.Linear(2, 2))  # no config
    llama = _model("llama", tok)
    llama.config._attn_implementation = "flash_attention_2"  # takes no custom 4D mask
    assert not trees.tree_capable(llama)
    mistral = tf.MistralForCausalLM(tf.MistralConfig(
        vocab_size=len(tok), hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
        num_key_value_heads=1, intermediate_size=64, sliding_window=8))
    assert not trees.tree_capable(mistral)  # a full mask would override the window
    bloom = tf.BloomForCausalLM(tf.BloomConfig(vocab_size=len(tok), hidden_size=32, n_layer=1, n_head=2))
    assert not trees.tree_capable(bloom)  # ALiBi reads positions from a 2D mask
    mixed = _model("qwen2", tok)
    mixed.config.layer_types = ["full_attention", "sliding_attention"]
    assert not trees.tree_capable(mixed)

    class Remote(tf.LlamaForCausalLM):
        """Remote code that only claims a family."""

    assert trees.tree_capable(_model("llama", tok))
    assert not trees.tree_capable(Remote(_model("llama", tok).config))
