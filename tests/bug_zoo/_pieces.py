"""Correct pieces the zoo adds to those of :mod:`tests.broken.impls`: a group_norm with a
pluggable inverse scale, and one hand-written-backward normalization (layer_norm and
group_norm) into which a backward bug is switched by name."""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch.autograd.function import once_differentiable

from tests.broken.impls import (
    _affine,
    _check_groups,
    _compute_dtype,
    _per_channel,
    _rstd,
    _trailing_dims,
    _two_pass,
)


def group_norm_from(x, num_groups, weight, bias, eps, *, rstd=_rstd):
    """Correct group_norm (contiguous channel groups) with a pluggable ``rstd(var, eps)``."""
    _check_groups(x, num_groups)
    xg = x.to(_compute_dtype(x)).reshape(x.shape[0], num_groups, -1)
    mu, var = _two_pass(xg, (2,))
    xhat = ((xg - mu) * rstd(var, eps)).reshape(x.shape)
    return _affine(xhat, _per_channel(weight, x), _per_channel(bias, x)).to(x.dtype)


@dataclass(frozen=True)
class WorkView:
    """x seen as ``shape``, statistics over ``stat_dims``, parameters shaped ``param_shape``
    (1 on the axes the parameter gradients sum over)."""

    shape: tuple[int, ...]
    stat_dims: tuple[int, ...]
    param_shape: tuple[int, ...]

    @property
    def param_dims(self) -> tuple[int, ...]:
        return tuple(d for d, size in enumerate(self.param_shape) if size == 1)


def layer_norm_view(x, normalized_shape, weight, bias) -> WorkView:
    dims = _trailing_dims(x, normalized_shape, weight, bias)
    return WorkView(tuple(x.shape), dims, (1,) * dims[0] + tuple(x.shape[dims[0]:]))


def group_norm_view(x, num_groups) -> WorkView:
    _check_groups(x, num_groups)
    n, c, spatial = x.shape[0], x.shape[1], math.prod(x.shape[2:])
    return WorkView((n, num_groups, c // num_groups, spatial), (2, 3), (1, num_groups, c // num_groups, 1))


class HandWrittenNorm(torch.autograd.Function):
    """Centered normalization over ``view.stat_dims`` with the closed-form backward of
    DESIGN.md, dx = r * (h - mean(h) - xhat * mean(h * xhat)), h = gamma * g; ``bug`` (None:
    correct) switches in one mistake of a hand-written kernel. Once-differentiable."""

    @staticmethod
    def forward(ctx, x, weight, bias, view, eps, bug):
        xf = x.to(_compute_dtype(x)).reshape(view.shape)
        mu, var = _two_pass(xf, view.stat_dims)
        rstd = _rstd(var, eps)
        xhat = (xf - mu) * rstd
        w = None if weight is None else weight.to(xf.dtype).reshape(view.param_shape)
        b = None if bias is None else bias.to(xf.dtype).reshape(view.param_shape)
        ctx.save_for_backward(xhat, rstd, weight)
        ctx.view, ctx.bug, ctx.x_shape, ctx.x_dtype = view, bug, x.shape, x.dtype
        ctx.bias = None if bias is None else (bias.shape, bias.dtype)
        return _affine(xhat, w, b).reshape(x.shape).to(x.dtype)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out):
        xhat, rstd, weight = ctx.saved_tensors
        view, bug = ctx.view, ctx.bug
        mean = lambda t: t.mean(view.stat_dims, keepdim=True)  # noqa: E731
        g = grad_out.to(xhat.dtype).reshape(view.shape)
        w = None if weight is None else weight.to(g.dtype).reshape(view.param_shape)
        h = g if w is None else g * w * w if bug == "gamma_twice" else g * w
        if bug == "reductions_without_gamma":  # the row sums of g and g*xhat (dbias/dgamma partials) reused
            dx = h - mean(g) - xhat * mean(g * xhat)
        else:
            dx = h - (0 if bug == "no_mean_h" else mean(h)) - xhat * mean(h * xhat)
        dx = (rstd * dx).reshape(ctx.x_shape).to(ctx.x_dtype) if ctx.needs_input_grad[0] else None
        dweight = dbias = None
        dims = view.param_dims
        if weight is not None and ctx.needs_input_grad[1]:
            gx = g * xhat
            if bug == "dgamma_per_group":  # summed over the group's axes too, then spread over the group
                dweight = gx.sum(sorted({*dims, *view.stat_dims}), keepdim=True).expand(view.param_shape)
            else:
                dweight = gx.sum(dims, keepdim=True) if dims else gx
            dweight = dweight.reshape(weight.shape).to(weight.dtype)
        if ctx.bias is not None and ctx.needs_input_grad[2]:
            shape, dtype = ctx.bias
            dbias = (g.sum(dims, keepdim=True) if dims else g).reshape(shape).to(dtype)
        return dx, dweight, dbias, None, None, None
