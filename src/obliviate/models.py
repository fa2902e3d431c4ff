"""Load and save causal LMs and tokenizers; build the tiny offline model used by the demo.

Loading is plain transformers (local folder or hub id) with safetensors only and remote code
off unless asked for. Saving goes through `atomic_dir`, so an input model is never touched and
a crash leaves no half-written output.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .errors import ObliviateError
from .io import atomic_dir, ensure_not_inside

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


def load_model(source: str | Path, trust_remote_code: bool = False, dtype: str = "float32"):
    """(model, tokenizer) from a local folder or a hub id. Weights must be safetensors."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    src = str(source)
    local = Path(src)
    if local.exists() and not (local / "config.json").is_file():
        raise ObliviateError(f"{local} is not a Hugging Face model folder (no config.json)")
    torch_dtype = getattr(torch, dtype, None)
    if not isinstance(torch_dtype, torch.dtype):
        raise ObliviateError(f"unknown dtype '{dtype}' (use float32, bfloat16 or float16)")
    try:
        tokenizer = AutoTokenizer.from_pretrained(src, trust_remote_code=trust_remote_code)
        model = AutoModelForCausalLM.from_pretrained(
            src, dtype=torch_dtype, use_safetensors=True, trust_remote_code=trust_remote_code
        )
    except OSError as exc:
        raise ObliviateError(f"could not load model '{src}': {exc}") from None
    if tokenizer.pad_token_id is None:  # many causal LMs ship without one
        tokenizer.pad_token = tokenizer.eos_token
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    return model, tokenizer


def save_model(model, tokenizer, out: str | Path, provenance: dict[str, Any],
               inputs: tuple[str | Path, ...] = ()) -> Path:
    """save_pretrained (safetensors) into a new folder, atomically, with a provenance file."""
    out = Path(out)
    for src in inputs:
        if Path(str(src)).exists():
            ensure_not_inside(out, Path(str(src)), "model")
    with atomic_dir(out) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        (tmp / PROVENANCE).write_text(json.dumps(provenance, indent=1, sort_keys=True) + "\n")
    return out


def read_provenance(path: str | Path) -> dict[str, Any]:
    p = Path(path) / PROVENANCE
    return json.loads(p.read_text()) if p.is_file() else {}


def count_parameters(model) -> int:
    return sum(p.numel() for p in model.parameters())
