"""Kernels in aten's saved-statistics calling convention (``normspec.derive.abi``), written in plain
torch ops: forwards that return (y, mean, rstd) (rms_norm: (y, rstd)) with the statistics in the
compute dtype (float32 for 16-bit x), backwards that recompute xhat from them and honour
output_mask; a NumPy backward from the output for rms_norm; and a few bugs, each named for what
it gets wrong."""
from __future__ import annotations

import numpy as np
import torch

from tests.styles.from_output import layer_norm_backward_from_output


def _wide(t: torch.Tensor) -> torch.dtype:
    return torch.float32 if t.dtype in (torch.float16, torch.bfloat16) else t.dtype


def _sum_leading(t: torch.Tensor, k: int) -> torch.Tensor:
    leading = tuple(range(t.ndim - k))
    return t.sum(leading) if leading else t.clone()  # sum(()) would sum everything; a copy: never an alias


# --- layer_norm ------------------------------------------------------------------------------

def layer_norm_forward(x, normalized_shape, weight, bias, eps):
    """native_layer_norm's signature: (y, mean, rstd), the statistics in the compute dtype."""
    dims = tuple(range(x.ndim - len(normalized_shape), x.ndim))
    xf = x.to(_wide(x))
    mean = xf.mean(dims, keepdim=True)
    rstd = torch.rsqrt(((xf - mean) ** 2).mean(dims, keepdim=True) + eps)
    y = (xf - mean) * rstd
    y = y * weight.to(y.dtype) if weight is not None else y
    y = y + bias.to(y.dtype) if bias is not None else y
    return y.to(x.dtype), mean, rstd


def layer_norm_backward(grad_out, x, normalized_shape, mean, rstd, weight, bias, output_mask):
    """native_layer_norm_backward's signature: (dx, dweight, dbias), None where masked; the saved
    statistics are read in the compute dtype, whatever dtype they were saved in."""
    k = len(normalized_shape)
    dims = tuple(range(x.ndim - k, x.ndim))
    wide = _wide(x)
    g, xf, mean, rstd = grad_out.to(wide), x.to(wide), mean.to(wide), rstd.to(wide)
    xhat = (xf - mean) * rstd
    h = g * weight.to(wide) if weight is not None else g
    dx = rstd * (h - h.mean(dims, keepdim=True) - xhat * (h * xhat).mean(dims, keepdim=True))
    return (dx.to(x.dtype) if output_mask[0] else None,
            _sum_leading(g * xhat, k).to(weight.dtype) if output_mask[1] else None,
            _sum_leading(g, k).to(bias.dtype) if output_mask[2] else None)


def layer_norm_forward_y_only(x, normalized_shape, weight, bias, eps):
    """Bug: a functional forward given where an aten one is declared (returns y alone)."""
    return layer_norm_forward(x, normalized_shape, weight, bias, eps)[0]


def layer_norm_forward_saves_var(x, normalized_shape, weight, bias, eps):
    """Bug: stores the variance where rstd belongs (FlagGems #5771)."""
    y, mean, rstd = layer_norm_forward(x, normalized_shape, weight, bias, eps)
    return y, mean, 1 / rstd ** 2 - eps


def layer_norm_backward_ignores_mask(grad_out, x, normalized_shape, mean, rstd, weight, bias, output_mask):
    """Bug: computes every gradient whatever output_mask says."""
    return layer_norm_backward(grad_out, x, normalized_shape, mean, rstd, weight, bias,
                               [True, weight is not None, bias is not None])


def layer_norm_backward_drops_projection(grad_out, x, normalized_shape, mean, rstd, weight, bias, output_mask):
    """Bug: dx without the xhat * mean(h * xhat) term."""
    k = len(normalized_shape)
    dims = tuple(range(x.ndim - k, x.ndim))
    wide = mean.dtype
    g = grad_out.to(wide)
    h = g * weight.to(wide) if weight is not None else g
    dx = rstd * (h - h.mean(dims, keepdim=True))
    _, dweight, dbias = layer_norm_backward(grad_out, x, normalized_shape, mean, rstd, weight, bias, output_mask)
    return (dx.to(x.dtype) if output_mask[0] else None, dweight, dbias)


# --- rms_norm --------------------------------------------------------------------------------

def rms_norm_forward(x, normalized_shape, weight, eps):
    """_fused_rms_norm's signature: (y, rstd); eps None is the compute dtype's epsilon, as torch's."""
    dims = tuple(range(x.ndim - len(normalized_shape), x.ndim))
    wide = _wide(x)
    xf = x.to(wide)
    eps = torch.finfo(wide).eps if eps is None else eps
    rstd = torch.rsqrt((xf * xf).mean(dims, keepdim=True) + eps)
    y = xf * rstd
    y = y * weight.to(wide) if weight is not None else y
    return y.to(x.dtype), rstd


def rms_norm_backward(grad_out, x, normalized_shape, rstd, weight, output_mask):
    """_fused_rms_norm_backward's signature: (dx, dweight), None where masked."""
    k = len(normalized_shape)
    dims = tuple(range(x.ndim - k, x.ndim))
    wide = rstd.dtype
    g, xf = grad_out.to(wide), x.to(wide)
    xhat = xf * rstd
    h = g * weight.to(wide) if weight is not None else g
    dx = rstd * (h - xhat * (h * xhat).mean(dims, keepdim=True))
    return (dx.to(x.dtype) if output_mask[0] else None,
            _sum_leading(g * xhat, k).to(weight.dtype) if output_mask[1] else None)


# --- backwards from the output ---------------------------------------------------------------

def numpy_rms_norm_backward_from_output(grad_out, y, normalized_shape, rstd, weight):
    """rms_norm_backward_from_output in NumPy, float64 throughout, results cast to the inputs' dtypes."""
    k = len(normalized_shape)
    dims = tuple(range(y.ndim - k, y.ndim))
    g, w, r = (np.asarray(a, dtype=np.float64) for a in (grad_out, weight, rstd))
    xhat = np.asarray(y, dtype=np.float64) / w
    h = g * w
    dx = r * (h - xhat * (h * xhat).mean(dims, keepdims=True))
    leading = tuple(range(y.ndim - k))
    return dx.astype(y.dtype), (g * xhat).sum(leading).astype(weight.dtype)


def layer_norm_backward_from_output_forgets_bias(grad_out, y, normalized_shape, rstd, weight, bias):
    """Bug: reconstructs xhat = y / weight, forgetting to subtract the bias first."""
    dx, dweight, _ = layer_norm_backward_from_output(grad_out, y, normalized_shape, rstd, weight, None)
    dbias = _sum_leading(grad_out.to(_wide(grad_out)), len(normalized_shape)).to(bias.dtype) if bias is not None else None
    return dx, dweight, dbias
