"""What every unlearning method shares: the registry, the context a step sees, the reference.

A method is a dataclass of hyper-parameters with a `loss(model, batches, ctx)` method and
class attributes: `description`, `needs` (what data and reference it uses, see NEEDS), `paper`
and `default_lr`. Optional hooks, found by name: `setup(model, ctx)` before training,
`target_modules(model, ctx)` (names of the modules that train), `finish(model, ctx)` after
training, an `optimizer` attribute (OptimConfig overrides) and a `forget_stop` attribute (the
guard's stop, see unlearning.GuardConfig). A method sees the run only through its Context:
the data, the cached reference, the number of data-parallel processes and the step's early
backward. No implementation inheritance between methods (ARCHITECTURE.md): shared math is in
objectives.py, shared plumbing is here, wrappers of a base method are in wrapping.py.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol

import numpy as np
import torch

from ..config import from_dict
from ..data.examples import Example
from ..encoding import DEFAULT_TEMPLATE, Encoded, collate, labelled_suffix
from ..errors import ObliviateError
from ..registry import Registry
from ..systems import forward_kwargs, forward_params, keeps_logits
from .objectives import (
    answer_logits,
    kl_to_reference,
    mean_nll,
    sequence_nll,
    summed_nll,
    token_logprobs,
)
from .passes import PassMeter, recomputed

NEEDS = {
    "forget": "forget set",
    "retain": "retain set",
    "refusal": "refusal texts (shipped with the package)",
    "general": "general-knowledge questions (shipped with the package)",
    "reference": "reference quantities on the forget set, computed once and cached (no model copy)",
    "reference_model": "live reference activations on changing inputs: a frozen copy of the "
                       "trained weights, or the base with the LoRA adapter disabled",
}


class Method(Protocol):
    description: ClassVar[str]
    needs: ClassVar[tuple[str, ...]]
    paper: ClassVar[str]
    default_lr: ClassVar[float]

    def loss(self, model, batches: dict[str, dict[str, torch.Tensor]],
             ctx: Context) -> tuple[torch.Tensor, dict[str, float]]: ...


METHODS: Registry[type] = Registry("method")


@dataclass
class Context:
    """Everything a method may use besides the model and the current batches.

    `items[name]` holds encoded items aligned with the forget set ('forget' itself, and 'idk':
    the forget questions with refusal answers): `ctx.pair(name, batch)` builds the batch of
    those items matching a forget batch.
    `cache` holds reference quantities computed before training; `state` is scratch space a
    method may update across steps (e.g. a dual variable), saved with checkpoints.
    `reference_model()` gives the model as it was before unlearning, without holding a second
    model when that can be avoided. During a step the training loop sets `world_size` (pass it
    to the objectives, which divide by the whole batch's count), `backward`, which
    `backward_now` uses, `mean_over_processes`, which `global_value` uses, and on one process
    `meter`, which tells `retain_term` when to recompute (passes.py).
    """

    pad_id: int = 0
    items: dict[str, list[Encoded]] = field(default_factory=dict)
    # the examples behind `items` and how they were encoded, to encode them another way
    examples: dict[str, list[Example]] = field(default_factory=dict)
    encoder: Callable[[Example, int, str], Encoded] | None = None
    tokenizer: Any = None  # the run's tokenizer (methods that read answers as tokens)
    template: str = DEFAULT_TEMPLATE  # the run's prompt template (methods that encode new answers)
    cache: dict[str, Any] = field(default_factory=dict)
    state: dict[str, Any] = field(default_factory=dict)
    grad_masks: dict[torch.nn.Parameter, torch.Tensor] = field(default_factory=dict)
    lora: bool = False
    seed: int = 0
    world_size: int = 1
    backward: Callable[[torch.Tensor], None] | None = None
    mean_over_processes: Callable[[torch.Tensor], torch.Tensor] | None = None
    meter: PassMeter | None = None  # during a one-process step: what each pass holds
    _snapshot: list[tuple[torch.nn.Parameter, torch.Tensor]] | None = None

    def global_value(self, term: torch.Tensor) -> float:
        """A shard's term as the whole batch's number: each process holds its shard's sum over
        the global count / world size, so the whole batch's value is the mean over processes.
        For decisions every process must take alike (a dual variable, a threshold)."""
        value = term.detach()
        if self.mean_over_processes is not None:
            value = self.mean_over_processes(value)
        return float(value)

    def backward_now(self, term: torch.Tensor) -> torch.Tensor:
        """Backpropagate `term` (one summand of the step's loss) now and return it detached:
        the step's gradient is unchanged (gradients add up) and the term's graph is freed
        before the next batch runs, so a two-batch loss peaks like a one-batch loss. Outside a
        training step it returns `term` as it is."""
        if self.backward is None or not term.requires_grad:
            return term
        self.backward(term)
        if self.meter is not None:
            self.meter.end_pass()
        return term.detach()

    def encoded(self, name: str, template: str, limit: int | None = None) -> list[Encoded]:
        """The first `limit` examples of stream `name` encoded with prompt `template` instead
        of the run's (a detector learning other ways of asking)."""
        if self.encoder is None or name not in self.examples:
            raise ObliviateError(f"stream {name!r} has no examples to encode again (a Context "
                                 f"built outside `unlearn` has none: give it `examples` and an "
                                 f"`encoder`, or turn off what needs them, e.g. o3's augment=[])")
        return [self.encoder(ex, i, template) for i, ex in enumerate(self.examples[name][:limit])]

    def batch_of(self, name: str, index: list[int], device: torch.device | str = "cpu") -> dict[str, torch.Tensor]:
        """A collated batch of items `index` of stream `name`."""
        items = self.items[name]
        return {k: v.to(device) for k, v in collate([items[i] for i in index], self.pad_id).items()}

    def pair(self, name: str, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The `name` items for the forget items of `batch`, in the same order."""
        return self.batch_of(name, batch["index"].tolist(), batch["input_ids"].device)

    def cached(self, key: str) -> Any:
        if key not in self.cache:
            raise RuntimeError(f"reference quantity '{key}' was not computed before training")
        return self.cache[key]

    def snapshot_reference(self, model) -> None:
        """Keep a copy of the trainable weights so `reference_model()` can swap them back in.
        Costs one copy of what trains (all weights for a full run, a few matrices for RMU);
        not needed under LoRA, where disabling the adapter gives the reference."""
        if not self.lora:
            self._snapshot = [(p, p.detach().clone()) for p in model.parameters() if p.requires_grad]

    @contextlib.contextmanager
    def reference_model(self, model) -> Iterator[Any]:
        """`model` computing as the reference (no grad), restored on exit even on error."""
        if self.lora:
            with torch.no_grad(), model.disable_adapter():
                yield model
            return
        if self._snapshot is None:
            raise RuntimeError("this method needs 'reference_model' but no snapshot was taken")
        # the snapshot follows the weights to their device once (accelerate moves the model)
        self._snapshot = [(p, ref if ref.device == p.device else ref.to(p.device))
                          for p, ref in self._snapshot]
        current = [p.data for p, _ in self._snapshot]
        try:
            for p, ref in self._snapshot:
                p.data = ref
            with torch.no_grad():
                yield model
        finally:
            for (p, _), data in zip(self._snapshot, current, strict=True):
                p.data = data


@contextlib.contextmanager
def eval_mode(model) -> Iterator[None]:
    """The model in eval mode for a measurement (no dropout), back in its mode afterwards."""
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


def forward(model, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Logits [batch, seq, vocab] of a collated batch (an unlearned system is also told where
    each prompt ends)."""
    return model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                 **forward_kwargs(model, batch)).logits


def layer_output(model, batch: dict[str, torch.Tensor], layer: int) -> torch.Tensor:
    """Output of decoder layer `layer` [batch, seq, d] (RMU's and LUNAR's hidden states). For
    the last layer transformers returns the state after the final norm."""
    out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                output_hidden_states=True)
    return out.hidden_states[layer + 1]  # hidden_states[0] is the embedding output


def batch_nll(model, batch: dict[str, torch.Tensor], world: int = 1) -> torch.Tensor:
    """Token-averaged NLL of a batch (scalar); `world` data-parallel shards share the count."""
    return mean_nll(*answer_forward(model, batch), world)


# Split a batch in two when that leaves at most this share of its padded width x rows
SPLIT_BELOW = 0.8


def length_split(mask: torch.Tensor) -> list[tuple[torch.Tensor, int]] | None:
    """The rows of a right-padded batch in two groups by length, each with its own width,
    when that computes at most SPLIT_BELOW of the batch's padded tokens; else None. A few
    long items in a batch of short ones would otherwise pad every row to their length (the
    built-in benchmark at batch 64: 2.3x the real tokens)."""
    lengths = mask.sum(1)
    n, width = len(lengths), int(lengths.max()) if len(lengths) else 0
    if n < 2:
        return None
    order = torch.argsort(lengths, stable=True)
    ranked = lengths[order].tolist()
    # the first k shortest rows at their longest row's width, the rest at the batch's
    k = min(range(1, n), key=lambda k: k * ranked[k - 1] + (n - k) * width)
    if k * ranked[k - 1] + (n - k) * width > SPLIT_BELOW * n * width:
        return None
    return [(order[:k].sort().values, ranked[k - 1]), (order[k:].sort().values, width)]


def split_batch_nll(model, batch: dict[str, torch.Tensor], world: int = 1) -> torch.Tensor:
    """batch_nll computed on length_split's groups (one forward each, trimmed to its own
    width): the same loss and gradient up to float rounding, with fewer padded tokens. Right
    padding only: a causal model's logits at real positions do not see the pads after them.
    One process only: under DDP every forward broadcasts buffers, so a process that split its
    shard of a batch while another did not would wait forever."""
    groups = length_split(batch["attention_mask"]) if world == 1 else None
    if groups is None or bool((batch["attention_mask"][:, 0] == 0).any()):  # left-padded
        return batch_nll(model, batch, world)
    parts = [summed_nll(*answer_forward(model, {k: v[rows, :width] if v.dim() == 2 else v[rows]
                                                 for k, v in batch.items()}))
             for rows, width in groups]
    return sum(nll for nll, _ in parts) / sum(n for _, n in parts).clamp(min=1)  # one process


def nll_gradients(model, items: list[Encoded], pad_id: int, params: list[torch.Tensor],
                  batch_size: int = 16) -> list[torch.Tensor]:
    """d(mean answer NLL over `items`)/dp for each of `params` (each batch weighted by its
    size), one backward per batch: the one-off gradients that SLUG, WAGLE and concept ablation
    score weights by. The params take gradients for the duration whatever trains later, and
    every .grad is cleared after."""
    if not params:
        raise ObliviateError("no weights to take the gradient of")
    flags = [p.requires_grad for p in params]
    device = params[0].device
    model.zero_grad(set_to_none=True)
    try:
        for p in params:
            p.requires_grad_(True)
        with torch.enable_grad():
            for start in range(0, len(items), batch_size):
                chunk = items[start:start + batch_size]
                batch = {k: v.to(device) for k, v in collate(chunk, pad_id).items()}
                (batch_nll(model, batch) * len(chunk) / len(items)).backward()
        return [p.grad.detach().clone() if p.grad is not None else torch.zeros_like(p) for p in params]
    finally:
        model.zero_grad(set_to_none=True)
        for p, flag in zip(params, flags, strict=True):
            p.requires_grad_(flag)


def answer_forward(model, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """(logits, labels) from the position predicting the batch's first answer token on: what
    a loss on answer tokens reads, without the output layer's work on the prompts."""
    labels, keep = labelled_suffix(batch["labels"], keeps_logits(model))
    if "use_cache" in forward_params(model):  # a loss reads no cache: none is built
        keep["use_cache"] = False
    return model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], **keep,
                 **forward_kwargs(model, batch)).logits, labels


def batch_seq_nll(model, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Summed answer NLL per sequence [batch]."""
    return sequence_nll(*answer_forward(model, batch))[0]


def answer_token_logprobs(model, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Log-probs of the labelled tokens of a batch, flattened [n_tokens] (token-weighted losses)."""
    logp, mask = token_logprobs(forward(model, batch), batch["labels"])
    return logp[mask]


def label_mask(batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """[batch, seq-1] True where position t predicts a labelled token t+1."""
    return batch["labels"][:, 1:] != -100


def retain_term(model, batch: dict[str, torch.Tensor], kind: str, ctx: Context,
                weight: float = 1.0) -> tuple[torch.Tensor, float]:
    """`weight` x the retain loss shared by GradDiff-style methods, for the step's loss, and the
    loss's own value. 'nll' descends on retain answers; after the forget term's early backward,
    when `ctx.meter` finds the gradients left too big to hold beside the retain batch's
    activations, its decoder layers recompute them in the backward (passes.py). 'kl':
    KL(p_ref || p_model) on retain answer positions (needs the reference model live, because
    the retain batches change every step)."""
    if kind == "nll":
        tight = ctx.meter is not None and ctx.meter.tight(batch)  # set only in a step
        with recomputed(model) if tight else contextlib.nullcontext():
            term = batch_nll(model, batch, ctx.world_size)
        return weight * term, float(term.detach())
    if kind == "kl":
        logits = forward(model, batch)
        with ctx.reference_model(model) as ref:
            ref_logits = forward(ref, batch)
        mask = label_mask(batch)
        term = kl_to_reference(logits[:, :-1], ref_logits[:, :-1], mask, ctx.world_size)
        return weight * term, float(term.detach())
    raise ValueError(f"unknown retain loss '{kind}' (nll or kl)")


def check_retain_kind(kind: str) -> None:
    if kind not in ("nll", "kl"):
        raise ObliviateError(f"retain_loss must be 'nll' or 'kl' (got '{kind}')")


def _batched_logits(model, items: list[Encoded], pad_id: int, batch_size: int) -> Iterator[
        tuple[dict[str, torch.Tensor], torch.Tensor]]:
    device = next(model.parameters()).device
    with torch.no_grad():
        for start in range(0, len(items), batch_size):
            batch = {k: v.to(device) for k, v in collate(items[start:start + batch_size], pad_id).items()}
            yield batch, forward(model, batch)


def cache_seq_nll(model, items: list[Encoded], pad_id: int, batch_size: int = 32) -> torch.Tensor:
    """Summed answer NLL of each item [n_items] under `model` as it is now (one no-grad pass)."""
    out = [sequence_nll(logits, batch["labels"])[0].float().cpu()
           for batch, logits in _batched_logits(model, items, pad_id, batch_size)]
    return torch.cat(out)


def answer_mean_nll(model, items: list[Encoded], pad_id: int, batch_size: int = 32) -> np.ndarray:
    """Token-averaged answer NLL of each item [n_items] (the LOSS attack's statistic)."""
    out = []
    for batch, logits in _batched_logits(model, items, pad_id, batch_size):
        total, count = sequence_nll(logits, batch["labels"])
        out.append((total / count.clamp(min=1)).double().cpu())
    return torch.cat(out).numpy() if out else np.zeros(0)


def mean_answer_prob(model, items: list[Encoded], pad_id: int, batch_size: int = 32) -> float:
    """Mean over items of exp(-token-averaged answer NLL): TOFU's normalised probability."""
    return float(np.exp(-answer_mean_nll(model, items, pad_id, batch_size)).mean())


def cache_answer_logits(model, items: list[Encoded], pad_id: int, batch_size: int = 16) -> list[torch.Tensor]:
    """Logits at each item's labelled positions, [n_labels_i, vocab] per item, on CPU.
    The forget set is fixed, so one pass replaces a frozen model copy (UNDIAL)."""
    out: list[torch.Tensor] = []
    for batch, logits in _batched_logits(model, items, pad_id, batch_size):
        for row in range(logits.size(0)):
            sel, _ = answer_logits(logits[row:row + 1], batch["labels"][row:row + 1])
            out.append(sel.float().cpu())
    return out


def typed_params(name: str, params: dict[str, Any], prefix: str = "params.") -> dict[str, Any]:
    """`params` (e.g. key=value text) checked against method `name` and converted to the
    declared types; a wrapper's base_params recursively."""
    method = build(name, params, prefix)
    out = {k: getattr(method, k) for k in params}
    if getattr(type(method), "wraps", False) and "base_params" in params:
        out["base_params"] = typed_params(method.base, method.base_params, f"{prefix}base_params.")
    return out


def build(name: str, params: dict[str, Any] | None = None, prefix: str = "params."):
    """An instance of method `name` from a dict of hyper-parameters (strict keys). A wrapper's
    base method is built too (as `inner`), so its parameters are checked at once."""
    method = from_dict(METHODS.get(name), params or {}, prefix=prefix)
    if getattr(type(method), "wraps", False):
        method.inner = build(method.base, method.base_params, prefix=f"{prefix}base_params.")
    return method
