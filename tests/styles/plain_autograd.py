"""Normalization layers in plain torch ops, differentiated by torch autograd.

Statistics are two-pass: the mean, then the mean of squared deviations (biased). No
reshapes: layer_norm and rms_norm reduce over the trailing dims, batch_norm and
instance_norm over their axes of x, group_norm slices the channels group by group.
16-bit inputs are computed in float32 and the result is cast back, as torch does.
"""
from __future__ import annotations

import torch

__all__ = ["batch_norm", "group_norm", "instance_norm", "layer_norm", "rms_norm"]


def _compute_dtype(x: torch.Tensor) -> torch.dtype:
    return torch.float32 if x.dtype in (torch.float16, torch.bfloat16) else x.dtype


def _up(t: torch.Tensor | None, dtype: torch.dtype) -> torch.Tensor | None:
    return None if t is None else t.to(dtype)


def _per_channel(p: torch.Tensor, ndim: int) -> torch.Tensor:
    """A (C,) tensor shaped to broadcast against (N, C, *S)."""
    return p.reshape(1, -1, *([1] * (ndim - 2)))


def _affine(xhat: torch.Tensor, weight, bias) -> torch.Tensor:
    y = xhat
    if weight is not None:
        y = y * weight
    if bias is not None:
        y = y + bias
    return y


def _centered_stats(x: torch.Tensor, dims: tuple[int, ...]) -> tuple[torch.Tensor, torch.Tensor]:
    mean = x.mean(dim=dims, keepdim=True)
    var = ((x - mean) ** 2).mean(dim=dims, keepdim=True)
    return mean, var


def layer_norm(x, normalized_shape, weight=None, bias=None, eps=1e-5):
    dtype = _compute_dtype(x)
    xc = x.to(dtype)
    dims = tuple(range(x.ndim - len(tuple(normalized_shape)), x.ndim))
    mean, var = _centered_stats(xc, dims)
    xhat = (xc - mean) / torch.sqrt(var + eps)
    return _affine(xhat, _up(weight, dtype), _up(bias, dtype)).to(x.dtype)


def rms_norm(x, normalized_shape, weight=None, eps=None):
    dtype = _compute_dtype(x)
    if eps is None:
        eps = torch.finfo(dtype).eps
    xc = x.to(dtype)
    dims = tuple(range(x.ndim - len(tuple(normalized_shape)), x.ndim))
    ms = (xc * xc).mean(dim=dims, keepdim=True)
    xhat = xc / torch.sqrt(ms + eps)
    return _affine(xhat, _up(weight, dtype), None).to(x.dtype)


def group_norm(x, num_groups, weight=None, bias=None, eps=1e-5):
    dtype = _compute_dtype(x)
    xc = x.to(dtype)
    channels = x.shape[1]
    if channels % num_groups:
        raise ValueError(f"num_groups={num_groups} does not divide the {channels} channels")
    per_group = channels // num_groups
    dims = tuple(d for d in range(x.ndim) if d != 0)  # over the group's channels and the spatial axes
    pieces = []
    for g in range(num_groups):
        part = xc[:, g * per_group:(g + 1) * per_group]
        mean, var = _centered_stats(part, dims)
        pieces.append((part - mean) / torch.sqrt(var + eps))
    xhat = torch.cat(pieces, dim=1)
    w = None if weight is None else _per_channel(weight.to(dtype), x.ndim)
    b = None if bias is None else _per_channel(bias.to(dtype), x.ndim)
    return _affine(xhat, w, b).to(x.dtype)


def _update_running(running_mean, running_var, mean, unbiased_var, momentum):
    """torch's update: running = (1 - m) * running + m * batch, in the buffers' own storage."""
    with torch.no_grad():
        if running_mean is not None:
            new = (1 - momentum) * running_mean.to(mean.dtype) + momentum * mean
            running_mean.copy_(new)
        if running_var is not None:
            new = (1 - momentum) * running_var.to(unbiased_var.dtype) + momentum * unbiased_var
            running_var.copy_(new)


def batch_norm(x, running_mean, running_var, weight=None, bias=None, training=False, momentum=0.1, eps=1e-5):
    dtype = _compute_dtype(x)
    xc = x.to(dtype)
    dims = (0, *range(2, x.ndim))
    if training:
        mean, var = _centered_stats(xc, dims)
        n = x.numel() // x.shape[1]
        if n <= 1:
            raise ValueError(f"expected more than 1 value per channel when training, got shape {tuple(x.shape)}")
        _update_running(running_mean, running_var, mean.detach().reshape(-1),
                        var.detach().reshape(-1) * (n / (n - 1)), momentum)
    else:
        mean = _per_channel(running_mean.to(dtype), x.ndim)
        var = _per_channel(running_var.to(dtype), x.ndim)
    xhat = (xc - mean) / torch.sqrt(var + eps)
    w = None if weight is None else _per_channel(weight.to(dtype), x.ndim)
    b = None if bias is None else _per_channel(bias.to(dtype), x.ndim)
    return _affine(xhat, w, b).to(x.dtype)


def instance_norm(x, running_mean=None, running_var=None, weight=None, bias=None, use_input_stats=True,
                  momentum=0.1, eps=1e-5):
    dtype = _compute_dtype(x)
    xc = x.to(dtype)
    dims = tuple(range(2, x.ndim))
    if use_input_stats:
        mean, var = _centered_stats(xc, dims)
        n = 1
        for d in dims:
            n *= x.shape[d]
        if n <= 1:
            raise ValueError(f"expected more than 1 spatial element when training, got shape {tuple(x.shape)}")
        # the batch average of the per-instance statistics (unbiased variance)
        _update_running(running_mean, running_var, mean.detach().mean(dim=0).reshape(-1),
                        (var.detach() * (n / (n - 1))).mean(dim=0).reshape(-1), momentum)
    else:
        mean = _per_channel(running_mean.to(dtype), x.ndim)
        var = _per_channel(running_var.to(dtype), x.ndim)
    xhat = (xc - mean) / torch.sqrt(var + eps)
    w = None if weight is None else _per_channel(weight.to(dtype), x.ndim)
    b = None if bias is None else _per_channel(bias.to(dtype), x.ndim)
    return _affine(xhat, w, b).to(x.dtype)
