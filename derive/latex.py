"""LaTeX for the spec: the derivation's expressions printed with ``sympy.latex``, and math → MathML.

:class:`SpecLatexPrinter` is SymPy's ``LatexPrinter`` with one method per node the
derivation adds (``GroupMean``, ``AffineSum``, and the docs-only ``GroupSum``); terms
keep SymPy's canonical argument order (``order="none"``), so the output is the same
for every run and ``PYTHONHASHSEED``.

The Markdown pages carry their mathematics in GitHub's two math syntaxes, which are
the only ones :func:`markdown_to_html` accepts:

- display: a fenced block whose info string is ``math``;
- inline: ``$`...`$`` (dollar, backtick, formula, backtick, dollar).

For the standalone HTML every formula is converted to MathML with ``latex2mathml``
(Chromium and Firefox render MathML natively: no JavaScript, no network).
"""
from __future__ import annotations

import re

import markdown
import sympy as sp
from latex2mathml.converter import convert
from sympy.printing.latex import LatexPrinter
from sympy.printing.precedence import PRECEDENCE

from normspec.derive import symbolic as sym


class GroupSum(sp.Function):
    """sum over the elements of one group (docs only: N times a GroupMean)."""

    nargs = 1


class SpecLatexPrinter(LatexPrinter):
    """``sympy.latex`` with the derivation's reductions as named operators."""

    def __init__(self, settings: dict | None = None):
        super().__init__({"order": "none", **(settings or {})})

    def _print_GroupMean(self, expr: sym.GroupMean) -> str:
        return r"\operatorname{mean}_{\text{group}}\left(%s\right)" % self._print(expr.args[0])

    def _print_AffineSum(self, expr: sym.AffineSum) -> str:
        return r"\sum_{\text{non-affine}} %s" % self.parenthesize(expr.args[0], PRECEDENCE["Mul"], strict=True)

    def _print_GroupSum(self, expr: GroupSum) -> str:
        return r"\sum_{\text{group}} %s" % self.parenthesize(expr.args[0], PRECEDENCE["Mul"], strict=True)


def latex(expr: sp.Basic, **settings) -> str:
    """The LaTeX of one expression of the derivation (``settings``: LatexPrinter's)."""
    return SpecLatexPrinter(settings).doprint(expr)


def equation(lhs: sp.Basic | str, *rhs: sp.Basic | str) -> str:
    """``lhs = rhs_1 = rhs_2 ...``; strings are taken as LaTeX already."""
    return " = ".join(part if isinstance(part, str) else latex(part) for part in (lhs, *rhs))


# --- Markdown with math -> HTML with MathML ---------------------------------------------

DISPLAY_MATH = re.compile(r"^```math\n(.*?)\n```$", re.MULTILINE | re.DOTALL)
INLINE_MATH = re.compile(r"\$`(.+?)`\$")


def formulas(markdown_text: str) -> list[tuple[str, str]]:
    """Every formula of a page as (``"display"`` or ``"inline"``, LaTeX)."""
    found = [("display", m.group(1)) for m in DISPLAY_MATH.finditer(markdown_text)]
    without_blocks = DISPLAY_MATH.sub("", markdown_text)
    return found + [("inline", m.group(1)) for m in INLINE_MATH.finditer(without_blocks)]


def to_mathml(tex: str, *, display: bool) -> str:
    """MathML for one formula; raises ValueError when latex2mathml leaves a command unconverted."""
    mathml = convert(tex, display="block" if display else "inline")
    if "\\" in mathml:
        raise ValueError(f"latex2mathml left a command unconverted in {tex!r}: {mathml}")
    return mathml


def markdown_to_html(markdown_text: str) -> str:
    """The HTML body of a page: Markdown (tables, fenced code, heading ids) with MathML math."""
    rendered: list[str] = []

    def stash(mathml: str, kind: str) -> str:
        rendered.append(mathml)
        return f"NSMATH{kind}{len(rendered) - 1:04d}X"

    text = DISPLAY_MATH.sub(lambda m: "\n" + stash(to_mathml(m.group(1), display=True), "D") + "\n", markdown_text)
    text = INLINE_MATH.sub(lambda m: stash(to_mathml(m.group(1), display=False), "I"), text)
    body = markdown.markdown(text, extensions=["tables", "fenced_code", "toc"], output_format="html")

    def restore(m: re.Match) -> str:
        mathml = rendered[int(m.group(2))]
        return f'<div class="math">{mathml}</div>' if m.group(1) == "D" else mathml

    body = re.sub(r"<p>NSMATH(D)(\d{4})X</p>", restore, body)
    return re.sub(r"NSMATH([DI])(\d{4})X", restore, body)
