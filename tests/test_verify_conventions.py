"""Declared conventions: an implementation that differs from torch on purpose says so, and the truth
adapts to the declaration. Each convention is tried on a correct implementation written in its
style (tests/misbehaving/conventions_impls.py): it passes with the declaration and fails without
it, and an implementation that declares a convention it does not follow fails too (nothing is
switched off). Also: validation, the report header, reproduction files, the CLI and pytest options."""
import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import pytest
from rich.console import Console

import normspec
from normspec import cli
from normspec.derive.errors import NormSpecError
from normspec.verify.api import build
from normspec.verify.cases.case import Case
from normspec.verify.implementations.builtin import BUILTIN, builtin
from normspec.verify.implementations.conventions import KEYS, TORCH, Conventions, parse
from normspec.verify.reporting.repro import read_case
from normspec.verify.running import battery as bat
from normspec.verify.running.battery import FAILED, PASSED, SKIPPED

ROOT = Path(__file__).resolve().parent.parent
IMPLS = "tests.misbehaving.conventions_impls:"
FAST = dict(dtypes=["float64"], max_examples=3)


def _check(function: str, variant: str, conventions=None, **options):
    return normspec.check(IMPLS + function, variant, conventions=conventions, **{**FAST, **options})


def _failed(report) -> set[str]:
    return {r.check for r in report.battery.failed}


# --- parsing and validation ------------------------------------------------------------------

def test_declarations_parse_from_a_mapping_or_key_value_strings():
    assert parse(None) == TORCH == Conventions()
    declared = parse({"running_var": "biased", "unsupported_dtypes": ["float64", "bfloat16"], "rms_eps": 1e-6})
    assert declared == parse(["running_var=biased", "unsupported_dtypes=float64,bfloat16", "rms_eps=1e-6"])
    assert declared.unsupported_dtypes == ("float64", "bfloat16") and declared.rms_eps == 1e-6
    assert parse(declared.options()) == declared  # what reports and reproduction files write reads back
    assert declared.describe() == "running_var=biased, unsupported_dtypes=float64,bfloat16, rms_eps=1e-06"
    assert TORCH.describe().startswith("torch's") and TORCH.declared() == {}
    assert set(KEYS) == {"running_var", "momentum", "running_stats", "scalars", "compute_dtype",
                         "unsupported_dtypes", "rms_eps", "fused_add", "parameter_dtypes", "contract"}


@pytest.mark.parametrize("declared, message", [
    ({"runing_var": "biased"}, "unknown convention runing_var='biased': expected a convention key, one of running_var"),
    (["running_var=sometimes"], "running_var='sometimes': expected one of unbiased, biased"),
    (["momentum=older"], "momentum='older': expected one of new, old"),
    (["running_stats=off"], "running_stats='off': expected one of updated, none"),
    (["scalars=float16"], "scalars='float16': expected one of float64, float32"),
    (["compute_dtype=int8"], "compute_dtype='int8': expected one of torch, float64"),
    (["unsupported_dtypes=float64,float8"], "unsupported_dtypes='float64,float8': expected dtypes among"),
    (["rms_eps=-1"], "rms_eps=-1.0: expected compute_dtype or input_dtype or a positive number"),
    (["rms_eps=tiny"], "rms_eps='tiny': expected compute_dtype or input_dtype or a positive number"),
    (["running_var"], "conventions='running_var': expected 'key=value'"),
    (["momentum=old", "momentum=new"], "momentum='new': expected one value (already declared momentum=old)"),
])
def test_a_bad_declaration_names_the_key_its_value_and_what_was_expected(declared, message):
    with pytest.raises(NormSpecError) as error:
        parse(declared)
    assert message in str(error.value)


def test_a_bad_declaration_is_refused_before_anything_runs():
    with pytest.raises(NormSpecError, match="running_var='sometimes'"):
        _check("batch_norm_biased_running_var", "batch_norm", {"running_var": "sometimes"})


def test_the_built_ins_keep_torchs_conventions():
    assert all(builtin(name).conventions == TORCH for name in BUILTIN)


# --- running statistics ----------------------------------------------------------------------

RUNNING = dict(checks=["running_stats", "forward", "eval_running_unchanged"])


def test_biased_running_var_passes_declared_and_fails_undeclared():
    declared = _check("batch_norm_biased_running_var", "batch_norm", ["running_var=biased"], **RUNNING)
    assert declared.ok and all(r.status == PASSED for r in declared.checks), [r.reason for r in declared.checks]
    assert _failed(_check("batch_norm_biased_running_var", "batch_norm", **RUNNING)) == {"running_stats"}


def test_declaring_biased_running_var_does_not_switch_the_check_off():
    """torch's batch_norm stores the unbiased variance: declared biased, it fails."""
    report = normspec.check("torch.nn.functional:batch_norm", "batch_norm", conventions=["running_var=biased"],
                            **FAST, **RUNNING)
    assert _failed(report) == {"running_stats"}
    assert "running_var" in report.battery.failed[0].reason


def test_momentum_of_the_old_value_passes_declared_and_fails_undeclared():
    assert _check("batch_norm_momentum_old", "batch_norm", ["momentum=old"], **RUNNING).ok
    assert _failed(_check("batch_norm_momentum_old", "batch_norm", **RUNNING)) == {"running_stats"}
    torch_declared_old = normspec.check("torch.nn.functional:batch_norm", "batch_norm", conventions=["momentum=old"],
                                        **FAST, **RUNNING)
    assert _failed(torch_declared_old) == {"running_stats"}


def test_flax_style_batch_norm_needs_both_declarations():
    both = ["running_var=biased", "momentum=old"]
    assert _check("batch_norm_flax", "batch_norm", both, **RUNNING).ok
    for one in both:
        assert _failed(_check("batch_norm_flax", "batch_norm", [one], **RUNNING)) == {"running_stats"}


def test_no_running_statistics_passes_declared_and_fails_undeclared():
    checks = dict(checks=["running_stats", "forward"])
    assert _check("instance_norm_no_running_stats", "instance_norm", ["running_stats=none"], **checks).ok
    assert _failed(_check("instance_norm_no_running_stats", "instance_norm", **checks)) == {"running_stats"}
    # torch's instance_norm updates the buffers it is passed: declared running_stats=none, it fails
    updating = normspec.check("torch.nn.functional:instance_norm", "instance_norm",
                              conventions=["running_stats=none"], **FAST, **checks)
    assert _failed(updating) == {"running_stats"}
    assert "untouched" in updating.battery.failed[0].reason


# --- eps and momentum as float32 attributes, the compute dtype, rms_norm's default eps ---------

EPS_CHECKS = ["forward", "backward", "mpmath", "second_moment", "identity_recovery", "scale_invariance",
              "gradient_xhat"]


def test_eps_rounded_to_float32_passes_declared_and_fails_undeclared():
    """eps = 1e-5 is not a float32: in float64, the rounding is visible far beyond the tolerance."""
    declared = _check("layer_norm_eps_float32", "layer_norm", ["scalars=float32"], checks=EPS_CHECKS)
    assert declared.ok, [r.reason for r in declared.battery.failed]
    assert {"forward", "backward", "mpmath", "second_moment"} <= _failed(
        _check("layer_norm_eps_float32", "layer_norm", checks=EPS_CHECKS))
    # torch's layer_norm uses eps as given: declared scalars=float32, it fails
    exact_eps = normspec.check("torch.nn.functional:layer_norm", "layer_norm", conventions=["scalars=float32"],
                               checks=["forward"], **FAST)
    assert _failed(exact_eps) == {"forward"}


def test_momentum_rounded_to_float32_passes_declared_and_fails_undeclared():
    assert _check("batch_norm_float32_attributes", "batch_norm", ["scalars=float32"], **RUNNING).ok
    assert "running_stats" in _failed(_check("batch_norm_float32_attributes", "batch_norm", **RUNNING))


def test_a_float32_compute_dtype_passes_declared_and_fails_undeclared():
    declared = _check("layer_norm_float32_compute", "layer_norm", ["compute_dtype=float32"],
                      dtypes=["float64", "float32"])
    assert declared.ok, [r.reason for r in declared.battery.failed]
    forward = next(r for r in declared.checks if r.check == "forward" and r.dtype == "float64")
    assert "float64 (compute float32)" in forward.worst.tolerance
    assert {"forward", "backward", "mpmath"} <= _failed(
        _check("layer_norm_float32_compute", "layer_norm", checks=["forward", "backward", "mpmath"]))


def test_a_declared_rms_norm_default_eps_is_the_truths_eps():
    """eps=None: torch's machine epsilon, or the declared default (1e-6 here)."""
    impl = build(IMPLS + "rms_norm_eps_1e6", "rms_norm")
    case = Case("rms_norm", (4, 8), eps=None)
    for check in ("forward", "backward", "second_moment", "mpmath"):
        assert not all(c.ok for c in bat.check_case(impl, check, case)), check
        declared = dataclasses.replace(impl, conventions=parse(["rms_eps=1e-6"]))
        assert all(c.ok for c in bat.check_case(declared, check, case)), check
    report = _check("rms_norm_eps_1e6", "rms_norm", ["rms_eps=1e-6"])
    assert report.ok, report.to_markdown()


def test_declared_unsupported_dtypes_are_skipped_with_the_reason():
    declared = _check("layer_norm_no_float64", "layer_norm", ["unsupported_dtypes=float64,bfloat16"],
                      dtypes=["float64", "float32", "bfloat16"], checks=["forward", "mean_zero"])
    assert declared.ok
    status = {(r.dtype, r.check): (r.status, r.reason) for r in declared.checks}
    for check in ("forward", "mean_zero"):
        assert status[("float32", check)][0] == PASSED
        for dtype in ("float64", "bfloat16"):
            assert status[(dtype, check)][0] == SKIPPED
            assert status[(dtype, check)][1].startswith("declared unsupported")
    undeclared = _check("layer_norm_no_float64", "layer_norm", array="torch", dtypes=["float64", "float32"],
                        checks=["forward"])
    assert {(r.dtype, r.status) for r in undeclared.checks} == {("float64", FAILED), ("float32", PASSED)}


# --- reports, reproduction, the CLI and pytest --------------------------------------------------

def test_the_report_lists_the_declaration_and_its_reproduction_replays_it(tmp_path, capsys):
    """torch's batch_norm declared running_var=biased fails; the reproduction file and the command line
    carry the declaration, so both replay the failure (without it, the same case passes)."""
    report = normspec.check("torch.nn.functional:batch_norm", "batch_norm", conventions={"running_var": "biased"},
                            checks=["running_stats"], artifacts=tmp_path, **FAST)
    payload = report.to_dict()
    assert payload["conventions"] == {"running_var": "biased"}
    assert "Conventions: running_var=biased." in report.to_markdown()
    report.print(Console(width=200))
    assert "conventions: running_var=biased" in capsys.readouterr().out
    entry = payload["checks"][0]
    assert entry["status"] == FAILED
    assert read_case(entry["reproduction_file"])["meta"]["conventions"] == {"running_var": "biased"}
    assert cli.main(["repro", entry["reproduction_file"], "--impl", "torch.nn.functional:batch_norm"]) == 1
    out = capsys.readouterr().out
    assert "conventions: running_var=biased" in out and "reproduced: the check still fails" in out
    line = entry["reproduction"]
    assert line.endswith(" --convention running_var=biased")
    case = json.dumps(entry["minimal_case"])
    command = ["verify", "--impl", "torch.nn.functional:batch_norm", "--variant", "batch_norm",
               "--check", "running_stats", "--case", case]
    assert cli.main(command + ["--convention", "running_var=biased"]) == 1
    assert cli.main(command) == 0  # torch's truth: torch's batch_norm is right


def test_the_cli_convention_option(capsys):
    command = ["verify", "--impl", IMPLS + "batch_norm_flax", "--variant", "batch_norm", "--dtype", "float64",
               "--check", "running_stats", "--max-examples", "2"]
    assert cli.main(command + ["--convention", "running_var=biased", "--convention", "momentum=old"]) == 0
    assert "conventions: running_var=biased, momentum=old" in capsys.readouterr().out
    assert cli.main(command + ["--convention", "running_var=biased"]) == 1
    with pytest.raises(SystemExit):
        cli.main(command + ["--convention", "momentum=older"])
    assert "momentum='older': expected one of new, old" in capsys.readouterr().err
    assert cli.main(["verify", "--impl", "torch_ref", "--variant", "batch_norm", "--convention", "momentum=old"]) == 2
    assert "expected --impl of your own with it" in capsys.readouterr().out


def test_the_pytest_plugin_convention_option():
    command = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "--pyargs", "normspec.verify", "-q",
               "--normspec-variant", "batch_norm", "--normspec-dtype", "float64",
               "--normspec-check", "running_stats,forward"]
    declared = subprocess.run(command + ["--normspec-impl", IMPLS + "batch_norm_momentum_old",
                                         "--normspec-convention", "momentum=old"],
                              capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert "2 passed" in declared.stdout, declared.stdout[-2000:]
    wrong = subprocess.run(command + ["--normspec-impl", "torch.nn.functional:batch_norm",
                                      "--normspec-convention", "momentum=old"],
                           capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert "1 failed, 1 passed" in wrong.stdout, wrong.stdout[-2000:]
    assert "--check running_stats --case" in wrong.stdout and "--convention momentum=old" in wrong.stdout


def test_parametrize_checks_takes_conventions(tmp_path):
    test_file = tmp_path / "test_declared.py"
    test_file.write_text(
        "import normspec\n"
        "from tests.misbehaving.conventions_impls import batch_norm_biased_running_var as bn\n"
        "@normspec.parametrize_checks(bn, variant='batch_norm', dtypes=['float64'], checks=['running_stats'],"
        " conventions={'running_var': 'biased'})\n"
        "def test_declared(normspec_check):\n"
        "    normspec_check.run()\n"
        "@normspec.parametrize_checks(bn, variant='batch_norm', dtypes=['float64'], checks=['running_stats'])\n"
        "def test_undeclared(normspec_check):\n"
        "    normspec_check.run()\n")
    run = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", str(test_file),
                          "--rootdir", str(tmp_path)], capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert "1 failed, 1 passed" in run.stdout, run.stdout[-2000:]
    assert "test_undeclared" in run.stdout.split("short test summary")[-1]
