"""The standalone site: docs/site/*.html, the same pages as docs/spec with MathML, and style.css.

No JavaScript and no network: every formula is converted to MathML (``derive.latex``), links
between pages point at the .html files, the pictures are copied next to the pages, and the
stylesheet is ``docs/style.css``.
"""
from __future__ import annotations

import re

from normspec.derive import codegen
from normspec.derive.latex import markdown_to_html
from normspec.derive.outputs import MARKER
from normspec.docs import prose
from normspec.docs.pages import REGENERATE_COMMAND

PAGE_LINK = re.compile(r'href="([\w-]+)\.md(#[\w-]*)?"')


def title(name: str) -> str:
    return "normspec spec" if name == "index" else f"normspec spec: {name}"


def html_page(name: str, markdown_text: str) -> str:
    """The HTML of the page ``name`` whose Markdown is ``markdown_text``."""
    body = PAGE_LINK.sub(lambda m: f'href="{m.group(1)}.html{m.group(2) or ""}"', markdown_to_html(markdown_text))
    head = [
        "<!DOCTYPE html>",
        f"<!-- {MARKER} by normspec.docs (docs/*.py) from docs/spec/{name}.md; do not edit. "
        f"Regenerate with: {REGENERATE_COMMAND} -->",
        '<html lang="en">',
        "<head>",
        '<meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f'<meta name="derivation-hash" content="{codegen.derivation_hash()}">',
        f"<title>{title(name)}</title>",
        '<link rel="stylesheet" href="style.css">',
        "</head>",
        "<body>",
    ]
    return "\n".join(head) + f"\n{body}\n</body>\n</html>\n"


def style() -> str:
    return prose.style()
