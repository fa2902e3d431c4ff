"""Representation- and parameter-side audits: does the model still hold the forgotten facts?

Logit lens: each layer's hidden state read out through the final norm and output head, as
answer probability. Parametric trace: ConceptVectors-style MLP value vectors. Both need the
model's internals, so forward-only wrappers are not applicable.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch

from ..encoding import collate, encode
from ..models import load_model
from .base import AUDITS, AuditData, NotApplicable


@AUDITS.register("logit_lens")
@dataclass
class LogitLens:
    """Answer probability read from each layer through the final norm and output head (the
    logit lens): knowledge suppressed only in the last layers still shows in earlier ones."""

    description: ClassVar[str] = "answer probability read out from every layer (logit lens)"
    paper: ClassVar[str] = "nostalgebraist 2020, interpreting GPT: the logit lens"

    def run(self, model, tokenizer, data: AuditData) -> dict[str, float]:
        if not hasattr(model, "config") or not hasattr(model, "get_output_embeddings"):
            raise NotApplicable("needs hidden states and an output head; this model exposes forward() only")
        norm = getattr(getattr(model, "model", None), "norm", None)
        if norm is None:
            raise NotApplicable("no final norm at model.model.norm (a Llama-style model is expected)")
        head = model.get_output_embeddings()
        device = next(model.parameters()).device
        sums: dict[int, list[float]] = {}
        model.eval()
        with torch.no_grad():
            for s in range(0, len(data.forget), 32):
                items = [encode(tokenizer, ex, i, data.template) for i, ex in enumerate(data.forget[s:s + 32])]
                b = collate(items, tokenizer.pad_token_id)
                hs = model(input_ids=b["input_ids"].to(device), attention_mask=b["attention_mask"].to(device),
                           output_hidden_states=True).hidden_states
                labels = b["labels"].to(device)
                target, mask = labels[:, 1:], labels[:, 1:] != -100
                for layer, h in enumerate(hs[1:], start=1):
                    logp = torch.log_softmax(head(norm(h[:, :-1])).float(), -1)
                    lp = logp.gather(-1, target.masked_fill(~mask, 0).unsqueeze(-1)).squeeze(-1)
                    per_item = torch.exp((lp * mask).sum(1) / mask.sum(1))
                    sums.setdefault(layer, []).extend(per_item.tolist())
        out = {f"layer_{k}": float(np.mean(v)) for k, v in sums.items()}
        out["score"] = max(out.values())
        return out


@AUDITS.register("parametric_trace")
@dataclass
class ParametricTrace:
    """ConceptVectors-style trace. In the target, find the MLP value vectors (columns of each
    down-projection) whose projection onto the vocabulary most promotes the forget answers'
    tokens; report their mean cosine similarity, in the audited model, to the target's. 1 = the
    stored knowledge's parameters are untouched."""

    target: str = ""
    top: int = 20  # value vectors traced

    description: ClassVar[str] = "MLP value vectors that promote the forget answers: how far they moved"
    paper: ClassVar[str] = "Hong et al. 2024, Intrinsic Evaluation of Unlearning Using Parametric Knowledge Traces"

    def run(self, model, tokenizer, data: AuditData) -> dict[str, float]:
        if not hasattr(model, "config") or not hasattr(model, "get_output_embeddings"):
            raise NotApplicable("needs weights (MLP down-projections and an output head)")
        target, _ = _load_cached(self.target)
        ids = sorted({t for ex in data.forget for t in tokenizer.encode(ex.answer, add_special_tokens=False)})
        head = target.get_output_embeddings().weight.detach().float()  # [vocab, d]
        picked = []  # (score, layer name, column)
        with torch.no_grad():
            for name, mod in target.named_modules():
                if name.endswith("mlp.down_proj"):
                    cols = mod.weight.detach().float()  # [d, intermediate]
                    promote = (head[ids] @ cols).mean(0)  # [intermediate]
                    for j in torch.topk(promote, min(self.top, promote.numel())).indices.tolist():
                        picked.append((float(promote[j]), name, j))
        picked = sorted(picked, reverse=True)[:self.top]
        mods = dict(model.named_modules())
        tmods = dict(target.named_modules())
        cos, norm = [], []
        for _, name, j in picked:
            if name not in mods:
                raise NotApplicable(f"the audited model has no module {name}")
            a = tmods[name].weight.detach().float()[:, j]
            b = mods[name].weight.detach().float()[:, j].to(a.device)
            cos.append(float(torch.nn.functional.cosine_similarity(a, b, dim=0)))
            norm.append(float(b.norm() / a.norm().clamp(min=1e-12)))
        return {"cosine": float(np.mean(cos)), "norm_ratio": float(np.mean(norm)),
                "score": float(np.mean(cos))}


_CACHE: dict[str, tuple] = {}


def _load_cached(path: str):
    """The target, loaded once per process (every audited model is compared with it)."""
    key = str(Path(path).resolve())
    if key not in _CACHE:
        model, tok = load_model(path)
        _CACHE.clear()  # keep one: a benchmark audits many models against one target
        _CACHE[key] = (model.eval(), tok)
    return _CACHE[key]
