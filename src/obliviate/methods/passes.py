"""Two-pass steps within one pass's memory.

Most methods take a forget term and a retain term on two batches. The forget term is
backpropagated before the retain batch runs (Context.backward_now), so the activations of the
two batches are never held together. But the retain pass then runs on top of the gradients the
forget pass left: with full weights that is one more copy of the model (540 MB for SmolLM2-135M)
that a one-pass method such as gradient ascent never holds beside a whole batch's activations.
So when the retain pass's activations plus those gradients would exceed the forget pass's
activations by a material share of the process's memory, the retain pass keeps only each
decoder layer's input and recomputes the layer in its backward (activation checkpointing for
that pass alone): one more forward of the retain batch, about a sixth of the step, and the same
gradients (`optim.recompute_retain=false` turns it off). The decision comes from what the forget
pass of the same step measured: the bytes autograd saved for its backward (weights excluded)
and the tokens it read. Between the passes the freed pages go back to the system: glibc keeps
freed heap memory otherwise, and the retain pass's allocations then land on top of it. Row
chunks were measured too and lose: the gradients of SmolLM2-135M outweigh a batch of 8's
activations, so only one-row chunks reach the bound, at twice the step time.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import functools
import sys
from collections.abc import Iterator

import torch

# Recompute the second pass when it would raise the step's peak by more than this share of the
# process's peak resident memory so far; below that the extra forward costs more than it saves
RECOMPUTE_ABOVE = 0.05


def peak_bytes(device: torch.device) -> int:
    """The peak memory so far where the weights live: a CUDA device's peak allocation, or the
    process's peak resident memory (ru_maxrss: KiB on Linux, bytes on macOS; 0 where the
    platform does not report it)."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device)
    try:
        import resource
    except ImportError:  # Windows
        return 0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024


@functools.cache
def _malloc_trim():
    """glibc's malloc_trim, or None (another C library, another system)."""
    try:
        return getattr(ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6"), "malloc_trim", None)
    except OSError:
        return None


def release_freed() -> None:
    """Return the C heap's free pages to the system (glibc; a no-op elsewhere)."""
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


def worth_metering(model) -> bool:
    """Whether recomputing a second pass could ever pay: the gradients it would run beside
    (the trainable weights' bytes) exceed RECOMPUTE_ABOVE of the peak memory. Not for a tiny
    model or a LoRA adapter, which then pay nothing for the meter's hook on every saved tensor."""
    trainable = [p for p in model.parameters() if p.requires_grad]
    grads = sum(p.numel() * p.element_size() for p in trainable)
    return bool(trainable) and grads > RECOMPUTE_ABOVE * peak_bytes(trainable[0].device)


class PassMeter:
    """Bytes autograd saves for backward (activations: storages other than the model's weights,
    each counted once) and input tokens the model reads, pass by pass: `end_pass()` after each
    early backward keeps the finished pass's (`last`) and counts the next from zero. Use as a
    context manager around a step's loss. `recompute` False: `tight` always says no."""

    def __init__(self, model, recompute: bool = True) -> None:
        self.model, self.recompute = model, recompute
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.weights = {p.untyped_storage().data_ptr() for p in model.parameters()}
        self.saved: set[int] = set()
        self.bytes = self.tokens = 0
        self.last = (0, 0)  # (bytes, tokens) of the last finished pass
        self._hooks = torch.autograd.graph.saved_tensors_hooks(self._pack, lambda t: t)
        self._handle = None

    def _pack(self, t: torch.Tensor) -> torch.Tensor:
        try:
            storage = t.untyped_storage()
        except (RuntimeError, NotImplementedError):  # a tensor without a plain storage
            return t
        ptr = storage.data_ptr()
        if ptr not in self.weights and ptr not in self.saved:
            self.saved.add(ptr)
            self.bytes += storage.nbytes()
        return t

    def _count_tokens(self, module, args, kwargs) -> None:
        ids = kwargs.get("input_ids", args[0] if args else None)
        if isinstance(ids, torch.Tensor):
            self.tokens += ids.numel()

    def end_pass(self) -> None:
        """A backward freed the pass's activations: keep its measure, count the next from zero,
        and hand the freed pages back before the next pass allocates."""
        if self.bytes:
            self.last = (self.bytes, self.tokens)
            release_freed()
        self.saved.clear()
        self.bytes = self.tokens = 0

    def __enter__(self) -> PassMeter:
        self._handle = self.model.register_forward_pre_hook(self._count_tokens, with_kwargs=True)
        self._hooks.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        # the step's last pass is backpropagated after the block, by the training loop
        self._hooks.__exit__(*exc)
        self._handle.remove()
        self.saved.clear()

    def tight(self, batch: dict[str, torch.Tensor]) -> bool:
        """Whether a second pass over `batch`, after the first pass's backward, should recompute
        its activations: its estimated activations (the first pass's bytes per token x its
        tokens) on top of the gradients now held would exceed the first pass's activations by
        more than RECOMPUTE_ABOVE of the peak memory so far
        (on the device that holds the weights)."""
        first, tokens = self.last
        if not self.recompute or not self.params or first == 0 or tokens == 0:
            return False
        grads = sum(p.grad.nbytes for p in self.params if p.grad is not None)
        second = first * batch["input_ids"].numel() / tokens
        return grads + second - first > RECOMPUTE_ABOVE * peak_bytes(self.params[0].device)


@contextlib.contextmanager
def recomputed(model) -> Iterator[bool]:
    """Within the block each transformers decoder layer of `model` keeps only its input for the
    backward and runs again there (non-reentrant checkpointing: no input needs a gradient, so
    LoRA and frozen embeddings work; the backward may come after the block). Yields False, and
    changes nothing, when the model has no such layers or already recomputes them."""
    from torch.utils.checkpoint import checkpoint
    from transformers.modeling_layers import GradientCheckpointingLayer

    layers = [m for m in model.modules() if isinstance(m, GradientCheckpointingLayer)]
    if not layers or any(m.gradient_checkpointing for m in layers):
        yield False
        return
    func = functools.partial(checkpoint, use_reentrant=False)
    saved = [{k: m.__dict__[k] for k in ("gradient_checkpointing", "_gradient_checkpointing_func")
              if k in m.__dict__} for m in layers]
    try:
        for m in layers:
            m.gradient_checkpointing, m._gradient_checkpointing_func = True, func
        yield True
    finally:
        for m, before in zip(layers, saved, strict=True):
            for k in ("gradient_checkpointing", "_gradient_checkpointing_func"):
                m.__dict__.pop(k, None)
            m.__dict__.update(before)
