"""Known deviations: named, explained limits of the implementations normspec ships with.

A deviation marks a genuine limit of one implementation, found by the battery and
confirmed by hand, never a loosened check: the check still runs for everyone, and for
the implementation named here its failure is reported as an *expected failure* with
this explanation next to what was observed. An entry that no longer fails is reported
as not observed: hypothesis draws different cases under other profiles and seeds, so
an entry covers every check its cause can show in, and one not tripped is a warning.

Keys are check ids, ``variant::dtype::check``; the measurements quoted were taken on
torch 2.13.0 (CPU build).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from normspec.verify.cases.case import Case


@dataclass(frozen=True)
class Deviation:
    name: str
    implementation: str | tuple[str, ...]
    explanation: str
    check_ids: tuple[str, ...]
    when: Callable[[Case], bool] | None = None  # only failures whose minimal case satisfies this

    @property
    def implementations(self) -> tuple[str, ...]:
        """The implementations it is a deviation of (torch's functional and aten ops share most)."""
        return (self.implementation,) if isinstance(self.implementation, str) else tuple(self.implementation)

    def covers(self, implementation: str, check_id: str, case: Case | None) -> bool:
        if implementation not in self.implementations or check_id not in self.check_ids:
            return False
        return self.when is None or (case is not None and self.when(case))


def _has_constant_group(case: Case) -> bool:
    """Some group of the case's x is constant (one element, or equal values after rounding)."""
    x = case.arrays()["x"].reshape(case.layout.work_shape)
    spread = np.ptp(x, axis=case.layout.group_dims)
    return bool(np.any(spread == 0))


def _ids(variants: str, dtypes: str, checks: str) -> tuple[str, ...]:
    return tuple(f"{v}::{d}::{c}" for v in variants.split() for d in dtypes.split() for c in checks.split())


# Every check that looks at the output or dx: a wrong statistic shows in any of them.
_OUTPUT_CHECKS = ("forward backward output_memory mean_zero second_moment identity_recovery shift_invariance scale_invariance "
                  "bias_cancels gradient_sum gradient_xhat constant_group per_sample_independence "
                  "batch_norm_transposed batch_permutation")

TORCH_OPS = ("torch_native", "torch_aten")  # torch.nn.functional and the aten ops under it: the same kernels

DEVIATIONS = (
    Deviation(
        "fused affine step", TORCH_OPS,
        "torch's CPU batch_norm, instance_norm and group_norm (and layer_norm on 16-bit inputs) apply "
        "y = x * (w * rstd) + (b - mean * w * rstd); "
        "for a constant group the two products cancel only up to rounding, so y differs from beta by about "
        "u * |x * w| / sqrt(eps) (measured: 1.5e-14 in float64 and 1.3e-5 in float32 for x = 0.375, w = 2.5, "
        "eps = 1e-5), where normalizing first gives beta exactly",
        _ids("batch_norm instance_norm group_norm", "float64 float32", "constant_group")
        + _ids("instance_norm group_norm", "float16 bfloat16", "constant_group")
        + _ids("layer_norm", "float16 bfloat16", "constant_group")),
    Deviation(
        "fused affine step on one-element and constant groups", TORCH_OPS,
        "(groups of one element or constant values only) torch's CPU layer_norm on float16/bfloat16 applies the "
        "same fused y = x * rstd - mean * rstd, so a constant group, whose xhat is exactly 0, gives "
        "u * |x| * rstd instead: F.layer_norm(float16 [[-8188.]], (1,), eps=1e-12) = 256 and with eps=1e-5 "
        "-0.0889 (float64 truth: 0), which the moment checks of xhat see",
        _ids("layer_norm", "float16 bfloat16", "second_moment mean_zero"),
        when=lambda case: _has_constant_group(case)),
    Deviation(
        "16-bit mean rounded before centering", TORCH_OPS,
        "torch's CPU batch_norm and instance_norm on float16/bfloat16 round the batch mean to the input dtype "
        "before subtracting it: x = [-8176, -8180] (float16, exactly representable) normalizes to [0, -2] "
        "instead of [1, -1], because the mean -8178 is not a float16; large-offset and shifted inputs lose "
        "up to half an ulp of the mean, in the output and in dx; on non-contiguous inputs the running "
        "variance is updated from the same rounded mean (x = [8188, 8192] float16, a strided view: running_var "
        "0.9 * 1.1143 + 0.1 * 16 = 2.6035 instead of 0.9 * 1.1143 + 0.1 * 8 = 1.8027, measured)",
        _ids("batch_norm instance_norm", "float16 bfloat16", _OUTPUT_CHECKS + " running_stats backward_true_statistics")
        + _ids("group_norm", "float16 bfloat16", "group_norm_all_groups")),
    Deviation(
        "16-bit backward intermediates", TORCH_OPS,
        "torch's CPU layer_norm and group_norm backward on float16/bfloat16 keep rstd and the terms of dx in the "
        "input dtype: dx = r (h - mean(h) - xhat mean(h xhat)) then cancels in 16-bit (errors of 1.4 float16 "
        "ulps of r|gamma g| on N = 2 groups), and rstd = 1/sqrt(var + eps) overflows float16 when eps = 1e-12 "
        "and the group is (nearly) constant, giving dx = NaN",
        _ids("layer_norm group_norm", "float16 bfloat16",
             "backward output_memory gradient_sum gradient_xhat backward_true_statistics")),
    Deviation(
        "channels_last group_norm variance", TORCH_OPS,
        "(channels_last inputs only) torch's CPU group_norm on channels_last inputs loses the variance of groups with a large mean: mean "
        "1e4 with spread 1e-2 gives errors of 1.5e-5 in float64 and 5.0 in float32 (contiguous inputs: 0 and "
        "0.03), as a one-pass E[x^2] - E[x]^2 would",
        _ids("group_norm", "float64 float32 float16 bfloat16",
             _OUTPUT_CHECKS + " group_norm_one_group group_norm_all_groups"),
        when=lambda case: case.memory == "channels_last"),
    Deviation(
        "group_norm backward with a bias and no weight", TORCH_OPS,
        "(a bias without a weight only) torch's CPU group_norm backward raises RuntimeError: tensor does not "
        "have a device when weight=None and bias is given and requires grad: F.group_norm(x, 2, None, b) on "
        "x of shape (3, 4, 5), float64, then y.backward(ones) (torch 2.13.0; the forward, dx alone via "
        "autograd.grad(y, x) and the weight-and-bias and parameter-free calls are right)",
        _ids("group_norm", "float64 float32 float16 bfloat16",
             "backward output_memory deterministic finite_differences mpmath gradient_sum gradient_xhat constant_group "
             "backward_true_statistics output_mask"),
        when=lambda case: case.has_bias and not case.has_weight),
    Deviation(
        "mixed-dtype layer_norm parameter gradients accumulated in 16-bit", TORCH_OPS,
        "(float32 weight and bias beside float16/bfloat16 x only) torch's CPU layer_norm backward returns "
        "dweight and dbias as float32 tensors but sums them in the activations' dtype: over 64 rows of "
        "bfloat16 x and grad_out, dbias[0] = -2.6875 where the float64 sum of the same grad_out is -2.6244 "
        "(an error of 4 bfloat16 ulps, 5e5 float32 ulps; measured by hand, torch 2.13.0); group_norm, "
        "batch_norm, instance_norm and rms_norm sum in float32",
        _ids("layer_norm", "float16 bfloat16", "backward output_memory backward_true_statistics"), when=lambda case: case.mixed),
    Deviation(
        "mixed-dtype layer_norm backward with a bias and no weight", TORCH_OPS,
        "(a float32 bias, no weight, float16/bfloat16 x only) torch's CPU layer_norm backward raises "
        "RuntimeError: expected scalar type Half but found Float: F.layer_norm(x, (3,), None, b) with x "
        "float16 of shape (4, 3) and b float32 of shape (3,), then y.backward(ones) (torch 2.13.0; the "
        "forward and the weight-only call are right)",
        _ids("layer_norm", "float16 bfloat16",
             "backward output_memory deterministic gradient_sum gradient_xhat constant_group backward_true_statistics "
             "output_mask"),
        when=lambda case: case.mixed and case.has_bias and not case.has_weight),
    Deviation(
        "mixed-dtype instance_norm with running buffers, a bias and no weight", TORCH_OPS,
        "(float32 bias and running buffers, no weight, float16/bfloat16 x only) torch's CPU instance_norm "
        "raises RuntimeError: mixed dtype (CPU): expect parameter to have scalar type of Float in the forward: "
        "F.instance_norm(x, zeros(4), ones(4), None, b) with x bfloat16 of shape (2, 4, 5), b float32 "
        "(torch 2.13.0; batch_norm with the same arguments, and instance_norm with a weight or without "
        "running buffers, are right)",
        _ids("instance_norm", "float16 bfloat16", _OUTPUT_CHECKS + " running_stats deterministic"),
        when=lambda case: case.mixed and case.has_bias and not case.has_weight and case.running),
    Deviation(
        "16-bit saved statistics", "torch_aten",
        "(float16/bfloat16 x with parameters of its own dtype) torch's CPU native_layer_norm, native_group_norm "
        "and native_batch_norm save mean and rstd in the input dtype, where CUDA saves them in float32 (PyTorch "
        "#139923); with float32 parameters they are float32: native_layer_norm(bfloat16 x of shape (3, 4, 5), "
        "[5], w, b, 1e-5) returns a bfloat16 mean, with float32 w and b a float32 one (torch 2.13.0)",
        _ids("layer_norm group_norm batch_norm", "float16 bfloat16", "saved_statistics"),
        when=lambda case: not case.mixed),
    Deviation(
        "native_group_norm_backward with grad_out in another memory format: wrong dx, or a segfault", "torch_aten",
        "(channels_last x only) torch.ops.aten.native_group_norm_backward returns a wrong dx, silently, when x "
        "is channels_last and grad_out contiguous: for x of shape (2, 4, 3, 2), 4 groups, eps 0.1, float64, dx "
        "is off by up to 4.95 from autograd of F.group_norm (0 when both are contiguous or both channels_last; "
        "measured by hand, torch 2.13.0). autograd hands the backward matching formats; a caller of the op "
        "must; with output_mask=[False, True, True] on the same tensors (shape (2, 4, 3, 5), 1 group) the op "
        "segfaults",
        _ids("group_norm", "float64 float32 float16 bfloat16",
             "backward output_memory deterministic finite_differences mpmath backward_true_statistics output_mask gradient_sum "
             "gradient_xhat constant_group"),
        when=lambda case: case.memory == "channels_last"),
    Deviation(
        "no CPU kernel for _fused_rms_norm_backward", "torch_aten",
        "torch.ops.aten._fused_rms_norm_backward raises NotImplementedError on the CPU backend (torch 2.13.0 CPU "
        "build: the op exists for Meta and CUDA only); the forward _fused_rms_norm runs and is checked",
        _ids("rms_norm", "float64 float32 float16 bfloat16",
             "backward output_memory deterministic finite_differences mpmath backward_true_statistics output_mask gradient_xhat")),
    Deviation(
        "native_group_norm requires contiguous x", "torch_aten",
        "(strided x only) torch.ops.aten.native_group_norm raises RuntimeError: Expected X.is_contiguous("
        "memory_format) to be true on a strided view (F.group_norm passes it x.contiguous() first; the op's "
        "precondition, not a wrong value)",
        _ids("group_norm", "float64 float32 float16 bfloat16",
             _OUTPUT_CHECKS + " backward deterministic finite_differences mpmath saved_statistics "
             "backward_true_statistics output_mask group_norm_one_group group_norm_all_groups"),
        when=lambda case: case.memory == "noncontiguous"),
)


def lookup(implementation: str, check_id: str, case: Case | None = None) -> str | None:
    """The explanation of an expected deviation of ``implementation`` on ``check_id`` (whose
    minimal failing case is ``case``), or None."""
    for deviation in DEVIATIONS:
        if deviation.covers(implementation, check_id, case):
            return f"{deviation.name}: {deviation.explanation}"
    return None


def check_ids(implementation: str) -> set[str]:
    return {i for d in DEVIATIONS if implementation in d.implementations for i in d.check_ids}
