"""Unlearned systems: a frozen base model plus components that change its outputs at inference.

Methods that leave the weights alone (ULD's assistant, ECO's prompt classifier and embedding
corruption, SPUL's soft prompt, O3's detector and gated adapters) produce a `System`: an
nn.Module with the causal-LM forward interface (`system(input_ids=, attention_mask=).logits`)
and a cached, batched greedy `generate`, so the engine, the audits and the ledger use it as
they use a model. A system is saved as one folder:

    obliviate.json            provenance, with "system": kind, settings, components, threat
    base/                     the base model folder (hard links to the input's files if possible)
    components.safetensors    every trained tensor of the components

Gated kinds (ECO, O3) decide from the *prompt*. Teacher-forced scoring passes the prompt's
extent (`prompt_mask`, the positions that carry no answer label) so a question is judged the
same way whether it is scored or answered; without it every attended position is prompt.
"""

from __future__ import annotations

import functools
import hashlib
import inspect
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch

from .data.files import read_json
from .decoding import all_reserved, greedy_loop, length_parts, merge_parts, pad_rows, reserved_cache
from .encoding import IGNORE, collate
from .errors import ObliviateError
from .io import atomic_dir, check_output, write_json_atomic
from .registry import Registry

SYSTEMS: Registry[type] = Registry("system kind")
COMPONENTS = "components.safetensors"
BASE = "base"


@dataclass
class SystemOutput:
    """What a system's forward returns: the causal-LM interface's logits [batch, seq, vocab]."""

    logits: torch.Tensor


def positions(mask: torch.Tensor) -> torch.Tensor:
    """Position ids of a (left- or right-) padded batch: real tokens count from 0, as
    transformers' generate numbers them [batch, seq]."""
    pos = mask.long().cumsum(-1) - 1
    return pos.clamp(min=0)


@functools.cache
def _forward_params(cls: type) -> frozenset[str]:
    """The parameters of a class's forward; none for a callable without one (a model view)."""
    forward = getattr(cls, "forward", None)
    return frozenset(inspect.signature(forward).parameters) if forward is not None else frozenset()


def _model_class(model) -> type:
    """The class whose forward defines the call (a PEFT wrapper passes keywords through)."""
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    return type(inner)


def _cache_kwarg(cls: type) -> str:
    """The name a model class takes its KV cache by: `cache` from transformers 5.x,
    `past_key_values` before."""
    return "cache" if "cache" in _forward_params(cls) else "past_key_values"


def forward_params(model) -> frozenset[str]:
    """The keyword arguments the model's forward names (through a PEFT wrapper)."""
    return _forward_params(_model_class(model))


def keeps_logits(model) -> bool:
    """Whether the model computes logits for a suffix of positions alone (transformers'
    `logits_to_keep`); a system's forward computes them all."""
    return not isinstance(model, System) and "logits_to_keep" in forward_params(model)


def supports_cache(model) -> bool:
    """Whether the model's forward takes a KV cache (transformers' causal LMs do)."""
    return bool({"cache", "past_key_values"} & _forward_params(_model_class(model)))


def scoring_positions(mask: torch.Tensor) -> torch.Tensor | None:
    """Position ids for a call without a cache: None (the model's own 0, 1, 2, ...) unless a
    row is left-padded, so a right-padded batch gets the base's logits bit for bit, padding
    included, and a left-padded one the positions generation uses."""
    return positions(mask) if bool((mask[:, 0] == 0).any()) else None


def output_cache(out) -> Any:
    """The KV cache a causal-LM call returned (named `cache` from transformers 5.x)."""
    return out.cache if hasattr(out, "cache") else out.past_key_values


def lm_step(model, mask: torch.Tensor, ids: torch.Tensor | None = None,
            embeds: torch.Tensor | None = None, cache: Any = None,
            pos: torch.Tensor | None = None, use_cache: bool = False, **extra: Any):
    """One causal-LM call on token ids or input embeddings: (logits, cache)."""
    name = _cache_kwarg(_model_class(model))
    out = model(input_ids=ids, inputs_embeds=embeds, attention_mask=mask, position_ids=pos,
                use_cache=use_cache, **{name: cache}, **extra)
    return out.logits, (output_cache(out) if use_cache else None)


def cached_prefill(model, ids: torch.Tensor, mask: torch.Tensor,
                   reserve: int = 0) -> tuple[torch.Tensor, dict]:
    """The first decoding step of a causal LM over left-padded prompts: the last position's
    logits (only those go through the output layer, where the model allows) and the state
    `cached_decode` continues from; its cache has room for `reserve` new tokens."""
    keep = {"logits_to_keep": 1} if "logits_to_keep" in _forward_params(_model_class(model)) else {}
    cache = reserved_cache(model, reserve) if reserve > 0 else None
    # length groups for a left-padded batch (each row's last position real) only
    parts = length_parts(mask) if keep and all_reserved(cache) and bool(mask[:, -1].all()) else []
    if len(parts) > 1:
        logits, cache = _prefill_parts(model, ids, mask, reserve, parts)
    else:
        logits, cache = lm_step(model, mask, ids=ids, cache=cache, pos=positions(mask),
                                use_cache=True, **keep)
    return logits, {"mask": mask, "pos": positions(mask)[:, -1:], "cache": cache}


def _prefill_parts(model, ids: torch.Tensor, mask: torch.Tensor, reserve: int,
                   parts: list[torch.Tensor]) -> tuple[torch.Tensor, Any]:
    """cached_prefill's read of rows of very different lengths, one length group at a time
    (decoding.length_parts), each cut to its own longest row; the groups' caches merge into
    the one a single read would leave (decoding.merge_parts). Last-position logits only."""
    width = ids.shape[1]
    caches, logits = [], None
    for idx in parts:
        sub = mask[idx]
        cut = width - max(1, int(sub.sum(-1).max()))
        out, part_cache = lm_step(model, sub[:, cut:], ids=ids[idx, cut:],
                                  cache=reserved_cache(model, 0), pos=positions(sub[:, cut:]),
                                  use_cache=True, logits_to_keep=1)
        if logits is None:
            logits = out.new_empty((len(ids), *out.shape[1:]))
        logits[idx.to(out.device)] = out
        caches.append(part_cache)
    return logits, merge_parts(caches, parts, len(ids), width, reserve)


def cached_decode(model, ids: torch.Tensor, state: dict[str, Any]) -> tuple[torch.Tensor, dict]:
    """Logits for one new token per row [rows, 1, vocab] from the model's KV cache."""
    mask = torch.cat([state["mask"], torch.ones_like(ids)], dim=1)
    pos = state["pos"] + 1
    logits, cache = lm_step(model, mask, ids=ids, cache=state["cache"], pos=pos, use_cache=True)
    return logits, {**state, "mask": mask, "pos": pos, "cache": cache}


def _uncached_decode(model, ids: torch.Tensor, state: dict[str, Any]) -> tuple[torch.Tensor, dict]:
    """One more token per row through forward() over the whole sequence (no cache to reuse)."""
    seq = torch.cat([state["ids"], ids], dim=1)
    mask = torch.cat([state["mask"], torch.ones_like(ids)], dim=1)
    return model(input_ids=seq, attention_mask=mask).logits, {"ids": seq, "mask": mask}


def greedy_rows(model, ids: torch.Tensor, mask: torch.Tensor, max_new_tokens: int | list[int],
                eos: int | None, park_below: int = 0) -> list[list[int]]:
    """Greedy new tokens of each left-padded prompt, finished rows leaving the batch: a system
    through its own prefill and decode, a causal LM through its KV cache, and a model whose
    forward takes no cache through whole-sequence calls (decoding.greedy_loop's arguments)."""
    n = len(ids)
    if isinstance(model, System):
        return greedy_loop(lambda: model.prefill(ids, mask, None, use_cache=True), model.decode,
                           n, max_new_tokens, eos, park_below)
    if supports_cache(model):
        most = max(max_new_tokens) if isinstance(max_new_tokens, list) else max_new_tokens
        return greedy_loop(lambda: cached_prefill(model, ids, mask, reserve=max(most, 0)),
                           functools.partial(cached_decode, model), n, max_new_tokens, eos, park_below)
    return greedy_loop(lambda: (model(input_ids=ids, attention_mask=mask).logits,
                                {"ids": ids, "mask": mask}),
                       functools.partial(_uncached_decode, model), n, max_new_tokens, eos, park_below)


def parkable(model) -> bool:
    """Whether a row's decoding can stop and resume from its prompt plus the tokens it has
    generated, read again in one pass: a plain causal LM with a cache. A system cannot (its
    gates and corruption read the prompt alone, which a resumed row's input no longer is)."""
    return not isinstance(model, System) and supports_cache(model)


class System(torch.nn.Module):
    """A frozen base model and trainable `parts` (an nn.ModuleDict). Subclasses set `kind` and
    `threat` (the access that breaks its forgetting: an attacker with it recovers the
    knowledge), build their parts from `settings` (a JSON-able dict, so a saved system rebuilds
    the same shapes), and implement `prefill` (logits over the whole input, plus the state
    decoding continues from) and, where decoding differs from the base's, `decode`."""

    kind: ClassVar[str] = ""
    threat: ClassVar[str] = ""

    def __init__(self, base, settings: dict[str, Any]) -> None:
        super().__init__()
        self.base = base
        self.settings = dict(settings)
        for p in base.parameters():
            p.requires_grad_(False)
        self.parts = torch.nn.ModuleDict()

    # --- the model interface the rest of the package reads
    @property
    def config(self):
        return self.base.config

    @property
    def generation_config(self):
        return self.base.generation_config

    @property
    def device(self) -> torch.device:
        return next(self.base.parameters()).device

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                prompt_mask: torch.Tensor | None = None, part: str | None = None,
                **_: Any) -> SystemOutput:
        """Logits of the whole system; `part` names one piece alone, for a method's training
        loss (called through forward so data-parallel wrappers see the call)."""
        mask = torch.ones_like(input_ids) if attention_mask is None else attention_mask
        logits, _ = self.prefill(input_ids, mask, prompt_mask, use_cache=False, part=part)
        return SystemOutput(logits=logits)

    # --- what a kind implements
    def prefill(self, ids: torch.Tensor, mask: torch.Tensor, prompt_mask: torch.Tensor | None,
                use_cache: bool, part: str | None = None) -> tuple[torch.Tensor, Any]:
        raise NotImplementedError

    def decode(self, ids: torch.Tensor, state: dict[str, Any]) -> tuple[torch.Tensor, Any]:
        """Logits for one new token per row [batch, 1, vocab], from the base's cache. Every
        tensor in the state has one row per live row (finished rows are cut out of it)."""
        return cached_decode(self.base, ids, state)

    @torch.no_grad()
    def generate(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                 max_new_tokens: int = 48, eos_token_id: int | None = None,
                 pad_token_id: int | None = None, **_: Any) -> torch.Tensor:
        """Greedy decoding with a KV cache, batched over left-padded prompts; returns the
        prompts followed by the new tokens (finished rows continue with padding)."""
        mask = torch.ones_like(input_ids) if attention_mask is None else attention_mask
        pad = pad_token_id if pad_token_id is not None else (eos_token_id or 0)
        new = greedy_rows(self, input_ids, mask, max_new_tokens, eos_token_id)
        return pad_rows(input_ids, new, pad)

    def base_state(self, mask: torch.Tensor, cache: Any) -> dict[str, Any]:
        """The decoding state of a single-model kind after its prefill."""
        return {"mask": mask, "pos": positions(mask)[:, -1:], "cache": cache}

    def describe(self) -> dict[str, Any]:
        """The manifest's entry: kind, settings, threat model and component shapes."""
        return {"kind": self.kind, "settings": self.settings, "threat": self.threat,
                "components": {k: list(v.shape) for k, v in self.parts.state_dict().items()}}


def prompt_positions(mask: torch.Tensor, prompt_mask: torch.Tensor | None) -> torch.Tensor:
    """[batch, seq] float weights of the prompt's positions; a row with no prompt position
    (a plain-text item, all labelled) falls back to all its attended positions."""
    m = mask.bool() if prompt_mask is None else (prompt_mask.bool() & mask.bool())
    empty = ~m.any(-1, keepdim=True)
    return torch.where(empty, mask.bool(), m).float()


def pool(hidden: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Mean of hidden states [batch, seq, d] over weighted positions [batch, seq] -> [batch, d]."""
    return (hidden * weights[..., None]).sum(1) / weights.sum(1, keepdim=True).clamp(min=1)


def question_batch(ids: torch.Tensor, mask: torch.Tensor, prompt_mask: torch.Tensor | None,
                   window: int, bos: int | None, pad: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Each row's last `window` prompt tokens as a sequence of its own (BOS first, left-padded):
    what a gate judges. Cut from its context and renumbered from position 0, a question reads
    the same after demonstrations, reminders or padding as it does alone."""
    pm = prompt_positions(mask, prompt_mask).bool()
    rows = []
    for row, keep in zip(ids.tolist(), pm.tolist(), strict=True):
        toks = [t for t, k in zip(row, keep, strict=True) if k]
        if toks and bos is not None and toks[0] == bos:
            toks = toks[1:]
        toks = toks[-window:] if window > 0 else toks
        rows.append(([bos] if bos is not None else []) + toks)
    width = max(1, max(len(r) for r in rows))
    out = torch.full((len(rows), width), pad, dtype=ids.dtype)
    m = torch.zeros((len(rows), width), dtype=mask.dtype)
    for i, r in enumerate(rows):
        if r:
            out[i, width - len(r):] = torch.tensor(r, dtype=ids.dtype)
            m[i, width - len(r):] = 1
    return out.to(ids.device), m.to(ids.device)


def question_features(base, ids: torch.Tensor, mask: torch.Tensor, prompt_mask: torch.Tensor | None,
                      layers: list[int], window: int) -> torch.Tensor:
    """Pooled hidden states of each row's question alone (question_batch) at `layers`
    (hidden_states indices): float32 [batch, len(layers), d]."""
    cfg = base.config
    pad = cfg.pad_token_id if cfg.pad_token_id is not None else 0
    q, qm = question_batch(ids, mask, prompt_mask, window, cfg.bos_token_id, pad)
    hs = base(input_ids=q, attention_mask=qm, position_ids=positions(qm),
              output_hidden_states=True).hidden_states
    w = qm.float()
    return torch.stack([pool(hs[i], w) for i in layers], 1).float()


def judged_in_place(ids: torch.Tensor, mask: torch.Tensor, prompt_mask: torch.Tensor | None,
                    window: int, bos: int | None) -> list[bool]:
    """Per row, whether its prompt is token for token the question a gate judges (question_batch): it
    opens the row, starts with BOS (where the model has one) and fits the window. Then the
    base's own pass over the input already holds the gate's hidden states for that row (causal
    attention: what follows the prompt cannot change them)."""
    pm = prompt_positions(mask, prompt_mask).bool()
    rows = []
    for row, keep, real in zip(ids.tolist(), pm.tolist(), mask.bool().tolist(), strict=True):
        first = real.index(True) if True in real else 0
        k = sum(keep)
        toks = row[first:first + k]
        rows.append(keep[first:first + k] == [True] * k  # the prompt opens the row, in one piece
                    and (bos is None or (bool(toks) and toks[0] == bos))
                    and (window <= 0 or len(toks) - (bos is not None) <= window))
    return rows


def gate_features(base, ids: torch.Tensor, mask: torch.Tensor, prompt_mask: torch.Tensor | None,
                  layers: list[int], window: int, pos: torch.Tensor | None, use_cache: bool):
    """(features, base_out): the gate's features, as question_features gives them (up to float
    rounding: the same tokens in a differently padded batch), and the
    base's (logits, cache) over the whole input, which a shut gate returns as is. Rows whose
    prompt is their question (judged_in_place) are read from that pass; only the others have
    their question re-encoded alone. With no such row there is no base pass (base_out None)."""
    cfg = base.config
    in_place = judged_in_place(ids, mask, prompt_mask, window, cfg.bos_token_id)
    if not any(in_place):
        return question_features(base, ids, mask, prompt_mask, layers, window), None
    out = base(input_ids=ids, attention_mask=mask, position_ids=pos, use_cache=use_cache,
               output_hidden_states=True, **{_cache_kwarg(type(base)): None})
    w = prompt_positions(mask, prompt_mask)
    feats = torch.stack([pool(out.hidden_states[i], w) for i in layers], 1).float()
    redo = torch.tensor([i for i, ok in enumerate(in_place) if not ok], dtype=torch.long,
                        device=ids.device)
    if len(redo):
        sub = None if prompt_mask is None else prompt_mask[redo]
        feats[redo] = question_features(base, ids[redo], mask[redo], sub, layers, window)
    return feats, (out.logits, output_cache(out) if use_cache else None)


def prompt_features(base, items, pad_id: int, layers: list[int], window: int = 0,
                    batch_size: int = 32) -> torch.Tensor:
    """question_features of encoded items (their unlabelled positions are the prompt), on CPU
    [n, len(layers), d]: how a gate's detector or classifier is fit."""
    device = next(base.parameters()).device
    rows = []
    with torch.no_grad():
        for s in range(0, len(items), batch_size):
            b = {k: v.to(device) for k, v in collate(items[s:s + batch_size], pad_id).items()}
            pm = prompt_mask_of(b["labels"], b["attention_mask"])
            rows.append(question_features(base, b["input_ids"], b["attention_mask"], pm, layers,
                                          window).cpu())
    return torch.cat(rows) if rows else torch.zeros(0, len(layers), base.config.hidden_size)


def prompt_window(items) -> int:
    """The longest prompt of encoded items, in tokens: the pooling window of a gated system."""
    return max((sum(1 for label in it.labels if label == IGNORE) for it in items), default=0)


def prompt_mask_of(labels: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The positions of a teacher-forced batch that carry no answer label."""
    return (labels == IGNORE) & mask.bool()


def forward_kwargs(model, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """What a scoring call passes besides ids and mask: a system needs the prompt's extent."""
    if isinstance(model, System) and "labels" in batch:
        return {"prompt_mask": prompt_mask_of(batch["labels"], batch["attention_mask"])}
    return {}


def youden_threshold(pos: np.ndarray, neg: np.ndarray) -> tuple[float, float, float]:
    """(threshold, TPR, FPR) maximising TPR - FPR over the scores' own values (Youden's J);
    ties go to the higher threshold (fewer false positives)."""
    best = (1.0, 0.0, 0.0)
    for t in sorted(set(pos.tolist()) | set(neg.tolist()), reverse=True):
        tpr, fpr = float((pos >= t).mean()), float((neg >= t).mean()) if len(neg) else 0.0
        if tpr - fpr > best[1] - best[2] + 1e-12:  # a tie keeps the higher threshold
            best = (float(t), tpr, fpr)
    return best


# ------------------------------------------------------------------------- folders
def manifest(folder: str | Path) -> dict[str, Any] | None:
    """The "system" entry of a folder's obliviate.json, or None for a model folder."""
    path = Path(folder) / "obliviate.json"
    if not Path(folder).is_dir() or not path.is_file():
        return None
    prov = read_json(path)
    entry = prov.get("system") if isinstance(prov, dict) else None
    if entry is None:
        return None
    if not isinstance(entry, dict) or not isinstance(entry.get("kind"), str):
        raise ObliviateError(f"{path}: 'system' must be an object naming its kind")
    return entry


def is_system(source: str | Path) -> bool:
    return manifest(source) is not None


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        while block := fh.read(1 << 20):
            h.update(block)
    return h.hexdigest()


def load_system(folder: str | Path, trust_remote_code: bool = False, dtype: str = "float32"):
    """(system, tokenizer) from a system folder: the base loads as any model folder, the
    components from safetensors after their checksum is verified."""
    from safetensors import SafetensorError
    from safetensors.torch import load_model as load_parts

    from .models import load_model

    folder = Path(folder)
    entry = manifest(folder)
    if entry is None:
        raise ObliviateError(f"{folder} is not an unlearned system (no 'system' in obliviate.json)")
    cls = SYSTEMS.get(entry["kind"])
    settings = _checked_entry(folder, entry)
    _check_base(folder, entry.get("base_files", {}))
    base, tok = load_model(folder / BASE, trust_remote_code=trust_remote_code, dtype=dtype)
    try:
        system = cls(base, settings)
        # safetensors' module loader restores tied tensors (an assistant's head) as tied
        load_parts(system.parts, str(folder / COMPONENTS), strict=True)
    except (TypeError, ValueError, KeyError, IndexError, ZeroDivisionError, RuntimeError,
            SafetensorError, ObliviateError) as exc:
        first = next((ln for ln in str(exc).splitlines() if ln.strip().rstrip(":")), type(exc).__name__)
        raise ObliviateError(f"could not load system {folder}: its components and settings do not "
                             f"fit a {entry['kind']} system ({first.strip()})") from None
    system.eval()
    return system, tok


def _settings_sha256(settings: Any) -> str:
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()


def _checked_entry(folder: Path, entry: dict[str, Any]) -> dict[str, Any]:
    """The manifest's settings, after the components' and the settings' checksums are
    verified: a damaged file or an edited setting is refused before anything is built."""
    comp = folder / COMPONENTS
    if not comp.is_file():
        raise ObliviateError(f"could not load system {folder}: {COMPONENTS} is missing")
    settings, files = entry.get("settings"), entry.get("base_files", {})
    if not isinstance(settings, dict) or not isinstance(files, dict) or not all(
            isinstance(v, dict) for v in files.values()):
        raise ObliviateError(f"could not load system {folder}: obliviate.json's 'system' entry "
                             "is malformed (settings and base_files must be objects)")
    if _sha256(comp) != entry.get("sha256"):
        raise ObliviateError(f"could not load system {folder}: {COMPONENTS} does not match the "
                             "checksum in obliviate.json (damaged or edited)")
    if _settings_sha256(settings) != entry.get("settings_sha256"):
        raise ObliviateError(f"could not load system {folder}: its settings in obliviate.json do "
                             "not match their checksum (edited)")
    return settings


def _base_files(base: Path) -> dict[str, dict[str, Any]]:
    """Size, modification time and SHA-256 of the base's weight files, as saved."""
    out = {}
    for f in sorted(base.glob("*.safetensors")):
        st = f.stat()
        out[f.name] = {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "sha256": _sha256(f)}
    return out


def _check_base(folder: Path, recorded: dict[str, dict[str, Any]]) -> None:
    """The base's weights are the ones the system was fit on. Its files may be hard links to
    the input model's, so a tool rewriting that model in place would change them: a file whose
    size or time changed is hashed, and a different hash is an error."""
    for name, rec in recorded.items():
        path = folder / BASE / name
        if not path.is_file():
            raise ObliviateError(f"could not load system {folder}: {BASE}/{name} is missing")
        st = path.stat()
        if (st.st_size, st.st_mtime_ns) != (rec.get("size"), rec.get("mtime_ns")) and \
                _sha256(path) != rec.get("sha256"):
            raise ObliviateError(
                f"could not load system {folder}: {BASE}/{name} changed since the system was "
                "saved (its base shares files with the model it was made from; was that model "
                "rewritten in place?)")


def load_any(source: str | Path, trust_remote_code: bool = False, dtype: str = "float32"):
    """(model or system, tokenizer): what `eval`, `audit` and the ledger read."""
    from .models import load_model

    if is_system(source):
        return load_system(source, trust_remote_code=trust_remote_code, dtype=dtype)
    return load_model(source, trust_remote_code=trust_remote_code, dtype=dtype)


def base_folder(source: str | Path) -> Path | None:
    """The folder holding a source's base weights: a system's base/, a model folder itself,
    None for hub ids and GGUF files (their base is written out with save_pretrained)."""
    src = Path(source)
    if is_system(src):
        return src / BASE
    return src if (src / "config.json").is_file() else None


def _link_or_copy(src: str, dst: str) -> None:
    try:
        os.link(src, dst)  # the base is never written to, so sharing its files is safe
    except OSError:
        shutil.copy2(src, dst)


def save_system(system: System, tok, out: str | Path, provenance: dict[str, Any],
                source: str | Path, inputs: tuple[str | Path, ...] = ()) -> Path:
    """Write a system folder atomically: base (linked from `source` where possible),
    components (safetensors) and the manifest in obliviate.json."""
    from safetensors.torch import save_model as save_parts

    out = Path(out)
    check_output(out, {"model": [str(s) for s in inputs]}, kind="dir")
    base_src = base_folder(source)
    with atomic_dir(out) as tmp:
        if base_src is not None:
            shutil.copytree(base_src, tmp / BASE, copy_function=_link_or_copy)
        else:
            system.base.save_pretrained(tmp / BASE, safe_serialization=True)
            tok.save_pretrained(tmp / BASE)
        save_parts(system.parts, str(tmp / COMPONENTS), metadata={"kind": system.kind})
        entry = {**system.describe(), "base": BASE, "file": COMPONENTS,
                 "sha256": _sha256(tmp / COMPONENTS), "base_files": _base_files(tmp / BASE),
                 "settings_sha256": _settings_sha256(system.settings)}
        write_json_atomic(tmp / "obliviate.json", {**provenance, "system": entry})
    return out


__all__ = ["SYSTEMS", "System", "base_folder", "forward_kwargs", "is_system", "load_any",
           "gate_features", "judged_in_place", "load_system", "lm_step", "manifest", "output_cache", "pool", "positions", "scoring_positions",
           "prompt_features", "prompt_mask_of", "prompt_positions", "prompt_window",
           "question_batch", "question_features", "save_system", "youden_threshold"]
