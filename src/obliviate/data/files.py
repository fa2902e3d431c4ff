"""Reading the files users hand us: UTF-8 text and JSON. Every failure is one ObliviateError
naming the file (and line) and what to do, never a decoder's traceback."""

from __future__ import annotations

import codecs
import json
from importlib import resources
from pathlib import Path
from typing import Any

from ..errors import ObliviateError

_UTF16_BOMS = (codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)


def read_text(path: str | Path) -> str:
    """The file as text. UTF-8 only; a UTF-8 byte-order mark (Windows editors write one) is
    dropped. UTF-16 is refused by name: its ASCII bytes would otherwise pass as text with NULs."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ObliviateError(f"{path}: cannot read ({exc.strerror or exc})") from None
    if raw.startswith(_UTF16_BOMS):
        raise ObliviateError(f"{path}: not UTF-8 text (byte 0: a UTF-16 byte-order mark); "
                             "save it as UTF-8")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        skipped = len(codecs.BOM_UTF8) if raw.startswith(codecs.BOM_UTF8) else 0
        raise ObliviateError(f"{path}: not UTF-8 text (byte {exc.start + skipped}); "
                             "save it as UTF-8") from None
    if "\x00" in text:  # UTF-16 without a byte-order mark, or a binary file
        raise ObliviateError(f"{path}: not UTF-8 text (byte {raw.index(0)} is NUL); "
                             "save it as UTF-8")
    return text


def parse_json(text: str, where: str) -> Any:
    """JSON text -> value; `where` ('FILE' or 'FILE:LINE') starts every error message."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        # a JSON line is parsed alone: its own "line 1" would contradict FILE:LINE
        at = f"line {exc.lineno} column {exc.colno}" if exc.lineno > 1 else f"column {exc.colno}"
        raise ObliviateError(f"{where}: not valid JSON ({exc.msg} at {at})") from None
    except RecursionError:
        raise ObliviateError(f"{where}: JSON nested too deeply") from None
    except ValueError as exc:  # e.g. an integer of more than 4300 digits
        raise ObliviateError(f"{where}: not valid JSON ({str(exc).split(';')[0]})") from None
    bad = lone_surrogate(value)
    if bad is not None:
        shown = bad if len(bad) <= 60 else f"{bad[:57]}..."  # a deep path stays one short line
        raise ObliviateError(f"{where}: invalid Unicode (a lone surrogate) in field {shown}")
    return value


def read_json(path: str | Path) -> Any:
    """A whole-file JSON document (results, audits, benchmark metadata)."""
    return parse_json(read_text(path), str(path))


def write_json_sorted(path: Path, obj: Any) -> None:
    """A benchmark folder's JSON file: sorted keys, so the same content gives the same bytes."""
    path.write_text(json.dumps(obj, indent=1, sort_keys=True, ensure_ascii=False) + "\n",
                    encoding="utf-8")


def lone_surrogate(value: Any) -> str | None:
    r"""Where a string holds a lone surrogate ('\ud800' is valid JSON but no text: it cannot be
    written back as UTF-8 or tokenized), as a field path like `answer` or `perturbed[2]`; None
    if there is none. Iterative, so a deeply nested value cannot exhaust the stack."""
    stack: list[tuple[str, Any]] = [("", value)]
    while stack:
        where, node = stack.pop()
        if isinstance(node, dict):
            for key, item in node.items():
                name = f"{where}.{key}" if where else str(key)
                if not _encodable(key):
                    return f"{name!a} (its name)"
                stack.append((name, item))
        elif isinstance(node, list):
            stack.extend((f"{where}[{i}]", item) for i, item in enumerate(node))
        elif isinstance(node, str) and not _encodable(node):
            return where or "(the value itself)"
    return None


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def general_questions() -> list[str]:
    """The bank of general-knowledge questions shipped with the package (anchors for
    `obliviate forget`, negatives for the prompt classifiers of gated systems)."""
    text = resources.files("obliviate").joinpath("resources/general_questions.jsonl").read_text()
    return [json.loads(line)["question"] for line in text.splitlines() if line.strip()]
