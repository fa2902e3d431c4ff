"""Render Results into a self-contained HTML page and a Markdown table (never recompute)."""

from .render import render_html, render_markdown, write_report

__all__ = ["render_html", "render_markdown", "write_report"]
