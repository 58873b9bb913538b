"""The spec, printed from the derivation: docs/spec/*.md, docs/spec/img/*.png, docs/site/*.html.

``normspec docs`` writes (only files whose content changed, like ``normspec derive``):

- ``docs/spec/index.md``: what normalization is, the variants, the cross-variant
  identities, the conventions of torch, flax and keras, the corrections, the battery;
- ``docs/spec/<variant>.md`` for each variant of ``derive.spec.VARIANTS``: shapes and
  axes, statistics, forward, the Jacobian split into its direct part and its part through
  the batch statistics, the VJP, the invariants, running statistics and eval mode,
  corrections, the battery's checks and torch's known deviations;
- ``docs/spec/img/*.png``: pictures (matplotlib), deterministic to the byte;
- ``docs/site/*.html`` with ``style.css`` and a copy of the pictures: the same pages as
  standalone HTML whose mathematics is MathML (no JavaScript, no network).

Every formula is ``sympy.latex`` (``derive.latex``) of the expressions ``derive.symbolic``
derived and ``derive.codegen`` printed into the references, or of expressions obtained
from them mechanically here (the Jacobian read off the VJP, the invariants by applying
the group's rewrite rules); none is typed by hand. Every page states the derivation hash
of the generated references. ``normspec docs --check`` (``run(check=True)``) exits 1
naming the stale files.

The battery picture reads ``docs/verification.json`` when it exists (``normspec docs
--with-battery`` writes it by running the battery on the three built-in
implementations, see :func:`battery_figure_data`). Its schema is a JSON list of records::

    {"implementation": "torch_native",   # who was verified
     "variant": "layer_norm",            # a name of derive.spec.VARIANTS
     "dtype": "float32",                 # float64 | float32 | float16 | bfloat16
     "check": "backward",                # a name of verify.checks.CHECKS
     "status": "passed",                 # passed | failed | expected failure | skipped
     "max_abs": 1.2e-07}                 # worst absolute error found; null if none (skipped)

Optional: ``"worst_ratio"``, the worst error as a fraction of its tolerance (<= 1 passes),
drawn above max_abs when present. Other keys are ignored (``battery_figure_data`` also
records ``examples``, the number of cases hypothesis tried). Only passing checks contribute errors to the picture;
failures and expected failures are counted in its cells.
"""
from __future__ import annotations

import io
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import sympy as sp

from normspec.derive import codegen, proofs, spec, symbolic as sym
from normspec.derive.latex import GroupSum, equation, latex, markdown_to_html

ROOT = codegen.ROOT
DOCS_DIR = ROOT / "docs"
SPEC_DIR = DOCS_DIR / "spec"
IMG_DIR = SPEC_DIR / "img"
SITE_DIR = DOCS_DIR / "site"
VERIFICATION_JSON = DOCS_DIR / "verification.json"
REGENERATE_COMMAND = "normspec docs"

# The headings every variant page has, in order (tests/test_docs.py checks them).
VARIANT_SECTIONS = (
    "Shapes and axes",
    "Statistics",
    "Forward",
    "Jacobian: direct path and path through the batch statistics",
    "Backward (VJP)",
    "Invariants",
    "Running statistics and eval mode",
    "Corrections",
    "Checks of the battery",
    "Known deviations of torch's native ops",
)
INDEX_SECTIONS = (
    "What normalization is",
    "Variants",
    "Cross-variant identities",
    "Conventions across frameworks",
    "Corrections",
    "Verification results",
    "How this spec is generated",
)
FAMILY_OF = {"centered": sym.CENTERED, "rms": sym.RMS}
JACOBIAN_N = 6  # the group size of the Jacobian pictures
FIGURE_DPI = 110


# --- files --------------------------------------------------------------------------------

@dataclass(frozen=True)
class BinaryFile:
    """A generated binary file (a PNG); the same interface as codegen.GeneratedFile."""

    path: Path
    content: bytes

    @property
    def stale(self) -> bool:
        return not self.path.exists() or self.path.read_bytes() != self.content


def write(files: list) -> list[Path]:
    """Write the stale files (text or binary); return the paths written."""
    text = [f for f in files if isinstance(f, codegen.GeneratedFile)]
    written = codegen.write(text)
    for f in files:
        if isinstance(f, BinaryFile) and f.stale:
            f.path.parent.mkdir(parents=True, exist_ok=True)
            f.path.write_bytes(f.content)
            written.append(f.path)
    return written


def _shown(path: Path) -> str:
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


# --- mathematics read off the derivation -------------------------------------------------------

H = sp.Symbol("h", real=True)  # h = gamma * g, the upstream gradient through the affine step
I, J = sp.symbols("i j", integer=True)
N = sp.Symbol("N", positive=True, integer=True)
DELTA = sp.KroneckerDelta(I, J)
SHIFT = sp.Symbol("b", real=True)  # a constant added to every element of a group
SCALE = sp.Symbol("a", positive=True)


def with_h(expr: sp.Expr) -> sp.Expr:
    """Write gamma * g as h (the derivation's VJPs only contain g through gamma * g)."""
    return expr.subs(sym.g * sym.gamma, H)


def _tidy(expr: sp.Expr) -> sp.Expr:
    return sp.factor_terms(sp.expand(expr))


def _element(field: sp.Symbol, index: sp.Symbol) -> sp.Symbol:
    """The value of a per-element field at element ``index`` of the group."""
    return sp.Symbol(f"{sp.latex(field)}_{{{index}}}", real=True)


def _at(expr: sp.Expr, index: sp.Symbol) -> sp.Expr:
    return expr.xreplace({field: _element(field, index) for field in sym.ELEMENT_SYMBOLS})


def jacobian_entry(vjp: sp.Expr) -> sp.Expr:
    """d xhat_i / d x_j for i, j in one group, read off a VJP of the derivation.

    ``vjp`` is dx_j for the loss sum_k g_k y_k; it is linear in g. With gamma = 1 and
    g the unit vector e_i, dx_j is d xhat_i / d x_j: outside a group mean g becomes
    delta_ij and every field is taken at j; inside, mean_k(g_k q_k) becomes q_i / N.
    """
    expr = vjp.subs(sym.gamma, 1)
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
    return _tidy(expr)


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


def composed(family: sym.Family, substitutions: dict | None = None) -> dict[sp.Symbol, sp.Expr]:
    """Every value of the forward program in terms of its inputs (means kept as GroupMean)."""
    values = dict(substitutions or {})
    for node in family.program():
        expr = node.expr.xreplace(values)
        values[node.target] = sym.expand_means(sym.GroupMean(expr)) if node.reduced else expr
    return values


def group_mean_of(expr: sp.Expr, family: sym.Family) -> sp.Expr:
    """mean over the group of a per-element expression, with the group's facts applied."""
    return _tidy(sym.to_centered_basis(sym.GroupMean(expr), family))


def rstd_value() -> sp.Expr:
    """r as a function of the statistics, from the program's node for r."""
    return next(n.expr for n in sym.CENTERED.program() if n.target == sym.rstd)


def second_moment(family: sym.Family) -> tuple[sp.Expr, sp.Expr]:
    """mean(xhat^2) by the group's facts, and the same with r written out."""
    fact = sym._group_facts(family)[sym.GroupMean(sym.xhat**2)]
    return fact, sp.simplify(fact.subs(sym.rstd, rstd_value()))


def output_of(family: sym.Family) -> sp.Expr:
    """y in terms of x, the statistics (symbols), eps and the affine parameters."""
    values: dict = {}
    for node in family.program():
        if not node.reduced:
            values[node.target] = node.expr.xreplace(values)
    return values[sym.y]


def identity_recovery(family: sym.Family, gamma: sp.Expr) -> sp.Expr:
    """y - x with the given gamma and beta = mu (the group mean; 0 without centering)."""
    y = output_of(family).xreplace({sym.gamma: gamma, sym.beta: sym.mu})
    return sp.factor(sp.simplify(y - sym.x))


# --- statements and the checks that cover them ----------------------------------------------

@dataclass(frozen=True)
class Statement:
    title: str
    prose: str
    formulas: tuple[str, ...] = ()
    checks: tuple[str, ...] = ()
    any_variant: bool = False  # list the checks even where they run on another variant (identities)


def _checks():
    from normspec.verify.checks import CHECKS

    return CHECKS


def _inline(expr: sp.Basic | str) -> str:
    return f"$`{expr if isinstance(expr, str) else latex(expr)}`$"


def _math(tex: str) -> str:
    return f"```math\n{tex}\n```"


def _checked_by(names: tuple[str, ...], variant: str | None) -> str:
    checks = _checks()
    unknown = [n for n in names if n not in checks]
    if unknown:
        raise KeyError(f"docs name checks that verify.checks.CHECKS lacks: {unknown}")
    applying = [n for n in names if variant is None or variant in checks[n].variants]
    if not applying:
        return ""
    return "Checked by " + ", ".join(f"`{n}` ({checks[n].description})" for n in applying) + "."


def render(statement: Statement, variant: str | None) -> str:
    parts = [f"**{statement.title}.** {statement.prose}".rstrip()]
    parts += [_math(f) for f in statement.formulas]
    checked = _checked_by(statement.checks, None if statement.any_variant else variant)
    if checked:
        parts.append(checked)
    return "\n\n".join(parts)


def _node_equation(node: sym.Node) -> str:
    return equation(node.target, sym.GroupMean(node.expr) if node.reduced else node.expr)


def statistics_statements(family: sym.Family) -> list[Statement]:
    program = family.program()
    statements = []
    for node in program:
        if node.reduced:
            what = {sym.mu: "the group mean", sym.var: (
                "the biased variance (divided by N, not N - 1)" if family.centered
                else "the mean square (no centering: this is not a variance)")}[node.target]
            statements.append(Statement(f"{_inline(node.target)}, {what}", "", (_node_equation(node),),
                                        ("forward", "mpmath")))
    r_node = next(n for n in program if n.target == sym.rstd)
    what = "standard deviation" if family.centered else "root mean square"
    statements.append(Statement(f"{_inline(sym.rstd)}, the reciprocal {what}", "The eps is inside the square root.",
                                (_node_equation(r_node),), ("forward",)))
    return statements


def forward_statements(family: sym.Family) -> list[Statement]:
    nodes = [n for n in family.program() if not n.reduced and n.target != sym.rstd]
    return [Statement("The forward pass, per element", "", tuple(_node_equation(n) for n in nodes),
                      ("forward", "mpmath"))]


def jacobian_statements(family: sym.Family) -> list[Statement]:
    jac = jacobian(family)
    statistics = (f"{_inline(sym.mu)} and {_inline(sym.var)}" if family.centered else _inline(sym.var))
    d = r"\frac{\partial \hat{x}_{i}}{\partial x_{j}}"
    normalize_x = r"\frac{\partial}{\partial x_{i}} \operatorname{normalize}\left(x_{i}; X\right)"
    normalize_batch = r"\frac{\partial}{\partial X_{j}} \operatorname{normalize}\left(x_{i}; X\right)"
    return [
        Statement("Direct path", "The statistics held fixed: the partial of normalize(x; X) with respect to "
                  "the element x itself.", (equation(d + r"\Big|_{\text{direct}}", jac.direct),
                                            equation(normalize_x, jac.partial_x)), ("backward", "finite_differences")),
        Statement("Path through the batch statistics", f"{statistics} depend on every element of the group X: the "
                  "partial of normalize(x; X) with respect to the batch.",
                  (equation(d + r"\Big|_{\text{batch}}", jac.batch), equation(normalize_batch, jac.batch)),
                  ("backward", "finite_differences", "gradient_sum", "gradient_xhat")),
        Statement("Their sum, the Jacobian", "", (equation(d, jac.total),),
                  ("backward", "finite_differences", "mpmath")),
    ]


def backward_statements(family: sym.Family, affine_axes: str) -> list[Statement]:
    forms = sym.derive(family)
    outputs = forms.outputs()
    statements = [
        Statement(_inline("dx"), f"With {_inline(equation(H, sym.gamma * sym.g))} the upstream gradient "
                  "through the affine step:", (equation("dx", with_h(forms.dx)),),
                  ("backward", "finite_differences", "mpmath")),
        Statement(_inline("dx") + " split", "Into the direct path and the path through the statistics (their sum is "
                  "the line above):", (equation(r"dx_{\text{direct}}", with_h(forms.dx_direct)),
                                       equation(r"dx_{\text{batch}}", with_h(forms.dx_through_statistics))),
                  ("backward", "finite_differences")),
        Statement(_inline(r"d\gamma"), f"The sum runs over the non-affine axes ({affine_axes}); "
                  "one value per affine parameter:", (equation(r"d\gamma", outputs["dweight"]),),
                  ("backward", "finite_differences")),
    ]
    if "dbias" in outputs:
        statements.append(Statement(_inline(r"d\beta"), "", (equation(r"d\beta", outputs["dbias"]),),
                                    ("backward", "finite_differences")))
    return statements


def invariant_statements(family: sym.Family) -> list[Statement]:
    forms = sym.derive(family)
    fact, written_out = second_moment(family)
    statements = []
    if family.centered:
        mean_xhat = sym.GroupMean(sym.xhat)
        statements.append(Statement("Mean zero", "Exactly, whatever eps:",
                                    (equation(mean_xhat, sym._group_facts(family)[mean_xhat]),), ("mean_zero",)))
    statements.append(Statement(
        "Second moment", "Not 1: eps pulls it below 1, and a group whose spread is near eps is far from unit "
        "variance" + ("" if family.centered else f" ({_inline(sym.var)} is the mean square here)") + ":",
        (equation(sym.GroupMean(sym.xhat**2), fact, written_out),), ("second_moment",)))
    std = sp.sqrt(sym.var + sym.eps)
    recovery_lhs = (r"y\Big|_{\gamma = \sqrt{\sigma^{2} + \epsilon},\ \beta = \mu}" if family.centered
                    else r"y\Big|_{\gamma = \sqrt{\sigma^{2} + \epsilon}}")
    statements.append(Statement(
        "Identity recovery", "Gamma equal to the standard deviation, eps included," +
        (" and beta equal to the mean," if family.centered else "") + " give back the input:",
        (equation(recovery_lhs + " - x", identity_recovery(family, std)),), ("identity_recovery",)))
    shifted = composed(family, {sym.x: sym.x + SHIFT})[sym.xc]
    plain = composed(family)[sym.xc]
    if family.centered:
        statements.append(Statement(
            "Shift invariance", f"A constant {_inline(SHIFT)} added to every element of a group (a bias before "
            "the norm) cancels in the centered value, so in everything after it:",
            (equation(r"x_{c}\Big|_{x \to x + b}", shifted, sym.xc),), ("shift_invariance", "bias_cancels")))
    else:
        statements.append(Statement(
            "No shift invariance", f"Without centering a constant {_inline(SHIFT)} added to the group stays:",
            (equation(r"x_{c}\Big|_{x \to x + b}", shifted, sym.xc + sp.simplify(shifted - plain)),)))
    scaled = composed(family, {sym.x: SCALE * sym.x, sym.eps: SCALE**2 * sym.eps})[sym.xhat]
    if sp.simplify(scaled - composed(family)[sym.xhat]) != 0:
        raise AssertionError(f"{family.name}: scale invariance does not hold")
    statements.append(Statement(
        "Scale invariance", f"For {_inline(SCALE)} > 0, scaling x by a and eps by a squared changes nothing "
        "(scaling x alone does, through eps):", (equation(r"\hat{x}\Big|_{x \to a x,\ \epsilon \to a^{2} \epsilon}",
                                                          sym.xhat),), ("scale_invariance",)))
    sum_dx = N * group_mean_of(forms.dx, family)
    sum_dx_xhat = N * group_mean_of(forms.dx * sym.xhat, family)
    statements.append(Statement(
        "Gradient sums", ("The gradient is orthogonal to constants, and to xhat only up to an eps term:"
                          if family.centered else "Without centering the gradient does not sum to zero; "
                          "against xhat it carries the same eps term:"),
        (equation(GroupSum(sp.Symbol("dx")), with_h(sum_dx)),
         equation(GroupSum(sp.Symbol("dx") * sym.xhat), with_h(sum_dx_xhat),
                  with_h(sum_dx_xhat).subs(sym.rstd**3, sym.rstd / (sym.var + sym.eps)))),
        ("gradient_sum", "gradient_xhat")))
    if family.centered:
        at_constant = {sym.xhat: 0, sym.rstd: 1 / sp.sqrt(sym.eps)}
        constant_y = output_of(family).xreplace({sym.x: sym.mu, sym.var: 0})
        statements.append(Statement(
            "Constant group", f"{_inline(equation(sym.var, 0))}: every element equals the mean, "
            f"{_inline(equation(sym.xc, 0))} exactly, so eps alone keeps r finite:",
            (equation(r"y\Big|_{\sigma^{2} = 0}", constant_y),
             equation(r"dx\Big|_{\sigma^{2} = 0}", with_h(forms.dx).xreplace(at_constant))), ("constant_group",)))
    return statements


# --- running statistics and eval mode ----------------------------------------------------------

class SampleMean(sp.Function):
    """mean over the samples of a batch (instance_norm's running update); docs only."""

    nargs = 1

    def _latex(self, printer) -> str:
        return r"\operatorname{mean}_{\text{samples}}\left(%s\right)" % printer._print(self.args[0])


MOMENTUM = sp.Symbol("m", nonnegative=True)
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


def eval_statements() -> list[Statement]:
    """Normalizing with given statistics (the given_stats family): an affine map of x."""
    family = sym.GIVEN_STATS
    forms = sym.derive(family)
    y = output_of(family)
    slope = sp.diff(y, sym.x)
    offset = sp.factor_terms(sp.expand(y - slope * sym.x))
    return [
        Statement("Eval mode", f"{_inline(sym.mu)} and {_inline(sym.var)} are the running statistics, given: "
                  "the forward is an affine map of x,",
                  tuple(_node_equation(n) for n in family.program()) + (
                      equation(sym.y, sp.Symbol("A") * sym.x + sp.Symbol("B")),
                      equation("A", slope) + r",\quad " + equation("B", offset)),
                  ("forward", "eval_running_unchanged")),
        Statement("Eval-mode gradient", "No gradient flows into given statistics: only the direct path is left,",
                  (equation("dx", with_h(forms.dx)), equation(r"dx_{\text{batch}}", forms.dx_through_statistics),
                   equation(r"\frac{\partial \hat{x}_{i}}{\partial x_{j}}", jacobian_entry(forms.dx))),
                  ("backward", "finite_differences")),
    ]


def running_statements(variant: str) -> tuple[list[Statement], str]:
    """The statements of the running-statistics section, and a closing text."""
    if variant == "batch_norm":
        mean_update, var_update = running_update(average_over_samples=False)
        update = Statement(
            "Training", "Normalizes with the batch statistics above and, when running statistics are given, "
            f"updates them in place with momentum {_inline(MOMENTUM)} as the weight of the new value (torch's "
            "convention; flax and keras write 1 - m). The running variance is the unbiased one, N/(N - 1) "
            "times the biased variance used to normalize. momentum=None is a cumulative average, "
            f"{_inline(equation(MOMENTUM, 1 / sp.Symbol('t')))} at the t-th batch (pass it as momentum).",
            (mean_update, var_update), ("running_stats",))
        return [update, *eval_statements()], ""
    if variant == "instance_norm":
        mean_update, var_update = running_update(average_over_samples=True)
        update = Statement(
            "Tracking", "With running statistics (torch's track_running_stats=True, use_input_stats=True) each "
            "instance is normalized with its own statistics and the running ones are updated with the batch "
            "average of the per-instance mean and unbiased variance:", (mean_update, var_update),
            ("running_stats",))
        given = Statement("use_input_stats=False", "Normalizes with the running statistics: the given-statistics "
                          "family of batch_norm's eval mode (see [batch_norm](batch_norm.md#running-statistics-and-"
                          "eval-mode)).")
        return [update, given], ""
    return [], ("Does not apply: the statistics always come from the input itself (each sample normalizes alone), "
                "there are no running statistics, and training and eval mode compute the same thing.")


# --- layouts --------------------------------------------------------------------------------

# The names of the axes of each layout's working shape (derive.spec.Layout.work_shape).
WORK_AXIS_NAMES = {
    "batch_norm": ("N", "C", "spatial"),
    "instance_norm": ("N", "C", "spatial"),
    "group_norm": ("N", "G", "C/G", "spatial"),
    "layer_norm": ("leading", "normalized_shape"),
    "rms_norm": ("leading", "normalized_shape"),
}
EXAMPLES = {
    "batch_norm": ((8, 6, 4, 4), {}),
    "instance_norm": ((8, 6, 4, 4), {}),
    "group_norm": ((8, 6, 4, 4), {"num_groups": 3}),
    "layer_norm": ((8, 10, 16), {"normalized_shape": (16,)}),
    "rms_norm": ((8, 10, 16), {"normalized_shape": (16,)}),
}


def example_layout(variant: str) -> tuple[tuple[int, ...], dict, spec.Layout]:
    shape, config = EXAMPLES[variant]
    layout = spec.LAYOUTS[variant](shape, *config.values())
    return shape, config, layout


def axes(variant: str, dims: tuple[int, ...]) -> str:
    names = WORK_AXIS_NAMES[variant]
    return ", ".join(names[d] for d in dims)


def shapes_table(variant: str) -> str:
    v = spec.VARIANTS[variant]
    shape, config, layout = example_layout(variant)
    call = ", ".join(["x"] + [f"{k}={val}" for k, val in config.items()])
    groups = math.prod(layout.work_shape) // layout.group_size
    rows = [
        ("input", "(N, C, *spatial)" if variant in ("batch_norm", "instance_norm", "group_norm")
         else "(*leading, *normalized_shape)", f"x.shape = {shape}"),
        ("working shape (x is reshaped to it)", " x ".join(WORK_AXIS_NAMES[variant]), str(layout.work_shape)),
        ("group: the elements that share statistics", axes(variant, layout.group_dims) + f" ({v.group})",
         f"N = {layout.group_size}, {groups} groups"),
        ("statistics", "one mean and variance per group" if v.family == "centered" else "one mean square per group",
         f"shape {layout.stats_shape} (working shape)"),
        ("gamma" + (" and beta" if v.has_bias else ""), f"one per {v.affine}", f"shape {layout.weight_shape}"),
        ("d gamma" + (", d beta" if v.has_bias else ""), "summed over the non-affine axes: "
         + axes(variant, layout.affine_dims), f"shape {layout.weight_shape}"),
    ]
    return ("Every variant is the one generic normalize applied to a layout (`derive/spec.py`): x is reshaped "
            "to a working shape in which the group is a set of axes.\n\n"
            "| | axes | example: " + f"`{variant}({call})`" + " |\n|---|---|---|\n"
            + "".join(f"| {a} | {b} | {c} |\n" for a, b, c in rows))


def shapes_statements(variant: str) -> list[Statement]:
    v = spec.VARIANTS[variant]
    statements = []
    if variant == "group_norm":
        statements.append(Statement("Groups of channels", "The C channels are split into G contiguous groups of "
                                    "C/G channels; statistics are per sample and group, gamma and beta per channel, "
                                    "so they vary inside a group."))
    if variant in ("layer_norm", "rms_norm"):
        statements.append(Statement("Per sample", "Statistics are per leading index (per sample, or per token); "
                                    "gamma" + (" and beta are" if v.has_bias else " is") + " per element of "
                                    "normalized_shape, so they vary inside a group."))
    if variant == "batch_norm":
        statements.append(Statement("Across the batch", "The group spans the whole batch: every sample's output "
                                    "depends on every other sample, and permuting the batch permutes the output.",
                                    checks=("batch_permutation",)))
    else:
        statements.append(Statement("Each sample alone", "Changing the other samples of the batch leaves a "
                                    "sample's output unchanged.", checks=("per_sample_independence",)))
    checks = _checks()
    related = [name for name, c in checks.items()
               if c.kind == "identity" and variant in (*c.variants, *c.needs) and name != "per_sample_independence"
               and name != "batch_permutation"]
    if related:
        statements.append(Statement("Identities with other variants", "; ".join(
            checks[name].description for name in related) + " (see the [index](index.md#cross-variant-identities)).",
            checks=tuple(related), any_variant=True))
    return statements


# --- corrections --------------------------------------------------------------------------------

@dataclass(frozen=True)
class Correction:
    anchor: str
    wrong: str  # the statement as course notes put it
    right: Statement
    variants: tuple[str, ...]


def corrections(family: sym.Family) -> list[Correction]:
    std = sp.sqrt(sym.var + sym.eps)
    fact, written_out = second_moment(family)
    dweight = sym.derive(family).outputs()["dweight"]
    at = (r"\Big|_{\gamma = \sigma^{2},\ \beta = \mu}" if family.centered else r"\Big|_{\gamma = \sigma^{2}}")
    ok = (r"\Big|_{\gamma = \sqrt{\sigma^{2} + \epsilon},\ \beta = \mu}" if family.centered
          else r"\Big|_{\gamma = \sqrt{\sigma^{2} + \epsilon}}")
    half = sp.simplify(written_out.subs(sym.var, sym.eps))
    tenfold = sp.simplify(written_out.subs(sym.var, 10 * sym.eps))
    all_variants = tuple(spec.VARIANTS)
    mean_update, var_update = running_update(average_over_samples=False)
    shifted = composed(family, {sym.x: sym.x + SHIFT})[sym.xc]
    plain = composed(family)[sym.xc]
    items = [
        Correction("gamma-is-the-standard-deviation",
                   "\"Setting gamma to the variance and beta to the mean undoes the normalization.\"",
                   Statement("Identity is recovered when gamma is the standard deviation, eps included",
                             "With gamma = var a residual is left; gamma = sqrt(var + eps) gives y = x exactly:",
                             (equation(r"y" + ok + " - x", identity_recovery(family, std)),
                              equation(r"y" + at + " - x", identity_recovery(family, sym.var))),
                             ("identity_recovery",)), all_variants),
        Correction("gamma-and-beta-are-per-feature",
                   "\"gamma and beta are learned for each data point.\"",
                   Statement("gamma and beta are per feature (layer_norm, rms_norm) or per channel (batch_norm, "
                             "instance_norm, group_norm), shared by every sample",
                             "Their gradients sum over every other axis, the batch axis included:",
                             (equation(r"d\gamma", dweight),), ("backward",)), all_variants),
        Correction("the-output-variance-is-not-1",
                   "\"After normalization every group has variance exactly 1.\"",
                   Statement("The output's second moment is var/(var + eps), not 1",
                             f"{_inline(half)} when the variance equals eps, {_inline(tenfold)} when it is 10 eps "
                             "(see the picture on the [index](index.md#corrections)):",
                             (equation(sym.GroupMean(sym.xhat**2), fact, written_out),
                              equation(r"\operatorname{mean}_{\text{group}}\left(\hat{x}^{2}\right)"
                                       r"\Big|_{\sigma^{2} = \epsilon}", half)), ("second_moment",)), all_variants),
        Correction("a-bias-before-a-centering-norm-cancels",
                   "\"A layer before a normalization needs its bias.\"",
                   Statement("A bias that is constant over each group cancels in a centering norm",
                             "So a per-channel conv or linear bias before batch_norm or instance_norm is wasted. It "
                             "does not cancel when it varies inside the group (a per-feature bias before "
                             "layer_norm, a per-channel bias before group_norm with C/G > 1), nor in rms_norm "
                             "(no centering)" + ("" if family.centered else ", where it stays in x_c") + ":",
                             (equation(r"x_{c}\Big|_{x \to x + b}", shifted, sym.xc + sp.simplify(shifted - plain)),),
                             ("bias_cancels", "shift_invariance")), all_variants),
        Correction("batch-norm-at-test-time",
                   "\"At test time batch_norm normalizes with the statistics of the test batch\" (or: \"the running "
                   "variance is the batch variance averaged\").",
                   Statement("At test time batch_norm uses running estimates accumulated with momentum, and the "
                             "running variance is the unbiased one",
                             "Training normalizes with the biased batch variance; torch's momentum is the "
                             "weight of the new value:", (mean_update, var_update),
                             ("running_stats", "eval_running_unchanged")), ("batch_norm", "instance_norm")),
    ]
    return items


def correction_text(c: Correction, variant: str | None) -> str:
    return f"<a id=\"{c.anchor}\"></a>\n\n- Often written: {c.wrong}\n\n" + render(c.right, variant)


# --- figures ---------------------------------------------------------------------------------

def _figure_bytes(fig) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=FIGURE_DPI, metadata={"Software": None})
    return buffer.getvalue()


def _new_figure(width: float, height: float):
    import matplotlib

    matplotlib.rcParams.update({"svg.hashsalt": "normspec", "font.family": "DejaVu Sans",
                                "font.size": 10, "axes.titlesize": 10})
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def evaluate_program(family: sym.Family, x: np.ndarray, eps: float) -> dict[sp.Symbol, np.ndarray | float]:
    """The forward program on numbers: every node evaluated from its SymPy expression."""
    values: dict[sp.Symbol, np.ndarray | float] = {sym.x: x, sym.eps: eps, sym.gamma: 1.0, sym.beta: 0.0}
    for node in family.program():
        free = sorted(node.expr.free_symbols, key=str)
        value = sp.lambdify(free, node.expr, "numpy")(*(values[s] for s in free))
        values[node.target] = float(np.mean(value)) if node.reduced else value
    return values


def jacobian_matrices(family: sym.Family, x: np.ndarray, eps: float) -> dict[str, np.ndarray]:
    """The direct part, the batch part and their sum as N x N matrices, d xhat_i / d x_j."""
    values = evaluate_program(family, x, eps)
    xhat, n = np.asarray(values[sym.xhat], dtype=float), len(x)
    jac = jacobian(family)
    delta = sp.Symbol("delta")
    args = [_element(sym.xhat, I), _element(sym.xhat, J), sym.rstd, N, delta]
    out = {}
    for name, entry in (("direct", jac.direct), ("batch", jac.batch), ("sum", jac.total)):
        f = sp.lambdify(args, entry.xreplace({DELTA: delta}), "numpy")
        matrix = f(xhat[:, None], xhat[None, :], values[sym.rstd], n, np.eye(n))
        out[name] = np.broadcast_to(np.asarray(matrix, dtype=float), (n, n)).copy()
    return out


def jacobian_sample(family: sym.Family) -> tuple[np.ndarray, float]:
    """The group of the Jacobian pictures: N = 6 seeded values with a mean offset, eps = 1e-5."""
    x = np.round(np.random.default_rng(6).standard_normal(JACOBIAN_N) * 1.5 + 0.5, 2)
    return x, 1e-5


def jacobian_figure(family: sym.Family) -> bytes:
    x, eps = jacobian_sample(family)
    matrices = jacobian_matrices(family, x, eps)
    jac = jacobian(family)
    fig = _new_figure(11.5, 4.4)
    panels = fig.subplots(1, 3)
    limit = float(max(np.max(np.abs(m)) for m in matrices.values()))
    titles = {"direct": ("direct path (statistics held)", jac.direct),
              "batch": ("through the batch statistics", jac.batch),
              "sum": ("sum: the Jacobian", jac.total)}
    for ax, (name, matrix) in zip(panels, matrices.items()):
        image = ax.imshow(matrix, cmap="RdBu_r", vmin=-limit, vmax=limit)
        words, entry = titles[name]
        ax.set_title(f"{words}\n${latex(entry)}$")
        ax.set_xlabel("j")
        ax.set_ylabel("i")
        ax.set_xticks(range(JACOBIAN_N), [str(k + 1) for k in range(JACOBIAN_N)])
        ax.set_yticks(range(JACOBIAN_N), [str(k + 1) for k in range(JACOBIAN_N)])
        for (i, j), value in np.ndenumerate(matrix):
            ax.text(j, i, f"{value:.2f}", ha="center", va="center", fontsize=7,
                    color="white" if abs(value) > 0.6 * limit else "black")
    fig.colorbar(image, ax=list(panels), shrink=0.8, label=r"$\partial \hat{x}_i / \partial x_j$")
    fig.suptitle(f"{family.name} family: Jacobian of xhat for one group of N = {JACOBIAN_N}, "
                 f"x = {', '.join(f'{v:g}' for v in x)}, eps = {eps:g}", fontsize=10)
    return _figure_bytes(fig)


def second_moment_figure() -> bytes:
    _, written_out = second_moment(sym.CENTERED)
    f = sp.lambdify([sym.var, sym.eps], written_out, "numpy")
    ratio = np.logspace(-3, 4, 400)
    fig = _new_figure(6.4, 3.6)
    ax = fig.subplots()
    ax.semilogx(ratio, f(ratio, 1.0), color="tab:blue", label=f"${sp.latex(written_out)}$ (derived)")
    ax.axhline(1.0, color="gray", linestyle="--", linewidth=1, label="1 (what notes often claim)")
    for r in (1.0, 10.0):
        ax.plot([r], [f(r, 1.0)], "o", color="tab:red")
        ax.annotate(f"var = {r:g} eps: {f(r, 1.0):.3f}", (r, f(r, 1.0)), textcoords="offset points",
                    xytext=(8, -12), fontsize=8)
    ax.set_xlabel("variance of the group / eps")
    ax.set_ylabel("mean(xhat^2), the output's second moment")
    ax.set_ylim(0, 1.08)
    ax.legend(loc="lower right", fontsize=8)
    ax.set_title("The output variance is var/(var + eps), not 1")
    return _figure_bytes(fig)


# --- the battery -------------------------------------------------------------------------------

REPORT_FIELDS = ("implementation", "variant", "dtype", "check", "status", "max_abs")


def battery_figure_data(implementations: tuple[str, ...] = ("numpy_ref", "torch_ref", "torch_native"),
                        **options) -> list[dict]:
    """Run the battery on the built-in implementations; one record per (variant, dtype, check).

    ``options`` go to ``verify.battery.run_battery`` (variants, dtypes, checks, ...). The
    records follow the schema of this module's docstring.
    """
    from normspec.verify.running.battery import run_battery
    from normspec.verify.implementations.base import builtin

    records = []
    for name in implementations:
        result = run_battery(builtin(name), **options)
        for r in result.reports:
            worst = r.worst
            records.append({"implementation": r.implementation, "variant": r.variant, "dtype": r.dtype,
                            "check": r.check, "status": r.status,
                            "max_abs": _finite_or_none(worst.max_abs) if worst else None,
                            "worst_ratio": _finite_or_none(worst.worst_ratio) if worst else None,
                            "examples": r.examples})
    return records


def _finite_or_none(value: float | None) -> float | str | None:
    """A number for JSON: 4 significant digits, or "inf"/"-inf"/"nan"; None stays None."""
    if value is None:
        return None
    if math.isnan(value):
        return "nan"
    return float(f"{value:.4g}") if math.isfinite(value) else ("inf" if value > 0 else "-inf")


def verification_json(records: list[dict]) -> str:
    """One record per line (sorted keys): small, and a rerun's diff shows which checks moved."""
    lines = ",\n".join(json.dumps(r, sort_keys=True, separators=(", ", ": ")) for r in records)
    return f"[\n{lines}\n]\n"


def read_verification(path: Path | None = None) -> list[dict] | None:
    """The records of ``path`` (default docs/verification.json), or None when it does not exist."""
    path = path or VERIFICATION_JSON
    if not path.exists():
        return None
    records = json.loads(path.read_text())
    if not isinstance(records, list):
        raise ValueError(f"{path}: expected a JSON list of records with keys {REPORT_FIELDS}")
    for k, record in enumerate(records):
        missing = [f for f in REPORT_FIELDS if f not in record]
        if missing:
            raise ValueError(f"{path}: record {k} lacks {missing} (expected keys {REPORT_FIELDS})")
    return records


def _number(value) -> float | None:
    """A record's number: None for null or NaN; the strings 'inf'/'-inf' as floats."""
    if value is None:
        return None
    value = float(value)
    return None if math.isnan(value) else value


# What the battery picture shows: (record key, colorbar label). worst_ratio is the honest
# comparison across checks; max_abs (the one number the schema requires) mixes quantities
# of every magnitude: the near-overflow value kinds give errors of 1e18 within tolerance.
METRICS = (
    ("worst_ratio", "error / tolerance, worst passing check\n(<= 1 passes)"),
    ("max_abs", "max abs error, passing checks\n(grows with |x|)"),
)


def battery_summary(records: list[dict]) -> dict[tuple[str, str, str], dict]:
    """(implementation, variant, dtype) -> the worst of each metric over the passing checks,
    and the count of checks per status."""
    from normspec.derive.dtypes import DTYPES

    summary: dict[tuple[str, str, str], dict] = {}
    for r in records:
        cell = summary.setdefault((r["implementation"], r["variant"], r["dtype"]),
                                  {"counts": {}, **{key: None for key, _ in METRICS}})
        cell["counts"][r["status"]] = cell["counts"].get(r["status"], 0) + 1
        if r["status"] != "passed":
            continue
        for key, _ in METRICS:
            value = _number(r.get(key))
            if value is not None:
                cell[key] = value if cell[key] is None else max(cell[key], value)
    order = {d: k for k, d in enumerate(DTYPES)}
    return dict(sorted(summary.items(), key=lambda kv: (kv[0][0], kv[0][1], order.get(kv[0][2], 99))))


def _status_note(counts: dict[str, int]) -> str:
    notes = [f"{counts[s]} {label}" for s, label in (("failed", "FAIL"), ("expected failure", "xfail"))
             if counts.get(s)]
    return "\n".join(notes)


def battery_figure(records: list[dict]) -> bytes:
    from matplotlib.colors import LogNorm

    from normspec.derive.dtypes import DTYPES

    summary = battery_summary(records)
    implementations = sorted({k[0] for k in summary})
    variants = [v for v in spec.VARIANTS if any(k[1] == v for k in summary)]
    dtypes = [d for d in DTYPES if any(k[2] == d for k in summary)]
    metrics = [(key, label) for key, label in METRICS if any(c[key] is not None for c in summary.values())]
    fig = _new_figure(3.6 * len(implementations) + 1.6, 3.4 * len(metrics) + 0.4)
    grid_axes = np.array(fig.subplots(len(metrics), len(implementations), squeeze=False))
    for row, (key, label) in zip(grid_axes, metrics):
        values = [c[key] for c in summary.values() if c[key] is not None and 0 < c[key] < math.inf]
        low, high = (min(values), max(values)) if values else (1e-3, 1.0)
        high = max(high, low * 10)
        image = None
        for ax, impl in zip(row, implementations):
            grid = np.full((len(variants), len(dtypes)), np.nan)
            for a, v in enumerate(variants):
                for b, d in enumerate(dtypes):
                    cell = summary.get((impl, v, d))
                    if cell is None:
                        continue
                    value = cell[key]
                    if value is not None and math.isfinite(value):
                        grid[a, b] = min(max(value, low), high)
                    text = "—" if value is None else f"{value:.2g}"
                    note = _status_note(cell["counts"])
                    ax.text(b, a, text + ("\n" + note if note else ""), ha="center", va="center", fontsize=7)
            image = ax.imshow(grid, cmap="viridis", norm=LogNorm(vmin=low, vmax=high), alpha=0.8)
            ax.set_title(impl)
            ax.set_xticks(range(len(dtypes)), dtypes, rotation=30)
            ax.set_yticks(range(len(variants)), variants)
        fig.colorbar(image, ax=list(row), shrink=0.85, label=label)
    fig.suptitle("The battery per variant and dtype (docs/verification.json); a blank cell: no check ran",
                 fontsize=10)
    return _figure_bytes(fig)


# --- pages ------------------------------------------------------------------------------------

def header(title: str) -> str:
    h = codegen.derivation_hash()
    return (
        f"<!-- @generated by derive/docs.py from the SymPy derivation in derive/symbolic.py; do not edit. "
        f"Regenerate with: {REGENERATE_COMMAND} -->\n"
        f"# {title}\n\n"
        f"> Generated from derivation-hash `{h}`, the hash recorded in `reference/_generated/*.py`: every "
        f"formula below is `sympy.latex` of the expressions that generated that code (`derive/symbolic.py`), "
        f"or read off them mechanically (`derive/docs.py`). Regenerate with `{REGENERATE_COMMAND}`; "
        f"`{REGENERATE_COMMAND} --check` fails when this page is stale.\n"
    )


def nav(current: str) -> str:
    links = [("index", "index.md")] + [(v, f"{v}.md") for v in spec.VARIANTS]
    return " · ".join(f"**{name}**" if name == current else f"[{name}]({target})" for name, target in links)


def section(title: str, body: str) -> str:
    return f"## {title}\n\n{body.strip()}\n"


def proof_note() -> str:
    return (f"Each closed form of the derivation (dx, its direct part, d gamma, d beta) is proved equal to "
            f"brute-force `sympy.diff` at every N from 1 to {proofs.MAX_N} in exact arithmetic "
            f"(`derive/proofs.py`, `normspec derive --prove`).")


def checks_table(variant: str, statements: dict[str, list[Statement]]) -> str:
    checks = _checks()
    covered: dict[str, list[str]] = {}
    for heading, items in statements.items():
        for s in items:
            for name in s.checks:
                if variant in checks[name].variants and heading not in covered.setdefault(name, []):
                    covered[name].append(heading)
    rows = ["| check | kind | what it checks | dtypes | statements on this page |", "|---|---|---|---|---|"]
    for name, check in checks.items():
        if variant not in check.variants:
            continue
        where = ", ".join(f"[{h}](#{_anchor(h)})" for h in covered.get(name, [])) or "—"
        extra = f"; needs {', '.join(check.needs)}" if check.needs else ""
        rows.append(f"| `{name}` | {check.kind} | {check.description}{extra} | {', '.join(check.dtypes)} | {where} |")
    return ("Each check is a hypothesis search over drawn cases (shapes, eps, memory layouts, value kinds) "
            f"on every dtype listed, run by `normspec verify --variant {variant}` (`verify/checks.py`).\n\n"
            + "\n".join(rows))


def _anchor(heading: str) -> str:
    """The id Python-Markdown's toc and GitHub give a heading (for the headings used here)."""
    import re

    slug = re.sub(r"[^\w\s-]", "", heading.lower()).strip()
    return re.sub(r"[\s]+", "-", slug)


def deviations_section(variant: str) -> str:
    from normspec.verify.running.deviations import DEVIATIONS

    known = _checks()
    items = []
    for d in DEVIATIONS:
        mine = [i.split("::") for i in d.check_ids if i.startswith(f"{variant}::")]
        mine = [m for m in mine if m[2] not in known or variant in known[m[2]].variants]
        if not mine:
            continue
        dtypes = sorted({m[1] for m in mine}, key=["float64", "float32", "float16", "bfloat16"].index)
        checks = sorted({m[2] for m in mine})
        items.append(f"- **{d.name}** ({d.implementation}; {', '.join(dtypes)}; checks "
                     f"{', '.join(f'`{c}`' for c in checks)}): {d.explanation}.")
    intro = ("Named and explained in `verify/expected.py`; the battery reports them as expected failures of "
             "`torch_native` only, never as a looser check for anyone else.")
    return intro + "\n\n" + ("\n".join(items) if items else f"None recorded for {variant}.")


def _fmt(value: float | None, spec_: str) -> str:
    return "—" if value is None else format(value, spec_)


def battery_variant_table(variant: str, records: list[dict] | None) -> str:
    if records is None:
        return ""
    summary = {k: c for k, c in battery_summary(records).items() if k[1] == variant}
    if not summary:
        return ""
    rows = ["| implementation | dtype | worst error / tolerance | max abs error | passed | failed | "
            "expected failure | skipped |", "|---|---|---|---|---|---|---|---|"]
    for (impl, _, dtype), cell in summary.items():
        c = cell["counts"]
        rows.append(f"| {impl} | {dtype} | {_fmt(cell['worst_ratio'], '.2g')} | {_fmt(cell['max_abs'], '.2e')} | "
                    f"{c.get('passed', 0)} | {c.get('failed', 0)} | "
                    f"{c.get('expected failure', 0)} | {c.get('skipped', 0)} |")
    return ("\n\nResults recorded in `docs/verification.json` (`normspec docs --with-battery`); errors are the worst "
            "over the passing checks (the near-overflow value kinds make absolute errors large within "
            "tolerance):\n\n" + "\n".join(rows))


JACOBIAN_INTRO = (
    "For i, j in one group: read off the VJP below by setting g to the unit vector e_i and gamma to 1 "
    "(inside a group mean, mean(g q) becomes q_i / N). The direct part is the partial of normalize(x; X) with "
    "respect to the element x with the batch X held; the batch part is the partial with respect to the batch X, "
    "through the statistics.")


def variant_page(variant: str, records: list[dict] | None) -> str:
    v = spec.VARIANTS[variant]
    family = FAMILY_OF[v.family]
    _, _, layout = example_layout(variant)
    here = [c for c in corrections(family) if variant in c.variants]
    # section -> (text before, the statements, text after)
    sections: dict[str, tuple[str, list[Statement], str]] = {
        "Shapes and axes": (shapes_table(variant), shapes_statements(variant), ""),
        "Statistics": (f"{v.group[0].upper()}{v.group[1:]}: N is the number of elements in one group.",
                       statistics_statements(family), ""),
        "Forward": ("", forward_statements(family), ""),
        "Jacobian: direct path and path through the batch statistics": (
            JACOBIAN_INTRO + (" In eval mode the statistics are given and only the direct part is left (see "
                              "[eval mode](#running-statistics-and-eval-mode))." if variant == "batch_norm" else ""),
            jacobian_statements(family),
            f"![The Jacobian's direct part, batch part and sum for a group of {JACOBIAN_N}]"
            f"(img/jacobian_{family.name}.png)"),
        "Backward (VJP)": ("", backward_statements(family, axes(variant, layout.affine_dims)), proof_note()),
        "Invariants": ("Exact, eps included; each is derived from the closed forms with the group's rewrite rules "
                       "(`derive/symbolic.py`).", invariant_statements(family), ""),
        "Running statistics and eval mode": ("", *running_statements(variant)),
        "Corrections": ("Statements common in course notes, wrong or loose for this variant, and what holds (all "
                        "of them: [index](index.md#corrections)).", [c.right for c in here], ""),
        "Checks of the battery": ("", [], ""),
        "Known deviations of torch's native ops": (deviations_section(variant), [], ""),
    }
    statements = {title: items for title, (_, items, _) in sections.items()}
    sections["Checks of the battery"] = (checks_table(variant, statements) + battery_variant_table(variant, records),
                                         [], "")

    def body(title: str) -> str:
        before, items, after = sections[title]
        if title == "Corrections":
            rendered = [correction_text(c, variant) for c in here]
        else:
            rendered = [render(s, variant) for s in items]
        return "\n\n".join(part for part in (before, *rendered, after) if part)

    page = header(variant) + "\n" + nav(variant) + "\n\n"
    page += (f"`{variant}` normalizes over {v.group}, with affine parameters per {v.affine}; it is the "
             f"**{family.name}** family of the derivation"
             + (" (the given_stats family in eval mode)" if variant == "batch_norm" else "") + ".\n\n")
    return page + "\n".join(section(title, body(title)) for title in VARIANT_SECTIONS)


def variants_table() -> str:
    rows = ["| variant | input | group (statistics shared over) | gamma, beta per | bias | centering | family |",
            "|---|---|---|---|---|---|---|"]
    for name, v in spec.VARIANTS.items():
        shape, config, layout = example_layout(name)
        rows.append(f"| [{name}]({name}.md) | {' x '.join(WORK_AXIS_NAMES[name])} | {v.group} | {v.affine} | "
                    f"{'yes' if v.has_bias else 'no'} | {'yes' if FAMILY_OF[v.family].centered else 'no'} | "
                    f"{v.family} |")
    return "\n".join(rows)


def conventions_table() -> str:
    f32 = float(np.finfo(np.float32).eps)
    f64 = float(np.finfo(np.float64).eps)
    rows = [
        ("variance used to normalize", "biased (divide by N)", "biased", "biased", "biased: " + _inline(
            equation(sym.var, sym.GroupMean(sym.xc**2)))),
        ("running variance", "**unbiased**: N/(N - 1) times the batch variance", "biased batch variance",
         "biased batch variance", "torch's (unbiased)"),
        ("momentum", "weight of the **new** value: running = (1 - m) running + m batch, default 0.1",
         "weight of the **old** value: running = m running + (1 - m) batch, default 0.99",
         "weight of the **old** value, default 0.99", "torch's: " + _inline(MOMENTUM) + " weighs the new value"),
        ("momentum=None", "cumulative average, m = 1/num_batches_tracked", "—", "—",
         "pass m = 1/num_batches_tracked"),
        ("eps, batch norm", "1e-5", "1e-5", "1e-3", "1e-5 (torch's signature)"),
        ("eps, layer norm", "1e-5", "1e-6", "1e-3", "1e-5"),
        ("eps, group norm", "1e-5", "1e-6", "1e-3", "1e-5"),
        ("eps, RMS norm", f"eps=None: machine epsilon of the compute dtype, {f64:.4g} for float64 and {f32:.4g} "
         "(float32's) for float32, float16 and bfloat16 inputs", "1e-6", "1e-3 (LayerNormalization with "
         "rms_scaling=True)", "torch's eps=None"),
        ("where eps goes", "inside the square root", "inside", "inside", _inline(equation(sym.rstd, rstd_value()))),
        ("channel axis", "axis 1 (N, C, ...)", "last axis by default (axis=-1)", "last axis by default (axis=-1)",
         "torch's"),
        ("statistics per channel or per element", "batch/instance/group norm: per channel (or group of "
         "channels); layer/RMS norm: per sample, over normalized_shape", "same, with reduction_axes and "
         "feature_axes", "same, with axis", "see the variants table"),
        ("affine by default", "BatchNorm, LayerNorm, GroupNorm: yes; InstanceNorm: **no** (affine=False, "
         "track_running_stats=False)", "yes (use_scale, use_bias)", "yes (scale, center)", "optional everywhere"),
    ]
    lines = ["| convention | torch | flax (linen) | keras 3 | normspec |", "|---|---|---|---|---|"]
    lines += [f"| {' | '.join(r)} |" for r in rows]
    return "\n".join(lines)


def identities_section() -> str:
    checks = _checks()
    lines = []
    for name, check in checks.items():
        if check.kind == "identity":
            lines.append(f"- {check.description} (`{name}`, for {', '.join(check.variants)})")
    ln = composed(sym.CENTERED)[sym.xhat].subs(sym.GroupMean(sym.x), 0)
    rms = composed(sym.RMS)[sym.xhat]
    if sp.simplify(ln - rms) != 0:
        raise AssertionError("rms_norm is not layer_norm on zero-mean input")
    return ("Checked by the battery (`verify/checks.py`, kind `identity`):\n\n" + "\n".join(lines) + "\n\n"
            "The derivation shows the RMS one directly: the centered family's xhat with a zero group mean is the "
            "RMS family's,\n\n" + _math(equation(r"\hat{x}_{\text{centered}}\Big|_{\operatorname{mean}_{\text{group}}"
                                                 r"\left(x\right) = 0}", rms, r"\hat{x}_{\text{rms}}")))


def normalization_section() -> str:
    program = sym.CENTERED.program()
    k = sp.Symbol("k", integer=True)
    q = sp.IndexedBase("q")
    mean_def = equation(sym.GroupMean(sp.Symbol("q")), sp.Sum(q[k], (k, 1, N)) / N)
    return "\n\n".join([
        "A normalization layer splits its input into **groups** of N elements that share **statistics**, "
        "normalizes each element with its group's statistics, then applies an elementwise **affine step** with "
        "learned gamma and beta. A variant is fixed by which elements form a group and which axes carry gamma "
        "and beta; the mathematics is one program, derived once for a general N (`derive/symbolic.py`).",
        "The group mean, written as an operator:", _math(mean_def),
        "The statistics of one group (biased: divided by N):",
        *[_math(_node_equation(n)) for n in program if n.reduced or n.target == sym.rstd],
        "Each element, normalized, then the affine step:",
        *[_math(_node_equation(n)) for n in program if not n.reduced and n.target != sym.rstd],
        f"RMS normalization drops the centering ({_inline(equation(sym.mu, 0))}, no beta); eval-mode batch_norm "
        f"takes {_inline(sym.mu)} and {_inline(sym.var)} from its running statistics. The gradient of x splits into "
        "a direct path, with the statistics held, and a path through the statistics; each variant page prints "
        "both, their Jacobian and the VJP. " + proof_note(),
    ])


def verification_section(records: list[dict] | None) -> str:
    if records is None:
        return ("No verification report exists yet (`docs/verification.json`). Create one, with this picture, "
                "with `normspec docs --with-battery`: it runs the battery (`normspec verify`) on numpy_ref, "
                "torch_ref and torch_native and records one line per variant, dtype and check "
                "(schema: `derive/docs.py`).")
    implementations = sorted({r["implementation"] for r in records})
    counts: dict[str, dict[str, int]] = {}
    for r in records:
        c = counts.setdefault(r["implementation"], {})
        c[r["status"]] = c.get(r["status"], 0) + 1
    rows = ["| implementation | passed | failed | expected failure | skipped |", "|---|---|---|---|---|"]
    for impl in implementations:
        c = counts[impl]
        rows.append(f"| {impl} | {c.get('passed', 0)} | {c.get('failed', 0)} | {c.get('expected failure', 0)} | "
                    f"{c.get('skipped', 0)} |")
    return ("From `docs/verification.json` (regenerate with `normspec docs --with-battery`): for each "
            "implementation, variant and dtype, the worst error over the passing checks, as a fraction of its "
            "tolerance and absolute, with the count of failures and expected failures.\n\n![The battery's worst "
            "error per variant and dtype](img/battery.png)\n\n" + "\n".join(rows))


def generation_section() -> str:
    return (f"`derive/docs.py` builds these pages from `derive/symbolic.py` (the closed forms), `derive/spec.py` "
            f"(variants and layouts), `verify/checks.py` (the checks) and `verify/expected.py` (torch's known "
            f"deviations); `derive/latex.py` prints the formulas with `sympy.latex`. Formulas are GitHub math "
            f"(a fenced math block for display, dollar-backtick inline). The standalone HTML in `docs/site/` "
            f"is the same pages with MathML, readable offline in any current browser. The derivation-hash "
            f"(`{codegen.derivation_hash()}`) is `derive.codegen.derivation_hash()`: sha256 over "
            f"{', '.join(f'`{s}`' for s in codegen.DERIVATION_SOURCES)} and the SymPy version.")


def index_page(records: list[dict] | None) -> str:
    body = {
        "What normalization is": normalization_section(),
        "Variants": variants_table() + "\n\nOne page per variant: " + ", ".join(
            f"[{v}]({v}.md)" for v in spec.VARIANTS) + ".",
        "Cross-variant identities": identities_section(),
        "Conventions across frameworks": "What a user moving between frameworks trips over (torch 2.x, flax "
                                         "linen, keras 3 defaults):\n\n" + conventions_table(),
        "Corrections": "Statements common in course notes that are wrong or loose, each with what holds and the "
                       "check that demonstrates it (shown here for the centered family; each variant page shows "
                       "its own).\n\n" + "\n\n".join(correction_text(c, None) for c in corrections(sym.CENTERED))
                       + "\n\n![The output's second moment against var/eps](img/second_moment.png)",
        "Verification results": verification_section(records),
        "How this spec is generated": generation_section(),
    }
    page = header("normspec: the normalization spec") + "\n" + nav("index") + "\n\n"
    return page + "\n".join(section(title, body[title]) for title in INDEX_SECTIONS)


# --- the standalone site --------------------------------------------------------------------------

STYLE = """\
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; line-height: 1.5; color: #1b1b1b;
       max-width: 64rem; margin: 0 auto; padding: 1rem 1.5rem 4rem; }
nav { padding: 0.5rem 0; border-bottom: 1px solid #ddd; margin-bottom: 1rem; }
nav a { margin-right: 0.75rem; }
blockquote { color: #555; border-left: 4px solid #ddd; margin: 1rem 0; padding: 0 1rem; }
table { border-collapse: collapse; margin: 1rem 0; font-size: 0.92rem; }
th, td { border: 1px solid #ccc; padding: 0.3rem 0.5rem; vertical-align: top; }
th { background: #f4f4f4; }
code { background: #f4f4f4; padding: 0 0.2rem; border-radius: 3px; }
pre { background: #f4f4f4; padding: 0.6rem; overflow-x: auto; }
div.math { overflow-x: auto; overflow-y: hidden; padding: 0.15rem 0; margin: 0.5rem 0 0.5rem 1.5rem; }
math { font-size: 1.1em; }
img { max-width: 100%; }
h2 { border-bottom: 1px solid #eee; padding-bottom: 0.2rem; margin-top: 2rem; }
"""


def html_page(name: str, markdown_text: str) -> str:
    import re

    body = markdown_to_html(markdown_text)
    body = re.sub(r'href="([\w-]+)\.md(#[\w-]*)?"', lambda m: f'href="{m.group(1)}.html{m.group(2) or ""}"', body)
    title = "normspec spec" if name == "index" else f"normspec spec: {name}"
    return (
        "<!DOCTYPE html>\n"
        f"<!-- @generated by derive/docs.py from docs/spec/{name}.md; do not edit. "
        f"Regenerate with: {REGENERATE_COMMAND} -->\n"
        '<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f'<meta name="derivation-hash" content="{codegen.derivation_hash()}">\n'
        f"<title>{title}</title>\n"
        '<link rel="stylesheet" href="style.css">\n</head>\n<body>\n'
        f"{body}\n</body>\n</html>\n"
    )


# --- all files ------------------------------------------------------------------------------------

def generated_files(records: list[dict] | None = None, *, read_report: bool = True) -> list:
    """Every file of docs/spec and docs/site, in memory."""
    if records is None and read_report:
        records = read_verification()
    pages = {"index": index_page(records)}
    pages.update({v: variant_page(v, records) for v in spec.VARIANTS})
    images = {f"jacobian_{f.name}.png": jacobian_figure(f) for f in (sym.CENTERED, sym.RMS)}
    images["second_moment.png"] = second_moment_figure()
    if records is not None:
        images["battery.png"] = battery_figure(records)
    files: list = [codegen.GeneratedFile(SPEC_DIR / f"{name}.md", text) for name, text in pages.items()]
    files += [BinaryFile(IMG_DIR / name, data) for name, data in images.items()]
    files += [codegen.GeneratedFile(SITE_DIR / f"{name}.html", html_page(name, text)) for name, text in pages.items()]
    files.append(codegen.GeneratedFile(SITE_DIR / "style.css", STYLE))
    files += [BinaryFile(SITE_DIR / "img" / name, data) for name, data in images.items()]
    return files


def extra_files(files: list) -> list[Path]:
    """Files under docs/spec and docs/site that generation does not produce (left over, or added by hand)."""
    expected = {f.path for f in files}
    found = [p for d in (SPEC_DIR, SITE_DIR) if d.exists() for p in sorted(d.rglob("*")) if p.is_file()]
    return [p for p in found if p not in expected]


def run(check: bool = False, with_battery: bool = False) -> int:
    """``normspec docs``: write the docs (or, with ``check``, exit 1 naming stale files).

    ``with_battery`` first runs the battery on the built-in implementations and records
    it in docs/verification.json (with ``check``: compares that file too).
    """
    start = time.perf_counter()
    records = None
    report_file = None
    if with_battery:
        records = battery_figure_data()
        report_file = codegen.GeneratedFile(VERIFICATION_JSON, verification_json(records))
    files = generated_files(records)
    if report_file is not None:
        files.insert(0, report_file)
    if check:
        stale = [f.path for f in files if f.stale]
        extra = extra_files(files)
        for path in stale:
            print(f"stale: {_shown(path)} (regenerate with `{REGENERATE_COMMAND}`)")
        for path in extra:
            print(f"not generated: {_shown(path)} (remove it, or regenerate with `{REGENERATE_COMMAND}`)")
        if stale or extra:
            return 1
        print(f"docs are fresh ({len(files)} files, derivation-hash {codegen.derivation_hash()}, "
              f"{time.perf_counter() - start:.2f} s)")
        return 0
    written = set(write(files))
    for f in files:
        print(f"{'written' if f.path in written else 'unchanged'}: {_shown(f.path)}")
    for path in extra_files(files):
        print(f"not generated: {_shown(path)} (left in place; remove it by hand)")
    print(f"derivation-hash {codegen.derivation_hash()}, {time.perf_counter() - start:.2f} s")
    return 0
