"""The Markdown pages of the spec: docs/spec/index.md, one page per variant of the registry, and
docs/spec/calling_conventions.md.

Each page is a template (``templates/index.md``, ``templates/variant.md``,
``templates/calling_conventions.md``) whose slots are filled with the statements
(:mod:`statements`), tables read off the variant records (``normspec.derive.variants``), the
calling conventions and precision contracts (:mod:`calling_conventions`), the checks
(``normspec.verify.checks.CHECKS``), torch's known deviations
(``normspec.verify.running.deviations.DEVIATIONS``) and, when it exists, the battery's report
(:mod:`battery_data`).
"""
from __future__ import annotations

import math
import re

import sympy as sp

from normspec.derive import abi, codegen, proofs, symbolic as sym, variants
from normspec.derive.dtypes import DTYPES, machine_eps
from normspec.derive.latex import equation
from normspec.derive.outputs import MARKER
from normspec.derive.variants import Variant
from normspec.docs import battery_data, bugs, calling_conventions as cc, figures, mathematics as m, prose
from normspec.docs import statements as st
from normspec.verify.checks import CHECKS
from normspec.verify.implementations.builtin import BUILTIN
from normspec.verify.running.battery import EXPECTED, FAILED, PASSED, SKIPPED
from normspec.verify.running.deviations import DEVIATIONS

REGENERATE_COMMAND = "normspec docs"
STATUSES = (PASSED, FAILED, EXPECTED, SKIPPED)  # the columns of the battery's tables


def header(title: str) -> str:
    return prose.fill(prose.template("header"), marker=MARKER, command=REGENERATE_COMMAND, title=title,
                      hash=codegen.derivation_hash())


def nav(current: str) -> str:
    links = [("index", "index.md")] + [(v, f"{v}.md") for v in (*variants.NAMES, cc.PAGE)]
    return " · ".join(f"**{name}**" if name == current else f"[{name}]({target})" for name, target in links)


def proof_note() -> str:
    return prose.text("proof_note", max_n=proofs.MAX_N)


def anchor(heading: str) -> str:
    """The id Python-Markdown's toc and GitHub give a heading (for the headings used here)."""
    slug = re.sub(r"[^\w\s-]", "", heading.lower()).strip()
    return re.sub(r"[\s]+", "-", slug)


def headings(template: str) -> dict[str, str]:
    """slot -> the heading of the ``## `` section of ``template`` it stands in."""
    found, current = {}, ""
    for line in template.splitlines():
        if line.startswith("## "):
            current = line[3:].strip()
        for slot in re.findall(r"\$(\w+)", line):
            found.setdefault(slot, current)
    return found


def _joined(*parts: str) -> str:
    return "\n\n".join(p for p in parts if p)


def table(columns: tuple[str, ...], rows: list[tuple]) -> str:
    """A Markdown table."""
    lines = [f"| {' | '.join(columns)} |", "|" + "---|" * len(columns)]
    return "\n".join(lines + [f"| {' | '.join(str(cell) for cell in row)} |" for row in rows])


def conventions_anchors() -> dict[str, str]:
    """slot of templates/calling_conventions.md -> the anchor of the section it stands in."""
    return {slot: anchor(heading) for slot, heading in headings(prose.template(cc.PAGE)).items()}


# --- a variant's page ---------------------------------------------------------------------------

def parameter_names(record: Variant) -> tuple[str, ...]:
    """What the page calls the affine parameters: gamma and beta without an offset, else the signature's names."""
    names = ("gamma", "beta")
    if m.notation_of(record).has_offset:
        names = (record.parameter("weight"), record.parameter("bias"))
    return names if record.has_bias else names[:1]


def shapes_table(record: Variant) -> str:
    layout = record.example_layout()
    call = ", ".join(["x"] + [f"{k}={val}" for k, val in record.example_arguments.items()])
    groups = math.prod(layout.work_shape) // layout.group_size
    names = parameter_names(record)
    params, grads = " and ".join(names), ", ".join(f"d {name}" for name in names)
    rows = [
        ("input", record.input_axes, f"x.shape = {record.example_shape}"),
        ("working shape (x is reshaped to it)", " x ".join(record.work_axes), str(layout.work_shape)),
        ("group: the elements that share statistics", record.axes(layout.group_dims) + f" ({record.group})",
         f"N = {layout.group_size}, {groups} groups"),
        ("statistics", "one mean and variance per group" if record.centered else "one mean square per group",
         f"shape {layout.stats_shape} (working shape)"),
        (params, f"one per {record.affine}", f"shape {layout.weight_shape}"),
        (grads, "summed over the non-affine axes: " + record.axes(layout.affine_dims), f"shape {layout.weight_shape}"),
    ]
    return (f"| | axes | example: `{record.name}({call})` |\n|---|---|---|\n"
            + "".join(f"| {a} | {b} | {c} |\n" for a, b, c in rows))


def checks_table(record: Variant, sections: dict[str, list[st.Statement]]) -> str:
    """The checks that run on this variant, each linked to the headings of the statements it covers."""
    covered: dict[str, list[str]] = {}
    for heading, items in sections.items():
        for s in items:
            for name in s.checks:
                if record.name in CHECKS[name].variants and heading not in covered.setdefault(name, []):
                    covered[name].append(heading)
    rows = []
    for name, check in CHECKS.items():
        if record.name not in check.variants:
            continue
        where = ", ".join(f"[{h}](#{anchor(h)})" for h in covered.get(name, [])) or "—"
        extra = f"; needs {', '.join(check.needs)}" if check.needs else ""
        rows.append((f"`{name}`", check.kind, check.description + extra, ", ".join(check.dtypes), where))
    return table(("check", "kind", "what it checks", "dtypes", "statements on this page"), rows)


def deviations_section(record: Variant) -> str:
    items = []
    for d in DEVIATIONS:
        mine = [i.split("::") for i in d.check_ids if i.startswith(f"{record.name}::")]
        mine = [x for x in mine if x[2] not in CHECKS or record.name in CHECKS[x[2]].variants]
        if not mine:
            continue
        dtypes = sorted({x[1] for x in mine}, key=DTYPES.index)
        checks = sorted({x[2] for x in mine})
        items.append(f"- **{d.name}** ({d.implementation}; {', '.join(dtypes)}; checks "
                     f"{', '.join(f'`{c}`' for c in checks)}): {d.explanation}.")
    return "\n".join(items) if items else prose.text("no_deviations", variant=record.name)


def _fmt(value: float | None, spec: str) -> str:
    return "—" if value is None else format(value, spec)


def battery_variant_table(record: Variant, records: list[dict] | None) -> str:
    if records is None:
        return ""
    summary = {k: c for k, c in battery_data.battery_summary(records).items() if k[1] == record.name}
    if not summary:
        return ""
    rows = [(impl, dtype, _fmt(cell["worst_ratio"], ".2g"), _fmt(cell["max_abs"], ".2e"),
             *(cell["counts"].get(status, 0) for status in STATUSES))
            for (impl, _, dtype), cell in summary.items()]
    columns = ("implementation", "dtype", "worst error / tolerance", "max abs error", *STATUSES)
    return prose.text("battery_table") + "\n\n" + table(columns, rows)


def jacobian_note(record: Variant, family) -> str:
    """What the Jacobian section adds for eval mode (given statistics) and for the fused add."""
    given = prose.text("jacobian_given", mode=record.running.mode_argument) if record.running else ""
    return given + (prose.text("jacobian_residual") if family.residual else "")


def variant_page(record: Variant, records: list[dict] | None) -> str:
    family = m.family_of(record)
    notation = m.notation_of(record)
    layout = record.example_layout()
    here = [c for c in st.corrections(notation) if record.name in c.variants]
    running, closing = st.running_statements(record)
    # slot -> the statements it shows (the checks table links each check to their headings)
    shown = {
        "shapes": st.shapes_statements(record),
        "statistics": st.statistics_statements(family),
        "forward": st.forward_statements(notation),
        "jacobian": st.jacobian_statements(family),
        "backward": st.backward_statements(record, notation, record.axes(layout.affine_dims)),
        "invariants": st.invariant_statements(record, notation),
        "running": running,
        "corrections": [c.right for c in here],
        "bugs": bugs.bug_statements(record, notation),
        "calling_conventions": cc.variant_statements(record, conventions_anchors()),
    }
    where = headings(prose.template("variant"))
    sections: dict[str, list[st.Statement]] = {}  # heading -> statements, in the page's order
    for slot, heading in where.items():
        sections.setdefault(heading, []).extend(shown.get(slot, []))
    given = {} if record.running is None else {
        "family": m.family_of(record, batch_statistics=False).name, "mode": record.running.mode_argument}
    text = {slot: _joined(*(st.render(s, record) for s in items)) for slot, items in shown.items()}
    text["running"] = _joined(text["running"], closing)
    text["corrections"] = _joined(*(st.correction_text(c, record) for c in here))
    text["bugs"] = (_joined(prose.text("bugs"), text["bugs"]) if text["bugs"]
                    else prose.text("no_bugs", variant=record.name))
    text["calling_conventions"] = _joined(cc.variant_note(record, conventions_anchors()), text["calling_conventions"])
    return prose.page(
        "variant", header=header(record.name), nav=nav(record.name), variant=record.name, group=record.group,
        affine=record.affine, family=family.name, figure_family=m.base_family(family).name,
        given_family=prose.text("given_family", **given) if given else "",
        shapes_table=shapes_table(record), group_sentence=record.group[0].upper() + record.group[1:],
        jacobian_note=jacobian_note(record, family),
        jacobian_n=figures.JACOBIAN_N, proof_note=proof_note(), checks_table=checks_table(record, sections),
        battery_table=battery_variant_table(record, records), deviations=deviations_section(record),
        conventions_page=f"{cc.PAGE}.md", **text)


# --- the index ----------------------------------------------------------------------------------

def _offset_cell(v: Variant) -> str:
    if v.fixed_weight_offset is not None:
        return f"fixed: {v.fixed_weight_offset:g} + {v.parameter('weight')}"
    return f"option `{variants.WEIGHT_OFFSET.name}`" if v.option(variants.WEIGHT_OFFSET.name) else "no"


def variants_table() -> str:
    rows = [(f"[{name}]({name}.md)", " x ".join(v.work_axes), v.group, v.affine, "yes" if v.has_bias else "no",
             "yes" if v.centered else "no", _offset_cell(v), "yes" if v.residual else "no", v.family())
            for name, v in variants.VARIANTS.items()]
    columns = ("variant", "input", "group (statistics shared over)", "gamma, beta per", "bias", "centering",
               "weight offset", "residual add", "family")
    return table(columns, rows)


def modulated(v: Variant) -> bool:
    return v.fixed_weight_offset is not None


def modulated_gamma() -> sp.Expr:
    """gamma as the modulated variants write it (1 + scale)."""
    return m.notation_of(variants.get(variants.matching(modulated)[0])).multiplier


def _listed(predicate) -> str:
    return ", ".join(f"[{name}]({name}.md)" for name in variants.matching(predicate))


def bugs_table() -> str:
    rows = [(b.title, b.issue, ", ".join(f"[{v}]({v}.md#typical-bugs)" for v in b.variants)) for b in bugs.bugs()]
    return table(("bug class", "reported in", "variants"), rows)


def conventions_table() -> str:
    conventions = prose.conventions()
    columns, rows = conventions["columns"], conventions["rows"]
    cells = tuple(row[key] for row in rows for key in columns)
    filled = iter(prose.fill_all(cells, {
        "variance": st.inline(equation(sym.var, sym.GroupMean(sym.xc**2))), "momentum": st.inline(m.MOMENTUM),
        "eps_float64": f"{machine_eps('float64'):.4g}", "eps_float32": f"{machine_eps('float32'):.4g}",
        "rstd": st.inline(equation(sym.rstd, m.rstd_value()))}))
    return table(tuple(columns.values()), [tuple(next(filled) for _ in columns) for _ in rows])


def identity_checks() -> str:
    return "\n".join(f"- {c.description} (`{name}`, for {', '.join(c.variants)})"
                     for name, c in CHECKS.items() if c.kind == "identity")


def verification_section(records: list[dict] | None) -> str:
    if records is None:
        return prose.text("no_verification", implementations=", ".join(BUILTIN[:-1]) + " and " + BUILTIN[-1])
    rows = [(impl, *(c.get(status, 0) for status in STATUSES)) for impl, c in battery_data.status_counts(records).items()]
    return prose.text("verification") + "\n\n" + table(("implementation", *STATUSES), rows)


def index_page(records: list[dict] | None) -> str:
    program = m.Notation(sym.CENTERED, sym.c, sym.w, sym.beta).program()
    k = sp.Symbol("k", integer=True)
    q = sp.IndexedBase("q")
    rms_lhs = r"\hat{x}_{\text{centered}}\Big|_{\operatorname{mean}_{\text{group}}\left(x\right) = 0}"
    given = variants.matching(lambda v: v.running is not None and v.running.eval_drawn)
    return prose.page(
        "index", header=header("normspec: the normalization spec"), nav=nav("index"),
        mean_definition=st.display(equation(sym.GroupMean(sp.Symbol("q")), sp.Sum(q[k], (k, 1, m.N)) / m.N)),
        statistics=_joined(*(st.display(m.node_equation(n)) for n in program if n.reduced or n.target == sym.rstd)),
        forward=_joined(*(st.display(m.node_equation(n)) for n in program
                          if not n.reduced and n.target != sym.rstd)),
        mu_zero=st.inline(equation(sym.mu, 0)), given_variants=" and ".join(given), mu=st.inline(sym.mu),
        var=st.inline(sym.var), proof_note=proof_note(), variants_table=variants_table(),
        variant_links=", ".join(f"[{v}]({v}.md)" for v in variants.NAMES), identity_checks=identity_checks(),
        rms_identity=st.display(equation(rms_lhs, m.rms_is_centered_at_zero_mean(), r"\hat{x}_{\text{rms}}")),
        conventions_table=conventions_table(), family=sym.CENTERED.name, bugs_table=bugs_table(),
        gamma=st.inline(equation(sym.gamma, m.gamma_value())), c=st.inline(sym.c),
        c_zero=st.inline(equation(sym.c, 0)),
        s=st.inline(equation(sym.s, sym.x + sym.residual)), g_s=st.inline(sym.g_s),
        offset_variants=_listed(lambda v: v.option(variants.WEIGHT_OFFSET.name) is not None),
        residual_variants=_listed(lambda v: v.residual), modulated_variants=_listed(modulated),
        modulated=st.inline(equation(sym.gamma, modulated_gamma())),
        corrections=_joined(*(st.correction_text(c, None) for c in st.corrections(m.notation_of(None, sym.CENTERED)))),
        verification=verification_section(records), hash=codegen.derivation_hash(), **cc.index_slots())


# --- the calling conventions --------------------------------------------------------------------

def calling_conventions_page() -> str:
    """docs/spec/calling_conventions.md: the aten convention, the backward from the output, the
    precision contracts and the parameter dtypes, from their records (:mod:`calling_conventions`)."""
    statements = cc.aten_statements()
    dtype, mask = statements[-2:]
    parameters, results = cc.parameter_statements()
    steps = _joined(*(_joined(lead, table(*t)) for lead, t in cc.step_tables()))
    return prose.page(
        cc.PAGE, header=header("normspec: calling conventions"), nav=nav(cc.PAGE),
        no_aten_variants=", ".join(f"[{v}]({v}.md)" for v in variants.NAMES if v not in abi.ATEN),
        aten_statements=_joined(*(st.render(s, None) for s in statements[:-2])), aten_table=table(*cc.aten_table()),
        dtype_statement=st.render(dtype, None), saved_dtype_table=table(*cc.saved_dtype_table()),
        mask_statement=st.render(mask, None), aten_signatures=cc.aten_signatures(),
        from_output=cc.from_output_blocks(), from_output_limit=cc.from_output_limit(),
        contracts_table=table(*cc.contracts_table()), roles_table=table(*cc.roles_table()), step_tables=steps,
        contract_statement=st.render(cc.contract_statement(), None),
        parameter_statement=st.render(parameters, None), parameter_dtypes_table=table(*cc.parameter_dtypes_table()),
        result_statement=st.render(results, None), result_dtypes_table=table(*cc.result_dtypes_table()),
        checks_table=table(*cc.checks_table()))
