"""An implementation under test, built from a callable or an import path and probed.

The array kind (torch tensors or NumPy arrays) and differentiability are found by
calling the implementation on a small case, under the time limit, and in a worker
process when isolated (a probe may crash).
"""
from __future__ import annotations

from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from typing import Callable

import numpy as np
import torch

from normspec.derive import variants
from normspec.derive.errors import require
from normspec.verify.cases.case import Case
from normspec.verify.implementations.base import CallTimeout, Implementation, time_limit
from normspec.verify.implementations.loading import load


def build(impl: Callable | str, variant: str, *, backward: Callable | str | None = None, device: str = "cpu",
          array: str | None = None, name: str | None = None, timeout: float | None = None,
          isolate: bool = False) -> Implementation:
    """An :class:`Implementation` of one variant from a callable or an import path.

    The array kind and differentiability are probed by calling ``impl`` on a small case,
    under the time limit, and in a worker process when ``isolate`` (a probe may crash).
    """
    variants.get(variant)
    require(array in (None, "torch", "numpy"), "array", array, "'torch', 'numpy' or None (detect)")
    source = {}
    if isinstance(impl, str):
        source["impl"] = impl
        impl = load(impl, argument="impl")
    if isinstance(backward, str):
        source["backward"] = backward
        backward = load(backward, argument="backward")
    require(callable(impl), "impl", impl, "a callable or 'package.module:function'")
    require(backward is None or callable(backward), "backward", backward, "a callable or an import path")
    array, differentiable = probe(impl, variant, array, timeout=timeout, isolate=isolate)
    gradients = "autograd" if differentiable else ("backward" if backward else None)
    if gradients == "autograd" and backward is not None:
        gradients = "backward"  # a supplied backward is what the user wants checked
    label = name or source.get("impl") or getattr(impl, "__qualname__", repr(impl))
    return Implementation(label, {variant: impl}, array=array, gradients=gradients,
                          backwards={variant: backward} if backward else {}, device=device, timeout=timeout,
                          source=source)


def probe(impl: Callable, variant: str, array: str | None, *, timeout: float | None = None,
          isolate: bool = False) -> tuple[str, bool]:
    """(array kind, differentiable) of ``impl``; a probe that crashes or hangs decides 'torch',
    not differentiable, and the checks then report what goes wrong."""
    if isolate:
        with ProcessPoolExecutor(max_workers=1, mp_context=get_context("spawn")) as pool:
            try:
                return pool.submit(_probe_here, impl, variant, array, timeout).result(timeout=(timeout or 60) * 3)
            except Exception:  # noqa: BLE001 - the worker died or hung: decided by the checks
                return array or "torch", False
    return _probe_here(impl, variant, array, timeout)


def _probe_here(impl: Callable, variant: str, array: str | None, timeout: float | None) -> tuple[str, bool]:
    try:
        with time_limit(timeout):
            array = array or detect_array(impl, variant)
            return array, array == "torch" and is_differentiable(impl, variant)
    except CallTimeout:
        return array or "torch", False


def _probe_case(variant: str) -> Case:
    return Case(variant, (2, 4, 3), num_groups=2, training=True)


def detect_array(impl: Callable, variant: str) -> str:
    """'torch' if ``impl`` returns a tensor for tensor inputs, 'numpy' if it works on arrays."""
    case = _probe_case(variant)
    arrays = case.arrays()
    try:
        out = case.call(impl, case.torch_tensor(arrays["x"]), case.torch_tensor(arrays["weight"]),
                        case.torch_tensor(arrays["bias"]))
        if isinstance(out, torch.Tensor):
            return "torch"
    except CallTimeout:
        raise
    except Exception:  # noqa: BLE001 - the probe decides between two kinds; errors show in the checks
        pass
    try:
        out = case.call(impl, arrays["x"], arrays["weight"], arrays["bias"])
        if isinstance(out, np.ndarray):
            return "numpy"
    except Exception:  # noqa: BLE001
        pass
    return "torch"  # undecidable: the checks will report what goes wrong


def is_differentiable(impl: Callable, variant: str) -> bool:
    case = _probe_case(variant)
    x = case.torch_tensor(case.arrays()["x"]).requires_grad_()
    try:
        out = case.call(impl, x)
        return isinstance(out, torch.Tensor) and out.requires_grad
    except CallTimeout:
        raise
    except Exception:  # noqa: BLE001
        return False
