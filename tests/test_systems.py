"""Unlearned systems (ULD, ECO, SPUL, O3): each kind's inference rule on hand-made cases, cached
generation against a step-by-step reference, save / load, and the runs that train them."""

import hashlib
import json
import math

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

import obliviate as ob
from obliviate.errors import ObliviateError
from obliviate.methods.codeunlearn import Codebook, CodebookSystem
from obliviate.methods.eco import Classifiers, ECOSystem
from obliviate.methods.o3 import Adapter, Detector, O3System
from obliviate.methods.objectives import uniform_kl, zo_step
from obliviate.methods.spul import SoftPromptSystem
from obliviate.methods.uld import ULDSystem
from obliviate.models import TinyModelConfig, build_tiny_model, save_model, train_tokenizer
from obliviate.systems import (
    SYSTEMS,
    is_system,
    load_any,
    load_system,
    question_batch,
    save_system,
    youden_threshold,
)
from obliviate.train import OptimConfig

KINDS = ["uld", "spul", "eco", "o3", "codeunlearn"]
TEXTS = ["Who wrote the book about the river?", "The river flows to the sea.",
         "Where was Ada Lovelace born?", "She was born in London."] * 5


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A randomly initialised 2-layer Llama with a real tokenizer, saved as a model folder."""
    tok = train_tokenizer(TEXTS, vocab_size=300)
    model = build_tiny_model(tok, TinyModelConfig(layers=2, hidden=32, heads=2, intermediate=64), seed=3)
    folder = tmp_path_factory.mktemp("tiny") / "base"
    save_model(model, tok, folder, {"produced_by": "test"})
    return folder


def _base(tiny):
    model, tok = ob.models.load_model(tiny)
    return model.eval(), tok


def _batch(tok, texts, left=False):
    """ids, mask [batch, seq] of `texts` with BOS, padded right (scoring) or left (generation)."""
    rows = [[tok.bos_token_id] + tok.encode(t, add_special_tokens=False) for t in texts]
    width = max(map(len, rows))
    ids = torch.full((len(rows), width), tok.pad_token_id)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        sl = slice(width - len(r), width) if left else slice(0, len(r))
        ids[i, sl], mask[i, sl] = torch.tensor(r), 1
    return ids, mask


def _randomise(module, seed=0, scale=0.5):
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * scale)


# ---------------------------------------------------------------------------- ULD
def test_uld_logits_are_target_minus_weight_times_assistant(tiny):
    """A flat assistant (final norm 0: every logit exactly 0) leaves the base's logits bit for
    bit; a non-flat one is subtracted with its weight: base(x) - 0.5 * assistant(x), each
    computed by calling the two models directly."""
    base, tok = _base(tiny)
    system = ULDSystem(base, {"layers": 1, "weight": 0.5}).eval()
    assistant = system.parts["assistant"]
    ids, mask = _batch(tok, TEXTS[:3])
    with torch.no_grad():
        torch.nn.init.zeros_(assistant.model.norm.weight)
        assert torch.equal(system(input_ids=ids, attention_mask=mask).logits,
                           base(input_ids=ids, attention_mask=mask).logits)
        torch.nn.init.constant_(assistant.model.norm.weight, 2.0)
        want = (base(input_ids=ids, attention_mask=mask).logits
                - 0.5 * assistant(input_ids=ids, attention_mask=mask).logits)
        got = system(input_ids=ids, attention_mask=mask).logits
    assert not torch.allclose(got, base(input_ids=ids, attention_mask=mask).logits)
    torch.testing.assert_close(got, want, rtol=0, atol=1e-5)
    # the assistant is the base's first layer: its weights start as the base's
    assert torch.equal(assistant.model.layers[0].mlp.down_proj.weight, base.model.layers[0].mlp.down_proj.weight)
    assert len(assistant.model.layers) == 1


def test_uniform_kl_is_zero_at_uniform_and_log_v_minus_entropy_otherwise():
    """Flat logits: 0. p = softmax([0, ln 3]) = (1/4, 3/4): KL(U || p) = -ln 2 - (ln 1/4 + ln 3/4) / 2
    = -ln 2 + ln 4 - (ln 3) / 2 = ln 2 - (ln 3) / 2 = 0.1438."""
    flat = torch.zeros(3, 5)
    assert float(uniform_kl(flat)) == pytest.approx(0.0, abs=1e-7)
    logits = torch.tensor([[0.0, math.log(3.0)]])
    assert float(uniform_kl(logits)) == pytest.approx(math.log(2) - 0.5 * math.log(3), abs=1e-6)


# ---------------------------------------------------------------------------- ECO
def _eco(base, requests=1, seed=0):
    return ECOSystem(base, {"requests": requests, "layer": 1, "seed": seed, "window": 0}).eval()


def test_eco_unflagged_prompts_are_bit_identical_and_flagged_ones_corrupted(tiny):
    base, tok = _base(tiny)
    system = _eco(base)
    clf = system.parts["classifiers"]
    ids, mask = _batch(tok, TEXTS[:4])
    plain = base(input_ids=ids, attention_mask=mask).logits
    with torch.no_grad():
        clf.scale.fill_(1.0)
        clf.threshold.fill_(0.5)
        clf.sigma.fill_(2.0)
        clf.bias.fill_(-10.0)  # p = sigmoid(-10) < 0.5: nothing flagged
        assert torch.equal(system(input_ids=ids, attention_mask=mask).logits, plain)
        clf.bias.fill_(10.0)  # everything flagged
        corrupted = system(input_ids=ids, attention_mask=mask).logits
    for row in range(4):
        assert not torch.allclose(corrupted[row], plain[row], atol=1e-3)


def test_eco_mixed_batch_leaves_unflagged_rows_exact(tiny):
    """A classifier along the difference of two prompts' features flags one and not the other;
    in the same batch, the unflagged row's logits are exactly the base's."""
    from obliviate.systems import question_features

    base, tok = _base(tiny)
    system = _eco(base)
    ids, mask = _batch(tok, TEXTS[:2])
    with torch.no_grad():
        f = question_features(base, ids, mask, None, [1], 0)[:, 0]
        clf = system.parts["classifiers"]
        clf.mean[0] = (f[0] + f[1]) / 2
        clf.scale.fill_(1.0)
        clf.weight[0] = 50 * (f[0] - f[1]) / (f[0] - f[1]).norm() ** 2
        clf.threshold.fill_(0.5)
        clf.sigma.fill_(1.0)
        assert clf.strength(f).tolist() == [1.0, 0.0]
        got = system(input_ids=ids, attention_mask=mask).logits
        plain = base(input_ids=ids, attention_mask=mask).logits
    assert torch.equal(got[1], plain[1])
    assert not torch.allclose(got[0], plain[0], atol=1e-3)


def test_eco_classifier_strength_by_hand():
    """Two requests, d = 2, standardisation off. x = (1, 0): request 0 gives sigmoid(1) = 0.73
    >= 0.5 (flagged, sigma 2), request 1 sigmoid(-1) = 0.27 (not). x = (-1, 0): only request 1
    (sigma 3). x = (0, 0): sigmoid(0) = 0.5 >= 0.5 for both: the larger sigma, 3."""
    c = Classifiers(2, 2)
    with torch.no_grad():
        c.weight.copy_(torch.tensor([[1.0, 0.0], [-1.0, 0.0]]))
        c.scale.fill_(1.0)
        c.threshold.fill_(0.5)
        c.sigma.copy_(torch.tensor([2.0, 3.0]))
    x = torch.tensor([[1.0, 0.0], [-1.0, 0.0], [0.0, 0.0]])
    assert c.strength(x).tolist() == [2.0, 3.0, 3.0]


def test_youden_threshold_by_hand():
    """pos (0.9, 0.8, 0.3), neg (0.1, 0.4, 0.85). J = TPR - FPR at each threshold: 0.9 -> 1/3 - 0;
    0.85 -> 0; 0.8 -> 2/3 - 1/3 = 1/3; 0.4 -> 0; 0.3 -> 1 - 2/3 = 1/3; 0.1 -> 0. Ties keep the
    highest threshold: 0.9, TPR 1/3, FPR 0."""
    t, tpr, fpr = youden_threshold(np.array([0.9, 0.8, 0.3]), np.array([0.1, 0.4, 0.85]))
    assert (t, tpr, fpr) == (0.9, pytest.approx(1 / 3), 0.0)


def test_zeroth_order_step_reduces_a_quadratic():
    """f(x) = (x - 3)^2 from x = 0, mu = 0.1: g = (f(0.1) - f(-0.1)) / 0.2 = (8.41 - 9.61) / 0.2
    = -6 (the true derivative, exact for a quadratic); lr 0.25 moves x to 1.5, f from 9 to 2.25."""
    f = lambda x: (x - 3.0) ** 2  # noqa: E731
    x, g = zo_step(f, 0.0, mu=0.1, lr=0.25, lower=-math.inf)
    assert g == pytest.approx(-6.0) and x == pytest.approx(1.5) and f(x) == pytest.approx(2.25)
    # at the lower bound the difference is one-sided: from x = 0 with lower 0, (f(0.1) - f(0)) / 0.1
    x, g = zo_step(f, 0.0, mu=0.1, lr=0.25, lower=0.0)
    assert g == pytest.approx((8.41 - 9.0) / 0.1) and x == pytest.approx(0.25 * 5.9)


# ---------------------------------------------------------------------------- SPUL
def test_spul_prepends_its_tokens_to_every_input(tiny):
    """The system's logits are the base's on [soft prompt; token embeddings], with the soft
    positions cut off, for right- and left-padded batches alike."""
    base, tok = _base(tiny)
    system = SoftPromptSystem(base, {"tokens": 3}).eval()
    _randomise(system.parts["prompt"], seed=1)
    ids, mask = _batch(tok, TEXTS[:3])
    soft = system.parts["prompt"].weight
    embeds = torch.cat([soft.unsqueeze(0).expand(3, -1, -1), base.get_input_embeddings()(ids)], 1)
    full = torch.cat([torch.ones(3, 3, dtype=mask.dtype), mask], 1)
    with torch.no_grad():
        want = base(inputs_embeds=embeds, attention_mask=full).logits[:, 3:]
        got = system(input_ids=ids, attention_mask=mask).logits
    for row in range(3):
        n = int(mask[row].sum())
        torch.testing.assert_close(got[row, :n], want[row, :n], rtol=0, atol=1e-5)


# ---------------------------------------------------------------------------- O3
def _o3(base, requests=1, bounds=(-1e6, -1e6 + 1)):
    targets = [n for n, m in base.named_modules() if n.endswith("mlp.down_proj")]
    system = O3System(base, {"requests": requests, "rank": 2, "alpha": 4.0, "targets": targets,
                             "window": 0, "views": 1}).eval()
    _randomise(system.parts, seed=2)
    with torch.no_grad():
        for r in range(requests):
            system.parts[f"detector_{r}"].bounds.copy_(torch.tensor(bounds))
    return system


def test_o3_gate_shut_gives_the_base_exactly_and_open_applies_the_adapter(tiny):
    """Bounds far above every score shut every gate (the base's logits, bit for bit); bounds far
    below open them (the adapters change the logits)."""
    base, tok = _base(tiny)
    ids, mask = _batch(tok, TEXTS[:3])
    plain = base(input_ids=ids, attention_mask=mask).logits
    with torch.no_grad():
        assert torch.equal(_o3(base, bounds=(1e6, 1e6 + 1))(input_ids=ids, attention_mask=mask).logits, plain)
        opened = _o3(base, bounds=(-1e6, -1e6 + 1))(input_ids=ids, attention_mask=mask).logits
    assert not torch.allclose(opened, plain, atol=1e-4)


def _mixed_gates(system, values=(0.0, 1.0, 0.5)):
    """Gates fixed per row (a batch of three): one shut, one open, one half open."""
    system.parts["detector_0"].gate = lambda feats: torch.tensor(values)[:len(feats)]
    return system


def test_o3_mixed_batch_rows_go_their_own_way(tiny):
    """In one batch a shut row gets the base's logits bit for bit, and the open and half-open
    rows, run again apart from it, agree with the adapters applied to the whole batch in one
    pass (each row scaled by its gate)."""
    base, tok = _base(tiny)
    ids, mask = _batch(tok, TEXTS[:3])
    system = _mixed_gates(_o3(base))
    gates = torch.tensor([[0.0], [1.0], [0.5]])
    with torch.no_grad():
        got = system(input_ids=ids, attention_mask=mask).logits
        plain = base(input_ids=ids, attention_mask=mask).logits
        with system.gated(system.row_scales(gates)):
            want = base(input_ids=ids, attention_mask=mask).logits
    assert torch.equal(got[0], plain[0])
    torch.testing.assert_close(got[1:], want[1:], rtol=0, atol=1e-4)
    assert not torch.allclose(got[1], plain[1], atol=1e-3)
    assert not torch.allclose(got[2], got[1], atol=1e-3)  # half open is not open


def test_o3_mixed_batch_cached_generation_equals_step_by_step_greedy(tiny):
    base, tok = _base(tiny)
    system = _mixed_gates(_o3(base))
    ids, mask = _batch(tok, ["Where was Ada", "The river flows to the", "Who"], left=True)
    with torch.no_grad():
        got = system.generate(input_ids=ids, attention_mask=mask, max_new_tokens=6,
                              eos_token_id=None, pad_token_id=tok.pad_token_id)
        want = _reference_greedy(system, ids, mask, 6)
        alone = base.generate(input_ids=ids[:1], attention_mask=mask[:1], max_new_tokens=6,
                              min_new_tokens=6, do_sample=False, pad_token_id=tok.pad_token_id)
    assert torch.equal(got, want)
    assert torch.equal(got[0, -6:], alone[0, -6:])  # the shut row decodes as the base does


def test_o3_detector_gate_ramp_by_hand():
    """Two layers, width 2. Layer 1: weight (1, 0), bias 0, mean 0, scale 1; layer 2: weight
    (0, 2), bias 1, mean (0, 1), scale (1, 2). Score = mean of the layers' logits; bounds (0.5, 0.9).
    x = (1, 0) on both: logits 1 and 2*(0-1)/2 + 1 = 0 -> score 0.5 -> gate 0.
    x = (1, 2) on both: logits 1 and 2*(2-1)/2 + 1 = 2 -> score 1.5 -> gate 1.
    x = (1, 0.6) on both: logits 1 and 2*(0.6-1)/2 + 1 = 0.6 -> score 0.8 -> gate (0.8-0.5)/0.4 = 0.75."""
    d = Detector(2, 2)
    with torch.no_grad():
        d.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 2.0]]))
        d.bias.copy_(torch.tensor([0.0, 1.0]))
        d.mean.copy_(torch.tensor([[0.0, 0.0], [0.0, 1.0]]))
        d.scale.copy_(torch.tensor([[1.0, 1.0], [1.0, 2.0]]))
        d.bounds.copy_(torch.tensor([0.5, 0.9]))
    x = torch.tensor([[1.0, 0.0], [1.0, 2.0], [1.0, 0.6]])[:, None, :].expand(3, 2, 2)
    torch.testing.assert_close(d.score(x)[:, 0], torch.tensor([0.5, 1.5, 0.8]))
    torch.testing.assert_close(d.gate(x), torch.tensor([0.0, 1.0, 0.75]))


def test_o3_detector_gate_is_the_widest_open_view():
    """One layer, width 1, two views: view 0 scores x, view 1 scores -x (weights 1 and -1,
    bias 0, mean 0, scale 1), bounds (0, 1) and (0, 2). x = 0.5: ramps 0.5 and 0 -> 0.5;
    x = -1: ramps 0 and 0.5 -> 0.5; x = 2: ramps 1 and 0 -> 1; x = 0: both 0 -> 0."""
    d = Detector(1, 1, views=2)
    with torch.no_grad():
        d.weight.copy_(torch.tensor([[[1.0]], [[-1.0]]]))
        d.bounds.copy_(torch.tensor([[0.0, 1.0], [0.0, 2.0]]))
    x = torch.tensor([0.5, -1.0, 2.0, 0.0])[:, None, None]
    torch.testing.assert_close(d.score(x), torch.tensor([[0.5, -0.5], [-1.0, 1.0], [2.0, -2.0], [0.0, 0.0]]))
    torch.testing.assert_close(d.gate(x), torch.tensor([0.5, 0.5, 1.0, 0.0]))


def test_o3_detector_fit_on_separable_sides_and_tiny_forget_sets():
    """Forget features near +1 and negatives near -1 (2 layers, 3 dims). Two forget items are
    too few to hold any out: their own scores set the open point, the 10th percentile between
    them (interpolated), so the higher opens the gate fully and the lower not quite (rate 0.5).
    40 negatives hold out 10; none of the 40 gets the adapter fully."""
    from obliviate.methods.o3 import O3

    gen = torch.Generator().manual_seed(0)
    pos = 1.0 + 0.1 * torch.randn(2, 2, 3, generator=gen)
    neg = -1.0 + 0.1 * torch.randn(40, 2, 3, generator=gen)
    det = Detector(2, 3)
    rates = O3()._fit_detector(det, pos, neg)
    assert rates["forget_items"] == 2 and rates["negative_items"] == 10 and not rates["held_out"]
    assert rates["forget_open"] == 0.5 and torch.isfinite(det.bounds).all()
    assert 0.0 < float(det.gate(pos).min()) < 1.0
    assert float(det.gate(neg).max()) < 1.0  # no negative gets the adapter fully
    with pytest.raises(ObliviateError, match="one side is empty"):
        O3()._fit_detector(Detector(2, 3), pos, neg[:0])


@pytest.mark.parametrize("params", [{"alpha_retain": float("nan")}, {"c": float("inf")},
                                    {"beta": 0.0}, {"alpha": -1.0}, {"shut_quantile": 1.5},
                                    {"rank": 0}, {"augment": ["no slot"]},
                                    {"augment": ["{question} and {question}"]},
                                    {"augment": ["{question} {other}"]}, {"augment": ["{{question}}"]},
                                    {"augment": ["{question}{question.x}"]},
                                    {"augment": ["{question!r}"]}, {"augment": ["{question"]}])
def test_o3_rejects_bad_params_in_one_line(params):
    from obliviate.methods import build

    with pytest.raises(ObliviateError, match=r"o3 |params\."):
        build("o3", params)


@pytest.mark.parametrize("augment", [[3], "User: {question}\n"])
def test_o3_augment_must_be_a_list_of_text(augment):
    from obliviate.methods.o3 import O3

    with pytest.raises(ObliviateError, match="o3 augment"):
        O3(augment=augment)


def test_o3_second_view_holds_out_the_same_items_in_every_phrasing():
    """Four phrasings of 8 forget and 40 negative items, stacked block by block: the held-out
    quarter is the same items in every block, so no item is fit in one phrasing and judged
    in another; a side under 4 items is all held out (its training scores stand in)."""
    from obliviate.methods.o3 import _held_out

    held_p, held_n = _held_out(32, 160, seed=0, blocks=4)
    assert int(held_p.sum()) == 4 * 2 and int(held_n.sum()) == 4 * 10
    assert all(torch.equal(b, held_p[:8]) for b in held_p.view(4, 8))
    assert all(torch.equal(b, held_n[:40]) for b in held_n.view(4, 40))
    one_p, _ = _held_out(8, 40, seed=0)  # the first view's split: the same items
    assert torch.equal(one_p, held_p[:8])
    small, _ = _held_out(6, 40, seed=0, blocks=2)
    assert bool(small.all())


def test_o3_adapter_changes_reach_the_next_call(tiny):
    """The stacked adapters kept between calls are rebuilt when an adapter changes in place,
    is loaded, or has its data swapped."""
    base, tok = _base(tiny)
    ids, mask = _batch(tok, TEXTS[:2])
    system = _o3(base)
    with torch.no_grad():
        first = system(input_ids=ids, attention_mask=mask).logits
        for a in system.parts["adapters_0"].values():
            a.B.mul_(3.0)
        tripled = system(input_ids=ids, attention_mask=mask).logits
        assert not torch.allclose(first, tripled, atol=1e-4)
        state = {k: v * 0 if k.endswith(".B") else v for k, v in system.parts.state_dict().items()}
        system.parts.load_state_dict(state)
        zeroed = system(input_ids=ids, attention_mask=mask).logits
        torch.testing.assert_close(zeroed, base(input_ids=ids, attention_mask=mask).logits)
        for a in system.parts["adapters_0"].values():
            a.B.data = torch.ones_like(a.B)
        swapped = system(input_ids=ids, attention_mask=mask).logits
        assert not torch.allclose(swapped, zeroed, atol=1e-4)


@pytest.mark.parametrize(("extra", "kind"), [({"prototypes": [2], "views": 1}, "prototype"),
                                             ({}, "single-view")])
def test_an_o3_system_of_an_earlier_format_is_refused_by_name(tiny, extra, kind):
    base, _ = _base(tiny)
    with pytest.raises(ValueError, match=f"{kind} detectors"):
        O3System(base, {"requests": 1, "rank": 2, "alpha": 4.0, "targets": [], "window": 0, **extra})


def test_context_encodes_a_stream_again_in_another_template(tiny):
    """What O3's second detector view learns from: the same examples, another prompt."""
    from obliviate.data.examples import Example
    from obliviate.encoding import encode
    from obliviate.methods.base import Context

    _, tok = _base(tiny)
    exs = [Example(question="Who wrote it?", answer="Ada"), Example(question="Where?", answer="Rome")]
    ctx = Context(pad_id=tok.pad_token_id, examples={"forget": exs},
                  encoder=lambda ex, i, t: encode(tok, ex, i, t))
    got = ctx.encoded("forget", "Ask: {question}\n", limit=1)
    assert len(got) == 1
    prompt = [t for t, lab in zip(got[0].input_ids, got[0].labels, strict=True) if lab == -100]
    assert tok.decode(prompt, skip_special_tokens=True) == "Ask: Who wrote it?\n"
    with pytest.raises(ObliviateError, match="no examples"):
        ctx.encoded("retain", "{question}")


def test_o3_adapter_projection_is_orthogonal_to_earlier_rows():
    """down() = A - A Q Q^T has no component along the earlier adapters' rows (Q their basis)."""
    gen = torch.Generator().manual_seed(0)
    earlier = torch.randn(4, 10, generator=gen)
    a = Adapter(10, 6, 3)
    with torch.no_grad():
        a.A.copy_(torch.randn(3, 10, generator=gen))
    a.basis = torch.linalg.qr(earlier.T).Q
    assert float((a.down() @ earlier.T).abs().max()) < 1e-5
    a.bake()
    assert a.basis is None and float((a.A @ earlier.T).abs().max()) < 1e-5


# ---------------------------------------------------------------------------- every kind
def _systems(base):
    uld = ULDSystem(base, {"layers": 1, "weight": 0.7})
    _randomise(uld.parts, seed=4, scale=0.2)
    spul = SoftPromptSystem(base, {"tokens": 2})
    _randomise(spul.parts, seed=5)
    eco = _eco(base)
    with torch.no_grad():
        c = eco.parts["classifiers"]
        c.scale.fill_(1.0)
        c.threshold.fill_(0.5)
        c.sigma.fill_(1.5)
        c.bias.fill_(5.0)  # flags every prompt
    code = CodebookSystem(base, {"layer": 0, "codes": 48, "k": 6})
    _randomise(code.parts, seed=6, scale=0.3)
    with torch.no_grad():
        code.parts["codebook"].keep.copy_((torch.arange(48) % 3 != 0).float())  # a third removed
        code.parts["codebook"].fitted.fill_(1.0)
    return {"uld": uld.eval(), "spul": spul.eval(), "eco": eco, "o3": _o3(base), "codeunlearn": code.eval()}


def test_every_system_kind_is_covered():
    assert set(SYSTEMS.names()) == set(KINDS)


def _reference_greedy(system, ids, mask, steps):
    """Greedy decoding by full forward passes (no cache); the prompt is what the gates judge
    and ECO corrupts, the generated tokens are not."""
    prompt = mask.clone()
    for _ in range(steps):
        logits = system(input_ids=ids, attention_mask=mask, prompt_mask=prompt).logits[:, -1]
        nxt = logits.argmax(-1, keepdim=True)
        ids, mask = torch.cat([ids, nxt], 1), torch.cat([mask, torch.ones_like(nxt)], 1)
        prompt = torch.cat([prompt, torch.zeros_like(nxt)], 1)
    return ids


@pytest.mark.parametrize("kind", KINDS)
def test_cached_generation_equals_step_by_step_greedy(tiny, kind):
    """Left-padded prompts of different lengths: the KV-cached decoding gives the tokens that
    full forward passes give (positions, soft tokens, gates and both ULD caches line up)."""
    base, tok = _base(tiny)
    system = _systems(base)[kind]
    ids, mask = _batch(tok, ["Where was Ada", "The river flows to the", "Who"], left=True)
    with torch.no_grad():
        got = system.generate(input_ids=ids, attention_mask=mask, max_new_tokens=6,
                              eos_token_id=None, pad_token_id=tok.pad_token_id)
        want = _reference_greedy(system, ids, mask, 6)
    assert torch.equal(got, want)


@pytest.mark.parametrize("kind", KINDS)
def test_save_and_load_round_trip_with_identical_logits(tiny, tmp_path, kind):
    base, tok = _base(tiny)
    system = _systems(base)[kind]
    out = save_system(system, tok, tmp_path / "sys", {"produced_by": "test"}, tiny, (tiny,))
    assert is_system(out) and not is_system(tiny)
    manifest = json.loads((out / "obliviate.json").read_text())["system"]
    assert manifest["kind"] == kind and manifest["threat"] and manifest["settings"] == system.settings
    assert manifest["sha256"] == hashlib.sha256((out / "components.safetensors").read_bytes()).hexdigest()
    assert set(load_file(str(out / "components.safetensors"))) <= set(system.parts.state_dict())
    # the base is shared with the input, not copied, where the file system allows it
    assert (out / "base" / "model.safetensors").stat().st_ino == (tiny / "model.safetensors").stat().st_ino
    loaded, _ = load_any(out)
    ids, mask = _batch(tok, TEXTS[:3])
    with torch.no_grad():
        assert torch.equal(loaded(input_ids=ids, attention_mask=mask).logits,
                           system(input_ids=ids, attention_mask=mask).logits)


def test_damaged_or_mismatched_components_fail_with_one_line(tiny, tmp_path):
    """Checksums cover the components and the settings: an edited setting or a damaged file is
    refused; settings that match their checksum but not the tensors (a hand-made manifest)
    fail in one line too."""
    from obliviate.systems import _settings_sha256

    base, tok = _base(tiny)
    out = save_system(_systems(base)["spul"], tok, tmp_path / "sys", {}, tiny, (tiny,))
    path = out / "obliviate.json"
    good = json.loads(path.read_text())
    prov = json.loads(path.read_text())
    prov["system"]["settings"]["tokens"] = 5  # the file holds 2
    path.write_text(json.dumps(prov))
    with pytest.raises(ObliviateError, match="settings in obliviate.json do not match their checksum"):
        load_system(out)
    prov["system"]["settings_sha256"] = _settings_sha256(prov["system"]["settings"])
    path.write_text(json.dumps(prov))
    with pytest.raises(ObliviateError, match="do not fit a spul system"):
        load_system(out)
    prov["system"]["settings"] = [1]
    path.write_text(json.dumps(prov))
    with pytest.raises(ObliviateError, match="malformed"):
        load_system(out)
    path.write_text(json.dumps(good))
    data = bytearray((out / "components.safetensors").read_bytes())
    data[-1] ^= 1
    (out / "components.safetensors").write_bytes(bytes(data))
    with pytest.raises(ObliviateError, match="checksum"):
        load_system(out)


def test_a_base_rewritten_in_place_is_detected(tiny, tmp_path):
    """The saved base shares its files with the input model (hard links): rewriting that model's
    weights in place changes the system's base, and loading says so; touching a file without
    changing its bytes does not stop it."""
    import os
    import shutil

    src = tmp_path / "model"
    shutil.copytree(tiny, src)
    base, tok = _base(src)
    out = save_system(_systems(base)["spul"], tok, tmp_path / "sys", {}, src, (src,))
    os.utime(src / "model.safetensors")  # same bytes, new time: hashed, and accepted
    load_system(out)
    data = bytearray((src / "model.safetensors").read_bytes())
    data[-1] ^= 1
    with open(src / "model.safetensors", "r+b") as fh:  # in place: the same inode
        fh.write(bytes(data))
    with pytest.raises(ObliviateError, match="changed since the system was saved"):
        load_system(out)


def test_a_system_is_refused_where_weights_are_needed(tiny, tmp_path):
    base, tok = _base(tiny)
    out = save_system(_systems(base)["uld"], tok, tmp_path / "sys", {}, tiny, (tiny,))
    with pytest.raises(ObliviateError, match="unlearned system .*its base model is"):
        ob.models.load_model(out)
    assert question_batch(torch.tensor([[1, 5, 6, 7]]), torch.ones(1, 4, dtype=torch.long), None,
                          2, 1, 0)[0].tolist() == [[1, 6, 7]]  # BOS, then the last two tokens


def test_a_question_is_judged_alone_whatever_precedes_it(tiny):
    """Gates read the last `window` prompt tokens renumbered from 0: the same question after
    demonstrations (or reminders) gives exactly the features it gives alone, in a batch that
    mixes both and pads them differently."""
    from obliviate.systems import question_features

    base, tok = _base(tiny)
    q = tok.encode("Where was Ada Lovelace born?", add_special_tokens=False)
    demo = tok.encode("The river flows to the sea. Who wrote the book?", add_special_tokens=False)
    bos, pad = tok.bos_token_id, tok.pad_token_id
    width = 1 + len(demo) + len(q)
    ids = torch.tensor([[bos, *demo, *q], [pad] * len(demo) + [bos, *q]])
    mask = (ids != pad).long()
    with torch.no_grad():
        f = question_features(base, ids, mask, None, [1, 2], window=len(q))
    assert ids.shape[1] == width and torch.equal(f[0], f[1])


def test_gate_features_come_from_the_base_pass_only_where_the_prompt_is_the_question(tiny):
    """Prompts that are their question (BOS first, within the window), right-padded with answer
    tokens after them or left-padded for generation: the features of the base's own pass equal
    re-encoding the question alone (to float tolerance) and the logits are the base's exactly.
    A row whose prompt is longer than the window has its question re-encoded, alone or in a
    batch with rows read in place; with no row in place there is no base pass."""
    from obliviate.systems import gate_features, judged_in_place, question_features

    base, tok = _base(tiny)
    for left in (False, True):
        ids, mask = _batch(tok, TEXTS[:3], left=left)
        # generation: the whole row is the prompt; scoring: its first 4 tokens
        pm = None if left else mask.bool() & (torch.arange(ids.shape[1]) < 4)
        window = int(mask.sum(-1).max())
        assert all(judged_in_place(ids, mask, pm, window, tok.bos_token_id))
        with torch.no_grad():
            feats, out = gate_features(base, ids, mask, pm, [1, 2], window, None if not left
                                       else ob.systems.positions(mask), use_cache=left)
            alone = question_features(base, ids, mask, pm, [1, 2], window)
            plain = base(input_ids=ids, attention_mask=mask,
                         position_ids=ob.systems.positions(mask) if left else None).logits
        assert out is not None and torch.equal(out[0], plain)
        torch.testing.assert_close(feats, alone, atol=1e-5, rtol=1e-5)
    ids, mask = _batch(tok, ["a b", TEXTS[0]])  # the second prompt is longer than the window
    window = int(mask[0].sum()) - 1
    assert judged_in_place(ids, mask, None, window, tok.bos_token_id) == [True, False]
    with torch.no_grad():
        feats, out = gate_features(base, ids, mask, None, [1, 2], window, None, use_cache=False)
        alone = question_features(base, ids, mask, None, [1, 2], window)
    assert out is not None
    torch.testing.assert_close(feats, alone, atol=1e-5, rtol=1e-5)
    with torch.no_grad():  # no row in place: the questions re-encoded, no base pass
        assert gate_features(base, ids[1:], mask[1:], None, [1], window, None, use_cache=False)[1] is None


# ---------------------------------------------------------------------------- runs
def _unlearn(root, out, method, steps=30, params=None, model=None):
    cfg = ob.UnlearnConfig(model=str(model or root / "target"), method=method, params=params or {},
                           benchmark=str(root / "bench"),
                           optim=OptimConfig(steps=steps, batch_size=16, warmup_ratio=0.0,
                                             schedule="constant"))
    return ob.unlearn(cfg, out, progress=False)


def _sha(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.slow
@pytest.mark.parametrize("method", ["uld", "spul"])
def test_training_moves_only_the_components(memorised, tmp_path, method):
    """The saved base's weights are the target's, byte for byte; the components moved away from
    where they started (ULD: the base's first layer; SPUL: embeddings of vocabulary tokens)."""
    out = _unlearn(memorised, tmp_path / "out", method, steps=10)
    assert _sha(out / "base" / "model.safetensors") == _sha(memorised / "target" / "model.safetensors")
    system, _ = load_any(out)
    target, _ = ob.models.load_model(memorised / "target")
    if method == "uld":
        moved = system.parts["assistant"].model.layers[0].mlp.down_proj.weight
        assert not torch.allclose(moved, target.model.layers[0].mlp.down_proj.weight)
    else:
        table = target.get_input_embeddings().weight
        prompt = system.parts["prompt"].weight
        assert all(not torch.allclose(row, table, atol=1e-6) for row in prompt)


@pytest.mark.slow
def test_o3_requests_get_orthogonal_adapters(memorised, tmp_path):
    """A second O3 request on an O3 system adds a detector and an adapter whose down-projection
    is orthogonal to the first's, and keeps the first exactly."""
    first = _unlearn(memorised, tmp_path / "one", "o3", steps=10)
    second = _unlearn(memorised, tmp_path / "two", "o3", steps=10, model=first)
    a, _ = load_any(first)
    b, _ = load_any(second)
    assert b.requests == 2
    for key, adapter in b.parts["adapters_1"].items():
        earlier = b.parts["adapters_0"][key].A
        assert torch.equal(earlier, a.parts["adapters_0"][key].A)
        assert float((adapter.A @ earlier.T).abs().max()) < 1e-4 * float(adapter.A.abs().max())
    # both requests' detectors have two views; the gate's combined rates are in the manifest
    assert b.settings["views"] == 2 and [r["view"] for r in b.settings["detectors"][1]] == [0, 1, "gate"]
    with pytest.raises(ObliviateError, match="must use the same"):  # other ways of asking
        _unlearn(memorised, tmp_path / "three", "o3", steps=2, model=second, params={"augment": []})


@pytest.mark.slow
def test_weight_methods_refuse_a_system_and_systems_refuse_lora(memorised, tmp_path):
    out = _unlearn(memorised, tmp_path / "uld", "uld", steps=2)
    with pytest.raises(ObliviateError, match="unlearned system .*cannot build on it"):
        _unlearn(memorised, tmp_path / "npo", "npo", steps=2, model=out)
    cfg = ob.UnlearnConfig(model=str(memorised / "target"), method="o3",
                           benchmark=str(memorised / "bench"))
    cfg.lora.enabled = True
    with pytest.raises(ObliviateError, match="lora.enabled does not apply"):
        ob.unlearn(cfg, tmp_path / "lora", progress=False)


# ---------------------------------------------------------------------------- through the tools
def _write(path, exs):
    path.write_text("".join(json.dumps(x.to_json()) + "\n" for x in exs), encoding="utf-8")
    return path


@pytest.mark.slow
@pytest.mark.parametrize("kind", KINDS)
def test_every_kind_through_eval_audit_report_and_the_ledger(memorised_oracle, tmp_path, kind):
    """A system is read by `eval`, `audit` (weight-level audits run on its base and say so)
    and `report` as a model is, and is what a ledger request produces. O3 and ECO take a
    second request on top of the first, and the first person stays forgotten."""
    from obliviate.cli import main
    from obliviate.data import Benchmark
    from obliviate.ledger.project import ProjectSettings, add_request, init_project
    from obliviate.ledger.store import Ledger
    from obliviate.ledger.verify import verify
    from obliviate.ledger.workflow import apply

    memorised = memorised_oracle
    out = _unlearn(memorised, tmp_path / "sys", kind, steps=20)
    bench = str(memorised / "bench")
    assert main(["eval", f"model={out}", f"benchmark={bench}", "--out", str(tmp_path / "res.json")]) == 0
    assert main(["audit", str(out), "--target", str(memorised / "target"), "--benchmark", bench,
                 "--out", str(tmp_path / "aud.json"), "audits=rephrase,quantization",
                 f"oracle={memorised / 'oracle'}"]) == 0
    audit = json.loads((tmp_path / "aud.json").read_text())["audits"]
    assert audit["quantization"]["measured_on"] == "base weights"  # the knowledge in the weights
    assert "measured_on" not in audit["rephrase"]  # a prompt attack is on the system itself
    assert main(["report", str(tmp_path / "res.json"), str(tmp_path / "aud.json"),
                 "--out", str(tmp_path / "rep")]) == 0
    assert "(in the base weights)" in (tmp_path / "rep" / "report.md").read_text()
    assert "(in the base weights)" in (tmp_path / "rep" / "report.html").read_text()

    b = Benchmark.load(memorised / "bench")
    people = sorted({x.entity for x in b.qa_of("forget10")})
    requests = people if kind in ("o3", "eco") else people[:1]
    retain = _write(tmp_path / "retain.jsonl", b.qa_of("all"))
    holdout = _write(tmp_path / "holdout.jsonl", b.qa_of("holdout"))
    proj = init_project(tmp_path / "proj", ProjectSettings(
        base=str(memorised / "target"), retain=str(retain), holdout=str(holdout),
        audits=["rephrase"], samples=2))
    # SPUL's soft prompt moves slowest: at 40 steps one person's forget probability fell to
    # under 0.7x on one fine-tuned target and to 0.77x on another that differed by float rounding
    steps = 80 if kind == "spul" else 40
    for p in requests:
        add_request(proj, p, str(_write(tmp_path / f"{p}.jsonl", [x for x in b.qa if x.entity == p])),
                    method=kind, overrides=[f"optim.steps={steps}", "optim.batch_size=16"])
    assert apply(proj, apply_all=True, progress=False) == list(range(1, len(requests) + 1))
    with Ledger.open(proj) as ledger:
        assert ledger.check() == []
        rows = ledger.measurements()
        last = len(requests)
        assert is_system(ledger.model_path(ledger.version(last)))
        for rid in range(1, last + 1):
            before = rows[(rid - 1, rid)]["forget_prob"]
            for v in range(rid, last + 1):  # forgotten in its own version and every later one
                assert rows[(v, rid)]["forget_prob"] < 0.7 * before, (kind, rid, v)
    ok, checks = verify(proj, 1, progress=False)
    assert ok, [c for c in checks if not c.ok]


@pytest.mark.slow
def test_o3_adapter_keeps_retain_answers_where_a_retain_set_is_given(memorised, tmp_path):
    """Trained with the benchmark's retain set, O3's adapter (forced fully on) keeps the retain
    answers far better than the same run with the retain term off, while both push the forget
    answers down from the base's."""
    from obliviate.data import Benchmark
    from obliviate.encoding import collate, encode
    from obliviate.methods.base import batch_seq_nll
    from obliviate.methods.o3 import _Adapted

    bench = Benchmark.load(memorised / "bench")
    nll = {}
    for alpha in (0.0, 5.0):
        out = _unlearn(memorised, tmp_path / f"a{alpha}", "o3", steps=20,
                       params={"alpha_retain": alpha})
        system, tok = load_any(out)
        for name, exs in (("retain", bench.retain_set()[:32]), ("forget", bench.forget_set())):
            batch = collate([encode(tok, ex, i) for i, ex in enumerate(exs)], tok.pad_token_id)
            with torch.no_grad():
                adapted = batch_seq_nll(_Adapted(system), batch).mean()
                base = batch_seq_nll(system.base, batch).mean()
            nll[alpha, name] = float(adapted - base)  # what the adapter adds to the answers' NLL
    assert nll[5.0, "forget"] > 1.0 and nll[0.0, "forget"] > 1.0
    assert nll[5.0, "retain"] < 0.25 * nll[0.0, "retain"]


# ---------------------------------------------------------------------------- CodeUnlearn
def test_codebook_removed_codes_never_reach_the_output():
    """Hand-made codebook, width 2, 3 codes, k 2 (fitted): enc = I with a third column [1, 1], no
    biases, dec = rows [1, 0], [0, 1], [5, 5]. h = [2, 1]: pre-codes [2, 1, 3], top 2 keep codes
    0 and 2 ([2, 0, 3]) -> reconstruction 2 [1, 0] + 3 [5, 5] = [17, 15]. With code 2 removed
    it is [2, 0]; removing never changes which codes fire (top-k is taken before `keep`)."""
    book = Codebook(2, 3, 2)
    with torch.no_grad():
        book.enc.copy_(torch.tensor([[1.0, 0.0, 1.0], [0.0, 1.0, 1.0]]))
        book.dec.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0], [5.0, 5.0]]))
    h = torch.tensor([[2.0, 1.0]])
    assert book(h).tolist() == [[2.0, 1.0]]  # not fitted yet: the states pass through
    with torch.no_grad():
        book.fitted.fill_(1.0)
    assert book.codes(h).tolist() == [[2.0, 0.0, 3.0]]
    assert book(h).tolist() == [[17.0, 15.0]]
    with torch.no_grad():
        book.keep[2] = 0.0
    assert book(h).tolist() == [[2.0, 0.0]]


@pytest.mark.slow
def test_codeunlearn_bottleneck_keeps_the_model_and_removal_trains_nothing(memorised, tmp_path, monkeypatch):
    """The base's weights are the target's byte for byte. Every backward call of the run is one
    of the codebook's fitting steps: removing codes takes no gradient step. The removal reaches
    half the forget set's level while the retain set keeps 90% of its level, and with every code
    kept the bottleneck's answer probabilities on retain items stay within 2% of the model's."""
    from obliviate.data import Benchmark
    from obliviate.encoding import encode
    from obliviate.methods.base import mean_answer_prob

    calls = []
    original = torch.Tensor.backward
    monkeypatch.setattr(torch.Tensor, "backward", lambda self, *a, **k: (calls.append(1), original(self, *a, **k))[1])
    out = _unlearn(memorised, tmp_path / "code", "codeunlearn", params={"sae_steps": 400})
    assert len(calls) == 400
    assert _sha(out / "base" / "model.safetensors") == _sha(memorised / "target" / "model.safetensors")
    system, tok = load_any(out)
    log = ob.models.read_provenance(out)["last_log"]
    assert log["removed"] >= 1 and int((system.parts["codebook"].keep == 0).sum()) == log["removed"]
    assert log["forget_prob"] <= 0.5 * log["forget_start"] + 1e-9
    assert log["retain_prob"] >= 0.9 * log["retain_prob_bottleneck"]
    target, _ = ob.models.load_model(memorised / "target")
    items = [encode(tok, ex, i) for i, ex in enumerate(Benchmark.load(memorised / "bench").qa_of("retain90")[:64])]
    with torch.no_grad():
        system.parts["codebook"].keep.fill_(1.0)
        kept = mean_answer_prob(system.eval(), items, tok.pad_token_id)
        plain = mean_answer_prob(target.eval(), items, tok.pad_token_id)
    assert abs(kept - plain) <= 0.02 * plain


def _finishing_eos(new_rows: torch.Tensor) -> int:
    """A token that one row emits early and another row not at all, so that, used as the end
    token, some rows finish while others run on: the case in which rows leave the batch."""
    first = {int(t) for t in new_rows[0, :3]}
    for t in sorted(first):
        if any(t not in set(r.tolist()) for r in new_rows[1:]):
            return t
    raise AssertionError("the fixed seeds give a token that separates the rows")


def _truncated(rows: torch.Tensor, eos: int) -> list[list[int]]:
    """Each row's tokens up to and including its first `eos`."""
    out = []
    for r in rows.tolist():
        out.append(r[:r.index(eos) + 1] if eos in r else r)
    return out


@pytest.mark.parametrize("kind", KINDS)
def test_generation_with_finished_rows_leaving_the_batch_equals_step_by_step(tiny, kind):
    """With an end token that some rows emit after a step or two, the rows left running (and
    their caches, gates, soft tokens, assistant caches) cut down to the live rows still give
    the tokens of full forward passes over the whole batch."""
    base, tok = _base(tiny)
    system = _systems(base)[kind]
    prompts = ["Where was Ada", "The river flows to the", "Who", "She was born in"]
    ids, mask = _batch(tok, prompts, left=True)
    steps = 8
    with torch.no_grad():
        want = _reference_greedy(system, ids, mask, steps)[:, ids.shape[1]:]
        eos = _finishing_eos(want)
        got = system.generate(input_ids=ids, attention_mask=mask, max_new_tokens=steps,
                              eos_token_id=eos, pad_token_id=tok.pad_token_id)[:, ids.shape[1]:]
    expected = _truncated(want, eos)
    assert [r[:len(e)] for r, e in zip(got.tolist(), expected, strict=True)] == expected
    assert any(len(e) < steps for e in expected) and any(len(e) == steps for e in expected)
    for r, e in zip(got.tolist(), expected, strict=True):  # padding after the end token
        assert r[len(e):] == [tok.pad_token_id] * (len(r) - len(e))
