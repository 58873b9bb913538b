"""Forward-pass bugs: the normalization itself computes the wrong thing.

Each function has the ``torch.nn.functional`` signature of its variant, is built from the
correct pieces of :mod:`tests.broken.impls` (16-bit inputs computed in float32, any memory
layout, differentiable by torch autograd) and differs from the correct one by one bug,
named in its docstring.
"""
from __future__ import annotations

from tests.broken.impls import (
    _compute_dtype,
    _layer_norm_from,
    _rstd,
    layer_norm_eps_outside_sqrt,
    layer_norm_unbiased_var,
    rms_norm_centered,
)
from tests.bug_zoo._pieces import group_norm_from

__all__ = ["layer_norm_unbiased_var", "layer_norm_eps_outside_sqrt", "rms_norm_centered",
           "group_norm_hard_coded_eps", "layer_norm_bias_before_scale"]

HARD_CODED_EPS = 1e-5


def group_norm_hard_coded_eps(x, num_groups, weight=None, bias=None, eps=1e-5):
    """Bug class: hard-coded eps -- the kernel ignores the ``eps`` argument and always adds
    1e-5 (the default it was written and tested with).

    Exact whenever the caller passes eps = 1e-5, so only cases with another eps catch it:
    a forward check with eps = 0.1 or 1e-3 (relative error ~ eps / var), or the scale
    invariance f(a x; a^2 eps) = f(x; eps), which moves eps.
    """
    return group_norm_from(x, num_groups, weight, bias, eps, rstd=lambda var, _eps: _rstd(var, HARD_CODED_EPS))


def layer_norm_bias_before_scale(x, normalized_shape, weight=None, bias=None, eps=1e-5):
    """Bug class: affine in the wrong order -- y = (xhat + beta) * gamma instead of
    gamma * xhat + beta.

    Exact without affine parameters, with beta = 0 or with gamma = 1, so the invariants on
    xhat (mean_zero, second_moment, run without affine) cannot see it. Caught by a forward
    check with affine parameters, and by identity recovery (gamma = std, beta = mean).
    """
    xf = x.to(_compute_dtype(x))
    xhat = _layer_norm_from(xf, normalized_shape, None, None, eps)
    if bias is not None:
        xhat = xhat + bias.to(xhat.dtype)
    if weight is not None:
        xhat = xhat * weight.to(xhat.dtype)
    return xhat.to(x.dtype)
