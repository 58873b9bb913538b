"""The kernels' calling conventions (``--abi aten``, ``--backward-from-output``): a correct
saved-statistics kernel (tests/styles/aten_kernels.py) and correct backwards from the output
(tests/styles/from_output.py) pass their checks, the bugs each check is for fail it, the built-in
torch_aten's known deviations are expected failures (one of them, a wrong dx of
native_group_norm_backward, reproduced here by hand), bad arguments name themselves, and a failing
``--abi aten`` run prints a reproduction that names its backward and abi and reproduces."""
import re
import shlex

import pytest
import torch
import torch.nn.functional as F

import normspec
from normspec import cli
from normspec.derive.errors import NormSpecError
from normspec.reference import numpy_ref, torch_ref
from normspec.verify.api import build, builtin_battery
from normspec.verify.cases.case import Case
from normspec.verify.checks import CHECKS
from normspec.verify.checks.base import Context
from normspec.verify.checks.saved_statistics import true_saved
from normspec.verify.implementations.base import Implementation
from normspec.verify.pytest_plugin import parametrize_checks
from normspec.verify.reporting.report import calling_flags
from normspec.verify.running.battery import EXPECTED, FAILED, PASSED, RANGE_LIMIT, SKIPPED, run_check
from normspec.verify.running.profiles import current_settings
from tests.styles import aten_kernels as aten
from tests.styles import from_output

SEEDS = (5, 23)
EXAMPLES = 4
ATEN_CHECKS = ("saved_statistics", "backward_true_statistics", "output_mask", "backward")
STYLE = "tests.styles.aten_kernels"


def _aten(variant: str, forward, backward, name: str | None = None, **fields) -> Implementation:
    return Implementation(name or forward.__name__, {variant: forward}, gradients="backward",
                          backwards={variant: backward}, abi="aten", **fields)


def _run(impl: Implementation, check: str, variant: str, dtype: str, *, seed: int | None = None,
         max_examples: int = EXAMPLES):
    return run_check(impl, CHECKS[check], variant, dtype,
                     hypothesis_settings=current_settings(max_examples, seeded=seed is not None), seed=seed)


ATEN_LAYER_NORM = _aten("layer_norm", aten.layer_norm_forward, aten.layer_norm_backward)
ATEN_RMS_NORM = _aten("rms_norm", aten.rms_norm_forward, aten.rms_norm_backward)


# --- 1. a correct saved-statistics kernel passes ------------------------------------------------

@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("dtype", ("float64", "float32", "bfloat16"))
@pytest.mark.parametrize("impl, variant", [(ATEN_LAYER_NORM, "layer_norm"), (ATEN_RMS_NORM, "rms_norm")],
                         ids=["layer_norm", "rms_norm"])
def test_a_correct_aten_kernel_passes_the_saved_statistics_checks(impl, variant, dtype, seed):
    for check in ATEN_CHECKS:
        report = _run(impl, check, variant, dtype, seed=seed)
        assert report.status == PASSED, (report.id, report.reason)
        assert report.examples > 0


def test_the_forward_saves_the_statistics_in_the_compute_dtype_and_shape():
    case = Case("layer_norm", (3, 2, 5), dtype="bfloat16", normalized_ndim=2)
    got = ATEN_LAYER_NORM.run(case, case.arrays())
    assert set(got.saved) == {"mean", "rstd"}
    assert got.saved_dtypes == {"mean": "float32", "rstd": "float32"}
    assert got.saved["rstd"].shape == (3, 1, 1)
    rms = Case("rms_norm", (4, 6), dtype="float64", eps=None)
    got = ATEN_RMS_NORM.run(rms, rms.arrays())
    assert set(got.saved) == {"rstd"} and got.saved_dtypes == {"rstd": "float64"} and got.saved["rstd"].shape == (4, 1)


def test_a_forward_that_saves_the_variance_fails_saved_statistics_only():
    """The backward fed the true statistics (backward_true_statistics) does not see the forward's bug;
    saved_statistics does, and so does the backward fed the forward's own statistics."""
    buggy = _aten("layer_norm", aten.layer_norm_forward_saves_var, aten.layer_norm_backward)
    saved = _run(buggy, "saved_statistics", "layer_norm", "float64")
    assert saved.status == FAILED and "saved rstd" in saved.reason, saved.reason
    assert _run(buggy, "backward_true_statistics", "layer_norm", "float64").status == PASSED
    assert _run(buggy, "backward", "layer_norm", "float64").status == FAILED
    case = Case("layer_norm", (3, 7), eps=1e-3)
    ctx = Context.of(case)
    own = buggy.run(case, ctx.arrays)
    fed = buggy.run(case, ctx.arrays, statistics=true_saved(ctx))
    reference = ATEN_LAYER_NORM.run(case, ctx.arrays)
    assert abs(own.dx - reference.dx).max() > 1e-3
    assert abs(fed.dx - reference.dx).max() < 1e-12


def test_a_backward_that_drops_a_term_fails_the_backward_fed_the_true_statistics():
    buggy = _aten("layer_norm", aten.layer_norm_forward, aten.layer_norm_backward_drops_projection)
    assert _run(buggy, "saved_statistics", "layer_norm", "float64").status == PASSED
    report = _run(buggy, "backward_true_statistics", "layer_norm", "float64")
    assert report.status == FAILED and "backward fed the true statistics" in report.reason, report.reason


# --- 2. the built-in torch_aten ----------------------------------------------------------------

def test_torch_aten_layer_norm_has_no_failure_in_float64_and_float32():
    result, impl = builtin_battery("torch_aten", variants=("layer_norm",), dtypes=("float64", "float32"),
                                   max_examples=2)
    assert impl.abi == "aten"
    assert not result.interrupted
    assert [r.id for r in result.reports if r.status == FAILED] == []
    passed = {r.check for r in result.reports if r.status == PASSED}
    assert set(ATEN_CHECKS) <= passed, passed


def test_torch_aten_known_deviations_are_expected_failures():
    result, _ = builtin_battery("torch_aten", variants=("layer_norm", "rms_norm"), dtypes=("float64", "bfloat16"),
                                checks=ATEN_CHECKS, max_examples=2)
    by_id = {r.id: r for r in result.reports}
    assert [i for i, r in by_id.items() if r.status == FAILED] == []
    saved = by_id["layer_norm::bfloat16::saved_statistics"]
    assert saved.status == EXPECTED and "#139923" in saved.reason, saved.reason
    for dtype in ("float64", "bfloat16"):
        for check in ("backward", "backward_true_statistics", "output_mask"):
            r = by_id[f"rms_norm::{dtype}::{check}"]
            assert r.status == EXPECTED and "no CPU kernel for _fused_rms_norm_backward" in r.reason, (r.id, r.reason)
    assert by_id["rms_norm::float64::saved_statistics"].status == PASSED  # the forward runs and is checked
    for check in ATEN_CHECKS:
        assert by_id[f"layer_norm::float64::{check}"].status == PASSED


# --- 3. native_group_norm_backward's wrong dx, by hand, and the supervised run -----------------

def test_native_group_norm_backward_with_mixed_memory_formats_returns_a_wrong_dx():
    """The torch finding behind the torch_aten deviation (torch 2.13.0, CPU): x channels_last and
    grad_out contiguous give a wrong dx; matching formats give the right one. Only the full mask is
    called here: output_mask=[False, True, True] on such tensors segfaults."""
    n = torch.arange(48, dtype=torch.float64)
    x, g = torch.sin(n).reshape(2, 4, 3, 2), torch.cos(3 * n).reshape(2, 4, 3, 2)
    w = torch.tensor([1.0, -2.0, 0.5, 3.0], dtype=torch.float64)
    b = torch.tensor([0.25, 0.0, -1.0, 2.0], dtype=torch.float64)
    leaf = x.clone().requires_grad_()
    (true_dx,) = torch.autograd.grad(F.group_norm(leaf, 4, w, b, 0.1), leaf, g)
    ops = torch.ops.aten

    def dx(x, g):
        y, mean, rstd = ops.native_group_norm(x, w, b, 2, 4, 6, 4, 0.1)
        return ops.native_group_norm_backward(g, x, mean, rstd, w, 2, 4, 6, 4, [True, True, True])[0]

    channels_last = x.contiguous(memory_format=torch.channels_last)
    assert (dx(x, g) - true_dx).abs().max() < 1e-12
    assert (dx(channels_last, g.contiguous(memory_format=torch.channels_last)) - true_dx).abs().max() < 1e-12
    assert (dx(channels_last, g.contiguous()) - true_dx).abs().max() > 1


def test_torch_aten_group_norm_output_mask_is_an_expected_failure_and_the_run_completes():
    """Supervised: the segfaulting mask kills a runner process, not this one, and fails no check."""
    result, _ = builtin_battery("torch_aten", variants=("group_norm",), dtypes=("float64",),
                                checks=("output_mask", "saved_statistics"), max_examples=3)
    assert not result.interrupted
    by_id = {r.id: r for r in result.reports}
    assert set(by_id) == {"group_norm::float64::output_mask", "group_norm::float64::saved_statistics"}
    mask = by_id["group_norm::float64::output_mask"]
    assert mask.status in (EXPECTED, PASSED), mask.reason
    if mask.status == EXPECTED:
        assert "native_group_norm_backward with grad_out in another memory format" in mask.reason
    assert by_id["group_norm::float64::saved_statistics"].status in (EXPECTED, PASSED)
    for note in result.notes:  # where the segfaulting mask was drawn, its runner was replaced
        assert "killed by signal SIGSEGV" in note and "a new runner process ran the checks after it" in note, note


# --- 4. output_mask -----------------------------------------------------------------------------

def test_a_masked_gradient_is_not_computed():
    case = Case("layer_norm", (3, 5))
    full = ATEN_LAYER_NORM.run(case, case.arrays())
    masked = ATEN_LAYER_NORM.run(case, case.arrays(), output_mask=(True, False, True))
    assert masked.dweight is None and masked.computed_despite_mask == ()
    assert (masked.dx == full.dx).all() and (masked.dbias == full.dbias).all()
    ignoring = _aten("layer_norm", aten.layer_norm_forward, aten.layer_norm_backward_ignores_mask)
    got = ignoring.run(case, case.arrays(), output_mask=(True, False, True))
    assert got.computed_despite_mask == ("weight",) and got.dweight is None  # not taken as an answer


def test_a_backward_that_ignores_the_mask_fails_output_mask():
    ignoring = _aten("layer_norm", aten.layer_norm_forward, aten.layer_norm_backward_ignores_mask)
    report = _run(ignoring, "output_mask", "layer_norm", "float64")
    assert report.status == FAILED and "returned although masked" in report.reason, report.reason
    assert _run(ignoring, "backward", "layer_norm", "float64").status == PASSED  # the values are right


# --- 5. the backward from the output ------------------------------------------------------------

FROM_OUTPUT = {
    "torch layer_norm": Implementation("torch_from_output", {"layer_norm": F.layer_norm},
                                       from_output={"layer_norm": from_output.layer_norm_backward_from_output}),
    "torch rms_norm": Implementation("torch_from_output", {"rms_norm": torch_ref.rms_norm},
                                     from_output={"rms_norm": from_output.rms_norm_backward_from_output}),
    "numpy layer_norm": Implementation("numpy_from_output", {"layer_norm": numpy_ref.layer_norm}, array="numpy",
                                       gradients=None,
                                       from_output={"layer_norm": from_output.numpy_layer_norm_backward_from_output}),
    "numpy rms_norm": Implementation("numpy_from_output", {"rms_norm": numpy_ref.rms_norm}, array="numpy",
                                     gradients=None,
                                     from_output={"rms_norm": aten.numpy_rms_norm_backward_from_output}),
    "aten layer_norm": _aten("layer_norm", aten.layer_norm_forward, aten.layer_norm_backward, name="aten_from_output",
                             from_output={"layer_norm": from_output.layer_norm_backward_from_output}),
}


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("dtype", ("float64", "float32", "bfloat16", "float16"))
@pytest.mark.parametrize("which", list(FROM_OUTPUT))
def test_a_correct_backward_from_the_output_is_never_failed(which, dtype, seed):
    impl = FROM_OUTPUT[which]
    report = _run(impl, "backward_from_output", impl.variants[0], dtype, seed=seed)
    if impl.array == "numpy" and dtype == "bfloat16":
        assert report.status == SKIPPED and "NumPy has no bfloat16" in report.reason
        return
    assert report.status in (PASSED, RANGE_LIMIT), (report.id, report.reason)
    assert report.examples > 0
    if report.status == RANGE_LIMIT:
        assert "ill-conditioned" in report.reason and "agrees with the exact backward from this y" in report.reason


def test_a_range_limit_says_why():
    """layer_norm's drawn weights reach 2e-4 (gamma_tiny): reconstructing xhat there is a range limit."""
    report = _run(FROM_OUTPUT["torch layer_norm"], "backward_from_output", "layer_norm", "float32")
    assert report.status == RANGE_LIMIT, report.reason
    assert report.reason.startswith("range limit of the method: the backward from the output is ill-conditioned")
    assert "agrees with the exact backward from this y" in report.reason and "xhat = (y - beta) / gamma" in report.reason


@pytest.mark.parametrize("dtype", ("float64", "bfloat16"))
def test_a_backward_from_the_output_that_forgets_the_bias_fails(dtype):
    buggy = Implementation("forgets_bias", {"layer_norm": F.layer_norm},
                           from_output={"layer_norm": aten.layer_norm_backward_from_output_forgets_bias})
    report = _run(buggy, "backward_from_output", "layer_norm", dtype)
    assert report.status == FAILED, report.reason
    assert "dx (backward from the output)" in report.reason
    assert report.case.has_bias  # without a bias there is nothing to forget


def test_the_backward_from_the_output_is_handed_the_forwards_rstd_under_aten():
    """Under --abi aten the backward from the output reads the forward's saved rstd: a forward that
    saves the variance there fails it; under the functional abi the true rstd is handed over."""
    buggy = _aten("layer_norm", aten.layer_norm_forward_saves_var, aten.layer_norm_backward, name="saves_var",
                  from_output={"layer_norm": from_output.layer_norm_backward_from_output})
    assert _run(buggy, "backward_from_output", "layer_norm", "float64").status == FAILED


# --- 6. errors name the argument -----------------------------------------------------------------

def test_bad_calling_arguments_name_themselves(capsys):
    with pytest.raises(NormSpecError, match=r"^abi='nope': expected one of functional, aten"):
        build(aten.layer_norm_forward, "layer_norm", abi="nope")
    with pytest.raises(NormSpecError, match=r"^abi='aten': expected functional for instance_norm"):
        build(F.instance_norm, "instance_norm", abi="aten")
    with pytest.raises(NormSpecError, match=r"^backward_from_output=.*expected None for group_norm"):
        build(F.group_norm, "group_norm", backward_from_output=from_output.layer_norm_backward_from_output)
    with pytest.raises(NormSpecError, match=r"^abi='nope'"):
        parametrize_checks(aten.layer_norm_forward, variant="layer_norm", abi="nope")
    with pytest.raises(NormSpecError, match=r"^abi='aten': expected functional for a module"):
        normspec.check("tests.styles.from_output", abi="aten")
    assert cli.main(["verify", "--abi", "aten"]) == 2
    assert "--abi='aten': expected --impl package.module:function" in capsys.readouterr().out
    assert cli.main(["verify", "--impl", "tests.styles.from_output", "--abi", "aten"]) == 2
    assert "--abi='aten'" in capsys.readouterr().out


def test_an_aten_forward_that_returns_y_alone_is_told_what_was_expected():
    impl = _aten("layer_norm", aten.layer_norm_forward_y_only, aten.layer_norm_backward)
    report = _run(impl, "saved_statistics", "layer_norm", "float64", max_examples=1)
    assert report.status == FAILED
    assert "expected (y, mean, rstd)" in report.reason and "native_layer_norm(" in report.reason, report.reason
    forward = _run(impl, "forward", "layer_norm", "float64", max_examples=1)
    assert forward.status == FAILED and "expected (y, mean, rstd)" in forward.reason


# --- 7. the reproduction of a failing --abi aten run --------------------------------------------

def _reproduce_line(out: str) -> str:
    """The printed reproduce line; the terminal wraps it at 200 columns (folding the case's JSON),
    so its continuation lines are joined back."""
    lines = out.splitlines()
    start = next(i for i, line in enumerate(lines) if line.lstrip().startswith("reproduce:"))
    end = next(i for i in range(start + 1, len(lines)) if lines[i].startswith("mode:"))
    return "".join(lines[start:end]).split("reproduce:", 1)[1].strip()


def test_a_failing_aten_run_prints_a_reproduction_that_reproduces(capsys):
    command = ["verify", "--impl", f"{STYLE}:layer_norm_forward_saves_var", "--backward",
               f"{STYLE}:layer_norm_backward", "--abi", "aten", "--variant", "layer_norm", "--dtype", "float64",
               "--check", "saved_statistics", "--max-examples", "2"]
    assert cli.main(command) == 1
    out = capsys.readouterr().out
    assert "FAILED" in out and "layer_norm::float64::saved_statistics" in out
    line = _reproduce_line(out)
    assert line.startswith(f"normspec verify --impl {STYLE}:layer_norm_forward_saves_var"), line
    assert f"--backward {STYLE}:layer_norm_backward" in line and re.search(r"--abi aten\b", line), line
    argv = shlex.split(line)
    assert argv[0] == "normspec" and "--case" in argv
    assert cli.main(argv[1:]) == 1
    assert "FAIL" in capsys.readouterr().out


def test_the_calling_flags_of_an_implementation():
    impl = build(f"{STYLE}:layer_norm_forward", "layer_norm", backward=f"{STYLE}:layer_norm_backward", abi="aten",
                 backward_from_output="tests.styles.from_output:layer_norm_backward_from_output")
    assert calling_flags(impl) == (f" --backward {STYLE}:layer_norm_backward --backward-from-output "
                                   f"tests.styles.from_output:layer_norm_backward_from_output --abi aten")
    assert impl.abi == "aten" and impl.gradients == "backward" and impl.array == "torch"
    assert calling_flags(build(F.layer_norm, "layer_norm")) == ""


def test_the_pytest_plugin_carries_the_calling_convention():
    mark = parametrize_checks(aten.layer_norm_forward_saves_var, variant="layer_norm", dtypes=("float64",),
                              checks=("saved_statistics",), backward=aten.layer_norm_backward, abi="aten")
    (item,) = mark.args[1]
    assert item.abi == "aten"
    with pytest.raises(pytest.fail.Exception, match="saved rstd"):
        item.run()
    (correct,) = parametrize_checks(aten.layer_norm_forward, variant="layer_norm", dtypes=("float64",),
                                    checks=("saved_statistics",), backward=aten.layer_norm_backward,
                                    abi="aten").args[1]
    correct.run()  # passes: no exception


# --- 8. the checks of a calling convention skip under another -----------------------------------

def test_the_convention_checks_skip_under_the_functional_abi():
    functional = Implementation("functional", {"layer_norm": F.layer_norm})
    for check in ("saved_statistics", "backward_true_statistics", "output_mask"):
        report = _run(functional, check, "layer_norm", "float64")
        assert report.status == SKIPPED and "--abi aten" in report.reason, (check, report.reason)
    report = _run(functional, "backward_from_output", "layer_norm", "float64")
    assert report.status == SKIPPED and "--backward-from-output" in report.reason, report.reason
    instance = Implementation("aten_instance", {"instance_norm": F.instance_norm}, abi="aten")
    assert "aten has no saved-statistics convention for instance_norm" in instance.unsupported("instance_norm", "float64")


def test_the_api_checks_an_aten_kernel_passed_as_objects():
    report = normspec.check(aten.layer_norm_forward, "layer_norm", backward=aten.layer_norm_backward, abi="aten",
                            backward_from_output=from_output.layer_norm_backward_from_output,
                            dtypes=("float32",), checks=(*ATEN_CHECKS, "backward_from_output", "forward"),
                            max_examples=2)
    assert report.ok, report.to_markdown()
    statuses = {r.check: r.status for r in report.checks}
    assert statuses["backward_from_output"] in (PASSED, RANGE_LIMIT)
    assert all(statuses[c] == PASSED for c in (*ATEN_CHECKS, "forward")), statuses
