"""Printers from the derivation's expressions to vectorised NumPy and torch source.

One printer class, one ``_print_<Node>`` method per node type it supports; the NumPy
and torch printers differ only in their :class:`Dialect` (module name, function
table and the runtime helpers it needs). Anything else (a Float, an unknown
function, a Piecewise) fails loudly.

Generated code is meant to read like the spec, in the register of a kernel author
(the Triton layer-norm tutorial, torch/_decomp ``native_layer_norm_backward``):

- **Names come from the expression.** The spec's own subexpressions keep their spec
  names (:data:`NAMED_SUBEXPRESSIONS`: ``h = weight * grad_out``); every other
  temporary is named by :func:`temporary_name` from what it computes: the mean over
  the group of ``h * xhat`` is ``mean_h_xhat``, a sum over the affine axes
  ``sum_...``. There are no numbered temporaries; two different values that would
  get one name are an error.
- **Terms in the formula's order** (:func:`term_key`, :func:`factor_key`): in a sum,
  the positive per-element terms (the value being corrected: ``h``, ``x``,
  ``weight * xhat``) come first, then the others from the simplest (fewest factors);
  in a product, parameters, then per-element fields, then group constants, then a
  parenthesised sum: ``dx = rstd * (h - mean_h - xhat * mean_h_xhat)``.
- **One name per array.** Every statement makes its own array under its own name. A
  statement that only renames a value (rms: ``xc = x``) is not printed, and a
  per-element value read once, that is not returned, is written into its one use
  (:func:`inline`): an array is made only for a value read more than once.

Speed comes from the reductions and from CSE, not from aliasing: a reduction of a
product of fields is one fused call where the dialect has one (NumPy:
``_group_mean(group_dims, h, xhat)``, a ``numpy.einsum`` that sums the product without
materialising it), and reductions are lifted into named temporaries while
``sympy.cse`` shares the rest, so generated code is a straight sequence of
broadcasting statements with no Python loop over elements. On inputs of millions of
elements what costs is fresh full-size arrays (neither library reliably elides the
temporaries of an expression), so in code autograd does not record
(:func:`print_statements`' ``in_place``) a per-element statement makes its array with
one operation and finishes it in place, in the formula's order (``dx = h - mean_h;
dx -= xhat * mean_h_xhat; dx *= rstd``), and an array is freed (``del h``) after its
last use when another one is made later, which then takes its memory over. In-place
updates only ever touch the array the statement itself made, never another name's
array or an input. Code autograd records (torch's ``_vjp``, differentiated by the
double backward) is one expression per statement, nothing in place:
``dx = rstd * (h - mean_h - xhat * mean_h_xhat)``.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

import sympy as sp
from sympy.printing.str import StrPrinter

from normspec.derive import symbolic as sym

# Code names of the derivation's symbols.
CODE_NAMES = {
    sym.x: "x", sym.g: "grad_out", sym.w: "weight", sym.gamma: "effective_weight", sym.beta: "bias",
    sym.xc: "xc", sym.xhat: "xhat", sym.y: "y",
    sym.mu: "mean", sym.var: "var", sym.rstd: "rstd", sym.eps: "eps", sym.c: "weight_offset",
    sym.residual: "residual", sym.s: "residual_out", sym.g_s: "grad_residual_out",
}
# The spec's named subexpressions (h = gamma * g): substituted into the closed forms
# before CSE, each printed once as its own statement under its spec name.
H = sp.Symbol("h", real=True)
NAMED_SUBEXPRESSIONS: tuple[tuple[sp.Symbol, sp.Expr], ...] = ((H, sym.gamma * sym.g),)
# Fields with one value per element of the input: arrays of the full working shape.
# (gamma and beta are per-element in the mathematics but arrive in the parameter shape.)
FULL_FIELDS = frozenset({sym.x, sym.g, sym.xc, sym.xhat, sym.y, H, sym.residual, sym.s, sym.g_s})
PARAMETERS = frozenset({sym.w, sym.gamma, sym.beta})
# The order symbols are written in within a product (and ties between terms of a sum).
SPEC_ORDER = (sym.w, sym.gamma, sym.beta, sym.g_s, sym.g, H, sym.x, sym.residual, sym.s, sym.xc, sym.xhat, sym.y,
              sym.mu, sym.var, sym.rstd, sym.eps, sym.c)


@dataclass(frozen=True)
class Dialect:
    """What differs between array libraries: the module, the function table, runtime helpers."""

    module: str
    group_mean: str  # format with {arg}
    affine_sum: str
    sqrt: str
    rsqrt: str
    # Fused reductions of a product of fields, formatted with {factors} (comma-separated);
    # None: the product is materialised and reduced with group_mean / affine_sum.
    fused_group_mean: str | None = None
    fused_affine_sum: str | None = None
    # The module (a path relative to the repository root) whose imports and function
    # definitions the fused forms call; codegen copies them into the generated module.
    runtime: str | None = None
    # The library records operations for differentiation (torch autograd): its forward
    # also returns xhat, which the autograd.Function saves for the backward.
    recorded: bool = False


NUMPY = Dialect(
    module="numpy",
    group_mean="numpy.mean({arg}, axis=group_dims, keepdims=True)",
    affine_sum="numpy.sum({arg}, axis=affine_dims, keepdims=True)",
    sqrt="numpy.sqrt({arg})",
    rsqrt="1 / numpy.sqrt({arg})",
    fused_group_mean="_group_mean(group_dims, {factors})",
    fused_affine_sum="_affine_sum(affine_dims, {factors})",
    runtime="derive/numpy_runtime.py",
)
TORCH = Dialect(
    module="torch",
    group_mean="torch.mean({arg}, dim=group_dims, keepdim=True)",
    affine_sum="torch.sum({arg}, dim=affine_dims, keepdim=True)",
    sqrt="torch.sqrt({arg})",
    rsqrt="torch.rsqrt({arg})",
    recorded=True,
)


class UnsupportedNode(TypeError):
    pass


def _is_reduction(expr: sp.Expr) -> bool:
    return isinstance(expr, (sym.GroupMean, sym.AffineSum))


def _factors(expr: sp.Expr) -> list[sp.Expr]:
    """``expr`` as a list of factors, integer powers written out (xc**2 -> [xc, xc])."""
    factors = []
    for factor in sp.Mul.make_args(expr):
        base, exponent = factor.as_base_exp()
        if exponent.is_Integer and exponent > 1:
            factors.extend([base] * int(exponent))
        else:
            factors.append(factor)
    return factors


# --- the order of terms and factors ------------------------------------------------

_PARAMETER, _FIELD, _CONSTANT, _COMPOUND = 1, 2, 3, 4  # kinds of factors, in print order


def factor_key(factor: sp.Expr, full: frozenset[sp.Symbol], name: str = "") -> tuple:
    """Where ``factor`` goes in a product: numbers, parameters, per-element fields, group
    constants (statistics and reductions), then a parenthesised sum; within a kind, in
    :data:`SPEC_ORDER`, then by ``name`` (the factor as printed, for temporaries)."""
    if factor.is_Number:
        return (0, 0, "")
    if isinstance(factor, sp.Add):
        return (_COMPOUND, 0, name)
    base = factor.as_base_exp()[0] if isinstance(factor, sp.Pow) else factor
    if base in PARAMETERS:
        kind = _PARAMETER
    elif not _is_reduction(base) and base.free_symbols & full:
        kind = _FIELD
    else:
        kind = _CONSTANT
    position = SPEC_ORDER.index(base) if base in SPEC_ORDER else len(SPEC_ORDER)
    return (kind, position, name)


def term_key(term: sp.Expr, full: frozenset[sp.Symbol], names: list[str]) -> tuple:
    """Where ``term`` goes in a sum: positive per-element terms (the value being corrected:
    ``h``, ``x``, ``weight * xhat``) first, then positive before negative, then fewest
    factors first; ties by the factors' keys (``names``: the term's factors as printed)."""
    negative = term.could_extract_minus_sign()
    magnitude = -term if negative else term
    factors = [f for f in sp.Mul.make_args(magnitude) if not f.is_Number]
    keys = [factor_key(f, full, n) for f, n in zip(factors, names)]
    per_element = any(k[0] == _FIELD or (k[0] == _COMPOUND and f.free_symbols & full) for f, k in zip(factors, keys))
    return (not (per_element and not negative), negative, len(factors), sorted(keys))


# --- names of temporaries ----------------------------------------------------------

def _symbol_name(symbol: sp.Symbol) -> str:
    if symbol in CODE_NAMES:
        return CODE_NAMES[symbol]
    return symbol.name


def temporary_name(expr: sp.Expr) -> str:
    """The name a temporary computing ``expr`` gets, derived from the expression.

    ``GroupMean(h*xhat)`` -> ``mean_h_xhat``, ``AffineSum(g*xhat)`` -> ``sum_grad_out_xhat``,
    ``xc**2`` -> ``xc_sq``, ``-h`` -> ``neg_h``, products join their factors' names in
    the printed order, sums their terms' with ``plus`` / ``minus``.
    """
    if expr.is_Symbol:
        return _symbol_name(expr)
    if isinstance(expr, sym.GroupMean):
        return "mean_" + temporary_name(expr.args[0])
    if isinstance(expr, sym.AffineSum):
        return "sum_" + temporary_name(expr.args[0])
    if isinstance(expr, sp.Mul):
        coefficient, rest = expr.as_coeff_Mul()
        if coefficient not in (1, -1):
            raise UnsupportedNode(f"no name for a temporary with coefficient {coefficient}: {expr}")
        factors = sorted(sp.Mul.make_args(rest), key=lambda f: factor_key(f, FULL_FIELDS, temporary_name(f)))
        name = "_".join(temporary_name(f) for f in factors)
        return f"neg_{name}" if coefficient == -1 else name
    if isinstance(expr, sp.Pow):
        base, exponent = expr.args
        prefixes = {sp.Rational(-1, 2): "rsqrt_", sp.Rational(1, 2): "sqrt_", sp.Integer(-1): "inv_"}
        if exponent in prefixes:
            return prefixes[exponent] + temporary_name(base)
        if exponent == 2:
            return temporary_name(base) + "_sq"
        raise UnsupportedNode(f"no name for a temporary {expr}")
    if isinstance(expr, sp.Add):
        terms = sorted(sp.Add.make_args(expr), key=lambda t: term_key(t, FULL_FIELDS, [temporary_name(t)]))
        parts = []
        for index, term in enumerate(terms):
            negative = term.could_extract_minus_sign()
            text = temporary_name(-term if negative else term)
            parts.append(("minus_" if negative else "" if index == 0 else "plus_") + text)
        return "_".join(parts)
    raise UnsupportedNode(f"no name for a temporary {type(expr).__name__}: {expr!r}")


# --- printing ----------------------------------------------------------------------

class ArrayPrinter(StrPrinter):
    """Prints one expression of the derivation as array code in ``dialect``.

    ``full`` names the symbols that are arrays of the full working shape (the fields
    and the temporaries computed from them); a reduction fuses only when one of its
    factors is such an array. ``temporaries`` are the other symbols the code defines.
    """

    def __init__(self, dialect: Dialect, full: frozenset[sp.Symbol] = FULL_FIELDS,
                 temporaries: frozenset[sp.Symbol] = frozenset()):
        super().__init__({"order": "none"})
        self.dialect = dialect
        self.full = full
        self.temporaries = temporaries

    def emptyPrinter(self, expr):  # noqa: N802 (SymPy's name)
        raise UnsupportedNode(f"no printer for {type(expr).__name__}: {expr!r}")

    def _print_Symbol(self, expr):
        if expr in CODE_NAMES:
            return CODE_NAMES[expr]
        if expr in self.temporaries or any(expr == s for s, _ in NAMED_SUBEXPRESSIONS):
            return expr.name
        raise UnsupportedNode(f"symbol {expr.name!r} has no code name")

    def _atom(self, expr: sp.Expr) -> str:
        """``expr`` as an operand of ``*`` or ``**``: parenthesised unless it binds tighter."""
        text = self._print(expr)
        power = isinstance(expr, sp.Pow) and expr.exp.is_Integer and expr.exp > 0
        call = isinstance(expr, sp.Pow) and re.fullmatch(r"[\w.]+\(.*\)", text) is not None
        if expr.is_Symbol or _is_reduction(expr) or (expr.is_Integer and expr >= 0) or power or call:
            return text
        return f"({text})"

    def ordered_terms(self, expr: sp.Add) -> list[sp.Expr]:
        def key(term):
            magnitude = -term if term.could_extract_minus_sign() else term
            names = [self._print(f) for f in sp.Mul.make_args(magnitude) if not f.is_Number]
            return term_key(term, self.full, names)
        return sorted(sp.Add.make_args(expr), key=key)

    def ordered_factors(self, expr: sp.Expr) -> list[sp.Expr]:
        return sorted(sp.Mul.make_args(expr), key=lambda f: factor_key(f, self.full, self._print(f)))

    def is_negative(self, term: sp.Expr) -> bool:
        """Whether ``term`` prints as a subtraction: a product keeps its sign when its one sum can
        carry it (r * (h - mean_h) is added, not subtracted as r * (mean_h - h))."""
        if isinstance(term, sp.Mul) and sum(isinstance(f, sp.Add) for f in term.args) == 1:
            return bool(self.ordered_product(term)[0].is_negative)
        return term.could_extract_minus_sign()

    def _print_Add(self, expr, order=None):
        parts = []
        for index, term in enumerate(self.ordered_terms(expr)):
            negative = self.is_negative(term)
            text = self._print(-term if negative else term)
            if index == 0:
                parts.append(f"-{text}" if negative else text)
            else:
                parts.append(f"{'-' if negative else '+'} {text}")
        return " ".join(parts)

    def ordered_product(self, expr: sp.Expr) -> tuple[sp.Number, list[sp.Expr]]:
        """(coefficient, factors in print order) of a product; a negative coefficient goes into
        a sum factor when the sum then leads with a positive term (-rstd * (mean_h - h) is
        rstd * (h - mean_h))."""
        coefficient, rest = expr.as_coeff_Mul()
        ordered = self.ordered_factors(rest)
        sums = [f for f in ordered if isinstance(f, sp.Add)]
        if coefficient.is_negative and len(sums) == 1:
            negated = sp.Add(*(-t for t in sums[0].args))
            if not self.ordered_terms(negated)[0].could_extract_minus_sign():
                coefficient, ordered = -coefficient, [negated if f is sums[0] else f for f in ordered]
        return coefficient, ordered

    def _print_Mul(self, expr):
        coefficient, ordered = self.ordered_product(expr)
        factors = [self._atom(f) for f in ordered]
        if coefficient == -1:
            return "-" + " * ".join(factors)
        if coefficient == 1:
            return " * ".join(factors)
        return " * ".join([self._print(coefficient), *factors])

    def _print_Pow(self, expr, rational=False):
        base, exponent = expr.args
        if exponent == sp.Rational(-1, 2):
            return self.dialect.rsqrt.format(arg=self._print(base))
        if exponent == sp.Rational(1, 2):
            return self.dialect.sqrt.format(arg=self._print(base))
        if not exponent.is_Integer:
            raise UnsupportedNode(f"power with exponent {exponent}")
        if exponent > 0:
            return f"{self._atom(base)}**{exponent}"
        return f"1 / {self._atom(base)}" + ("" if exponent == -1 else f"**{-exponent}")

    def _reduction(self, expr, plain: str, fused: str | None):
        arg = expr.args[0]
        if fused is None or not (arg.free_symbols & self.full):
            return plain.format(arg=self._print(arg))
        coefficient, rest = arg.as_coeff_Mul()
        factors = [f for factor in self.ordered_factors(rest) for f in _factors(factor)]
        call = fused.format(factors=", ".join(self._print(f) for f in factors))
        return call if coefficient == 1 else f"{self._atom(coefficient)} * {call}"

    def _print_GroupMean(self, expr):
        return self._reduction(expr, self.dialect.group_mean, self.dialect.fused_group_mean)

    def _print_AffineSum(self, expr):
        return self._reduction(expr, self.dialect.affine_sum, self.dialect.fused_affine_sum)

    def _print_Function(self, expr):
        raise UnsupportedNode(f"function {expr.func.__name__} is not in the {self.dialect.module} table")

    def _print_Float(self, expr):
        raise UnsupportedNode(f"float literal {expr} (derived expressions are exact)")


# The dialect of formulas in docstrings: mean(.) over the group, sum(.) over affine_dims.
FORMULA = Dialect(module="formula", group_mean="mean({arg})", affine_sum="sum({arg})",
                  sqrt="sqrt({arg})", rsqrt="1 / sqrt({arg})")


def name_subexpressions(expr: sp.Expr) -> sp.Expr:
    """``expr`` with the spec's named subexpressions (h = gamma * g) substituted."""
    for symbol, definition in NAMED_SUBEXPRESSIONS:
        expr = expr.subs(definition, symbol)
    return expr


def formula(expr: sp.Expr, *, named: bool = True) -> str:
    """``expr`` as a docstring formula: code names, spec order, mean(.) and sum(.) written out;
    with ``named``, the spec's named subexpressions (h) by their names."""
    return ArrayPrinter(FORMULA).doprint(name_subexpressions(expr) if named else expr)
