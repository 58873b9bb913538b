"""The terminal: one way to make a console, on which nothing is markup.

Reports print other people's text (exception messages, names, paths, reprs). rich would
read ``[bold]`` in them as markup (and fail on ``[/x]``) and ``:ok:`` as an emoji, so the
console interprets neither; colour comes only from :func:`marked` pieces built here.
"""
from __future__ import annotations

import sys

from rich.console import Console
from rich.text import Text


def make_console(file=None) -> Console:
    stream = file or sys.stdout
    return Console(file=file, highlight=False, markup=False, emoji=False,
                   width=None if getattr(stream, "isatty", lambda: False)() else 200)


def marked(*pieces: str | tuple[str, str]) -> Text:
    """Text of literal pieces; a ``(text, style)`` piece is coloured."""
    return Text.assemble(*pieces)
