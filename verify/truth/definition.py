"""Oracles independent of the derivation and of the references.

- :func:`plain` is each variant written straight from its definition in float64 torch
  (mean, biased variance, divide, affine), reducing over x's own axes; torch autograd
  differentiates it. It shares no code with ``reference`` or the layouts (the working-shape
  reshapes the references run on): of the registry it reads only the *natural axes*
  (which axes of x the statistics and the parameters span), an independent description.
- :func:`directional_fd` is a central finite difference of any forward, with a
  Richardson step and an error estimate.
- the mpmath oracle is ``normspec.verify.truth.high_precision``.

Both follow the conventions the implementation under test declares (``conventions_in_force``,
or those passed): the eps it normalizes with, the running update it performs.
"""
from __future__ import annotations

from contextvars import ContextVar
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

from normspec.verify.cases.case import Case, Declared, conventions_in_force


def _param_view(case: Case, p: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``p`` broadcast along the axes of x it spans (the registry's natural axes)."""
    spans = case.record.natural.parameters(x.ndim, case.arguments())
    shape = [x.shape[d] if d in spans else 1 for d in range(x.ndim)]
    return p.reshape(shape)


def _grouped(case: Case, x: torch.Tensor) -> torch.Tensor:
    """x itself, or the view (N, G, -1) when the variant splits its channels into G groups."""
    split = case.record.natural.split_channels
    return x if split is None else x.reshape(x.shape[0], case.arguments()[split], -1)


@dataclass
class PlainResult:
    y: torch.Tensor
    mean: torch.Tensor  # the statistics, keepdims over the group (0 for rms_norm)
    var: torch.Tensor  # biased
    unbiased_var: torch.Tensor
    residual_out: torch.Tensor | None = None  # the fused residual add: x + residual


def plain(case: Case, x, weight=None, bias=None, running_mean=None, running_var=None, residual=None) -> PlainResult:
    """The variant's definition in torch ops on float64 tensors (differentiable): what is
    normalized (x, or x + residual for the fused add), its statistics, then the affine step with
    the weight plus the case's weight offset (an adaptive norm's 1 + scale)."""
    eps = case.effective_eps
    summed = x + residual if case.has_residual else None
    x = summed if summed is not None else x
    grouped = _grouped(case, x)
    dims = case.record.natural.statistics(grouped.ndim, case.arguments())
    if case.given_statistics:
        mean, var = _param_view(case, running_mean, x), _param_view(case, running_var, x)
        unbiased = var
    else:
        mean = grouped.mean(dim=dims, keepdim=True) if case.centered else torch.zeros((), dtype=x.dtype)
        var = ((grouped - mean) ** 2).mean(dim=dims, keepdim=True)
        count = int(np.prod([grouped.shape[d] for d in dims]))
        unbiased = var * count / max(count - 1, 1)
    y = ((grouped - mean) / torch.sqrt(var + eps)).reshape(x.shape)
    if weight is not None:
        y = y * (_param_view(case, weight, x) + case.effective_weight_offset)
    if bias is not None:
        y = y + _param_view(case, bias, x)
    return PlainResult(y, mean, var, unbiased, summed)


def plain_running(case: Case, x, running_mean, running_var, *,
                  conventions: Declared | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The running-statistics update, from the definition (float64): torch's,
    ``running = (1 - m) * running + m * batch`` with the unbiased batch variance, or the one the
    ``conventions`` (default: those in force) declare: the biased variance, momentum as the
    weight of the old value, or no update at all (the buffers stay as they were passed)."""
    declared = conventions if conventions is not None else conventions_in_force.get()
    if declared is not None and not declared.updates_running_stats:
        return running_mean.clone(), running_var.clone()
    stats = plain(case, x)
    biased = declared is not None and declared.biased_running_var
    batch_mean, batch_var = stats.mean, stats.var if biased else stats.unbiased_var
    if case.record.running.average_over_batch:  # the batch average of the per-sample statistics
        batch_mean, batch_var = batch_mean.mean(0), batch_var.mean(0)
    m = case.momentum if declared is None else declared.momentum_of(case)  # the weight of the batch
    return ((1 - m) * running_mean + m * batch_mean.reshape(-1),
            (1 - m) * running_var + m * batch_var.reshape(-1))


@dataclass
class Truth:
    """float64 truth of one case: forward, VJP and statistics, as NumPy arrays (the fused add's
    x + residual and the gradient of its residual too)."""

    y: np.ndarray
    dx: np.ndarray
    dweight: np.ndarray | None
    dbias: np.ndarray | None
    running_mean: np.ndarray | None
    running_var: np.ndarray | None
    residual_out: np.ndarray | None = None
    dresidual: np.ndarray | None = None


# The device the truth is computed on: the implementation's under test (``Check.run`` sets it).
truth_device: ContextVar[str] = ContextVar("truth_device", default="cpu")


def truth(case: Case, arrays: dict, *, conventions: Declared | None = None) -> Truth:
    """Forward and VJP of the plain definition by torch autograd, float64, under ``conventions``
    (default: those in force)."""
    if conventions is not None:
        token = conventions_in_force.set(conventions)
        try:
            return truth(case, arrays)
        finally:
            conventions_in_force.reset(token)
    device = truth_device.get()  # the implementation's: a CUDA case's truth is computed on the GPU
    t = {k: None if v is None else torch.from_numpy(np.array(v)).to(device) for k, v in arrays.items()}
    leaves = {k: t[k].requires_grad_() for k in ("x", "residual", "weight", "bias") if t.get(k) is not None}
    result = plain(case, t["x"], t["weight"], t["bias"], t["running_mean"], t["running_var"], t.get("residual"))
    outputs, upstream = [result.y], [t["grad_out"]]
    if result.residual_out is not None:
        outputs.append(result.residual_out)
        upstream.append(t["grad_residual_out"])
    grads = torch.autograd.grad(outputs, list(leaves.values()), upstream, allow_unused=True)
    grad = dict(zip(leaves, grads))
    running = (None, None)
    if case.running and not case.given_statistics:
        running = tuple(r.cpu().numpy() for r in plain_running(case, t["x"].detach(), t["running_mean"],
                                                              t["running_var"]))
    as_np = lambda v: None if v is None else v.detach().cpu().numpy()  # noqa: E731
    return Truth(as_np(result.y), as_np(grad["x"]), as_np(grad.get("weight")), as_np(grad.get("bias")),
                 *running, residual_out=as_np(result.residual_out), dresidual=as_np(grad.get("residual")))


@dataclass
class FiniteDifference:
    estimate: float
    error_bound: float  # truncation (Richardson) + rounding estimate


def directional_fd(loss: Callable[[float], float], scale: float, magnitude: float, *,
                   spacing: float = float(np.finfo(np.float64).eps)) -> FiniteDifference:
    """d/dt loss(t) at t = 0 by central differences at steps h and h/2 (Richardson).

    ``scale`` is the size of the perturbed inputs (the step is cbrt(u) * scale);
    ``magnitude`` the size of the loss's terms, which sets the rounding noise; ``spacing`` (u)
    the relative rounding of the forward (float64's; float32's for a forward computing in float32).
    """
    u = spacing
    h = np.cbrt(u) * scale
    d1 = (loss(h) - loss(-h)) / (2 * h)
    d2 = (loss(h / 2) - loss(-h / 2)) / h
    richardson = (4 * d2 - d1) / 3
    rounding = 4 * u * magnitude / h
    return FiniteDifference(richardson, abs(d2 - d1) + rounding)
