"""Normalization layers in NumPy, with hand-written NumPy backwards.

Every variant ``v`` has ``v(x, ...)`` (the ``torch.nn.functional`` signature) and
``v_backward(grad_out, x, ...) -> (dx, dweight, dbias)`` with the same arguments after
``grad_out`` (``dweight``/``dbias`` None where the parameter is absent; a backward never
touches the running buffers). Each variant is a choice of a *work view* of x, the axes of
that view that share statistics, and how the per-channel (or per-element) parameters
broadcast onto it; one group of N elements then has

    xhat = (x - mean) / sqrt(var + eps)          (two-pass, biased var; RMS: mean = 0)
    dx   = rstd * (h - mean(h) - xhat * mean(h * xhat)),   h = weight * grad_out

(RMS: no mean(h); given statistics: dx = rstd * h), dweight = sum of grad_out * xhat and
dbias = sum of grad_out over the axes the parameters do not span. float16 is computed in
float32 and cast back; NumPy has no bfloat16.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["batch_norm", "batch_norm_backward", "group_norm", "group_norm_backward", "instance_norm",
           "instance_norm_backward", "layer_norm", "layer_norm_backward", "rms_norm", "rms_norm_backward"]


def _compute_dtype(x: np.ndarray) -> np.dtype:
    return np.dtype(np.float32) if x.dtype == np.float16 else x.dtype


@dataclass(frozen=True)
class _View:
    """How one call maps onto the arithmetic: x reshaped to ``work_shape``, statistics over
    ``stat_axes``, parameters reshaped to ``param_shape`` (broadcast onto the work shape)."""

    x_shape: tuple[int, ...]
    work_shape: tuple[int, ...]
    stat_axes: tuple[int, ...]
    param_shape: tuple[int, ...]

    @property
    def sum_axes(self) -> tuple[int, ...]:
        """The work axes the parameters do not span (dweight and dbias sum over them)."""
        return tuple(d for d, size in enumerate(self.param_shape) if size == 1)

    def work(self, a: np.ndarray, dtype) -> np.ndarray:
        return np.asarray(a, dtype=dtype).reshape(self.work_shape)

    def param(self, p: np.ndarray | None, dtype) -> np.ndarray | None:
        return None if p is None else np.asarray(p, dtype=dtype).reshape(self.param_shape)

    def param_sum(self, t: np.ndarray, like: np.ndarray) -> np.ndarray:
        return t.sum(axis=self.sum_axes, keepdims=True).reshape(like.shape).astype(like.dtype)


def _trailing_view(x: np.ndarray, normalized_shape) -> _View:
    k = len(tuple(normalized_shape))
    lead = x.ndim - k
    return _View(x.shape, x.shape, tuple(range(lead, x.ndim)), (1,) * lead + tuple(x.shape[lead:]))


def _group_view(x: np.ndarray, num_groups: int) -> _View:
    n, c, spatial = x.shape[0], x.shape[1], tuple(x.shape[2:])
    if c % num_groups:
        raise ValueError(f"num_groups={num_groups} does not divide the {c} channels")
    work = (n, num_groups, c // num_groups, *spatial)
    return _View(x.shape, work, tuple(range(2, len(work))), (1, num_groups, c // num_groups) + (1,) * len(spatial))


def _channel_view(x: np.ndarray, per_sample: bool) -> _View:
    axes = tuple(range(2, x.ndim)) if per_sample else (0, *range(2, x.ndim))
    return _View(x.shape, x.shape, axes, (1, x.shape[1]) + (1,) * (x.ndim - 2))


def _group_size(view: _View) -> int:
    return int(np.prod([view.work_shape[d] for d in view.stat_axes]))


def _batch_statistics(xw: np.ndarray, view: _View, eps: float, centered: bool):
    """(xhat, rstd, mean, biased var) of each group."""
    mean = xw.mean(axis=view.stat_axes, keepdims=True) if centered else np.zeros((), xw.dtype)
    d = xw - mean
    var = (d * d).mean(axis=view.stat_axes, keepdims=True)
    rstd = 1 / np.sqrt(var + eps)
    return d * rstd, rstd, mean, var


def _given_statistics(xw: np.ndarray, view: _View, running_mean, running_var, eps: float):
    mean = view.param(running_mean, xw.dtype)
    rstd = 1 / np.sqrt(view.param(running_var, xw.dtype) + eps)
    return (xw - mean) * rstd, rstd


def _affine(xhat: np.ndarray, view: _View, weight, bias) -> np.ndarray:
    y = xhat
    w, b = view.param(weight, xhat.dtype), view.param(bias, xhat.dtype)
    if w is not None:
        y = y * w
    if b is not None:
        y = y + b
    return y


def _forward(x, view: _View, weight, bias, eps, *, centered=True, given=None) -> np.ndarray:
    dtype = _compute_dtype(x)
    xw = view.work(x, dtype)
    if given is None:
        xhat = _batch_statistics(xw, view, eps, centered)[0]
    else:
        xhat = _given_statistics(xw, view, *given, eps)[0]
    return _affine(xhat, view, weight, bias).reshape(view.x_shape).astype(x.dtype)


def _backward(grad_out, x, view: _View, weight, bias, eps, *, centered=True, given=None):
    dtype = _compute_dtype(x)
    xw = view.work(x, dtype)
    g = view.work(grad_out, dtype)
    w = view.param(weight, dtype)
    h = g if w is None else g * w
    if given is None:
        xhat, rstd, _, _ = _batch_statistics(xw, view, eps, centered)
        inner = h - xhat * (h * xhat).mean(axis=view.stat_axes, keepdims=True)
        if centered:
            inner = inner - h.mean(axis=view.stat_axes, keepdims=True)
        dx = rstd * inner
    else:
        xhat, rstd = _given_statistics(xw, view, *given, eps)
        dx = rstd * h
    dweight = None if weight is None else view.param_sum(g * xhat, weight)
    dbias = None if bias is None else view.param_sum(g, bias)
    return dx.reshape(view.x_shape).astype(x.dtype), dweight, dbias


def _update_running(running_mean, running_var, mean, unbiased, momentum) -> None:
    """torch's update, in place: running = (1 - m) * running + m * batch."""
    if running_mean is not None:
        running_mean[...] = ((1 - momentum) * running_mean.astype(mean.dtype) + momentum * mean).astype(
            running_mean.dtype)
    if running_var is not None:
        running_var[...] = ((1 - momentum) * running_var.astype(unbiased.dtype) + momentum * unbiased).astype(
            running_var.dtype)


def _require_spread(view: _View) -> int:
    n = _group_size(view)
    if n <= 1:
        raise ValueError(f"expected more than 1 value per group with batch statistics, got shape {view.x_shape}")
    return n


# --- layer_norm, rms_norm, group_norm ----------------------------------------------------------

def layer_norm(x, normalized_shape, weight=None, bias=None, eps=1e-5):
    return _forward(x, _trailing_view(x, normalized_shape), weight, bias, eps)


def layer_norm_backward(grad_out, x, normalized_shape, weight=None, bias=None, eps=1e-5):
    return _backward(grad_out, x, _trailing_view(x, normalized_shape), weight, bias, eps)


def _rms_eps(x, eps):
    return np.finfo(_compute_dtype(x)).eps if eps is None else eps


def rms_norm(x, normalized_shape, weight=None, eps=None):
    return _forward(x, _trailing_view(x, normalized_shape), weight, None, _rms_eps(x, eps), centered=False)


def rms_norm_backward(grad_out, x, normalized_shape, weight=None, eps=None):
    return _backward(grad_out, x, _trailing_view(x, normalized_shape), weight, None, _rms_eps(x, eps),
                     centered=False)


def group_norm(x, num_groups, weight=None, bias=None, eps=1e-5):
    return _forward(x, _group_view(x, num_groups), weight, bias, eps)


def group_norm_backward(grad_out, x, num_groups, weight=None, bias=None, eps=1e-5):
    return _backward(grad_out, x, _group_view(x, num_groups), weight, bias, eps)


# --- batch_norm, instance_norm (running statistics) --------------------------------------------

def batch_norm(x, running_mean, running_var, weight=None, bias=None, training=False, momentum=0.1, eps=1e-5):
    view = _channel_view(x, per_sample=False)
    if not training:
        return _forward(x, view, weight, bias, eps, given=(running_mean, running_var))
    n = _require_spread(view)
    _, _, mean, var = _batch_statistics(view.work(x, _compute_dtype(x)), view, eps, True)
    _update_running(running_mean, running_var, mean.reshape(-1), var.reshape(-1) * (n / (n - 1)), momentum)
    return _forward(x, view, weight, bias, eps)


def batch_norm_backward(grad_out, x, running_mean, running_var, weight=None, bias=None, training=False,
                        momentum=0.1, eps=1e-5):
    view = _channel_view(x, per_sample=False)
    given = None if training else (running_mean, running_var)
    return _backward(grad_out, x, view, weight, bias, eps, given=given)


def instance_norm(x, running_mean=None, running_var=None, weight=None, bias=None, use_input_stats=True,
                  momentum=0.1, eps=1e-5):
    view = _channel_view(x, per_sample=True)
    if not use_input_stats:
        return _forward(x, view, weight, bias, eps, given=(running_mean, running_var))
    n = _require_spread(view)
    _, _, mean, var = _batch_statistics(view.work(x, _compute_dtype(x)), view, eps, True)
    # the batch average of the per-instance mean and unbiased variance
    _update_running(running_mean, running_var, mean.mean(axis=0).reshape(-1),
                    (var * (n / (n - 1))).mean(axis=0).reshape(-1), momentum)
    return _forward(x, view, weight, bias, eps)


def instance_norm_backward(grad_out, x, running_mean=None, running_var=None, weight=None, bias=None,
                           use_input_stats=True, momentum=0.1, eps=1e-5):
    view = _channel_view(x, per_sample=True)
    given = None if use_input_stats else (running_mean, running_var)
    return _backward(grad_out, x, view, weight, bias, eps, given=given)
