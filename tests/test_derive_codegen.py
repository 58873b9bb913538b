"""Generated references are fresh, deterministic, vectorised, and printed only from supported nodes."""
import ast
import hashlib
import importlib.util
import os
import re
import subprocess
import sys

import numpy as np
import pytest
import sympy as sp

from normspec.derive import kernel_bodies, codegen, outputs, printers, symbolic as sym
from normspec import cli

DIALECTS = [printers.NUMPY, printers.TORCH]
DIALECT_IDS = ["numpy", "torch"]


def _functions(dialect) -> dict[str, ast.FunctionDef]:
    tree = ast.parse(codegen.module_source(dialect))
    return {node.name: node for node in tree.body if isinstance(node, ast.FunctionDef)}


def _kernels(dialect) -> dict[str, ast.FunctionDef]:
    return {name: f for name, f in _functions(dialect).items() if not name.startswith("_")}


def _body_lines(function: ast.FunctionDef) -> list[str]:
    """The statements of ``function`` as source lines (docstring left out)."""
    return [ast.unparse(node) for node in function.body
            if not (isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant))]


def test_generated_files_are_fresh():
    stale = [str(f.path) for f in codegen.generated_files() if f.stale]
    assert not stale, f"stale generated files (run `normspec derive`): {stale}"


def test_derive_check_command_passes():
    assert cli.main(["derive", "--check"]) == 0


def test_derive_check_names_a_stale_file(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(codegen, "GENERATED_DIR", tmp_path)
    (tmp_path / "numpy_kernels.py").write_text("# edited by hand\n")
    assert cli.main(["derive", "--check"]) == 1
    out = capsys.readouterr().out
    assert "numpy_kernels.py" in out and "torch_kernels.py" in out


def test_write_touches_only_changed_files(tmp_path):
    files = [codegen.GeneratedFile(tmp_path / "k.py", "x = 1\n")]
    assert codegen.write(files) == [tmp_path / "k.py"]
    mtime = (tmp_path / "k.py").stat().st_mtime_ns
    assert codegen.write(files) == []
    assert (tmp_path / "k.py").stat().st_mtime_ns == mtime


@pytest.mark.parametrize("dialect", [printers.NUMPY, printers.TORCH], ids=["numpy", "torch"])
def test_header_and_no_element_loops(dialect):
    source = codegen.module_source(dialect)
    first = source.splitlines()[:3]
    assert first[0].startswith(f"# {outputs.MARKER} by derive/codegen.py")
    assert "normspec derive" in first[1]
    assert first[2] == f"# derivation-hash: {codegen.derivation_hash()}"
    loops = (ast.For, ast.While, ast.comprehension)
    assert not [node for node in ast.walk(ast.parse(source)) if isinstance(node, loops)]


def _source_digest(seed: str) -> str:
    code = ("import hashlib; from normspec.derive import codegen; "
            "print(hashlib.sha256(''.join(f.content for f in codegen.generated_files()).encode()).hexdigest())")
    env = {**os.environ, "PYTHONHASHSEED": seed}
    return subprocess.run([sys.executable, "-c", code], env=env, check=True, capture_output=True,
                          text=True).stdout.strip()


def test_generation_is_byte_identical_across_hash_seeds():
    here = hashlib.sha256("".join(f.content for f in codegen.generated_files()).encode()).hexdigest()
    assert _source_digest("0") == here
    assert _source_digest("4242") == here


@pytest.mark.parametrize("expr", [sp.Float(0.5) * sym.x, sp.sin(sym.x), sym.x ** sp.Rational(1, 3),
                                  sp.Symbol("stranger") * sym.x],
                         ids=["float", "unknown-function", "cube-root", "unknown-symbol"])
def test_printer_fails_loudly_on_unsupported_nodes(expr):
    with pytest.raises(printers.UnsupportedNode):
        printers.ArrayPrinter(printers.NUMPY).doprint(expr)


def test_reductions_are_lifted_into_temporaries():
    statements = kernel_bodies.straight_line({"dx": sym.derive(sym.CENTERED).dx})
    reductions = [name for name, value in statements if isinstance(value, sym.GroupMean)]
    assert len(reductions) == 2
    assert not any(value.has(sym.GroupMean) for name, value in statements if name not in reductions)


@pytest.mark.parametrize("dialect", [printers.NUMPY, printers.TORCH], ids=["numpy", "torch"])
def test_in_place_writes_never_touch_kernel_inputs(dialect):
    """Augmented assignments and out= only write arrays the kernel created itself."""
    tree = ast.parse(codegen.module_source(dialect))
    for function in (node for node in tree.body if isinstance(node, ast.FunctionDef)):
        inputs = {a.arg for a in function.args.args}
        written = [node.target.id for node in ast.walk(function) if isinstance(node, ast.AugAssign)]
        written += [k.value.id for node in ast.walk(function) if isinstance(node, ast.Call)
                    for k in node.keywords if k.arg == "out"]
        aliases = {t.id: node.value.id for node in ast.walk(function) if isinstance(node, ast.Assign)
                   and isinstance(node.value, ast.Name) for t in node.targets}
        for name in written:
            while name in aliases:
                name = aliases[name]
            assert name not in inputs, f"{function.name} writes its input {name} in place"


def test_recorded_code_never_reuses_arrays():
    """torch's vjp runs under autograd (double backward): nothing in place, no out=, no del."""
    source = codegen.module_source(printers.TORCH)
    for function in (node for node in ast.parse(source).body if isinstance(node, ast.FunctionDef)):
        if function.name.endswith("_vjp"):
            assert "out=" not in ast.unparse(function)
            assert not [node for node in ast.walk(function) if isinstance(node, (ast.AugAssign, ast.Delete))]
            assert not [node for node in ast.walk(function)
                        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Name)], function.name


# --- the register of the generated kernels: names, order, one name per array ---------

_NUMBERED = re.compile(r"\b(t\d+|buf\d+|mean_\d+|sum_\d+|_?cse\d+)\b")


def test_generated_files_have_no_numbered_temporaries():
    for f in codegen.generated_files():
        found = sorted(set(_NUMBERED.findall(f.content)))
        assert not found, f"{f.path.name} has numbered temporaries {found}"


def test_generated_lines_are_shorter_than_100_characters():
    """Docstrings (and code) of the generated files wrap below 100 characters."""
    for f in codegen.generated_files():
        long = [(n, line) for n, line in enumerate(f.content.splitlines(), 1) if len(line) >= 100]
        assert not long, f"{f.path.name}: lines of 100 characters or more: {long}"
    for dialect in DIALECTS:
        tree = ast.parse(codegen.module_source(dialect))
        docstrings = [ast.get_docstring(tree, clean=False)] + [
            ast.get_docstring(f, clean=False) for f in _functions(dialect).values()]
        assert all(len(line) < 100 for doc in docstrings if doc for line in doc.splitlines())


def test_temporaries_are_named_from_their_expressions():
    assert printers.temporary_name(sym.GroupMean(printers.H * sym.xhat)) == "mean_h_xhat"
    assert printers.temporary_name(sym.GroupMean(printers.H)) == "mean_h"
    assert printers.temporary_name(sym.AffineSum(sym.g * sym.xhat)) == "sum_grad_out_xhat"
    assert printers.temporary_name(sym.GroupMean(sym.xc**2)) == "mean_xc_sq"
    statements = dict(kernel_bodies.straight_line(sym.derive(sym.CENTERED).outputs()))
    assert statements["h"] == sym.gamma * sym.g
    assert statements["mean_h"] == sym.GroupMean(printers.H)
    assert statements["mean_h_xhat"] == sym.GroupMean(printers.H * sym.xhat)


def test_centered_dx_reads_like_the_spec():
    """dx = rstd * (h - mean_h - xhat * mean_h_xhat), terms in the formula's order and sign:
    one expression where autograd records the code (torch's vjp), the same terms finished in
    place elsewhere, and the docstrings' formula."""
    in_place = ["effective_weight = weight + weight_offset", "h = effective_weight * grad_out", "dx = h - mean_h", "dx -= xhat * mean_h_xhat", "dx *= rstd"]
    for dialect in DIALECTS:
        kernels = _kernels(dialect)
        lines = _body_lines(kernels["centered_backward"])
        assert [line for line in lines if line in in_place] == in_place, lines
        doc = ast.get_docstring(kernels["centered_backward"])
        assert "dx = rstd * (h - mean(h) - xhat * mean(h * xhat))" in doc
        assert "h = effective_weight * grad_out" in doc
        assert "dx = rstd * (h - xhat * mean(h * xhat))" in ast.get_docstring(kernels["rms_backward"])
    torch_vjp = _body_lines(_kernels(printers.TORCH)["centered_vjp"])
    assert "dx = rstd * (h - mean_h - xhat * mean_h_xhat)" in torch_vjp
    assert "dx = rstd * (h - xhat * mean_h_xhat)" in _body_lines(_kernels(printers.TORCH)["rms_vjp"])
    assert "y = effective_weight * xhat + bias" in ast.get_docstring(_kernels(printers.NUMPY)["centered_forward"])


@pytest.mark.parametrize("dialect", DIALECTS, ids=DIALECT_IDS)
def test_one_name_per_array(dialect):
    """No name is another name's array: no ``a = b``, no ``out=``; an in-place update only
    finishes the array its own statement made (``dx = h - mean_h; dx -= ...``)."""
    for name, function in _kernels(dialect).items():
        inputs = {a.arg for a in function.args.args}
        made = set()
        for node in function.body:
            if isinstance(node, ast.Assign):
                assert not isinstance(node.value, ast.Name), f"{name}: {ast.unparse(node)} renames an array"
                made.update(t.id for t in node.targets)
            elif isinstance(node, ast.AugAssign):
                assert node.target.id in made and node.target.id not in inputs, f"{name}: {ast.unparse(node)}"
        assert not [k for node in ast.walk(function) if isinstance(node, ast.Call) for k in node.keywords
                    if k.arg == "out"], name


def test_generator_sources_do_not_spell_the_marker():
    """Tools skip files that carry the marker: the generators assemble it (outputs.MARKER)."""
    literal = "@" + "generated"
    spelled = [p.name for p in sorted((codegen.ROOT / "derive").glob("*.py")) if literal in p.read_text()]
    assert not spelled, f"derive/ files spelling the marker literally: {spelled}"
    assert all(f.content.startswith(f"# {literal} by ") for f in codegen.generated_files())


def test_stray_files_in_the_generated_folder_are_reported(tmp_path, monkeypatch):
    monkeypatch.setattr(codegen, "GENERATED_DIR", tmp_path)
    files = codegen.generated_files()
    outputs.write(files)
    (tmp_path / "__init__.py").write_text("")  # hand-written, expected
    (tmp_path / "__pycache__").mkdir()
    (tmp_path / "__pycache__" / "numpy_kernels.cpython-311.pyc").write_bytes(b"")
    assert codegen.stray_files() == [] and codegen.stale_files() == []
    (tmp_path / "old.py").write_text("# left over\n")
    assert codegen.stray_files(files) == [tmp_path / "old.py"]


def test_the_generated_folder_has_no_strays():
    assert codegen.stray_files() == []


def test_derivation_sources_exist_and_include_the_runtime():
    assert "derive/numpy_runtime.py" in codegen.DERIVATION_SOURCES
    assert all((codegen.ROOT / relative).is_file() for relative in codegen.DERIVATION_SOURCES)


@pytest.mark.parametrize("dialect", DIALECTS, ids=DIALECT_IDS)
def test_generated_modules_are_self_contained(dialect):
    """Only stdlib and the dialect's library are imported; the NumPy runtime helpers are copied
    verbatim from derive/numpy_runtime.py."""
    tree = ast.parse(codegen.module_source(dialect))
    imported = {alias.name for node in ast.walk(tree) if isinstance(node, (ast.Import, ast.ImportFrom))
                for alias in node.names}
    assert not [node for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)]
    assert imported <= {"itertools", "math", dialect.module}
    if dialect.runtime:
        runtime = ast.parse((codegen.ROOT / dialect.runtime).read_text())
        for function in (node for node in runtime.body if isinstance(node, ast.FunctionDef)):
            assert ast.get_source_segment((codegen.ROOT / dialect.runtime).read_text(), function) in \
                codegen.module_source(dialect)


def test_numpy_runtime_helpers_reduce_products():
    spec = importlib.util.spec_from_file_location("_runtime", codegen.ROOT / "derive" / "numpy_runtime.py")
    runtime = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(runtime)
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((3, 4, 5)), rng.standard_normal((3, 4, 5))
    w = rng.standard_normal((1, 4, 1))
    np.testing.assert_allclose(runtime._group_mean((0, 2), a, b), np.mean(a * b, axis=(0, 2), keepdims=True))
    np.testing.assert_allclose(runtime._group_mean((2,), w, a, 2.0), np.mean(2 * w * a, axis=2, keepdims=True))
    np.testing.assert_allclose(runtime._affine_sum((0, 2), a), np.sum(a, axis=(0, 2), keepdims=True))
    assert runtime._affine_sum((0,), a, b).shape == (1, 4, 5)
    for axes in ((2,), (1, 2), (0, 1, 2)):  # trailing axes: a dot product per group
        np.testing.assert_allclose(runtime._group_mean(axes, a, b), np.mean(a * b, axis=axes, keepdims=True))
    strided = np.swapaxes(a, 1, 2).copy().swapaxes(1, 2)  # not C-contiguous: the einsum path
    np.testing.assert_allclose(runtime._affine_sum((2,), strided, b), np.sum(a * b, axis=2, keepdims=True))


def test_derive_check_names_a_stray_file(tmp_path, monkeypatch, capsys):
    from normspec.derive import outputs

    monkeypatch.setattr(codegen, "GENERATED_DIR", tmp_path)
    outputs.write(codegen.generated_files())
    (tmp_path / "__init__.py").write_text("")
    assert cli.main(["derive", "--check"]) == 0
    (tmp_path / "old_kernels.py").write_text("")
    assert cli.main(["derive", "--check"]) == 1
    assert "stray: " in capsys.readouterr().out
