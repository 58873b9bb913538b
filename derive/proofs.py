"""Proofs: the general-N closed forms equal brute-force differentiation at concrete N.

For a concrete N the forward is written with N explicit symbols per field (x_i,
w_i, beta_i, g_i; the residual r_i and its output's gradient g_s_i for the fused residual
add), the affine step multiplies by w_i + c (a symbolic weight offset), the loss is
L = sum_i g_i y_i (+ sum_i g_s_i s_i), and ``sympy.diff`` gives the exact gradient. The closed form of ``derive.symbolic`` is instantiated at the same N
(GroupMean becomes (1/N) sum_i). Square roots are removed by substituting
eps = s^2 - var with s > 0, so ``cancel(brute - closed) == 0`` is an exact proof for
that N (rational functions, no floats, no radicals).
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import sympy as sp

from normspec.derive import symbolic as sym

MAX_N = 8


@dataclass(frozen=True)
class ConcreteGroup:
    """N explicit symbols per field, and the group's statistics written out."""

    n: int

    def field(self, name: str) -> list[sp.Symbol]:
        return list(sp.symbols(f"{name}_1:{self.n + 1}", real=True))

    @property
    def s(self) -> sp.Symbol:
        return sp.Symbol("s", positive=True)  # sqrt(var + eps)


def _instantiate(expr: sp.Expr, values: dict[sp.Symbol, list[sp.Expr]], i: int, n: int) -> sp.Expr:
    """The closed form at element i: fields take their i-th value, GroupMean its sum / N."""

    def mean(m: sym.GroupMean) -> sp.Expr:
        inner = m.args[0]
        return sp.Rational(1, n) * sp.Add(*(_instantiate(inner, values, k, n) for k in range(n)))

    expr = expr.replace(lambda e: isinstance(e, sym.GroupMean), mean)
    return expr.xreplace({field: vals[i] for field, vals in values.items()})


@dataclass(frozen=True)
class ProofResult:
    family: str
    n: int
    checked: tuple[str, ...]  # which gradients were proved
    seconds: float


def prove(family: sym.Family, n: int, *, forms: sym.ClosedForms | None = None) -> ProofResult:
    """Prove every closed form of ``family`` at group size ``n``; raise AssertionError if one differs.

    ``forms`` defaults to the derived closed forms; tests pass broken ones to show
    that the proof can fail.
    """
    start = time.perf_counter()
    forms = forms or sym.derive(family)
    grp = ConcreteGroup(n)
    xs, gs, weights, betas = grp.field("x"), grp.field("g"), grp.field("w"), grp.field("beta")
    residuals, gss = grp.field("r"), grp.field("g_s")
    eps, s, offset = sym.eps, grp.s, sym.c
    gammas = [wi + offset for wi in weights]  # the affine step multiplies by weight + weight offset
    normalized = [xi + ri for xi, ri in zip(xs, residuals)] if family.residual else xs

    if family.batch_statistics:
        mean = sp.Add(*normalized) / n if family.centered else sp.Integer(0)
        variance = sp.Add(*[(v - mean) ** 2 for v in normalized]) / n
    else:  # given statistics are free symbols, independent of x
        mean, variance = sp.Symbol("mu", real=True), sp.Symbol("nu", positive=True)
    held_mean, held_var = sp.Symbol("mu_held", real=True), sp.Symbol("var_held", positive=True)

    def loss(m: sp.Expr, v: sp.Expr) -> sp.Expr:
        ys = [gm * (vi - m) / sp.sqrt(v + eps) + (bt if family.has_bias else 0)
              for vi, gm, bt in zip(normalized, gammas, betas)]
        total = sp.Add(*[gi * yi for gi, yi in zip(gs, ys)])
        return total + (sp.Add(*[gi * vi for gi, vi in zip(gss, normalized)]) if family.residual else 0)

    no_radicals = {eps: s**2 - variance}
    full_loss = loss(mean, variance)
    held_loss = loss(held_mean, held_var)  # statistics held fixed: the direct path
    held_back = {held_mean: mean, held_var: variance}

    xhats = [(v - mean) / s for v in normalized]
    values = {sym.x: xs, sym.g: gs, sym.w: weights, sym.gamma: gammas, sym.beta: betas, sym.xhat: xhats,
              sym.residual: residuals, sym.s: normalized, sym.g_s: gss}
    closed_scalars = {sym.rstd: 1 / s, sym.eps: s**2 - variance}

    claims = {
        "dx": (forms.dx, lambda j: sp.diff(full_loss, xs[j])),
        "dx_direct": (forms.dx_direct, lambda j: sp.diff(held_loss, xs[j]).xreplace(held_back)),
        "dgamma": (forms.dgamma, lambda j: sp.diff(full_loss, weights[j])),
    }
    if forms.dbeta is not None:
        claims["dbeta"] = (forms.dbeta, lambda j: sp.diff(full_loss, betas[j]))
    if family.residual:
        claims["dresidual"] = (forms.dresidual, lambda j: sp.diff(full_loss, residuals[j]))

    for name, (closed, brute) in claims.items():
        for j in range(n):
            derived = _instantiate(closed, values, j, n).xreplace(closed_scalars)
            exact = brute(j).subs(no_radicals)
            if sp.cancel(exact - derived) != 0:
                raise AssertionError(f"{family.name}: {name} differs from brute force at N={n}, element {j}")
    return ProofResult(family.name, n, tuple(claims), time.perf_counter() - start)


def prove_all(max_n: int = MAX_N):
    """Yield one ProofResult per family and N = 1..max_n."""
    for family in sym.FAMILIES:
        for n in range(1, max_n + 1):
            yield prove(family, n)
