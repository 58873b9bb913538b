"""Correct implementations written in four styles other than normspec's own (tests/styles) pass
the battery: a failure here is a false alarm of normspec (or a bug of the style), never a
reason to loosen a check. ``benchmarks/false_positives.py`` measures the same at scale."""
import dataclasses

import pytest

import normspec
from normspec.verify.cases.case import Case
from normspec.verify.implementations.probing import build_module
from normspec.verify.running.battery import check_case
from normspec.verify.truth.tolerance import working_range

STYLES = ("plain_autograd", "closed_form", "reshape_based", "numpy_backward")
CHECKS = ("forward", "backward", "gradient_sum", "gradient_xhat", "second_moment", "identity_recovery",
          "running_stats", "group_norm_one_group", "group_norm_all_groups", "rms_is_layer_norm",
          "batch_norm_transposed")
HALF_PRECISION_STYLE = "numpy_backward"  # float16 computed in float32 by hand, cast back
MAX_EXAMPLES = 10


@pytest.mark.parametrize("style", STYLES)
def test_style_passes_the_battery(style):
    dtypes = ["float64", "float32", *(["float16"] if style == HALF_PRECISION_STYLE else [])]
    report = normspec.check(f"tests.styles.{style}", dtypes=dtypes, checks=CHECKS, max_examples=MAX_EXAMPLES)
    assert report.ok, report.to_markdown()


@pytest.mark.parametrize("style", STYLES)
def test_style_provides_every_variant(style):
    impl = build_module(f"tests.styles.{style}")
    assert set(impl.functions) == {"batch_norm", "layer_norm", "instance_norm", "group_norm", "rms_norm"}
    assert impl.gradients == ("backward" if style == "numpy_backward" else "autograd")


# The minimal case of a false alarm found by benchmarks/false_positives.py: reshape_based's
# autograd of torch.rsqrt(var + eps) loses the statistics path (d rsqrt/dv ~ var^-1.5 underflows
# float32) at |x| = 1.4e17, beyond float32's working range (1.7e12). In float32 the battery calls
# that a range limit; in bfloat16, which computes in float32 and has float32's exponent range,
# working_range() is infinite and the same arithmetic on the same values is called a bug.
_BF16_HUGE = Case("layer_norm", (1, 2), "bfloat16", affine=False, values="huge", seed=0)


def test_the_bfloat16_false_alarm_is_the_float32_range_limit():
    impl = build_module("tests.styles.reshape_based")
    magnitude = abs(_BF16_HUGE.arrays()["x"]).max()
    assert magnitude > working_range("float32", 2)
    for dtype in ("bfloat16", "float32"):
        failing = [c for c in check_case(impl, "backward", dataclasses.replace(_BF16_HUGE, dtype=dtype)) if not c.ok]
        assert failing, dtype  # the style's deviation, the same in both dtypes


def test_bfloat16_working_range_is_float32s():
    """bfloat16 has float32's exponent range and computes in float32: its working range is float32's
    (a false alarm of an earlier normspec, found by the reshape-based style at |x| = 1.4e17)."""
    assert working_range("bfloat16", 2) == working_range("float32", 2)
    assert working_range("float16", 2) == float("inf")
