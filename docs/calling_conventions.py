"""The calling conventions of the spec: what docs/spec/calling_conventions.md and each variant
page's "Calling conventions" section say, read from the records the battery runs on.

- ``normspec.derive.abi``: aten's saved-statistics convention (``ATEN``: the signatures, the
  saved statistics and their names, ``saved_shape`` with the readable forms of ``SAVED_SHAPES``)
  and the backward from the output (``FROM_OUTPUT``);
- ``normspec.verify.implementations.abi``: the saved statistics' dtype and shape for a case;
- ``normspec.derive.contracts``: the precision contracts (``CONTRACTS``), each step's dtype by
  ``Contract.dtype`` and the forward with its rounding points by ``Contract.formula``;
- ``normspec.verify.implementations.conventions``: the declared ``parameter_dtypes``, with the
  dtype of every array of a case (``Case.dtype_of``);
- ``normspec.verify.checks.CHECKS``: the checks that need one of these conventions.

What the backward from the output loses is derived, not typed: the family's affine step solved for
xhat, and y's rounding carried through the closed forms (``normspec.derive.symbolic``). Tables
come back as (columns, rows); :mod:`pages` renders them and fills the template.
"""
from __future__ import annotations

import sympy as sp

from normspec.derive import abi, contracts, symbolic as sym, variants
from normspec.derive.dtypes import DTYPES
from normspec.derive.latex import equation, latex
from normspec.derive.variants import Variant
from normspec.docs import mathematics as m, prose, statements as st
from normspec.verify.cases.case import ARRAY_NAMES, EXTRA_VALUE_KINDS, Case
from normspec.verify.checks import CHECKS, Check
from normspec.verify.implementations import abi as aten_calls
from normspec.verify.implementations.conventions import PARAMETER_DTYPES, Conventions

PAGE = "calling_conventions"  # docs/spec/calling_conventions.md, docs/site/calling_conventions.html
# The (x, weight) dtypes the contract tables resolve the roles for: 16-bit x with float32 weights
# (the mixed case torch's layer norms take), with weights of its own dtype, and the reverse.
CONTRACT_EXAMPLES = (("bfloat16", "float32"), ("bfloat16", "bfloat16"), ("float32", "bfloat16"))
Table = tuple[tuple[str, ...], list[tuple]]


def code(text: str) -> str:
    return f"`{text}`"


def codes(names) -> str:
    return ", ".join(code(n) for n in names)


def example_case(record: Variant, dtype: str = "float64") -> Case:
    """The case of the variant's example call (``example_shape``, ``example_arguments``)."""
    shape, fields = record.example_shape, {}
    for setting in record.settings:
        if setting.argument in record.example_arguments:
            wanted = record.example_arguments[setting.argument]
            fields[setting.name] = next(v for v in setting.values(shape) if setting.to_argument(shape, v) == wanted)
    return Case(variant=record.name, shape=shape, dtype=dtype, **fields)


def example_call(record: Variant) -> str:
    return f"{record.name}({', '.join(['x', *(f'{k}={v}' for k, v in record.example_arguments.items())])})"


def saved_dtype(record: Variant, dtype: str) -> str:
    """The dtype the aten forward saves its statistics in, for x in ``dtype``."""
    return aten_calls.saved_dtype(example_case(record, dtype))


def saved_example(convention: abi.AtenConvention) -> str:
    record = variants.get(convention.variant)
    return f"{code(example_call(record))}, x.shape = {record.example_shape}: " \
           f"{aten_calls.saved_shape(convention, example_case(record))}"


def saved_names(convention: abi.AtenConvention) -> str:
    return ", ".join(code(shown) + ("" if shown == name else f" ({name})")
                     for name, shown in zip(convention.saved, convention.saved_names))


def gradients(names) -> str:
    return ", ".join(f"d{name}" for name in names)


# --- the saved statistics (aten) -------------------------------------------------------------------

def aten_table() -> Table:
    rows = [(f"[{name}]({name}.md)", code(c.forward), code(c.backward), saved_names(c),
             f"{code(c.saved_shape)}: {code(abi.SAVED_SHAPES[c.saved_shape])}", saved_example(c),
             gradients(c.gradients)) for name, c in abi.ATEN.items()]
    columns = ("variant", "forward", "backward", "saved (aten's name)", "saved_shape", "for the example",
               "output_mask: one bool per")
    return columns, rows


def aten_signatures() -> str:
    return "\n\n".join(prose.text("aten_variant", variant=name, forward=c.signature("forward"),
                                  backward=c.signature("backward")) for name, c in abi.ATEN.items())


def saved_dtype_table() -> Table:
    record = variants.get(next(iter(abi.ATEN)))
    return ("x's dtype", *DTYPES), [("saved statistics", *(saved_dtype(record, d) for d in DTYPES))]


def aten_statements() -> list[st.Statement]:
    program = {n.target: n for n in sym.CENTERED.program()}
    rstd_only = [name for name, c in abi.ATEN.items() if "mean" not in c.saved]
    first = next(iter(abi.ATEN.values()))
    return [
        st.statement("aten_saved", *(m.node_equation(program[t]) for t in (sym.mu, sym.var, sym.rstd)),
                     rstd_only=", ".join(rstd_only), rstd=st.inline(sym.rstd)),
        st.statement("aten_recompute", *(m.node_equation(program[t]) for t in (sym.xc, sym.xhat)),
                     xhat=st.inline(sym.xhat)),
        st.statement("aten_dtype"),
        st.statement("output_mask", dx=code(gradients(first.gradients[:1]))),
    ]


def variant_statements(record: Variant, anchors: dict[str, str]) -> list[st.Statement]:
    """The statements of a variant page's section: its aten convention, its backward from the
    output, and the conventions every variant has (``anchors``: slot -> anchor on the page)."""
    items = []
    convention = abi.aten(record.name)
    if convention is not None:
        items.append(st.statement(
            "variant_aten", forward=convention.signature("forward"), backward=convention.signature("backward"),
            saved=saved_names(convention), shape=code(abi.SAVED_SHAPES[convention.saved_shape]),
            example=saved_example(convention),
            xhat=st.inline(sym.xhat), gradients=gradients(convention.gradients), page=f"{PAGE}.md",
            anchor=record.name))
    backward = abi.FROM_OUTPUT.get(record.name)
    if backward is not None:
        family = m.family_of(record)
        items.append(st.statement("variant_from_output", signature=backward.signature(), page=f"{PAGE}.md",
                                  xhat=st.inline(equation(sym.xhat, reconstruction(family))),
                                  anchor=anchors["from_output"]))
    items.append(st.statement("variant_contracts", page=f"{PAGE}.md", contracts=anchors["contracts_table"],
                              mixed=anchors["parameter_dtypes_table"]))
    return items


def variant_note(record: Variant, anchors: dict[str, str]) -> str:
    """What a variant page says where aten has no convention for it."""
    if abi.aten(record.name) is not None:
        return ""
    return prose.text("no_aten", variant=record.name, page=f"{PAGE}.md", anchor=anchors["aten_table"])


# --- the backward from the output -------------------------------------------------------------------

class YRounding(sp.Function):
    """y's rounding to x's dtype, per element (docs only): the stored y minus the exact one."""

    nargs = 1

    def _latex(self, printer) -> str:
        return r"\delta_{y}"


DELTA_Y = YRounding(sym.y)  # its argument, the element field y, makes it per element in a group mean


def reconstruction(family: sym.Family) -> sp.Expr:
    """xhat from y: the family's affine step y = gamma xhat (+ beta) solved for xhat."""
    node = next(n for n in family.program() if n.target == sym.y)
    (solved,) = sp.solve(sp.Eq(sym.y, node.expr), sym.xhat)
    if sp.simplify(solved.xreplace({sym.y: node.expr}) - sym.xhat) != 0:
        raise AssertionError(f"{family.name}: reading xhat back from y does not give xhat")
    return solved


def xhat_error(family: sym.Family) -> sp.Expr:
    """What y's rounding adds to the xhat read back from y."""
    xhat = reconstruction(family)
    return sp.simplify(xhat.xreplace({sym.y: sym.y + DELTA_Y}) - xhat)


def amplified_term(family: sym.Family) -> sp.Expr:
    """The term of dx whose factor xhat carries y's rounding divided by gamma: xhat mean(h xhat)."""
    term = sym.xhat * sym.GroupMean(sym.xhat * m.H)
    if term not in sp.Add.make_args(sp.expand(m.with_h(sym.derive(family).dx) / -sym.rstd)):
        raise AssertionError(f"{family.name}: dx has no term {term}")
    return term


def from_output_formulas(family: sym.Family) -> tuple[list[str], list[str]]:
    """(xhat read back and its error; dweight and dx with what y's rounding adds to each, exactly)."""
    forms = sym.derive(family)
    error = xhat_error(family)
    shift = {sym.xhat: sym.xhat + error}
    bar = r"\Big|_{" + latex(sym.xhat) + r" \to " + latex(sym.xhat + error) + "}"
    y_bar = latex(sym.xhat) + r"\Big|_{" + latex(sym.y) + r" \to " + latex(sym.y + DELTA_Y) + "}"
    read = [equation(sym.xhat, reconstruction(family)), equation(y_bar + " - " + latex(sym.xhat), error)]
    weight = st.gradient_of(sym.gamma)
    dweight = sym.AffineSum(forms.dgamma)
    added_weight = sym.AffineSum(m.tidy(forms.dgamma.xreplace(shift) - forms.dgamma))
    added_dx = m.tidy(sym.expand_means(sp.expand(forms.dx.xreplace(shift) - forms.dx)))
    carried = [equation(weight, dweight), equation(weight + bar + " - " + weight, added_weight),
               equation("dx", m.with_h(forms.dx)), equation("dx" + bar + " - dx", m.with_h(added_dx))]
    return read, carried


def from_output_blocks() -> str:
    parts = []
    for name, backward in abi.FROM_OUTPUT.items():
        family = m.family_of(variants.get(name))
        read, carried = from_output_formulas(family)
        common = {"xhat": st.inline(sym.xhat), "gamma": st.inline(sym.gamma)}
        parts += [prose.text("from_output_variant", variant=name, signature=backward.signature()),
                  st.render(st.statement("from_output", *read, delta=st.inline(DELTA_Y), **common), None),
                  st.render(st.statement(
                      "from_output_gradients", *carried, dweight=st.inline(st.gradient_of(sym.gamma)),
                      dx=st.inline("dx"), g=st.inline(sym.g), term=st.inline(amplified_term(family)),
                      h=st.inline(equation(m.H, sym.gamma * sym.g)), **common), None)]
    return "\n\n".join(parts)


def from_output_limit() -> str:
    name = next(n for n, c in CHECKS.items() if c.needs_from_output)
    kinds = CHECKS[name].case_options["value_kinds"]
    return prose.text("from_output_limit", check=name, kinds=codes(kinds),
                      tiny=codes(k for k in kinds if k in EXTRA_VALUE_KINDS))


# --- the precision contracts ----------------------------------------------------------------------

def pair(input_dtype: str, weight_dtype: str) -> str:
    return prose.text("dtype_pair", input=input_dtype, weight=weight_dtype)


def contracts_table() -> Table:
    rows = [(code(c.name), c.summary, c.source, code(c.formula())) for c in contracts.CONTRACTS.values()]
    return ("contract", "where it rounds", "who rounds this way", "the forward, fl_D rounding to D"), rows


def roles_table() -> Table:
    rows = [(code(role), *(contracts.resolve(role, input_dtype=x, weight_dtype=w) for x, w in CONTRACT_EXAMPLES))
            for role in contracts.ROLES]
    return ("role", *(pair(x, w) for x, w in CONTRACT_EXAMPLES)), rows


def step_tables() -> list[tuple[str, Table]]:
    """Per example (x, weight) dtypes: each contract's dtype per step, and the output's (x's)."""
    found = []
    for x, w in CONTRACT_EXAMPLES:
        rows = [(code(c.name), *(c.dtype(step, input_dtype=x, weight_dtype=w) for step in contracts.STEPS), x)
                for c in contracts.CONTRACTS.values()]
        columns = ("contract", *contracts.STEPS, prose.text("output_step"))
        found.append((prose.text("contract_pair", pair=pair(x, w)), (columns, rows)))
    return found


def contract_statement() -> st.Statement:
    name = next(n for n, c in CHECKS.items() if c.needs_contract)
    return st.statement("contract_check", check=name, forward=CHECKS["forward"].description)


# --- mixed dtypes: parameters beside x ---------------------------------------------------------------

def own(dtype: str | None) -> str:
    return prose.text("own_dtype") if dtype is None else dtype


def parameter_dtypes_table() -> Table:
    default = Conventions().parameter_dtypes
    rows = [(code(value) + (prose.text("default") if value == default else ""),
             *(", ".join(own(p) for p in Conventions(parameter_dtypes=value).parameter_dtypes_of(d)) for d in DTYPES))
            for value in PARAMETER_DTYPES]
    return (code("parameter_dtypes"), *(prose.text("x_in", dtype=d) for d in DTYPES)), rows


def mixed_pairs() -> dict[tuple[str, str], list[str]]:
    """(x's dtype, the parameters') -> the parameter_dtypes values that draw it, for every mixed pair."""
    found: dict[tuple[str, str], list[str]] = {}
    for value in PARAMETER_DTYPES:
        for d in DTYPES:
            for p in Conventions(parameter_dtypes=value).parameter_dtypes_of(d):
                if p is not None and p != d:
                    found.setdefault((d, p), []).append(value)
    return found


def result_dtypes_table() -> Table:
    """The dtype of every array of a mixed case: the arguments' by ``Case.dtype_of``; an output is
    checked like x, a gradient like its argument."""
    pairs = mixed_pairs()
    cases = [Case(variant=variants.NAMES[0], shape=(2, 2), dtype=d, parameter_dtype=p) for d, p in pairs]
    outputs = list(dict.fromkeys(o for v in variants.VARIANTS.values() for o in v.outputs))
    grads = list(dict.fromkeys(g for v in variants.VARIANTS.values() for g in v.gradients))
    kind = {name: prose.text("kind_argument" if name in variants.ARRAY_ARGUMENTS else "kind_upstream")
            for name in ARRAY_NAMES}
    rows = [(prose.text("declared_by"), "", *(codes(values) for values in pairs.values()))]
    rows += [(code(n), kind[n], *(c.dtype_of(n) for c in cases)) for n in ARRAY_NAMES]
    rows += [(code(n), prose.text("kind_output"), *(c.dtype_of("x") for c in cases)) for n in outputs]
    rows += [(code(f"d{n}"), prose.text("kind_gradient"), *(c.dtype_of(n) for c in cases)) for n in grads]
    return ("array", "kind", *(prose.text("mixed_pair", input=d, parameters=p) for d, p in pairs)), rows


def parameter_statements() -> list[st.Statement]:
    return [st.statement("parameter_dtypes", default=code(Conventions().parameter_dtypes),
                         any=code(PARAMETER_DTYPES[-1])),
            st.statement("result_dtypes")]


# --- the checks ---------------------------------------------------------------------------------------

def runs(check: Check) -> str:
    """When a check of a calling convention runs, or "" for the others."""
    if check.needs_abi:
        return prose.text("runs_abi", abi=check.needs_abi)
    if check.needs_from_output:
        return prose.text("runs_from_output")
    return prose.text("runs_contract", names=codes(contracts.NAMES)) if check.needs_contract else ""


def checks_table() -> Table:
    rows = [(code(name), runs(c), c.description, ", ".join(c.variants), ", ".join(c.dtypes))
            for name, c in CHECKS.items() if runs(c)]
    return ("check", "runs", "what it checks", "variants", "dtypes"), rows


def index_slots() -> dict[str, str]:
    """What the index says of this page."""
    return {"aten_variants": ", ".join(f"[{v}]({v}.md)" for v in abi.ATEN),
            "from_output_variants": ", ".join(f"[{v}]({v}.md)" for v in abi.FROM_OUTPUT),
            "contract_names": codes(contracts.NAMES), "conventions_page": f"{PAGE}.md"}

