"""A quick comparison of both references with torch's native ops, one case per variant.

This is the smoke check of ``normspec all``: float64, forward and the VJP for x,
weight and bias, each measured as the max absolute error against
``torch.nn.functional``. The property-based battery is ``verify.battery``.
"""
from __future__ import annotations

import functools
import time
from types import SimpleNamespace
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from normspec.reference import numpy_ref, torch_ref


@dataclass(frozen=True)
class QuickCase:
    variant: str
    shape: tuple[int, ...]
    param_shape: tuple[int, ...]
    call: Callable  # (module, x, weight, bias) -> y, with the module's variant function
    has_bias: bool = True


QUICK_CASES = (
    QuickCase("batch_norm", (5, 6, 7), (6,),
              lambda m, x, w, b: m.batch_norm(x, None, None, w, b, training=True)),
    QuickCase("layer_norm", (3, 5, 7), (5, 7), lambda m, x, w, b: m.layer_norm(x, (5, 7), w, b)),
    QuickCase("instance_norm", (3, 6, 9), (6,), lambda m, x, w, b: m.instance_norm(x, weight=w, bias=b)),
    QuickCase("group_norm", (3, 6, 5), (6,), lambda m, x, w, b: m.group_norm(x, 3, w, b)),
    QuickCase("rms_norm", (3, 5, 7), (7,), lambda m, x, w, b: m.rms_norm(x, (7,), w), has_bias=False),
)


@dataclass(frozen=True)
class QuickResult:
    variant: str
    implementation: str
    forward_error: float
    backward_error: float  # max over dx, dweight, dbias
    seconds: float


def _max_error(actual, expected) -> float:
    return max(float(np.max(np.abs(np.asarray(a) - np.asarray(e)))) for a, e in zip(actual, expected))


def _autograd(call, module, x, w, b, grad_out):
    leaves = [t.clone().requires_grad_() if t is not None else None for t in (x, w, b)]
    y = call(module, *leaves)
    y.backward(grad_out)
    return y.detach().numpy(), [t.grad.numpy() for t in leaves if t is not None]


def run_case(case: QuickCase, seed: int = 0) -> list[QuickResult]:
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(case.shape, generator=gen, dtype=torch.float64)
    w = torch.randn(case.param_shape, generator=gen, dtype=torch.float64)
    b = torch.randn(case.param_shape, generator=gen, dtype=torch.float64) if case.has_bias else None
    grad_out = torch.randn(case.shape, generator=gen, dtype=torch.float64)
    y_native, grads_native = _autograd(case.call, F, x, w, b, grad_out)

    results = []
    start = time.perf_counter()
    y_torch, grads_torch = _autograd(case.call, torch_ref, x, w, b, grad_out)
    results.append(QuickResult(case.variant, "torch_ref", _max_error([y_torch], [y_native]),
                               _max_error(grads_torch, grads_native), time.perf_counter() - start))

    start = time.perf_counter()
    arrays = [t.numpy() if t is not None else None for t in (x, w, b)]
    y_numpy = case.call(numpy_ref, *arrays)
    grads_numpy = _numpy_backward(case, grad_out.numpy(), arrays)
    results.append(QuickResult(case.variant, "numpy_ref", _max_error([y_numpy], [y_native]),
                               _max_error(grads_numpy, grads_native), time.perf_counter() - start))
    return results


def _numpy_backward(case: QuickCase, grad_out, arrays) -> list:
    """``numpy_ref.<variant>_backward`` called through the case's own call (arguments stated once)."""
    backward = functools.partial(getattr(numpy_ref, f"{case.variant}_backward"), grad_out)
    grads = case.call(SimpleNamespace(**{case.variant: backward}), *arrays)
    return [g for g in grads if g is not None]


def run_all(seed: int = 0) -> list[QuickResult]:
    return [r for case in QUICK_CASES for r in run_case(case, seed)]
