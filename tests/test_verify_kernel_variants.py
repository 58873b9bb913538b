"""The battery on the variants kernels ship (weight offset, fused residual add, adaptive norms):
correct implementations in another style pass, the two declared calling forms (an option built in,
the in-place fused add) pass when declared and fail when not, and options are validated."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

import normspec
from normspec import cli
from normspec.derive.errors import NormSpecError
from normspec.verify.cases.case import Case
from normspec.verify.implementations.builtin import builtin

ROOT = Path(__file__).resolve().parent.parent
STYLE = "tests.styles.kernel_variants"
NEW = ("fused_add_layer_norm", "fused_add_rms_norm", "adaptive_layer_norm", "adaptive_rms_norm")
# one seed by default; three under HYPOTHESIS_PROFILE=thorough (benchmarks/false_positives.py: more)
SEEDS = (11, 12, 13) if os.environ.get("HYPOTHESIS_PROFILE") == "thorough" else (11,)


@pytest.mark.parametrize("seed", SEEDS)
def test_a_composition_of_torch_ops_passes_every_check(seed):
    report = normspec.check(STYLE, variant=(*NEW, "layer_norm", "rms_norm"), dtypes=("float64", "bfloat16"),
                            max_examples=8, seed=seed)
    assert report.ok, report.to_markdown()
    ran = {r.check for r in report.checks if r.status == "passed"}
    assert {"offset_is_shifted_weight", "fused_add_is_norm_of_sum", "unmodulated", "modulated_per_sample",
            "finite_differences", "mpmath", "gradient_xhat", "identity_recovery"} <= ran


def test_an_option_built_in_is_checked_pinned():
    pinned = normspec.check(f"{STYLE}:gemma_rms_norm", "rms_norm", dtypes=("float64",), options={"weight_offset": 1},
                            checks=("forward", "backward", "identity_recovery", "offset_is_shifted_weight"))
    assert pinned.ok, pinned.to_markdown()
    skipped = {r.check: r.reason for r in pinned.checks if r.status == "skipped"}
    assert "weight_offset is pinned to 1" in skipped["offset_is_shifted_weight"]
    assert pinned.to_dict()["options"] == {"weight_offset": 1.0}
    unpinned = normspec.check(f"{STYLE}:gemma_rms_norm", "rms_norm", dtypes=("float64",), checks=("forward",))
    assert not unpinned.ok  # checked as an offset-free rms_norm, its built-in +1 is a bug
    assert "rms_norm: weight_offset=0 in every case (its function takes no weight_offset keyword" in \
        unpinned.option_notes[0]
    failed = unpinned.battery.failed[0]
    assert "--option" not in failed.reproduction()


def test_the_in_place_fused_add_is_checked_when_declared():
    declared = normspec.check(f"{STYLE}:fused_add_rms_norm_in_place", "fused_add_rms_norm", dtypes=("float64", "float32"),
                              conventions=["fused_add=in_place"], checks=("forward", "mpmath", "fused_add_is_norm_of_sum",
                                                                          "identity_recovery", "deterministic"))
    assert declared.ok, declared.to_markdown()
    undeclared = normspec.check(f"{STYLE}:fused_add_rms_norm_in_place", "fused_add_rms_norm", dtypes=("float64",),
                                checks=("forward",))
    assert "declare --convention fused_add=in_place" in undeclared.battery.failed[0].reason
    returning = normspec.check(f"{STYLE}:fused_add_rms_norm", "fused_add_rms_norm", dtypes=("float64",),
                               conventions=["fused_add=in_place"], checks=("forward",))
    assert "should write y into x and the sum into residual and return None" in returning.battery.failed[0].reason


def test_torch_native_is_checked_at_the_default_offset():
    native = builtin("torch_native")
    assert "fused_add_rms_norm" not in native.functions  # torch has no fused or adaptive norms
    assert native.pinned_options("layer_norm") == {"weight_offset": 0.0}
    assert builtin("torch_ref").pinned_options("layer_norm") == {}


def test_cases_draw_every_offset_and_report_it():
    case = Case("rms_norm", (2, 4), weight_offset=0.375)
    assert "weight_offset=0.375" in case.short()
    assert case.arguments()["weight_offset"] == 0.375
    assert Case("rms_norm", (2, 4), affine=False, weight_offset=0.375).arguments()["weight_offset"] == 0.0
    with pytest.raises(NormSpecError, match="weight_offset=1: expected 0 \\(group_norm has no weight_offset option\\)"):
        Case.from_json('{"variant": "group_norm", "shape": [2, 4], "weight_offset": 1}')
    with pytest.raises(NormSpecError, match="weight_offset=nan: expected a finite number"):
        Case.from_dict({"variant": "rms_norm", "shape": [2, 4], "weight_offset": float("nan")})


@pytest.mark.parametrize("option, message", [
    ("weight_offset=abc", "--option weight_offset='abc': expected a real number"),
    ("nope=1", "--option='nope=1': expected an option of"),
    ("weight_offset", "--option='weight_offset': expected 'name=value'"),
])
def test_a_bad_option_is_named(option, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["verify", "--impl", f"{STYLE}:gemma_rms_norm", "--variant", "rms_norm", "--option", option])
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_options_are_for_an_implementation_of_ones_own(capsys):
    assert cli.main(["verify", "--impl", "torch_ref", "--variant", "rms_norm", "--option", "weight_offset=1"]) == 2
    assert "expected --impl of your own with it" in capsys.readouterr().out
    with pytest.raises(NormSpecError, match="options weight_offset='x': expected a real number"):
        normspec.check(f"{STYLE}:gemma_rms_norm", "rms_norm", options={"weight_offset": "x"})


def test_the_pytest_plugin_pins_an_option():
    command = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "--pyargs", "normspec.verify", "-q",
               "--normspec-variant", "rms_norm", "--normspec-dtype", "float64", "--normspec-check", "forward",
               "--normspec-impl", f"{STYLE}:gemma_rms_norm"]
    pinned = subprocess.run(command + ["--normspec-option", "weight_offset=1"], capture_output=True, text=True,
                            timeout=600, cwd=ROOT)
    assert "1 passed" in pinned.stdout, pinned.stdout[-2000:]
    unpinned = subprocess.run(command, capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert "1 failed" in unpinned.stdout, unpinned.stdout[-2000:]
