"""Gradient bugs: the forward pass is exact, a gradient is not.

Most are hand-written backward kernels (a ``torch.autograd.Function``, see
:class:`tests.bug_zoo._pieces.HandWrittenNorm`) with one mistake in the closed form
dx = r * (h - mean(h) - xhat * mean(h * xhat)), h = gamma * g; one is a plain-torch
forward whose autograd graph is cut. Only gradient checks (backward, finite differences,
the gradient invariants) can catch them.
"""
from __future__ import annotations

import torch

from tests.broken.impls import (
    _affine,
    _batch_norm_from,
    _compute_dtype,
    _per_channel,
    _rstd,
    _two_pass,
    _update_running,
    _verify_batch_size,
    layer_norm_dgamma_wrong_axes,
    layer_norm_gamma_missing_in_dx,
    layer_norm_no_mean_xhat_term,
)
from tests.bug_zoo._pieces import HandWrittenNorm, group_norm_view, layer_norm_view

__all__ = ["layer_norm_no_mean_xhat_term", "group_norm_no_mean_h_term", "layer_norm_gamma_missing_in_dx",
           "layer_norm_gamma_twice_in_dx", "layer_norm_dx_reductions_without_gamma",
           "layer_norm_dgamma_wrong_axes", "group_norm_dgamma_per_group", "batch_norm_stats_without_grad"]


def group_norm_no_mean_h_term(x, num_groups, weight=None, bias=None, eps=1e-5):
    """Bug class: gradient through the batch statistics incomplete -- the hand-written
    backward drops the path through the mean: dx = r * (h - xhat * mean(h * xhat)), i.e. the
    RMSNorm formula used for a centering norm.

    Forward, dweight and dbias are exact. Caught by a backward check (dx against autograd
    of the definition), by finite differences, and by the invariant sum_group dx = 0.
    """
    return HandWrittenNorm.apply(x, weight, bias, group_norm_view(x, num_groups), eps, "no_mean_h")


def layer_norm_gamma_twice_in_dx(x, normalized_shape, weight=None, bias=None, eps=1e-5):
    """Bug class: affine parameter applied twice in the chain rule -- the backward scales an
    upstream gradient that was already multiplied by gamma: h = gamma^2 * g.

    Forward, dweight and dbias are exact; dx is exact when gamma is None or +-1 everywhere.
    Caught by a backward check (or finite differences) with gamma != 1.
    """
    view = layer_norm_view(x, normalized_shape, weight, bias)
    return HandWrittenNorm.apply(x, weight, bias, view, eps, "gamma_twice")


def layer_norm_dx_reductions_without_gamma(x, normalized_shape, weight=None, bias=None, eps=1e-5):
    """Bug class: dx correct only when gamma = 1 -- the fused backward reuses the per-row sums
    of g and g * xhat (the partial sums it already forms for dbias and dgamma) in dx, which
    needs the sums of h = gamma * g: dx = r * (h - mean(g) - xhat * mean(g * xhat)).

    The direct term gamma * g is right, so the error is invisible without affine parameters
    or with gamma = 1. Caught by a backward check with gamma != 1, by finite differences,
    and by the invariant sum_group dx = 0 (with gamma varying over the row).
    """
    view = layer_norm_view(x, normalized_shape, weight, bias)
    return HandWrittenNorm.apply(x, weight, bias, view, eps, "reductions_without_gamma")


def group_norm_dgamma_per_group(x, num_groups, weight=None, bias=None, eps=1e-5):
    """Bug class: parameter gradient summed over the wrong axes -- dweight sums g * xhat over
    the whole group (the channels of a group included) and gives every channel of the group
    that total, instead of summing over batch and spatial axes per channel.

    Forward, dx and dbias are exact; dweight is exact when each group has one channel
    (G = C). Caught by a backward check of dweight (or finite differences) with C/G > 1.
    """
    return HandWrittenNorm.apply(x, weight, bias, group_norm_view(x, num_groups), eps, "dgamma_per_group")


def batch_norm_stats_without_grad(x, running_mean, running_var, weight=None, bias=None, training=False,
                                  momentum=0.1, eps=1e-5):
    """Bug class: statistics cut from the autograd graph -- in training the batch mean and
    variance are computed under ``torch.no_grad()`` (together with the running-statistics
    update that needs them), so autograd sees them as constants and dx = r * gamma * g.

    Output, running statistics, dweight, dbias and all of eval mode are exact. Caught in
    training by a backward check of dx, by finite differences and by the invariant
    sum_group dx = 0.
    """
    if not training:
        return _batch_norm_from(x, running_mean, running_var, weight, bias, training, momentum, eps)
    _verify_batch_size(x)
    xf = x.to(_compute_dtype(x))
    with torch.no_grad():
        mu, var = _two_pass(xf, (0, *range(2, x.dim())))
        _update_running(running_mean, running_var, mu.flatten(), var.flatten(), xf.numel() // xf.shape[1],
                        momentum)
    xhat = (xf - mu) * _rstd(var, eps)
    return _affine(xhat, _per_channel(weight, x), _per_channel(bias, x)).to(x.dtype)
