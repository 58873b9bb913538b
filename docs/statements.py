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
# Which variants a correction's `scope` (statements.toml) puts it on.
SCOPES = {"all": lambda v: True, "running": lambda v: v.running is not None}
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


def forward_statements(family: sym.Family) -> list[Statement]:
    nodes = [n for n in family.program() if not n.reduced and n.target != sym.rstd]
    return [statement("forward", *(m.node_equation(n) for n in nodes))]


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


def backward_statements(family: sym.Family, affine_axes: str) -> list[Statement]:
    forms = sym.derive(family)
    outputs = forms.outputs()
    items = [
        statement("dx", equation("dx", m.with_h(forms.dx)), dx=inline("dx"),
                  h=inline(equation(m.H, sym.gamma * sym.g))),
        statement("dx_split", equation(r"dx_{\text{direct}}", m.with_h(forms.dx_direct)),
                  equation(r"dx_{\text{batch}}", m.with_h(forms.dx_through_statistics)), dx=inline("dx")),
        statement("dgamma", equation(r"d\gamma", outputs["dweight"]), dgamma=inline(r"d\gamma"), axes=affine_axes),
    ]
    if "dbias" in outputs:
        items.append(statement("dbeta", equation(r"d\beta", outputs["dbias"]), dbeta=inline(r"d\beta")))
    return items


def _given(gamma: str, centered: bool) -> str:
    """The evaluation bar of y at the given gamma (and beta = mu when centering)."""
    return r"y\Big|_{\gamma = " + gamma + (r",\ \beta = \mu}" if centered else "}")


STD_TEX = r"\sqrt{\sigma^{2} + \epsilon}"
SHIFTED = r"x_{c}\Big|_{x \to x + b}"


def invariant_statements(family: sym.Family) -> list[Statement]:
    centered = family.centered
    fact, written_out = m.second_moment(family)
    items = []
    if centered:
        items.append(statement("mean_zero", equation(sym.GroupMean(sym.xhat), m.mean_zero(family))))
    items.append(statement("second_moment", equation(sym.GroupMean(sym.xhat**2), fact, written_out),
                           centered=centered, var=inline(sym.var)))
    items.append(statement("identity_recovery",
                           equation(_given(STD_TEX, centered) + " - x", m.identity_recovery(family, m.STD)),
                           centered=centered))
    shifted, rest = m.shifted_center(family)
    if centered:
        items.append(statement("shift_invariance", equation(SHIFTED, shifted, sym.xc), b=inline(m.SHIFT)))
    else:
        items.append(statement("no_shift_invariance", equation(SHIFTED, shifted, sym.xc + rest), b=inline(m.SHIFT)))
    if not m.scale_invariant(family):
        raise AssertionError(f"{family.name}: scale invariance does not hold")
    items.append(statement("scale_invariance", equation(r"\hat{x}\Big|_{x \to a x,\ \epsilon \to a^{2} \epsilon}",
                                                        sym.xhat), a=inline(m.SCALE)))
    sum_dx, sum_dx_xhat = m.gradient_sums(family)
    items.append(statement(
        "gradient_sums", equation(GroupSum(sp.Symbol("dx")), sum_dx),
        equation(GroupSum(sp.Symbol("dx") * sym.xhat), sum_dx_xhat,
                 sum_dx_xhat.subs(sym.rstd**3, sym.rstd / (sym.var + sym.eps))), centered=centered))
    if centered:
        y, dx = m.constant_group(family)
        items.append(statement("constant_group", equation(r"y\Big|_{\sigma^{2} = 0}", y),
                               equation(r"dx\Big|_{\sigma^{2} = 0}", dx), var_zero=inline(equation(sym.var, 0)),
                               xc_zero=inline(equation(sym.xc, 0))))
    return items


def given_statistics_statements(record: Variant) -> list[Statement]:
    """Normalizing with given statistics (the record's family without batch statistics): an affine map of x."""
    family = m.family_of(record, batch_statistics=False)
    forms = sym.derive(family)
    slope, offset = m.affine_map(family)
    return [
        statement("given_statistics", *(m.node_equation(n) for n in family.program()),
                  equation(sym.y, sp.Symbol("A") * sym.x + sp.Symbol("B")),
                  equation("A", slope) + r",\quad " + equation("B", offset), mu=inline(sym.mu), var=inline(sym.var)),
        statement("given_statistics_gradient", equation("dx", m.with_h(forms.dx)),
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
    if related:
        items.append(statement("identities", checks=related, any_variant=True,
                               descriptions="; ".join(CHECKS[name].description for name in related)))
    return items


# --- corrections -----------------------------------------------------------------------------------

@dataclass(frozen=True)
class Correction:
    anchor: str
    wrong: str  # the statement as course notes put it
    right: Statement
    variants: tuple[str, ...]


def _per_affine() -> str:
    """Where gamma and beta live, with the variants of each: 'per channel (batch_norm, ...) or ...'."""
    by_affine: dict[str, list[str]] = {}
    for v in variants.VARIANTS.values():
        by_affine.setdefault(v.affine, []).append(v.name)
    return " or ".join(f"per {affine} ({', '.join(names)})" for affine, names in by_affine.items())


def _correction_formulas(family: sym.Family) -> dict[str, tuple[tuple[str, ...], dict]]:
    """anchor -> (the formulas, the slots) of each correction of statements.toml."""
    centered = family.centered
    fact, written_out = m.second_moment(family)
    half, tenfold = m.second_moment_at(family, 1), m.second_moment_at(family, 10)
    shifted, rest = m.shifted_center(family)
    at_eps = latex(sym.GroupMean(sym.xhat**2)) + r"\Big|_{\sigma^{2} = \epsilon}"
    return {
        "gamma-is-the-standard-deviation": ((
            equation(_given(STD_TEX, centered) + " - x", m.identity_recovery(family, m.STD)),
            equation(_given(r"\sigma^{2}", centered) + " - x", m.identity_recovery(family, sym.var))), {}),
        "gamma-and-beta-are-per-feature": (
            (equation(r"d\gamma", sym.derive(family).outputs()["dweight"]),), {"per": _per_affine()}),
        "the-output-variance-is-not-1": (
            (equation(sym.GroupMean(sym.xhat**2), fact, written_out), equation(at_eps, half)),
            {"half": inline(half), "tenfold": inline(tenfold)}),
        "a-bias-before-a-centering-norm-cancels": ((equation(SHIFTED, shifted, sym.xc + rest),), {}),
        "batch-norm-at-test-time": (m.running_update(average_over_samples=False), {}),
    }


def corrections(family: sym.Family) -> list[Correction]:
    formulas = _correction_formulas(family)
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
