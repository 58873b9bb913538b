"""The hand-written prose of the spec, read from its files, with its slots filled strictly.

- ``templates/*.md``: the pages' Markdown (headings, fixed paragraphs) with ``$slot``
  placeholders (:class:`string.Template`) for what is computed: formulas, tables, statements;
- ``statements.toml``: the statements, corrections and short texts (see its header);
- ``conventions.toml``: the table of framework conventions on the index page;
- ``bugs.toml``: the typical bugs of the variants, each with the public issue that reported it;
- ``style.css``: the stylesheet of the standalone site.

:func:`fill` refuses a slot left empty and a value without a slot, so a renamed slot
fails generation instead of printing ``$name`` or dropping a formula.
"""
from __future__ import annotations

import functools
import re
import string
import tomllib
from pathlib import Path

HERE = Path(__file__).resolve().parent
TEMPLATES = HERE / "templates"
STATEMENTS = HERE / "statements.toml"
CONVENTIONS = HERE / "conventions.toml"
BUGS = HERE / "bugs.toml"
STYLE = HERE / "style.css"


def fill_all(texts: tuple[str, ...], slots: dict[str, object]) -> tuple[str, ...]:
    """``texts`` with every ``$slot`` replaced from ``slots``; KeyError for a slot without a value
    or a value that no text has a slot for."""
    templates = [string.Template(t) for t in texts]
    wanted = {name for t in templates for name in t.get_identifiers()}
    if wanted != set(slots):
        raise KeyError(f"slots {sorted(wanted - set(slots))} have no value and values {sorted(set(slots) - wanted)} "
                       f"have no slot in {texts[0][:80]!r}")
    values = {name: str(value) for name, value in slots.items()}
    return tuple(t.substitute(values) for t in templates)


def fill(text: str, **slots: object) -> str:
    """``text`` with every ``$slot`` replaced (strictly, as :func:`fill_all`)."""
    return fill_all((text,), slots)[0]


@functools.cache
def template(name: str) -> str:
    """The text of ``templates/<name>.md``."""
    return (TEMPLATES / f"{name}.md").read_text()


def page(name: str, **slots: object) -> str:
    """A page template filled; the blank lines an empty slot leaves are closed up."""
    return re.sub(r"\n{3,}", "\n\n", fill(template(name), **slots))


@functools.cache
def _toml(path: Path) -> dict:
    with path.open("rb") as f:
        return tomllib.load(f)


def entry(kind: str, key: str) -> dict:
    """The record ``[kind.key]`` of statements.toml (kind: statement, correction)."""
    table = _toml(STATEMENTS)[kind]
    if key not in table:
        raise KeyError(f"{STATEMENTS.name} has no [{kind}.{key}]")
    return table[key]


def keys(kind: str) -> tuple[str, ...]:
    """The records of one kind, in the file's order."""
    return tuple(_toml(STATEMENTS)[kind])


def text(key: str, **slots: object) -> str:
    """A short text of ``[text]`` in statements.toml, filled."""
    return fill(_toml(STATEMENTS)["text"][key], **slots)


def conventions() -> dict:
    """conventions.toml: ``columns`` (key -> heading) and ``rows`` (key -> cell)."""
    return _toml(CONVENTIONS)


def bugs() -> dict[str, dict]:
    """bugs.toml: key -> the record of one bug class, in the file's order."""
    return _toml(BUGS)["bug"]


def style() -> str:
    return STYLE.read_text()
