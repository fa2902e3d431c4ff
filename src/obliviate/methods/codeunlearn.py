"""CodeUnlearn: a sparse codebook bottleneck at one layer; unlearning removes codes."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from ..encoding import Encoded, collate
from ..errors import ObliviateError
from ..systems import SYSTEMS, System, lm_step, positions, scoring_positions
from .base import METHODS, Context, eval_mode, mean_answer_prob


class Codebook(torch.nn.Module):
    """A top-k sparse autoencoder over one layer's hidden states [.., d]: codes
    z = topk(relu((h - b_dec) W_enc + b_enc), k), reconstruction z W_dec + b_dec. `keep` [codes]
    is 1 for a code in use and 0 for a removed one; a removed code never reaches the output."""

    def __init__(self, width: int, codes: int, k: int) -> None:
        super().__init__()
        self.k = k
        for name, shape in (("enc", (width, codes)), ("enc_bias", (codes,)), ("dec", (codes, width)),
                            ("dec_bias", (width,))):
            self.register_parameter(name, torch.nn.Parameter(torch.zeros(shape)))
        self.register_parameter("keep", torch.nn.Parameter(torch.ones(codes), requires_grad=False))
        # 0 until fitted: an unfitted codebook passes the states through (a guard measuring
        # the system before the fit, or a last-good copy, sees the base, not a zeroed layer)
        self.register_parameter("fitted", torch.nn.Parameter(torch.zeros(()), requires_grad=False))

    def codes(self, h: torch.Tensor) -> torch.Tensor:
        """Sparse codes [.., codes] of hidden states [.., d] (float32)."""
        pre = torch.relu((h.float() - self.dec_bias) @ self.enc + self.enc_bias)
        top = pre.topk(self.k, dim=-1)
        return torch.zeros_like(pre).scatter(-1, top.indices, top.values)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        if not bool(self.fitted):
            return h
        return ((self.codes(h) * self.keep) @ self.dec + self.dec_bias).to(h.dtype)


def decoder_layers(base) -> torch.nn.ModuleList:
    layers = getattr(getattr(base, "model", None), "layers", None)
    if layers is None:
        raise ObliviateError("codeunlearn needs a decoder stack at model.layers (a Llama-style model)")
    return layers


@SYSTEMS.register("codeunlearn")
class CodebookSystem(System):
    """The base with layer `layer`'s output replaced by its codebook reconstruction, always
    (the bottleneck is part of the model; removed codes carry nothing past it)."""

    kind: ClassVar[str] = "codeunlearn"
    threat: ClassVar[str] = ("access to the base weights (without the bottleneck, the layer's "
                             "full state and everything the removed codes held pass through)")

    def __init__(self, base, settings: dict[str, Any]) -> None:
        super().__init__(base, settings)
        self.layer = int(settings["layer"])
        n = base.config.num_hidden_layers
        if not 0 <= self.layer < n - 1:
            raise ValueError(f"codebook layer {self.layer} must be below the last layer (0..{n - 2})")
        self.parts["codebook"] = Codebook(base.config.hidden_size, int(settings["codes"]), int(settings["k"]))

    @contextlib.contextmanager
    def bottleneck(self) -> Iterator[None]:
        """The codebook in place of layer `layer`'s output, for the calls inside."""
        book = self.parts["codebook"]

        def hook(_module, _args, out):
            if isinstance(out, tuple):
                return (book(out[0]), *out[1:])
            return book(out)

        handle = decoder_layers(self.base)[self.layer].register_forward_hook(hook)
        try:
            yield
        finally:
            handle.remove()

    def prefill(self, ids, mask, prompt_mask, use_cache, part: str | None = None):
        pos = positions(mask) if use_cache else scoring_positions(mask)
        if part == "base":
            return lm_step(self.base, mask, ids=ids, pos=pos)[0], None
        with self.bottleneck():
            logits, cache = lm_step(self.base, mask, ids=ids, pos=pos, use_cache=use_cache)
        return logits, self.base_state(mask, cache)

    def decode(self, ids, state):
        with self.bottleneck():
            return super().decode(ids, state)


def _states(base, items: list[Encoded], pad_id: int, layer: int) -> list[torch.Tensor]:
    """Layer `layer`'s hidden states at each item's real tokens, [n_tokens_i, d] per item."""
    device = next(base.parameters()).device
    out = []
    with torch.no_grad():
        for s in range(0, len(items), 32):
            b = collate(items[s:s + 32], pad_id)
            hs = base(input_ids=b["input_ids"].to(device), attention_mask=b["attention_mask"].to(device),
                      output_hidden_states=True).hidden_states[layer + 1]
            out += [h[m.bool()].float() for h, m in zip(hs, b["attention_mask"].to(device), strict=True)]
    return out


@METHODS.register("codeunlearn")
@dataclass
class CodeUnlearn:
    """A top-k sparse autoencoder (`codes` codes, `k` active) is trained on layer `layer`'s
    hidden states over the forget and retain sets (everything the model was trained on that
    the run sees) and put in place of that layer's output for good. Unlearning then trains
    nothing: codes are ranked by how much more often they fire on the forget set than on the
    retain set, and the fewest top-ranked ones whose removal takes the forget set's answer
    probability to the target (the holdout's level when the run has one, else `forget_ratio`
    times its level with the bottleneck) are removed, found by bisection over the count. The
    model's weights never change; the system is the base plus the codebook."""

    layer: int = -1  # -1: the middle of the stack, (layers - 1) // 2
    codes: int = 0  # 0: 8 x the hidden width
    k: int = 32
    sae_steps: int = 1500
    sae_lr: float = 1e-3
    forget_ratio: float = 0.5
    max_remove: float = 0.25  # at most this fraction of the codes is removed
    probe_items: int = 64
    seed: int = 0

    description: ClassVar[str] = ("CodeUnlearn: a sparse codebook bottleneck at one layer; the codes "
                                  "the forget set fires are removed, no training")
    needs: ClassVar[tuple[str, ...]] = ("forget", "retain")
    paper: ClassVar[str] = ("Wu et al. 2024, CodeUnlearn: Amortized Zero-Shot Machine Unlearning "
                            "in Language Models Using Discrete Concept")
    default_lr: ClassVar[float] = 1.0  # unused: the codebook has its own sae_lr, removal no steps
    system: ClassVar[str] = "codeunlearn"

    def __post_init__(self) -> None:
        checks = {"k": self.k >= 1, "codes": self.codes == 0 or self.codes >= self.k,
                  "sae_steps": self.sae_steps >= 1, "sae_lr": 0 < self.sae_lr <= 100,
                  "forget_ratio": 0 < self.forget_ratio < 1, "max_remove": 0 < self.max_remove <= 1,
                  "probe_items": self.probe_items >= 1, "layer": self.layer >= -1}
        for key, ok in checks.items():
            if not ok:
                raise ObliviateError(f"codeunlearn {key} out of range (got {getattr(self, key)}); "
                                     "layer: -1 (the middle) or a layer index")

    def build_system(self, model, ctx: Context) -> CodebookSystem:
        decoder_layers(model)  # a Llama-style stack, checked before any fitting
        n = model.config.num_hidden_layers
        layer = self.layer if self.layer >= 0 else (n - 1) // 2
        if not 0 <= layer < n - 1:
            raise ObliviateError(f"codeunlearn layer {layer} must be below the last layer (0..{n - 2})")
        codes = self.codes or 8 * model.config.hidden_size
        if codes < self.k:
            raise ObliviateError(f"codeunlearn needs at least k={self.k} codes (got {codes})")
        return CodebookSystem(model, {"layer": layer, "codes": codes, "k": self.k})

    def fit(self, system: CodebookSystem, ctx: Context) -> list[dict[str, float]]:
        forget = _states(system.base, ctx.items["forget"], ctx.pad_id, system.layer)
        retain = _states(system.base, ctx.items["retain"], ctx.pad_id, system.layer)
        book = system.parts["codebook"]
        mse = self._train(book, torch.cat(forget + retain))
        order = _ranking(book, forget, retain)
        probe_f, probe_r = ctx.items["forget"][:self.probe_items], ctx.items["retain"][:self.probe_items]
        with torch.no_grad(), eval_mode(system):
            start_f = mean_answer_prob(system, probe_f, ctx.pad_id)
            base_r = mean_answer_prob(system, probe_r, ctx.pad_id)
            target = (mean_answer_prob(system, ctx.items["holdout"], ctx.pad_id)
                      if ctx.items.get("holdout") else self.forget_ratio * start_f)
            removed, f = self._remove(system, order, probe_f, target, ctx.pad_id)
            r = mean_answer_prob(system, probe_r, ctx.pad_id)
        return [{"loss": f, "reconstruction_mse": mse, "removed": float(removed), "forget_prob": f,
                 "forget_start": start_f, "forget_target": target,
                 # not reached within max_remove: the most it may remove, as a step budget runs out
                 "target_reached": float(f <= target),
                 "retain_prob_bottleneck": base_r, "retain_prob": r}]

    def _train(self, book: Codebook, states: torch.Tensor) -> float:
        """Fit the codebook to `states` [n, d] (relative MSE); returns the final relative MSE."""
        gen = torch.Generator().manual_seed(self.seed)
        width, codes = book.enc.shape
        with torch.no_grad():
            dec = torch.randn(codes, width, generator=gen)
            book.dec.copy_(dec / dec.norm(dim=1, keepdim=True))
            book.enc.copy_(book.dec.T)
            book.dec_bias.copy_(states.mean(0))
            book.fitted.fill_(1.0)  # from here on the codebook is in the path it is fit for
        states = states.to(book.enc.device)
        scale = float(((states - states.mean(0)) ** 2).sum(-1).mean()) or 1.0
        opt = torch.optim.Adam([book.enc, book.enc_bias, book.dec, book.dec_bias], lr=self.sae_lr)
        loss = torch.tensor(0.0)
        with torch.enable_grad():
            for _ in range(self.sae_steps):
                idx = torch.randint(len(states), (min(1024, len(states)),), generator=gen)
                h = states[idx.to(states.device)]
                loss = ((book(h) - h) ** 2).sum(-1).mean() / scale
                opt.zero_grad()
                loss.backward()
                opt.step()
        with torch.no_grad():
            err = sum(float(((book(c) - c) ** 2).sum()) for c in states.split(4096))
        return err / len(states) / scale

    def _remove(self, system: CodebookSystem, order: list[int], probe, target: float,
                pad_id: int) -> tuple[int, float]:
        """Remove the fewest codes of `order` whose removal reaches `target` (bisection over
        the count, up to max_remove of all codes): (count, forget prob)."""
        keep = system.parts["codebook"].keep

        def at(count: int) -> float:
            keep.fill_(1.0)
            keep[order[:count]] = 0.0
            return mean_answer_prob(system, probe, pad_id)

        lo, hi = 0, max(1, int(self.max_remove * keep.numel()))
        f_hi = at(hi)
        if f_hi <= target:
            while hi - lo > 1:
                mid = (lo + hi) // 2
                f_mid = at(mid)
                if f_mid <= target:
                    hi, f_hi = mid, f_mid
                else:
                    lo = mid
        at(hi)
        return hi, f_hi


def _ranking(book: Codebook, forget: list[torch.Tensor], retain: list[torch.Tensor]) -> list[int]:
    """Codes by how much more often they fire on the forget set's tokens than on the retain
    set's (firing frequency, forget minus retain), highest first."""
    def firing(states: list[torch.Tensor]) -> torch.Tensor:  # chunked: [tokens, codes] stays small
        with torch.no_grad():
            tokens = torch.cat(states)
            counts = sum((book.codes(c.to(book.enc.device)) > 0).float().sum(0) for c in tokens.split(4096))
        return counts / max(len(tokens), 1)

    return torch.argsort(firing(forget) - firing(retain), descending=True).tolist()
