"""The architecture rules, enforced: layers flow down (import-linter contracts), no import cycle,
no function-level import outside the places that need one, `normspec derive` stays light,
and no code branches on a variant's name (the registry says what a variant is)."""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import grimp

from normspec.derive.variants import NAMES

ROOT = Path(__file__).resolve().parent.parent
LAYERS = ("derive", "reference", "verify", "docs")
# Function-level imports that stay, and why: the pytest plugin is loaded by every pytest run of an
# environment where normspec is installed, so it imports torch and the battery only when a check runs;
# the CLI imports per command, so that `normspec derive` never loads torch.
LAZY_IMPORTS_ALLOWED = {"verify/pytest_plugin.py", "cli.py"}


def _python_files(*folders: str) -> list[Path]:
    return [p for folder in folders for p in sorted((ROOT / folder).rglob("*.py")) if "_generated" not in p.parts]


def test_import_linter_contracts_are_kept():
    lint = Path(sys.executable).parent / "lint-imports"
    run = subprocess.run([str(lint), "--config", str(ROOT / "pyproject.toml")], capture_output=True, text=True,
                         cwd=ROOT.parent, timeout=300)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-2000:]
    assert "0 broken" in run.stdout


def _cycles(graph: grimp.ImportGraph, modules: set[str]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on_stack, found, counter = {}, {}, [], set(), [], [0]

    def visit(m: str) -> None:
        index[m] = low[m] = counter[0]
        counter[0] += 1
        stack.append(m)
        on_stack.add(m)
        for n in graph.find_modules_directly_imported_by(m) & modules:
            if n not in index:
                visit(n)
                low[m] = min(low[m], low[n])
            elif n in on_stack:
                low[m] = min(low[m], index[n])
        if low[m] == index[m]:
            component = []
            while True:
                n = stack.pop()
                on_stack.discard(n)
                component.append(n)
                if n == m:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for m in sorted(modules):
        if m not in index:
            visit(m)
    return found


def test_no_import_cycle_anywhere():
    graph = grimp.build_graph("normspec")
    modules = {m for m in graph.modules if not m.startswith("normspec.tests")}
    assert _cycles(graph, modules) == []


def test_no_function_level_imports():
    offenders = []
    for path in _python_files(*LAYERS) + [ROOT / "cli.py", ROOT / "__init__.py"]:
        relative = str(path.relative_to(ROOT))
        if relative in LAZY_IMPORTS_ALLOWED:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                offenders += [f"{relative}:{n.lineno}" for n in ast.walk(node) if isinstance(n, (ast.Import,
                                                                                                ast.ImportFrom))]
    assert offenders == []


def test_derive_commands_import_neither_torch_nor_hypothesis():
    code = ("import sys\nfrom normspec.cli import main\n"
            "status = main(['derive', '--check'])\n"
            "heavy = sorted(m for m in ('torch', 'hypothesis', 'rich.progress') if m in sys.modules)\n"
            "print('HEAVY', heavy)\nsys.exit(status)\n")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "HEAVY []" in run.stdout, run.stdout


def test_no_code_branches_on_a_variant_name():
    """Comparisons with a variant's name (``variant == "batch_norm"``, ``in ("layer_norm", ...)``)
    belong nowhere outside the registry: the record has the field that decides."""
    offenders = []
    for path in _python_files(*LAYERS) + [ROOT / "cli.py"]:
        if path == ROOT / "derive" / "variants.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Compare):
                names = [c.value for c in ast.walk(node) if isinstance(c, ast.Constant) and c.value in NAMES]
                if names:
                    offenders.append(f"{path.relative_to(ROOT)}:{node.lineno} {names}")
    assert offenders == []
