"""Code generation: the derived closed forms → reference/_generated/{numpy,torch}_kernels.py.

Each family of ``derive.symbolic`` becomes three functions per dialect:

- ``<family>_forward(x, [mean, var,] weight, [bias,] eps, [group_dims])``, printed from
  the forward program, returning ``y``, the statistics it computed and ``rstd`` (torch:
  and ``xhat``, which its autograd backward saves instead of recomputing it);
- ``<family>_backward(grad_out, xhat, rstd, weight, [group_dims,] affine_dims)``,
  printed from the derived closed forms, returning ``dx, dweight[, dbias]``;
- ``<family>_vjp(grad_out, x, [mean, var,] weight, eps, [group_dims,] affine_dims)``:
  the forward program up to ``xhat``, then the same closed forms; the pure
  ``*_backward`` functions and torch's double backward (which differentiates it) use it.

Inputs are already reshaped by the hand-written glue (``reference``): the group is
``group_dims``, parameter gradients are summed over ``affine_dims`` (``normspec.derive.layouts``),
and every array is in one compute dtype.

Bodies are written by ``printers.print_statements``: per-element results finish in
place, and ``_forward`` and ``_backward`` also write into arrays they created and no
longer read (``reuse``); torch runs those two only with grad mode off (inside its
``autograd.Function``). ``_vjp`` is differentiated by torch's double backward, so in
the torch dialect it does not reuse arrays.

Files are written only when their content changes; ``check`` reports stale files.
Output is byte-identical across runs and ``PYTHONHASHSEED`` values.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import sympy as sp

from normspec.derive import printers, symbolic as sym

ROOT = Path(__file__).resolve().parent.parent
GENERATED_DIR = ROOT / "reference" / "_generated"
# The derivation's inputs: a change to any of them changes the recorded hash.
DERIVATION_SOURCES = ("derive/symbolic.py", "derive/printers.py", "derive/codegen.py")
REGENERATE_COMMAND = "normspec derive"


def derivation_hash() -> str:
    """sha256 over the derivation's source files and the SymPy version (first 16 hex digits)."""
    digest = hashlib.sha256(f"sympy {sp.__version__}\n".encode())
    for relative in DERIVATION_SOURCES:
        digest.update(relative.encode() + b"\n" + (ROOT / relative).read_bytes())
    return digest.hexdigest()[:16]


def _names(symbols) -> list[str]:
    return [printers.CODE_NAMES[s] for s in symbols]


def _plain(expr: sp.Expr) -> str:
    """The formula for a docstring, with code names (mean(.) for GroupMean, sum(.) for AffineSum)."""
    text = sp.sstr(expr.xreplace({s: sp.Symbol(n) for s, n in printers.CODE_NAMES.items()}), order="none")
    return text.replace("GroupMean", "mean").replace("AffineSum", "sum")


def _forward_returns(family: sym.Family, dialect: printers.Dialect) -> list[str]:
    """y, the statistics computed, rstd; and xhat where autograd saves it for the backward."""
    computed_stats = [n.target for n in family.program() if n.reduced] + [sym.rstd]
    return _names([sym.y, *computed_stats, *([sym.xhat] if dialect.recorded else [])])


def _program_statements(family: sym.Family, *, upto_xhat: bool = False) -> list[tuple[str, sp.Expr]]:
    """The forward program as statements (a reduced node's value is its GroupMean)."""
    nodes = [n for n in family.program() if not (upto_xhat and n.target == sym.y)]
    return [(printers.CODE_NAMES[n.target], sym.GroupMean(n.expr) if n.reduced else n.expr) for n in nodes]


def _forward_source(family: sym.Family, dialect: printers.Dialect) -> str:
    args = _names(family.inputs()) + (["group_dims"] if family.batch_statistics else [])
    returns = _forward_returns(family, dialect)
    doc = "Forward of the {name} family: returns {returns}.".format(name=family.name, returns=", ".join(returns))
    return (
        f"def {family.name}_forward({', '.join(args)}):\n"
        f'    """{doc}"""\n'
        + printers.print_statements(_program_statements(family), dialect, returns=tuple(returns), reuse=True)
        + f"    return {', '.join(returns)}\n"
    )


# What the closed forms may read besides grad_out and weight: the saved normalized input
# and the group's rstd. Anything else in a derived form is a codegen error, not an argument.
_SAVED = (sym.xhat, sym.rstd)


def _gradient_args(family: sym.Family) -> list[str]:
    return (["group_dims"] if family.batch_statistics else []) + ["affine_dims"]


def _backward_doc(family: sym.Family, forms: sym.ClosedForms, first_line: str) -> str:
    doc_lines = [f"{name} = {_plain(expr)}" for name, expr in forms.outputs().items()]
    doc_lines.append(f"(dx = direct {_plain(forms.dx_direct)} + through the statistics "
                     f"{_plain(forms.dx_through_statistics)})")
    return "\n".join([first_line, "", *(f"    {line}" for line in doc_lines)])


def _gradient_statements(outputs: dict[str, sp.Expr]) -> list[tuple[str, sp.Expr]]:
    """The closed forms as statements, dx last: the parameter gradients only reduce, so
    the per-element dx may then take over an array only it still reads (xhat)."""
    statements = printers.straight_line(outputs)
    return [s for s in statements if s[0] != "dx"] + [s for s in statements if s[0] == "dx"]


def _backward_source(family: sym.Family, dialect: printers.Dialect) -> str:
    """The closed forms from the forward's saved xhat and rstd (no recomputation)."""
    forms = sym.derive(family)
    outputs = forms.outputs()
    used = set().union(*(expr.free_symbols for expr in outputs.values()))
    unexpected = used - {sym.g, sym.gamma, *_SAVED}
    if unexpected:
        raise printers.UnsupportedNode(f"{family.name} closed forms read {sorted(map(str, unexpected))}, "
                                       f"expected only grad_out, weight, xhat and rstd")
    args = ["grad_out", *_names(_SAVED), "weight", *_gradient_args(family)]
    doc = _backward_doc(family, forms, f"Backward of the {family.name} family, derived for a general group "
                                       f"size, from the forward's xhat and rstd:")
    return (
        f"def {family.name}_backward({', '.join(args)}):\n"
        f'    """{doc}\n    """\n'
        + printers.print_statements(_gradient_statements(outputs), dialect, returns=tuple(outputs), reuse=True)
        + f"    return {', '.join(outputs)}\n"
    )


def _vjp_source(family: sym.Family, dialect: printers.Dialect) -> str:
    """The forward program up to xhat (statistics recomputed from x), then the closed forms.

    Differentiable in a dialect whose library records operations (torch): it is what a
    double backward differentiates, so it never takes over an array in place.
    """
    forms = sym.derive(family)
    outputs = forms.outputs()
    given = _names(family.inputs()[1:-1])  # [mean, var,] weight[, bias]
    args = ["grad_out", "x", *[n for n in given if n != "bias"], "eps", *_gradient_args(family)]
    doc = (f"dx, dweight{', dbias' if 'dbias' in outputs else ''} of the {family.name} family from x "
           f"(the statistics recomputed as in {family.name}_forward), by the closed forms of "
           f"{family.name}_backward.")
    statements = _program_statements(family, upto_xhat=True) + _gradient_statements(outputs)
    return (
        f"def {family.name}_vjp({', '.join(args)}):\n"
        f'    """{doc}"""\n'
        + printers.print_statements(statements, dialect, returns=tuple(outputs), reuse=not dialect.recorded)
        + f"    return {', '.join(outputs)}\n"
    )


def module_source(dialect: printers.Dialect) -> str:
    header = (
        f"# @generated by derive/codegen.py from the SymPy derivation in derive/symbolic.py; do not edit.\n"
        f"# Regenerate with: {REGENERATE_COMMAND}\n"
        f"# derivation-hash: {derivation_hash()}\n"
        f'"""{dialect.module} kernels of the normalize families, printed from the derivation.\n\n'
        f"Inputs are reshaped by reference (see normspec.derive.layouts.Layout): the group is group_dims,\n"
        f"parameter gradients are summed over affine_dims. In the docstrings mean(.) is the\n"
        f'mean over the group and sum(.) the sum over affine_dims.\n"""\n'
        + "".join(f"import {module}\n" for module in (*dialect.imports, dialect.module))
    )
    sources = (_forward_source, _backward_source, _vjp_source)
    bodies = [dialect.runtime.lstrip("\n")] if dialect.runtime else []
    bodies += [src(family, dialect) for family in sym.FAMILIES for src in sources]
    return header + "".join("\n\n" + body for body in bodies) + "\n\n" + _returns_table(dialect)


def _returns_table(dialect: printers.Dialect) -> str:
    """RETURNS: the names of each kernel's results, so the glue can call kernels generically."""
    rows = []
    for family in sym.FAMILIES:
        rows.append((f"{family.name}_forward", _forward_returns(family, dialect)))
        rows.append((f"{family.name}_backward", list(sym.derive(family).outputs())))
        rows.append((f"{family.name}_vjp", list(sym.derive(family).outputs())))
    body = "".join(f"    {name!r}: {tuple(names)!r},\n" for name, names in rows)
    return "# The names of each kernel's results, in order.\nRETURNS = {\n" + body + "}\n"


@dataclass(frozen=True)
class GeneratedFile:
    path: Path
    content: str

    @property
    def stale(self) -> bool:
        return not self.path.exists() or self.path.read_text() != self.content


def generated_files() -> list[GeneratedFile]:
    return [
        GeneratedFile(GENERATED_DIR / "numpy_kernels.py", module_source(printers.NUMPY)),
        GeneratedFile(GENERATED_DIR / "torch_kernels.py", module_source(printers.TORCH)),
    ]


def write(files: list[GeneratedFile]) -> list[Path]:
    """Write the stale files; return the paths written."""
    written = []
    for f in files:
        if f.stale:
            f.path.parent.mkdir(parents=True, exist_ok=True)
            f.path.write_text(f.content)
            written.append(f.path)
    return written
