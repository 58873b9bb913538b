"""Bugs on one combination of the affine parameters: exact with both weight and bias and with
neither (the two combinations every test passes), wrong when only one is given -- the bias-free
path of ``nn.LayerNorm(bias=False)`` (PyTorch #108048: a path nobody tested) and the weight-free
path of a fused epilogue. The battery draws weight only and bias only besides both and neither.
"""
from __future__ import annotations

from tests.broken.impls import _layer_norm_from
from tests.bug_zoo._pieces import group_norm_from

__all__ = ["layer_norm_bias_free_path_drops_weight", "group_norm_weight_free_path_drops_bias"]


def layer_norm_bias_free_path_drops_weight(x, normalized_shape, weight=None, bias=None, eps=1e-5):
    """Bug class: the bias-free path returns xhat -- a kernel that branches on ``bias is None``
    for its epilogue and forgets to multiply by the weight there. Exact with both parameters and
    with neither. Caught by the forward (and every check that passes a weight without a bias)."""
    if weight is not None and bias is None:
        weight = None  # the bug: the bias-free epilogue skips the scale
    return _layer_norm_from(x, normalized_shape, weight, bias, eps)


def group_norm_weight_free_path_drops_bias(x, num_groups, weight=None, bias=None, eps=1e-5):
    """Bug class: without a weight the kernel skips the whole affine epilogue, the bias with it.
    Exact with both parameters and with neither. Caught by the forward."""
    if weight is None:
        bias = None  # the bug: "no weight" taken to mean "no affine step"
    return group_norm_from(x, num_groups, weight, bias, eps)
