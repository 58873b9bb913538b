"""The calling-convention entries of the bug zoo (tests/bug_zoo/calling_convention_bugs.py: aten's
saved statistics and output_mask, the backward from the output, a declared precision contract),
each beside its correct counterpart. Through ``normspec verify`` an entry FAILs (exit status 1) in
every check it pins, a bug and not a range limit; the same command with the correct functions put in
place of the buggy ones passes those checks (exit status 0, each check run on examples, not
skipped). So an entry is known to fail for its bug, not for the glue (the signature, the arguments,
the CLI options). tests/test_verify_bug_zoo.py runs the entries as it runs every zoo entry."""
import json

import pytest

from normspec.cli import main
from tests.bug_zoo import ZOO

MODULE = "tests.bug_zoo.calling_convention_bugs"
ENTRIES = [name for name, entry in ZOO.items() if entry.impl.startswith(f"{MODULE}:")]

# the correct function for each buggy one an entry names, in --impl or in its arguments
CORRECT = {f"{MODULE}:{bug}": f"{MODULE}:{correct}" for bug, correct in (
    ("layer_norm_aten_forward_saves_var", "layer_norm_aten_forward"),
    ("layer_norm_aten_forward_saves_input_dtype_statistics", "layer_norm_aten_forward"),
    ("layer_norm_aten_pair_ignoring_output_mask", "layer_norm_aten_forward"),
    ("layer_norm_aten_backward_ignores_output_mask", "layer_norm_aten_backward"),
    ("layer_norm_pair_from_output_clamping_weight", "layer_norm"),
    ("layer_norm_backward_from_output_clamps_weight", "layer_norm_backward_from_output"),
    ("rms_norm_float32_contract_rounds_xhat", "float32_rms_norm"),
)}

# A correct backward from the output is ill-conditioned where the weight is tiny (gamma_tiny): the
# check reports that as the method's range limit, which passes (exit status 0) unless --strict.
ACCEPTED = {"backward_from_output": {"passed", "range limit"}}


def _pinned(entry) -> list[str]:
    arguments = list(entry.arguments)
    return arguments[arguments.index("--check") + 1].split(",")


def _argv(entry, *, swap: dict | None = None, checks: list[str] | None = None) -> list[str]:
    swap = swap or {}
    arguments = [swap.get(a, a) for a in entry.arguments]
    if checks is not None:
        arguments[arguments.index("--check") + 1] = ",".join(checks)
    return ["verify", "--impl", swap.get(entry.impl, entry.impl), "--variant", entry.variant,
            "--dtype", ",".join(entry.dtypes), *arguments]


def _verify(argv: list[str], tmp_path, capsys) -> tuple[int, dict, str]:
    """Exit status, {check: status} from the JSON report, and the printed report."""
    report = tmp_path / "report.json"
    rc = main([*argv, "--json", str(report)])
    out = capsys.readouterr().out
    checks = json.loads(report.read_text())["checks"]
    statuses = {}
    for check in checks:
        assert check["examples"] or check["status"] == "skipped", check
        statuses.setdefault(check["check"], set()).add(check["status"])
    return rc, statuses, out


def test_the_five_calling_convention_entries_are_registered():
    assert len(ENTRIES) == 5, ENTRIES
    for name in ENTRIES:
        entry = ZOO[name]
        assert set(_pinned(entry)) <= entry.catches, name
        assert entry.dtypes, name


@pytest.mark.parametrize("name", ENTRIES)
def test_the_entry_fails_every_check_it_pins(name, tmp_path, capsys):
    entry = ZOO[name]
    rc, statuses, out = _verify(_argv(entry), tmp_path, capsys)
    assert rc == 1, f"{name}: exit status {rc}\n{out}"
    assert statuses == {check: {"failed"} for check in _pinned(entry)}, f"{name}: {statuses}\n{out}"
    assert "minimal case:" in out


@pytest.mark.parametrize("name", ENTRIES)
def test_the_correct_counterpart_passes_the_same_checks(name, tmp_path, capsys):
    entry = ZOO[name]
    argv = _argv(entry, swap=CORRECT)
    assert not any(a in CORRECT for a in argv), argv  # every buggy function replaced
    rc, statuses, out = _verify(argv, tmp_path, capsys)
    assert rc == 0, f"{name}'s counterpart: exit status {rc}\n{out}"
    assert set(statuses) == set(_pinned(entry)), statuses
    for check, found in statuses.items():
        assert found <= ACCEPTED.get(check, {"passed"}), f"{name}'s counterpart, {check}: {found}\n{out}"


def test_the_contract_entry_passes_the_per_dtype_forward_check(tmp_path, capsys):
    """Moving one rounding point stays within the dtype's tolerance: only the contract sees it."""
    entry = ZOO["rms_norm_float32_contract_rounds_xhat"]
    rc, statuses, out = _verify(_argv(entry, checks=["forward"]), tmp_path, capsys)
    assert rc == 0 and statuses == {"forward": {"passed"}}, f"{statuses}\n{out}"
