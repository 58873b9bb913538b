"""A quick comparison of both references with torch's native ops, one call per variant.

This is the smoke check of ``normspec all``: float64, forward and the VJP for x, weight
and bias, each measured as the max absolute error against ``torch.nn.functional``. Each
variant is called on its registry example (the shape and arguments the spec pages
show), with batch statistics and random affine parameters. The property-based battery
is ``normspec.verify.running.battery``.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from normspec.derive import variants
from normspec.derive.variants import Variant
from normspec.reference import numpy_ref, torch_ref


@dataclass(frozen=True)
class QuickResult:
    variant: str
    implementation: str
    forward_error: float
    backward_error: float  # max over dx, dweight, dbias
    seconds: float


def _max_error(actual, expected) -> float:
    return max(float(np.max(np.abs(np.asarray(a) - np.asarray(e)))) for a, e in zip(actual, expected))


def _positional(record: Variant, arrays: dict) -> list:
    """The call's arguments in signature order: the example's, batch statistics, no running buffers."""
    values = {name: None for name in record.argument_names}
    values.update(record.example_arguments)
    values.update({name: record.default(name) for name in ("eps", "momentum") if name in values})
    if record.running is not None:
        values[record.running.mode_argument] = True
    values.update(arrays)
    return [values[name] for name in record.argument_names]


def _autograd(fn, record: Variant, leaves: dict, grad_out: torch.Tensor):
    leaves = {k: t.clone().requires_grad_() for k, t in leaves.items()}
    y = fn(*_positional(record, leaves))
    y.backward(grad_out)
    return y.detach().numpy(), [leaves[k].grad.numpy() for k in ("x", "weight", "bias") if k in leaves]


def run_variant(name: str, seed: int = 0) -> list[QuickResult]:
    record = variants.get(name)
    layout = record.example_layout()
    gen = torch.Generator().manual_seed(seed)
    leaves = {"x": torch.randn(record.example_shape, generator=gen, dtype=torch.float64),
              "weight": torch.randn(layout.weight_shape, generator=gen, dtype=torch.float64)}
    if record.has_bias:
        leaves["bias"] = torch.randn(layout.weight_shape, generator=gen, dtype=torch.float64)
    grad_out = torch.randn(record.example_shape, generator=gen, dtype=torch.float64)
    y_native, grads_native = _autograd(getattr(F, name), record, leaves, grad_out)

    results = []
    start = time.perf_counter()
    y_torch, grads_torch = _autograd(getattr(torch_ref, name), record, leaves, grad_out)
    results.append(QuickResult(name, "torch_ref", _max_error([y_torch], [y_native]),
                               _max_error(grads_torch, grads_native), time.perf_counter() - start))

    start = time.perf_counter()
    arrays = {k: t.numpy() for k, t in leaves.items()}
    y_numpy = getattr(numpy_ref, name)(*_positional(record, arrays))
    grads = getattr(numpy_ref, f"{name}_backward")(grad_out.numpy(), *_positional(record, arrays))
    grads_numpy = [g for g in grads if g is not None]
    results.append(QuickResult(name, "numpy_ref", _max_error([y_numpy], [y_native]),
                               _max_error(grads_numpy, grads_native), time.perf_counter() - start))
    return results


def run_all(seed: int = 0) -> list[QuickResult]:
    return [r for name in variants.NAMES for r in run_variant(name, seed)]
