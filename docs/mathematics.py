"""The mathematics the spec states, read off the derivation (``normspec.derive.symbolic``).

Nothing here is typed by hand: the Jacobian is read off the derived VJP, the invariants
come from the forward program and the group's rewrite rules, and the running update is
assembled from the program's statistics. The statements (``statements``) print these
expressions with ``derive.latex``; the figures (``figures``) evaluate them.
"""
from __future__ import annotations

from dataclasses import dataclass

import sympy as sp

from normspec.derive import symbolic as sym
from normspec.derive.latex import equation, latex
from normspec.derive.variants import Variant

H = sp.Symbol("h", real=True)  # h = gamma * g, the upstream gradient through the affine step
I, J = sp.symbols("i j", integer=True)
N = sp.Symbol("N", positive=True, integer=True)
DELTA = sp.KroneckerDelta(I, J)
SHIFT = sp.Symbol("b", real=True)  # a constant added to every element of a group
SCALE = sp.Symbol("a", positive=True)
STD = sp.sqrt(sym.var + sym.eps)  # the standard deviation, eps included
FAMILIES = {f.name: f for f in sym.FAMILIES}


def family_of(record: Variant, batch_statistics: bool = True) -> sym.Family:
    """The symbolic family a variant runs in (given statistics: ``batch_statistics=False``)."""
    return FAMILIES[record.family(batch_statistics)]


def base_family(family: sym.Family) -> sym.Family:
    """The family without the fused residual add (the family itself when it has none)."""
    return next(f for f in sym.FAMILIES if not f.residual and (f.centered, f.batch_statistics, f.has_bias)
                == (family.centered, family.batch_statistics, family.has_bias))


def normalized_input(family: sym.Family) -> sp.Symbol:
    """What the family normalizes: x, or s = x + x_r for the fused residual add."""
    return sym.s if family.residual else sym.x


# --- how a page writes the affine step --------------------------------------------------------

@dataclass(frozen=True)
class Notation:
    """How a variant's page writes the derivation's affine step, gamma = w + c.

    ``offset`` is what c is on the page: the symbol c where the variant has the weight_offset
    option, the number it fixes (the adaptive norms: 1), or 0 where it has none. ``weight`` and
    ``bias`` are the symbols w and beta print as: gamma and beta without an offset (so those pages
    read y = gamma xhat + beta, as before the offset existed), the signature's names otherwise
    (scale and shift). Only with the option is the node gamma = w + c kept; elsewhere gamma is
    written out (1 + scale).
    """

    family: sym.Family
    offset: sp.Expr
    weight: sp.Symbol
    bias: sp.Symbol

    @property
    def has_offset(self) -> bool:
        return self.offset != 0

    @property
    def keeps_gamma(self) -> bool:
        """gamma = w + c stays a node of the page's forward (the weight_offset option)."""
        return self.offset == sym.c

    @property
    def substitutions(self) -> dict[sp.Symbol, sp.Expr]:
        return {sym.c: self.offset, sym.w: self.weight, sym.beta: self.bias}

    @property
    def multiplier(self) -> sp.Expr:
        """What gamma is on the page: gamma itself, or its value written out (1 + scale)."""
        if self.keeps_gamma:
            return sym.gamma
        return gamma_value().xreplace(self.substitutions)

    def show(self, expr: sp.Expr) -> sp.Expr:
        """``expr`` of the derivation in the page's symbols."""
        return sp.sympify(expr).xreplace({sym.gamma: self.multiplier}).xreplace(self.substitutions)

    def program(self) -> tuple[sym.Node, ...]:
        """The family's forward program in the page's symbols (gamma = w + c only with the option)."""
        return tuple(sym.Node(n.target, self.show(n.expr), n.reduced) for n in self.family.program()
                     if n.target != sym.gamma or self.keeps_gamma)


def gamma_value() -> sp.Expr:
    """gamma in terms of the weight and the offset, from the program's node for gamma."""
    return next(n.expr for n in sym.CENTERED.program() if n.target == sym.gamma)


def symbol_of(name: str) -> sp.Symbol:
    """A signature's argument name as a symbol of the page (scale, shift)."""
    return sp.Symbol(rf"\text{{{name}}}", real=True)


def notation_of(record: Variant | None, family: sym.Family | None = None) -> Notation:
    """The notation of ``record``'s page for ``family`` (default: its own; None: a page without
    an offset, the index's corrections)."""
    family = family or family_of(record)
    if record is not None and record.fixed_weight_offset is not None:
        return Notation(family, sp.nsimplify(record.fixed_weight_offset), symbol_of(record.parameter("weight")),
                        symbol_of(record.parameter("bias")))
    if record is not None and record.option("weight_offset") is not None:
        return Notation(family, sym.c, sym.w, sym.beta)
    return Notation(family, sp.Integer(0), sym.gamma, sym.beta)


def with_h(expr: sp.Expr) -> sp.Expr:
    """Write gamma * g as h (the derivation's VJPs only contain g through gamma * g; gamma is the
    program's multiplier w + c, kept as a symbol in the closed forms, not the weight w)."""
    return expr.subs(sym.g * sym.gamma, H)


def tidy(expr: sp.Expr) -> sp.Expr:
    return sp.factor_terms(sp.expand(expr))


def element(field: sp.Symbol, index: sp.Symbol) -> sp.Symbol:
    """The value of a per-element field at element ``index`` of the group."""
    return sp.Symbol(f"{sp.latex(field)}_{{{index}}}", real=True)


def _at(expr: sp.Expr, index: sp.Symbol) -> sp.Expr:
    return expr.xreplace({field: element(field, index) for field in sym.ELEMENT_SYMBOLS})


def node_equation(node: sym.Node) -> str:
    """The LaTeX of one node of the forward program (a reduced node as a group mean)."""
    return equation(node.target, sym.GroupMean(node.expr) if node.reduced else node.expr)


# --- the Jacobian ------------------------------------------------------------------------------

def jacobian_entry(vjp: sp.Expr) -> sp.Expr:
    """d xhat_i / d x_j for i, j in one group, read off a VJP of the derivation.

    ``vjp`` is dx_j for the loss sum_k g_k y_k (+ g_s s_k for the fused residual add); it is
    linear in g. With gamma = 1, g_s = 0 and g the unit vector e_i, dx_j is d xhat_i / d x_j:
    outside a group mean g becomes delta_ij and every field is taken at j; inside,
    mean_k(g_k q_k) becomes q_i / N.
    """
    expr = vjp.subs({sym.gamma: 1, sym.g_s: 0})
    means: dict[sp.Symbol, sp.Expr] = {}

    def unit_mean(mean: sym.GroupMean) -> sp.Symbol:
        inner = sp.expand(mean.args[0])
        weight = sp.diff(inner, sym.g)
        if weight.has(sym.g) or sp.expand(inner - weight * sym.g) != 0:
            raise ValueError(f"{mean} is not linear in g: not a VJP")
        placeholder = sp.Symbol(f"_mean{len(means)}")
        means[placeholder] = _at(weight, I) / N
        return placeholder

    expr = expr.replace(lambda e: isinstance(e, sym.GroupMean), unit_mean)
    expr = _at(expr.xreplace({sym.g: DELTA}), J).xreplace(means)
    return tidy(expr)


@dataclass(frozen=True)
class Jacobian:
    direct: sp.Expr  # statistics held fixed
    batch: sp.Expr  # through the batch statistics
    total: sp.Expr

    @property
    def partial_x(self) -> sp.Expr:
        """d normalize(x_i; X) / d x_i with the batch X (its statistics) held: direct / delta_ij."""
        coefficient = self.direct.subs(DELTA, 1)
        if sp.expand(coefficient * DELTA - self.direct) != 0:
            raise ValueError(f"the direct part {self.direct} is not diagonal")
        return coefficient


def jacobian(family: sym.Family) -> Jacobian:
    forms = sym.derive(family)
    result = Jacobian(jacobian_entry(forms.dx_direct), jacobian_entry(forms.dx_through_statistics),
                      jacobian_entry(forms.dx))
    if sp.expand(result.total - result.direct - result.batch) != 0:
        raise AssertionError(f"{family.name}: the Jacobian's parts do not sum to it")
    return result


# --- the forward program, composed -------------------------------------------------------------

def composed(family: sym.Family, substitutions: dict | None = None) -> dict[sp.Symbol, sp.Expr]:
    """Every value of the forward program in terms of its inputs (means kept as GroupMean)."""
    values = dict(substitutions or {})
    for node in family.program():
        expr = node.expr.xreplace(values)
        values[node.target] = sym.expand_means(sym.GroupMean(expr)) if node.reduced else expr
    return values


def group_mean_of(expr: sp.Expr, family: sym.Family) -> sp.Expr:
    """mean over the group of a per-element expression, with the group's facts applied."""
    return tidy(sym.to_centered_basis(sym.GroupMean(expr), family))


def rstd_value() -> sp.Expr:
    """r as a function of the statistics, from the program's node for r."""
    return next(n.expr for n in sym.CENTERED.program() if n.target == sym.rstd)


def output_of(family: sym.Family) -> sp.Expr:
    """y in terms of the normalized input (x, or s for the fused residual add), the statistics
    (symbols), eps, the weight, the offset and the bias."""
    values: dict = {}
    for node in family.program():
        if not node.reduced and node.target != sym.s:
            values[node.target] = node.expr.xreplace(values)
    return values[sym.y]


# --- invariants ------------------------------------------------------------------------------

def mean_zero(family: sym.Family) -> sp.Expr:
    """mean(xhat) by the group's facts (centering families only)."""
    return sym._group_facts(family)[sym.GroupMean(sym.xhat)]


def second_moment(family: sym.Family) -> tuple[sp.Expr, sp.Expr]:
    """mean(xhat^2) by the group's facts, and the same with r written out."""
    fact = sym._group_facts(family)[sym.GroupMean(sym.xhat**2)]
    return fact, sp.simplify(fact.subs(sym.rstd, rstd_value()))


def second_moment_at(family: sym.Family, ratio: int) -> sp.Expr:
    """mean(xhat^2) for a group whose variance is ``ratio`` times eps."""
    return sp.simplify(second_moment(family)[1].subs(sym.var, ratio * sym.eps))


def identity_recovery(family: sym.Family, gamma: sp.Expr) -> sp.Expr:
    """y - x (y - s for the fused add) with the multiplier gamma = w + c set to ``gamma`` (the
    weight w = gamma - c, whatever the offset) and beta = mu (the group mean; 0 without centering)."""
    y = output_of(family).xreplace({sym.w: gamma - sym.c, sym.beta: sym.mu})
    return sp.factor(sp.simplify(y - normalized_input(family)))


def shifted_center(family: sym.Family) -> tuple[sp.Expr, sp.Expr]:
    """x_c with a constant b added to every element of the group, and what it leaves besides x_c."""
    shifted = composed(family, {sym.x: sym.x + SHIFT})[sym.xc]
    return shifted, sp.simplify(shifted - composed(family)[sym.xc])


def scaling(family: sym.Family) -> dict[sp.Symbol, sp.Expr]:
    """The inputs scaled by a (x, and the residual of the fused add) and eps by a squared."""
    inputs = (sym.x, sym.residual) if family.residual else (sym.x,)
    scaled = {v: sp.Mul(SCALE, v, evaluate=False) for v in inputs}  # unevaluated: printed a x, not x a
    return {**scaled, sym.eps: sp.Mul(SCALE**2, sym.eps, evaluate=False)}


def scale_invariant(family: sym.Family) -> bool:
    """xhat with the inputs scaled by a and eps by a squared equals xhat."""
    scaled = composed(family, scaling(family))[sym.xhat]
    return sp.simplify(scaled - composed(family)[sym.xhat]) == 0


def pass_through(family: sym.Family) -> tuple[sp.Expr, sp.Expr]:
    """dx as (what passes through unchanged, the norm's J^T h): (g_s, dx of the family without the
    residual) for the fused add, (0, dx) otherwise; checked to sum to the derived dx."""
    dx = sym.derive(family).dx
    passed = sym.g_s if family.residual else sp.Integer(0)
    norm = sym.derive(base_family(family)).dx
    if sp.expand(passed + norm - dx) != 0:
        raise AssertionError(f"{family.name}: dx is not the pass-through plus the norm's VJP")
    return passed, norm


def gradient_sums(family: sym.Family) -> tuple[sp.Expr, sp.Expr]:
    """sum over the group of dx less its pass-through (g_s), and of that times xhat (the eps term),
    with h = gamma * g."""
    passed, _ = pass_through(family)
    dx = sym.derive(family).dx - passed
    return with_h(N * group_mean_of(dx, family)), with_h(N * group_mean_of(dx * sym.xhat, family))


def constant_group(family: sym.Family) -> tuple[sp.Expr, sp.Expr]:
    """y and dx of a group whose elements all equal the mean (var = 0, xhat = 0)."""
    y = output_of(family).xreplace({normalized_input(family): sym.mu, sym.var: 0})
    dx = with_h(sym.derive(family).dx).xreplace({sym.xhat: 0, sym.rstd: 1 / sp.sqrt(sym.eps)})
    return y, dx


# --- the weight offset and the fused add: what holds, and what the known bugs compute ----------------

def affine_step(family: sym.Family) -> sp.Expr:
    """y in terms of xhat, the weight, the offset and the bias (the program's node for y, gamma written out)."""
    return next(n.expr for n in family.program() if n.target == sym.y).xreplace({sym.gamma: gamma_value()})


def offset_is_shifted_weight(family: sym.Family) -> tuple[dict[sp.Symbol, sp.Expr], sp.Expr]:
    """y with the offset folded into the weight (w -> w + c, c -> 0), checked equal to y."""
    folded = {sym.w: sym.w + sym.c, sym.c: 0}
    y = affine_step(family)
    if sp.expand(y.xreplace(folded) - y) != 0:
        raise AssertionError(f"{family.name}: the offset is not a shifted weight")
    return folded, y


def unmodulated(family: sym.Family) -> tuple[dict[sp.Symbol, sp.Expr], sp.Expr]:
    """y with weight and bias 0 (an adaptive norm's scale = shift = 0), at offset 1: xhat."""
    zero = {sym.w: 0, **({sym.beta: 0} if family.has_bias else {})}
    y = affine_step(family).xreplace(zero).xreplace({sym.c: 1})
    if y != sym.xhat:
        raise AssertionError(f"{family.name}: zero modulation is not the plain normalized value")
    return zero, y


def mistake(key: str, family: sym.Family) -> tuple[str, sp.Expr, sp.Expr]:
    """What a known bug computes instead, derived from the closed forms: (the quantity, its buggy
    value, the right value minus it). Keys: offset_dropped (the forward multiplies by w alone),
    offset_dropped_in_backward (dx reads gamma = w), sum_before_norm (the fused add's backward
    applies the norm's VJP to g + g_s instead of adding g_s to the norm's VJP of g)."""
    forms = sym.derive(family)
    if key == "offset_dropped":
        right = affine_step(family)
        wrong = right.xreplace({sym.c: 0})
        return "y", wrong, tidy(right - wrong)
    if key == "offset_dropped_in_backward":
        right = forms.dx.xreplace({sym.gamma: gamma_value()})
        wrong = forms.dx.xreplace({sym.gamma: sym.w})
    elif key == "sum_before_norm":
        right = forms.dx
        wrong = sym.derive(base_family(family)).dx.xreplace({sym.g: sym.g + sym.g_s})
    else:
        raise KeyError(f"no derived mistake {key!r}")
    return "dx", wrong, tidy(sym.expand_means(sp.expand(right - wrong)))


def rms_is_centered_at_zero_mean() -> sp.Expr:
    """The RMS family's xhat, after checking it is the centered family's at a zero group mean."""
    centered = composed(sym.CENTERED)[sym.xhat].subs(sym.GroupMean(sym.x), 0)
    rms = composed(sym.RMS)[sym.xhat]
    if sp.simplify(centered - rms) != 0:
        raise AssertionError("the RMS family is not the centered family at a zero group mean")
    return rms


# --- running statistics and given statistics -----------------------------------------------------

class SampleMean(sp.Function):
    """mean over the samples of a batch (a running update averaged over the batch); docs only."""

    nargs = 1

    def _latex(self, printer) -> str:
        return r"\operatorname{mean}_{\text{samples}}\left(%s\right)" % printer._print(self.args[0])


MOMENTUM = sp.Symbol("m", nonnegative=True)
STEP = sp.Symbol("t")  # the t-th batch of a cumulative average
RUNNING_MEAN = sp.Symbol(r"\mu_{\text{running}}", real=True)
RUNNING_VAR = sp.Symbol(r"\sigma^{2}_{\text{running}}", nonnegative=True)


def running_update(average_over_samples: bool) -> tuple[str, str]:
    """torch's update (reference/_plan.py RunningUpdate), momentum the weight of the new value."""
    unbiased = sp.Mul(N, sp.Pow(sp.Add(N, -1, evaluate=False), -1, evaluate=False), evaluate=False)
    mean, var = sym.mu, sp.Mul(unbiased, sym.var, evaluate=False)
    if average_over_samples:
        mean, var = SampleMean(mean), SampleMean(var)

    def update(running: sp.Symbol, batch: sp.Expr) -> str:
        new = sp.Add(sp.Mul(1 - MOMENTUM, running, evaluate=False), sp.Mul(MOMENTUM, batch, evaluate=False),
                     evaluate=False)
        return latex(running) + r" \leftarrow " + latex(new)

    return update(RUNNING_MEAN, mean), update(RUNNING_VAR, var)


def affine_map(family: sym.Family) -> tuple[sp.Expr, sp.Expr]:
    """y = A x + B for a family with given statistics: (A, B)."""
    y = output_of(family)
    slope = sp.diff(y, sym.x)
    return slope, sp.factor_terms(sp.expand(y - slope * sym.x))
