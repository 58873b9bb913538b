"""One symbolic normalize, derived for a general group size N.

The forward pass is a small *program* over two kinds of values:

- per-element fields (x, g, gamma, beta, xc, xhat, y): one value per element of a group;
- group scalars (mu, var, rstd, eps): one value shared by the whole group.

A group scalar is defined by :class:`GroupMean`, an unevaluated, linear mean over the
group. Reverse mode is applied to that program, not to N explicit symbols, so N never
appears: the adjoint of a group scalar is kept *mean-scaled* (its true adjoint divided
by N), which turns every ``sum_i`` of the chain rule into another ``GroupMean``. The
algebraic facts of the group (mean(xhat) = 0, mean(xhat^2) = var * rstd^2) are then
applied as rewrite rules, leaving the closed forms in the centered basis (xhat).

``derive.proofs`` checks every closed form against brute-force ``sympy.diff`` at
concrete N in exact arithmetic.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import cache

import sympy as sp


class GroupMean(sp.Function):
    """mean over the elements of one group (unevaluated; linear)."""

    nargs = 1

    @classmethod
    def eval(cls, arg):
        if arg.is_zero:
            return sp.Integer(0)


class AffineSum(sp.Function):
    """sum over the axes a parameter gradient is reduced over (the non-affine axes)."""

    nargs = 1

    @classmethod
    def eval(cls, arg):
        if arg.is_zero:
            return sp.Integer(0)


# Per-element fields. The names are the mathematical ones (docs print them with
# sympy.latex); the printers map them to code names.
x, g, gamma, beta = sp.symbols("x g gamma beta", real=True)
xc = sp.Symbol("x_c", real=True)  # x - mu (the centered value)
xhat = sp.Symbol(r"\hat{x}", real=True)
y = sp.Symbol("y", real=True)
# gamma is the multiplier of the affine step, gamma = w + c: the weight parameter w plus the weight
# offset c (Gemma's zero-centered weight: c = 1; the adaptive norms' 1 + scale: w = scale, c = 1).
w = sp.Symbol("w", real=True)
# The fused residual add: s = x + x_r is normalized and returned beside y; g_s is its upstream gradient.
residual = sp.Symbol("x_r", real=True)
s = sp.Symbol("s", real=True)
g_s = sp.Symbol("g_s", real=True)
ELEMENT_SYMBOLS = frozenset({x, g, gamma, beta, xc, xhat, y, w, residual, s, g_s})

# Group scalars.
mu = sp.Symbol("mu", real=True)
var = sp.Symbol("sigma^2", nonnegative=True)
rstd = sp.Symbol("r", positive=True)  # 1 / sqrt(var + eps)
eps = sp.Symbol("epsilon", nonnegative=True)
GROUP_SYMBOLS = frozenset({mu, var, rstd, eps})
# A constant of the whole call (neither per element nor per group): the weight offset.
c = sp.Symbol("c", real=True)


@dataclass(frozen=True)
class Node:
    """``target = expr`` (per element), or ``target = GroupMean(expr)`` when ``reduced``."""

    target: sp.Symbol
    expr: sp.Expr
    reduced: bool = False


@dataclass(frozen=True)
class Family:
    """A family of normalize programs; every named variant belongs to one.

    centered: subtract the group mean (False: RMS normalization, mu = 0).
    batch_statistics: mu and var are computed from the group (False: they are given,
        as in batch_norm's eval mode, and no gradient flows through them).
    has_bias: the affine step adds beta.
    residual: the fused residual add: s = x + x_r is normalized, and returned beside y.

    Every family multiplies by gamma = w + c, the weight plus the weight offset (0 where the
    variant has none).
    """

    name: str
    centered: bool
    batch_statistics: bool
    has_bias: bool
    residual: bool = False

    def program(self) -> tuple[Node, ...]:
        """The forward pass as an ordered list of nodes, ending in y."""
        nodes = []
        normalized = x
        if self.residual:
            nodes.append(Node(s, x + residual))
            normalized = s
        if self.centered and self.batch_statistics:
            nodes.append(Node(mu, normalized, reduced=True))
        nodes.append(Node(xc, normalized - mu if self.centered else normalized))
        if self.batch_statistics:
            nodes.append(Node(var, xc**2, reduced=True))
        nodes.append(Node(rstd, 1 / sp.sqrt(var + eps)))
        nodes.append(Node(xhat, xc * rstd))
        nodes.append(Node(gamma, w + c))
        nodes.append(Node(y, gamma * xhat + (beta if self.has_bias else 0)))
        return tuple(nodes)

    def inputs(self) -> tuple[sp.Symbol, ...]:
        """The program's inputs, in the order the generated forward takes them."""
        added = (residual,) if self.residual else ()
        given = (mu, var) if not self.batch_statistics else ()
        params = (w, beta) if self.has_bias else (w,)
        return (x, *added, *given, *params, c, eps)

    def outputs(self) -> tuple[sp.Symbol, ...]:
        """The program's outputs: y, and the sum s of the fused residual add."""
        return (y, s) if self.residual else (y,)

    def seeds(self) -> dict[sp.Symbol, sp.Expr]:
        """The upstream gradient of each output (the loss is sum_i of seed_i * output_i)."""
        return {y: g, s: g_s} if self.residual else {y: g}


CENTERED = Family("centered", centered=True, batch_statistics=True, has_bias=True)
RMS = Family("rms", centered=False, batch_statistics=True, has_bias=False)
GIVEN_STATS = Family("given_stats", centered=True, batch_statistics=False, has_bias=True)
CENTERED_RESIDUAL = Family("centered_residual", centered=True, batch_statistics=True, has_bias=True, residual=True)
RMS_RESIDUAL = Family("rms_residual", centered=False, batch_statistics=True, has_bias=False, residual=True)
FAMILIES = (CENTERED, RMS, GIVEN_STATS, CENTERED_RESIDUAL, RMS_RESIDUAL)


def is_group_constant(expr: sp.Expr) -> bool:
    """True when ``expr`` has one value per group (no free per-element field)."""
    stripped = expr.replace(GroupMean, lambda _: sp.Integer(1))
    stripped = stripped.replace(AffineSum, lambda _: sp.Integer(1))
    return not (stripped.free_symbols & ELEMENT_SYMBOLS)


def _mean_of_term(term: sp.Expr) -> sp.Expr:
    constant, varying = [], []
    for factor in sp.Mul.make_args(term):
        (constant if is_group_constant(factor) else varying).append(factor)
    if not varying:
        return sp.Mul(*constant)
    return sp.Mul(*constant) * GroupMean(sp.Mul(*varying))


def expand_means(expr: sp.Expr) -> sp.Expr:
    """Push every GroupMean through sums and group-constant factors (linearity)."""

    def expand_one(mean: GroupMean) -> sp.Expr:
        inner = sp.expand(expand_means(mean.args[0]))
        return sp.Add(*(_mean_of_term(t) for t in sp.Add.make_args(inner)))

    return expr.replace(lambda e: isinstance(e, GroupMean), expand_one)


def _group_facts(family: Family) -> dict[sp.Expr, sp.Expr]:
    """The group's algebraic facts, as rewrites of means of xhat."""
    if not family.batch_statistics:
        return {}  # given statistics: xhat has no known moments
    facts = {GroupMean(xhat**2): var * rstd**2}
    if family.centered:
        facts[GroupMean(xhat)] = sp.Integer(0)
    return facts


def to_centered_basis(expr: sp.Expr, family: Family) -> sp.Expr:
    """Rewrite in terms of xhat and rstd, expand means, apply the group facts."""
    expr = expr.subs(xc, xhat / rstd).subs(var, rstd**-2 - eps)
    expr = expand_means(expr)
    expr = expr.xreplace(_group_facts(family))
    return expr.subs(var, rstd**-2 - eps)


def reverse_mode(
    program: tuple[Node, ...], seeds: dict[sp.Symbol, sp.Expr], *, through_statistics: bool = True
) -> dict[sp.Symbol, sp.Expr]:
    """Adjoints of every value of ``program`` for the loss ``sum_i sum_o seeds[o]_i * o_i`` over
    its outputs o (y; and s for the fused residual add).

    Per-element values get their per-element adjoint; group scalars get theirs
    divided by N (mean-scaled), so the chain rule's sums over the group are
    GroupMeans and N never appears. With ``through_statistics=False`` no adjoint
    flows into group scalars: the statistics are held fixed (the direct path).
    """
    adjoint: dict[sp.Symbol, sp.Expr] = dict(seeds)
    for node in reversed(program):
        node_adjoint = adjoint.get(node.target, sp.Integer(0))
        target_is_group = node.reduced or node.target in GROUP_SYMBOLS
        for parent in sorted(node.expr.free_symbols, key=str):
            parent_is_group = parent in GROUP_SYMBOLS
            if parent_is_group and not through_statistics:
                continue
            local = sp.diff(node.expr, parent)
            if local == 0:
                continue
            if parent_is_group and not target_is_group:
                contribution = GroupMean(node_adjoint * local)
            elif parent_is_group and node.reduced:
                contribution = node_adjoint * GroupMean(local)
            else:
                contribution = node_adjoint * local
            adjoint[parent] = adjoint.get(parent, sp.Integer(0)) + contribution
    return adjoint


@dataclass(frozen=True)
class ClosedForms:
    """The derived closed forms of one family (per element, general N)."""

    family: Family
    forward: tuple[Node, ...]
    dx: sp.Expr
    dx_direct: sp.Expr  # statistics held fixed
    dx_through_statistics: sp.Expr  # the path through mu and var: dx - dx_direct
    dgamma: sp.Expr  # per-element contribution; the gradient is its AffineSum
    dbeta: sp.Expr | None
    dresidual: sp.Expr | None = None  # the fused residual add: the gradient of x_r (it equals dx)

    def outputs(self) -> dict[str, sp.Expr]:
        """The gradients the reference kernels return, with parameter reductions applied."""
        grads = {"dx": self.dx, "dweight": AffineSum(self.dgamma)}
        if self.dbeta is not None:
            grads["dbias"] = AffineSum(self.dbeta)
        return grads


def _tidy(expr: sp.Expr) -> sp.Expr:
    return sp.factor_terms(sp.expand(expr))


def _tidy_per_seed(expr: sp.Expr, family: Family) -> sp.Expr:
    """``expr`` (linear in the upstream gradients) tidied one upstream gradient at a time, so that
    the residual's pass-through stays apart: g_s + r * (h - ...), not g_s + h r - r mean(h) - ..."""
    seeds = list(family.seeds().values())
    parts = [expr.xreplace({other: 0 for other in seeds if other != seed}) for seed in seeds]
    return sp.Add(*(_tidy(part) for part in parts))


@cache
def derive(family: Family) -> ClosedForms:
    """Reverse-mode closed forms of ``family``'s normalize, valid for every N."""
    program = family.program()
    full = reverse_mode(program, family.seeds())
    direct = reverse_mode(program, family.seeds(), through_statistics=False)
    dx = _tidy_per_seed(to_centered_basis(full[x], family), family)
    dx_direct = _tidy_per_seed(to_centered_basis(direct[x], family), family)
    dresidual = _tidy_per_seed(to_centered_basis(full[residual], family), family) if family.residual else None
    if dresidual is not None and sp.expand(dresidual - dx) != 0:  # s = x + x_r: the same gradient
        raise AssertionError(f"{family.name}: the derived gradient of the residual differs from dx")
    return ClosedForms(
        family=family,
        forward=program,
        dx=dx,
        dx_direct=dx_direct,
        dx_through_statistics=_tidy_per_seed(dx - dx_direct, family),
        dgamma=to_centered_basis(full[w], family),
        dbeta=to_centered_basis(full[beta], family) if family.has_bias else None,
        dresidual=dresidual,
    )
