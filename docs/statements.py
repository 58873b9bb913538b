"""The statements of the spec: a derived formula, its prose, and the checks that demonstrate it.

A :class:`Statement` is rendered as a bold title, its prose, its formulas (display math)
and a "Checked by" line naming the battery's checks (``normspec.verify.checks.CHECKS``)
that apply to the page's variant. The prose and the checks are read from
``statements.toml`` (:mod:`prose`); the formulas are ``derive.latex`` of
:mod:`mathematics`; what differs between variants is read off their records
(``normspec.derive.variants``): centering, running statistics, samples, layout notes.
"""
from __future__ import annotations

from dataclasses import dataclass

import sympy as sp

from normspec.derive import symbolic as sym, variants
from normspec.derive.latex import GroupSum, equation, latex
from normspec.derive.variants import Variant
from normspec.docs import mathematics as m, prose
from normspec.verify.checks import CHECKS

# The identity check that shows how a variant's statistics treat the other samples of a batch,
# by record.per_sample: a note on statistics across the batch carries the False one.
SAMPLE_CHECKS = {True: "per_sample_independence", False: "batch_permutation"}
# Which variants a correction's or a bug's `scope` (statements.toml, bugs.toml) puts it on.
SCOPES = {
    "all": lambda v: True,
    "running": lambda v: v.running is not None,
    "learned_parameters": lambda v: not v.parameters_required,  # not the adaptive norms' per-sample ones
    "offset": lambda v: v.option("weight_offset") is not None or v.fixed_weight_offset is not None,
    "offset_option": lambda v: v.option("weight_offset") is not None,
    "residual": lambda v: v.residual,
}
# The registry's relations (variants.RELATIONS) a statement names, by the start of their names.
OFFSET_RELATIONS, FUSED_RELATIONS = ("offset_is_shifted_weight_",), ("fused_add_is_norm_of_sum_",)
MODULATION_RELATIONS = ("unmodulated_", "modulated_per_sample_")
DERIVATIVE = r"\frac{\partial \hat{x}_{i}}{\partial x_{j}}"


@dataclass(frozen=True)
class Statement:
    title: str
    prose: str
    formulas: tuple[str, ...] = ()
    checks: tuple[str, ...] = ()
    any_variant: bool = False  # list the checks even where they run on another variant (identities)


def inline(expr: sp.Basic | str) -> str:
    return f"$`{expr if isinstance(expr, str) else latex(expr)}`$"


def display(tex: str) -> str:
    return f"```math\n{tex}\n```"


def _filled(kind: str, key: str, slots: dict, centered: bool, fields: tuple[str, ...]) -> tuple[dict, dict]:
    """The fields of ``[kind.key]`` filled, the ``*_uncentered`` ones chosen without centering."""
    record = prose.entry(kind, key)
    names = [f for f in fields] + [f"{f}_uncentered" for f in fields if f"{f}_uncentered" in record]
    texts = dict(zip(names, prose.fill_all(tuple(record.get(n, "") for n in names), slots)))
    chosen = {f: texts[f"{f}_uncentered"] if not centered and f"{f}_uncentered" in texts else texts[f] for f in fields}
    return chosen, record


def statement(key: str, *formulas: str, centered: bool = True, checks: tuple[str, ...] | None = None,
              any_variant: bool = False, **slots: object) -> Statement:
    """The statement ``[statement.key]`` with these formulas (its checks unless ``checks`` is given)."""
    texts, record = _filled("statement", key, slots, centered, ("title", "prose"))
    return Statement(texts["title"], texts["prose"], formulas,
                     tuple(record.get("checks", ())) if checks is None else checks, any_variant)


def covers(check: str, relation: str) -> bool:
    """A check of the battery checks a relation of the registry named like it (its name, or the name
    of the relation without the variant it is instantiated for: unmodulated for unmodulated_rms_norm)."""
    return relation == check or relation.startswith(check + "_")


def relations_of(record: Variant, prefixes: tuple[str, ...] = ("",)) -> list[variants.Relation]:
    """The registry's relations ``record`` takes part in, whose names start with one of ``prefixes``."""
    return [r for r in variants.RELATIONS.values()
            if r.name.startswith(prefixes) and record.name in (r.variant, r.other)]


def relation_checks(record: Variant, prefixes: tuple[str, ...]) -> tuple[str, ...]:
    """The checks of the battery that check the relations of ``record`` named with ``prefixes``."""
    relations = relations_of(record, prefixes)
    return tuple(name for name in CHECKS if any(covers(name, r.name) for r in relations))


def checked_by(names: tuple[str, ...], variant: str | None) -> str:
    unknown = [n for n in names if n not in CHECKS]
    if unknown:
        raise KeyError(f"docs name checks that verify.checks.CHECKS lacks: {unknown}")
    applying = [n for n in names if variant is None or variant in CHECKS[n].variants]
    if not applying:
        return ""
    return "Checked by " + ", ".join(f"`{n}` ({CHECKS[n].description})" for n in applying) + "."


def render(statement: Statement, record: Variant | None) -> str:
    """The Markdown of a statement on the page of ``record`` (None: the index, every check)."""
    parts = [f"**{statement.title}.** {statement.prose}".rstrip()]
    parts += [display(f) for f in statement.formulas]
    checked = checked_by(statement.checks, None if statement.any_variant or record is None else record.name)
    if checked:
        parts.append(checked)
    return "\n\n".join(parts)


# --- the sections of a variant page --------------------------------------------------------------

def statistics_statements(family: sym.Family) -> list[Statement]:
    program = family.program()
    keys = {sym.mu: "mean", sym.var: "variance"}
    items = [statement(keys[n.target], m.node_equation(n), centered=family.centered, symbol=inline(n.target))
             for n in program if n.reduced]
    r_node = next(n for n in program if n.target == sym.rstd)
    items.append(statement("rstd", m.node_equation(r_node), centered=family.centered, symbol=inline(sym.rstd)))
    return items


def forward_note(notation: m.Notation) -> str:
    """What the forward of this notation adds to the textbook one: the residual sum, the offset."""
    notes = []
    if notation.family.residual:
        notes.append(prose.text("forward_residual", s=inline(sym.s), residual=inline(sym.residual)))
    if notation.keeps_gamma:
        notes.append(prose.text("forward_offset", gamma=inline(equation(sym.gamma, m.gamma_value())),
                                w=inline(sym.w), c=inline(sym.c)))
    elif notation.has_offset:
        notes.append(prose.text("forward_fixed_offset", weight=inline(notation.weight), bias=inline(notation.bias),
                                gamma=inline(equation(sym.gamma, notation.multiplier))))
    return " ".join(notes)


def forward_statements(notation: m.Notation) -> list[Statement]:
    nodes = [n for n in notation.program() if not n.reduced and n.target != sym.rstd]
    return [statement("forward", *(m.node_equation(n) for n in nodes), note=forward_note(notation))]


def jacobian_statements(family: sym.Family) -> list[Statement]:
    jac = m.jacobian(family)
    statistics = f"{inline(sym.mu)} and {inline(sym.var)}" if family.centered else inline(sym.var)
    normalize_x = r"\frac{\partial}{\partial x_{i}} \operatorname{normalize}\left(x_{i}; X\right)"
    normalize_batch = r"\frac{\partial}{\partial X_{j}} \operatorname{normalize}\left(x_{i}; X\right)"
    return [
        statement("direct_path", equation(DERIVATIVE + r"\Big|_{\text{direct}}", jac.direct),
                  equation(normalize_x, jac.partial_x)),
        statement("batch_path", equation(DERIVATIVE + r"\Big|_{\text{batch}}", jac.batch),
                  equation(normalize_batch, jac.batch), statistics=statistics),
        statement("jacobian", equation(DERIVATIVE, jac.total)),
    ]


def gradient_of(symbol: sp.Symbol) -> str:
    """The LaTeX of the gradient of a parameter: d gamma, d w, d scale."""
    return "d" + latex(symbol)


def h_definition(notation: m.Notation) -> str:
    return inline(equation(m.H, notation.show(sym.gamma * sym.g)))


def shown_vjp(expr: sp.Expr, notation: m.Notation) -> sp.Expr:
    return notation.show(m.with_h(expr))


def backward_statements(record: Variant, notation: m.Notation, affine_axes: str) -> list[Statement]:
    family = notation.family
    forms = sym.derive(family)
    outputs = forms.outputs()
    items = [
        statement("dx", equation("dx", shown_vjp(forms.dx, notation)), dx=inline("dx"), h=h_definition(notation)),
        statement("dx_split", equation(r"dx_{\text{direct}}", shown_vjp(forms.dx_direct, notation)),
                  equation(r"dx_{\text{batch}}", shown_vjp(forms.dx_through_statistics, notation)), dx=inline("dx")),
    ]
    if family.residual:
        passed, norm = m.pass_through(family)
        if sp.expand(forms.dresidual - forms.dx) != 0:
            raise AssertionError(f"{family.name}: dresidual differs from dx")
        items.append(statement(
            "pass_through", equation("dx - " + latex(passed), shown_vjp(norm, notation)),
            equation(gradient_of(sym.residual), "dx"),
            checks=("backward", "finite_differences", *relation_checks(record, FUSED_RELATIONS)),
            g_s=inline(passed), s=inline(sym.s), base=m.base_family(family).name,
            dresidual=inline(gradient_of(sym.residual))))
    weight, bias = gradient_of(notation.weight), gradient_of(notation.bias)
    items.append(statement("dgamma", equation(weight, outputs["dweight"]), dgamma=inline(weight), axes=affine_axes))
    if "dbias" in outputs:
        items.append(statement("dbeta", equation(bias, outputs["dbias"]), dbeta=inline(bias)))
    return items


def _given(gamma: str, notation: m.Notation) -> str:
    """The evaluation bar of y at the given multiplier (and bias = mu when centering)."""
    bias = r",\ " + latex(notation.bias) + r" = \mu" if notation.family.centered else ""
    return r"y\Big|_{" + latex(notation.multiplier) + " = " + gamma + bias + "}"


def _recovery(gamma: sp.Expr, tex: str, notation: m.Notation) -> str:
    """y minus the normalized input at the given multiplier: the identity recovery."""
    lhs = _given(tex, notation) + " - " + latex(m.normalized_input(notation.family))
    return equation(lhs, m.identity_recovery(notation.family, gamma))


def _at(expr: sp.Basic, substitutions: dict, notation: m.Notation) -> str:
    """``expr`` with an evaluation bar listing ``substitutions`` in the page's symbols."""
    listed = r",\ ".join(latex(notation.show(k)) + r" \to " + latex(notation.show(v))
                         for k, v in substitutions.items())
    return latex(expr) + r"\Big|_{" + listed + "}"


STD_TEX = r"\sqrt{\sigma^{2} + \epsilon}"
SHIFTED = r"x_{c}\Big|_{x \to x + b}"


def offset_statements(record: Variant, notation: m.Notation) -> list[Statement]:
    """With an offset: y depends on w and c only through gamma; dx reads gamma, d w keeps its form."""
    if not notation.has_offset:
        return []
    family = notation.family
    forms = sym.derive(family)
    dx = equation("dx", notation.show(forms.dx.xreplace({sym.gamma: m.gamma_value()})))
    dweight = equation(gradient_of(notation.weight), forms.outputs()["dweight"])
    checks = ("backward", "finite_differences")
    if notation.keeps_gamma:
        folded, y = m.offset_is_shifted_weight(family)
        return [statement("weight_offset", equation(_at(sym.y, folded, notation), notation.show(y), sym.y), dx,
                          dweight, checks=(*checks, *relation_checks(record, OFFSET_RELATIONS)),
                          gamma=inline(equation(sym.gamma, m.gamma_value())), dweight=inline(gradient_of(sym.w)))]
    zero, y = m.unmodulated(family)
    return [statement("modulation", equation(_at(sym.y, zero, notation), y), dx, dweight,
                      checks=(*checks, *relation_checks(record, MODULATION_RELATIONS)),
                      gamma=inline(equation(sym.gamma, notation.multiplier)),
                      dweight=inline(gradient_of(notation.weight)))]


def invariant_statements(record: Variant, notation: m.Notation) -> list[Statement]:
    family = notation.family
    centered = family.centered
    fact, written_out = m.second_moment(family)
    items = []
    if centered:
        items.append(statement("mean_zero", equation(sym.GroupMean(sym.xhat), m.mean_zero(family))))
    items.append(statement("second_moment", equation(sym.GroupMean(sym.xhat**2), fact, written_out),
                           centered=centered, var=inline(sym.var)))
    items.append(statement("identity_recovery", _recovery(m.STD, STD_TEX, notation), centered=centered))
    shifted, rest = m.shifted_center(family)
    if centered:
        items.append(statement("shift_invariance", equation(SHIFTED, shifted, sym.xc), b=inline(m.SHIFT)))
    else:
        items.append(statement("no_shift_invariance", equation(SHIFTED, shifted, sym.xc + rest), b=inline(m.SHIFT)))
    if not m.scale_invariant(family):
        raise AssertionError(f"{family.name}: scale invariance does not hold")
    items.append(statement("scale_invariance", equation(_at(sym.xhat, m.scaling(family), notation), sym.xhat),
                           a=inline(m.SCALE), inputs=inline(m.normalized_input(family))))
    sum_dx, sum_dx_xhat = m.gradient_sums(family)
    passed, _ = m.pass_through(family)
    norm_dx = sp.Symbol("dx") - passed
    items.append(statement(
        "gradient_sums", equation(GroupSum(norm_dx), notation.show(sum_dx)),
        equation(GroupSum(norm_dx * sym.xhat), notation.show(sum_dx_xhat),
                 notation.show(sum_dx_xhat.subs(sym.rstd**3, sym.rstd / (sym.var + sym.eps)))),
        centered=centered, less=prose.text("less_pass_through", g_s=inline(passed)) if family.residual else ""))
    if centered:
        y, dx = m.constant_group(family)
        items.append(statement("constant_group", equation(r"y\Big|_{\sigma^{2} = 0}", notation.show(y)),
                               equation(r"dx\Big|_{\sigma^{2} = 0}", notation.show(dx)),
                               var_zero=inline(equation(sym.var, 0)), xc_zero=inline(equation(sym.xc, 0))))
    return items + offset_statements(record, notation)


def given_statistics_statements(record: Variant) -> list[Statement]:
    """Normalizing with given statistics (the record's family without batch statistics): an affine map of x."""
    notation = m.notation_of(record, m.family_of(record, batch_statistics=False))
    family = notation.family
    forms = sym.derive(family)
    slope, offset = m.affine_map(family)
    return [
        statement("given_statistics", *(m.node_equation(n) for n in notation.program()),
                  equation(sym.y, sp.Symbol("A") * sym.x + sp.Symbol("B")),
                  equation("A", notation.show(slope)) + r",\quad " + equation("B", notation.show(offset)),
                  mu=inline(sym.mu), var=inline(sym.var)),
        statement("given_statistics_gradient", equation("dx", shown_vjp(forms.dx, notation)),
                  equation(r"dx_{\text{batch}}", forms.dx_through_statistics),
                  equation(DERIVATIVE, m.jacobian_entry(forms.dx))),
    ]


def running_statements(record: Variant) -> tuple[list[Statement], str]:
    """The statements of the running-statistics section, and a closing text."""
    running = record.running
    if running is None:
        return [], prose.text("no_running")
    mean_update, var_update = m.running_update(average_over_samples=running.average_over_batch)
    if running.average_over_batch:
        update = statement("running_update_averaged", mean_update, var_update, mode=running.mode_argument)
    else:
        update = statement("running_update", mean_update, var_update, momentum=inline(m.MOMENTUM),
                           cumulative=inline(equation(m.MOMENTUM, 1 / m.STEP)))
    if running.eval_drawn:
        return [update, *given_statistics_statements(record)], ""
    shown = variants.matching(lambda v: v.running is not None and v.running.eval_drawn)
    return [update, *(statement("given_statistics_elsewhere", mode=running.mode_argument, variant=name)
                      for name in shown)], ""


def shapes_statements(record: Variant) -> list[Statement]:
    across = () if record.per_sample else (SAMPLE_CHECKS[False],)
    items = [statement("layout_note", checks=across, title=title, text=text) for title, text in record.notes]
    if record.per_sample:
        items.append(statement("each_sample_alone", checks=(SAMPLE_CHECKS[True],)))
    related = tuple(name for name, c in CHECKS.items() if c.kind == "identity" and name not in SAMPLE_CHECKS.values()
                    and record.name in (*c.variants, *c.needs))
    relations = relations_of(record)
    # the registry's statement of a relation; a check's description where the registry has none
    said = [r.statement for r in relations] + [CHECKS[n].description for n in related
                                               if not any(covers(n, r.name) for r in relations)]
    if said:
        items.append(statement("identities", checks=related, any_variant=True, descriptions="; ".join(said)))
    return items


# --- corrections -----------------------------------------------------------------------------------

@dataclass(frozen=True)
class Correction:
    anchor: str
    wrong: str  # the statement as course notes put it
    right: Statement
    variants: tuple[str, ...]


def _per_affine() -> str:
    """Where learned gamma and beta live, with the variants of each: 'per channel (batch_norm, ...) or ...'."""
    by_affine: dict[str, list[str]] = {}
    for v in variants.VARIANTS.values():
        if SCOPES["learned_parameters"](v):
            by_affine.setdefault(v.affine, []).append(v.name)
    return " or ".join(f"per {affine} ({', '.join(names)})" for affine, names in by_affine.items())


def _correction_formulas(notation: m.Notation) -> dict[str, tuple[tuple[str, ...], dict]]:
    """anchor -> (the formulas, the slots) of each correction of statements.toml."""
    family = notation.family
    fact, written_out = m.second_moment(family)
    half, tenfold = m.second_moment_at(family, 1), m.second_moment_at(family, 10)
    shifted, rest = m.shifted_center(family)
    at_eps = latex(sym.GroupMean(sym.xhat**2)) + r"\Big|_{\sigma^{2} = \epsilon}"
    return {
        "gamma-is-the-standard-deviation": ((
            _recovery(m.STD, STD_TEX, notation), _recovery(sym.var, latex(sym.var), notation)), {}),
        "gamma-and-beta-are-per-feature": (
            (equation(gradient_of(notation.weight), sym.derive(family).outputs()["dweight"]),), {"per": _per_affine()}),
        "the-output-variance-is-not-1": (
            (equation(sym.GroupMean(sym.xhat**2), fact, written_out), equation(at_eps, half)),
            {"half": inline(half), "tenfold": inline(tenfold)}),
        "a-bias-before-a-centering-norm-cancels": ((equation(SHIFTED, shifted, sym.xc + rest),), {}),
        "batch-norm-at-test-time": (m.running_update(average_over_samples=False), {}),
    }


def corrections(notation: m.Notation) -> list[Correction]:
    family = notation.family
    formulas = _correction_formulas(notation)
    if set(formulas) != set(prose.keys("correction")):
        raise KeyError(f"corrections of statements.toml {prose.keys('correction')} and their formulas "
                       f"{sorted(formulas)} differ")
    items = []
    for anchor in prose.keys("correction"):
        shown, slots = formulas[anchor]
        texts, record = _filled("correction", anchor, slots, family.centered, ("wrong", "title", "prose"))
        right = Statement(texts["title"], texts["prose"], tuple(shown), tuple(record.get("checks", ())))
        items.append(Correction(anchor, texts["wrong"], right, variants.matching(SCOPES[record.get("scope", "all")])))
    return items


def correction_text(c: Correction, record: Variant | None) -> str:
    return f"<a id=\"{c.anchor}\"></a>\n\n- Often written: {c.wrong}\n\n" + render(c.right, record)

