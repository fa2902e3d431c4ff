"""Readers for TOFU-format JSON lines, plain {question, answer} / {text} JSONL, and hub ids."""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from ..errors import ObliviateError
from ..io import write_text_atomic
from .examples import Example
from .files import parse_json, read_text


def _read_json_lines(path: Path) -> list[tuple[int, Any]]:
    if not path.is_file():
        raise ObliviateError(f"data file not found: {path}")
    text = read_text(path)
    stripped = text.lstrip()
    if stripped.startswith("["):  # a JSON array is accepted too (some TOFU exports)
        return [(i + 1, r) for i, r in enumerate(parse_json(stripped, str(path)))]
    # split on newlines only: str.splitlines also splits inside a line's strings at U+2028,
    # U+0085 and form feeds, which JSON allows unescaped
    return [(lineno, parse_json(line, f"{path}:{lineno}"))
            for lineno, line in enumerate(text.split("\n"), start=1) if line.strip()]


def _str_field(row: dict[str, Any], key: str, where: str, required: bool = True) -> str | None:
    value = row.get(key)
    if value is None:
        if required:
            raise ObliviateError(f"{where}: missing field '{key}'")
        return None
    if not isinstance(value, str) or not value.strip():
        raise ObliviateError(f"{where}: field '{key}' must be a non-empty string, "
                             f"not {_kind(value)}")
    return value


def _label(row: dict[str, Any], key: str, where: str) -> str | None:
    """An optional label (entity, relation): text, or a number written without quotes."""
    value = row.get(key)
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    raise ObliviateError(f"{where}: field '{key}' must be a string, not {_kind(value)}")


def _kind(value: Any) -> str:
    if isinstance(value, str):
        return "a string" if value.strip() else "an empty string"
    names = {dict: "an object", list: "a list", bool: "true/false", int: "a number",
             float: "a number", type(None): "null"}
    return names.get(type(value), type(value).__name__)


def example_from_row(row: Any, where: str) -> Example:
    """One JSON object -> Example. Accepts TOFU fields, {question, answer} or {text}."""
    if not isinstance(row, dict):
        raise ObliviateError(f"{where}: expected a JSON object ({{\"question\": ..., "
                             f"\"answer\": ...}} or {{\"text\": ...}}), got {_kind(row)}")
    if "question" not in row and "text" in row:
        return Example(answer=_str_field(row, "text", where), id=_label(row, "id", where) or "",
                       entity=_label(row, "entity", where))
    if "question" not in row:
        raise ObliviateError(f"{where}: missing field 'question' (or give 'text' for plain text)")
    perturbed = row.get("perturbed_answer", row.get("perturbed_answers", []))
    if isinstance(perturbed, str):
        perturbed = [perturbed]
    if not isinstance(perturbed, list) or not all(isinstance(p, str) for p in perturbed):
        raise ObliviateError(f"{where}: field 'perturbed_answer' must be a list of strings")
    accepted = row.get("accepted_answers", [])
    if not isinstance(accepted, list) or not all(isinstance(a, str) and a.strip() for a in accepted):
        raise ObliviateError(f"{where}: field 'accepted_answers' must be a list of non-empty strings")
    return Example(
        question=_str_field(row, "question", where),
        answer=_str_field(row, "answer", where),
        paraphrased_answer=_str_field(row, "paraphrased_answer", where, required=False),
        paraphrased_question=_str_field(row, "paraphrased_question", where, required=False),
        perturbed_answers=tuple(perturbed),
        id=_label(row, "id", where) or "",
        entity=_label(row, "entity", where),
        relation=_label(row, "relation", where),
        accepted=tuple(accepted),
        kind=_label(row, "probe_kind", where),
    )


def read_tofu_jsonl(path: str | Path) -> list[Example]:
    """TOFU-format JSON lines (question, answer, paraphrased_answer, perturbed_answer)."""
    path = Path(path)
    return [
        _with_default_id(example_from_row(row, f"{path}:{lineno}"), f"{path.stem}-{i}")
        for i, (lineno, row) in enumerate(_read_json_lines(path))
    ]


def _with_default_id(ex: Example, default: str) -> Example:
    if ex.id:
        return ex
    from dataclasses import replace

    return replace(ex, id=default)


def write_jsonl(path: Path, items: list[Example]) -> Path:
    """Examples as JSON lines (TOFU field names), the form every reader here reads back;
    written atomically (a crash leaves the old file or none, never half of one)."""
    return write_text_atomic(path, "".join(json.dumps(ex.to_json(), sort_keys=True, ensure_ascii=False)
                                           + "\n" for ex in items))


def read_hf_dataset(name: str, config: str | None = None, split: str = "train") -> list[Example]:
    """A Hugging Face dataset id (e.g. 'locuslab/TOFU', config 'forget10_perturbed').

    Needs the optional `datasets` package; offline runs read from its local cache only.
    """
    try:
        import datasets
    except ImportError:
        raise ObliviateError(
            "reading a hub dataset needs the 'datasets' package: pip install 'obliviate[hub]'"
        ) from None
    try:
        ds = datasets.load_dataset(name, config, split=split)
    except Exception as exc:  # noqa: BLE001 - datasets raises many types; report them as one
        raise ObliviateError(f"could not load dataset '{name}' ({config}, {split}): {exc}") from None
    return [
        _with_default_id(example_from_row(dict(row), f"{name}[{i}]"), f"{name}-{i}")
        for i, row in enumerate(ds)
    ]


def load_examples(source: str | Path, config: str | None = None, split: str = "train") -> list[Example]:
    """A local .json/.jsonl file, or else a hub dataset id ('owner/name')."""
    path = Path(source)
    if path.exists() or path.suffix in (".json", ".jsonl"):
        return read_tofu_jsonl(path)
    if "/" in str(source) and not str(source).startswith((".", "/")):
        return read_hf_dataset(str(source), config, split)
    raise ObliviateError(f"data source not found: {source} (neither a file nor a hub dataset id)")


def validate_split(forget: Iterable[Example], retain: Iterable[Example]) -> None:
    """Forget must be non-empty and share no item with retain (compared by content)."""
    forget, retain = list(forget), list(retain)
    if not forget:
        raise ObliviateError("the forget set is empty: there is nothing to unlearn")

    overlap = {_key(e) for e in forget} & {_key(e) for e in retain}
    if overlap:
        q, a = sorted(overlap, key=str)[0]
        shown = q if q is not None else a[:60]
        raise ObliviateError(
            f"{len(overlap)} item(s) are in both the forget and retain sets, e.g. {shown!r}: "
            "an item cannot be both forgotten and kept"
        )


def _key(ex: Example) -> tuple[str | None, str]:
    return (ex.question, ex.answer)


def validate_holdout(forget: Iterable[Example], holdout: Iterable[Example]) -> None:
    """Holdout items stand for never-seen data: none may be a forget item, and there must be
    at least two to compare the forget items with."""
    holdout = list(holdout)
    if len(holdout) < 2:
        raise ObliviateError(f"the holdout set has {len(holdout)} item(s): the calibrated stop "
                             "compares the forget items with at least 2 never-seen items")
    overlap = {_key(e) for e in forget} & {_key(e) for e in holdout}
    if overlap:
        q, a = sorted(overlap, key=str)[0]
        raise ObliviateError(f"{len(overlap)} item(s) are in both the forget and holdout sets, "
                             f"e.g. {(q if q is not None else a[:60])!r}: holdout items must be "
                             "data the model never saw")
