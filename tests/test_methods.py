"""Every registered method on a tiny model that has memorised a small benchmark: the registry
contract (full weights and LoRA), reference caching, guards and each method's own promises."""

import copy
import dataclasses

import pytest
import torch

import obliviate as ob
from obliviate.data import Benchmark
from obliviate.encoding import encode
from obliviate.methods import METHODS, Context, build, describe, needs_of
from obliviate.methods.base import (
    batch_seq_nll,
    cache_answer_logits,
    cache_seq_nll,
    forward,
    mean_answer_prob,
)
from obliviate.methods.objectives import answer_logits, npo
from obliviate.models import load_model
from obliviate.systems import load_any
from obliviate.train import OptimConfig
from obliviate.unlearning import load_refusals

STEPS = 40  # tests that train or use `memorised` are marked slow one by one

# What each method reads, from its paper's objective (not from the code's own needs_of):
# NPO, IdkPO, UNDIAL and SOUL (an NPO base) compare with the starting model on the fixed forget
# set (cached "reference"); RMU compares hidden states on changing retain batches, so it needs
# the reference live; IdkNLL, IdkPO and FLAT train towards refusals; GA, CE-U and task vectors
# see only the forget set; the rest add a retain term.
NEEDS = {
    "ga": ("forget",), "ceu": ("forget",), "task_vector": ("forget",),
    "flat": ("forget", "refusal"),
    "graddiff": ("forget", "retain"), "simnpo": ("forget", "retain"), "wga": ("forget", "retain"),
    "satimp": ("forget", "retain"), "pdu": ("forget", "retain"),
    "sparse": ("forget", "retain"), "wagle": ("forget", "retain"),  # around GradDiff by default
    "idknll": ("forget", "retain", "refusal"),
    "npo": ("forget", "retain", "reference"), "undial": ("forget", "retain", "reference"),
    "soul": ("forget", "retain", "reference"),  # around NPO by default
    "idkpo": ("forget", "retain", "refusal", "reference"),
    "rmu": ("forget", "retain", "reference_model"),
    # unlearned systems: ULD's assistant learns the forget set and flattens on the retain set;
    # SPUL's soft prompt trains towards generic (refusal) labels with a retain term; ECO's and
    # O3's gates are fit against the shipped general questions (ECO also against retain
    # questions), and O3's adapter is trained with NPO against the cached reference
    "uld": ("forget", "retain"), "spul": ("forget", "retain", "refusal"),
    "eco": ("forget", "retain", "general"), "o3": ("forget", "reference", "general"),
    # located and representation methods: SLUG's one gradient and concept-vector ablation's
    # attribution read both sets; LUNAR's direction comes from declining (refusal texts) and
    # its retain term compares live activations; WHP's reinforced model learns only the
    # forget set
    "slug": ("forget", "retain"), "concept_ablation": ("forget", "retain"),
    "lunar": ("forget", "retain", "refusal", "reference_model"), "whp": ("forget",),
    # AltPO is IdkPO's objective with an alternate answer in place of the refusal
    "altpo": ("forget", "retain", "reference"),
    # UnSTAR's anti-samples come from the forget items' own perturbed answers
    "unstar": ("forget", "retain"),
    # CodeUnlearn's codebook is fit on both sets and its codes ranked forget against retain
    "codeunlearn": ("forget", "retain"),
    "uoe": ("forget", "retain", "reference"),  # around NPO by default
}
SYSTEM_METHODS = ("eco", "o3", "spul", "uld", "codeunlearn")
FULL_WEIGHTS_ONLY = ("slug", "uoe")  # one real matrix / one slice of fused experts: LoRA is refused
# Concept-vector ablation is not selective on this 2-layer subject: its facts share value
# vectors (ablating 112 of the 256 columns takes forget to 0.53 and retain to 0.49 alike), so
# the contract below does not hold for it here; test_deep_methods.py tests what it promises.
NOT_LOCALISED_HERE = ("concept_ablation",)
MOE_ONLY = ("uoe",)  # needs experts: tested on a mixture-of-experts subject in test_deep_methods.py


def _probs(path, bench):
    """(forget, retain) mean answer probability of the model (or system) at `path`."""
    model, tok = load_any(path)
    model.eval()
    enc = [[encode(tok, ex, i) for i, ex in enumerate(xs)]
           for xs in (bench.qa_of("forget10"), bench.qa_of("retain90")[:64])]
    return tuple(mean_answer_prob(model, items, tok.pad_token_id) for items in enc)


def _unlearn(root, out, method, lora=False, steps=STEPS, params=None, lr=None):
    cfg = ob.UnlearnConfig(model=str(root / "target"), method=method, params=params or {},
                           benchmark=str(root / "bench"),
                           optim=OptimConfig(lr=lr, steps=steps, batch_size=16,
                                             warmup_ratio=0.0, schedule="constant"))
    cfg.lora.enabled = lora
    return ob.unlearn(cfg, out, progress=False)


@pytest.fixture(scope="module")
def start(memorised):
    bench = Benchmark.load(memorised / "bench")
    return bench, _probs(memorised / "target", bench)


# LoRA does not apply to unlearned systems (they train their own components): that variant
# is an error for them, tested below
VARIANTS = [(m, lora) for m in METHODS.names() for lora in (False, True)
            if not (lora and m in SYSTEM_METHODS + FULL_WEIGHTS_ONLY) and m not in NOT_LOCALISED_HERE + MOE_ONLY]


@pytest.mark.slow
@pytest.mark.parametrize(("method", "lora"), VARIANTS,
                         ids=[f"{m}-{'lora' if lora else 'full'}" for m, lora in VARIANTS])
def test_every_method_forgets_and_keeps_the_retain_set(memorised, start, tmp_path, method, lora):
    """With its defaults and 40 steps of 16 items, each method lowers forget probability by at
    least a fifth and keeps retain probability above half its starting value."""
    bench, (f0, r0) = start
    assert f0 > 0.9 and r0 > 0.9  # the subject really memorised both sets
    out = _unlearn(memorised, tmp_path / "out", method, lora=lora)
    f, r = _probs(out, bench)
    assert f < 0.8 * f0, f"{method}: forget probability {f0:.3f} -> {f:.3f}"
    assert r > 0.5 * r0, f"{method}: retain probability {r0:.3f} -> {r:.3f}"
    prov = ob.models.read_provenance(out)
    assert prov["needs"] == list(NEEDS[method]) and prov["optim"]["lr"] > 0
    assert prov["needs"] == list(needs_of(build(method)))  # plumbing: written as declared


def test_needs_of_every_method_and_variant():
    """Every registered method is in the table above (a new one must be added there), with the
    needs its objective implies; a KL retain term adds the live reference; a wrapper takes its
    base method's needs."""
    assert set(NEEDS) == set(METHODS.names())
    for name, needs in NEEDS.items():
        assert needs_of(build(name)) == needs, name
    assert needs_of(build("graddiff", {"retain_loss": "kl"})) == ("forget", "retain", "reference_model")
    assert needs_of(build("npo", {"retain_loss": "kl"})) == (
        "forget", "retain", "reference", "reference_model")
    assert needs_of(build("soul", {"base": "idkpo"})) == NEEDS["idkpo"]
    assert needs_of(build("sparse", {"base": "npo"})) == NEEDS["npo"]


def test_listing_describes_every_method():
    for name in METHODS.names():
        d = describe(name)
        assert d["description"] and d["paper"] and d["default_lr"] > 0
        assert set(d["needs"]) <= {"forget", "retain", "refusal", "general", "reference",
                                   "reference_model"}
        assert "forget" in d["needs"]


def test_ls_methods_prints_descriptions_and_needs(capsys):
    from obliviate.cli import main

    assert main(["ls", "methods"]) == 0
    out = capsys.readouterr().out
    for name in METHODS.names():
        line = next(line for line in out.splitlines() if line.startswith(name + " "))
        assert describe(name)["description"] in line and "needs: forget" in line


def test_refusals_ship_with_the_package():
    refusals = load_refusals()
    assert len(refusals) >= 10 and all(r.strip() == r and r for r in refusals)


def _subject(memorised, n=8):
    model, tok = load_model(memorised / "target")
    bench = Benchmark.load(memorised / "bench")
    items = [encode(tok, ex, i) for i, ex in enumerate(bench.qa_of("forget10")[:n])]
    return model, tok, items


@pytest.mark.slow
def test_cached_reference_equals_a_live_reference_model(memorised):
    """NPO's loss with the reference NLLs cached before training equals the loss computed with
    a frozen copy of the starting model, after the weights have moved; so do UNDIAL's cached
    teacher logits."""
    model, tok, items = _subject(memorised)
    ref_copy = copy.deepcopy(model).eval()
    cached = cache_seq_nll(model, items, tok.pad_token_id)
    teacher = cache_answer_logits(model, items, tok.pad_token_id, batch_size=3)
    with torch.no_grad():  # move the weights as a few unlearning steps would
        for p in model.parameters():
            p.add_(0.01 * torch.randn_like(p))
    ctx = Context(pad_id=tok.pad_token_id, items={"forget": items})
    batch = ctx.batch_of("forget", list(range(len(items))))
    seq = batch_seq_nll(model, batch)
    with torch.no_grad():
        live = batch_seq_nll(ref_copy, batch)
    assert torch.allclose(cached, live, atol=1e-5)
    assert npo(seq, cached[batch["index"]], 0.1).item() == pytest.approx(
        npo(seq, live, 0.1).item(), rel=1e-6)
    assert not torch.allclose(seq.detach(), live, atol=1e-3)  # the weights did move
    with torch.no_grad():
        live_logits, _ = answer_logits(forward(ref_copy, batch), batch["labels"])
    assert torch.allclose(torch.cat(teacher), live_logits, atol=1e-4)


@pytest.mark.slow
def test_reference_model_without_a_copy_full_and_lora(memorised):
    """Full weights: swapping the snapshot in gives the starting model's outputs and the
    trained weights come back afterwards, even after an error. LoRA: the adapter disabled is
    the base model."""
    from peft import LoraConfig, get_peft_model

    model, tok, items = _subject(memorised)
    ctx = Context(pad_id=tok.pad_token_id, items={"forget": items})
    batch = ctx.batch_of("forget", list(range(len(items))))
    with torch.no_grad():
        start = batch_seq_nll(model, batch)
    ctx.snapshot_reference(model)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.01)
        moved = batch_seq_nll(model, batch)
    with ctx.reference_model(model) as ref:
        assert torch.allclose(batch_seq_nll(ref, batch), start, atol=1e-5)
    with pytest.raises(RuntimeError), ctx.reference_model(model):
        raise RuntimeError("inside")
    with torch.no_grad():
        assert torch.allclose(batch_seq_nll(model, batch), moved, atol=1e-5)

    model, tok, items = _subject(memorised)
    peft_model = get_peft_model(model, LoraConfig(r=4, target_modules="all-linear"))
    with torch.no_grad():
        for n, p in peft_model.named_parameters():
            if "lora_B" in n:
                p.add_(0.05)
        adapted = batch_seq_nll(peft_model, batch)
    lora_ctx = Context(pad_id=tok.pad_token_id, lora=True)
    with lora_ctx.reference_model(peft_model) as ref:
        assert torch.allclose(batch_seq_nll(ref, batch), start, atol=1e-5)
    assert not torch.allclose(adapted, start, atol=1e-3)


@pytest.mark.slow
def test_collapse_guard_stops_and_keeps_the_last_good_state(memorised, start, tmp_path):
    """GA at 100x its learning rate destroys the retain set: the run stops with a clear error,
    no output is written, and the last state that passed the guard is saved beside it."""
    bench, (_, r0) = start
    out = tmp_path / "ga"
    with pytest.raises(ob.ObliviateError, match="collapsing") as err:
        _unlearn(memorised, out, "ga", steps=40, lr=1e-2)
    assert not out.exists()
    last_good = tmp_path / "ga.last-good"
    assert str(last_good) in str(err.value)
    _, r = _probs(last_good, bench)
    assert r >= 0.3 * r0
    assert "stopped" in ob.models.read_provenance(last_good)


@pytest.mark.slow
def test_nan_loss_stops_the_run(memorised, tmp_path, monkeypatch):
    from obliviate.methods.ga import GradAscent

    real = GradAscent.loss
    calls = {"n": 0}

    def poisoned(self, model, batches, ctx):
        calls["n"] += 1
        loss, info = real(self, model, batches, ctx)
        return (loss * float("nan") if calls["n"] > 12 else loss), info

    monkeypatch.setattr(GradAscent, "loss", poisoned)
    with pytest.raises(ob.ObliviateError, match="loss became nan at step 12") as err:
        _unlearn(memorised, tmp_path / "ga", "ga", steps=20)
    assert "last good state (step 10)" in str(err.value)
    assert (tmp_path / "ga.last-good" / "model.safetensors").is_file()


def _weights(path):
    from safetensors.torch import load_file

    return load_file(str(path / "model.safetensors"))


@pytest.mark.slow
def test_rmu_changes_only_its_modules(memorised, tmp_path):
    before = _weights(memorised / "target")
    after = _weights(_unlearn(memorised, tmp_path / "rmu", "rmu", steps=5))
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed == {"model.layers.0.mlp.down_proj.weight", "model.layers.1.mlp.down_proj.weight"}


@pytest.mark.slow
def test_wagle_updates_only_the_attributed_fraction(memorised, tmp_path):
    before = _weights(memorised / "target")
    after = _weights(_unlearn(memorised, tmp_path / "w", "wagle", steps=5, params={"ratio": 0.1}))
    block = [k for k in before if ".layers." in k and before[k].dim() == 2]
    moved = sum(int((before[k] != after[k]).sum()) for k in block)
    total = sum(before[k].numel() for k in block)
    assert 0 < moved <= 0.1 * total + 1


@pytest.mark.slow
def test_prune_then_unlearn_keeps_pruned_weights_at_zero(memorised, tmp_path):
    before = _weights(memorised / "target")
    after = _weights(_unlearn(memorised, tmp_path / "s", "sparse", steps=5, params={"prune": 0.5}))
    block = [k for k in before if ".layers." in k and before[k].dim() == 2]
    zeros = sum(int((after[k] == 0).sum()) for k in block)
    total = sum(after[k].numel() for k in block)
    assert zeros >= 0.5 * total - 1
    with pytest.raises(ob.ObliviateError, match="needs full weights"):
        _unlearn(memorised, tmp_path / "s2", "sparse", lora=True, steps=2, params={"prune": 0.5})


@pytest.mark.slow
def test_task_vector_under_lora_negates_the_adapter(memorised, tmp_path):
    """With scale 0 the negated adapter is zero: the merged model equals the input exactly,
    whatever the fine-tuning did. Runs are deterministic, so the same fine-tuning with
    scale -1 yields the fine-tuned model itself, w_ft = w0 + (w_ft - w0); with scale 2 the
    merged weights are then w0 - 2 (w_ft - w0), and they moved the other way."""
    before = _weights(memorised / "target")

    def run(name, scale):
        return _weights(_unlearn(memorised, tmp_path / name, "task_vector", lora=True, steps=3,
                                 params={"scale": scale}))

    after = run("tv", 0.0)
    assert all(torch.allclose(before[k], after[k], atol=1e-6) for k in before)
    fine_tuned, negated = run("ft", -1.0), run("tv2", 2.0)
    moved = [k for k in before if not torch.allclose(fine_tuned[k], before[k], atol=1e-6)]
    assert len(moved) >= 7  # every adapted linear layer learned something
    for k in before:
        assert torch.allclose(negated[k], before[k] - 2 * (fine_tuned[k] - before[k]), atol=1e-5), k


@pytest.mark.slow
def test_method_parameters_are_checked(memorised, tmp_path):
    with pytest.raises(ob.ObliviateError, match="retain_loss must be"):
        _unlearn(memorised, tmp_path / "x", "graddiff", params={"retain_loss": "mse"})
    with pytest.raises(ob.ObliviateError, match="did you mean 'beta'"):
        _unlearn(memorised, tmp_path / "x", "npo", params={"betta": 0.2})
    with pytest.raises(ob.ObliviateError, match="did you mean 'npo'"):
        _unlearn(memorised, tmp_path / "x", "soul", params={"base": "nppo"})
    assert not (tmp_path / "x").exists()


@pytest.mark.slow
def test_kl_retain_term_needs_and_uses_the_live_reference(memorised, tmp_path):
    method = build("graddiff", {"retain_loss": "kl"})
    assert "reference_model" in needs_of(method)
    assert dataclasses.asdict(method)["retain_loss"] == "kl"
    out = _unlearn(memorised, tmp_path / "kl", "graddiff", params={"retain_loss": "kl"}, steps=5)
    assert ob.models.read_provenance(out)["needs"][-1] == "reference_model"


@pytest.mark.slow
def test_forget_only_methods_stop_once_the_forget_set_has_halved(memorised, tmp_path):
    """GA recommends forget_stop = 0.5: the run ends at the first check where the forget
    probe's probability is at most half its start, before the step budget; 0 turns it off."""
    out = _unlearn(memorised, tmp_path / "ga", "ga", steps=200)
    prov = ob.models.read_provenance(out)
    probe = prov["forget_prob_probe"]
    assert prov["steps_run"] < 200 and prov["steps_run"] % 5 == 0
    assert probe["end"] <= 0.5 * probe["start"]
    cfg = ob.UnlearnConfig(model=str(memorised / "target"), method="ga",
                           benchmark=str(memorised / "bench"),
                           optim=OptimConfig(lr=None, steps=10, batch_size=16, warmup_ratio=0.0,
                                             schedule="constant"))
    cfg.guard.forget_stop = 0.0
    prov = ob.models.read_provenance(ob.unlearn(cfg, tmp_path / "ga-all", progress=False))
    assert prov["steps_run"] == 10 and prov["forget_prob_probe"]["start"] is None
