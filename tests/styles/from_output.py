"""Backwards from the output (Apex's memory-efficient form), written two ways: torch ops in the
input's compute dtype, and NumPy in float64 with a hand-written formula. Each reconstructs
xhat = (y - bias) / weight and never sees x."""
from __future__ import annotations

import numpy as np
import torch


def _wide(t: torch.Tensor) -> torch.dtype:
    return torch.float32 if t.dtype in (torch.float16, torch.bfloat16) else t.dtype


def _torch_from_output(grad_out, y, normalized_shape, rstd, weight, bias, *, centered):
    dims = tuple(range(y.ndim - len(normalized_shape), y.ndim))
    wide = _wide(y)
    g, w, r = grad_out.to(wide), weight.to(wide), rstd.to(wide)
    shifted = y.to(wide) - bias.to(wide) if bias is not None else y.to(wide)
    xhat = shifted / w
    h = g * w
    inner = h - xhat * (h * xhat).mean(dims, keepdim=True)
    if centered:
        inner = inner - h.mean(dims, keepdim=True)
    dx = (r * inner).to(y.dtype)
    leading = tuple(range(y.ndim - len(normalized_shape)))
    summed = (lambda t: t.sum(leading)) if leading else (lambda t: t.clone())  # noqa: E731 -- sum(()) sums all
    dweight = summed(g * xhat).to(weight.dtype)
    dbias = summed(g).to(bias.dtype) if bias is not None else None
    return (dx, dweight, dbias) if centered else (dx, dweight)


def layer_norm_backward_from_output(grad_out, y, normalized_shape, rstd, weight, bias):
    return _torch_from_output(grad_out, y, normalized_shape, rstd, weight, bias, centered=True)


def rms_norm_backward_from_output(grad_out, y, normalized_shape, rstd, weight):
    return _torch_from_output(grad_out, y, normalized_shape, rstd, weight, None, centered=False)


def numpy_layer_norm_backward_from_output(grad_out, y, normalized_shape, rstd, weight, bias):
    """float64 throughout, results cast to the inputs' dtypes."""
    k = len(normalized_shape)
    dims = tuple(range(y.ndim - k, y.ndim))
    g, w, r = (np.asarray(a, dtype=np.float64) for a in (grad_out, weight, rstd))
    xhat = (np.asarray(y, dtype=np.float64) - (np.asarray(bias, dtype=np.float64) if bias is not None else 0)) / w
    h = g * w
    dx = r * (h - h.mean(dims, keepdims=True) - xhat * (h * xhat).mean(dims, keepdims=True))
    leading = tuple(range(y.ndim - k))
    dbias = g.sum(leading).astype(bias.dtype) if bias is not None else None
    return dx.astype(y.dtype), (g * xhat).sum(leading).astype(weight.dtype), dbias
