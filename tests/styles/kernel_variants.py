"""The variants kernels ship, written as compositions of torch's own ops (differentiated by torch
autograd): ``F.layer_norm`` / ``F.rms_norm`` of ``x + residual`` with ``weight + weight_offset``,
the modulation ``* (1 + scale) + shift`` broadcast by a view. Correct by construction; the
battery must pass them (a failure is a false alarm of normspec).

``gemma_rms_norm`` (the offset 1 built in, no keyword: checked with ``--option weight_offset=1``)
and ``fused_add_rms_norm_in_place`` (vLLM's form: y into x, the sum into residual, returns None:
checked with ``--convention fused_add=in_place``) are the two calling forms the battery takes
by declaration.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["layer_norm", "rms_norm", "fused_add_layer_norm", "fused_add_rms_norm", "adaptive_layer_norm",
           "adaptive_rms_norm"]


def _wide(t):
    """16-bit tensors computed in float32, as torch's kernels accumulate."""
    return None if t is None else (t.float() if t.dtype in (torch.float16, torch.bfloat16) else t)


def _offset(weight, weight_offset):
    return None if weight is None else _wide(weight) + weight_offset


def layer_norm(x, normalized_shape, weight=None, bias=None, eps=1e-5, *, weight_offset=0.0):
    return F.layer_norm(_wide(x), normalized_shape, _offset(weight, weight_offset), _wide(bias), eps).to(x.dtype)


def rms_norm(x, normalized_shape, weight=None, eps=None, *, weight_offset=0.0):
    eps = torch.finfo(_wide(x).dtype).eps if eps is None else eps
    return F.rms_norm(_wide(x), normalized_shape, _offset(weight, weight_offset), eps).to(x.dtype)


def fused_add_layer_norm(x, residual, normalized_shape, weight=None, bias=None, eps=1e-5, *, weight_offset=0.0):
    s = _wide(x) + _wide(residual)  # the sum in float32, normalized unrounded, returned rounded
    y = F.layer_norm(s, normalized_shape, _offset(weight, weight_offset), _wide(bias), eps)
    return y.to(x.dtype), s.to(x.dtype)


def fused_add_rms_norm(x, residual, normalized_shape, weight=None, eps=None, *, weight_offset=0.0):
    s = _wide(x) + _wide(residual)
    eps = torch.finfo(s.dtype).eps if eps is None else eps
    return F.rms_norm(s, normalized_shape, _offset(weight, weight_offset), eps).to(x.dtype), s.to(x.dtype)


def _per_sample(p, x):
    return _wide(p).reshape(p.shape[0], *([1] * (x.dim() - p.dim())), *p.shape[1:])


def adaptive_layer_norm(x, normalized_shape, scale, shift, eps=1e-6):
    y = F.layer_norm(_wide(x), normalized_shape, eps=eps) * (1 + _per_sample(scale, x)) + _per_sample(shift, x)
    return y.to(x.dtype)


def adaptive_rms_norm(x, normalized_shape, scale, eps=1e-6):
    return (F.rms_norm(_wide(x), normalized_shape, eps=eps) * (1 + _per_sample(scale, x))).to(x.dtype)


def gemma_rms_norm(x, normalized_shape, weight=None, eps=None):
    """Gemma's RMSNorm: the weight stored zero-centered, the +1 built in (no weight_offset keyword)."""
    eps = torch.finfo(_wide(x).dtype).eps if eps is None else eps
    return F.rms_norm(_wide(x), normalized_shape, None if weight is None else _wide(weight) + 1.0, eps).to(x.dtype)


def fused_add_rms_norm_in_place(x, residual, normalized_shape, weight=None, eps=None, *, weight_offset=0.0):
    """vLLM's form: the sum written into residual, y into x, nothing returned."""
    with torch.no_grad():
        y, s = fused_add_rms_norm(x, residual, normalized_shape, weight, eps, weight_offset=weight_offset)
        residual.copy_(s)
        x.copy_(y)
