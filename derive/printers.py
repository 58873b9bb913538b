"""Printers from the derivation's expressions to vectorised NumPy and torch source.

One printer class, one ``_print_<Node>`` method per node type it supports; the NumPy
and torch printers differ only in their :class:`Dialect` (module name and function
table). Anything else (a Float, an unknown function, a Piecewise) fails loudly.

Reductions are lifted into named temporaries (``mean_0 = numpy.mean(..., axis=group_dims,
keepdims=True)``) and ``sympy.cse`` shares the rest, so generated code is a straight
sequence of broadcasting statements with no Python loop over elements.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

import sympy as sp
from sympy.printing.str import StrPrinter

from derive import symbolic as sym

# Code names of the derivation's symbols.
CODE_NAMES = {
    sym.x: "x", sym.g: "grad_out", sym.gamma: "weight", sym.beta: "bias",
    sym.xc: "xc", sym.xhat: "xhat", sym.y: "y",
    sym.mu: "mean", sym.var: "var", sym.rstd: "rstd", sym.eps: "eps",
}
_TEMPORARY = re.compile(r"^(t|mean_|sum_)\d+$")


@dataclass(frozen=True)
class Dialect:
    """What differs between array libraries: the module and the function table."""

    module: str
    group_mean: str  # format with {arg}
    affine_sum: str
    sqrt: str
    rsqrt: str


NUMPY = Dialect(
    module="numpy",
    group_mean="numpy.mean({arg}, axis=group_dims, keepdims=True)",
    affine_sum="numpy.sum({arg}, axis=affine_dims, keepdims=True)",
    sqrt="numpy.sqrt({arg})",
    rsqrt="1 / numpy.sqrt({arg})",
)
TORCH = Dialect(
    module="torch",
    group_mean="torch.mean({arg}, dim=group_dims, keepdim=True)",
    affine_sum="torch.sum({arg}, dim=affine_dims, keepdim=True)",
    sqrt="torch.sqrt({arg})",
    rsqrt="torch.rsqrt({arg})",
)


class UnsupportedNode(TypeError):
    pass


class ArrayPrinter(StrPrinter):
    """Prints one expression of the derivation as array code in ``dialect``."""

    def __init__(self, dialect: Dialect):
        super().__init__({"order": "none"})
        self.dialect = dialect

    def emptyPrinter(self, expr):  # noqa: N802 (SymPy's name)
        raise UnsupportedNode(f"no printer for {type(expr).__name__}: {expr!r}")

    def _print_Symbol(self, expr):
        if expr in CODE_NAMES:
            return CODE_NAMES[expr]
        if _TEMPORARY.match(expr.name):
            return expr.name
        raise UnsupportedNode(f"symbol {expr.name!r} has no code name")

    def _print_Pow(self, expr, rational=False):
        base, exponent = expr.args
        if exponent == sp.Rational(-1, 2):
            return self.dialect.rsqrt.format(arg=self._print(base))
        if exponent == sp.Rational(1, 2):
            return self.dialect.sqrt.format(arg=self._print(base))
        if not exponent.is_Integer:
            raise UnsupportedNode(f"power with exponent {exponent}")
        return super()._print_Pow(expr, rational)

    def _print_GroupMean(self, expr):
        return self.dialect.group_mean.format(arg=self._print(expr.args[0]))

    def _print_AffineSum(self, expr):
        return self.dialect.affine_sum.format(arg=self._print(expr.args[0]))

    def _print_Function(self, expr):
        raise UnsupportedNode(f"function {expr.func.__name__} is not in the {self.dialect.module} table")

    def _print_Float(self, expr):
        raise UnsupportedNode(f"float literal {expr} (derived expressions are exact)")


def _is_reduction(expr: sp.Expr) -> bool:
    return isinstance(expr, (sym.GroupMean, sym.AffineSum))


def straight_line(outputs: dict[str, sp.Expr]) -> list[tuple[str, sp.Expr]]:
    """Assignments computing ``outputs``: CSE, then every reduction in its own temporary."""
    names = list(outputs)
    replacements, reduced = sp.cse(
        [outputs[n] for n in names],
        symbols=sp.numbered_symbols("t"),
        optimizations="basic",
        order="none",
    )
    counters = {"mean": 0, "sum": 0}
    statements: list[tuple[str, sp.Expr]] = []

    def lift(expr: sp.Expr, *, keep_top: bool) -> sp.Expr:
        """Move nested reductions of ``expr`` into statements of their own."""

        def visit(node: sp.Expr, top: bool) -> sp.Expr:
            if not node.args:
                return node
            rebuilt = node.func(*(visit(a, False) for a in node.args))
            if _is_reduction(rebuilt) and not top:
                kind = "mean" if isinstance(rebuilt, sym.GroupMean) else "sum"
                temp = sp.Symbol(f"{kind}_{counters[kind]}")
                counters[kind] += 1
                statements.append((temp.name, rebuilt))
                return temp
            return rebuilt

        return visit(expr, keep_top)

    for temp, value in replacements:
        statements.append((temp.name, lift(value, keep_top=True)))
    for name, value in zip(names, reduced):
        statements.append((name, lift(value, keep_top=True)))
    return statements


def print_statements(statements: list[tuple[str, sp.Expr]], dialect: Dialect, indent: str = "    ") -> str:
    printer = ArrayPrinter(dialect)
    return "".join(f"{indent}{name} = {printer.doprint(value)}\n" for name, value in statements)
