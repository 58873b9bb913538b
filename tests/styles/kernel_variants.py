"""The variants kernels ship, written as compositions (differentiated by torch autograd): one
two-pass normalize, then ``* (weight + weight_offset)``, of ``x + residual`` for the fused add,
``* (1 + scale) + shift`` broadcast by a view for the adaptive norms. Correct by construction; the
battery must pass them (a failure is a false alarm of normspec).

The normalize is written out (mean, then the mean of squared deviations, in float32 for 16-bit
inputs) rather than ``F.layer_norm``: torch's CPU float32 layer_norm is not correct on every case
the battery draws (``[-9999.99121094, -9999.99023438]``, two float32 values one ulp apart, with
eps=1e-12 gives [-976.56, 0.0] where the float64 truth is [-1, 1]), and a style must be right.

``gemma_rms_norm`` (the offset 1 built in, no keyword: checked with ``--option weight_offset=1``)
and ``fused_add_rms_norm_in_place`` (vLLM's form: y into x, the sum into residual, returns None:
checked with ``--convention fused_add=in_place``) are the two calling forms the battery takes
by declaration.
"""
from __future__ import annotations

import torch

__all__ = ["layer_norm", "rms_norm", "fused_add_layer_norm", "fused_add_rms_norm", "adaptive_layer_norm",
           "adaptive_rms_norm"]


def _wide(t):
    """16-bit tensors computed in float32, as torch's kernels accumulate."""
    return None if t is None else (t.float() if t.dtype in (torch.float16, torch.bfloat16) else t)


def _offset(weight, weight_offset):
    return None if weight is None else _wide(weight) + weight_offset


def _normalize(x, normalized_shape, eps, *, centered: bool):
    """xhat over the trailing normalized_shape, two-pass, in x's (widened) dtype."""
    dims = tuple(range(x.dim() - len(tuple(normalized_shape)), x.dim()))
    mean = x.mean(dims, keepdim=True) if centered else 0.0
    return (x - mean) / torch.sqrt(((x - mean) ** 2).mean(dims, keepdim=True) + eps)


def _affine(xhat, weight, bias, weight_offset):
    y = xhat if weight is None else xhat * _offset(weight, weight_offset)
    return y if bias is None else y + _wide(bias)


def _rms_eps(x, eps):
    return torch.finfo(x.dtype).eps if eps is None else eps


def layer_norm(x, normalized_shape, weight=None, bias=None, eps=1e-5, *, weight_offset=0.0):
    xhat = _normalize(_wide(x), normalized_shape, eps, centered=True)
    return _affine(xhat, weight, bias, weight_offset).to(x.dtype)


def rms_norm(x, normalized_shape, weight=None, eps=None, *, weight_offset=0.0):
    xhat = _normalize(_wide(x), normalized_shape, _rms_eps(_wide(x), eps), centered=False)
    return _affine(xhat, weight, None, weight_offset).to(x.dtype)


def fused_add_layer_norm(x, residual, normalized_shape, weight=None, bias=None, eps=1e-5, *, weight_offset=0.0):
    s = _wide(x) + _wide(residual)  # the sum in float32, normalized unrounded, returned rounded
    y = _affine(_normalize(s, normalized_shape, eps, centered=True), weight, bias, weight_offset)
    return y.to(x.dtype), s.to(x.dtype)


def fused_add_rms_norm(x, residual, normalized_shape, weight=None, eps=None, *, weight_offset=0.0):
    s = _wide(x) + _wide(residual)
    y = _affine(_normalize(s, normalized_shape, _rms_eps(s, eps), centered=False), weight, None, weight_offset)
    return y.to(x.dtype), s.to(x.dtype)


def _per_sample(p, x):
    return _wide(p).reshape(p.shape[0], *([1] * (x.dim() - p.dim())), *p.shape[1:])


def adaptive_layer_norm(x, normalized_shape, scale, shift, eps=1e-6):
    xhat = _normalize(_wide(x), normalized_shape, eps, centered=True)
    return (xhat * (1 + _per_sample(scale, x)) + _per_sample(shift, x)).to(x.dtype)


def adaptive_rms_norm(x, normalized_shape, scale, eps=1e-6):
    xhat = _normalize(_wide(x), normalized_shape, eps, centered=False)
    return (xhat * (1 + _per_sample(scale, x))).to(x.dtype)


def gemma_rms_norm(x, normalized_shape, weight=None, eps=None):
    """Gemma's RMSNorm: the weight stored zero-centered, the +1 built in (no weight_offset keyword)."""
    xhat = _normalize(_wide(x), normalized_shape, _rms_eps(_wide(x), eps), centered=False)
    return _affine(xhat, weight, None, 1.0 if weight is not None else 0.0).to(x.dtype)


def fused_add_rms_norm_in_place(x, residual, normalized_shape, weight=None, eps=None, *, weight_offset=0.0):
    """vLLM's form: the sum written into residual, y into x, nothing returned."""
    with torch.no_grad():
        y, s = fused_add_rms_norm(x, residual, normalized_shape, weight, eps, weight_offset=weight_offset)
        residual.copy_(s)
        x.copy_(y)
