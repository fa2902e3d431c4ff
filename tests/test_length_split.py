"""Fine-tuning's loss on a batch split by length (`split_batch_nll`): the rows go in two
forwards, each trimmed to its own width, when that saves padded tokens; the loss and every
weight's gradient equal the one-forward batch NLL's, to float rounding."""

import torch

from obliviate.data import Example
from obliviate.encoding import collate, encode
from obliviate.methods.base import SPLIT_BELOW, batch_nll, length_split, split_batch_nll
from obliviate.models import TinyModelConfig, build_tiny_model, train_tokenizer

SHORT = [Example(question=f"Who is {n}?", answer=f"{n} is a baker.") for n in ("Ana", "Bo", "Cy")]
LONG = Example(question="What does Di do for a living these days, and where?",
               answer="Di repairs old clocks and watches in a small shop by the harbour in Riga, "
                      "and sells them at the market on Saturdays.")


def _mask(lengths: list[int]) -> torch.Tensor:
    width = max(lengths)
    return torch.tensor([[1] * n + [0] * (width - n) for n in lengths])


def test_a_long_row_goes_alone_and_even_rows_stay_together():
    # lengths 3, 10, 3, 3: the three short rows at width 3 and the long one at 10 compute
    # 3*3 + 10 = 19 of the 40 padded tokens (<= 0.8 * 40), the best of the two-way cuts
    (short, w1), (long_, w2) = length_split(_mask([3, 10, 3, 3]))
    assert short.tolist() == [0, 2, 3] and w1 == 3 and long_.tolist() == [1] and w2 == 10
    # 9, 10, 10, 10: the best cut (9 + 30 = 39 of 40) saves too little
    assert length_split(_mask([9, 10, 10, 10])) is None
    assert length_split(_mask([7])) is None
    # at the threshold: 2 rows, 1 + 5 = 6 of 10 tokens: split iff 6 <= SPLIT_BELOW * 10
    assert (length_split(_mask([1, 5])) is not None) == (6 <= SPLIT_BELOW * 10)


def test_split_loss_and_gradients_equal_the_whole_batch():
    examples = [*SHORT, LONG]
    tok = train_tokenizer([t for ex in examples for t in (ex.question, ex.answer)], vocab_size=300)
    torch.manual_seed(0)
    model = build_tiny_model(tok, TinyModelConfig(layers=2, hidden=32, heads=2, intermediate=64))
    batch = collate([encode(tok, ex, i) for i, ex in enumerate([SHORT[0], LONG, *SHORT[1:]])],
                    tok.pad_token_id)
    assert length_split(batch["attention_mask"]) is not None  # the case under test

    widths = []
    hook = model.register_forward_pre_hook(lambda m, a, kw: widths.append(kw["input_ids"].shape),
                                           with_kwargs=True)
    grads = []
    for fn in (batch_nll, split_batch_nll):
        model.zero_grad()
        loss = fn(model, batch)
        loss.backward()
        grads.append((float(loss.detach()), [p.grad.clone() for p in model.parameters()]))
    hook.remove()
    full = batch["input_ids"].shape
    assert widths[0] == full and len(widths) == 3  # one whole forward, then two
    assert widths[1][0] == 3 and widths[1][1] < full[1] and widths[2] == (1, full[1])
    assert abs(grads[0][0] - grads[1][0]) < 1e-5 * grads[0][0]
    for a, b in zip(grads[0][1], grads[1][1], strict=True):
        assert torch.allclose(a, b, rtol=1e-4, atol=1e-7)
    # the check has teeth: the short rows' loss alone differs from the batch's
    short_only = {k: v[[0, 2, 3]] for k, v in batch.items()}
    assert abs(float(batch_nll(model, short_only)) - grads[0][0]) > 1e-3


def test_a_left_padded_batch_is_taken_whole():
    examples = [*SHORT, LONG]
    tok = train_tokenizer([t for ex in examples for t in (ex.question, ex.answer)], vocab_size=300)
    model = build_tiny_model(tok, TinyModelConfig(layers=1, hidden=32, heads=2, intermediate=64))
    batch = collate([encode(tok, ex, i) for i, ex in enumerate(examples)], tok.pad_token_id,
                    left_pad=True)
    calls = []
    hook = model.register_forward_pre_hook(lambda m, a, kw: calls.append(1), with_kwargs=True)
    assert torch.isclose(split_batch_nll(model, batch), batch_nll(model, batch))
    hook.remove()
    assert len(calls) == 2  # one each: no split
