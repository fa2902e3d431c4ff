"""Text from results files (model, dataset and audit names, metric values) made safe for
report.md: a name must not end a table cell, start a new row or section, or become markup
(an HTML tag, a link or image that fetches a URL, a code span)."""

from __future__ import annotations

import re
import unicodedata

# Markdown's inline punctuation that can open markup in a cell, and `|`, which ends the cell
_SPECIAL = re.compile(r"([\\`*_\[\]|])")
_HTML = {"&": "&amp;", "<": "&lt;", ">": "&gt;"}


def md_cell(value: object) -> str:
    """`value` as one line of literal text for a Markdown table cell or heading. Control
    characters (newlines, terminal escapes) and line separators are shown as `\\xNN` /
    `\\uNNNN`, so a name that holds one stays visible and on its row."""
    text = _SPECIAL.sub(r"\\\1", str(value))
    return "".join(_HTML.get(c) or (_escape(c) if _is_break(c) else c) for c in text)


def _is_break(char: str) -> bool:
    return unicodedata.category(char) in ("Cc", "Cs", "Zl", "Zp")  # Cs: a lone surrogate


def _escape(char: str) -> str:
    code = ord(char)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"
