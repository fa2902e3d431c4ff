"""O3: an out-of-distribution detector gates one orthogonal LoRA per request; weights stay."""

from __future__ import annotations

import contextlib
import math
import string
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from ..errors import ObliviateError
from ..systems import (
    SYSTEMS,
    System,
    gate_features,
    lm_step,
    positions,
    prompt_features,
    prompt_window,
    scoring_positions,
)
from .base import METHODS, Context, batch_nll, batch_seq_nll
from .objectives import npo


def _key(name: str) -> str:
    return name.replace(".", "__")  # module names as ModuleDict keys


class Adapter(torch.nn.Module):
    """One request's low-rank update of one Linear: delta(x) = (x A^T) B^T * scale. While it
    trains, A is projected onto the orthogonal complement of the earlier requests' A rows
    (`basis`), so the update lives in input directions no earlier request uses."""

    def __init__(self, d_in: int, d_out: int, rank: int) -> None:
        super().__init__()
        self.A = torch.nn.Parameter(torch.zeros(rank, d_in))
        self.B = torch.nn.Parameter(torch.zeros(d_out, rank))
        self.basis: torch.Tensor | None = None  # [d_in, k] orthonormal, while training only

    def down(self) -> torch.Tensor:
        if self.basis is None:
            return self.A
        return self.A - (self.A @ self.basis) @ self.basis.T

    def bake(self) -> None:
        """Store the projected A itself (the saved adapter needs no basis)."""
        with torch.no_grad():
            self.A.copy_(self.down())
        self.basis = None


class Detector(torch.nn.Module):
    """Per view and layer a linear score of the standardised pooled prompt state (local: a
    logistic classifier of the request's forget prompts against negatives); a view's score is
    the mean of its layers' logits (global). A view's gate is 0 at or below its `low`, 1 at or
    above its `high`, linear between; the detector's gate is the widest open of its views (one
    view per way of asking the detector was fit on: the training template alone, and that
    template with others)."""

    def __init__(self, layers: int, width: int, views: int = 1) -> None:
        super().__init__()
        for name, shape in (("weight", (views, layers, width)), ("bias", (views, layers)),
                            ("mean", (views, layers, width)), ("scale", (views, layers, width)),
                            ("bounds", (views, 2))):
            init = torch.ones(shape) if name == "scale" else torch.zeros(shape)
            self.register_parameter(name, torch.nn.Parameter(init, requires_grad=False))

    def score(self, feats: torch.Tensor, view: int | None = None) -> torch.Tensor:
        """feats [batch, layers, d] -> [batch, views], or [batch] for one `view`."""
        if view is not None:
            z = (feats.float() - self.mean[view]) / self.scale[view]
            return ((z * self.weight[view]).sum(-1) + self.bias[view]).mean(-1)
        z = (feats.float()[:, None] - self.mean) / self.scale
        return ((z * self.weight).sum(-1) + self.bias).mean(-1)

    def gate(self, feats: torch.Tensor) -> torch.Tensor:
        low, high = self.bounds[:, 0], self.bounds[:, 1]
        ramps = ((self.score(feats) - low) / (high - low).clamp(min=1e-6)).clamp(0.0, 1.0)
        return ramps.amax(-1)


@SYSTEMS.register("o3")
class O3System(System):
    """The base plus, per request, a detector and an adapter on every target Linear; each
    request's adapter is scaled per input by its detector's gate (0: the base exactly). The
    base's own pass over a batch gives the gates' features (rows whose prompt is more than
    the question are re-encoded for them); only the rows some gate opens run again, with the
    adapters, so a batch of unrelated plain questions costs one pass."""

    kind: ClassVar[str] = "o3"
    threat: ClassVar[str] = ("access to the base weights, or a question the detector scores as "
                             "unrelated (with its gate shut the untouched model answers)")

    def __init__(self, base, settings: dict[str, Any]) -> None:
        super().__init__(base, settings)
        if "prototypes" in settings or "views" not in settings:  # earlier versions' detectors
            kind = "prototype" if "prototypes" in settings else "single-view"
            raise ValueError(f"this O3 system was saved with {kind} detectors, which this "
                             "version no longer reads; unlearn again from its base")
        self.requests, rank = int(settings["requests"]), int(settings["rank"])
        self.scale = float(settings["alpha"]) / rank
        self.targets = list(settings["targets"])
        self.window = int(settings.get("window", 0))
        self._by_name = dict(base.named_modules())  # the target Linears, by name
        layers, width = base.config.num_hidden_layers, base.config.hidden_size
        for r in range(self.requests):
            self.parts[f"adapters_{r}"] = torch.nn.ModuleDict({
                _key(n): Adapter(self._by_name[n].in_features, self._by_name[n].out_features, rank)
                for n in self.targets})
            self.parts[f"detector_{r}"] = Detector(layers, width, int(settings["views"]))
        self._stacked: tuple[tuple, dict] | None = None  # see _stacks()

    def layers(self) -> list[int]:
        return list(range(1, self.base.config.num_hidden_layers + 1))

    def row_scales(self, gates: torch.Tensor) -> torch.Tensor:
        """Gates [batch, requests] -> each row's factor per adapter rank, gate * alpha / rank,
        laid out as the stacked adapters are [batch, 1, requests * rank]."""
        rank = self.parts["adapters_0"][_key(self.targets[0])].A.shape[0]
        return (gates * self.scale).repeat_interleave(rank, dim=1)[:, None, :]

    @contextlib.contextmanager
    def gated(self, scales: torch.Tensor) -> Iterator[None]:
        """The adapters on for one call, each row scaled by its row_scales."""
        scales = scales.to(self.base.dtype)
        handles = [self._by_name[n].register_forward_hook(_hook(down, up, scales))
                   for n, (down, up) in self._stacks().items()]
        try:
            yield
        finally:
            for h in handles:
                h.remove()

    def _stacks(self) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        """Per target, every request's adapter side by side in the base's dtype: (down [d_in,
        requests*rank], up [requests*rank, d_out]), so one call adds all of them at once. While
        gradients flow (training) they are built live; otherwise kept until an adapter changes:
        the key is each tensor's storage and version (an optimiser step, a load, a swap of
        `.data` or a move to another device or dtype all change it)."""
        dtype = self.base.dtype

        def build() -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
            adapters = [self.parts[f"adapters_{r}"] for r in range(self.requests)]
            return {n: (torch.cat([a[_key(n)].down() for a in adapters]).T.to(dtype),
                        torch.cat([a[_key(n)].B for a in adapters], 1).T.to(dtype))
                    for n in self.targets}

        if torch.is_grad_enabled():
            return build()
        key = (dtype, *((p.data_ptr(), p._version) for p in self.parts.parameters()))
        if self._stacked is None or self._stacked[0] != key:
            self._stacked = (key, build())
        return self._stacked[1]

    def prefill(self, ids, mask, prompt_mask, use_cache, part: str | None = None):
        pos = positions(mask) if use_cache else scoring_positions(mask)
        if part == "adapter":  # training: the newest request's adapter fully on, the rest off
            gates = torch.zeros(len(ids), self.requests, device=ids.device)
            gates[:, -1] = 1.0
            with self.gated(self.row_scales(gates)):
                return lm_step(self.base, mask, ids=ids, pos=pos)[0], None
        feats, base_out = gate_features(self.base, ids, mask, prompt_mask, self.layers(),
                                        self.window, pos, use_cache)
        gates = torch.stack([self.parts[f"detector_{r}"].gate(feats) for r in range(self.requests)], 1)
        gates = gates.nan_to_num(0.0)  # a non-finite score opens nothing
        opened = torch.nonzero((gates > 0).any(1)).flatten()
        scales = self.row_scales(gates)
        if not len(opened):  # every gate shut: the base as it is
            logits, cache = base_out or lm_step(self.base, mask, ids=ids, pos=pos, use_cache=use_cache)
            return logits, self.base_state(mask, cache)
        if base_out is not None and 2 * len(opened) <= len(ids) and _rows_writable(base_out[1]):
            # Only the open rows run again, with their adapters; the base's pass holds the rest.
            # (With more than half open, one gated pass over all rows after freeing the base's
            # keeps the peak memory of one pass.)
            logits, cache = base_out
            sub = None if pos is None else pos[opened]
            with self.gated(scales[opened]):
                part_logits, part_cache = lm_step(self.base, mask[opened], ids=ids[opened],
                                                  pos=sub, use_cache=use_cache)
            logits[opened] = part_logits
            if cache is not None:
                _write_rows(cache, part_cache, opened)
        else:
            del base_out  # not needed: free its logits and cache before the gated pass
            with self.gated(scales):
                logits, cache = lm_step(self.base, mask, ids=ids, pos=pos, use_cache=use_cache)
        return logits, {**self.base_state(mask, cache), "scales": scales}

    def decode(self, ids, state):
        if "scales" not in state:
            return super().decode(ids, state)
        with self.gated(state["scales"]):
            return super().decode(ids, state)


def _hook(down: torch.Tensor, up: torch.Tensor, scales: torch.Tensor):
    """A forward hook adding the stacked adapters' update, scaled per row, to a Linear's output
    (a shut row's scales are 0: while the update is finite its output stays the base's bit
    for bit)."""
    def add(module, args, out):
        return out + ((args[0] @ down) * scales) @ up
    return add


def _rows_writable(cache: Any) -> bool:
    """Whether a KV cache's rows can be overwritten in place: transformers' plain and
    sliding-window dynamic layers, whose whole state per row is its keys and values (a
    recurrent or indexed layer holds more; such a model takes one gated pass instead)."""
    from transformers.cache_utils import DynamicLayer, DynamicSlidingWindowLayer

    return cache is None or all(type(layer) in (DynamicLayer, DynamicSlidingWindowLayer)
                                and torch.is_tensor(layer.keys)
                                for layer in getattr(cache, "layers", [None]))


def _write_rows(cache: Any, part: Any, rows: torch.Tensor) -> None:
    """Put `part`'s cache (a run over `rows` of the same batch, same columns) into those rows."""
    for whole, sub in zip(cache.layers, part.layers, strict=True):
        at = rows.to(whole.keys.device)
        whole.keys[at] = sub.keys
        whole.values[at] = sub.values


# Ways of asking the second view learns besides the training template: a chat-style turn, a
# sentence around the question, a markdown heading (the rephrase audit's templates are others).
AUGMENT = ("User: {question}\nAssistant: ", "Here is a question: {question}\nThe answer: ",
           "### Question\n{question}\n### Answer\n")


def _one_question_slot(template: Any) -> bool:
    """Whether `template` is text whose only format field is one plain {question}."""
    if not isinstance(template, str):
        return False
    try:
        fields = [(name, spec, conv) for _, name, spec, conv in string.Formatter().parse(template)
                  if name is not None]
    except ValueError:  # an unmatched brace
        return False
    return fields == [("question", "", None)]


def _held_out(n_pos: int, n_neg: int, seed: int, blocks: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """Held-out masks of a detector's two sides, each made of `blocks` equal blocks (one per
    way of asking, the same items in the same order): a random quarter of the items of a side
    of at least 4, held out in every block, so no item is fit in one phrasing and judged in
    another. A side too small to split is all "held out" (its training scores stand in)."""
    gen = torch.Generator().manual_seed(seed)

    def split(n: int) -> torch.Tensor:
        held = torch.zeros(n, dtype=torch.bool)
        if n >= 4:
            held[torch.randperm(n, generator=gen)[:n // 4]] = True
        return held.repeat(blocks) if held.any() else torch.ones(n * blocks, dtype=torch.bool)

    return split(n_pos // blocks), split(n_neg // blocks)


def _targets(model, suffixes: list[str]) -> list[str]:
    names = [n for n, m in model.named_modules()
             if isinstance(m, torch.nn.Linear) and any(n.endswith(s) for s in suffixes)]
    if not names:
        raise ObliviateError(f"o3: no Linear modules ending in {suffixes} in this model; set "
                             "params.targets to suffixes it has (e.g. mlp.down_proj)")
    return names


@METHODS.register("o3")
@dataclass
class O3:
    """O3 for requests that keep arriving. Each request gets (1) a detector: per layer a logistic
    classifier of the forget prompts' pooled states against negatives (the shipped general
    questions and, where given, retain questions), the layers' logits averaged; a quarter of
    each side (of at least 4 items) is held out to set its gate, which is shut at or below the
    `shut_quantile` of the held-out negatives' scores and opens fully at the `open_quantile` of
    the held-out forget scores (or just above the shut point, where that is lower). That is one
    view, fit on the questions as the run's template asks them; a second view is fit the same
    way on them asked also through the `augment` templates, and the gate is the wider open of
    the two, so a question asked another way still opens it. Both views hold out the same
    items, in every phrasing; the manifest records each view's held-out rates and the gate's
    own on the training template. A longer phrasing is judged by its last `window` tokens, as
    the training template's questions are. (2) a LoRA on the target Linears,
    trained with NPO on the forget set (no retain data needed; where it is given, the adapter
    also keeps the retain answers), its down-projection orthogonal to every earlier request's.
    At inference each adapter is scaled by its gate. The paper trains its detector with a
    contrastive entropy loss on the forget data alone; these classifiers keep its local-then-
    global layer aggregation and use the negatives at hand, which tell apart questions of the
    same domain (own-data benchmark: held-out AUC 0.96 against 0.49 for forget-set
    prototypes)."""

    rank: int = 8
    alpha: float = 16.0
    beta: float = 0.1  # NPO temperature
    alpha_retain: float = 5.0  # weight of the retain NLL through the adapter, where retain is given
    targets: list[str] = None  # type: ignore[assignment]  # module suffixes; None: MLP and attention output
    open_quantile: float = 0.1
    shut_quantile: float = 0.95
    c: float = 1.0  # inverse regularisation of the detector's classifiers
    # Other ways of asking, which a second view of the detector also learns (the forget and
    # negative questions in each); [] for one view. None of them is an audit's template.
    augment: list[str] = None  # type: ignore[assignment]
    seed: int = 0

    description: ClassVar[str] = ("gated adapters: a detector per request scales an orthogonal "
                                  "LoRA by how sure it is that the prompt is about that request "
                                  "(weights untouched)")
    needs: ClassVar[tuple[str, ...]] = ("forget", "reference", "general")
    paper: ClassVar[str] = "Gao et al. 2024, Practical Unlearning for Large Language Models"
    default_lr: ClassVar[float] = 2e-3
    system: ClassVar[str] = "o3"
    extends: ClassVar[bool] = True
    uses_retain: ClassVar[bool] = True

    def __post_init__(self) -> None:
        checks = {"alpha_retain": math.isfinite(self.alpha_retain) and self.alpha_retain >= 0,
                  "alpha": math.isfinite(self.alpha) and self.alpha > 0,
                  "beta": math.isfinite(self.beta) and self.beta > 0,
                  "c": math.isfinite(self.c) and self.c > 0}
        for name, ok in checks.items():
            if not ok:
                raise ObliviateError(f"o3 {name} must be finite and positive"
                                     f"{' or 0' if name == 'alpha_retain' else ''} "
                                     f"(got {getattr(self, name)})")
        if self.targets is None:
            self.targets = ["mlp.down_proj", "self_attn.o_proj"]
        if self.augment is None:
            self.augment = list(AUGMENT)
        if isinstance(self.augment, str):
            raise ObliviateError("o3 augment must be a list of prompt templates, e.g. "
                                 "params.augment='[\"User: {question}\\nAssistant: \"]' ([] for none)")
        for t in self.augment:
            if not _one_question_slot(t):
                raise ObliviateError(f"o3 augment: each entry must be a prompt template whose "
                                     f"only field is one {{question}} (got {t!r})")
        if self.rank < 1:
            raise ObliviateError(f"o3 rank must be at least 1 (got {self.rank})")
        for name in ("open_quantile", "shut_quantile"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ObliviateError(f"o3 {name} must be in [0, 1] (got {getattr(self, name)})")

    def build_system(self, model, ctx: Context) -> O3System:
        old = model if isinstance(model, O3System) else None
        base = old.base if old is not None else model
        window = old.window if old is not None else prompt_window(ctx.items["forget"])
        layers = list(range(1, base.config.num_hidden_layers + 1))
        views = old.settings["views"] if old is not None else 1 + bool(self.augment)
        if old is not None and list(self.augment) != old.settings.get("augment", []):
            raise ObliviateError(f"o3: this system's detectors learn the ways of asking "
                                 f"{old.settings.get('augment', [])}; a new request must use the "
                                 f"same (params.augment)")
        settings = ({**old.settings, "requests": old.requests + 1} if old is not None else
                    {"requests": 1, "rank": self.rank, "alpha": self.alpha, "views": views,
                     "augment": list(self.augment), "targets": _targets(base, self.targets),
                     "window": window, "detectors": []})
        system = O3System(base, settings)
        if old is not None:
            system.parts.load_state_dict(old.parts.state_dict(), strict=False)
        det = system.parts[f"detector_{system.requests - 1}"]

        def features(template: str | None, *names: str):
            """Pooled prompt states of streams' items (the negatives: general questions and at
            most 512 retain ones), in the training template or in `template`."""
            limits = {"retain": 512}
            items = [it for n in names if ctx.items.get(n) for it in
                     (ctx.items[n][:limits.get(n)] if template is None
                      else ctx.encoded(n, template, limits.get(n)))]
            return prompt_features(base, items, ctx.pad_id, layers, window)

        pos, neg = [features(None, "forget")], [features(None, "general", "retain")]
        rates = [self._fit_detector(det, pos[0], neg[0], view=0)]
        if views > 1:  # the second view: the training template and the other ways of asking
            for t in self.augment:
                pos.append(features(t, "forget"))
                neg.append(features(t, "general", "retain"))
            rates.append(self._fit_detector(det, torch.cat(pos), torch.cat(neg), view=1,
                                            blocks=len(pos)))
            # what the gate (the wider open view) does on the training template's held-out items
            held_p, held_n = _held_out(len(pos[0]), len(neg[0]), self.seed)
            with torch.no_grad():
                rates.append({"view": "gate",
                              "forget_open": float((det.gate(pos[0][held_p]) >= 1 - 1e-6).float().mean()),
                              "negatives_open": float((det.gate(neg[0][held_n]) > 0).float().mean())})
        # the detector's held-out rates travel in the manifest (covered by its checksum)
        system.settings["detectors"] = [*settings.get("detectors", []), rates]
        self._init_adapter(system)
        return system

    def _fit_detector(self, det: Detector, pos: torch.Tensor, neg: torch.Tensor,
                      view: int = 0, blocks: int = 1) -> dict[str, Any]:
        """Fit each layer's classifier of one view on three quarters of each side's items, set
        the view's gate bounds on the held-out quarter (_held_out; each side is `blocks` ways
        of asking the same items), and return the held-out rates of that view: forget prompts
        fully opened, negatives opened at all."""
        from sklearn.linear_model import LogisticRegression

        if not len(pos) or not len(neg):
            raise ObliviateError("o3's detector needs forget questions and negatives (the "
                                 "shipped general questions or a retain set); one side is empty")
        held_p, held_n = _held_out(len(pos), len(neg), self.seed, blocks)
        split = bool((~held_p).any() and (~held_n).any())
        fit_p = pos[~held_p] if (~held_p).any() else pos
        fit_n = neg[~held_n] if (~held_n).any() else neg
        x, y = torch.cat([fit_p, fit_n]), [1] * len(fit_p) + [0] * len(fit_n)
        with torch.no_grad():
            for layer in range(x.shape[1]):
                xl = x[:, layer].double()
                mean, scale = xl.mean(0), xl.std(0) + 1e-6
                clf = LogisticRegression(C=self.c, class_weight="balanced", max_iter=3000)
                clf.fit(((xl - mean) / scale).numpy(), y)
                det.weight[view, layer] = torch.as_tensor(clf.coef_[0], dtype=torch.float32)
                det.bias[view, layer] = float(clf.intercept_[0])
                det.mean[view, layer], det.scale[view, layer] = mean.float(), scale.float()
            sp, sn = det.score(pos[held_p], view), det.score(neg[held_n], view)
            low = float(torch.quantile(sn, self.shut_quantile))
            high = max(float(torch.quantile(sp, self.open_quantile)), low + 1e-3)
            det.bounds[view] = torch.tensor([low, high])
            ramp = lambda s: ((s - low) / (high - low)).clamp(0.0, 1.0)  # noqa: E731
            return {"view": view, "forget_items": int(held_p.sum()),
                    "negative_items": int(held_n.sum()),
                    "held_out": split,
                    "forget_open": float((ramp(sp) >= 1 - 1e-6).float().mean()),
                    "negatives_open": float((ramp(sn) > 0).float().mean()),
                    "open_quantile": self.open_quantile, "shut_quantile": self.shut_quantile,
                    "c": self.c}

    def _init_adapter(self, system: O3System) -> None:
        gen = torch.Generator().manual_seed(self.seed + system.requests)
        new = system.parts[f"adapters_{system.requests - 1}"]
        for key, a in new.items():
            earlier = [system.parts[f"adapters_{r}"][key].A.detach() for r in range(system.requests - 1)]
            if earlier:
                stacked = torch.cat(earlier).T  # [d_in, k]
                if stacked.shape[1] + a.A.shape[0] > stacked.shape[0]:
                    raise ObliviateError(
                        f"o3: {key} has {stacked.shape[0]} input dimensions, too few for another "
                        f"rank-{a.A.shape[0]} adapter orthogonal to {len(earlier)} earlier ones")
                a.basis = torch.linalg.qr(stacked).Q
            with torch.no_grad():
                a.A.normal_(0.0, 1.0 / math.sqrt(a.A.shape[1]), generator=gen)
        for name, p in system.parts.named_parameters():
            p.requires_grad_(name.startswith(f"adapters_{system.requests - 1}."))

    def loss(self, model, batches, ctx: Context):
        f = batches["forget"]
        ref = ctx.cached("seq_nll:forget").to(f["index"].device)[f["index"]]
        adapted = _Adapted(model)
        forget = npo(batch_seq_nll(adapted, f), ref, self.beta, ctx.world_size)
        info = {"npo": float(forget.detach())}
        if "retain" not in batches or self.alpha_retain == 0:
            return forget, info
        # Where retain data is given, the adapter (fully on) must keep its answers: whatever the
        # detector lets through then loses only the forget facts, not the model's language.
        forget = ctx.backward_now(forget)
        retain = batch_nll(adapted, batches["retain"], ctx.world_size)
        info["retain"] = float(retain.detach())
        return forget + self.alpha_retain * retain, info

    def finish(self, model, ctx: Context) -> None:
        system = getattr(model, "module", model)
        for a in system.parts[f"adapters_{system.requests - 1}"].values():
            a.bake()


class _Adapted:
    """A callable model view: the system with only the newest adapter, fully on."""

    def __init__(self, model) -> None:
        self.model = model

    def __call__(self, **kw):
        return self.model(**kw, part="adapter")
