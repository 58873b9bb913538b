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

Bodies are written by ``kernel_bodies.print_statements``: one statement per named value
(``h``, ``mean_h``, ``mean_h_xhat``, ``dx``), each its own array, finished in place in the
formula's order (``dx = h - mean_h; dx -= xhat * mean_h_xhat; dx *= rstd``) except in
torch's ``_vjp``, which autograd records for the double backward: there each statement
is one expression (``dx = rstd * (h - mean_h - xhat * mean_h_xhat)``) and nothing is
written in place. The NumPy module also carries its runtime helpers (the fused
reductions), copied from the real module ``derive/numpy_runtime.py``.

Files are written through ``derive.outputs`` (only when their content changes);
:func:`stale_files` and :func:`stray_files` say what ``normspec derive --check``
reports. Output is byte-identical across runs and ``PYTHONHASHSEED`` values.
"""
from __future__ import annotations

import ast
import hashlib
import textwrap
from pathlib import Path

import sympy as sp

from normspec.derive import kernel_bodies, outputs, printers, symbolic as sym

ROOT = Path(__file__).resolve().parent.parent
GENERATED_DIR = ROOT / "reference" / "_generated"
# Files in GENERATED_DIR that are written by hand, not generated (and are not strays).
HAND_WRITTEN = ("__init__.py",)
# The derivation's inputs: a change to any of them changes the recorded hash.
DERIVATION_SOURCES = ("derive/symbolic.py", "derive/printers.py", "derive/kernel_bodies.py", "derive/codegen.py",
                      "derive/numpy_runtime.py")
REGENERATE_COMMAND = "normspec derive"
MAX_LINE = 99  # generated lines are shorter than 100 characters

# The shared writer (kept under these names for the callers of codegen).
GeneratedFile = outputs.GeneratedFile
write = outputs.write


def derivation_hash() -> str:
    """sha256 over the derivation's source files and the SymPy version (first 16 hex digits)."""
    digest = hashlib.sha256(f"sympy {sp.__version__}\n".encode())
    for relative in DERIVATION_SOURCES:
        digest.update(relative.encode() + b"\n" + (ROOT / relative).read_bytes())
    return digest.hexdigest()[:16]


def _names(symbols) -> list[str]:
    return [printers.CODE_NAMES[s] for s in symbols]


def _wrap(text: str, indent: str, first: str | None = None) -> list[str]:
    """``text`` as lines of at most MAX_LINE characters starting with ``indent`` (the first
    with ``first`` when given)."""
    return textwrap.wrap(text, MAX_LINE, initial_indent=indent if first is None else first,
                         subsequent_indent=indent, break_on_hyphens=False, break_long_words=False)


def _docstring(paragraphs: list[str | list[str]], indent: str = "    ") -> str:
    """A docstring: prose paragraphs (str, wrapped) and formula blocks (lists of lines,
    indented once more); one line when a single paragraph fits on it."""
    if len(paragraphs) == 1 and isinstance(paragraphs[0], str):
        one_line = f'{indent}"""{paragraphs[0]}"""'
        if len(one_line) <= MAX_LINE:
            return one_line + "\n"
    lines: list[str] = []
    for index, paragraph in enumerate(paragraphs):
        if isinstance(paragraph, str):
            lines += [""] * bool(index) + _wrap(paragraph, indent, f'{indent}"""' if index == 0 else None)
        else:
            lines += [""] + [line for formula in paragraph for line in _wrap(formula, indent + "    ")]
    lines.append(f'{indent}"""')
    return "\n".join(lines) + "\n"


def _forward_returns(family: sym.Family, dialect: printers.Dialect) -> list[str]:
    """y (and the residual sum), the statistics computed, rstd; and xhat where autograd saves it
    for the backward."""
    computed_stats = [n.target for n in family.program() if n.reduced] + [sym.rstd]
    return _names([*family.outputs(), *computed_stats, *([sym.xhat] if dialect.recorded else [])])


def _program_statements(family: sym.Family, *, upto_xhat: bool = False) -> list[tuple[str, sp.Expr]]:
    """The forward program as statements (a reduced node's value is its GroupMean)."""
    nodes = [n for n in family.program() if not (upto_xhat and n.target == sym.y)]
    return [(printers.CODE_NAMES[n.target], sym.GroupMean(n.expr) if n.reduced else n.expr) for n in nodes]


def _formulas(statements: list[tuple[str, sp.Expr]], returns: tuple[str, ...] = ()) -> list[str]:
    """``name = formula`` lines of ``statements`` (renaming statements dropped)."""
    return [f"{name} = {printers.formula(value)}" for name, value in kernel_bodies.without_aliases(statements, returns)]


def _function(name: str, args: list[str], doc: list[str | list[str]], statements: list[tuple[str, sp.Expr]],
              returns: list[str], dialect: printers.Dialect, *, recorded: bool = False) -> str:
    """One kernel; ``recorded``: autograd records it (torch's double backward differentiates
    it), so nothing in it is updated in place."""
    in_place = not (recorded and dialect.recorded)
    signature = f"def {name}({', '.join(args)}):"
    if len(signature) > MAX_LINE:
        signature = "\n".join(_wrap(", ".join(args) + "):", " " * (len(name) + 5), f"def {name}("))
    return (
        signature + "\n"
        + _docstring(doc)
        + kernel_bodies.print_statements(statements, dialect, returns=tuple(returns), in_place=in_place)
        + f"    return {', '.join(returns)}\n"
    )


def _forward_source(family: sym.Family, dialect: printers.Dialect) -> str:
    args = _names(family.inputs()) + (["group_dims"] if family.batch_statistics else [])
    returns = _forward_returns(family, dialect)
    statements = _program_statements(family)
    doc = [f"Forward of the {family.name} family: returns {', '.join(returns)}.",
           _formulas(statements, tuple(returns))]
    return _function(f"{family.name}_forward", args, doc, statements, returns, dialect)


# What the closed forms may read besides the upstream gradients and the affine multiplier: the
# saved normalized input and the group's rstd. Anything else in a derived form is a codegen
# error, not an argument.
_SAVED = (sym.xhat, sym.rstd)


def _gradient_args(family: sym.Family) -> list[str]:
    return (["group_dims"] if family.batch_statistics else []) + ["affine_dims"]


def _upstream(family: sym.Family) -> list[str]:
    """The upstream gradients a backward takes, one per output of the forward."""
    return _names(family.seeds().values())


def _multiplier_statements(family: sym.Family) -> list[tuple[str, sp.Expr]]:
    """The program's affine multiplier (gamma = weight + weight_offset), which the closed forms read."""
    return [(printers.CODE_NAMES[n.target], n.expr) for n in family.program() if n.target == sym.gamma]


def _backward_doc(forms: sym.ClosedForms, first_line: str) -> list[str | list[str]]:
    outputs_ = forms.outputs()
    named = [f"{s.name} = {printers.formula(d, named=False)}" for s, d in printers.NAMED_SUBEXPRESSIONS
             if any(printers.name_subexpressions(e).has(s) for e in outputs_.values())]
    paths = (f"dx is the direct path {printers.formula(forms.dx_direct)} (the statistics held fixed) "
             + ("only: the statistics are given, no gradient flows through them."
                if forms.dx_through_statistics == 0 else
                f"plus the path through the statistics {printers.formula(forms.dx_through_statistics)}."))
    return [first_line, [*named, *(f"{name} = {printers.formula(e)}" for name, e in outputs_.items())], paths]


def _backward_source(family: sym.Family, dialect: printers.Dialect) -> str:
    """The closed forms from the forward's saved xhat and rstd (no recomputation)."""
    forms = sym.derive(family)
    outputs_ = forms.outputs()
    used = set().union(*(expr.free_symbols for expr in outputs_.values()))
    unexpected = used - {*family.seeds().values(), sym.gamma, *_SAVED}
    if unexpected:
        raise printers.UnsupportedNode(f"{family.name} closed forms read {sorted(map(str, unexpected))}, "
                                       f"expected only the upstream gradients, effective_weight, xhat and rstd")
    args = [*_upstream(family), *_names(_SAVED), "weight", "weight_offset", *_gradient_args(family)]
    doc = _backward_doc(forms, f"Backward of the {family.name} family, derived for a general group size, "
                               f"from the forward's xhat and rstd:")
    body = _multiplier_statements(family) + kernel_bodies.straight_line(outputs_)
    return _function(f"{family.name}_backward", args, doc, body, list(outputs_), dialect)


def _vjp_source(family: sym.Family, dialect: printers.Dialect) -> str:
    """The forward program up to xhat (statistics recomputed from x), then the closed forms.

    Differentiable in a dialect whose library records operations (torch): it is what a
    double backward differentiates (nothing is written in place).
    """
    outputs_ = sym.derive(family).outputs()
    given = _names(family.inputs()[1:-1])  # [residual,] [mean, var,] weight[, bias], weight_offset
    args = [*_upstream(family), "x", *[n for n in given if n != "bias"], "eps", *_gradient_args(family)]
    doc = [f"{', '.join(outputs_)} of the {family.name} family from x: the statistics and xhat recomputed "
           f"as in {family.name}_forward, then the closed forms of {family.name}_backward."]
    body = _program_statements(family, upto_xhat=True) + kernel_bodies.straight_line(outputs_)
    return _function(f"{family.name}_vjp", args, doc, body, list(outputs_), dialect, recorded=True)


def runtime_source(dialect: printers.Dialect) -> tuple[list[str], str]:
    """(modules imported, function definitions) of ``dialect``'s runtime module, read from
    its file; anything at its top level but a docstring, imports and functions is an error."""
    if dialect.runtime is None:
        return [], ""
    text = (ROOT / dialect.runtime).read_text()
    tree = ast.parse(text)
    modules, functions = [], []
    for index, node in enumerate(tree.body):
        if isinstance(node, ast.Import) and all(alias.asname is None for alias in node.names):
            modules += [alias.name for alias in node.names]
        elif isinstance(node, ast.FunctionDef):
            functions.append(ast.get_source_segment(text, node, padded=True))
        elif not (index == 0 and isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant)):
            raise printers.UnsupportedNode(f"{dialect.runtime}:{node.lineno}: only a docstring, plain imports "
                                           f"and function definitions can be copied into generated code")
    body = f"# Runtime helpers, copied from {dialect.runtime}.\n\n\n" + "\n\n\n".join(functions) + "\n"
    return modules, body


def module_source(dialect: printers.Dialect) -> str:
    modules, runtime = runtime_source(dialect)
    modules = [m for m in modules if m != dialect.module] + [dialect.module]
    header = (
        f"# {outputs.MARKER} by derive/codegen.py from the SymPy derivation in derive/symbolic.py; do not edit.\n"
        f"# Regenerate with: {REGENERATE_COMMAND}\n"
        f"# derivation-hash: {derivation_hash()}\n"
        + _docstring([f"{dialect.module} kernels of the normalize families, printed from the derivation.",
                      "Inputs are reshaped by reference (see normspec.derive.layouts.Layout): the group is "
                      "group_dims, parameter gradients are summed over affine_dims. In the docstrings mean(.) "
                      "is the mean over the group, sum(.) the sum over affine_dims, and h = weight * grad_out "
                      "(the upstream gradient through the affine step).",
                      "Each named value is an array of its own. A statement makes its array with one "
                      "operation and finishes it in place, in the formula's order (dx = h - mean_h; "
                      "dx -= xhat * mean_h_xhat; dx *= rstd is dx = rstd * (h - mean_h - xhat * mean_h_xhat)), "
                      "and del frees an array after its last use, so that the next one takes its memory over"
                      + ("; the _vjp functions, which autograd records (double backward), write nothing in "
                         "place." if dialect.recorded else ".")], indent="")
        + "".join(f"import {module}\n" for module in modules)
    )
    sources = (_forward_source, _backward_source, _vjp_source)
    bodies = [runtime] if runtime else []
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


def generated_files() -> list[outputs.GeneratedFile]:
    return [
        outputs.GeneratedFile(GENERATED_DIR / "numpy_kernels.py", module_source(printers.NUMPY)),
        outputs.GeneratedFile(GENERATED_DIR / "torch_kernels.py", module_source(printers.TORCH)),
    ]


def stale_files(files: list[outputs.GeneratedFile] | None = None) -> list[Path]:
    """The generated files that regenerating would write."""
    return outputs.stale(generated_files() if files is None else files)


def stray_files(files: list[outputs.GeneratedFile] | None = None) -> list[Path]:
    """Files in GENERATED_DIR that generation does not produce and that are not
    HAND_WRITTEN (left over from an older generator, or added by hand)."""
    files = generated_files() if files is None else files
    hand_written = {GENERATED_DIR / name for name in HAND_WRITTEN}
    return [p for p in outputs.strays([GENERATED_DIR], files) if p not in hand_written]
