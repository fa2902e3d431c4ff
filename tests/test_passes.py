"""Two-pass steps (methods/passes.py): the meter measures what a pass holds for its backward,
decides when the retain pass recomputes its activations, and recomputing changes memory only,
never the gradients or the trained model."""

import contextlib
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers.modeling_layers import GradientCheckpointingLayer

import obliviate as ob
from obliviate.data import Example
from obliviate.encoding import collate, encode
from obliviate.methods import passes
from obliviate.methods.base import batch_nll
from obliviate.methods.passes import PassMeter, recomputed
from obliviate.models import TinyModelConfig, build_tiny_model, train_tokenizer
from obliviate.train import OptimConfig


def test_the_meter_counts_saved_activations_not_weights_and_keeps_the_last_pass():
    torch.manual_seed(0)
    lin = torch.nn.Linear(8, 8, bias=False)
    x = torch.randn(4, 8)
    with PassMeter(lin) as meter:
        # the product saves its input x (4 x 8 floats = 128 bytes) for the weight's gradient,
        # relu its output (another 128); the weight itself is not an activation
        out = torch.relu(lin(x)).sum()
        assert (meter.bytes, meter.tokens) == (256, 32)
        out.backward()
        meter.end_pass()
        assert meter.last == (256, 32) and (meter.bytes, meter.tokens) == (0, 0)
        meter.end_pass()  # a backward with no pass in between keeps the last measure
        assert meter.last == (256, 32)
    assert meter.last == (256, 32)  # leaving the block measures no new pass
    with PassMeter(lin) as again:  # each step starts from nothing
        assert again.last == (0, 0)


def test_the_retain_pass_recomputes_when_the_gradients_would_not_fit(monkeypatch):
    """tight() <=> grads + first x (second tokens / first tokens) - first > share x peak."""
    lin = torch.nn.Linear(10, 10, bias=False)  # 100 floats of gradient: 400 bytes
    lin.weight.grad = torch.zeros(10, 10)
    monkeypatch.setattr(passes, "peak_bytes", lambda device: 10_000)  # 5%: 500 bytes
    meter = PassMeter(lin)
    meter.last = (1_000, 10)  # the forget pass: 1000 bytes over 10 tokens
    batch = {"input_ids": torch.zeros(2, 7)}  # 14 tokens: 1400 bytes expected
    # 400 + 1400 - 1000 = 800 > 500
    assert meter.tight(batch)
    # 10 tokens: 400 + 1000 - 1000 = 400 <= 500
    assert not meter.tight({"input_ids": torch.zeros(2, 5)})
    off = PassMeter(lin, recompute=False)
    off.last = (1_000, 10)
    assert not off.tight(batch)
    fresh = PassMeter(lin)  # nothing measured yet (no early backward): never
    assert not fresh.tight(batch)
    # the meter runs only where gradients could matter: 400 bytes against 5% of the peak
    assert passes.worth_metering(lin) == (400 > passes.RECOMPUTE_ABOVE * 10_000)
    monkeypatch.setattr(passes, "peak_bytes", lambda device: 1_000)
    assert passes.worth_metering(lin)


def test_the_peak_is_read_where_the_weights_live(monkeypatch):
    """On a CUDA device the allocator's peak; on the CPU the process's resident peak."""
    seen = []
    monkeypatch.setattr(torch.cuda, "max_memory_allocated", lambda d: seen.append(d) or 123)
    assert passes.peak_bytes(torch.device("cuda", 0)) == 123 and seen == [torch.device("cuda", 0)]
    import resource

    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    # bytes, not KiB (it may grow a little between the two reads)
    assert own * 1024 <= passes.peak_bytes(torch.device("cpu")) <= (own + 65_536) * 1024
    assert seen == [torch.device("cuda", 0)]  # the CPU never asks CUDA


def _tiny():
    examples = [Example(question=f"Who is {n}?", answer=f"{n} is a baker in {c}.")
                for n, c in (("Ana", "Oslo"), ("Bo", "Riga"), ("Cy", "Lima"), ("Di", "Bern"))]
    tok = train_tokenizer([t for ex in examples for t in (ex.question, ex.answer)], vocab_size=300)
    torch.manual_seed(0)
    model = build_tiny_model(tok, TinyModelConfig(layers=2, hidden=32, heads=2, intermediate=64))
    batch = collate([encode(tok, ex, i) for i, ex in enumerate(examples)], tok.pad_token_id)
    return model.train(), batch


def test_recomputing_gives_the_same_gradients_with_less_saved_and_restores_the_layers():
    model, batch = _tiny()
    grads, saved = [], []
    for recompute in (False, True):
        model.zero_grad()
        with PassMeter(model) as meter:
            with recomputed(model) if recompute else contextlib.nullcontext(False) as on:
                loss = batch_nll(model, batch)
            saved.append(meter.bytes)
            assert on is recompute
        loss.backward()  # after the block, as the training loop does
        grads.append([p.grad.clone() for p in model.parameters()])
    assert saved[1] < saved[0] / 2  # the layers' activations were not kept
    for a, b in zip(*grads, strict=True):
        assert torch.allclose(a, b, rtol=1e-6, atol=1e-8)
    layers = [m for m in model.modules() if isinstance(m, GradientCheckpointingLayer)]
    assert len(layers) == 2  # no flag left behind on the decoder layers
    assert not any({"gradient_checkpointing", "_gradient_checkpointing_func"} & set(m.__dict__)
                   for m in layers)
    assert not model.is_activation_checkpointing


def test_recomputed_leaves_a_model_that_already_recomputes_alone():
    model, _ = _tiny()
    model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    with recomputed(model) as changed:
        assert changed is False
    assert model.is_activation_checkpointing  # the user's setting survives the block
    plain = torch.nn.Linear(2, 2)
    with recomputed(plain) as changed:  # no decoder layers: nothing to do
        assert changed is False


def _weights(folder: Path) -> dict[str, torch.Tensor]:
    return load_file(str(folder / "model.safetensors"))


@pytest.mark.slow
def test_npo_with_the_retain_pass_recomputed_trains_the_same_model(memorised, tmp_path, monkeypatch):
    """The whole run: with the meter on and every retain pass recomputed (a negative threshold),
    NPO makes the model it makes with `optim.recompute_retain=false`, to float rounding."""
    monkeypatch.setattr(passes, "RECOMPUTE_ABOVE", -1.0)
    tight, used = PassMeter.tight, []

    def spy(self, batch):
        decision = tight(self, batch)
        used.append(decision)
        return decision

    monkeypatch.setattr(PassMeter, "tight", spy)

    def run(out: Path, recompute: bool) -> Path:
        return ob.unlearn(ob.UnlearnConfig(
            model=str(memorised / "target"), method="npo", benchmark=str(memorised / "bench"),
            optim=OptimConfig(lr=None, steps=6, batch_size=16, warmup_ratio=0.0,
                              recompute_retain=recompute)), out, progress=False)

    kept = run(tmp_path / "kept", False)
    assert len(used) == 6 and not any(used)
    used.clear()
    again = run(tmp_path / "recomputed", True)
    assert len(used) == 6 and all(used)
    a, b, before = _weights(kept), _weights(again), _weights(memorised / "target")
    assert max(float((a[k] - before[k]).abs().max()) for k in a if k in before) > 1e-4
    assert all(torch.allclose(a[k], b[k], rtol=1e-5, atol=1e-6) for k in a)
