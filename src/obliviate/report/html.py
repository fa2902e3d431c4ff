"""The one HTML layer every page goes through: a Jinja2 environment over the package's
templates, the number format shared by pages and Markdown, and figures as inline SVG.

Autoescaping is on for every .html template, so names, subjects, paths, generated answers and
error text reach a page only escaped; the only unescaped content is the stylesheet and the SVG
that matplotlib writes (it escapes the text it draws). StrictUndefined makes a template that
reads a variable its caller did not pass fail instead of rendering an empty string.
"""

from __future__ import annotations

import io
import re
from typing import Any

from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape
from markupsafe import Markup


def fmt(value: Any) -> str:
    """A metric value for a reader: 3 decimals (3 significant digits when tiny), '—' for None,
    and text (such as 'not computed: ...') as it is."""
    if isinstance(value, float):
        return f"{value:.3g}" if (value != 0 and abs(value) < 1e-3) else f"{value:.3f}"
    if value is None:
        return "—"
    return str(value)


ENV = Environment(
    loader=PackageLoader("obliviate", "report/templates"),
    autoescape=select_autoescape(["html"], default_for_string=True),
    undefined=StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)
ENV.filters["fmt"] = fmt


def render(template: str, **context: Any) -> str:
    """Render one template of report/templates with `context`."""
    return ENV.get_template(template).render(**context)


def pyplot():
    """matplotlib.pyplot on the Agg backend: pages are drawn without a display."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


# matplotlib puts a <style> rule in every SVG; inline in HTML it would style the whole page, so
# the rule lives in style.css (scoped to svg) and pages keep a single stylesheet
_SVG_STYLE = re.compile(r"<style[^>]*>.*?</style>", re.DOTALL)
# None removes the default metadata: a creation date and a creator URL, which would make
# pages differ run to run and put external URLs in them
_NO_METADATA = {"Creator": None, "Date": None, "Format": None, "Type": None}


def figure_svg(fig) -> Markup:
    """`fig` as an <svg> element to inline in a page (no XML prolog); closes the figure."""
    buf = io.StringIO()
    try:
        fig.savefig(buf, format="svg", metadata=_NO_METADATA)
    finally:
        pyplot().close(fig)
    svg = buf.getvalue()
    svg = svg[svg.index("<svg"):]
    return Markup(_SVG_STYLE.sub("", svg, count=1))
