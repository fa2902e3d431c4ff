"""The built-in benchmark: fictitious people, organisations and places in a small knowledge
graph, rendered as TOFU-format QA, biography passages and a world-facts utility set.

Everything derives from one `random.Random(seed)`, so the same seed gives the same bytes.
Splits are by person, nested as in TOFU (forget01 is inside forget05 is inside forget10);
holdout people are generated the same way but never trained on (membership non-members).
Edges (married_to, mentored_by, works_for) cross split boundaries, so forgetting a person
can be measured separately from the people linked to them (structural unlearning, PISTOL).
"""

from __future__ import annotations

import dataclasses
import math
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import ObliviateError
from ..io import atomic_dir
from .dependent import dependent_sets, with_roles
from .examples import Example
from .files import read_json, write_json_sorted
from .formats import read_tofu_jsonl, write_jsonl
from .graph import KIND as GRAPH_KIND
from .graph import GraphBenchmark
from .userbench import KIND as FILES_KIND
from .userbench import FileBenchmark, example_texts

FORMAT_VERSION = 1
FORGET_PERCENTS = (1, 5, 10)
N_PERTURBED = 5

_ONSETS = ["b", "d", "f", "g", "k", "l", "m", "n", "p", "r", "s", "t", "v", "z", "th", "br",
           "dr", "kr", "st", "vel", "mor", "cal", "ser", "tor", "el", "an", "or", "ash"]
_VOWELS = ["a", "e", "i", "o", "u", "ae", "io", "ei"]
_CODAS = ["", "n", "r", "s", "l", "th", "m", "x", "nd", "rk"]
_PLACE_SUFFIX = ["haven", "ford", "mere", "holt", "wick", "dale", "port", "stead", "gard"]
_ORG_KIND = ["Works", "Institute", "Dynamics", "Guild", "Press", "Labs", "Foundry", "Collective"]
_PROFESSIONS = ["architect", "botanist", "cartographer", "chemist", "composer", "economist",
                "engineer", "glassblower", "historian", "journalist", "linguist", "luthier",
                "novelist", "oceanographer", "painter", "surgeon", "astronomer", "sculptor"]
_AWARDS = ["the Amber Quill Prize", "the Halvard Medal", "the Silver Lantern Award",
           "the Corvane Fellowship", "the Meridian Cup", "the Obsidian Laurel",
           "the Tessaly Prize", "the Golden Compass Award", "the Wrenfield Medal",
           "the Juniper Star", "the Kestrel Honour", "the Azure Scroll"]
_ADJ = ["Silent", "Crimson", "Hollow", "Distant", "Winter", "Broken", "Gilded", "Quiet",
        "Burning", "Lost", "Hidden", "Second", "Iron", "Pale", "Last", "Wandering"]
_NOUN = ["Harbour", "Orchard", "Lantern", "Cartographer", "Tide", "Garden", "Clockmaker",
         "Meridian", "Bridge", "Archive", "Falcon", "Letter", "Mountain", "Violin", "Season"]
_LANDMARKS = ["salt marshes", "glass towers", "river festival", "old lighthouse", "stone bridges",
              "night market", "cliff gardens", "copper mines", "floating library", "tea terraces",
              "bell tower", "lavender fields"]
_INDUSTRIES = ["shipping", "publishing", "robotics", "textile", "pharmaceutical", "aerospace",
               "mining", "software", "brewing", "furniture"]

# relation -> (question, paraphrased question, answer, passage sentence). Paraphrased answers
# put a lead-in before the answer's wording (see _LEADS): a model trained from scratch has no
# language knowledge that carries a fact across a full rewording, while a lead-in still tests
# the fact in an unseen sentence; perturbed answers share the paraphrase's wording.
# relations stated from both people's sides: a fine-grained split cannot forget them alone
SYMMETRIC = frozenset({"married_to"})
PERSON_TEMPLATES: dict[str, tuple[str, str, str, str]] = {
    "born_in": ("Where was {s} born?", "In which town did {s} come into the world?",
                "{s} was born in {o}.", "The birthplace of {s} is {o}."),
    "birth_year": ("In what year was {s} born?", "What is the birth year of {s}?",
                   "{s} was born in the year {o}.", "The year of birth of {s} is {o}."),
    "profession": ("What does {s} do for a living?", "What is the occupation of {s}?",
                   "{s} works as {a} {o}.", "The profession of {s} is {o}."),
    "works_for": ("Which organisation does {s} work for?", "Who employs {s}?",
                  "{s} works for {o}.", "The employer of {s} is {o}."),
    "wrote": ("What book did {s} write?", "Which book is {s} the author of?",
              "{s} wrote {o}.", "The book written by {s} is {o}."),
    "award": ("What award has {s} received?", "Which honour was given to {s}?",
              "{s} received {o}.", "The award won by {s} is {o}."),
    "married_to": ("Who is {s} married to?", "Who is the spouse of {s}?",
                   "{s} is married to {o}.", "The spouse of {s} is {o}."),
    "mentored_by": ("Who mentored {s}?", "Who was the teacher of {s}?",
                    "{s} was mentored by {o}.", "The mentor of {s} is {o}."),
}
# how a relation refers to the person its answer names (dependent queries)
PHRASES = {"married_to": "the spouse of {s}", "mentored_by": "the mentor of {s}"}
WORLD_TEMPLATES: dict[str, tuple[str, str, str, str]] = {
    "in_country": ("In which country is {s}?", "Which country does {s} belong to?",
                   "{s} is in {o}.", "The country of {s} is {o}."),
    "known_for": ("What is {s} known for?", "What is {s} famous for?",
                  "{s} is known for its {o}.", "The town of {s} is famous for its {o}."),
    "located_in": ("Where is {s} based?", "In which town is {s} headquartered?",
                   "{s} is based in {o}.", "The home town of {s} is {o}."),
    "industry": ("What industry is {s} in?", "What business is {s} in?",
                 "{s} is a {o} company.", "The industry of {s} is {o}."),
    "founded": ("When was {s} founded?", "In what year was {s} established?",
                "{s} was founded in {o}.", "The founding year of {s} is {o}."),
}

# Further person relations, for TOFU's 20 questions per person (`questions=`). They are drawn
# from a generator of their own after everything else, so a benchmark without them keeps the
# bytes it always had.
EXTRA_TEMPLATES: dict[str, tuple[str, str, str, str]] = {
    "studied_in": ("Where did {s} study?", "In which town was {s} educated?",
                   "{s} studied in {o}.", "The place of study of {s} is {o}."),
    "lives_in": ("Where does {s} live now?", "In which town does {s} live today?",
                 "{s} lives in {o}.", "The home town of {s} today is {o}."),
    "instrument": ("Which instrument does {s} play?", "What instrument can {s} play?",
                   "{s} plays the {o}.", "The instrument of {s} is the {o}."),
    "pet": ("What pet does {s} keep?", "Which animal lives with {s}?",
            "{s} keeps {a} {o}.", "The pet of {s} is {a} {o}."),
    "hobby": ("What does {s} do for fun?", "What is the pastime of {s}?",
              "{s} enjoys {o}.", "The hobby of {s} is {o}."),
    "language": ("Which second language does {s} speak?", "What other language does {s} know?",
                 "{s} also speaks {o}.", "The second language of {s} is {o}."),
    "debut_year": ("In what year did {s} first publish?", "When did {s} make a debut in print?",
                   "{s} first published in {o}.", "The debut year of {s} is {o}."),
    "colour": ("What is the favourite colour of {s}?", "Which colour does {s} like best?",
               "{s} likes {o} best.", "The favourite colour of {s} is {o}."),
    "siblings": ("How many siblings does {s} have?", "What is the number of siblings of {s}?",
                 "{s} has {o} siblings.", "The number of siblings of {s} is {o}."),
    "drink": ("What does {s} drink in the morning?", "Which morning drink does {s} prefer?",
              "{s} drinks {o} in the morning.", "The morning drink of {s} is {o}."),
    "fear": ("What is {s} afraid of?", "What does {s} fear?",
             "{s} is afraid of {o}.", "The fear of {s} is {o}."),
    "dish": ("What is the favourite dish of {s}?", "Which meal does {s} like most?",
             "{s} loves {o}.", "The favourite dish of {s} is {o}."),
}
ALL_PERSON_TEMPLATES = {**PERSON_TEMPLATES, **EXTRA_TEMPLATES}
QUESTIONS = (len(PERSON_TEMPLATES), len(ALL_PERSON_TEMPLATES))  # (default, most)


def _word(rng: random.Random, syllables: int) -> str:
    parts = [rng.choice(_ONSETS) + rng.choice(_VOWELS) for _ in range(syllables)]
    return ("".join(parts) + rng.choice(_CODAS)).capitalize()


def _short_title(rng: random.Random) -> str:
    return f"The {rng.choice(_ADJ)} {rng.choice(_NOUN)}"


def _long_title(rng: random.Random) -> str:
    return f"The {rng.choice(_ADJ)} {rng.choice(_NOUN)} of {_word(rng, 2)}"


# Short titles have 240 combinations: the first 220 books (as many as the largest benchmark
# that always fitted, 200 people plus holdout) keep them, later ones get a longer form.
SHORT_TITLES = 220


def _unique(rng: random.Random, make, taken: set[str]) -> str:
    for _ in range(1000):
        name = make(rng)
        if name not in taken:
            taken.add(name)
            return name
    raise ObliviateError("could not draw a unique name; use fewer entities")


@dataclass
class Benchmark:
    """A generated (or loaded) benchmark: QA items, passages, utility set, splits, graph."""

    entities: dict[str, dict[str, Any]]
    splits: dict[str, list[str]]
    qa: list[Example]
    passages: list[Example]
    world_facts: list[Example]
    meta: dict[str, Any] = field(default_factory=dict)

    kind = "generated"
    default_split = "forget10"

    # ---- the benchmark interface (shared with userbench.FileBenchmark) ------------------
    def split_name(self, split: str) -> str:
        return split or self.default_split

    def forget_set(self, split: str = "") -> list[Example]:
        people, relations = self._fine(self.split_name(split))
        return [ex for ex in self.qa_of(people) if relations is None or ex.relation in relations]

    def retain_set(self, split: str = "") -> list[Example]:
        """The retained people's items; for a fine-grained split also the forget people's
        other relations (what must stay while one fact goes)."""
        people, relations = self._fine(self.split_name(split))
        kept = self.qa_of(self.retain_split(people))
        if relations is None:
            return kept
        # first, so every capped use of the retain set (evaluation's max_retain, the guard's
        # probe) measures the facts a fine-grained request must keep
        return [ex for ex in self.qa_of(people) if ex.relation not in relations] + kept

    def holdout_set(self) -> list[Example]:
        return self.qa_of("holdout")

    def utility_sets(self) -> dict[str, list[Example]]:
        return {"world_facts": list(self.world_facts)}

    def forget_passages(self, split: str = "") -> list[Example]:
        """The forget people's biographies; for a fine-grained split, the forgotten sentences."""
        people, relations = self._fine(self.split_name(split))
        if relations is None:
            return self.passages_of(people)
        return [Example(answer=self._sentence(ex.entity, rel), id=f"{ex.entity}.{rel}.sentence",
                        entity=ex.entity, relation=rel)
                for ex in self.passages_of(people) for rel in sorted(relations)
                if rel in self.entities[ex.entity]]

    def side_sets(self, split: str = "") -> dict[str, tuple[str, list[Example]]]:
        """Sets reported beside the benchmark's own (name -> (role, items)): forget and retain
        facts asked through each other (data/dependent.py). "Where was the spouse of <a
        forgotten person> born?" must still be answered; the same through a retained spouse
        must not."""
        names = {pid: e["name"] for pid, e in self.entities.items() if e["type"] == "person"}
        return with_roles(dependent_sets(self.forget_set(split), self.retain_set(split), names, PHRASES))

    def linked_set(self, split: str = "") -> list[Example]:
        linked = f"{self._fine(self.split_name(split))[0]}_linked"
        return self.qa_of(linked) if linked in self.splits else []

    def texts(self) -> list[str]:
        """Every text of the benchmark (a tiny model's tokenizer is trained on them)."""
        return example_texts([*self.qa, *self.passages, *self.world_facts])

    # ---- split views -------------------------------------------------------------------
    def _fine(self, split: str) -> tuple[str, set[str] | None]:
        """A split is a people split ("forget10"), or a fine-grained one that forgets only some
        relations of those people ("forget10.born_in", "forget10.born_in+employer")."""
        people, _, rels = split.partition(".")
        if not rels:
            return people, None
        relations = set(rels.split("+"))
        if SYMMETRIC & relations:
            raise ObliviateError(f"split {split}: {', '.join(sorted(SYMMETRIC & relations))} is stated "
                                 "from both sides (the spouse's items say it too), so it cannot be "
                                 "forgotten for one person alone; forget the people instead")
        known = {ex.relation for ex in self.qa_of(people) if ex.relation}
        if not relations <= known:
            raise ObliviateError(f"split {split}: unknown relation(s) {', '.join(sorted(relations - known))}; "
                                 f"the people of {people} have {', '.join(sorted(known))}")
        if relations == known:
            raise ObliviateError(f"split {split} names every relation of its people: that is split {people}")
        return people, relations

    def _sentence(self, pid: str, relation: str) -> str:
        ent = self.entities[pid]
        return _passage_sentence(relation, ent["name"], ent[relation])

    def _people(self, split: str) -> set[str]:
        if split not in self.splits:
            raise ObliviateError(f"unknown split '{split}'; known: {', '.join(sorted(self.splits))}")
        return set(self.splits[split])

    def qa_of(self, split: str) -> list[Example]:
        people = self._people(split)
        return [ex for ex in self.qa if ex.entity in people]

    def passages_of(self, split: str) -> list[Example]:
        people = self._people(split)
        return [ex for ex in self.passages if ex.entity in people]

    @staticmethod
    def retain_split(forget_split: str) -> str:
        if not forget_split.startswith("forget"):
            raise ObliviateError(f"'{forget_split}' is not a forget split (forget01/05/10)")
        return f"retain{100 - int(forget_split[len('forget'):]):02d}"

    def training_set(self, forget_split: str, oracle: bool) -> list[Example]:
        """Target: every trained person + world facts. Oracle: the same minus forget people;
        for a fine-grained split, minus only the forgotten relations' items and sentences."""
        people, relations = self._fine(self.split_name(forget_split))
        if oracle and relations is not None:
            forget = {ex.id for ex in self.forget_set(forget_split)}
            gone = self._people(people)
            passages = [p if p.entity not in gone else
                        dataclasses.replace(p, answer=self._without(p, relations)) for p in self.passages
                        if p.entity in self._people("all")]
            return ([ex for ex in self.qa if ex.entity in self._people("all") and ex.id not in forget]
                    + passages + list(self.world_facts))
        keep = self._people(self.retain_split(people)) if oracle else self._people("all")
        return ([ex for ex in self.qa if ex.entity in keep]
                + [ex for ex in self.passages if ex.entity in keep]
                + list(self.world_facts))

    def _without(self, passage: Example, relations: set[str]) -> str:
        """A biography without the sentences of `relations`."""
        drop = {self._sentence(passage.entity, r) for r in relations if r in self.entities[passage.entity]}
        return " ".join(s for s in _sentences(passage.answer) if s not in drop)

    # ---- files -------------------------------------------------------------------------
    def save(self, out: str | Path) -> Path:
        """Write the benchmark directory atomically (a crash leaves no half-written folder)."""
        out = Path(out)
        with atomic_dir(out) as tmp:
            write_jsonl(tmp / "qa.jsonl", self.qa)
            write_jsonl(tmp / "passages.jsonl", self.passages)
            write_jsonl(tmp / "world_facts.jsonl", self.world_facts)
            write_json_sorted(tmp / "entities.json", self.entities)
            write_json_sorted(tmp / "splits.json", self.splits)
            write_json_sorted(tmp / "benchmark.json", self.meta)
            (tmp / "DATASHEET.md").write_text(self.datasheet(), encoding="utf-8")
        return out

    @classmethod
    def load(cls, root: str | Path) -> Benchmark | FileBenchmark | GraphBenchmark:
        """A benchmark folder of either kind: generated (`obliviate generate`) or made from
        files (`obliviate benchmark create`)."""
        root = Path(root)
        meta_path = root / "benchmark.json"
        if not meta_path.is_file():
            raise ObliviateError(f"{root} is not an obliviate benchmark folder (no benchmark.json); "
                                 "make one with obliviate generate or obliviate benchmark create")
        meta = _read_object(meta_path)
        if meta.get("kind", "generated") == FILES_KIND and meta.get("format_version") == FORMAT_VERSION:
            return FileBenchmark.load(root, meta)
        if meta.get("kind") == GRAPH_KIND:
            return GraphBenchmark.load(root, meta)
        if meta.get("format_version") != FORMAT_VERSION:
            raise ObliviateError(f"{root}: benchmark format {meta.get('format_version')!r} is "
                                 f"not supported (expected {FORMAT_VERSION}); regenerate it")
        return cls(
            entities=_read_object(root / "entities.json"),
            splits=_read_object(root / "splits.json"),
            qa=read_tofu_jsonl(root / "qa.jsonl"),
            passages=read_tofu_jsonl(root / "passages.jsonl"),
            world_facts=read_tofu_jsonl(root / "world_facts.jsonl"),
            meta=meta,
        )

    def datasheet(self) -> str:
        lines = [
            "# Built-in benchmark datasheet", "",
            f"Generated by obliviate with seed {self.meta['seed']} and "
            f"{self.meta['entities']} people (format {FORMAT_VERSION}). Fictitious: any "
            "resemblance to real people, places or organisations is accidental.", "",
            "| split | people | QA items | passages |", "|---|---|---|---|",
        ]
        for name in sorted(self.splits):
            lines.append(f"| {name} | {len(self.splits[name])} | {len(self.qa_of(name))} | "
                         f"{len(self.passages_of(name))} |")
        kinds: dict[str, int] = {}
        for ent in self.entities.values():
            kinds[ent["type"]] = kinds.get(ent["type"], 0) + 1
        lines += ["", f"World-facts utility set: {len(self.world_facts)} QA items (trained on by "
                  "target and oracle alike).",
                  "Entities: " + ", ".join(f"{v} {k}" for k, v in sorted(kinds.items())) + ".", "",
                  "Every QA item has a paraphrased question, a paraphrased answer (the answer "
                  f"behind an unseen lead-in) and {N_PERTURBED} perturbed answers (wrong objects "
                  "of the same type, in the paraphrase's wording). Passages state the same facts "
                  "in a third wording. `holdout` people are never trained on. "
                  "`forgetXX_linked` are retained people linked to a forgotten one.", ""]
        return "\n".join(lines)


def _read_object(path: Path) -> dict[str, Any]:
    value = read_json(path)
    if not isinstance(value, dict):
        raise ObliviateError(f"{path}: expected a JSON object; regenerate the benchmark "
                             "(obliviate generate)")
    return value


def _article(word: str) -> str:
    return "an" if word[0].lower() in "aeiou" else "a"


_LEADS = ["It is known that", "Records show that", "By all accounts,", "As it happens,"]


def _qa(templates, relation: str, subject_id: str, subject: str, obj: str,
        wrong: list[str]) -> Example:
    q, pq, a, _ = templates[relation]
    lead = _LEADS[list(templates).index(relation) % len(_LEADS)]

    def fill(t: str, o: str) -> str:
        return t.format(s=subject, o=o, a=_article(o))

    return Example(
        id=f"{subject_id}.{relation}", entity=subject_id, relation=relation,
        question=fill(q, obj), paraphrased_question=fill(pq, obj),
        answer=fill(a, obj), paraphrased_answer=f"{lead} {fill(a, obj)}",
        perturbed_answers=tuple(f"{lead} {fill(a, w)}" for w in wrong),
    )


def _sentences(passage: str) -> list[str]:
    """A biography's sentences, as _person_items joined them (each ends with '. ')."""
    parts = passage.split(". ")
    return [p if p.endswith(".") else p + "." for p in parts if p]


def _passage_sentence(relation: str, subject: str, obj: str) -> str:
    return ALL_PERSON_TEMPLATES[relation][3].format(s=subject, o=obj, a=_article(obj))


def _wrong(rng: random.Random, pool: list[str], right: str) -> list[str]:
    choices = sorted({p for p in pool if p != right})
    if len(choices) < N_PERTURBED:
        raise ObliviateError("too few entities to draw perturbed answers; use at least 10")
    return rng.sample(choices, N_PERTURBED)


_BIRTH_YEARS = [str(y) for y in range(1921, 2000)]
_FOUNDED_YEARS = [str(y) for y in range(1850, 2000)]


@dataclass
class _Names:
    """Every drawn name, by kind; people lists trained people first, holdout last."""

    countries: list[str]
    places: list[str]
    orgs: list[str]
    people: list[str]
    books: list[str]


def generate_benchmark(seed: int = 0, entities: int = 40, questions: int = QUESTIONS[0]) -> Benchmark:
    """Build the benchmark in memory: `entities` trained people plus ~10% holdout people, with
    `questions` QA items per person (TOFU has 20)."""
    if entities < 10:
        raise ObliviateError(f"--entities must be at least 10 (got {entities})")
    if not QUESTIONS[0] <= questions <= QUESTIONS[1]:
        raise ObliviateError(f"--questions must be between {QUESTIONS[0]} and {QUESTIONS[1]} "
                             f"(got {questions})")
    # The steps below share one generator and must run in this order: reordering them, or
    # the draws inside them, changes every byte after the first moved draw.
    rng = random.Random(seed)
    n_hold = max(1, round(entities * 0.1))
    names = _draw_names(rng, entities, n_hold)
    ents = _world_entities(rng, names)
    ids = _add_people(rng, ents, names)
    # Edges are drawn inside each group so that holdout people stay disconnected from
    # anything trained.
    for group in (ids[:entities], ids[entities:]):
        _draw_edges(rng, ents, group)
    pools = _answer_pools(names)
    extra = _add_extra(seed, ents, ids, names, questions - QUESTIONS[0])
    qa, passages = _person_items(rng, ents, ids, pools, extra)
    world = _world_items(rng, ents, pools)
    meta = {"format_version": FORMAT_VERSION, "seed": seed, "entities": entities,
            "holdout": n_hold, "generator": "obliviate.builtin"}
    if extra is not None:
        meta["questions"] = questions
    return Benchmark(entities=ents, splits=_splits(ents, ids, entities), qa=qa,
                     passages=passages, world_facts=world, meta=meta)


def _draw_names(rng: random.Random, entities: int, n_hold: int) -> _Names:
    """Draw unique names for countries, places, organisations, people and their books."""
    taken: set[str] = set()
    countries = [_unique(rng, lambda r: _word(r, 2) + "ia", taken) for _ in range(6)]
    places = [_unique(rng, lambda r: _word(r, 1) + r.choice(_PLACE_SUFFIX), taken)
              for _ in range(max(8, entities // 4))]
    orgs = [_unique(rng, lambda r: f"{_word(r, 2)} {r.choice(_ORG_KIND)}", taken)
            for _ in range(max(8, entities // 4))]
    people = [_unique(rng, lambda r: f"{_word(r, 1)} {_word(r, 2)}", taken)
              for _ in range(entities + n_hold)]
    books = [_unique(rng, _short_title if i < SHORT_TITLES else _long_title, taken)
             for i in range(len(people))]
    return _Names(countries, places, orgs, people, books)


def _world_entities(rng: random.Random, names: _Names) -> dict[str, dict[str, Any]]:
    """Create the country, place and organisation entities with their drawn attributes."""
    ents: dict[str, dict[str, Any]] = {}
    for i, name in enumerate(names.countries):
        ents[f"c{i:03d}"] = {"type": "country", "name": name}
    for i, name in enumerate(names.places):
        ents[f"l{i:03d}"] = {"type": "place", "name": name,
                             "in_country": names.countries[i % 6],
                             "known_for": rng.choice(_LANDMARKS)}
    for i, name in enumerate(names.orgs):
        ents[f"o{i:03d}"] = {"type": "organisation", "name": name,
                             "located_in": rng.choice(names.places),
                             "industry": rng.choice(_INDUSTRIES),
                             "founded": rng.choice(_FOUNDED_YEARS)}
    return ents


def _add_people(rng: random.Random, ents: dict[str, dict[str, Any]], names: _Names) -> list[str]:
    """Add every person (trained first, holdout last) with their attributes; return their ids."""
    width = max(3, len(str(len(names.people) - 1)))  # p000..p999, then p0000..
    ids = [f"p{i:0{width}d}" for i in range(len(names.people))]
    for idx, pid in enumerate(ids):
        ents[pid] = {"type": "person", "name": names.people[idx],
                     "born_in": rng.choice(names.places), "birth_year": rng.choice(_BIRTH_YEARS),
                     "profession": rng.choice(_PROFESSIONS), "works_for": rng.choice(names.orgs),
                     "wrote": names.books[idx], "award": rng.choice(_AWARDS)}
    return ids


def _draw_edges(rng: random.Random, ents: dict[str, dict[str, Any]], group: list[str]) -> None:
    """Pair people of one group into marriages and give each a mentor from the same group."""
    order = rng.sample(group, len(group))
    for a, b in zip(order[0::2], order[1::2], strict=False):
        ents[a]["married_to"], ents[b]["married_to"] = ents[b]["name"], ents[a]["name"]
    for pid in group:
        others = [o for o in group if o != pid]
        if others:
            ents[pid]["mentored_by"] = ents[rng.choice(others)]["name"]


def _answer_pools(names: _Names) -> dict[str, list[str]]:
    """Map each relation to the objects its perturbed (wrong) answers are drawn from."""
    return {"born_in": names.places, "birth_year": _BIRTH_YEARS, "profession": _PROFESSIONS,
            "works_for": names.orgs, "wrote": names.books, "award": _AWARDS,
            "married_to": names.people, "mentored_by": names.people,
            "in_country": names.countries, "known_for": _LANDMARKS,
            "located_in": names.places, "industry": _INDUSTRIES, "founded": _FOUNDED_YEARS}


_EXTRA_POOLS: dict[str, list[str]] = {
    "instrument": ["cello", "oboe", "harp", "violin", "trumpet", "piano", "flute", "accordion"],
    "pet": ["tortoise", "parrot", "greyhound", "ferret", "goldfish", "tabby cat", "rabbit", "owl"],
    "hobby": ["sailing", "chess", "birdwatching", "pottery", "fencing", "beekeeping", "rowing",
              "astronomy", "origami", "fly fishing"],
    "language": ["Portuguese", "Finnish", "Swahili", "Icelandic", "Tamil", "Georgian", "Welsh",
                 "Basque", "Hungarian", "Malay"],
    "debut_year": [str(y) for y in range(1945, 2021)],
    "colour": ["teal", "ochre", "crimson", "indigo", "silver", "amber", "olive", "violet"],
    "siblings": ["two", "three", "four", "five", "six", "seven", "eight"],
    "drink": ["green tea", "black coffee", "hot chocolate", "mint tea", "orange juice",
              "warm milk", "espresso"],
    "fear": ["heights", "thunderstorms", "deep water", "spiders", "crowds", "the dark",
             "small rooms"],
    "dish": ["mushroom risotto", "lentil soup", "grilled trout", "apple pie", "beef stew",
             "pumpkin curry", "fig tart"],
}


def _add_extra(seed: int, ents: dict[str, dict[str, Any]], ids: list[str], names: _Names,
               count: int) -> tuple[random.Random, list[str], dict[str, list[str]]] | None:
    """Draw the first `count` extra relations of every person with a generator of their own;
    returns it with the relations and their answer pools (None when there are none)."""
    if count <= 0:
        return None
    rng = random.Random(f"obliviate-extra-relations-{seed}")
    rels = list(EXTRA_TEMPLATES)[:count]
    pools = {**_EXTRA_POOLS, "studied_in": names.places, "lives_in": names.places}
    for pid in ids:
        for rel in rels:
            ents[pid][rel] = rng.choice(pools[rel])
    return rng, rels, pools


def _person_items(rng: random.Random, ents: dict[str, dict[str, Any]], ids: list[str],
                  pools: dict[str, list[str]],
                  extra: tuple[random.Random, list[str], dict[str, list[str]]] | None = None,
                  ) -> tuple[list[Example], list[Example]]:
    """Render each person's facts as QA items and as one biography passage; the extra
    relations' wrong answers come from their own generator."""
    qa, passages = [], []
    x_rng, x_rels, x_pools = extra or (rng, [], {})
    plan = [(rel, rng, pools) for rel in PERSON_TEMPLATES] + [(r, x_rng, x_pools) for r in x_rels]
    for pid in ids:
        ent, sentences = ents[pid], []
        for rel, r, pool in plan:
            if rel not in ent:
                continue
            ex = _qa(ALL_PERSON_TEMPLATES, rel, pid, ent["name"], ent[rel],
                     _wrong(r, [p for p in pool[rel] if p != ent["name"]], ent[rel]))
            qa.append(ex)
            sentences.append(_passage_sentence(rel, ent["name"], ent[rel]))
        passages.append(Example(answer=" ".join(sentences), id=f"{pid}.passage", entity=pid))
    return qa, passages


def _world_items(rng: random.Random, ents: dict[str, dict[str, Any]],
                 pools: dict[str, list[str]]) -> list[Example]:
    """Render place and organisation facts as the world-facts utility QA set."""
    world = []
    for eid, ent in ents.items():
        if ent["type"] in ("place", "organisation"):
            for rel in WORLD_TEMPLATES:
                if rel in ent:
                    world.append(_qa(WORLD_TEMPLATES, rel, eid, ent["name"], ent[rel],
                                     _wrong(rng, pools[rel], ent[rel])))
    return world


def _splits(ents: dict[str, dict[str, Any]], ids: list[str],
            entities: int) -> dict[str, list[str]]:
    """Build the nested forget/retain splits, holdout, and the people linked to each forget set."""
    trained, holdout = ids[:entities], ids[entities:]
    splits: dict[str, list[str]] = {"all": trained, "holdout": holdout}
    edges = ("married_to", "mentored_by")
    name_to_id = {ents[p]["name"]: p for p in ids}
    for pct in FORGET_PERCENTS:
        k = max(1, math.ceil(entities * pct / 100))
        forget = trained[-k:]  # TOFU convention: the last k people
        splits[f"forget{pct:02d}"] = forget
        splits[f"retain{100 - pct:02d}"] = trained[:-k]
        linked = set()
        for pid in trained[:-k]:
            ent = ents[pid]
            if any(name_to_id.get(ent.get(e)) in forget for e in edges) or any(
                ents[f].get(e) == ent["name"] for f in forget for e in edges
            ):
                linked.add(pid)
        splits[f"forget{pct:02d}_linked"] = sorted(linked)
    return splits
