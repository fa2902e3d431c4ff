"""What the ledger measures on a model version: forgetting of each past request, utility,
membership inference. One Engine per model, so every request's forget set, the retain set and
the utility sets share its cached passes."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..data.examples import Example
from ..encoding import DEFAULT_TEMPLATE
from ..evaluation import Engine, EvalSet, derive, evaluate_tofu, make_results
from ..evaluation.metrics import in_order
from ..evaluation.suite import evaluate_mia
from ..evaluation.tofu_math import forget_quality
from ..systems import load_any

MODEL_LEVEL = 0  # the request id under which model-level numbers (utility) are stored


@dataclass
class Sets:
    """The data one measurement reads: forget examples per request id, and shared sets."""

    forget: dict[int, list[Example]]
    retain: list[Example]
    # per request: the retain items about the entities its forget items name (a request that
    # forgets some facts of a person must leave that person's other facts; see `kept_items`)
    kept: dict[int, list[Example]] = field(default_factory=dict)
    holdout: list[Example] = field(default_factory=list)
    utility: dict[str, list[Example]] = field(default_factory=dict)
    template: str = DEFAULT_TEMPLATE
    max_new_tokens: int = 48
    batch_size: int = 64
    mia_k: float = 0.4


def forget_name(rid: int) -> str:
    return f"forget_r{rid}"


def mia_name(rid: int) -> str:
    return f"mia_r{rid}"


def kept_name(rid: int) -> str:
    return f"kept_r{rid}"


KEPT_METRICS = ("prob", "rougeL_recall")  # the forget-role truth-ratio score would read inverted


def kept_items(forget: list[Example], retain: list[Example], limit: int = 256) -> list[Example]:
    """A fine-grained request's other side: the retain items about the entities the forget
    items name, minus the forget items themselves (at most `limit`). Empty when the forget
    items name no entity or the retain set holds nothing else about them: a whole-entity
    request."""
    entities = {x.entity for x in forget if x.entity}
    gone = {(x.question, x.answer) for x in forget}
    return [x for x in retain if x.entity in entities and (x.question, x.answer) not in gone][:limit]


def evaluate_version(model_dir: str | Path, sets: Sets, name: str, model_level: bool = True,
                     trust_remote_code: bool = False) -> dict[str, Any]:
    """A Results dict: TOFU suite on every request's forget set (and, with `model_level`, the
    retain and utility sets), and the MIA suite per request against the holdout."""
    model, tok = load_any(model_dir, trust_remote_code=trust_remote_code)
    model.eval()
    engine = Engine(model, tok, sets.template, batch_size=sets.batch_size)
    evals = [EvalSet(forget_name(r), "forget", exs) for r, exs in sorted(sets.forget.items())]
    evals += [EvalSet(kept_name(r), "forget", exs) for r, exs in sorted(sets.kept.items())
              if exs and r in sets.forget]
    if model_level:
        if sets.retain:
            evals.append(EvalSet("retain", "retain", sets.retain))
        evals += [EvalSet(n, "utility", exs) for n, exs in sorted(sets.utility.items())]
    datasets = evaluate_tofu(engine, evals, sets.max_new_tokens, progress=False)
    if sets.holdout:
        holdout = EvalSet("holdout", "holdout", sets.holdout)
        for r, exs in sorted(sets.forget.items()):
            datasets[mia_name(r)] = evaluate_mia(engine, EvalSet(forget_name(r), "forget", exs),
                                                 holdout, sets.mia_k)
    res = make_results(name, str(model_dir), datasets, {"template": sets.template}, None)
    res["metrics"] = derive(res)
    return res


def request_metrics(res: dict[str, Any], rid: int,
                    oracle: dict[str, Any] | None = None) -> dict[str, float | str]:
    """The ledger's numbers for one request from a Results dict: every aggregate the suites
    computed on its forget set (forget_<metric>) and its membership attacks (auc_<attack>),
    and forget quality against the oracle's (the KS test of the two truth-ratio samples)."""
    d = res["datasets"][forget_name(rid)]
    out: dict[str, float | str] = {f"forget_{k}": v for k, v in d["aggregate"].items()}
    kept = res["datasets"].get(kept_name(rid))
    if kept is not None:
        out.update({f"kept_{k}": kept["aggregate"][k] for k in KEPT_METRICS if k in kept["aggregate"]})
        out["kept_items"] = float(kept["n"])
    mia = res["datasets"].get(mia_name(rid))
    if mia is not None:
        out.update(mia["aggregate"])
    else:
        out.update({m.name: "not computed: the project has no holdout set"
                    for m in in_order("mia") if not m.optional})
    if oracle is None:
        out["forget_quality"] = "not computed: the project has no oracle"
    elif "truth_ratio" not in d["per_item"]:
        out["forget_quality"] = "not computed: the forget file has no perturbed answers"
    else:
        theirs = oracle["datasets"][forget_name(rid)]["per_item"]["truth_ratio"]
        out["forget_quality"] = forget_quality(np.array(d["per_item"]["truth_ratio"]),
                                               np.array(theirs))[0]
    return out


def model_metrics(res: dict[str, Any]) -> dict[str, float | str]:
    """Model-level numbers: utility and every aggregate of each retain / utility set."""
    out: dict[str, float | str] = {"model_utility": res["metrics"]["model_utility"]}
    for name, d in res["datasets"].items():
        if d["role"] in ("retain", "utility"):
            out.update({f"{name}_{k}": v for k, v in d["aggregate"].items()})
    return out


def audit_metrics(audit_res: dict[str, Any]) -> dict[str, float | str]:
    """Each audit's headline: knowledge under attack after (raw), before (the parent's), and
    the residual (1 = as before, 0 = as the oracle) where an oracle exists."""
    out: dict[str, float | str] = {}
    for name, e in audit_res["audits"].items():
        raw = e["model"]
        if "not_applicable" in raw:
            out[f"audit_{name}"] = f"not applicable: {raw['not_applicable']}"
            continue
        out[f"audit_{name}"] = raw["score"]
        out[f"audit_{name}_before"] = e["target"]["score"]
        res = e["residual"]
        out[f"audit_{name}_residual"] = res if isinstance(res, str) else res["score"]
    return out
