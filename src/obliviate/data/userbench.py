"""A benchmark folder made from a user's own files (`obliviate benchmark create`).

Every command that takes `benchmark=DIR` reads it through the same methods as the built-in
benchmark (`forget_set`, `retain_set`, `holdout_set`, `utility_sets`, `training_set`, ...), so a
user's data gets the whole workflow: target and oracle fine-tuning, evaluation with forget
quality, MIA against the holdout, audits and the calibrated stop.

Layout (format 1, `"kind": "files"` in benchmark.json; the built-in kind is documented in
generator.py):

    DIR/benchmark.json   {"format_version": 1, "kind": "files", "sets": {"forget": "forget.jsonl",
                          "retain": ..., "holdout": ...}, "utility": {"NAME": "utility/NAME.jsonl"},
                          "counts": {...}, "sources": {set: {"path", "sha256"}}}
    DIR/forget.jsonl     items to forget (TOFU fields; ids fixed at creation)
    DIR/retain.jsonl     items to keep (trained on by target and oracle)
    DIR/holdout.jsonl    optional: items of the same kind never trained on (MIA, calibrated stop)
    DIR/utility/*.jsonl  optional: further utility sets, trained on by target and oracle alike
                         (leave a set out of training by keeping it out of the benchmark and
                         passing it to eval as utility=FILE)
    DIR/DATASHEET.md     counts and what each file is for
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import ObliviateError
from ..io import atomic_dir
from .dependent import dependent_sets, with_roles
from .examples import Example
from .formats import read_tofu_jsonl, validate_holdout, validate_split, write_jsonl

FORMAT_VERSION = 1
KIND = "files"
FORGET = "forget"  # the one forget split of a files benchmark
RESERVED = ("forget", "retain", "holdout", "mia", "muse", "forget_passages")
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")


@dataclass
class FileBenchmark:
    forget: list[Example]
    retain: list[Example]
    holdout: list[Example] = field(default_factory=list)
    utility: dict[str, list[Example]] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)

    kind = KIND
    default_split = FORGET

    # ---- the benchmark interface ----------------------------------------------------------
    def split_name(self, split: str) -> str:
        if split not in ("", FORGET):
            raise ObliviateError(f"forget_split={split}: a benchmark made from files has one "
                                 f"forget split, '{FORGET}' (leave forget_split unset)")
        return FORGET

    def forget_set(self, split: str = "") -> list[Example]:
        self.split_name(split)
        return list(self.forget)

    def retain_set(self, split: str = "") -> list[Example]:
        self.split_name(split)
        return list(self.retain)

    def holdout_set(self) -> list[Example]:
        return list(self.holdout)

    def utility_sets(self) -> dict[str, list[Example]]:
        return {name: list(items) for name, items in self.utility.items()}

    def forget_passages(self, split: str = "") -> list[Example]:
        return [ex for ex in self.forget_set(split) if ex.is_text]

    def linked_set(self, split: str = "") -> list[Example]:
        self.split_name(split)
        return []  # no entity graph: the audits' linked-entity check has nothing to read

    def side_sets(self, split: str = "") -> dict[str, tuple[str, list[Example]]]:
        """Dependent queries (data/dependent.py) where the files allow: items labelled with
        an `entity` whose questions name it, and answers that name another such entity."""
        items = [*self.forget_set(split), *self.retain]
        labels = {ex.entity for ex in items if ex.entity}
        names = {e: e for e in labels if any(ex.question and e in ex.question for ex in items
                                             if ex.entity == e)}
        return with_roles(dependent_sets(self.forget_set(split), self.retain, names))

    def training_set(self, split: str, oracle: bool) -> list[Example]:
        """Target: forget + retain + utility sets. Oracle: the same without the forget items."""
        utility = [ex for items in self.utility.values() for ex in items]
        return [*([] if oracle else self.forget_set(split)), *self.retain, *utility]

    def texts(self) -> list[str]:
        """Every text of the benchmark (a tiny model's tokenizer is trained on them)."""
        items = [*self.forget, *self.retain, *self.holdout,
                 *(ex for exs in self.utility.values() for ex in exs)]
        return example_texts(items)

    # ---- files ------------------------------------------------------------------------------
    @classmethod
    def load(cls, root: Path, meta: dict[str, Any]) -> FileBenchmark:
        sets = meta.get("sets")
        utility = meta.get("utility", {})
        if not isinstance(sets, dict) or FORGET not in sets or not isinstance(utility, dict):
            raise ObliviateError(f"{root}/benchmark.json: 'sets' must name at least the forget "
                                 "file; recreate the folder with obliviate benchmark create")

        def read(rel: Any) -> list[Example]:
            path = root / str(rel)
            if Path(str(rel)).is_absolute() or ".." in Path(str(rel)).parts:
                raise ObliviateError(f"{root}/benchmark.json: {rel!r} is not a file inside the folder")
            return read_tofu_jsonl(path)

        return cls(forget=read(sets[FORGET]),
                   retain=read(sets["retain"]) if sets.get("retain") else [],
                   holdout=read(sets["holdout"]) if sets.get("holdout") else [],
                   utility={name: read(rel) for name, rel in utility.items()}, meta=meta)

    def datasheet(self) -> str:
        lines = ["# Benchmark datasheet", "",
                 "Made with `obliviate benchmark create` from the files below (format "
                 f"{FORMAT_VERSION}, kind `{KIND}`).", "",
                 "| set | items | QA items | perturbed answers | trained on by |", "|---|---|---|---|---|"]
        rows = [("forget", self.forget, "target"), ("retain", self.retain, "target and oracle"),
                ("holdout", self.holdout, "nobody (never-seen data)"),
                *((f"utility/{n}", items, "target and oracle") for n, items in self.utility.items())]
        for name, items, who in rows:
            qa = [ex for ex in items if not ex.is_text]
            pert = sum(1 for ex in qa if ex.perturbed_answers)
            lines.append(f"| {name} | {len(items)} | {len(qa)} | {pert} | {who} |")
        lines += ["", "Sources:", ""]
        for name, src in self.meta.get("sources", {}).items():
            lines.append(f"- {name}: `{src['path']}` (sha256 {src['sha256'][:16]})")
        return "\n".join(lines) + "\n"


def example_texts(items: list[Example]) -> list[str]:
    texts = []
    for ex in items:
        texts += [t for t in (ex.question, ex.answer, ex.paraphrased_question,
                              ex.paraphrased_answer, *ex.perturbed_answers) if t]
    return texts


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def utility_name(path: str | Path) -> str:
    name = Path(path).stem
    if not _NAME.fullmatch(name):
        raise ObliviateError(f"utility file {path}: its name '{name}' names the set in results "
                             "and reports; use letters, digits, '-', '_' or '.'")
    if name in RESERVED:
        raise ObliviateError(f"utility file {path}: '{name}' is a reserved set name "
                             f"({', '.join(RESERVED)}); rename the file")
    return name


def create_benchmark(out: str | Path, forget: str | Path, retain: str | Path | None = None,
                     holdout: str | Path | None = None,
                     utility: list[str | Path] = ()) -> tuple[Path, FileBenchmark]:
    """Validate the files and write a benchmark folder (atomically: all of it or nothing)."""
    paths = {"forget": forget, "retain": retain, "holdout": holdout}
    sets = {name: read_tofu_jsonl(p) if p else [] for name, p in paths.items()}
    validate_split(sets["forget"], sets["retain"])
    if sets["holdout"]:
        validate_holdout(sets["forget"], sets["holdout"])
        trained = {(ex.question, ex.answer) for ex in sets["retain"]}
        both = [ex for ex in sets["holdout"] if (ex.question, ex.answer) in trained]
        if both:
            raise ObliviateError(f"{len(both)} holdout item(s) are also retain items, e.g. "
                                 f"{(both[0].question or both[0].answer)[:60]!r}: holdout items "
                                 "must be data no model is trained on")
    names = [utility_name(u) for u in utility]
    if len(set(names)) != len(names):
        raise ObliviateError(f"two utility files share a name ({', '.join(names)}): each names "
                             "its set in results; rename one")
    util = {n: read_tofu_jsonl(u) for n, u in zip(names, utility, strict=True)}
    for n, items in util.items():
        if not items:
            raise ObliviateError(f"utility file {n}: no items")
    sources = {name: {"path": str(p), "sha256": _sha256(Path(p))} for name, p in paths.items() if p}
    sources.update({f"utility/{n}": {"path": str(u), "sha256": _sha256(Path(u))}
                    for n, u in zip(names, utility, strict=True)})
    meta = {"format_version": FORMAT_VERSION, "kind": KIND,
            "sets": {name: f"{name}.jsonl" for name, p in paths.items() if p},
            "utility": {n: f"utility/{n}.jsonl" for n in names},
            "counts": {**{k: len(v) for k, v in sets.items() if paths[k]},
                       **{f"utility/{n}": len(v) for n, v in util.items()}},
            "sources": sources}
    bench = FileBenchmark(sets["forget"], sets["retain"], sets["holdout"], util, meta)
    out = Path(out)
    with atomic_dir(out) as tmp:
        for name, items in sets.items():
            if paths[name]:
                write_jsonl(tmp / f"{name}.jsonl", items)
        if util:
            (tmp / "utility").mkdir()
        for n, items in util.items():
            write_jsonl(tmp / "utility" / f"{n}.jsonl", items)
        (tmp / "benchmark.json").write_text(json.dumps(meta, indent=1, ensure_ascii=False) + "\n",
                                            encoding="utf-8")
        (tmp / "DATASHEET.md").write_text(bench.datasheet(), encoding="utf-8")
    return out, bench
