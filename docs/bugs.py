"""The typical bugs of the variants (``bugs.toml``), each with what it computes, derived.

A :class:`Bug` is a bug class reported in a public kernel: its issue, the variants it applies
to (a scope of :data:`statements.SCOPES` or a list of names), the checks that catch it and,
optionally, a key of ``mathematics.mistake`` that derives what the buggy kernel computes from
the closed forms. Each variant page shows the bugs that apply to it; the index lists them all.
"""
from __future__ import annotations

from dataclasses import dataclass

from normspec.derive import variants
from normspec.derive.latex import equation
from normspec.derive.variants import Variant
from normspec.docs import mathematics as m, prose
from normspec.docs.statements import SCOPES, Statement, shown_vjp


@dataclass(frozen=True)
class Bug:
    key: str
    title: str
    issue: str  # owner/repository#number
    text: str
    checks: tuple[str, ...]
    mistake: str | None  # a key of mathematics.mistake: what the bug computes, derived
    variants: tuple[str, ...]


def bugs() -> list[Bug]:
    """The bug classes of bugs.toml, with the variants each applies to (its scope, or its list)."""
    items = []
    for key, record in prose.bugs().items():
        if ("scope" in record) == ("variants" in record):
            raise KeyError(f"bugs.toml [{key}] needs exactly one of scope and variants")
        names = (variants.matching(SCOPES[record["scope"]]) if "scope" in record
                 else tuple(variants.get(name, argument=f"bugs.toml [{key}] variants").name
                            for name in record["variants"]))
        items.append(Bug(key, record["title"], record["issue"], record["text"], tuple(record.get("checks", ())),
                         record.get("mistake"), names))
    return items


def bug_statement(bug: Bug, notation: m.Notation) -> Statement:
    """A bug on a variant's page: what it is, the public issue, what it computes, what catches it."""
    formulas = ()
    if bug.mistake is not None:
        quantity, wrong, difference = m.mistake(bug.mistake, notation.family)
        bar = r"_{\text{bug}}"
        formulas = (equation(quantity + bar, shown_vjp(wrong, notation)),
                    equation(quantity + " - " + quantity + bar, shown_vjp(difference, notation)))
    return Statement(f"{bug.title} ({bug.issue})", bug.text, formulas, bug.checks)


def bug_statements(record: Variant, notation: m.Notation) -> list[Statement]:
    return [bug_statement(b, notation) for b in bugs() if record.name in b.variants]
