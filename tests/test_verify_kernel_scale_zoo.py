"""The kernel-scale entries of the bug zoo (tests/bug_zoo/kernel_scale_bugs.py: a floor-sized partial
buffer, an unmasked tail block, a row stride assumed to be the hidden size, a wrapping row offset, a
racy accumulation), each a blocked kernel emulated in torch.

Through ``normspec verify --scale kernel`` an entry FAILs (exit status 1) in the check it pins, and
its minimal case is the smallest kernel-tier case its bug reaches (the kernel grid runs smallest
first, so the shape reported is deterministic). The same command at the small battery's shapes (no
``--scale kernel``) passes that check for the four bugs small shapes cannot reach, and catches the
tail-block bug too (the small grid's size sweep goes to 4097). Replayed with ``--case``, the minimal
case fails again, and the correct kernel the entries are built from passes it: an entry fails for its
bug, not for the glue.
tests/test_verify_bug_zoo.py runs the entries as it runs every zoo entry (their arguments carry
``--scale kernel``)."""
import json

import pytest

from normspec.cli import main
from tests.bug_zoo import ZOO

MODULE = "tests.bug_zoo.kernel_scale_bugs"
ENTRIES = [name for name, entry in ZOO.items() if entry.impl.startswith(f"{MODULE}:")]
CORRECT = f"{MODULE}:layer_norm_kernel"  # the correct kernel every entry is built from

# the minimal case each entry's check reports at kernel scale: (shape, memory)
MINIMAL = {
    "layer_norm_floor_sized_dweight_buffer": ((4097, 127), "contiguous"),  # 4097 = 16 * 256 + 1 rows
    "layer_norm_unmasked_tail_block": ((3, 1025), "contiguous"),  # the first hidden size past one block
    "layer_norm_row_stride_assumed_hidden": ((65, 4097), "padded_rows"),  # the grid's first view
    "layer_norm_narrow_row_offset": ((1000, 1023), "contiguous"),  # the grid's only case past 2^19 elements
    "layer_norm_racy_dweight_accumulation": ((3, 4095), "contiguous"),  # the first case of 3 programs
}
# what the same check says at the small battery's shapes (and, on failure, the minimal shape)
SMALL = {name: ("passed", None) for name in MINIMAL} | {"layer_norm_unmasked_tail_block": ("failed", (2, 1025))}


def _pinned(entry) -> list[str]:
    arguments = list(entry.arguments)
    return arguments[arguments.index("--check") + 1].split(",")


def _argv(entry, *, scale: bool = True, impl: str | None = None) -> list[str]:
    arguments = list(entry.arguments)
    if not scale:
        at = arguments.index("--scale")
        del arguments[at:at + 2]
    return ["verify", "--impl", impl or entry.impl, "--variant", entry.variant, "--dtype", ",".join(entry.dtypes),
            *arguments]


def _verify(argv: list[str], tmp_path, capsys) -> tuple[int, dict, str]:
    """Exit status, {check: report} from the JSON report (one dtype: one report per check), the output."""
    report = tmp_path / "report.json"
    rc = main([*argv, "--json", str(report)])
    out = capsys.readouterr().out
    checks = json.loads(report.read_text())["checks"]
    assert len({c["check"] for c in checks}) == len(checks), checks
    for check in checks:
        assert check["examples"], check
    return rc, {c["check"]: c for c in checks}, out


def test_the_five_kernel_scale_entries_are_registered():
    assert sorted(ENTRIES) == sorted(MINIMAL)
    for name in ENTRIES:
        entry = ZOO[name]
        assert entry.variant == "layer_norm" and entry.dtypes == ("float32",), name
        arguments = list(entry.arguments)
        assert arguments[arguments.index("--scale") + 1] == "kernel", name
        assert len(_pinned(entry)) == 1 and set(_pinned(entry)) <= entry.catches, name


@pytest.mark.parametrize("name", ENTRIES)
def test_the_kernel_tier_catches_the_entry_at_its_smallest_case(name, tmp_path, capsys):
    entry = ZOO[name]
    rc, reports, out = _verify(_argv(entry), tmp_path, capsys)
    (check,) = _pinned(entry)
    assert rc == 1, f"{name}: exit status {rc}\n{out}"
    assert set(reports) == {check} and reports[check]["status"] == "failed", f"{name}: {reports}\n{out}"
    assert f"FAILED {entry.impl} layer_norm::float32::{check}:" in out and "minimal case:" in out
    case = reports[check]["minimal_case"]
    shape, memory = MINIMAL[name]
    assert (tuple(case["shape"]), case["memory"]) == (shape, memory), f"{name}: minimal case {case}"
    # the minimal case replayed (--case): the entry fails it again, the correct kernel passes it
    for impl, expected in ((entry.impl, 1), (CORRECT, 0)):
        replay = ["verify", "--impl", impl, "--variant", entry.variant, "--check", check, "--case", json.dumps(case)]
        rc = main(replay)
        out = capsys.readouterr().out
        assert rc == expected and (" FAIL " in out) == bool(expected), f"{impl} on {case}: exit status {rc}\n{out}"


@pytest.mark.parametrize("name", ENTRIES)
def test_the_small_battery_sees_only_what_small_shapes_reach(name, tmp_path, capsys):
    entry = ZOO[name]
    rc, reports, out = _verify(_argv(entry, scale=False), tmp_path, capsys)
    (check,) = _pinned(entry)
    status, shape = SMALL[name]
    assert set(reports) == {check} and reports[check]["status"] == status, f"{name}: {reports}\n{out}"
    assert rc == (0 if status == "passed" else 1), f"{name}: exit status {rc}\n{out}"
    if shape is not None:
        assert tuple(reports[check]["minimal_case"]["shape"]) == shape, reports[check]["minimal_case"]
