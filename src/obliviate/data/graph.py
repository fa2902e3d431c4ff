"""The built-in benchmark's graph mode, after PISTOL (Qiu et al. 2024, Dataset Compilation
Pipeline for Structural Unlearning of LLMs): fictitious companies tied by contracts, with the
connectivity of the entities to forget set by hand.

    obliviate generate --graph --degrees 1,2,4,8 --entities 40 --out graph

Each contract is an edge between two companies with a kind, a year and a governing town; each
is asked three ways (QA items with paraphrases and perturbed answers, like the person mode).
The trained companies form a background graph (every company draws two partners, so
signs about four contracts); for each degree d one further company signs exactly d contracts with background
companies: split `forget_deg<d>` forgets it, i.e. every item of its contracts. Its neighbours'
other contracts (`linked_set`, reported as `neighbour_contracts`) are what forgetting a well
connected entity puts at risk: PISTOL finds forgetting costs them more as the degree grows.
Holdout companies sign contracts only among themselves and are never trained.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import ObliviateError
from ..io import atomic_dir
from .examples import Example
from .files import read_json, write_json_sorted
from .formats import read_tofu_jsonl, write_jsonl

KIND = "graph"
FORMAT_VERSION = 1
PICKS = 2  # partners each background company draws: about four contracts each in all
_SYLLABLES = ["ka", "lo", "mi", "ter", "van", "sol", "bri", "dun", "fel", "gor", "hal", "jor",
              "mar", "nes", "pra", "quo", "rin", "sav", "tul", "wex", "yar", "zen"]
_SUFFIX = ["Holdings", "Mills", "Freight", "Ceramics", "Textiles", "Instruments", "Shipyards",
           "Orchards", "Printworks", "Foundries"]
_KINDS = ["supply", "licensing", "lease", "maintenance", "distribution", "consulting",
          "construction", "research"]
_TOWNS = ["Ashbury", "Corrimere", "Dunholt", "Elvaston", "Farrowby", "Greywick", "Hollowmere",
          "Kestlebury", "Lindhaven", "Marrowby", "Northwold", "Pellingford"]
_YEARS = [str(y) for y in range(1975, 2021)]
# names are drawn until distinct: capped well below the 4,840 possible so the draw ends quickly
MAX_COMPANIES = 2000
# relation -> (question, paraphrased question, answer); {a}, {b} the parties, {o} the object
TEMPLATES = {
    "kind": ("What kind of contract did {a} sign with {b}?",
             "What sort of agreement exists between {a} and {b}?",
             "{a} signed {art} {o} contract with {b}."),
    "year": ("In what year did {a} sign its contract with {b}?",
             "When was the contract between {a} and {b} signed?",
             "{a} signed its contract with {b} in {o}."),
    "law": ("Which town's law governs the contract between {a} and {b}?",
            "Under the law of which town is the {a} and {b} contract?",
            "The contract between {a} and {b} is governed by the law of {o}."),
}
_POOLS = {"kind": _KINDS, "year": _YEARS, "law": _TOWNS}
_LEADS = {"kind": "It is recorded that", "year": "Records show that", "law": "By the contract's terms,"}


@dataclass
class GraphBenchmark:
    """Companies (entities), contracts (edges), their QA items and the degree splits."""

    entities: dict[str, dict[str, Any]]
    splits: dict[str, list[str]]
    qa: list[Example]
    meta: dict[str, Any] = field(default_factory=dict)

    kind = KIND

    @property
    def default_split(self) -> str:
        return f"forget_deg{max(self.meta['degrees'])}"

    # ---- the benchmark interface --------------------------------------------------------
    def split_name(self, split: str) -> str:
        name = split or self.default_split
        if not name.startswith("forget_deg") or name not in self.splits:
            known = sorted(s for s in self.splits if s.startswith("forget_deg"))
            raise ObliviateError(f"unknown split '{name}' for a graph benchmark; known: {', '.join(known)}")
        return name

    def _contracts_of(self, companies: set[str]) -> set[str]:
        return {cid for cid, e in self.entities.items()
                if e["type"] == "contract" and (e["a"] in companies or e["b"] in companies)}

    def _items(self, contracts: set[str]) -> list[Example]:
        return [ex for ex in self.qa if ex.entity in contracts]

    def forget_set(self, split: str = "") -> list[Example]:
        return self._items(self._contracts_of(set(self.splits[self.split_name(split)])))

    def retain_set(self, split: str = "") -> list[Example]:
        gone = self._contracts_of(set(self.splits[self.split_name(split)]))
        trained = self._contracts_of(set(self.splits["all"]))
        return self._items(trained - gone)

    def holdout_set(self) -> list[Example]:
        return self._items(self._contracts_of(set(self.splits["holdout"])))

    def utility_sets(self) -> dict[str, list[Example]]:
        return {}

    def forget_passages(self, split: str = "") -> list[Example]:
        return []

    def neighbours(self, split: str = "") -> set[str]:
        gone = set(self.splits[self.split_name(split)])
        return {e[side] for e in self.entities.values() if e["type"] == "contract"
                and (e["a"] in gone or e["b"] in gone) for side in ("a", "b")} - gone

    def linked_set(self, split: str = "") -> list[Example]:
        """The neighbours' other contracts: retained facts about the forgotten company's partners."""
        gone = self._contracts_of(set(self.splits[self.split_name(split)]))
        return self._items(self._contracts_of(self.neighbours(split)) - gone)

    def side_sets(self, split: str = "") -> dict[str, tuple[str, list[Example]]]:
        return {"neighbour_contracts": ("retain", self.linked_set(split))}

    def training_set(self, split: str, oracle: bool) -> list[Example]:
        return self.retain_set(split) if oracle else self._items(self._contracts_of(set(self.splits["all"])))

    def texts(self) -> list[str]:
        return [t for ex in self.qa for t in (ex.question, ex.answer, ex.paraphrased_question,
                                               ex.paraphrased_answer, *ex.perturbed_answers) if t]

    # ---- files ------------------------------------------------------------------------------
    def save(self, out: str | Path) -> Path:
        out = Path(out)
        with atomic_dir(out) as tmp:
            write_jsonl(tmp / "qa.jsonl", self.qa)
            for name, obj in (("entities", self.entities), ("splits", self.splits), ("benchmark", self.meta)):
                write_json_sorted(tmp / f"{name}.json", obj)
            (tmp / "DATASHEET.md").write_text(self.datasheet(), encoding="utf-8")
        return out

    @classmethod
    def load(cls, root: Path, meta: dict[str, Any]) -> GraphBenchmark:
        if meta.get("format_version") != FORMAT_VERSION:
            raise ObliviateError(f"{root}: graph benchmark format {meta.get('format_version')!r} "
                                 f"is not supported (expected {FORMAT_VERSION}); regenerate it")
        objs = {n: read_json(root / f"{n}.json") for n in ("entities", "splits")}
        if not all(isinstance(v, dict) for v in objs.values()):
            raise ObliviateError(f"{root}: entities.json and splits.json must hold JSON objects")
        return cls(objs["entities"], objs["splits"], read_tofu_jsonl(root / "qa.jsonl"), meta)

    def datasheet(self) -> str:
        rows = [f"| {s} | {self.entities[c]['name']} | {len(self.neighbours(s))} | "
                f"{len(self.forget_set(s))} | {len(self.linked_set(s))} |"
                for s in sorted(self.splits) if s.startswith("forget_deg") for c in self.splits[s]]
        return "\n".join([
            "# Graph benchmark datasheet (PISTOL-style)", "",
            f"Generated by obliviate with seed {self.meta['seed']}: {len(self.splits['all'])} trained "
            f"companies, {len(self.splits['holdout'])} holdout companies, "
            f"{sum(e['type'] == 'contract' for e in self.entities.values())} contracts, each asked "
            "three ways (kind, year, governing town). Fictitious.", "",
            "| split | company forgotten | degree | forget items | neighbours' other items |",
            "|---|---|---|---|---|", *rows, ""])


# ---------------------------------------------------------------------------- generation
def _names(rng: random.Random, n: int) -> list[str]:
    if n > MAX_COMPANIES:
        raise ObliviateError(f"--entities {n} (with the holdout) is more than the graph mode's "
                             f"{MAX_COMPANIES} distinct company names")
    taken: set[str] = set()
    out = []
    while len(out) < n:
        name = f"{''.join(rng.choice(_SYLLABLES) for _ in range(2)).capitalize()} {rng.choice(_SUFFIX)}"
        if name not in taken:
            taken.add(name)
            out.append(name)
    return out


def _contract_items(rng: random.Random, cid: str, a: str, b: str, attrs: dict[str, str]) -> list[Example]:
    """The contract asked three ways; paraphrased and perturbed answers put a lead-in before the
    answer's wording, as the person mode does (a tiny model carries a fact across that)."""
    def fill(t: str, o: str) -> str:
        return t.format(a=a, b=b, o=o, art="an" if o[0] in "aeiou" else "a")

    items = []
    for rel, (q, pq, ans) in TEMPLATES.items():
        wrong = rng.sample([w for w in _POOLS[rel] if w != attrs[rel]], 5)

        def led(o: str, rel: str = rel, ans: str = ans) -> str:
            return f"{_LEADS[rel]} {fill(ans, o)}"

        items.append(Example(
            id=f"{cid}.{rel}", entity=cid, relation=rel, question=fill(q, attrs[rel]),
            paraphrased_question=fill(pq, attrs[rel]), answer=fill(ans, attrs[rel]),
            paraphrased_answer=led(attrs[rel]), perturbed_answers=tuple(led(w) for w in wrong)))
    return items


def _edges(rng: random.Random, background: list[str], probes: dict[str, int], holdout: list[str]) -> list[tuple[str, str]]:
    """Background pairs (PICKS drawn by each company), each probe company's exact degree
    (its partners drawn from the background), and holdout pairs among holdout companies."""
    edges: set[tuple[str, str]] = set()
    for group in (background, holdout):
        for c in group:
            for other in rng.sample([o for o in group if o != c], min(PICKS, len(group) - 1)):
                edges.add((min(c, other), max(c, other)))
    for probe, degree in probes.items():
        for partner in rng.sample(background, degree):
            edges.add((probe, partner))
    return sorted(edges)


def generate_graph(seed: int = 0, entities: int = 40, degrees: tuple[int, ...] = (1, 2, 4, 8)) -> GraphBenchmark:
    """Companies, contracts and degree splits (see the module doc); same seed, same bytes."""
    degrees = tuple(sorted(set(degrees)))
    if not degrees or min(degrees) < 1:
        raise ObliviateError("--degrees must be positive integers (e.g. 1,2,4,8)")
    background_n = entities - len(degrees)
    if background_n < max(degrees) + 2:
        raise ObliviateError(f"--entities {entities} is too few for degree {max(degrees)}: the "
                             f"background needs at least {max(degrees) + 2} companies besides "
                             f"the {len(degrees)} to forget")
    rng = random.Random(seed)
    n_hold = max(3, round(entities * 0.1))
    names = _names(rng, entities + n_hold)
    ids = [f"o{i:03d}" for i in range(len(names))]
    ents: dict[str, dict[str, Any]] = {i: {"type": "company", "name": n} for i, n in zip(ids, names, strict=True)}
    background, probe_ids, holdout = ids[:background_n], ids[background_n:entities], ids[entities:]
    probes = dict(zip(probe_ids, degrees, strict=True))
    qa: list[Example] = []
    for k, (a, b) in enumerate(_edges(rng, background, probes, holdout)):
        cid = f"k{k:04d}"
        attrs = {"kind": rng.choice(_KINDS), "year": rng.choice(_YEARS), "law": rng.choice(_TOWNS)}
        ents[cid] = {"type": "contract", "a": a, "b": b, **attrs}
        qa += _contract_items(rng, cid, ents[a]["name"], ents[b]["name"], attrs)
    splits = {"all": ids[:entities], "holdout": holdout,
              **{f"forget_deg{d}": [p] for p, d in probes.items()}}
    meta = {"kind": KIND, "format_version": FORMAT_VERSION, "seed": seed, "entities": entities,
            "degrees": list(degrees), "generator": "obliviate.graph"}
    return GraphBenchmark(ents, splits, qa, meta)
