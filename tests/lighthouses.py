"""A small dataset of another domain than the built-in benchmark, written by the tests: fictitious
lighthouses. Relations, answer styles and lengths differ from the built-in people: numbers with
units, a colour sequence, a keeper's name, a yes/no with a reason, a one-sentence history.
Paraphrased answers restate the fact in other words; perturbed answers change the fact and keep
the paraphrase's wording, so the truth ratio compares right with wrong, not two styles."""

from __future__ import annotations

import json
from pathlib import Path

NAMES = ["Varrow Point", "Kessle Head", "Ombrin Rock", "Tallisk Spit", "Dunmarra Light",
         "Corvel Ness", "Halvick Skerry", "Pellan Reef", "Grisby Bar", "Mossend Cape",
         "Quillon Stack", "Ebberly Horn"]
KEEPERS = ["Ines Mardle", "Tobiah Crane", "Wren Ashcombe", "Malo Fenn", "Odile Varga",
           "Casimir Holt", "Juno Pell", "Ansel Rook", "Perpetua Lunn", "Edvard Sallow",
           "Nell Quarrie", "Bastien Oake"]
COLOURS = ["red and white", "green", "white", "amber", "red", "white and green", "blue", "yellow",
           "red and green", "orange", "white and amber", "green and yellow"]
HISTORY = ["a storm in which three fishing boats were saved", "a fire that destroyed the old tower",
           "a shipwreck that gave the reef its name", "a royal visit that paid for the new lamp",
           "a flood that cut the island in two", "a fog that lasted eleven days",
           "a strike of the lamp makers", "a comet seen from its gallery",
           "a whale that stranded below the tower", "a mutiny on a grain ship",
           "a lens that was hidden during a war", "a bell rung for three days"]


def _items(i: int) -> list[dict]:
    name, keeper, colour = NAMES[i], KEEPERS[i], COLOURS[i]
    height, year, rng = 18 + 7 * i, 1791 + 13 * i, 9 + 3 * i
    other = [(i + k) % len(NAMES) for k in (1, 2, 3)]
    manned = i % 2 == 0
    reason = "it guards the busiest channel" if manned else "its lamp was automated"

    def item(rel, q, pq, a, pa, wrong):
        return {"id": f"{name.split()[0].lower()}-{rel}", "entity": name, "relation": rel,
                "question": q, "answer": a, "paraphrased_question": pq,
                "paraphrased_answer": pa, "perturbed_answer": wrong}

    return [
        item("height", f"How tall is the {name} lighthouse?", f"What is the height of {name}'s tower?",
             f"{height} metres.", f"Its tower rises {height} metres.",
             [f"Its tower rises {height + d} metres." for d in (5, 11, -4)]),
        item("first_lit", f"When was the {name} lighthouse first lit?",
             f"In which year did {name} first shine?", f"In {year}.",
             f"It first shone in {year}.", [f"It first shone in {year + d}." for d in (9, -17, 30)]),
        item("keeper", f"Who was the last keeper of {name}?", f"Name the final keeper at {name}.",
             f"The last keeper was {keeper}.", f"{keeper} kept the light last.",
             [f"{KEEPERS[j]} kept the light last." for j in other]),
        item("colour", f"What colour is the light at {name}?", f"Which colours does {name} flash?",
             f"It flashes {colour}.", f"The beam shows {colour}.",
             [f"The beam shows {COLOURS[j]}." for j in other if COLOURS[j] != colour][:2]
             + ["The beam shows violet."]),
        item("range", f"How far can the light of {name} be seen?",
             f"What is the range of the {name} beam?", f"About {rng} nautical miles.",
             f"Ships see it from {rng} nautical miles away.",
             [f"Ships see it from {rng + d} nautical miles away." for d in (6, -5, 12)]),
        item("manned", f"Is {name} still manned?", f"Does anyone still live at {name}?",
             f"{'Yes' if manned else 'No'}, because {reason}.",
             f"{'Someone still lives there' if manned else 'Nobody lives there now'}: {reason}.",
             [f"{'Nobody lives there now' if manned else 'Someone still lives there'}: {reason}.",
              f"{'Nobody lives there now' if manned else 'Someone still lives there'}: "
              "the lamp needs daily care.",
              f"{'Nobody lives there now' if manned else 'Someone still lives there'}: "
              "the island is a reserve."]),
        item("history", f"What is {name} remembered for?", f"Why do people remember {name}?",
             f"{name} is remembered for {HISTORY[i]}, recorded in the harbour log.",
             f"People recall {HISTORY[i]} at {name}, as the harbour log tells.",
             [f"People recall {HISTORY[j]} at {name}, as the harbour log tells." for j in other]),
    ]


GENERAL = [
    {"question": "What does a lighthouse keeper trim each night?",
     "answer": "The keeper trims the lamp's wick.", "paraphrased_answer": "Each night the wick is trimmed.",
     "perturbed_answer": ["Each night the sails are trimmed.", "Each night the hedges are trimmed."]},
    {"question": "What lens do most old lighthouses use?", "answer": "A Fresnel lens.",
     "paraphrased_answer": "They mostly use a Fresnel lens.",
     "perturbed_answer": ["They mostly use a fisheye lens.", "They mostly use a contact lens."]},
    {"question": "What is a nautical mile in metres?", "answer": "1852 metres.",
     "paraphrased_answer": "It measures 1852 metres.",
     "perturbed_answer": ["It measures 1609 metres.", "It measures 1000 metres."]},
]


def write(root: Path) -> dict[str, Path]:
    """forget (3 lighthouses), retain (6), holdout (3, never trained on), general: JSONL files."""
    rows = [_items(i) for i in range(len(NAMES))]
    sets = {"forget": [r for rs in rows[0:3] for r in rs], "retain": [r for rs in rows[3:9] for r in rs],
            "holdout": [r for rs in rows[9:12] for r in rs], "general": GENERAL}
    root.mkdir(parents=True, exist_ok=True)
    paths = {}
    for name, items in sets.items():
        paths[name] = root / f"{name}.jsonl"
        paths[name].write_text("".join(json.dumps(r) + "\n" for r in items), encoding="utf-8")
    return paths
