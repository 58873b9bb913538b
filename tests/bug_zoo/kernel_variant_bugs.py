"""Bugs of the variants kernel authors ship: the weight offset (Gemma's zero-centered weight), the
fused residual add and the adaptive (modulated) norms. Each is a real bug class, reported in the
project named in its docstring; each function has its variant's signature (a Gemma kernel with the
offset built in takes no weight_offset keyword: it is checked with ``--option weight_offset=1``).
"""
from __future__ import annotations

import torch

from tests.broken.impls import _compute_dtype, _rms_eps

__all__ = ["rms_norm_offset_backward_forgets_offset", "gemma_rms_norm_without_offset",
           "fused_add_rms_norm_residual_grad_through_norm", "fused_add_layer_norm_normalizes_x",
           "fused_add_rms_norm_in_place_keeps_residual", "adaptive_layer_norm_scale_without_one",
           "adaptive_rms_norm_first_sample_scale"]


def _dims(x, normalized_shape) -> tuple[int, ...]:
    count = 1 if isinstance(normalized_shape, int) else len(normalized_shape)
    return tuple(range(x.dim() - count, x.dim()))


def _xhat(s, normalized_shape, eps, *, centered: bool):
    """(xhat, rstd) of what is normalized, in the compute dtype (two-pass statistics)."""
    dims = _dims(s, normalized_shape)
    sf = s.to(_compute_dtype(s))
    mean = sf.mean(dims, keepdim=True) if centered else torch.zeros((), dtype=sf.dtype, device=sf.device)
    rstd = torch.rsqrt(((sf - mean) ** 2).mean(dims, keepdim=True) + eps)
    return (sf - mean) * rstd, rstd


def _per_sample(p, x):
    """scale or shift of shape (N, *normalized_shape) broadcast over the tokens of x."""
    return p.reshape(p.shape[0], *([1] * (x.dim() - p.dim())), *p.shape[1:])


class _RmsNormWithOffset(torch.autograd.Function):
    """rms_norm with a weight offset and a hand-written backward; ``dx_gamma`` chooses what the
    backward multiplies the upstream gradient by."""

    @staticmethod
    def forward(ctx, x, weight, normalized_shape, eps, offset, forget_offset):
        xhat, rstd = _xhat(x, normalized_shape, eps, centered=False)
        gamma = weight.to(xhat.dtype) + offset
        ctx.save_for_backward(xhat, rstd, weight)
        ctx.dims, ctx.offset, ctx.forget = _dims(x, normalized_shape), offset, forget_offset
        return (xhat * gamma).to(x.dtype)

    @staticmethod
    def backward(ctx, grad_out):
        xhat, rstd, weight = ctx.saved_tensors
        g = grad_out.to(xhat.dtype)
        gamma = weight.to(xhat.dtype) + (0.0 if ctx.forget else ctx.offset)  # the bug: the +offset forgotten
        h = g * gamma
        dx = rstd * (h - xhat * (h * xhat).mean(ctx.dims, keepdim=True))
        leading = tuple(range(g.dim() - len(ctx.dims)))
        dweight = (g * xhat).sum(leading)
        return dx.to(grad_out.dtype), dweight.to(weight.dtype), None, None, None, None


def rms_norm_offset_backward_forgets_offset(x, normalized_shape, weight=None, eps=None, *, weight_offset=0.0):
    """Bug class: the zero-centered weight's backward forgets the offset -- the forward multiplies
    by weight + offset, the hand-written backward's dx by weight alone (TransformerEngine #67). Exact
    with weight_offset=0, the only value a textbook test passes. Caught by the backward."""
    if weight is None:
        xhat, _ = _xhat(x, normalized_shape, _rms_eps(x, eps), centered=False)
        return xhat.to(x.dtype)
    return _RmsNormWithOffset.apply(x, weight, normalized_shape, _rms_eps(x, eps), weight_offset, True)


def gemma_rms_norm_without_offset(x, normalized_shape, weight=None, eps=None):
    """Bug class: a Gemma kernel (its weight stored zero-centered, the +1 built in: no keyword) that
    multiplies by the stored weight, the +1 missing (Liger-Kernel #74). Checked with
    ``--option weight_offset=1``; caught by the forward."""
    xhat, _ = _xhat(x, normalized_shape, _rms_eps(x, eps), centered=False)
    return (xhat * (1.0 if weight is None else weight.to(xhat.dtype))).to(x.dtype)


class _FusedAddRmsNorm(torch.autograd.Function):
    """fused_add_rms_norm with a hand-written backward that sends the residual's upstream gradient
    through the norm: dx = J^T (g + g_s) instead of g_s + J^T g."""

    @staticmethod
    def forward(ctx, x, residual, weight, normalized_shape, eps, offset):
        s = x + residual
        xhat, rstd = _xhat(s, normalized_shape, eps, centered=False)
        gamma = (weight.to(xhat.dtype) + offset) if weight is not None else torch.ones((), dtype=xhat.dtype)
        ctx.save_for_backward(xhat, rstd, gamma)
        ctx.dims, ctx.has_weight = _dims(x, normalized_shape), weight is not None
        return (xhat * gamma).to(x.dtype), s

    @staticmethod
    def backward(ctx, grad_out, grad_residual_out):
        xhat, rstd, gamma = ctx.saved_tensors
        g = (grad_out + grad_residual_out).to(xhat.dtype)  # the bug: (dres + dout) * dnorm
        h = g * gamma
        dx = (rstd * (h - xhat * (h * xhat).mean(ctx.dims, keepdim=True))).to(grad_out.dtype)
        leading = tuple(range(g.dim() - len(ctx.dims)))
        dweight = (grad_out.to(xhat.dtype) * xhat).sum(leading).to(grad_out.dtype) if ctx.has_weight else None
        return dx, dx, dweight, None, None, None


def fused_add_rms_norm_residual_grad_through_norm(x, residual, normalized_shape, weight=None, eps=None, *,
                                                  weight_offset=0.0):
    """Bug class: the fused add's backward accumulates the residual gradient before the norm's
    backward, (dres + dout) * dnorm, instead of beside it, dres + dout * dnorm (quack #53). The
    forward is exact. Caught by the backward."""
    return _FusedAddRmsNorm.apply(x, residual, weight, normalized_shape, _rms_eps(x, eps), weight_offset)


def fused_add_layer_norm_normalizes_x(x, residual, normalized_shape, weight=None, bias=None, eps=1e-5, *,
                                      weight_offset=0.0):
    """Bug class: the fused kernel returns the right sum but normalizes x, not x + residual (the
    sum written to the residual stream after the norm read its input). Exact where the residual
    is 0. Caught by the forward."""
    xhat, _ = _xhat(x, normalized_shape, eps, centered=True)
    y = xhat * ((weight.to(xhat.dtype) + weight_offset) if weight is not None else 1.0)
    y = y + (bias.to(xhat.dtype) if bias is not None else 0.0)
    return y.to(x.dtype), x + residual


def fused_add_rms_norm_in_place_keeps_residual(x, residual, normalized_shape, weight=None, eps=None, *,
                                               weight_offset=0.0):
    """Bug class: the in-place form (FlashInfer's and vLLM's: y into x, the sum into residual,
    returns None) writes y but leaves the residual stream as it was, so the next block adds the
    wrong stream. Declared ``--convention fused_add=in_place``; caught by the forward (residual_out)."""
    with torch.no_grad():
        xhat, _ = _xhat(x + residual, normalized_shape, _rms_eps(x, eps), centered=False)
        gamma = (weight.to(xhat.dtype) + weight_offset) if weight is not None else 1.0
        x.copy_((xhat * gamma).to(x.dtype))  # the bug: residual.copy_(x + residual) is missing


def adaptive_layer_norm_scale_without_one(x, normalized_shape, scale, shift, eps=1e-6):
    """Bug class: the modulation multiplies by scale instead of 1 + scale (the DiT convention that
    zero-initialised scale is the identity). Caught by the forward and by the unmodulated identity."""
    xhat, _ = _xhat(x, normalized_shape, eps, centered=True)
    y = xhat * _per_sample(scale, x).to(xhat.dtype) + _per_sample(shift, x).to(xhat.dtype)
    return y.to(x.dtype)


def adaptive_rms_norm_first_sample_scale(x, normalized_shape, scale, eps=1e-6):
    """Bug class: the per-sample scale is broadcast from the first sample (scale[0] for every
    sample: a stride of 0 along the batch). Exact with one sample. Caught by the forward and by
    the per-sample identity."""
    xhat, _ = _xhat(x, normalized_shape, eps, centered=False)
    first = _per_sample(scale[:1].expand_as(scale), x)
    return (xhat * (1 + first.to(xhat.dtype))).to(x.dtype)
