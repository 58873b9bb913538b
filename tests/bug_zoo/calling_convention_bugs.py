"""Bugs of the calling conventions fused kernels are written in: aten's saved-statistics register
(``--abi aten``: a forward returning (y, mean, rstd), a backward taking them with an output_mask, as
``torch.ops.aten.native_layer_norm`` and ``native_layer_norm_backward`` do), the backward from the
output (``--backward-from-output``: Apex's memory-efficient form, xhat = (y - beta) / gamma) and the
precision contract a fused kernel declares (``--contract``). Each is a real bug class, reported in
the project named in its docstring.

``__all__`` lists each entry's ``--impl`` function (the forward, as ``normspec verify --impl``
takes it). Where the bug is in a backward, the entry's forward is the correct forward of the
kernel pair, named for the pair's bug, and the buggy backward is handed to the CLI in the entry's
``arguments`` (``--backward``, ``--backward-from-output``). The correct counterparts (the correct
aten forward and backward, the correct backward from the output, the float32-contract rms_norm)
are in this module too, outside ``__all__``: tests/test_verify_calling_convention_zoo.py runs each
of them through the same check, so an entry is known to fail for its bug, not for the glue.
"""
from __future__ import annotations

import torch

from tests.styles.aten_kernels import layer_norm_backward, layer_norm_forward

__all__ = ["layer_norm_aten_forward_saves_var", "layer_norm_aten_forward_saves_input_dtype_statistics",
           "layer_norm_aten_pair_ignoring_output_mask", "layer_norm_pair_from_output_clamping_weight",
           "rms_norm_float32_contract_rounds_xhat"]


def _wide(t: torch.Tensor) -> torch.dtype:
    """The compute dtype: float32 for 16-bit tensors, the tensor's own otherwise."""
    return torch.float32 if t.dtype in (torch.float16, torch.bfloat16) else t.dtype


def _dims(x: torch.Tensor, normalized_shape) -> tuple[int, ...]:
    return tuple(range(x.ndim - len(normalized_shape), x.ndim))


def _sum_leading(t: torch.Tensor, k: int) -> torch.Tensor:
    leading = tuple(range(t.ndim - k))
    return t.sum(leading) if leading else t  # sum(()) would sum everything


# --- correct counterparts ------------------------------------------------------------------------

# the correct saved-statistics pair: the style the calling-convention tests check
layer_norm_aten_forward, layer_norm_aten_backward = layer_norm_forward, layer_norm_backward


def layer_norm(x, normalized_shape, weight=None, bias=None, eps=1e-5):
    """Correct: F.layer_norm's signature, y alone (the forward whose y a backward from the output takes)."""
    return layer_norm_aten_forward(x, normalized_shape, weight, bias, eps)[0]


def _from_output(grad_out, y, normalized_shape, rstd, weight, bias, *, divide_by):
    """A layer_norm backward from the output: xhat = (y - bias) / divide_by(weight), in y's compute
    dtype, dx with the true gamma."""
    k = len(normalized_shape)
    dims = _dims(y, normalized_shape)
    wide = _wide(y)
    g, w, r = grad_out.to(wide), weight.to(wide), rstd.to(wide)
    shifted = y.to(wide) - bias.to(wide) if bias is not None else y.to(wide)
    xhat = shifted / divide_by(w)
    h = g * w
    dx = r * (h - h.mean(dims, keepdim=True) - xhat * (h * xhat).mean(dims, keepdim=True))
    dbias = _sum_leading(g, k).to(bias.dtype) if bias is not None else None
    return dx.to(y.dtype), _sum_leading(g * xhat, k).to(weight.dtype), dbias


def layer_norm_backward_from_output(grad_out, y, normalized_shape, rstd, weight, bias):
    """Correct: the backward from the output, xhat = (y - bias) / weight."""
    return _from_output(grad_out, y, normalized_shape, rstd, weight, bias, divide_by=lambda w: w)


def float32_rms_norm(x, normalized_shape, weight=None, eps=None):
    """Correct under ``--contract float32``: everything in float32, one rounding at the end."""
    dims = _dims(x, normalized_shape)
    wide = _wide(x)
    xf = x.to(wide)
    eps = torch.finfo(wide).eps if eps is None else eps
    xhat = xf * torch.rsqrt((xf * xf).mean(dims, keepdim=True) + eps)
    y = xhat * weight.to(wide) if weight is not None else xhat
    return y.to(x.dtype)


# --- the bugs ------------------------------------------------------------------------------------

def layer_norm_aten_forward_saves_var(x, normalized_shape, weight, bias, eps):
    """Bug class: the aten forward saves the variance where rstd belongs, (y, mean, var) instead of
    (y, mean, rstd) (FlagGems #5771). y is exact; the backward, which recomputes
    xhat = (x - mean) * rstd from what was saved, scales by var. Checked with ``--abi aten`` and the
    correct backward; caught by saved_statistics (the saved rstd) and backward (dx, dweight)."""
    y, mean, rstd = layer_norm_aten_forward(x, normalized_shape, weight, bias, eps)
    return y, mean, 1 / rstd ** 2 - eps


def layer_norm_aten_forward_saves_input_dtype_statistics(x, normalized_shape, weight, bias, eps):
    """Bug class: the aten forward computes its statistics in float32 but saves mean and rstd in the
    16-bit input dtype (what torch's own CPU native_layer_norm does, PyTorch #139923, where CUDA saves
    float32): the backward reads them back rounded to bfloat16 or float16. y is exact. A deviation
    entry excuses the built-in torch_aten only; a user kernel must fail. Caught by saved_statistics
    (their dtype) in bfloat16."""
    y, mean, rstd = layer_norm_aten_forward(x, normalized_shape, weight, bias, eps)
    return y, mean.to(x.dtype), rstd.to(x.dtype)


def layer_norm_aten_backward_ignores_output_mask(grad_out, x, normalized_shape, mean, rstd, weight, bias,
                                                 output_mask):
    """The buggy backward of :func:`layer_norm_aten_pair_ignoring_output_mask`: every gradient of a
    passed argument, whatever output_mask says."""
    return layer_norm_aten_backward(grad_out, x, normalized_shape, mean, rstd, weight, bias,
                                    [True, weight is not None, bias is not None])


def layer_norm_aten_pair_ignoring_output_mask(x, normalized_shape, weight, bias, eps):
    """Bug class: an aten kernel pair whose backward ignores output_mask and returns every gradient
    of a passed argument: dweight and dbias computed although masked (two wasted reductions over the
    rows, and tensors where native_layer_norm_backward's contract says None). It mimics a backward
    ported from the textbook formula, which computes all three, into aten's register, whose
    output_mask (autograd's grad_input_mask: which inputs need a gradient) says what to skip; no
    single upstream report is cited. This is the pair's (correct) forward; the buggy backward,
    ``layer_norm_aten_backward_ignores_output_mask``, is the entry's ``--backward``. Caught by
    output_mask."""
    return layer_norm_aten_forward(x, normalized_shape, weight, bias, eps)


def layer_norm_backward_from_output_clamps_weight(grad_out, y, normalized_shape, rstd, weight, bias, eps=1e-5):
    """The buggy backward from the output of :func:`layer_norm_pair_from_output_clamping_weight`:
    xhat = (y - bias) / weight.clamp(min=eps), a negative weight clamped to +eps."""
    return _from_output(grad_out, y, normalized_shape, rstd, weight, bias, divide_by=lambda w: w.clamp(min=eps))


def layer_norm_pair_from_output_clamping_weight(x, normalized_shape, weight=None, bias=None, eps=1e-5):
    """Bug class: a backward from the output (Apex's memory-efficient layer norm) that guards the
    division by gamma with weight.clamp(min=eps) -- a careless port of Apex's clamp_by_magnitude,
    which keeps the sign (|w| < eps -> +-eps) -- so every negative weight becomes +eps and xhat blows
    up by |w| / eps with the wrong sign. Exact for positive weights. This is the pair's (correct,
    functional) forward; the buggy backward, ``layer_norm_backward_from_output_clamps_weight``, is the
    entry's ``--backward-from-output``. Caught by backward_from_output (a bug, not the method's range
    limit: negative weights appear in the value kinds gamma_mixed and gamma_tiny)."""
    return layer_norm(x, normalized_shape, weight, bias, eps)


def rms_norm_float32_contract_rounds_xhat(x, normalized_shape, weight=None, eps=None):
    """Bug class: a fused rms_norm that declares the float32 contract (one rounding at the end) but
    casts xhat to x's dtype before the weight multiply, Llama's placement (vLLM #42325: moving that one
    cast drifted a model by 2% in token match). Within an ulp or two of the truth, so the per-dtype
    forward check passes; checked with ``--contract float32``, caught by contract in bfloat16."""
    dims = _dims(x, normalized_shape)
    wide = _wide(x)
    xf = x.to(wide)
    eps = torch.finfo(wide).eps if eps is None else eps
    xhat = (xf * torch.rsqrt((xf * xf).mean(dims, keepdim=True) + eps)).to(x.dtype)  # the bug: rounded here
    y = xhat * weight if weight is not None else xhat
    return y.to(x.dtype)
