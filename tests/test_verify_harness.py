"""The harness: normspec.check on users' implementations, robustness against misbehaving ones,
reports, reproduction files, the CLI and the pytest plugin."""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import normspec
from normspec.derive.errors import NormSpecError
from normspec import cli
from normspec.verify.running.battery import EXPECTED, FAILED, PASSED, RANGE_LIMIT, SKIPPED

FAST = dict(dtypes=["float64"], max_examples=3)


def test_a_correct_torch_implementation_passes():
    report = normspec.check("normspec.reference.torch_ref:layer_norm", "layer_norm", dtypes=["float64", "float32"],
                          max_examples=4)
    assert report.ok and report.gradients == "autograd"
    assert all(r.status in (PASSED, SKIPPED) for r in report.checks)


def test_a_numpy_implementation_with_its_backward():
    from normspec.reference import numpy_ref

    report = normspec.check(numpy_ref.group_norm, "group_norm", backward=numpy_ref.group_norm_backward, **FAST)
    assert report.ok and report.implementation.array == "numpy" and report.gradients == "backward"


def test_forward_only_is_said_and_gradient_checks_skip():
    from normspec.reference import numpy_ref

    report = normspec.check(numpy_ref.rms_norm, "rms_norm", **FAST)
    assert report.ok and "forward only" in report.mode
    backward = next(r for r in report.checks if r.check == "backward")
    assert backward.status == SKIPPED and "forward-only" in backward.reason


@pytest.mark.parametrize("name, message", [
    ("raises", "RuntimeError: kernel launch failed"),
    ("wrong_shape", "has shape"),
    ("wrong_dtype", "has dtype float32, expected float16"),
    ("wrong_device", "has device meta"),
    ("nan_output", "got nan"),
    ("modifies_input", "modified its input x in place"),
])
def test_misbehaviour_is_a_reported_failure(name, message):
    dtypes = ["float16"] if name == "wrong_dtype" else ["float64"]
    report = normspec.check(f"tests.misbehaving.impls:{name}", "layer_norm", dtypes=dtypes, max_examples=3,
                            checks=["forward", "mean_zero"], array="torch")
    assert not report.ok
    assert any(message in r.reason for r in report.battery.failed), [r.reason for r in report.battery.failed]
    assert len(report.checks) == 2  # one misbehaving call does not stop the other checks


def test_a_probe_that_fails_says_so_instead_of_guessing(capsys):
    with pytest.raises(NormSpecError, match="with torch tensors raised RuntimeError: kernel launch failed and "
                                            "with NumPy arrays raised RuntimeError"):
        normspec.check("tests.misbehaving.impls:raises", "layer_norm")
    assert cli.main(["verify", "--impl", "tests.misbehaving.impls:raises", "--variant", "layer_norm"]) == 2
    assert "pass array='torch' or 'numpy' (--array)" in capsys.readouterr().out


def test_array_option_states_the_array_kind(capsys):
    """--array numpy on a torch function: every call reports what went wrong (no probe)."""
    assert cli.main(["verify", "--impl", "tests.misbehaving.impls:correct", "--variant", "layer_norm",
                     "--array", "numpy", "--dtype", "float64", "--check", "forward", "--max-examples", "1"]) == 1
    assert "layer_norm::float64::forward" in capsys.readouterr().out


def test_nondeterminism_is_caught_by_its_check():
    report = normspec.check("tests.misbehaving.impls:nondeterministic", "layer_norm", checks=["deterministic"],
                          **FAST)
    assert [r.check for r in report.battery.failed] == ["deterministic"]


def test_a_flaky_implementation_is_named_nondeterministic_and_no_invariant_is_blamed():
    report = normspec.check("tests.misbehaving.impls:flaky", "layer_norm", dtypes=["float64"], max_examples=6,
                            checks=["forward", "identity_recovery", "deterministic"])
    failed = {r.check: r for r in report.battery.failed}
    assert "deterministic" in failed, [r.reason for r in report.checks]
    for name, r in failed.items():
        if name != "deterministic":
            assert r.reason.startswith("nondeterministic: ") and r.nondeterministic, r.reason
    assert "calls on the minimal case differ from the first" in " ".join(r.reason for r in failed.values()
                                                                       if r.check != "deterministic")


def test_a_deterministic_failure_is_not_called_nondeterministic():
    report = normspec.check("tests.broken.impls:layer_norm_unbiased_var", "layer_norm", dtypes=["float64"],
                            checks=["forward"], max_examples=4)
    assert report.battery.failed and not report.battery.failed[0].nondeterministic


def test_a_hang_is_interrupted_by_the_time_limit():
    report = normspec.check("tests.misbehaving.impls:hangs", "layer_norm", checks=["forward"], timeout=0.5,
                          dtypes=["float64"], max_examples=1)
    assert "did not return within 0.5 s" in report.battery.failed[0].reason


def test_a_crash_is_reported_under_isolation(tmp_path):
    report = normspec.check("tests.misbehaving.impls:crashes", "layer_norm", checks=["forward"], isolate=True,
                          artifacts=tmp_path, dtypes=["float64"], max_examples=1, timeout=120)
    reason = report.battery.failed[0].reason
    assert "killed its process" in reason and "SIGSEGV" in reason
    assert (tmp_path / "pending_case.json").exists()  # written before the call


def test_reports_json_markdown_and_reproduction_file(tmp_path, capsys):
    report = normspec.check("tests.broken.impls:layer_norm_unbiased_var", "layer_norm", checks=["forward"],
                          artifacts=tmp_path, **FAST)
    data = json.loads(report.to_json())
    entry = data["checks"][0]
    assert entry["status"] == FAILED and entry["minimal_case"]["variant"] == "layer_norm"
    assert entry["worst"]["tolerance"] and entry["reproduction_file"].endswith(".npz")
    assert "layer_norm::float64::forward" in report.to_markdown()
    assert cli.main(["repro", entry["reproduction_file"], "--impl", "tests.broken.impls:layer_norm_unbiased_var"]) == 1
    assert "reproduced: the check still fails" in capsys.readouterr().out


def test_expected_failures_and_unknown_ids(tmp_path):
    listed = tmp_path / "expected.txt"
    listed.write_text("layer_norm::float64::forward  # known\nlayer_norm::float64::no_such_check\n")
    with pytest.warns(UserWarning, match="no_such_check"):
        report = normspec.check("tests.broken.impls:layer_norm_unbiased_var", "layer_norm", checks=["forward"],
                              expected_failures=listed, **FAST)
    assert report.ok and report.checks[0].status == "expected failure"


def test_bad_arguments_name_themselves():
    with pytest.raises(NormSpecError, match="variant='layer_nrom'"):
        normspec.check("tests.misbehaving.impls:correct", "layer_nrom")
    with pytest.raises(NormSpecError, match="impl='nomodule'"):
        normspec.check("nomodule", "layer_norm")
    with pytest.raises(NormSpecError, match="dtypes=\\['float8'\\]"):
        normspec.check("tests.misbehaving.impls:correct", "layer_norm", dtypes=["float8"])


def test_cli_exit_status_and_json(tmp_path, capsys):
    out = tmp_path / "r.json"
    assert cli.main(["verify", "--impl", "tests.misbehaving.impls:correct", "--variant", "layer_norm",
                     "--dtype", "float64", "--max-examples", "3", "--json", str(out)]) == 0
    assert json.loads(out.read_text())["ok"] is True
    assert cli.main(["verify", "--impl", "tests.misbehaving.impls:raises", "--variant", "layer_norm",
                     "--array", "torch", "--dtype", "float64", "--check", "forward", "--max-examples", "2"]) == 1
    assert "FAILED tests.misbehaving.impls:raises layer_norm::float64::forward" in capsys.readouterr().out


def test_cli_list(capsys):
    assert cli.main(["list"]) == 0
    out = capsys.readouterr().out
    assert "identity_recovery" in out and "group_norm" in out


def test_pytest_plugin_collects_one_item_per_check_and_dtype(tmp_path):
    expected = tmp_path / "xfail.txt"
    expected.write_text("layer_norm-float64-forward\nlayer_norm-float64-bogus\n")
    command = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "--pyargs", "normspec.verify", "-q",
               "--normspec-impl", "tests.broken.impls:layer_norm_unbiased_var", "--normspec-variant", "layer_norm",
               "--normspec-dtype", "float64", "--normspec-check", "forward,deterministic",
               "--normspec-expected-failures", str(expected), "-W", "always"]
    run = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert "1 xfailed" in run.stdout and "1 passed" in run.stdout, run.stdout[-2000:]
    assert "layer_norm-float64-bogus" in run.stdout  # the unknown id is warned about


def test_parametrize_checks_decorator_runs_as_tests(tmp_path):
    test_file = tmp_path / "test_mine.py"
    test_file.write_text(
        "import normspec\n"
        "from tests.misbehaving.impls import correct\n"
        "@normspec.parametrize_checks(correct, variant='layer_norm', dtypes=['float64'],"
        " checks=['forward', 'mean_zero'])\n"
        "def test_mine(normspec_check):\n"
        "    normspec_check.run()\n")
    run = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", str(test_file),
                          "--rootdir", str(tmp_path)], capture_output=True, text=True, timeout=600,
                         cwd=str(__import__("pathlib").Path(__file__).parent.parent))
    assert "2 passed" in run.stdout, run.stdout[-2000:]
    assert np is not None


def test_a_module_is_checked_variant_by_variant_with_the_identities_among_them():
    report = normspec.check("tests.misbehaving.kernels_module", dtypes=["float64"], max_examples=3,
                            checks=["forward", "group_norm_one_group", "rms_is_layer_norm"])
    assert {r.variant for r in report.checks} == {"layer_norm", "group_norm", "rms_norm"}
    failed = {r.id for r in report.battery.failed}
    # the wrong layer_norm fails on its own and through both identities that involve it
    assert failed == {"layer_norm::float64::forward", "group_norm::float64::group_norm_one_group",
                      "rms_norm::float64::rms_is_layer_norm"}, failed
    one_group = next(r for r in report.battery.failed if r.check == "group_norm_one_group")
    assert ("normspec verify --impl tests.misbehaving.kernels_module --variant group_norm "
            "--check group_norm_one_group --case") in one_group.reproduction()


def test_a_module_with_backward_functions_uses_them():
    report = normspec.check("normspec.reference.numpy_ref", "group_norm", dtypes=["float64"], max_examples=2,
                            checks=["backward", "group_norm_all_groups"])
    assert report.ok and report.gradients == "backward"
    assert [r.status for r in report.checks] == [PASSED, PASSED]


def test_cli_takes_a_module(capsys):
    assert cli.main(["verify", "--impl", "tests.misbehaving.kernels_module", "--dtype", "float64",
                     "--check", "forward,group_norm_one_group", "--max-examples", "2"]) == 1
    out = capsys.readouterr().out
    assert "FAILED tests.misbehaving.kernels_module group_norm::float64::group_norm_one_group" in out
    with pytest.raises(NormSpecError, match="variant='batch_norm': expected one that"):
        normspec.check("tests.misbehaving.kernels_module", "batch_norm")


def test_finite_differences_blames_a_noisy_forward_not_the_gradient():
    report = normspec.check("tests.broken.impls:layer_norm_one_pass_var", "layer_norm", dtypes=["float64"],
                            checks=["finite_differences"], max_examples=20)
    [failure] = report.battery.failed
    assert failure.reason.startswith("y at the base point (the forward differenced)"), failure.reason


def test_a_range_limit_is_told_apart_from_a_bug_and_fails_only_when_strict(tmp_path):
    """Autograd of rsqrt(mean(x^2) + eps) in float32: d rsqrt underflows beyond float32's working range."""
    report = normspec.check("torch.nn.functional:rms_norm", "rms_norm", dtypes=["float32"], checks=["backward"],
                            max_examples=30)
    [limit] = report.checks
    assert limit.status == RANGE_LIMIT and report.ok, limit.reason
    assert limit.reason.startswith("range limit: correct up to |x| = ") and "working range ends at 1.7e+12" in \
        limit.reason, limit.reason
    strict = normspec.check("torch.nn.functional:rms_norm", "rms_norm", dtypes=["float32"], checks=["backward"],
                            max_examples=30, strict=True)
    assert not strict.ok and strict.to_dict()["counts"][RANGE_LIMIT] == 1


def test_a_bug_inside_the_working_range_is_not_a_range_limit():
    report = normspec.check("tests.broken.impls:layer_norm_unbiased_var", "layer_norm", dtypes=["float32"],
                            checks=["forward"], max_examples=8)
    assert [r.status for r in report.checks] == [FAILED]


def test_bounded_expected_failures_hide_only_what_they_bound(tmp_path):
    impl, ids = "tests.broken.impls:layer_norm_unbiased_var", "layer_norm::float64::forward"
    loose = normspec.check(impl, "layer_norm", dtypes=["float64"], checks=["forward"], max_examples=8,
                           expected_failures=[ids])
    assert loose.checks[0].status == EXPECTED and loose.ok
    tight = normspec.check(impl, "layer_norm", dtypes=["float64"], checks=["forward"], max_examples=8,
                           expected_failures=[f"{ids} ratio<=1.5"])
    assert tight.checks[0].status == FAILED, "a failure beyond the bound fails again"
    other_kind = normspec.check(impl, "layer_norm", dtypes=["float64"], checks=["forward"], max_examples=8,
                                expected_failures=[f"{ids} values=huge"])
    assert other_kind.checks[0].status == FAILED, "a failure on another value kind fails again"
    listed = tmp_path / "known.txt"
    listed.write_text(f"# known deviations\n{ids}  # N = 1 gives NaN, others are 1/N off\n"
                      "layer_norm::float32::backward values=offset ratio<=4\n")
    assert normspec.check(impl, "layer_norm", dtypes=["float64"], checks=["forward"], max_examples=8,
                          expected_failures=listed).ok
    with pytest.raises(NormSpecError, match="ratio<=NUMBER"):
        normspec.check(impl, "layer_norm", expected_failures=[f"{ids} ratio<=x"])


def test_a_listed_expected_failure_that_passes_is_warned_about(capsys):
    assert cli.main(["verify", "--impl", "tests.misbehaving.impls:correct", "--variant", "layer_norm",
                     "--dtype", "float64", "--check", "forward", "--max-examples", "2",
                     "--expected-failures", str(Path(__file__).parent / "misbehaving" / "stale_expected.txt")]) == 0
    assert "ran and passed this run" in capsys.readouterr().out
