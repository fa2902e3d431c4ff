"""Each method's loss wired as its paper says, on a freshly built tiny model (seconds, no
benchmark): the gradient of `method.loss(model, batches, ctx)` with respect to every weight
equals a combination of per-item gradients whose coefficients are derived by hand in each
test's docstring. The per-item quantities come from plain one-item forward passes, not from
the library's batching or objectives, and each test also shows that the likely wiring bug
(NPO degenerating to GA, IdkPO with the refusal and the answer swapped, weights that are not
detached, ...) gives a gradient the comparison rejects.

Notation: forget items i = 1, 2 (N = 2) with summed answer NLL S_i over n_i labelled tokens
(T = n_1 + n_2) and gradient g_i = dS_i/dtheta; retain items likewise with S^r_j, T_r.
A "surrogate" below is a scalar whose gradient is the expected one: coefficients computed
from detached values times the live per-item quantities.
"""

import copy
import dataclasses
import math

import pytest
import torch

from obliviate.data import Example
from obliviate.encoding import collate, encode
from obliviate.methods import Context, build
from obliviate.models import TinyModelConfig, build_tiny_model, train_tokenizer
from tinyfit import fit, one_thread

FORGET = [Example(question="Where does Ana live?", answer="Ana lives in Tula."),
          Example(question="What does Bo do for a living these days?",
                  answer="Bo repairs old clocks and watches in a small shop in Riga.")]
RETAIN = [Example(question="Where does Cy live?", answer="Cy lives in Oslo by the sea."),
          Example(question="What is Di's job?", answer="Di teaches music.")]
REFUSALS = ["I don't know.", "I cannot say anything about that person, sorry."]


@pytest.fixture(scope="module")
def subject():
    """(model, tokenizer, ctx): a 1-layer Llama trained for 40 full-batch steps on the four
    answers and the refusals, so token probabilities spread over (0, 1) rather than sitting
    at 1/vocab (the weights of WGA and NPO then differ item to item); ctx holds the encoded
    forget, retain and refusal ('idk') items aligned by index."""
    texts = [t for ex in FORGET + RETAIN for t in (ex.question, ex.answer)] + REFUSALS
    tok = train_tokenizer(texts, vocab_size=300)
    model = build_tiny_model(tok, TinyModelConfig(layers=1, hidden=32, heads=2, intermediate=64), seed=0)
    items = {
        "forget": [encode(tok, ex, i) for i, ex in enumerate(FORGET)],
        "retain": [encode(tok, ex, i) for i, ex in enumerate(RETAIN)],
        "idk": [encode(tok, dataclasses.replace(ex, answer=REFUSALS[i]), i) for i, ex in enumerate(FORGET)],
    }
    batch = collate(items["forget"] + items["retain"] + items["idk"], tok.pad_token_id)
    model = fit(model, batch, steps=40, lr=1e-2)
    return model, tok, Context(pad_id=tok.pad_token_id, items=items)


def token_logp(model, item) -> torch.Tensor:
    """log p of each labelled token of one item [n_i], from a plain unpadded forward pass."""
    ids = torch.tensor([item.input_ids])
    labels = torch.tensor(item.labels[1:])
    logits = model(input_ids=ids).logits[0, :-1]
    keep = labels != -100
    return torch.log_softmax(logits[keep].float(), -1).gather(-1, labels[keep, None])[:, 0]


def seq_nll(model, item) -> torch.Tensor:
    """S_i: the summed answer NLL of one item (scalar)."""
    return -token_logp(model, item).sum()


def n_tokens(item) -> int:
    return sum(label != -100 for label in item.labels[1:])


def grad(model, scalar: torch.Tensor) -> torch.Tensor:
    """d scalar / d theta, every parameter, flattened."""
    params = list(model.parameters())
    gs = torch.autograd.grad(scalar, params, allow_unused=True, retain_graph=True)
    return torch.cat([(g if g is not None else torch.zeros_like(p)).flatten() for g, p in zip(gs, params, strict=True)])


def method_grad(model, ctx, name: str, params: dict) -> tuple[torch.Tensor, float]:
    """Gradient and value of `method.loss` on the two forget items and the two retain items,
    outside a training step (an early backward of a summand does nothing there)."""
    method = build(name, params)
    batches = {"forget": ctx.batch_of("forget", [0, 1]), "retain": ctx.batch_of("retain", [0, 1])}
    loss, _ = method.loss(model, batches, ctx)
    return grad(model, loss), float(loss.detach())


def retain_nll(model, ctx) -> torch.Tensor:
    """Token-averaged retain NLL over the batch: (S^r_1 + S^r_2) / T_r."""
    items = ctx.items["retain"]
    return sum(seq_nll(model, it) for it in items) / sum(n_tokens(it) for it in items)


TOLERANCE = 1e-5  # relative: float32 noise between batched and one-item forward passes


def assert_close(actual: torch.Tensor, expected: torch.Tensor, *wrong: torch.Tensor) -> None:
    """actual == expected to float32 noise, and every plausible wrong gradient lies at least
    100 tolerances away (so the comparison does tell the bug apart)."""
    scale = expected.norm()
    assert scale > 0
    err = float((actual - expected).norm() / scale)
    assert err < TOLERANCE, err
    for w in wrong:
        assert float((w - expected).norm() / scale) > 100 * TOLERANCE


ALPHAS = [0.0, 2.0]  # 0: the forget term alone; 2: plus twice the retain term


@pytest.fixture(autouse=True)
def _one_thread():
    with one_thread():
        yield


@pytest.mark.parametrize("alpha", ALPHAS)
def test_ga_and_graddiff_gradients(subject, alpha):
    """GA: L = -(S_1 + S_2) / T (the token-averaged NLL, negated), so dL/dtheta =
    -(g_1 + g_2) / T; wrong: descent, +(g_1 + g_2)/T. GradDiff with gamma = 0.5:
    L = -0.5 (S_1 + S_2)/T + alpha (S^r_1 + S^r_2)/T_r; wrong: gamma ignored, or (alpha > 0)
    ascent on the retain set too."""
    model, _, ctx = subject
    f = ctx.items["forget"]
    T = n_tokens(f[0]) + n_tokens(f[1])
    forget_mean = (seq_nll(model, f[0]) + seq_nll(model, f[1])) / T
    ga, _ = method_grad(model, ctx, "ga", {})
    assert_close(ga, grad(model, -forget_mean), grad(model, forget_mean))
    gd, _ = method_grad(model, ctx, "graddiff", {"alpha": alpha, "gamma": 0.5})
    retain = retain_nll(model, ctx)
    wrong = [grad(model, -forget_mean + alpha * retain)]
    if alpha:
        wrong.append(grad(model, -0.5 * forget_mean - alpha * retain))
    assert_close(gd, grad(model, -0.5 * forget_mean + alpha * retain), *wrong)


@pytest.mark.parametrize("alpha", ALPHAS)
def test_npo_weights_items_by_their_reference(subject, alpha):
    """NPO: L = -(2/b) (1/N) sum_i log sigmoid(b (S_i - R_i)) + alpha * retain, R_i the cached
    reference NLL. d/dx log sigmoid(x) = sigmoid(-x), so
        dL/dS_i = -(2/b)(1/N) * b * sigmoid(b (R_i - S_i)) = -(2/N) sigmoid(b (R_i - S_i)),
    dL/dtheta = sum_i -sigmoid(b (R_i - S_i)) g_i (N = 2) + alpha * retain gradient.
    With b = 0.5 and a cache R = S + (4, -4) (not the current NLLs), the coefficients are
    -sigmoid(2) = -0.881 and -sigmoid(-2) = -0.119: item 1, which the model finds likelier than
    the reference did, gets 7.4 times the step of item 2, already below the reference. Wrong:
    GA's -(g_1 + g_2)/T (NPO degenerated to GA), or the current NLLs as the reference, which
    makes every coefficient -sigmoid(0) = -1/2."""
    model, _, ctx = subject
    f = ctx.items["forget"]
    s = [seq_nll(model, it) for it in f]
    offsets = torch.tensor([4.0, -4.0])
    ctx = dataclasses.replace(ctx, cache={"seq_nll:forget": torch.stack(s).detach() + offsets})
    actual, _ = method_grad(model, ctx, "npo", {"beta": 0.5, "alpha": alpha})
    coef = [-1 / (1 + math.exp(-2.0)), -1 / (1 + math.exp(2.0))]  # -sigmoid(2), -sigmoid(-2)
    retain = alpha * retain_nll(model, ctx)
    expected = grad(model, coef[0] * s[0] + coef[1] * s[1] + retain)
    T = n_tokens(f[0]) + n_tokens(f[1])
    as_ga = grad(model, -(s[0] + s[1]) / T + retain)
    no_reference = grad(model, -(s[0] + s[1]) / 2 + retain)
    assert_close(actual, expected, as_ga, no_reference)


def test_idkpo_value_and_gradient_prefer_the_refusal(subject):
    """IdkPO (alpha = 0): margin m_i = (Rw_i - W_i) - (Rl_i - L_i), W the refusal's summed NLL,
    L the forget answer's, R their cached references; loss -(2/b)(1/N) sum log sigmoid(b m_i).
    1. References equal to the current NLLs: m = 0, loss = (2/b) ln 2 = 4 ln 2 at b = 0.5.
    2. Rw = W + (1, 0), Rl = L - (1, 3): m = (2, 3); loss = -(2/0.5)/2 [log sigmoid(1) +
       log sigmoid(1.5)] = 2 [ln(1 + e^-1) + ln(1 + e^-1.5)] = 1.029349. Swapped win and lose
       (with their references) flip the margins: 2 [ln(1 + e) + ln(1 + e^1.5)] = 5.029 instead.
    3. dL/dm_i = -(2/N) sigmoid(-b m_i) = -sigmoid(-b m_i) and dm/dW = -1, dm/dL = +1, so
       dL/dtheta = sum_i sigmoid(-b m_i) (gW_i - gL_i): positive on the refusal's NLL (descent
       makes the refusal likelier), negative on the answer's. Swapped: the opposite signs."""
    model, _, ctx = subject
    lose = [seq_nll(model, it) for it in ctx.items["forget"]]
    win = [seq_nll(model, it) for it in ctx.items["idk"]]
    w0, l0 = torch.stack(win).detach(), torch.stack(lose).detach()
    at_ref = dataclasses.replace(ctx, cache={"seq_nll:idk": w0, "seq_nll:forget": l0})
    _, value = method_grad(model, at_ref, "idkpo", {"beta": 0.5, "alpha": 0.0})
    assert value == pytest.approx(4 * math.log(2), rel=1e-5)

    moved = dataclasses.replace(ctx, cache={"seq_nll:idk": w0 + torch.tensor([1.0, 0.0]),
                                            "seq_nll:forget": l0 - torch.tensor([1.0, 3.0])})
    actual, value = method_grad(model, moved, "idkpo", {"beta": 0.5, "alpha": 0.0})
    assert value == pytest.approx(2 * (math.log(1 + math.exp(-1)) + math.log(1 + math.exp(-1.5))), rel=1e-5)
    c = [1 / (1 + math.exp(1.0)), 1 / (1 + math.exp(1.5))]  # sigmoid(-b m_i)
    expected = grad(model, c[0] * (win[0] - lose[0]) + c[1] * (win[1] - lose[1]))
    swapped = grad(model, -(1 - c[0]) * (win[0] - lose[0]) - (1 - c[1]) * (win[1] - lose[1]))
    assert_close(actual, expected, swapped)


def test_idkpo_retain_term(subject):
    """alpha = 2 adds 2 * (S^r_1 + S^r_2)/T_r to the loss of the test above (references at the
    current NLLs: coefficients sigmoid(0) = 1/2 on gW_i - gL_i)."""
    model, _, ctx = subject
    lose = [seq_nll(model, it) for it in ctx.items["forget"]]
    win = [seq_nll(model, it) for it in ctx.items["idk"]]
    at_ref = dataclasses.replace(ctx, cache={"seq_nll:idk": torch.stack(win).detach(),
                                             "seq_nll:forget": torch.stack(lose).detach()})
    actual, value = method_grad(model, at_ref, "idkpo", {"beta": 0.5, "alpha": 2.0})
    retain = retain_nll(model, ctx)
    assert value == pytest.approx(4 * math.log(2) + 2 * float(retain.detach()), rel=1e-5)
    assert_close(actual, grad(model, 0.5 * (win[0] - lose[0] + win[1] - lose[1]) + 2 * retain),
                 grad(model, 0.5 * (win[0] - lose[0] + win[1] - lose[1]) - 2 * retain))


@pytest.mark.parametrize("alpha", ALPHAS)
def test_simnpo_normalises_by_length(subject, alpha):
    """SimNPO: L = -(2/b)(1/N) sum_i log sigmoid(b S_i / n_i - g) + alpha * retain, so
    dL/dS_i = -(2/b)(1/N) sigmoid(g - b S_i/n_i) * b/n_i = -sigmoid(g - b S_i/n_i) / n_i (N = 2).
    b = 2, g = 0.5. Wrong: the summed NLL without the 1/n_i (the two answers differ in length)."""
    model, _, ctx = subject
    f = ctx.items["forget"]
    s = [seq_nll(model, it) for it in f]
    n = [n_tokens(it) for it in f]
    assert n[0] != n[1]
    coef = [-1 / (1 + math.exp(-(0.5 - 2 * float(s[i]) / n[i]))) / n[i] for i in range(2)]
    retain = alpha * retain_nll(model, ctx)
    actual, _ = method_grad(model, ctx, "simnpo", {"beta": 2.0, "gamma": 0.5, "alpha": alpha})
    unnormalised = [-1 / (1 + math.exp(-(0.5 - 2 * float(s[i])))) for i in range(2)]
    assert_close(actual, grad(model, coef[0] * s[0] + coef[1] * s[1] + retain),
                 grad(model, unnormalised[0] * s[0] + unnormalised[1] * s[1] + retain))


@pytest.mark.parametrize("alpha", ALPHAS)
def test_wga_weights_tokens_by_detached_probability(subject, alpha):
    """WGA: L = gamma * (1/T) sum_t w_t log p_t + alpha * retain, w_t = p_t^b held constant, so
    dL/dtheta = (gamma/T) sum_t p_t^b d log p_t/dtheta. b = 2, gamma = 0.5. Wrong: weights left
    in the graph (d(p^b log p) = p^b (1 + b log p) d log p: each token's step rescaled by
    1 + b log p), or b = 1."""
    model, _, ctx = subject
    logp = torch.cat([token_logp(model, it) for it in ctx.items["forget"]])  # [T]
    w = logp.detach().exp() ** 2
    retain = alpha * retain_nll(model, ctx)
    actual, _ = method_grad(model, ctx, "wga", {"beta": 2.0, "gamma": 0.5, "alpha": alpha})
    T = logp.numel()
    expected = grad(model, 0.5 * (w * logp).sum() / T + retain)
    not_detached = grad(model, 0.5 * (logp.exp() ** 2 * logp).sum() / T + retain)
    beta_one = grad(model, 0.5 * (logp.detach().exp() * logp).sum() / T + retain)
    assert_close(actual, expected, not_detached, beta_one)


# ---------------------------------------------------------------------------- reference model
def test_kl_retain_term_is_zero_at_the_reference_and_uses_the_snapshot(subject):
    """GradDiff with retain_loss = kl, gamma = 0, alpha = 1: the loss is the KL term alone,
    KL(p_ref || p_model) averaged over the retain batch's labelled positions.
    - Right after the snapshot the model is the reference: KL = 0 exactly (up to float).
    - Weights moved: inside `ctx.reference_model(model)` the logits are the snapshot's (a
      copy kept aside), outside they are the moved ones; the KL equals the one computed by
      hand between the copy's and the moved model's next-token distributions, and is > 0.
      A bug that took the reference from the live weights would give 0 again."""
    model, _, ctx = subject
    model = copy.deepcopy(model)
    ctx = Context(pad_id=ctx.pad_id, items=ctx.items)
    ctx.snapshot_reference(model)
    params = {"retain_loss": "kl", "gamma": 0.0, "alpha": 1.0}
    _, at_ref = method_grad(model, ctx, "graddiff", params)
    assert abs(at_ref) < 1e-6
    reference = copy.deepcopy(model)
    torch.manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    batch = ctx.batch_of("retain", [0, 1])
    ids, mask = batch["input_ids"], batch["attention_mask"]
    with torch.no_grad():
        moved_logits = model(input_ids=ids, attention_mask=mask).logits
        ref_logits = reference(input_ids=ids, attention_mask=mask).logits
        with ctx.reference_model(model) as ref:
            inside = ref(input_ids=ids, attention_mask=mask).logits
        after = model(input_ids=ids, attention_mask=mask).logits
    assert torch.allclose(inside, ref_logits, atol=1e-5)
    assert not torch.allclose(inside, moved_logits, atol=1e-3)
    assert torch.equal(after, moved_logits)  # the moved weights are back
    kls = []
    for it in ctx.items["retain"]:
        ids1 = torch.tensor([it.input_ids])
        keep = torch.tensor(it.labels[1:]) != -100
        with torch.no_grad():
            lp = torch.log_softmax(model(input_ids=ids1).logits[0, :-1][keep], -1)
            lq = torch.log_softmax(reference(input_ids=ids1).logits[0, :-1][keep], -1)
        kls.append((lq.exp() * (lq - lp)).sum(-1))  # KL(ref || model) per position
    expected = float(torch.cat(kls).mean())
    _, moved = method_grad(model, ctx, "graddiff", params)
    assert expected > 1e-3 and moved == pytest.approx(expected, rel=1e-4)


# ---------------------------------------------------------------------------- task vector
def test_task_vector_finish_negates_the_fine_tuned_delta(subject):
    """Full weights, scale 2: `setup` keeps w0; training moves the weights to w0 + D; `finish`
    sets w0 - 2 (w0 + D - w0) = w0 - 2D (a known D stands in for the fine-tuning). Wrong:
    w0 - D (scale ignored) or w0 + 2D (sign)."""
    model, _, _ = subject
    model = copy.deepcopy(model)
    method = build("task_vector", {"scale": 2.0})
    ctx = Context()
    method.setup(model, ctx)
    w0 = {n: p.detach().clone() for n, p in model.named_parameters()}
    torch.manual_seed(1)
    delta = {n: 0.01 * torch.randn_like(p) for n, p in w0.items()}
    with torch.no_grad():
        for n, p in model.named_parameters():
            p.add_(delta[n])
    method.finish(model, ctx)
    for n, p in model.named_parameters():
        assert torch.allclose(p, w0[n] - 2 * delta[n], atol=1e-6), n


def test_task_vector_under_lora_negates_the_scaled_adapter(subject):
    """LoRA, scale 2: the fine-tuned delta is the adapter's (a/r) B A; `finish` makes it
    -2 (a/r) B A, so the merged weights are W0 - 2 (W_ft - W0), W_ft the merge before finish."""
    from peft import LoraConfig, get_peft_model

    model, _, _ = subject
    base = copy.deepcopy(model)
    w0 = {n: p.detach().clone() for n, p in base.named_parameters()}
    peft_model = get_peft_model(copy.deepcopy(model), LoraConfig(r=4, lora_alpha=8, target_modules="all-linear"))
    torch.manual_seed(2)
    with torch.no_grad():
        for n, p in peft_model.named_parameters():
            if "lora_B" in n:
                p.copy_(0.05 * torch.randn_like(p))
    fine_tuned = {n: p.detach().clone()
                  for n, p in copy.deepcopy(peft_model).merge_and_unload().named_parameters()}
    method = build("task_vector", {"scale": 2.0})
    method.finish(peft_model, Context(lora=True))
    merged = dict(peft_model.merge_and_unload().named_parameters())
    moved = 0
    for n, w in w0.items():
        assert torch.allclose(merged[n], w - 2 * (fine_tuned[n] - w), atol=1e-6), n
        moved += not torch.allclose(fine_tuned[n], w)
    assert moved >= 7  # q, k, v, o, gate, up, down of the one layer had an adapter
