"""A quick comparison of both references with torch's native ops, one call per variant.

This is the smoke check of ``normspec all``: float64, forward and the VJP for every
differentiable input, each measured as the max absolute error against ``torch.nn.functional``
(for the variants torch does not have, the composition of its ops that defines them:
:data:`NATIVE`; the weight offset at :data:`QUICK_OFFSET`). Each
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


def _per_sample(p: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    return p.reshape(p.shape[0], *([1] * (x.dim() - p.dim())), *p.shape[1:])


def _offset(weight, weight_offset):
    return None if weight is None else weight + weight_offset


# torch has no fused or adaptive norms, and no weight offset: the compositions of its native ops
# that define them (what the references must equal)
NATIVE = {
    **{name: getattr(F, name) for name in ("batch_norm", "instance_norm", "group_norm")},
    "layer_norm": lambda x, shape, weight=None, bias=None, eps=1e-5, *, weight_offset=0.0:
        F.layer_norm(x, shape, _offset(weight, weight_offset), bias, eps),
    "rms_norm": lambda x, shape, weight=None, eps=None, *, weight_offset=0.0:
        F.rms_norm(x, shape, _offset(weight, weight_offset), eps),
    "fused_add_layer_norm": lambda x, residual, shape, weight=None, bias=None, eps=1e-5, *, weight_offset=0.0:
        (F.layer_norm(x + residual, shape, _offset(weight, weight_offset), bias, eps), x + residual),
    "fused_add_rms_norm": lambda x, residual, shape, weight=None, eps=None, *, weight_offset=0.0:
        (F.rms_norm(x + residual, shape, _offset(weight, weight_offset), eps), x + residual),
    "adaptive_layer_norm": lambda x, shape, scale, shift, eps=1e-6:
        F.layer_norm(x, shape, eps=eps) * (1 + _per_sample(scale, x)) + _per_sample(shift, x),
    "adaptive_rms_norm": lambda x, shape, scale, eps=1e-6: F.rms_norm(x, shape, eps=eps) * (1 + _per_sample(scale, x)),
}
QUICK_OFFSET = 0.5  # the weight offset of the variants that take one


def _call(fn, record: Variant, arrays: dict):
    """``fn`` on the example's arguments (batch statistics, no running buffers), arrays by internal
    name; the outputs as a tuple."""
    values = {name: None for name in record.signature.parameters}
    values.update(record.example_arguments)
    values.update({name: record.default(name) for name in ("eps", "momentum") if name in values})
    if record.running is not None:
        values[record.running.mode_argument] = True
    values.update({record.signature_name(k): v for k, v in arrays.items()})
    keywords = {o.name: QUICK_OFFSET for o in record.options}
    out = fn(*(values[a.name] for a in record.arguments), **keywords)
    return out if isinstance(out, tuple) else (out,)


def _autograd(fn, record: Variant, leaves: dict, upstream: list):
    leaves = {k: t.clone().requires_grad_() for k, t in leaves.items()}
    outputs = _call(fn, record, leaves)
    torch.autograd.backward(outputs, upstream)
    return [o.detach().numpy() for o in outputs], [leaves[k].grad.numpy() for k in record.gradients if k in leaves]


def run_variant(name: str, seed: int = 0) -> list[QuickResult]:
    record = variants.get(name)
    layout = record.example_layout()
    gen = torch.Generator().manual_seed(seed)
    per_element = ("x", "residual") if record.residual else ("x",)
    leaves = {k: torch.randn(record.example_shape, generator=gen, dtype=torch.float64) for k in per_element}
    leaves["weight"] = torch.randn(layout.weight_shape, generator=gen, dtype=torch.float64)
    if record.has_bias:
        leaves["bias"] = torch.randn(layout.weight_shape, generator=gen, dtype=torch.float64)
    upstream = [torch.randn(record.example_shape, generator=gen, dtype=torch.float64) for _ in record.outputs]
    y_native, grads_native = _autograd(NATIVE[name], record, leaves, upstream)

    results = []
    start = time.perf_counter()
    y_torch, grads_torch = _autograd(getattr(torch_ref, name), record, leaves, upstream)
    results.append(QuickResult(name, "torch_ref", _max_error(y_torch, y_native),
                               _max_error(grads_torch, grads_native), time.perf_counter() - start))

    start = time.perf_counter()
    arrays = {k: t.numpy() for k, t in leaves.items()}
    y_numpy = _call(getattr(numpy_ref, name), record, arrays)
    backward = getattr(numpy_ref, f"{name}_backward")
    grads = _call(lambda *a, **k: backward(*(g.numpy() for g in upstream), *a, **k), record, arrays)
    grads_numpy = [g for g in grads if g is not None]
    results.append(QuickResult(name, "numpy_ref", _max_error(y_numpy, y_native),
                               _max_error(grads_numpy, grads_native), time.perf_counter() - start))
    return results


def run_all(seed: int = 0) -> list[QuickResult]:
    return [r for name in variants.NAMES for r in run_variant(name, seed)]
