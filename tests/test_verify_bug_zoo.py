"""The bug zoo (tests/bug_zoo): every realistic wrong implementation fails
``normspec verify --impl module:function``, and a check that legitimately catches its
bug is among the failures, reported with its minimal case."""
import importlib
import re

import pytest

from tests.bug_zoo import ZOO
from normspec.verify.checks import CHECKS
from normspec.cli import main
from normspec.derive.variants import NAMES as VARIANTS


def _function(entry):
    module, name = entry.impl.split(":")
    return getattr(importlib.import_module(module), name)


@pytest.mark.parametrize("name", list(ZOO))
def test_bug_is_caught_by_the_cli(name, capsys):
    entry = ZOO[name]
    argv = ["verify", "--impl", entry.impl, "--variant", entry.variant]
    if entry.dtypes:
        argv += ["--dtype", ",".join(entry.dtypes)]
    argv += list(entry.arguments)
    rc = main(argv)
    out = capsys.readouterr().out
    assert rc != 0, f"{name}: the battery passed\n{out}"
    failed = re.findall(rf"^FAILED \S+ {entry.variant}::\w+::(\w+):", out, flags=re.MULTILINE)
    assert set(failed) & entry.catches, (
        f"{name} ({entry.bug_class}) failed only {sorted(set(failed))}, expected one of {sorted(entry.catches)}\n{out}")
    assert "minimal case:" in out


def test_zoo_has_at_least_twenty_distinct_bug_classes():
    assert len(ZOO) >= 20
    classes = [entry.bug_class for entry in ZOO.values()]
    assert all(classes) and len(set(classes)) == len(classes)
    assert len({entry.impl for entry in ZOO.values()}) == len(ZOO)


@pytest.mark.parametrize("name", list(ZOO))
def test_entry_is_well_formed(name):
    entry = ZOO[name]
    assert entry.variant in VARIANTS
    assert entry.impl.startswith("tests.bug_zoo.") and entry.impl.count(":") == 1
    assert entry.catches and entry.catches <= set(CHECKS), sorted(entry.catches - set(CHECKS))
    assert entry.dtypes is None or set(entry.dtypes) <= {"float64", "float32", "float16", "bfloat16"}
    function = _function(entry)
    assert callable(function) and function.__doc__ and "Bug class" in function.__doc__


def test_every_bug_in_the_zoo_modules_has_an_entry():
    modules = {entry.impl.split(":")[0] for entry in ZOO.values()}
    listed = {entry.impl for entry in ZOO.values()}
    exported = {f"{module}:{name}" for module in modules for name in importlib.import_module(module).__all__}
    assert exported == listed, sorted(exported ^ listed)
