"""The battery passes on both generated references and on torch's native ops (CPU).

torch's native ops fail some checks for genuine reasons; those are named, explained
deviations (normspec.verify.running.deviations), and every one of them must still be observed, so the
list stays honest: each entry is explained, and the report warns about entries that
did not trip in a run.
"""
import pytest

import normspec

from normspec.verify.running.battery import EXPECTED, FAILED, run_battery
from normspec.verify.implementations.builtin import builtin


@pytest.fixture(scope="module", params=["numpy_ref", "torch_ref", "torch_native"])
def battery(request):
    return run_battery(builtin(request.param))


def test_no_unexpected_failures(battery):
    failures = [f"{r.id}: {r.reason}\n  {r.reproduction()}" for r in battery.failed]
    assert not failures, "\n".join(failures)


def test_expected_deviations_are_observed(battery):
    """Entries cover every check their cause can show in; most of them trip under 'ci'."""
    if battery.implementation == "torch_native":
        observed = len(battery.by_status(EXPECTED))
        assert observed > len(battery.stale_expectations()) / 4, battery.stale_expectations()


def test_references_have_no_expected_deviations(battery):
    if battery.implementation != "torch_native":
        assert not battery.by_status(EXPECTED)


def test_every_check_ran_examples(battery):
    ran = {r.check for r in battery.reports if r.examples > 0}
    assert {"forward", "mean_zero", "identity_recovery", "shift_invariance"} <= ran
    if battery.implementation != "numpy_ref":  # numpy has no bfloat16, but every check runs somewhere
        assert {r.dtype for r in battery.reports if r.examples > 0} == {"float64", "float32", "float16", "bfloat16"}


def test_failure_report_names_the_minimal_case():
    """A failure keeps the minimal case, and its reproduction replays to the same failure."""
    from tests.broken.impls import layer_norm_unbiased_var
    from normspec.verify.running.battery import check_case
    from normspec.verify.checks import CHECKS
    from normspec.verify.implementations.base import Implementation
    from normspec.verify.running.battery import run_check

    impl = Implementation("unbiased", {"layer_norm": layer_norm_unbiased_var})
    report = run_check(impl, CHECKS["forward"], "layer_norm", "float64")
    assert report.status == FAILED and report.case is not None
    assert not all(c.ok for c in check_case(impl, "forward", report.case))
    line = report.reproduction()  # a Python call, runnable as printed where the function is defined
    assert line.startswith("normspec.replay_case(unbiased, 'forward', '")
    comparisons = eval(line, {"normspec": normspec, "unbiased": layer_norm_unbiased_var})
    assert not all(c.ok for c in comparisons)
