"""Checks that say whether an evaluation's numbers can mean anything, before anyone reads them.

`check_sets` looks at the data: items shared by sets that must be disjoint, forget sets too
small for the KS test behind forget quality, missing paraphrased or perturbed answers, and
perturbed answers worded differently from the paraphrase they are compared with (the truth
ratio then compares wordings, not right with wrong). `check_results` looks at one model's
results for the symptoms of such data: a model that does not prefer the true answer on data
it was trained on, a target (which forgot nothing) that the oracle cannot be told apart from,
a model utility of 0.

Each finding is one line a user can act on; "error" means the number it concerns is
meaningless, "warning" that it is weaker than it looks.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from functools import lru_cache
from typing import Any

import numpy as np
from scipy.stats import ks_2samp

from ..errors import ObliviateError
from ..evaluation.metrics import derived, in_order
from ..evaluation.tofu_math import rouge_l
from ..registry import suggest
from .examples import Example

ROLES = ("forget", "retain", "holdout", "utility")
MODEL_ROLES = ("target", "oracle")
# sets that must share no item: holdout is the never-seen side of the membership attacks
DISJOINT = (("forget", "retain"), ("forget", "holdout"), ("retain", "holdout"))
TRUTH_RATIO_ROLES = ("forget", "retain", "utility")  # the sets whose truth ratio is measured

# Thresholds, calibrated on the built-in benchmark (quiet) and on sets built to show each
# problem (tests/test_data_checks.py):
ALPHA = 0.05  # forget quality's conventional significance level
KS_EFFECT = 0.5  # the KS difference a forget set should be able to detect
# cosine of character 3-5-gram TF-IDF of question + answer. Distinct items reach 0.73 at most
# (the benchmark's splits, seeds 0-3 and 20-200 people; TOFU's real-authors and world-facts
# sets; 'freezing point of water' vs 'boiling point of water'); an item without its question
# mark, or in other case, 0.92 or more; one word added to a short item 0.80 to 0.98
NEAR_DUPLICATE = 0.85
LENGTH_RATIO = (2 / 3, 3 / 2)  # mean words(perturbed) / words(paraphrase); benchmark: 1.00
OVERLAP_GAP = 0.25  # ROUGE-L recall of the answer, perturbed minus paraphrase; benchmark: -0.25
FIX_WORDING = "write perturbed answers in the paraphrase's wording, changing only the fact"


@dataclass(frozen=True)
class Finding:
    """One problem found: `level` "error" (the number it concerns is meaningless) or
    "warning"; `code` a stable id; `message` one line saying what is wrong, with numbers, and
    what to do; `where` the set(s) concerned ("forget", "forget/retain")."""

    level: str
    code: str
    message: str
    where: str = ""

    def to_json(self) -> dict[str, str]:
        return asdict(self)


def _errors_first(findings: Iterable[Finding]) -> list[Finding]:
    return sorted(findings, key=lambda f: f.level != "error")


# ---- the KS test behind forget quality ---------------------------------------------------------

@lru_cache(maxsize=4096)
def _ks_pvalue(n: int, k: int) -> float:
    """Exact two-sided p-value of two samples of n items whose empirical CDFs differ by k/n:
    y is x shifted by k positions, so the first k of x lie below all of y."""
    x = np.arange(n, dtype=np.float64)
    with warnings.catch_warnings():
        # scipy's exact sum rounds to just above 1 where p is about 1 (k = 1: p is exactly 1),
        # then warns and uses the asymptotic value, also about 1: far from any alpha
        warnings.simplefilter("ignore", RuntimeWarning)
        return float(ks_2samp(x, x + k - 0.5, method="exact").pvalue)


def _passes(n: int, d: float, alpha: float) -> bool:
    # with n items the statistic moves in steps of 1/n: the largest one not above d
    k = math.floor(d * n + 1e-9)
    # below alpha by more than rounding: scipy's 2 / C(6, 3) comes out as 0.09999999999999999
    return k > 0 and _ks_pvalue(n, k) < alpha - 1e-12


@lru_cache(maxsize=256)
def min_forget_items(d: float = KS_EFFECT, alpha: float = ALPHA) -> int:
    """The fewest forget items (truth ratios per model) from which on two samples whose
    empirical CDFs differ by a KS statistic of d give a two-sided p-value below `alpha`
    (scipy's exact two-sample distribution). With n items the statistic takes the values
    k/n, so a sample differs by floor(d n)/n at most; p does not fall monotonically in n (it
    steps with that rounding), hence "from which on": every larger set passes too."""
    if not 0 < d <= 1 or not 0 < alpha < 1:
        raise ValueError(f"min_forget_items needs 0 < d <= 1 and 0 < alpha < 1, not {d}, {alpha}")
    n = 1
    while not _passes(n, d, alpha):
        n += 1
    first, last_failure = n, n - 1
    # p falls about exponentially in n, so a failure beyond twice the first pass is unseen
    for m in range(first + 1, 2 * first + 10):
        if not _passes(m, d, alpha):
            last_failure = m
    return last_failure + 1


def _smallest_detectable(n: int, alpha: float = ALPHA) -> float | None:
    """The smallest KS statistic that n items per model can show at p < alpha (None: none)."""
    return next((k / n for k in range(1, n + 1) if _ks_pvalue(n, k) < alpha - 1e-12), None)


# ---- data checks --------------------------------------------------------------------------------

def check_sets(sets: dict[str, tuple[str, list[Example]]]) -> list[Finding]:
    """Findings about evaluation data, errors first. `sets`: name -> (role, examples), the
    roles those of an evaluation (forget, retain, holdout, utility)."""
    for name, (role, _) in sets.items():
        if role not in ROLES:
            raise ObliviateError(f"set '{name}': unknown role '{role}'{suggest(role, list(ROLES))}; "
                                 f"known: {', '.join(ROLES)}")
    found = _overlaps(sets)
    for name, (role, examples) in sets.items():
        qa = [ex for ex in examples if not ex.is_text]
        if role == "forget":
            found += _forget_size(name, qa)
        if role in TRUTH_RATIO_ROLES and qa:
            found += _answers(name, role, qa) + _style(name, qa)
    return _errors_first(found)


def _norm(text: str | None) -> str:
    return " ".join((text or "").lower().split())


def _shown(ex: Example, width: int = 70) -> str:
    """An item in one line of a message: its question (the text of a text item), cut."""
    text = " ".join((ex.question or ex.answer).split())
    return repr(text if len(text) <= width else text[:width - 3] + "...")


def _overlaps(sets: dict[str, tuple[str, list[Example]]]) -> list[Finding]:
    found: list[Finding] = []
    for a_role, b_role in DISJOINT:
        for a, (ra, xs) in sets.items():
            for b, (rb, ys) in sets.items():
                if ra == a_role and rb == b_role and xs and ys:
                    why = (f"{b} must be data no model was trained on (the membership attacks' "
                           "non-members)" if b_role == "holdout" else
                           "an item cannot be both forgotten and kept")
                    found += _pair_overlap(a, xs, b, ys, why)
    return found


def _pair_overlap(a: str, xs: list[Example], b: str, ys: list[Example], why: str) -> list[Finding]:
    where = f"{a}/{b}"
    keys = {(_norm(y.question), _norm(y.answer)) for y in ys}
    same = [x for x in xs if (_norm(x.question), _norm(x.answer)) in keys]
    found = []
    if same:
        found.append(Finding("error", "overlap", (
            f"{len(same)} of {len(xs)} items of {a} are also in {b} (same question and answer, "
            f"ignoring case and spacing), e.g. {_shown(same[0])}: {why}; remove them from one "
            "of the two"), where))
    near = _near_duplicates(xs, ys, keys)
    if near:
        x, y = near[0]
        found.append(Finding("warning", "near_duplicate", (
            f"{len(near)} of {len(xs)} items of {a} nearly repeat an item of {b} (character "
            f"n-gram cosine >= {NEAR_DUPLICATE}), e.g. {_shown(x)} ~ {_shown(y)}: {why}; "
            "check them and remove the repeats"), where))
    return found


def _near_duplicates(xs: list[Example], ys: list[Example],
                     exact: set[tuple[str, str]]) -> list[tuple[Example, Example]]:
    """(x, its closest y) for each x of xs with a y of cosine >= NEAR_DUPLICATE that is not an
    exact repeat: TF-IDF over character 3-5-grams of question + answer, which rates shared
    template words low and shared names, numbers and phrasings high."""
    from sklearn.feature_extraction.text import TfidfVectorizer

    def text(ex: Example) -> str:
        return f"{_norm(ex.question)} {_norm(ex.answer)}"

    vec = TfidfVectorizer(analyzer="char", ngram_range=(3, 5), sublinear_tf=True)
    vec.fit([text(e) for e in xs + ys])
    bx, by = vec.transform([text(e) for e in xs]), vec.transform([text(e) for e in ys]).T.tocsc()
    out = []
    for start in range(0, len(xs), 512):  # [chunk, len(ys)] at a time: a few thousand items fit
        sims = (bx[start:start + 512] @ by).toarray()
        for i, row in enumerate(sims):
            j = int(row.argmax())
            x = xs[start + i]
            if row[j] >= NEAR_DUPLICATE and (_norm(x.question), _norm(x.answer)) not in exact:
                out.append((x, ys[j]))
    return out


def _forget_size(name: str, qa: list[Example]) -> list[Finding]:
    """Forget quality is a KS test between n truth ratios of the model and n of the oracle."""
    n = sum(bool(ex.perturbed_answers) for ex in qa)
    if n == 0:
        return []  # no truth ratios at all: _answers says so
    need, floor = min_forget_items(KS_EFFECT, ALPHA), min_forget_items(1.0, ALPHA)
    if n < floor:
        return [Finding("error", "few_forget_items", (
            f"{name} has {n} items with perturbed answers: forget quality (a KS test) cannot "
            f"reach p < {ALPHA} with fewer than {floor}, even for a model entirely unlike the "
            f"oracle, so it cannot tell models apart; use at least {need} items"), name)]
    if n < need:
        d = _smallest_detectable(n)
        return [Finding("warning", "few_forget_items", (
            f"{name} has {n} items with perturbed answers: forget quality only reaches p < "
            f"{ALPHA} when the model's and the oracle's truth ratios differ by a KS statistic of "
            f"{d:.2f} or more; use at least {need} items to detect a difference of {KS_EFFECT}"),
            name)]
    return []


def _lost(role: str) -> str:
    return {"forget": "truth ratio and forget quality",
            "retain": "truth ratio (a part of model utility)",
            "utility": "truth ratio and normalised prob (parts of model utility)"}[role]


def _answers(name: str, role: str, qa: list[Example]) -> list[Finding]:
    n, found = len(qa), []
    counts = [len(ex.perturbed_answers) for ex in qa]
    no_para = sum(ex.paraphrased_answer is None for ex in qa)
    # TOFU's utility sets have none: there the answer, never trained on verbatim, stands in
    if no_para and role != "utility":
        found.append(Finding("warning", "no_paraphrase", (
            f"{no_para} of {n} items of {name} have no paraphrased answer: the trained answer "
            f"stands in, so the {_lost(role)} compare memorised wording with new wording, not "
            "true with false; add a paraphrased_answer to every item"), name))
    missing = counts.count(0)
    # a utility set of plain question/answer pairs (no item has wrong answers) is scored on
    # prob and ROUGE-L by design; a set where only some items lack them is a mistake
    if missing == n and role == "utility":
        pass
    elif missing:
        found.append(Finding("warning", "no_perturbed", (
            f"{missing} of {n} items of {name} have no perturbed answers: the {_lost(role)} are "
            f"not computed for the set (every item needs them); give every item perturbed "
            "answers"), name))
    elif min(counts) < 2:
        found.append(Finding("warning", "few_perturbed", (
            f"{counts.count(1)} of {n} items of {name} have a single perturbed answer, and every "
            f"item is scored on as many as the item with the fewest, so the {_lost(role)} rest "
            "on one wrong answer per item; give each item 2 or more (TOFU gives 5)"), name))
    elif min(counts) != max(counts):
        found.append(Finding("warning", "uneven_perturbed", (
            f"items of {name} have {min(counts)} to {max(counts)} perturbed answers: only the "
            f"first {min(counts)} of each are scored; give every item the same number"), name))
    return found


def _words(text: str) -> int:
    return max(1, len(text.split()))


def _style(name: str, qa: list[Example]) -> list[Finding]:
    """Perturbed answers must differ from the paraphrase (or the answer, where there is no
    paraphrase: what the truth ratio compares them with) in the fact only, not in length or in
    how much of the trained answer's wording they reuse."""
    items = [(ex.answer, ex.paraphrased_answer or ex.answer, ex.perturbed_answers)
             for ex in qa if ex.perturbed_answers]
    if not items:
        return []
    found = []
    ratio = float(np.mean([np.mean([_words(p) for p in pert]) / _words(para)
                           for _, para, pert in items]))
    if not LENGTH_RATIO[0] <= ratio <= LENGTH_RATIO[1]:
        found.append(Finding("warning", "style_length", (
            f"perturbed answers of {name} are {ratio:.2f} times as long as the paraphrased "
            f"answers they are compared with (mean over items, in words; expected about 1): the "
            f"truth ratio compares lengths, not right with wrong; {FIX_WORDING}"), name))
    pert_recall = float(np.mean([np.mean([rouge_l(ans, p)[0] for p in pert])
                                 for ans, _, pert in items]))
    para_recall = float(np.mean([rouge_l(ans, para)[0] for ans, para, _ in items]))
    if pert_recall - para_recall > OVERLAP_GAP:
        found.append(Finding("warning", "style_overlap", (
            f"perturbed answers of {name} reuse the trained answer's wording more than the "
            f"paraphrased answers do (ROUGE-L recall of the answer: perturbed {pert_recall:.2f}, "
            f"paraphrased {para_recall:.2f}): the truth ratio compares wordings, not right with "
            f"wrong; {FIX_WORDING}"), name))
    return found


# ---- results checks -----------------------------------------------------------------------------

def check_results(res: dict[str, Any], reference: dict[str, Any] | None = None,
                  role: str | None = None) -> list[Finding]:
    """Findings about one model's results (make_results + derive), errors first. `role`:
    "target" (trained on the forget data), "oracle" (trained on the retain data only) or None
    (unknown: nothing is assumed about what it was trained on); `reference`: the oracle's
    results the forget quality is measured against."""
    if role is not None and role not in MODEL_ROLES:
        raise ObliviateError(f"unknown model role '{role}'{suggest(role, list(MODEL_ROLES))}; "
                             f"known: {', '.join(MODEL_ROLES)} (or none)")
    trained = {"target": ("forget", "retain"), "oracle": ("retain",)}.get(role or "", ())
    found = [f for name, d in res.get("datasets", {}).items() if d.get("role") in trained
             and d.get("aggregated", True) for f in _prefers_truth(name, d, role or "")]
    if role == "target" and reference is not None:
        found += _target_forget_quality(res, reference)
    if reference is not None:
        found += protocol_findings(res, reference)
    found += _zero_utility(res)
    return _errors_first(found)


# TOFU's published logs and OpenUnlearning's eval=tofu answer with up to 200 new tokens
PUBLISHED_NEW_TOKENS = 200


def protocol(res: dict[str, Any]) -> dict[str, Any]:
    """The settings behind a results file's numbers: new tokens per generated answer (None
    when unknown) and the items of each aggregated forget / retain / utility set."""
    cfg = res.get("config") or {}
    tokens = PUBLISHED_NEW_TOKENS if "imported_from" in cfg else cfg.get("max_new_tokens")
    items = {name: d.get("n") for name, d in res.get("datasets", {}).items()
             if d.get("aggregated", True) and d.get("role") in ("forget", "retain", "utility")}
    return {"max_new_tokens": tokens, "items": items}


def protocol_findings(res: dict[str, Any], reference: dict[str, Any]) -> list[Finding]:
    """A warning when results compared with a reference (a published or imported log, an
    oracle) were measured under other settings: their ROUGE, utility and forget quality then
    differ for that reason alone."""
    a, b = protocol(res), protocol(reference)
    diffs = []
    if None not in (a["max_new_tokens"], b["max_new_tokens"]) and a["max_new_tokens"] != b["max_new_tokens"]:
        diffs.append(f"{a['max_new_tokens']} new tokens per answer against {b['max_new_tokens']}")
    for name in sorted(set(a["items"]) & set(b["items"])):
        if a["items"][name] != b["items"][name]:
            diffs.append(f"{a['items'][name]} {name} items against {b['items'][name]}")
    if not diffs:
        return []
    return [Finding("warning", "protocol", (
        f"'{res.get('name')}' and its reference '{reference.get('name')}' were measured differently: "
        f"{'; '.join(diffs)}. Their numbers are not comparable; evaluate both the same way "
        "(preset=tofu follows the published protocol: 200 new tokens, every retain item)"),
        "/".join(sorted(set(a["items"]) & set(b["items"]))))]


def _prefers_truth(name: str, d: dict[str, Any], role: str) -> list[Finding]:
    """On data it was trained on, a model should give the true (paraphrased) answer more
    probability than the perturbed ones: R = P(paraphrase) / geomean P(perturbed) > 1."""
    r = np.asarray([v for v in d.get("per_item", {}).get("truth_ratio") or []
                    if isinstance(v, int | float)], dtype=np.float64)
    if r.size == 0:
        return []
    wins = int(np.sum(r > 1.0))
    if wins / r.size > 0.5:
        return []
    return [Finding("error", f"{role}_truth_ratio", (
        f"the {role} prefers the true answer on only {wins} of {r.size} items of {name} "
        f"({wins / r.size:.0%}), data it was trained on: the truth ratio does not compare right "
        "with wrong here, and neither do forget quality and model utility, built on it; run "
        "obliviate check on the data"), name)]


def _target_forget_quality(res: dict[str, Any], reference: dict[str, Any]) -> list[Finding]:
    value = derived.forget_quality(res, reference)
    if not isinstance(value, dict) or value["forget_quality"] <= ALPHA:
        return []
    found = derived.forget_set(res)
    n = len(found[1]["per_item"]["truth_ratio"]) if found else 0
    return [Finding("error", "target_forget_quality", (
        f"the target, which forgot nothing, has forget quality {value['forget_quality']:.2g} "
        f"against {reference.get('name', 'the reference')} (KS statistic "
        f"{value['forget_quality_ks']:.2f}, {n} forget items): the benchmark cannot tell a model "
        f"that forgot nothing from the oracle, so no model's forget quality means anything; run "
        f"obliviate check on the data (a forget set needs {min_forget_items()} items or more)"),
        found[0] if found else "")]


def _zero_utility(res: dict[str, Any]) -> list[Finding]:
    value = res.get("metrics", {}).get("model_utility")
    if value is None:
        value = derived.model_utility(res, None)
    if not isinstance(value, float) or value != 0.0:
        return []
    parts = [m.name for m in in_order() if m.utility_component]
    zero = [(name, key) for name, d in res.get("datasets", {}).items()
            if d.get("role") in ("retain", "utility") for key in parts
            if isinstance(v := d.get("aggregate", {}).get(key), int | float) and v <= 0]
    named = ", ".join(f"{name} {key}" for name, key in zero)
    why = f" because {named} {'is' if len(zero) == 1 else 'are'} 0" if zero else ""
    hint = ("a truth ratio score of 0 means the model never prefers the true answer, which "
            "points at the data" if any(key == "truth_ratio" for _, key in zero) else
            "one part of 0 hides every other")
    return [Finding("warning", "zero_utility", (
        f"model utility is 0{why} (a harmonic mean is 0 when any part is): {hint}; run obliviate "
        "check on the data before comparing models"), "")]
