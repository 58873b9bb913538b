"""Normalization layers as ``torch.autograd.Function``s whose backward is a hand-written closed form.

For one group of N elements with xhat = (x - mean) * rstd, rstd = 1 / sqrt(var + eps) and
h = weight * grad_out:

    dx      = rstd * (h - mean(h) - xhat * mean(h * xhat))   (RMS: no mean(h) term, xhat = x * rstd)
    dweight = sum over the non-affine axes of grad_out * xhat
    dbias   = sum over the non-affine axes of grad_out

With given statistics (batch_norm in eval, instance_norm with use_input_stats=False) the
statistics are constants: dx = rstd * h. Written from these formulas; 16-bit inputs are
computed in float32 and every result is cast back to its input's dtype, as torch does.
"""
from __future__ import annotations

import torch

__all__ = ["batch_norm", "group_norm", "instance_norm", "layer_norm", "rms_norm"]


def _compute_dtype(x: torch.Tensor) -> torch.dtype:
    return torch.float32 if x.dtype in (torch.float16, torch.bfloat16) else x.dtype


def _up(t, dtype):
    return None if t is None else t.to(dtype)


def _centered(x: torch.Tensor, dims: tuple[int, ...], eps: float):
    """(xhat, rstd) over ``dims``: two-pass mean and biased variance."""
    mean = x.mean(dim=dims, keepdim=True)
    d = x - mean
    var = (d * d).mean(dim=dims, keepdim=True)
    rstd = 1.0 / torch.sqrt(var + eps)
    return d * rstd, rstd, mean, var


def _dx_batch_stats(h, xhat, rstd, dims, centered=True):
    """dx when the statistics come from x itself (the two paths: direct and through mean/var)."""
    inner = h - xhat * (h * xhat).mean(dim=dims, keepdim=True)
    if centered:
        inner = inner - h.mean(dim=dims, keepdim=True)
    return rstd * inner


def _sum_to(t: torch.Tensor, keep: tuple[int, ...], shape) -> torch.Tensor:
    """Sum ``t`` over every axis not in ``keep``, shaped like ``shape``."""
    others = tuple(d for d in range(t.ndim) if d not in keep)
    out = t.sum(dim=others) if others else t
    return out.reshape(shape)


def _per_channel(p: torch.Tensor, ndim: int) -> torch.Tensor:
    return p.reshape(1, -1, *([1] * (ndim - 2)))


def _cast(t, dtype):
    return None if t is None or dtype is None else t.to(dtype)


def _dtype(t):
    """What backward needs to know of an input: its dtype (None: the input was None)."""
    return None if t is None else t.dtype


def _affine(xhat, w, b):
    y = xhat if w is None else xhat * w
    return y if b is None else y + b


class _LayerNorm(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias, normalized_shape, eps):
        dtype = _compute_dtype(x)
        k = len(normalized_shape)
        dims = tuple(range(x.ndim - k, x.ndim))
        xhat, rstd, _, _ = _centered(x.to(dtype), dims, eps)
        w, b = _up(weight, dtype), _up(bias, dtype)
        ctx.save_for_backward(xhat, rstd, w)
        ctx.meta = (dims, x.shape, x.dtype, _dtype(weight), _dtype(bias))
        return _affine(xhat, w, b).to(x.dtype)

    @staticmethod
    def backward(ctx, grad_out):
        xhat, rstd, w = ctx.saved_tensors
        dims, x_shape, x_dtype, weight_dtype, bias_dtype = ctx.meta
        g = grad_out.to(xhat.dtype)
        h = g if w is None else g * w
        dx = _dx_batch_stats(h, xhat, rstd, dims)
        shape = tuple(x_shape[d] for d in dims)
        dweight = None if weight_dtype is None else _sum_to(g * xhat, dims, shape)
        dbias = None if bias_dtype is None else _sum_to(g, dims, shape)
        return dx.to(x_dtype), _cast(dweight, weight_dtype), _cast(dbias, bias_dtype), None, None


class _RMSNorm(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, normalized_shape, eps):
        dtype = _compute_dtype(x)
        if eps is None:
            eps = torch.finfo(dtype).eps
        k = len(normalized_shape)
        dims = tuple(range(x.ndim - k, x.ndim))
        xc = x.to(dtype)
        rstd = 1.0 / torch.sqrt((xc * xc).mean(dim=dims, keepdim=True) + eps)
        xhat = xc * rstd
        w = _up(weight, dtype)
        ctx.save_for_backward(xhat, rstd, w)
        ctx.meta = (dims, x.shape, x.dtype, _dtype(weight))
        return _affine(xhat, w, None).to(x.dtype)

    @staticmethod
    def backward(ctx, grad_out):
        xhat, rstd, w = ctx.saved_tensors
        dims, x_shape, x_dtype, weight_dtype = ctx.meta
        g = grad_out.to(xhat.dtype)
        h = g if w is None else g * w
        dx = _dx_batch_stats(h, xhat, rstd, dims, centered=False)
        shape = tuple(x_shape[d] for d in dims)
        dweight = None if weight_dtype is None else _sum_to(g * xhat, dims, shape)
        return dx.to(x_dtype), _cast(dweight, weight_dtype), None, None


class _GroupNorm(torch.autograd.Function):
    """Works on the view (N, G, C/G, *S); statistics over (C/G, *S)."""

    @staticmethod
    def forward(ctx, x, weight, bias, num_groups, eps):
        dtype = _compute_dtype(x)
        n, c = x.shape[0], x.shape[1]
        if c % num_groups:
            raise ValueError(f"num_groups={num_groups} does not divide the {c} channels")
        spatial = tuple(x.shape[2:])
        grouped = x.to(dtype).reshape(n, num_groups, c // num_groups, *spatial)
        dims = tuple(range(2, grouped.ndim))
        xhat, rstd, _, _ = _centered(grouped, dims, eps)
        param_shape = (1, num_groups, c // num_groups, *([1] * len(spatial)))
        w = None if weight is None else weight.to(dtype).reshape(param_shape)
        b = None if bias is None else bias.to(dtype).reshape(param_shape)
        ctx.save_for_backward(xhat, rstd, w)
        ctx.meta = (dims, x.shape, x.dtype, _dtype(weight), _dtype(bias))
        return _affine(xhat, w, b).reshape(x.shape).to(x.dtype)

    @staticmethod
    def backward(ctx, grad_out):
        xhat, rstd, w = ctx.saved_tensors
        dims, x_shape, x_dtype, weight_dtype, bias_dtype = ctx.meta
        g = grad_out.to(xhat.dtype).reshape(xhat.shape)
        h = g if w is None else g * w
        dx = _dx_batch_stats(h, xhat, rstd, dims).reshape(x_shape)
        channels = (x_shape[1],)
        dweight = None if weight_dtype is None else _sum_to(g * xhat, (1, 2), channels)
        dbias = None if bias_dtype is None else _sum_to(g, (1, 2), channels)
        return dx.to(x_dtype), _cast(dweight, weight_dtype), _cast(dbias, bias_dtype), None, None


def _update_running(running_mean, running_var, mean, unbiased_var, momentum):
    if running_mean is not None:
        running_mean.copy_((1 - momentum) * running_mean.to(mean.dtype) + momentum * mean)
    if running_var is not None:
        running_var.copy_((1 - momentum) * running_var.to(unbiased_var.dtype) + momentum * unbiased_var)


class _ChannelNorm(torch.autograd.Function):
    """The shared body of batch_norm (statistics over N and S) and instance_norm (over S, per sample): per-channel
    affine; batch statistics, or the given running ones (then dx = rstd * h)."""

    @staticmethod
    def forward(ctx, x, running_mean, running_var, weight, bias, batch_stats, momentum, eps, per_sample):
        dtype = _compute_dtype(x)
        xc = x.to(dtype)
        dims = tuple(range(2, x.ndim)) if per_sample else (0, *range(2, x.ndim))
        if batch_stats:
            n = 1
            for d in dims:
                n *= x.shape[d]
            if n <= 1:
                raise ValueError(f"expected more than 1 value per group when training, got shape {tuple(x.shape)}")
            xhat, rstd, mean, var = _centered(xc, dims, eps)
            unbiased = var * (n / (n - 1))
            if per_sample:  # the batch average of the per-instance statistics
                mean, unbiased = mean.mean(dim=0), unbiased.mean(dim=0)
            _update_running(running_mean, running_var, mean.reshape(-1), unbiased.reshape(-1), momentum)
        else:
            mean = _per_channel(running_mean.to(dtype), x.ndim)
            rstd = 1.0 / torch.sqrt(_per_channel(running_var.to(dtype), x.ndim) + eps)
            xhat = (xc - mean) * rstd
        w = None if weight is None else _per_channel(weight.to(dtype), x.ndim)
        b = None if bias is None else _per_channel(bias.to(dtype), x.ndim)
        ctx.save_for_backward(xhat, rstd, w)
        ctx.meta = (dims, batch_stats, x.shape, x.dtype, _dtype(weight), _dtype(bias))
        return _affine(xhat, w, b).to(x.dtype)

    @staticmethod
    def backward(ctx, grad_out):
        xhat, rstd, w = ctx.saved_tensors
        dims, batch_stats, x_shape, x_dtype, weight_dtype, bias_dtype = ctx.meta
        g = grad_out.to(xhat.dtype)
        h = g if w is None else g * w
        dx = _dx_batch_stats(h, xhat, rstd, dims) if batch_stats else rstd * h
        channels = (x_shape[1],)
        dweight = None if weight_dtype is None else _sum_to(g * xhat, (1,), channels)
        dbias = None if bias_dtype is None else _sum_to(g, (1,), channels)
        no_grad = (None,) * 4  # batch_stats, momentum, eps, per_sample
        return dx.to(x_dtype), None, None, _cast(dweight, weight_dtype), _cast(dbias, bias_dtype), *no_grad


class _BatchNorm(_ChannelNorm):
    """Statistics over N and the spatial axes, per channel."""


class _InstanceNorm(_ChannelNorm):
    """Statistics over the spatial axes, per sample and channel; the running update averages
    the per-instance statistics over the batch."""


def layer_norm(x, normalized_shape, weight=None, bias=None, eps=1e-5):
    return _LayerNorm.apply(x, weight, bias, tuple(normalized_shape), eps)


def rms_norm(x, normalized_shape, weight=None, eps=None):
    return _RMSNorm.apply(x, weight, tuple(normalized_shape), eps)


def group_norm(x, num_groups, weight=None, bias=None, eps=1e-5):
    return _GroupNorm.apply(x, weight, bias, num_groups, eps)


def batch_norm(x, running_mean, running_var, weight=None, bias=None, training=False, momentum=0.1, eps=1e-5):
    return _BatchNorm.apply(x, running_mean, running_var, weight, bias, training, momentum, eps, False)


def instance_norm(x, running_mean=None, running_var=None, weight=None, bias=None, use_input_stats=True,
                  momentum=0.1, eps=1e-5):
    return _InstanceNorm.apply(x, running_mean, running_var, weight, bias, use_input_stats, momentum, eps, True)
