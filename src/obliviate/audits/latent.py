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

from ..concepts import answer_token_ids, value_vectors
from ..encoding import collate, encode
from ..models import load_model
from .base import AUDITS, AuditData, NotApplicable


@AUDITS.register("logit_lens")
@dataclass
class LogitLens:
    """Answer probability read from each layer through the final norm and output head (the
    logit lens): knowledge suppressed only in the last layers still shows in earlier ones."""

    weights: ClassVar[bool] = True  # reads or edits the weights: on a system, its base is audited
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

    weights: ClassVar[bool] = True  # reads or edits the weights: on a system, its base is audited
    description: ClassVar[str] = "MLP value vectors that promote the forget answers: how far they moved"
    paper: ClassVar[str] = "Hong et al. 2024, Intrinsic Evaluation of Unlearning Using Parametric Knowledge Traces"

    def run(self, model, tokenizer, data: AuditData) -> dict[str, float]:
        if not hasattr(model, "config") or not hasattr(model, "get_output_embeddings"):
            raise NotApplicable("needs weights (MLP down-projections and an output head)")
        target, _ = _load_cached(self.target)
        picked = value_vectors(target, answer_token_ids(tokenizer, data.forget), self.top)
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


def _states_and_logits(model, tokenizer, examples, template: str, batch_size: int = 32):
    """(hidden states per layer [layers+1] of [n_answer_tokens, d], final logits [n, vocab])
    at the answer positions, in item order."""
    device = next(model.parameters()).device
    hs_all, logits_all = [], []
    model.eval()
    with torch.no_grad():
        for s in range(0, len(examples), batch_size):
            items = [encode(tokenizer, ex, i, template) for i, ex in enumerate(examples[s:s + batch_size])]
            b = collate(items, tokenizer.pad_token_id)
            out = model(input_ids=b["input_ids"].to(device), attention_mask=b["attention_mask"].to(device),
                        output_hidden_states=True)
            mask = (b["labels"][:, 1:] != -100).to(device)
            hs_all.append([h[:, :-1][mask].float() for h in out.hidden_states])
            logits_all.append(out.logits[:, :-1][mask].float())
    layers = len(hs_all[0])
    return [torch.cat([h[layer] for h in hs_all]) for layer in range(layers)], torch.cat(logits_all)


@AUDITS.register("latent_probe")
@dataclass
class LatentProbe:
    """A tuned lens: per layer, a linear map of the hidden state, trained on the *target's*
    retain answers so that the output head reads the target's final prediction from that layer
    (Belrose et al. 2023). Applied to the audited model's hidden states on forget answers, it
    reports the answer probability each layer still encodes, through a probe the unlearning
    never saw. The score is the best layer."""

    target: str = ""  # set by the runner: the probe is trained on the target's states
    steps: int = 200
    lr: float = 1e-2

    weights: ClassVar[bool] = True  # reads or edits the weights: on a system, its base is audited
    description: ClassVar[str] = "linear probe (tuned lens) from the target's hidden states, layer by layer"
    paper: ClassVar[str] = "Belrose et al. 2023, Eliciting Latent Predictions with the Tuned Lens"

    def _train(self, states: torch.Tensor, final: torch.Tensor, norm, head) -> torch.nn.Linear:
        d = states.shape[1]
        probe = torch.nn.Linear(d, d).to(states.device)
        with torch.no_grad():  # start as the plain logit lens
            probe.weight.copy_(torch.eye(d))
            probe.bias.zero_()
        opt = torch.optim.Adam(probe.parameters(), lr=self.lr)
        target_logp = torch.log_softmax(final, -1)
        gen = torch.Generator().manual_seed(0)
        for _ in range(self.steps):
            idx = torch.randint(len(states), (min(256, len(states)),), generator=gen)
            logp = torch.log_softmax(head(norm(probe(states[idx]))).float(), -1)
            loss = (target_logp[idx].exp() * (target_logp[idx] - logp)).sum(-1).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
        return probe.eval()

    def run(self, model, tokenizer, data: AuditData) -> dict[str, float]:
        if not hasattr(model, "config") or getattr(getattr(model, "model", None), "norm", None) is None:
            raise NotApplicable("needs hidden states, a final norm and an output head")
        if not self.target:
            raise NotApplicable("needs the target model (the runner passes it)")
        target, ttok = _load_cached(self.target)
        norm, head = target.model.norm, target.get_output_embeddings()
        for p in (*norm.parameters(), *head.parameters()):
            p.requires_grad_(False)
        train_states, train_logits = _states_and_logits(target, ttok, data.retain, data.template)
        states, _ = _states_and_logits(model, tokenizer, data.forget, data.template)
        labels = torch.cat([torch.tensor([t for t in encode(tokenizer, ex, i, data.template).labels[1:]
                                          if t != -100]) for i, ex in enumerate(data.forget)])
        counts = [sum(t != -100 for t in encode(tokenizer, ex, i, data.template).labels[1:])
                  for i, ex in enumerate(data.forget)]
        out = {}
        try:
            for layer in range(1, len(states) - 1):  # the last layer is the model's own output
                with torch.enable_grad():
                    probe = self._train(train_states[layer], train_logits, norm, head)
                with torch.no_grad():
                    logp = torch.log_softmax(head(norm(probe(states[layer]))).float(), -1)
                    tok_lp = logp.gather(-1, labels.to(logp.device).unsqueeze(-1)).squeeze(-1)
                    per_item = [float(torch.exp(c.mean())) for c in torch.split(tok_lp, counts)]
                out[f"layer_{layer}"] = float(np.mean(per_item))
        finally:
            for p in (*norm.parameters(), *head.parameters()):
                p.requires_grad_(True)
        out["score"] = max(out.values())
        return out
