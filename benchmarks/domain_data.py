"""A second dataset, in another domain: fictitious shipwrecks around a fictitious archipelago.

    python benchmarks/domain_data.py --out DIR [--seed 0] [--entities 30] [--forget-fraction 0.1]

Writes TOFU-format JSON lines that stand in for "your own data": `forget.jsonl`,
`retain.jsonl`, `holdout.jsonl` (wrecks never trained on, drawn the same way) and
`general.jsonl` (facts about the islands and their hazards that every model learns), plus a
README.md. Standalone: standard library only, one `random.Random(seed)`, so the same seed
gives the same bytes.

It is built to differ from the built-in benchmark (people with one-object relations): each
wreck has depth and crew counts (numbers with units), a sinking date, a cargo list of 2-3
items, a yes/no with a reason, a hull material of 1-3 words, and two 20-40 word
explanations (why she sank, how she was found). Each paraphrased answer restates the fact
in other words, and the perturbed answers are written in the paraphrase's words with the
fact swapped for another value of the same kind, so the truth ratio compares facts, not
styles. (A model trained from scratch carries its facts into such rewordings only weakly,
so forget quality needs a larger forget set here than on the built-in benchmark: see
benchmarks/own_data.py.)
"""

from __future__ import annotations

import argparse
import json
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

N_PERTURBED = 3
N_ISLANDS = 8
N_HAZARDS = 12
N_SEAS = 4
MAX_ENTITIES = 1000

# ---- name parts (ships: prefix + middle + ending; places: stem + suffix) ------------------
_SHIP_PRE = ["Ca", "Lo", "Me", "Sa", "Ve", "Ri", "Ma", "Ze", "Qui", "Ya", "Ho", "Pe", "Ja",
             "Nu", "Cy", "Wi", "Ola", "Eu", "Fio", "Gre", "Iso", "Lu", "Ro", "Ta"]
_SHIP_MID = ["lo", "ri", "ne", "ssa", "ma", "vi", "to", "de", "la", "ru", "sca", "mi", "ba",
             "ge", "qui", "no", "cel", "ver", "dan", "pho"]
_SHIP_END = ["na", "ra", "lla", "ta", "via", "lia", "nde", "sse", "ce", "rine", "tte", "nia"]
_PLACE_STEM = ["Kel", "Brann", "Mor", "Ost", "Tull", "Skar", "Hav", "Quel", "Dun", "Fenn",
               "Garr", "Ruth", "Yll", "Corr", "Emb", "Sith", "Varr", "Lund", "Aske", "Tross"]
_ISLAND_SUF = ["ay", "oa", "ska", "ura", "eyra", "ish"]
_TOWN_SUF = ["by", "strand", "nes", "vik", "hamn", "ster"]
_SEA_SUF = ["el", "an", "ik", "or"]
_HAZARD_KIND = ["Ledges", "Shoals", "Sands", "Teeth", "Skerries", "Flats"]

_MONTHS = ["January", "February", "March", "April", "May", "June", "July", "August",
           "September", "October", "November", "December"]
_CARGO = ["salt cod", "copper sheeting", "coal", "tea chests", "wool bales", "roof slates",
          "lamp oil", "pig iron", "cured hides", "china clay", "sugar", "sawn timber",
          "barley", "wine casks", "cement", "mail sacks", "glass bottles", "tinned herring"]
_HULLS = ["oak", "teak", "riveted iron", "steel plate", "pitch pine", "larch planking",
          "elm and oak", "welded steel", "composite iron", "copper-sheathed oak"]
# (weather in the answer, weather in the paraphrase)
_WEATHER = [("thick fog", "a dense fog"), ("a north-easterly gale", "a gale from the north-east"),
            ("a sudden squall", "an unexpected squall"), ("driving snow", "heavy snowfall"),
            ("a winter storm", "a storm in midwinter"), ("a moonless night", "total darkness")]
# (error in the answer, error in the paraphrase)
_ERRORS = [
    ("a week after her captain had refused to take on a local pilot",
     "the local pilot turned away by her captain"),
    ("because her compass had been badly corrected in port",
     "a compass that was never properly corrected"),
    ("with her hold loaded well past the safe mark",
     "far too much cargo stowed below"),
    ("after the lookout fell asleep during the middle watch",
     "a lookout asleep through the middle watch"),
    ("because her engines failed as the tide turned",
     "engines that broke down at the turn of the tide"),
    ("when her anchor cable parted in the heavy swell",
     "an anchor cable snapped by the swell"),
]
# (finder in the answer, finder in the paraphrase)
_FINDERS = [("a trawler snagged its nets on the hull", "a trawler caught its nets on her"),
            ("a survey ship picked up an echo on its sonar", "a sonar echo from a survey vessel"),
            ("sport divers came across the wreck by chance", "sport divers stumbled upon her"),
            ("a dredging crew struck timbers on the seabed", "a dredger hit her timbers"),
            ("an exceptionally low tide uncovered the bow", "a very low tide laid bare her bow")]
# (identifier in the answer, identifier in the paraphrase)
_IDENTIFIERS = [("the name cast on her bell", "the lettering on her bell"),
                ("her carved figurehead", "the figurehead carved for her"),
                ("a brass builder's plate", "the builder's plate of brass"),
                ("the cargo manifest found in a sealed tin", "a manifest kept dry in a tin"),
                ("the serial number on her boiler", "her boiler's serial number")]
_DELAYS = [("a month later", "one month"), ("two weeks later", "two weeks"),
           ("the following summer", "a year"), ("three days later", "three days"),
           ("six months later", "half a year")]
# (allowed, reason in the answer ({s}: the ship), reason in the paraphrase)
_DIVING = [
    (False, "the {s} is a protected war grave", "because the site is kept by law as a war grave"),
    (False, "the hull of the {s} is unstable and could collapse",
     "because her hull might cave in at any moment"),
    (False, "unexploded shells lie in the hold of the {s}",
     "because live shells are still scattered below decks"),
    (False, "the {s} lies across a busy shipping lane",
     "because the wreck sits in a crowded shipping lane"),
    (True, "but only with a permit to dive on the {s} from the harbour office",
     "as long as they carry a harbour permit"),
    (True, "the {s} is a marked and buoyed dive trail", "and a buoyed trail leads them around her"),
    (True, "but only at slack water, when the {s} is safe to reach",
     "though only while the tide is slack"),
    (True, "the {s} is open to every diver", "since nobody restricts access to the wreck"),
]
# (danger in the answer, danger in the paraphrase), for the hazards of the general set
_DANGERS = [
    ("They are covered at high tide and the current sets straight onto them.",
     "High water hides them, and the stream carries ships directly towards them."),
    ("Their rocks shift with every storm, so no chart of them stays right for long.",
     "Storms keep moving the rocks around, which makes every chart of them out of date."),
    ("Fog gathers over them on most mornings and hides the warning buoys.",
     "Most mornings a fog settles there and the marker buoys cannot be seen."),
    ("Strong eddies form around them and turn a ship broadside to the waves.",
     "Swirling eddies there swing a vessel side-on to the sea."),
    ("The sand over them is soft, and a grounded ship sinks into it within a day.",
     "A ship that runs aground there is swallowed by the soft sand inside a day."),
    ("A compass goes wrong near them because of the iron in the seabed.",
     "Iron in the rock below throws every compass off course close by."),
]
_FERRY_MINUTES = [0, 10, 15, 20, 30, 40, 45, 50]
_NUMBER_WORDS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]

Item = dict[str, Any]


# ---- names ---------------------------------------------------------------------------------
def _unique(rng: random.Random, make: Callable[[random.Random], str], taken: set[str]) -> str:
    for _ in range(10000):
        name = make(rng)
        if name not in taken:
            taken.add(name)
            return name
    raise ValueError("ran out of unique names; use fewer entities")


def _ship(rng: random.Random) -> str:
    return rng.choice(_SHIP_PRE) + rng.choice(_SHIP_MID) + rng.choice(_SHIP_END)


def _place(suffixes: list[str]) -> Callable[[random.Random], str]:
    return lambda rng: rng.choice(_PLACE_STEM) + rng.choice(suffixes)


# ---- the shared world: seas, islands, harbour towns, hazards ------------------------------
def _world(rng: random.Random, taken: set[str]) -> dict[str, Any]:
    seas = [_unique(rng, _place(_SEA_SUF), taken) + " Sea" for _ in range(N_SEAS)]
    islands = []
    for i in range(N_ISLANDS):
        islands.append({
            "id": f"isl{i:02d}", "name": _unique(rng, _place(_ISLAND_SUF), taken),
            "sea": seas[i % N_SEAS], "town": _unique(rng, _place(_TOWN_SUF), taken),
            "lighthouses": rng.randint(2, 7),
            "ferry": (rng.randint(1, 5), rng.choice(_FERRY_MINUTES))})
    hazards = []
    for i in range(N_HAZARDS):
        stem = _unique(rng, lambda r: r.choice(_PLACE_STEM) + r.choice(["en", "ow", "ith"]), taken)
        hazards.append({"id": f"haz{i:02d}", "name": f"the {stem} {rng.choice(_HAZARD_KIND)}",
                        "island": islands[i % N_ISLANDS]["name"],
                        "danger": rng.randrange(len(_DANGERS))})
    return {"seas": seas, "islands": islands, "hazards": hazards}


def _cap(text: str) -> str:
    return text[:1].upper() + text[1:]


def _item(eid: str, relation: str, q: str, pq: str, answer: str, para: str,
          perturbed: list[str]) -> Item:
    return {"id": f"{eid}.{relation}", "entity": eid, "relation": relation, "question": q,
            "answer": answer, "paraphrased_question": pq, "paraphrased_answer": para,
            "perturbed_answer": perturbed}


def _wrong(rng: random.Random, draw: Callable[[], Any], right: Any,
           render: Callable[[Any], str]) -> list[str]:
    """N_PERTURBED other values of the same kind, rendered in the paraphrase's wording."""
    seen = {render(right)}
    out: list[str] = []
    for _ in range(1000):
        text = render(draw())
        if text not in seen:
            seen.add(text)
            out.append(text)
            if len(out) == N_PERTURBED:
                return out
    raise ValueError("could not draw distinct perturbed answers")


def _general_items(rng: random.Random, world: dict[str, Any]) -> list[Item]:
    """The utility set: four facts per island, two per hazard."""
    islands, hazards, seas = world["islands"], world["hazards"], world["seas"]
    towns = [isl["town"] for isl in islands]
    items: list[Item] = []
    for isl in islands:
        name, eid = isl["name"], isl["id"]

        def sea_p(v: str, name: str = name) -> str:
            return f"{name} lies out in the {v}, well away from the mainland."

        items.append(_item(eid, "sea", f"Which sea surrounds {name}?",
                           f"In which sea does {name} lie?", f"The {isl['sea']}.",
                           sea_p(isl["sea"]),
                           _wrong(rng, lambda: rng.choice(seas), isl["sea"], sea_p)))

        def town_p(v: str) -> str:
            return f"Most boats put in at {v}, the island's main harbour."

        items.append(_item(eid, "harbour", f"What is the main harbour of {name}?",
                           f"Where do boats usually put in on {name}?", f"{isl['town']}.",
                           town_p(isl["town"]),
                           _wrong(rng, lambda: rng.choice(towns), isl["town"], town_p)))

        def light_p(v: int) -> str:
            return f"The coast of the island is watched by {_NUMBER_WORDS[v]} lighthouses."

        items.append(_item(eid, "lighthouses", f"How many lighthouses stand on {name}?",
                           f"What is the number of lighthouses on {name}?",
                           f"{_cap(_NUMBER_WORDS[isl['lighthouses']])} lighthouses.",
                           light_p(isl["lighthouses"]),
                           _wrong(rng, lambda: rng.randint(2, 7), isl["lighthouses"], light_p)))

        def ferry_p(v: tuple[int, int]) -> str:
            mins = f" and {v[1]} minutes" if v[1] else ""
            return f"The boat to the mainland takes about {v[0]} hours{mins}."

        def ferry_a(v: tuple[int, int]) -> str:
            return f"{v[0]} h {v[1]:02d} min."

        items.append(_item(eid, "ferry", f"How long is the ferry crossing from {name} to the "
                           "mainland?", f"How much time does the mainland ferry from {name} "
                           "need?", ferry_a(isl["ferry"]), ferry_p(isl["ferry"]),
                           _wrong(rng, lambda: (rng.randint(1, 5), rng.choice(_FERRY_MINUTES)),
                                  isl["ferry"], ferry_p)))
    island_names = [isl["name"] for isl in islands]
    for haz in hazards:
        name, eid = haz["name"], haz["id"]

        def where_p(v: str, name: str = name) -> str:
            return f"{_cap(name)} lie just off the shore of {v}."

        items.append(_item(eid, "off_island", f"Where are {name}?",
                           f"Near which island would a sailor meet {name}?",
                           f"Off the coast of {haz['island']}.", where_p(haz["island"]),
                           _wrong(rng, lambda: rng.choice(island_names), haz["island"], where_p)))

        def danger_p(v: int) -> str:
            return _DANGERS[v][1]

        items.append(_item(eid, "danger", f"Why are {name} so dangerous?",
                           f"What makes {name} a threat to shipping?",
                           _DANGERS[haz["danger"]][0], danger_p(haz["danger"]),
                           _wrong(rng, lambda: rng.randrange(len(_DANGERS)), haz["danger"],
                                  danger_p)))
    return items


# ---- wrecks ----------------------------------------------------------------------------------
def _ordinal(n: int) -> str:
    suffix = "th" if 11 <= n % 100 <= 13 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


def _list(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def _draw_wreck(rng: random.Random, world: dict[str, Any]) -> dict[str, Any]:
    year = rng.randint(1790, 1960)
    crew = rng.randint(6, 60)
    hazard = rng.choice(world["hazards"])
    towns = [isl["town"] for isl in world["islands"]]
    return {
        "depth": rng.randint(6, 95),
        "sank": (rng.randint(1, 28), rng.randrange(12), year),
        "cargo": rng.sample(_CARGO, rng.choice([2, 3])),
        "cause": (rng.randrange(len(_WEATHER)), hazard["name"], hazard["island"],
                  rng.randrange(len(_ERRORS)), rng.randint(1, 12)),
        "diving": rng.randrange(len(_DIVING)),
        "hull": rng.choice(_HULLS),
        "crew": (crew, rng.randint(0, crew)),
        "found": (rng.randint(year + 15, 2020), rng.randrange(len(_FINDERS)),
                  rng.randrange(len(_IDENTIFIERS)), rng.randrange(len(_DELAYS))),
        "route": tuple(rng.sample(towns, 2)),
        "has_route": rng.random() < 0.6,
    }


def _wreck_items(rng: random.Random, eid: str, s: str, w: dict[str, Any],
                 world: dict[str, Any]) -> list[Item]:
    """One item per relation of wreck `s` (8 or 9 items)."""
    items: list[Item] = []
    towns = [isl["town"] for isl in world["islands"]]

    def depth_p(v: int) -> str:
        return f"Divers reach her on the seabed {v} metres below the surface."

    items.append(_item(eid, "depth", f"How deep does the wreck of the {s} lie?",
                       f"At what depth can divers find the {s}?", f"{w['depth']} metres.",
                       depth_p(w["depth"]), _wrong(rng, lambda: rng.randint(6, 95), w["depth"],
                                                   depth_p)))

    def sank_p(v: tuple[int, int, int]) -> str:
        return f"She was lost on the {_ordinal(v[0])} of {_MONTHS[v[1]]}, {v[2]}."

    d, m, y = w["sank"]
    items.append(_item(eid, "sank_on", f"When did the {s} sink?",
                       f"On what date was the {s} lost at sea?", f"{d} {_MONTHS[m]} {y}.",
                       sank_p(w["sank"]),
                       _wrong(rng, lambda: (rng.randint(1, 28), rng.randrange(12),
                                            rng.randint(1790, 1960)), w["sank"], sank_p)))

    def cargo_p(v: list[str]) -> str:
        return f"Her hold was packed with {_list(list(reversed(v)))} for the voyage."

    n_cargo = len(w["cargo"])
    other_cargo = [c for c in _CARGO if c not in w["cargo"]]  # no shared goods: wholly wrong
    items.append(_item(eid, "cargo", f"What cargo was the {s} carrying?",
                       f"What was in the hold of the {s} on her last voyage?",
                       _cap(_list(w["cargo"])) + ".", cargo_p(w["cargo"]),
                       _wrong(rng, lambda: rng.sample(other_cargo, n_cargo), w["cargo"], cargo_p)))

    # (weather, hazard, its island, error, hour)
    def cause_a(v: tuple[int, str, str, int, int]) -> str:
        return (f"The {s} went down because her crew lost their bearings in "
                f"{_WEATHER[v[0]][0]} and ran her onto {v[1]} off {v[2]} at about {v[4]} "
                f"o'clock, {_ERRORS[v[3]][0]}.")

    def cause_p(v: tuple[int, str, str, int, int]) -> str:
        return (f"In {_WEATHER[v[0]][1]}, and with {_ERRORS[v[3]][1]}, she struck {v[1]} "
                f"near {v[2]} shortly before {v[4]} o'clock and was lost with her cargo.")

    def cause_draw() -> tuple[int, str, str, int, int]:
        h = rng.choice(world["hazards"])
        return (rng.randrange(len(_WEATHER)), h["name"], h["island"], rng.randrange(len(_ERRORS)),
                rng.randint(1, 12))

    items.append(_item(eid, "cause", f"Why did the {s} sink?",
                       f"What caused the loss of the {s}?", cause_a(w["cause"]),
                       cause_p(w["cause"]), _wrong(rng, cause_draw, w["cause"], cause_p)))

    def diving_p(v: int) -> str:
        allowed, _, reason = _DIVING[v]
        verdict = "Divers may visit her" if allowed else "Divers may not visit her"
        return f"{verdict} {reason}."

    allowed, reason, _ = _DIVING[w["diving"]]
    items.append(_item(eid, "diving", f"Is diving on the {s} allowed?",
                       f"May sport divers go down to the wreck of the {s}?",
                       f"{'Yes' if allowed else 'No'}, {reason.format(s=s)}.", diving_p(w["diving"]),
                       _wrong(rng, lambda: rng.randrange(len(_DIVING)), w["diving"], diving_p)))

    def hull_p(v: str) -> str:
        return f"Her hull was built from {v}."

    items.append(_item(eid, "hull", f"What was the hull of the {s} made of?",
                       f"Which material did the builders of the {s} use for her hull?",
                       _cap(w["hull"]) + ".", hull_p(w["hull"]),
                       _wrong(rng, lambda: rng.choice(_HULLS), w["hull"], hull_p)))

    def crew_p(v: tuple[int, int]) -> str:
        alive = "none" if v[1] == 0 else str(v[1])
        return f"Of the {v[0]} people on board, {alive} came home alive."

    def crew_draw() -> tuple[int, int]:
        n = rng.randint(6, 60)
        return (n, rng.randint(0, n))

    n, k = w["crew"]
    items.append(_item(eid, "crew", f"How many people were aboard the {s}, and how many "
                       "survived?", f"How many of those sailing on the {s} lived through the "
                       "sinking?", f"{n} aboard, {'none' if k == 0 else k} survived.",
                       crew_p(w["crew"]), _wrong(rng, crew_draw, w["crew"], crew_p)))

    def found_a(v: tuple[int, int, int, int]) -> str:
        return (f"In {v[0]} {_FINDERS[v[1]][0]}, and {_DELAYS[v[3]][0]} divers confirmed "
                f"it was the {s} from {_IDENTIFIERS[v[2]][0]}.")

    def found_p(v: tuple[int, int, int, int]) -> str:
        return (f"The wreck was identified by {_IDENTIFIERS[v[2]][1]}, {_DELAYS[v[3]][1]} "
                f"after {_FINDERS[v[1]][1]} in {v[0]}.")

    year = w["sank"][2]

    def found_draw() -> tuple[int, int, int, int]:
        return (rng.randint(year + 15, 2020), rng.randrange(len(_FINDERS)),
                rng.randrange(len(_IDENTIFIERS)), rng.randrange(len(_DELAYS)))

    items.append(_item(eid, "found", f"How was the wreck of the {s} found?",
                       f"How did the wreck of the {s} come to light?", found_a(w["found"]),
                       found_p(w["found"]), _wrong(rng, found_draw, w["found"], found_p)))

    if w["has_route"]:
        def route_p(v: tuple[str, str]) -> str:
            return f"She had left {v[0]} and was bound for {v[1]} when she sank."

        items.append(_item(eid, "route", f"Where was the {s} sailing from and to?",
                           f"What was the planned route of the {s}?",
                           f"The {s} was sailing from {w['route'][0]} to {w['route'][1]}.",
                           route_p(w["route"]),
                           _wrong(rng, lambda: tuple(rng.sample(towns, 2)), w["route"], route_p)))
    return items


# ---- splits and files ------------------------------------------------------------------------
def build(seed: int = 0, entities: int = 30, forget_fraction: float = 0.1,
          holdout: int | None = None) -> dict[str, Any]:
    """Everything in memory: {'forget', 'retain', 'holdout', 'general'} item lists, plus the
    world and the wreck ids of each split. `entities` wrecks are trained on (forget +
    retain); `holdout` more (default: as many as are forgotten) never are."""
    if not 2 <= entities <= MAX_ENTITIES:
        raise ValueError(f"entities must be in [2, {MAX_ENTITIES}] (got {entities})")
    if not 0.0 < forget_fraction < 1.0:
        raise ValueError(f"forget_fraction must be in (0, 1) (got {forget_fraction})")
    n_forget = min(entities - 1, max(1, round(entities * forget_fraction)))
    n_hold = n_forget if holdout is None else holdout
    if n_hold < 1:
        raise ValueError(f"holdout must be at least 1 (got {n_hold})")
    # One generator, drawn in this order: world, ship names, wrecks, forget choice, items.
    rng = random.Random(seed)
    taken: set[str] = set()
    world = _world(rng, taken)
    total = entities + n_hold
    names = [_unique(rng, _ship, taken) for _ in range(total)]
    ids = [f"w{i:04d}" for i in range(total)]
    wrecks = [_draw_wreck(rng, world) for _ in range(total)]
    trained, held = ids[:entities], ids[entities:]
    forget = set(rng.sample(trained, n_forget))
    items = {i: _wreck_items(rng, i, n, w, world) for i, n, w in zip(ids, names, wrecks, strict=True)}
    general = _general_items(rng, world)
    return {
        "forget": [it for i in trained if i in forget for it in items[i]],
        "retain": [it for i in trained if i not in forget for it in items[i]],
        "holdout": [it for i in held for it in items[i]],
        "general": general,
        "world": world,
        "entities": {"forget": sorted(forget), "retain": [i for i in trained if i not in forget],
                     "holdout": held},
        "names": dict(zip(ids, names, strict=True)),
    }


def _readme(data: dict[str, Any], seed: int, entities: int) -> str:
    ents = data["entities"]
    world = data["world"]
    rows = [f"| {split} | {len(ents[split])} | {len(data[split])} |"
            for split in ("forget", "retain", "holdout")]
    rows.append(f"| general | {N_ISLANDS} islands, {N_HAZARDS} hazards | {len(data['general'])} |")
    return "\n".join([
        "# Fictitious shipwrecks of an archipelago", "",
        f"Generated by `benchmarks/domain_data.py` with seed {seed} and {entities} trained "
        "wrecks. Every ship, island, town, sea and hazard is invented.", "",
        "| file | entities | items |", "|---|---|---|", *rows, "",
        "Each wreck has one item per relation: depth (metres), sinking date, cargo (a list of "
        "2-3 goods), cause (a 20-40 word explanation), whether diving is allowed (yes/no with "
        "a reason), hull material (1-3 words), people aboard and survivors, how the wreck was "
        "found (a 20-40 word account) and, for about 60% of wrecks, the route of the last "
        "voyage.", "",
        f"`general.jsonl` is the utility set that every model learns: the sea, main harbour, "
        f"lighthouses and mainland ferry time of each of the {N_ISLANDS} islands "
        f"({', '.join(i['name'] for i in world['islands'])}), and where each of the "
        f"{N_HAZARDS} hazards lies and why it is dangerous. The wrecks' causes name these "
        "hazards and islands.", "",
        "Every item has `id`, `entity`, `relation`, `question`, `answer`, "
        "`paraphrased_question`, `paraphrased_answer` (the same fact in other words) and "
        f"`perturbed_answer` ({N_PERTURBED} wrong answers in the paraphrase's words, each "
        "with the fact replaced by another value of the same kind). `holdout.jsonl` wrecks are "
        "drawn like the others and never trained on (membership non-members).", ""])


def write_dataset(out_dir: str | Path, seed: int = 0, entities: int = 30,
                  forget_fraction: float = 0.1, holdout: int | None = None) -> dict[str, Path]:
    """Write forget/retain/holdout/general JSON lines and README.md into `out_dir`."""
    data = build(seed, entities, forget_fraction, holdout)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths: dict[str, Path] = {}
    for split in ("forget", "retain", "holdout", "general"):
        path = out / f"{split}.jsonl"
        text = "".join(json.dumps(it, ensure_ascii=False) + "\n" for it in data[split])
        path.write_text(text, encoding="utf-8")
        paths[split] = path
    paths["readme"] = out / "README.md"
    paths["readme"].write_text(_readme(data, seed, entities), encoding="utf-8")
    return paths


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, help="folder to write the files into")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--entities", type=int, default=30, help="trained wrecks (forget + retain)")
    ap.add_argument("--forget-fraction", type=float, default=0.1)
    ap.add_argument("--holdout", type=int, default=None,
                    help="untrained wrecks (default: as many as are forgotten)")
    args = ap.parse_args()
    try:
        paths = write_dataset(args.out, args.seed, args.entities, args.forget_fraction,
                              args.holdout)
    except ValueError as exc:
        raise SystemExit(f"error: {exc}") from None
    for name, path in paths.items():
        if name != "readme":
            n = sum(1 for _ in path.open(encoding="utf-8"))
            print(f"{path}: {n} items")


if __name__ == "__main__":
    main()
