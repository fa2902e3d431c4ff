"""MLP value vectors tied to a set of tokens (ConceptVectors, Hong et al. 2024).

A down-projection's column j is what the MLP adds to the residual stream when its neuron j
fires; projected through the output head it reads as a distribution over the vocabulary. The
columns whose projection most promotes a concept's tokens are its "concept vectors". The
parametric-trace audit measures how far they moved; concept-vector ablation edits them. Both
locate them here, so the audit traces exactly what the method would edit.
"""

from __future__ import annotations

import torch

from .data.examples import Example

DOWN_PROJ = "mlp.down_proj"


def answer_token_ids(tokenizer, examples: list[Example]) -> list[int]:
    """The distinct token ids of the examples' answers, as the model reads them."""
    return sorted({t for ex in examples for t in tokenizer.encode(ex.answer, add_special_tokens=False)})


@torch.no_grad()
def value_vectors(model, token_ids: list[int], top: int) -> list[tuple[float, str, int]]:
    """The `top` down-projection columns, over all layers, whose vocabulary projection gives
    `token_ids` the highest mean logit: (score, module name, column), best first."""
    if not token_ids:
        raise ValueError("no tokens to locate value vectors for (empty answers)")
    head = model.get_output_embeddings().weight.detach().float()  # [vocab, d]
    rows = head[torch.tensor(token_ids, device=head.device)]  # [n_ids, d]
    picked: list[tuple[float, str, int]] = []
    for name, mod in model.named_modules():
        if name.endswith(DOWN_PROJ) and hasattr(mod, "weight"):
            cols = mod.weight.detach().float().to(rows.device)  # [d, intermediate]
            promote = (rows @ cols).mean(0)  # [intermediate]
            best = torch.topk(promote, min(top, promote.numel()))
            picked += [(float(s), name, int(j)) for s, j in zip(best.values, best.indices, strict=True)]
    return sorted(picked, key=lambda x: -x[0])[:top]
