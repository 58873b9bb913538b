"""Normalization layers that reshape every variant onto (rows, elements) and normalize the rows.

group_norm reshapes (N, C, *S) to (N, G, -1); instance_norm is that with G = C; batch_norm moves
C first and reshapes to (C, -1); layer_norm and rms_norm flatten the normalized dims to one. The
statistics are ``torch.var_mean`` (biased) over the last axis; gradients come from autograd.
16-bit inputs are computed in float32 and the result is cast back, as torch does.
"""
from __future__ import annotations

import math

import torch

__all__ = ["batch_norm", "group_norm", "instance_norm", "layer_norm", "rms_norm"]


def _compute_dtype(x: torch.Tensor) -> torch.dtype:
    return torch.float32 if x.dtype in (torch.float16, torch.bfloat16) else x.dtype


def _rows(x2: torch.Tensor, eps: float, *, centered: bool = True) -> torch.Tensor:
    """Normalize each row of a (..., M) tensor over its last axis."""
    if centered:
        var, mean = torch.var_mean(x2, dim=-1, keepdim=True, correction=0)
        return (x2 - mean) * torch.rsqrt(var + eps)
    return x2 * torch.rsqrt((x2 * x2).mean(dim=-1, keepdim=True) + eps)


def _channel_affine(y: torch.Tensor, weight, bias) -> torch.Tensor:
    """y (N, C, *S) times weight[c], plus bias[c]: through a (N, C, -1) view."""
    flat = y.reshape(y.shape[0], y.shape[1], -1)
    if weight is not None:
        flat = flat * weight.to(flat.dtype).reshape(-1, 1)
    if bias is not None:
        flat = flat + bias.to(flat.dtype).reshape(-1, 1)
    return flat.reshape(y.shape)


def _trailing(x, normalized_shape, weight, bias, eps, centered):
    dtype = _compute_dtype(x)
    size = math.prod(tuple(normalized_shape))
    flat = x.to(dtype).reshape(-1, size)
    y = _rows(flat, eps, centered=centered)
    if weight is not None:
        y = y * weight.to(dtype).reshape(size)
    if bias is not None:
        y = y + bias.to(dtype).reshape(size)
    return y.reshape(x.shape).to(x.dtype)


def layer_norm(x, normalized_shape, weight=None, bias=None, eps=1e-5):
    return _trailing(x, normalized_shape, weight, bias, eps, centered=True)


def rms_norm(x, normalized_shape, weight=None, eps=None):
    if eps is None:
        eps = torch.finfo(_compute_dtype(x)).eps
    return _trailing(x, normalized_shape, weight, None, eps, centered=False)


def group_norm(x, num_groups, weight=None, bias=None, eps=1e-5):
    n, c = x.shape[0], x.shape[1]
    if c % num_groups:
        raise ValueError(f"num_groups={num_groups} does not divide the {c} channels")
    grouped = x.to(_compute_dtype(x)).reshape(n, num_groups, -1)
    y = _rows(grouped, eps).reshape(x.shape)
    return _channel_affine(y, weight, bias).to(x.dtype)


def _running_update(running_mean, running_var, mean, unbiased, momentum):
    with torch.no_grad():
        if running_mean is not None:
            running_mean.copy_(running_mean.to(mean.dtype) * (1 - momentum) + mean * momentum)
        if running_var is not None:
            running_var.copy_(running_var.to(unbiased.dtype) * (1 - momentum) + unbiased * momentum)


def _given_stats(x, running_mean, running_var, weight, bias, eps):
    """Normalize (N, C, *S) with per-channel given statistics, through (C, -1)."""
    dtype = _compute_dtype(x)
    moved = x.to(dtype).transpose(0, 1)
    flat = moved.reshape(x.shape[1], -1)
    mean = running_mean.to(dtype).reshape(-1, 1)
    var = running_var.to(dtype).reshape(-1, 1)
    y = ((flat - mean) * torch.rsqrt(var + eps)).reshape(moved.shape).transpose(0, 1)
    return _channel_affine(y, weight, bias).to(x.dtype)


def instance_norm(x, running_mean=None, running_var=None, weight=None, bias=None, use_input_stats=True,
                  momentum=0.1, eps=1e-5):
    if not use_input_stats:
        return _given_stats(x, running_mean, running_var, weight, bias, eps)
    n, c = x.shape[0], x.shape[1]
    grouped = x.to(_compute_dtype(x)).reshape(n, c, -1)  # group_norm with G = C
    m = grouped.shape[-1]
    if m <= 1:
        raise ValueError(f"expected more than 1 spatial element when training, got shape {tuple(x.shape)}")
    if running_mean is not None or running_var is not None:
        with torch.no_grad():
            var, mean = torch.var_mean(grouped.detach(), dim=-1, correction=1)  # (N, C), unbiased
            _running_update(running_mean, running_var, mean.mean(dim=0), var.mean(dim=0), momentum)
    y = _rows(grouped, eps).reshape(x.shape)
    return _channel_affine(y, weight, bias).to(x.dtype)


def batch_norm(x, running_mean, running_var, weight=None, bias=None, training=False, momentum=0.1, eps=1e-5):
    if not training:
        return _given_stats(x, running_mean, running_var, weight, bias, eps)
    moved = x.to(_compute_dtype(x)).transpose(0, 1)  # (C, N, *S)
    flat = moved.reshape(x.shape[1], -1)
    if flat.shape[1] <= 1:
        raise ValueError(f"expected more than 1 value per channel when training, got shape {tuple(x.shape)}")
    if running_mean is not None or running_var is not None:
        with torch.no_grad():
            var, mean = torch.var_mean(flat.detach(), dim=-1, correction=1)
            _running_update(running_mean, running_var, mean, var, momentum)
    y = _rows(flat, eps).reshape(moved.shape).transpose(0, 1)
    return _channel_affine(y, weight, bias).to(x.dtype)
