"""Size- and path-dependent bugs: exact on every input but those that take one branch of the
kernel -- long groups (a vectorised path from 16 elements, a two-level reduction past one
block of 256), power-of-two groups (a tail-free fast path), strided inputs (a gather path)
or a given weight (a fused affine epilogue) -- where the result is off by about 1%.

Real kernels branch like this; a random search over small shapes finds such a bug only
when it happens to draw the branch, the coverage grid (``normspec.verify.cases.grid``) by
construction. Each branch here is marked by the one factor :data:`GAIN` that the buggy path
applies (an unrefined rsqrt estimate, a leftover correction gain), so the size of the error
is the same wherever the branch is taken.
"""
from __future__ import annotations

import math

from tests.broken.impls import _layer_norm_from, _rstd
from tests.bug_zoo._pieces import HandWrittenNorm, group_norm_from, group_norm_view, layer_norm_view

__all__ = ["layer_norm_approx_rsqrt_long_rows", "group_norm_two_level_long_groups", "layer_norm_long_rows_backward",
           "group_norm_power_of_two_fast_path", "layer_norm_power_of_two_backward", "layer_norm_power_of_two_wide_rows",
           "group_norm_strided_input_path", "layer_norm_strided_input_path", "layer_norm_fused_affine_epilogue",
           "group_norm_affine_backward"]

GAIN = 1.01  # what the buggy branch gets wrong: about 1% of the output or of dx
VECTOR_WIDTH = 16  # the vectorised path takes groups of at least this many elements
BLOCK = 256  # longer groups are reduced in two levels (one block of partial sums per 256 elements)
ROW_PER_BLOCK = 1024  # power-of-two rows this long get a whole block of threads each


def _approximate_rsqrt(var, eps):
    """The hardware rsqrt estimate without its Newton-Raphson refinement step (1% off)."""
    return _rstd(var, eps) * GAIN


def _group_size(x, normalized_shape) -> int:
    shape = (normalized_shape,) if isinstance(normalized_shape, int) else tuple(normalized_shape)
    return math.prod(shape)


def _group_norm_size(x, num_groups) -> int:
    return x.shape[1] // num_groups * math.prod(x.shape[2:])


def _power_of_two(n: int, smallest: int = VECTOR_WIDTH) -> bool:
    return n >= smallest and n & (n - 1) == 0


class _BranchBackward(HandWrittenNorm):
    """The correct hand-written normalization (``HandWrittenNorm``) whose backward scales dx by
    GAIN when ``wrong`` (decided by the caller from the kernel's branch) is true."""

    @staticmethod
    def forward(ctx, x, weight, bias, view, eps, wrong):
        ctx.wrong = wrong
        return HandWrittenNorm.forward(ctx, x, weight, bias, view, eps, None)

    @staticmethod
    def backward(ctx, grad_out):
        dx, dweight, dbias, *rest = HandWrittenNorm.backward(ctx, grad_out)
        if ctx.wrong and dx is not None:
            dx = (dx.double() * GAIN).to(dx.dtype)
        return dx, dweight, dbias, *rest


# --- the size of the group -------------------------------------------------------------------------

def layer_norm_approx_rsqrt_long_rows(x, normalized_shape, weight=None, bias=None, eps=1e-5):
    """Bug class: wrong only on the vectorised path for long rows -- rows of at least 16
    elements are normalized with the unrefined rsqrt estimate (1% relative error); the scalar
    path for shorter rows computes 1/sqrt(var + eps) exactly.

    Exact for groups of fewer than 16 elements. Caught by a forward check (and the oracles
    of dx, the moment checks of xhat) on a group of 16 or more elements.
    """
    rstd = _approximate_rsqrt if _group_size(x, normalized_shape) >= VECTOR_WIDTH else _rstd
    return _layer_norm_from(x, normalized_shape, weight, bias, eps, rstd=rstd)


def group_norm_two_level_long_groups(x, num_groups, weight=None, bias=None, eps=1e-5):
    """Bug class: wrong only on the two-level reduction of long groups -- groups of more than
    256 elements (more than one block) combine the blocks' partial sums of squares with a
    leftover gain of 1.02, so the variance is 2% and the output 1% off; one-block groups are
    exact.

    Exact for groups of at most 256 elements (C/G x spatial), so hypothesis' small shapes
    miss it. Caught by a forward check on a group of 257 or more elements.
    """
    long = _group_norm_size(x, num_groups) > BLOCK
    rstd = (lambda var, eps_: _rstd(var * GAIN**2, eps_)) if long else _rstd
    return group_norm_from(x, num_groups, weight, bias, eps, rstd=rstd)


def layer_norm_long_rows_backward(x, normalized_shape, weight=None, bias=None, eps=1e-5):
    """Bug class: dx wrong only on the two-level backward of long rows -- the hand-written
    backward reduces rows of more than 256 elements in two levels and scales dx by 1.01
    there; the one-block backward, the forward, dweight and dbias are exact.

    Caught by a backward check (dx against autograd of the definition) or the dx oracles
    (finite differences, mpmath) on a row of 257 or more elements.
    """
    view = layer_norm_view(x, normalized_shape, weight, bias)
    return _BranchBackward.apply(x, weight, bias, view, eps, _group_size(x, normalized_shape) > BLOCK)


def group_norm_power_of_two_fast_path(x, num_groups, weight=None, bias=None, eps=1e-5):
    """Bug class: wrong only for power-of-two groups -- groups of 2^k >= 16 elements take a
    tail-free butterfly-reduction fast path that uses the unrefined rsqrt estimate (1% off);
    every other size is exact.

    Exact for group sizes that are not a power of two or below 16 (so 15, 17, 255, 257 ...
    pass). Caught by a forward check on a group of exactly 16, 32, ..., 4096 elements.
    """
    fast = _power_of_two(_group_norm_size(x, num_groups))
    return group_norm_from(x, num_groups, weight, bias, eps, rstd=_approximate_rsqrt if fast else _rstd)


def layer_norm_power_of_two_backward(x, normalized_shape, weight=None, bias=None, eps=1e-5):
    """Bug class: dx wrong only for power-of-two rows -- the backward's tail-free fast path
    for rows of 2^k >= 16 elements scales dx by 1.01; the forward, dweight, dbias and every
    other row length are exact.

    Caught by a backward check (or the other dx oracles) on a row of 16, 32, ..., 4096 elements.
    """
    view = layer_norm_view(x, normalized_shape, weight, bias)
    return _BranchBackward.apply(x, weight, bias, view, eps, _power_of_two(_group_size(x, normalized_shape)))


def layer_norm_power_of_two_wide_rows(x, normalized_shape, weight=None, bias=None, eps=1e-5):
    """Bug class: wrong only for long power-of-two rows -- rows of 2^k >= 1024 elements get a
    whole block of threads each (a warp per row below that, a masked tail otherwise), and that
    path uses the unrefined rsqrt estimate (1% off).

    Exact for 1023, 1025 and every row shorter than 1024, far beyond the shapes hypothesis
    draws. Caught by a forward check on a row of exactly 1024, 2048 or 4096 elements.
    """
    wide = _power_of_two(_group_size(x, normalized_shape), ROW_PER_BLOCK)
    return _layer_norm_from(x, normalized_shape, weight, bias, eps, rstd=_approximate_rsqrt if wide else _rstd)


# --- the memory layout and the parameters -----------------------------------------------------------

def group_norm_strided_input_path(x, num_groups, weight=None, bias=None, eps=1e-5):
    """Bug class: wrong only for non-contiguous inputs -- strided and channels_last inputs take
    a gather path (no copy to contiguous) whose normalization uses the unrefined rsqrt estimate
    (1% off); contiguous inputs are exact.

    Caught by a forward check on a non-contiguous or channels_last case.
    """
    strided = not x.is_contiguous()
    return group_norm_from(x, num_groups, weight, bias, eps, rstd=_approximate_rsqrt if strided else _rstd)


def layer_norm_strided_input_path(x, normalized_shape, weight=None, bias=None, eps=1e-5):
    """Bug class: wrong only for non-contiguous inputs -- a strided input takes a gather path
    whose normalization uses the unrefined rsqrt estimate (1% off); contiguous inputs are exact.

    Caught by a forward check on a non-contiguous case.
    """
    strided = not x.is_contiguous()
    return _layer_norm_from(x, normalized_shape, weight, bias, eps, rstd=_approximate_rsqrt if strided else _rstd)


def layer_norm_fused_affine_epilogue(x, normalized_shape, weight=None, bias=None, eps=1e-5):
    """Bug class: wrong only with affine parameters -- when a weight is given the kernel
    fuses scale = weight * rstd in its epilogue and forms rstd there with the unrefined rsqrt
    estimate (1% off); without a weight it is exact.

    Exact with affine=False, so the invariants on xhat (run without affine parameters) cannot
    see it. Caught by a forward check with a weight, and by identity recovery.
    """
    rstd = _approximate_rsqrt if weight is not None else _rstd
    return _layer_norm_from(x, normalized_shape, weight, bias, eps, rstd=rstd)


def group_norm_affine_backward(x, num_groups, weight=None, bias=None, eps=1e-5):
    """Bug class: dx wrong only with affine parameters -- the backward with a weight takes the
    fused path and scales dx by 1.01; the forward, dweight, dbias and the weight-free
    backward are exact.

    Caught by a backward check (or finite differences, mpmath) with affine parameters.
    """
    return _BranchBackward.apply(x, weight, bias, group_norm_view(x, num_groups), eps, weight is not None)
