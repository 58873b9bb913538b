"""Edge-case bugs: exact on ordinary data, wrong on a degenerate group -- a group of one
element, or a constant group (variance exactly 0)."""
from __future__ import annotations

import math

import torch

from tests.broken.impls import _affine, _compute_dtype, _layer_norm_from, _trailing_dims
from tests.bug_zoo._pieces import group_norm_from

__all__ = ["layer_norm_single_element_passthrough", "group_norm_constant_group_nan"]


def layer_norm_single_element_passthrough(x, normalized_shape, weight=None, bias=None, eps=1e-5):
    """Bug class: wrong result only for N = 1 groups -- a shortcut "a single element has
    nothing to normalize" passes x through (xhat = x) where the definition gives xhat = 0,
    so y = gamma * x + beta instead of beta.

    Exact for every group of two or more elements. Caught by a forward check with a
    normalized_shape of one element, and by the invariants on xhat for such groups
    (mean_zero, constant_group: y = beta).
    """
    dims = _trailing_dims(x, normalized_shape, weight, bias)
    xf = x.to(_compute_dtype(x))
    if math.prod(x.shape[d] for d in dims) == 1:
        return _affine(xf, weight, bias).to(x.dtype)
    return _layer_norm_from(xf, normalized_shape, weight, bias, eps).to(x.dtype)


def _rstd_via_unit_variance(var, eps):
    """1 / sqrt(var + eps) as 1 / sqrt(var) times the eps correction sqrt(var / (var + eps))."""
    return torch.rsqrt(var) * torch.sqrt(var / (var + eps))


def group_norm_constant_group_nan(x, num_groups, weight=None, bias=None, eps=1e-5):
    """Bug class: a constant group gives NaN -- the kernel standardizes to unit variance
    first, rsqrt(var), and applies eps as a separate correction factor sqrt(var / (var +
    eps)): the same value for var > 0, but inf * 0 = NaN when var = 0.

    Exact (to rounding) whenever every group has positive variance. Caught by the constant
    group check (y must be beta exactly, gradients finite) and by a forward check on the
    "constant" value kind.
    """
    return group_norm_from(x, num_groups, weight, bias, eps, rstd=_rstd_via_unit_variance)
