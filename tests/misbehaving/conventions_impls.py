"""Correct implementations that differ from torch on purpose, each in one declared convention
(tests/test_verify_conventions.py declares them, or leaves them undeclared to see them fail).

They normalize with torch.nn.functional and do what the convention says on top: the running
update of flax/Keras (biased variance, momentum as the weight of the old value), an
instance_norm that keeps no running statistics, eps as a float32 attribute (ONNX), statistics
computed in float32 for float64 input (ONNX stash_type), an rms_norm whose eps=None means 1e-6.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


def _running_update(x, running_mean, running_var, momentum, *, biased: bool, momentum_of_old: bool) -> None:
    """Update the running buffers in place from the batch statistics of x (N, C, *S), in float64."""
    if running_mean is None:
        return
    with torch.no_grad():
        data = x.detach().double().transpose(0, 1).reshape(x.shape[1], -1)
        mean, var = data.mean(1), data.var(1, correction=0 if biased else 1)
        weight_of_batch = 1 - momentum if momentum_of_old else momentum
        running_mean.copy_((1 - weight_of_batch) * running_mean.double() + weight_of_batch * mean)
        running_var.copy_((1 - weight_of_batch) * running_var.double() + weight_of_batch * var)


def _batch_norm(x, running_mean, running_var, weight, bias, training, momentum, eps, *, biased, momentum_of_old):
    if not training:
        return F.batch_norm(x, running_mean, running_var, weight, bias, False, momentum, eps)
    y = F.batch_norm(x, None, None, weight, bias, True, momentum, eps)
    _running_update(x, running_mean, running_var, momentum, biased=biased, momentum_of_old=momentum_of_old)
    return y


def batch_norm_biased_running_var(x, running_mean, running_var, weight=None, bias=None, training=False,
                                  momentum=0.1, eps=1e-5):
    """running_var receives the biased batch variance (flax, ONNX, Keras); momentum as torch."""
    return _batch_norm(x, running_mean, running_var, weight, bias, training, momentum, eps, biased=True,
                       momentum_of_old=False)


def batch_norm_momentum_old(x, running_mean, running_var, weight=None, bias=None, training=False, momentum=0.1,
                            eps=1e-5):
    """momentum is the weight of the old value: running = m * running + (1 - m) * batch (flax, Keras)."""
    return _batch_norm(x, running_mean, running_var, weight, bias, training, momentum, eps, biased=False,
                       momentum_of_old=True)


def batch_norm_flax(x, running_mean, running_var, weight=None, bias=None, training=False, momentum=0.1, eps=1e-5):
    """Both: the biased variance, and momentum as the weight of the old value."""
    return _batch_norm(x, running_mean, running_var, weight, bias, training, momentum, eps, biased=True,
                       momentum_of_old=True)


def batch_norm_float32_attributes(x, running_mean, running_var, weight=None, bias=None, training=False,
                                  momentum=0.1, eps=1e-5):
    """eps and momentum are float32 attributes (ONNX BatchNormalization): rounded before use."""
    return _batch_norm(x, running_mean, running_var, weight, bias, training, float(np.float32(momentum)),
                       float(np.float32(eps)), biased=False, momentum_of_old=False)


def instance_norm_no_running_stats(x, running_mean=None, running_var=None, weight=None, bias=None,
                                   use_input_stats=True, momentum=0.1, eps=1e-5):
    """Keeps no running statistics: passed buffers are ignored when normalizing with input statistics."""
    if use_input_stats:
        return F.instance_norm(x, None, None, weight, bias, True, momentum, eps)
    return F.instance_norm(x, running_mean, running_var, weight, bias, False, momentum, eps)


def layer_norm_eps_float32(x, normalized_shape, weight=None, bias=None, eps=1e-5):
    """eps is a float32 attribute (ONNX LayerNormalization): rounded to float32 before use."""
    return F.layer_norm(x, normalized_shape, weight, bias, float(np.float32(eps)))


def layer_norm_float32_compute(x, normalized_shape, weight=None, bias=None, eps=1e-5):
    """Normalized in float32 whatever the input, then the affine step in x's dtype (ONNX
    LayerNormalization with stash_type=1)."""
    y = F.layer_norm(x.float(), normalized_shape, None, None, eps).to(x.dtype)
    if weight is not None:
        y = y * weight
    return y if bias is None else y + bias


def rms_norm_eps_1e6(x, normalized_shape, weight=None, eps=None):
    """eps=None means 1e-6 (a common library default), not torch's machine epsilon."""
    return F.rms_norm(x, normalized_shape, weight, 1e-6 if eps is None else eps)


def layer_norm_no_float64(x, normalized_shape, weight=None, bias=None, eps=1e-5):
    """Refuses float64 (and bfloat16), as a kernel built for float32/float16 does."""
    if x.dtype in (torch.float64, torch.bfloat16):
        raise TypeError(f"layer_norm_no_float64: {x.dtype} is not supported")
    return F.layer_norm(x, normalized_shape, weight, bias, eps)
