"""SPUL: learned soft-prompt tokens prepended to every query; the model stays frozen."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from ..errors import ObliviateError
from ..systems import SYSTEMS, System, lm_step, positions
from .base import METHODS, Context, label_mask
from .objectives import kl_to_reference, mean_nll

MAX_TOKENS = 4096  # a soft prompt longer than this is a typo, not a prompt


@SYSTEMS.register("spul")
class SoftPromptSystem(System):
    """The base model reading `tokens` learned embeddings before every input."""

    kind: ClassVar[str] = "spul"
    threat: ClassVar[str] = ("access to the base weights, or to the model without its soft prompt "
                             "(the base answers as before)")

    def __init__(self, base, settings: dict[str, Any]) -> None:
        super().__init__(base, settings)
        table = base.get_input_embeddings().weight
        self.parts["prompt"] = torch.nn.Embedding(int(settings["tokens"]), table.shape[1],
                                                  dtype=table.dtype)

    def prefill(self, ids, mask, prompt_mask, use_cache, part: str | None = None):
        if part == "base":
            return lm_step(self.base, mask, ids=ids)[0], None
        soft = self.parts["prompt"].weight  # [tokens, d]
        n = soft.shape[0]
        embeds = torch.cat([soft.unsqueeze(0).expand(len(ids), -1, -1).to(self.device),
                            self.base.get_input_embeddings()(ids)], dim=1)
        full = torch.cat([torch.ones(len(ids), n, dtype=mask.dtype, device=mask.device), mask], 1)
        # the soft tokens open every row, so padding after them needs explicit positions
        logits, cache = lm_step(self.base, full, embeds=embeds, pos=positions(full),
                                use_cache=use_cache)
        return logits[:, n:], self.base_state(full, cache)


@METHODS.register("spul")
@dataclass
class SPUL:
    """Soft prompting for unlearning: `tokens` prompt embeddings, prepended to every query,
    are the only trained parameters. Losses as in the paper: the forget questions are trained
    towards generic labels (the shipped refusals), the retain set keeps its answers (NLL) and
    the base's output distribution (KL from the frozen base, which is the exact reference:
    no copy is needed). The prompt starts from the embeddings of randomly drawn vocabulary
    tokens."""

    tokens: int = 32
    alpha: float = 1.0  # retain NLL weight
    gamma: float = 1.0  # retain KL weight
    seed: int = 0

    description: ClassVar[str] = ("soft prompt: learned prompt embeddings prepended to every "
                                  "query make the frozen model forget (weights untouched)")
    needs: ClassVar[tuple[str, ...]] = ("forget", "retain", "refusal")
    paper: ClassVar[str] = "Bhaila et al. 2024, Soft Prompting for Unlearning in Large Language Models"
    default_lr: ClassVar[float] = 0.1
    system: ClassVar[str] = "spul"

    def __post_init__(self) -> None:
        if not 1 <= self.tokens <= MAX_TOKENS:
            raise ObliviateError(f"spul tokens must be in 1..{MAX_TOKENS} (got {self.tokens})")
        if self.alpha < 0 or self.gamma < 0:
            raise ObliviateError(f"spul alpha and gamma must be >= 0 (got {self.alpha}, {self.gamma})")

    def build_system(self, model, ctx: Context) -> SoftPromptSystem:
        system = SoftPromptSystem(model, {"tokens": self.tokens})
        table = model.get_input_embeddings().weight
        pick = torch.randint(table.shape[0], (self.tokens,),
                             generator=torch.Generator().manual_seed(self.seed))
        with torch.no_grad():
            system.parts["prompt"].weight.copy_(table[pick.to(table.device)].cpu())
        return system

    def loss(self, model, batches, ctx: Context):
        idk = ctx.pair("idk", batches["forget"])
        forget = mean_nll(model(input_ids=idk["input_ids"], attention_mask=idk["attention_mask"]).logits,
                          idk["labels"], ctx.world_size)
        info = {"generic_nll": float(forget.detach())}
        forget = ctx.backward_now(forget)
        r = batches["retain"]
        logits = model(input_ids=r["input_ids"], attention_mask=r["attention_mask"]).logits
        with torch.no_grad():
            ref = model(input_ids=r["input_ids"], attention_mask=r["attention_mask"], part="base").logits
        nll = mean_nll(logits, r["labels"], ctx.world_size)
        kl = kl_to_reference(logits[:, :-1], ref[:, :-1], label_mask(r), ctx.world_size)
        info.update(retain_nll=float(nll.detach()), retain_kl=float(kl.detach()))
        return forget + self.alpha * nll + self.gamma * kl, info
