"""The calibrated stop: unlearn until the forget items are no more likely than never-seen ones.

A fixed step budget over- or under-unlearns depending on the data and the method (on one
user's data NPO's default 60 steps pushed the forget items far below unseen data: Min-K% AUC
0.11). The right amount is where a membership attack can no longer tell the forget items from
items the model never saw: the LOSS attack's AUC (forget items as members, holdout items as
non-members) at `target_auc`, 0.5 by default. A 1-step check would cost a forward pass over
both probes every step, a fixed interval overshoots by up to the interval, so the interval
adapts: the AUC's drop per step so far predicts the step where it crosses the target, and the
next check is there (at most `every` steps on, at least 1). The run stops at the first check
at or below the target; its step and AUC are recorded.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .encoding import Encoded
from .evaluation.mia import auc, loss_score
from .methods.base import answer_mean_nll, eval_mode


@dataclass
class HoldoutStop:
    """Decides, after each optimiser step, whether the forget items have reached holdout level."""

    model: Any
    forget: list[Encoded]
    holdout: list[Encoded]
    pad_id: int
    every: int = 5
    target_auc: float = 0.5
    checks: list[tuple[int, float]] = field(default_factory=list)  # (steps done, AUC)
    next_check: int = 0
    stopped_at: int | None = None

    def measure(self) -> float:
        """LOSS-attack AUC of the forget probe (members) against the holdout probe."""
        with eval_mode(self.model):
            members = answer_mean_nll(self.model, self.forget, self.pad_id)
            others = answer_mean_nll(self.model, self.holdout, self.pad_id)
        if not (np.all(np.isfinite(members)) and np.all(np.isfinite(others))):
            return float("nan")  # the AUC of non-finite losses is undefined; the guard fails the run
        return auc(loss_score(members), loss_score(others))

    def start(self) -> None:
        """Measure the untouched model; a model already at holdout level stops at step 0."""
        start = self.measure()
        self.checks.append((0, start))
        if start <= self.target_auc:
            self.stopped_at = 0
        self.next_check = min(self.every, self._predicted_gap())

    def check(self, step: int) -> bool:
        """After optimiser step `step` (0-based): True once the target is reached."""
        done = step + 1
        if self.stopped_at is not None:
            return True
        if done < self.next_check:
            return False
        value = self.measure()
        self.checks.append((done, value))
        if not value > self.target_auc:  # NaN too: a model that no longer computes stops here
            self.stopped_at = done
            return True
        self.next_check = done + self._predicted_gap()
        return False

    def _predicted_gap(self) -> int:
        """Steps until the next check: where the AUC's trend so far meets the target, at
        least 1 and at most `every` steps on."""
        if len(self.checks) < 2:
            return self.every
        (s0, a0), (s1, a1) = self.checks[-2], self.checks[-1]
        slope = (a0 - a1) / max(s1 - s0, 1)  # AUC drop per step
        if slope <= 0:
            return self.every
        return int(min(self.every, max(1, math.floor((a1 - self.target_auc) / slope))))

    def finish(self, steps_done: int) -> None:
        """A run that used its whole budget: measure the model it ends with."""
        if self.stopped_at is None and self.checks[-1][0] != steps_done:
            self.checks.append((steps_done, self.measure()))

    def record(self, steps_planned: int) -> dict[str, Any]:
        """What the model's provenance and the ledger keep: the stop step and AUC at stop."""
        reached = self.stopped_at is not None
        last_step, last_auc = self.checks[-1]
        return {"kind": "holdout", "target_auc": self.target_auc, "reached": reached,
                "step": self.stopped_at if reached else steps_planned,
                "auc_start": self.checks[0][1], "auc_at_stop": last_auc,
                "last_check_step": last_step, "n_checks": len(self.checks),
                "n_forget": len(self.forget), "n_holdout": len(self.holdout),
                "checks": [[s, round(a, 6)] for s, a in self.checks]}

    def state_dict(self) -> dict[str, Any]:
        return {"checks": list(self.checks), "next_check": self.next_check,
                "stopped_at": self.stopped_at}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.checks = [tuple(c) for c in state["checks"]]
        self.next_check, self.stopped_at = state["next_check"], state["stopped_at"]

