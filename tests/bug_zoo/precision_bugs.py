"""Precision bugs: mathematically right, numerically wrong.

Standard-normal data in float64 passes every one of these; they need the value kinds
that stress the arithmetic (a large mean offset, near-overflow magnitudes, long rows) and
a comparison against a float64 truth computed from the same rounded inputs.
"""
from __future__ import annotations

import math

from tests.broken.impls import (
    _compute_dtype,
    _layer_norm_from,
    _rms_eps,
    layer_norm_fp16_accumulation,
    layer_norm_one_pass_var,
)

__all__ = ["layer_norm_one_pass_var", "layer_norm_fp16_accumulation", "rms_norm_no_upcast"]


def rms_norm_no_upcast(x, normalized_shape, weight=None, eps=None):
    """Bug class: statistics in the storage dtype -- for 16-bit inputs the sum of squares
    is formed in the input's own dtype (``x.square().sum()`` returns float16), then divided
    by N and widened; torch computes the statistics in float32 and only casts the output.

    float32/float64 inputs are exact (the compute dtype is theirs), and so are modest
    float16 rows; caught by a forward check of float16 inputs on the "huge" and "large mean
    offset" families, where a square or the sum of squares passes 65504, the mean square
    becomes inf and the output collapses to 0 (rsqrt(inf)). bfloat16 has float32's range
    and hides it.
    """
    def stats(x, dims):
        xf = x.to(_compute_dtype(x))
        n = math.prod(x.shape[d] for d in dims)
        return xf.new_zeros(()), (x.square().sum(dims, keepdim=True) / n).to(xf.dtype)
    return _layer_norm_from(x, normalized_shape, weight, None, _rms_eps(x, eps), stats=stats)
