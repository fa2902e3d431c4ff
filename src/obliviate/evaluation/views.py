"""What a metric reads: views of the engine's cached passes over one dataset (or a member /
non-member pair, or MUSE's prompts). A view fetches what its metrics declared they read in one
go, so every likelihood metric of a dataset shares one forward pass."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..data.examples import Example
from .engine import Engine, ItemStats


@dataclass
class EvalSet:
    name: str
    role: str  # forget | retain | utility | holdout | muse
    examples: list[Example] = field(repr=False)
    # False: reported beside the benchmark's own sets, left out of the model-level numbers
    # (forget quality, model utility): dependent queries, the rwku suite's probe sets
    aggregated: bool = True


def perturbed_variants(examples: list[Example]) -> list[str]:
    """'perturbed:0' .. 'perturbed:K-1', K the fewest perturbed answers of any item."""
    k = min((len(ex.perturbed_answers) for ex in examples), default=0)
    return [f"perturbed:{i}" for i in range(k)]


@dataclass
class DatasetView:
    """One dataset under one model."""

    engine: Engine
    dataset: EvalSet
    max_new_tokens: int = 48

    @property
    def examples(self) -> list[Example]:
        return self.dataset.examples

    @property
    def role(self) -> str:
        return self.dataset.role

    def variants(self, reads: set[str]) -> list[str]:
        """The sequences to score for what the metrics read."""
        out = ["answer"]
        if "paraphrase" in reads and perturbed_variants(self.examples):
            out.append("paraphrase")
        if "perturbed" in reads:
            out += perturbed_variants(self.examples)
        return out

    def prefetch(self, reads: set[str]) -> None:
        """Score every needed sequence of the dataset in one shared pass."""
        self.engine.stats(self.dataset.name, self.examples, self.variants(reads))

    def stats(self, variant: str) -> ItemStats:
        return self.engine.stats(self.dataset.name, self.examples, [variant])[variant]

    def perturbed_nll(self) -> np.ndarray | None:
        """Mean token NLL of each perturbed answer [N, K], or None without perturbed answers."""
        vs = perturbed_variants(self.examples)
        if not vs:
            return None
        return np.stack([self.stats(v).nll_mean for v in vs], axis=1)

    def generations(self) -> list[str]:
        return self.engine.generate(self.dataset.name, self.examples, self.max_new_tokens)


@dataclass
class SideView:
    """Members or non-members of a membership attack."""

    name: str  # member | nonmember
    dataset: EvalSet
    engine: Engine
    reference: Engine | None = None

    @property
    def examples(self) -> list[Example]:
        return self.dataset.examples

    def stats(self) -> ItemStats:
        return self.engine.stats(self.dataset.name, self.examples, ["answer"])["answer"]

    def reference_stats(self) -> ItemStats | None:
        if self.reference is None:
            return None
        return self.reference.stats(self.dataset.name, self.examples, ["answer"])["answer"]


@dataclass
class MembershipView:
    """A membership-inference evaluation: the forget set (members) against a holdout set the
    model never saw (non-members)."""

    engine: Engine
    members: EvalSet
    nonmembers: EvalSet
    k: float = 0.4  # Min-K% / Min-K%++ fraction
    reference: Engine | None = None  # a reference model: the Reference attack
    gradnorm: bool = False  # GradNorm costs a backward pass per item: only when asked

    def sides(self) -> list[SideView]:
        return [SideView("member", self.members, self.engine, self.reference),
                SideView("nonmember", self.nonmembers, self.engine, self.reference)]


@dataclass
class MuseView:
    """MUSE's prompts (Shi et al. 2024): forget passages cut in half (VerbMem) and few-shot
    questions with retain demos (KnowMem)."""

    engine: Engine
    passages: EvalSet
    forget: EvalSet
    retain: EvalSet
    shots: int = 3
    verbmem_tokens: int = 128
    knowmem_tokens: int = 32
