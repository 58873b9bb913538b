"""Layout bugs: the right arithmetic over the wrong elements -- wrong reduction axes, wrong
channel grouping, or a memory-layout assumption that only non-contiguous inputs break."""
from __future__ import annotations

import math

from tests.broken.impls import (
    _affine,
    _check_groups,
    _compute_dtype,
    _layer_norm_from,
    _per_channel,
    _rstd,
    _trailing_dims,
    _two_pass,
    group_norm_strided_groups,
    instance_norm_batch_stats,
)

__all__ = ["layer_norm_last_dim_only", "group_norm_strided_groups", "instance_norm_batch_stats",
           "group_norm_assumes_contiguous"]


def layer_norm_last_dim_only(x, normalized_shape, weight=None, bias=None, eps=1e-5):
    """Bug class: wrong reduction axes -- the statistics are always taken over the last axis
    only (the kernel was written for ``normalized_shape=(D,)``), whatever normalized_shape
    says. Weight and bias still have normalized_shape and broadcast correctly.

    Exact for a one-dimensional normalized_shape (and when the other normalized axes have
    size 1). Caught by a forward check with two or more normalized axes, and by the
    invariants mean_zero / second_moment over the true group.
    """
    _trailing_dims(x, normalized_shape, weight, bias)  # validates the shapes as torch does
    xhat = _layer_norm_from(x.to(_compute_dtype(x)), x.shape[-1:], None, None, eps)
    return _affine(xhat, weight, bias).to(x.dtype)


def group_norm_assumes_contiguous(x, num_groups, weight=None, bias=None, eps=1e-5):
    """Bug class: memory layout assumed contiguous -- the kernel views x as (N, G, C/G * S)
    with ``as_strided`` and the contiguous strides, a "free reshape" that reads the wrong
    elements when x is strided or channels_last.

    Exact on contiguous inputs (every shape, dtype, eps and value kind), so a battery
    that never draws another memory layout misses it. Caught by a forward check on a
    non-contiguous or channels_last case.
    """
    _check_groups(x, num_groups)
    n, c = x.shape[0], x.shape[1]
    work = (n, num_groups, c // num_groups * math.prod(x.shape[2:]))
    xg = x.as_strided(work, (work[1] * work[2], work[2], 1)).to(_compute_dtype(x))
    mu, var = _two_pass(xg, (2,))
    xhat = ((xg - mu) * _rstd(var, eps)).reshape(x.shape)
    return _affine(xhat, _per_channel(weight, x), _per_channel(bias, x)).to(x.dtype)
