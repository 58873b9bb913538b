"""Forward kernels that round where a named precision contract says, written out in torch ops
(the casts placed by hand, as kernel authors place them): correct under their own contract,
and each a drift under the others. rms_norm and layer_norm, weight optional."""
from __future__ import annotations

import torch


def _wide(x: torch.Tensor) -> torch.dtype:
    return torch.float32 if x.dtype in (torch.float16, torch.bfloat16) else x.dtype


def _statistics(x, dims, centered, eps, dtype):
    xs = x.to(dtype)
    mean = xs.mean(dims, keepdim=True) if centered else torch.zeros((), dtype=dtype)
    centered_x = xs - mean
    var = (centered_x * centered_x).mean(dims, keepdim=True)
    return centered_x, torch.rsqrt(var + eps)


def _norm(x, normalized_shape, weight, bias, eps, *, centered, contract):
    dims = tuple(range(x.ndim - len(normalized_shape), x.ndim))
    eps = torch.finfo(_wide(x)).eps if eps is None else eps
    if contract == "input_dtype":
        centered_x, rstd = _statistics(x, dims, centered, eps, x.dtype)
        xhat = centered_x * rstd
        y = xhat * weight.to(x.dtype) if weight is not None else xhat
        return (y + bias.to(x.dtype) if bias is not None else y).to(x.dtype)
    centered_x, rstd = _statistics(x, dims, centered, eps, _wide(x))
    xhat = centered_x * rstd  # float32
    if contract == "llama":
        xhat = xhat.to(x.dtype)  # rounded before the multiply; the multiply promotes
    elif contract == "weight_dtype" and weight is not None:
        xhat = xhat.to(weight.dtype)
    y = xhat * weight if weight is not None else xhat
    y = y + bias if bias is not None else y
    return y.to(x.dtype)


def _kernels(contract):
    def layer_norm(x, normalized_shape, weight=None, bias=None, eps=1e-5):
        return _norm(x, normalized_shape, weight, bias, eps, centered=True, contract=contract)

    def rms_norm(x, normalized_shape, weight=None, eps=None):
        return _norm(x, normalized_shape, weight, None, eps, centered=False, contract=contract)

    return layer_norm, rms_norm


float32_layer_norm, float32_rms_norm = _kernels("float32")
llama_layer_norm, llama_rms_norm = _kernels("llama")
weight_dtype_layer_norm, weight_dtype_rms_norm = _kernels("weight_dtype")
input_dtype_layer_norm, input_dtype_rms_norm = _kernels("input_dtype")
