"""An implementation under test: functions with torch.nn.functional signatures.

An :class:`Implementation` maps variant names to forward functions on torch tensors
or NumPy arrays. Gradients come from torch autograd (``gradients="autograd"``), from
supplied backward functions with the signature of ``reference.numpy_ref.*_backward``
(``gradients="backward"``), or not at all (``gradients=None``: forward-only).
``run`` calls one variant on one case and returns float64 NumPy results.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch

from verify.case import Case


@dataclass
class RunResult:
    y: np.ndarray
    dx: np.ndarray | None = None
    dweight: np.ndarray | None = None
    dbias: np.ndarray | None = None
    running_mean: np.ndarray | None = None
    running_var: np.ndarray | None = None


@dataclass(frozen=True)
class Implementation:
    name: str
    functions: dict[str, Callable]
    array: str = "torch"  # 'torch' or 'numpy'
    gradients: str | None = "autograd"  # 'autograd', 'backward' or None
    backwards: dict[str, Callable] = field(default_factory=dict)
    device: str = "cpu"

    def unsupported(self, variant: str, dtype: str) -> str | None:
        """Why this implementation cannot run ``variant`` in ``dtype``, or None."""
        if variant not in self.functions:
            return f"{self.name} provides no {variant}"
        if self.array == "numpy" and dtype == "bfloat16":
            return "NumPy has no bfloat16"
        return None

    def has_gradients(self, variant: str) -> bool:
        return self.gradients == "autograd" or variant in self.backwards

    def run(self, case: Case, arrays: dict, *, gradients: bool = True) -> RunResult:
        """Call ``case.variant`` on ``arrays`` (float64 values, cast to the case's dtype here)."""
        gradients = gradients and self.has_gradients(case.variant)
        if self.array == "numpy":
            return self._run_numpy(case, arrays, gradients)
        return self._run_torch(case, arrays, gradients)

    def _run_torch(self, case: Case, arrays: dict, gradients: bool) -> RunResult:
        fn = self.functions[case.variant]
        leaves = {k: case.torch_tensor(arrays[k], device=self.device) for k in ("x", "weight", "bias")}
        if gradients and self.gradients == "autograd":
            for tensor in leaves.values():
                if tensor is not None:
                    tensor.requires_grad_()
        running = {k: case.torch_tensor(arrays[k], device=self.device) for k in ("running_mean", "running_var")}
        x_in = case.torch_tensor(arrays["x"], device=self.device, memory=True) if not leaves["x"].requires_grad \
            else _memory_view(case, leaves["x"])
        y = case.call(fn, x_in, leaves["weight"], leaves["bias"], running["running_mean"], running["running_var"])
        result = RunResult(_np(y), running_mean=_np(running["running_mean"]), running_var=_np(running["running_var"]))
        if gradients:
            grad_out = case.torch_tensor(arrays["grad_out"], device=self.device)
            if self.gradients == "autograd":
                inputs = [t for t in leaves.values() if t is not None]
                grads = iter(torch.autograd.grad(y, inputs, grad_out, allow_unused=True))
                got = {k: next(grads) if t is not None else None for k, t in leaves.items()}
                result.dx, result.dweight, result.dbias = (_np(got[k]) for k in ("x", "weight", "bias"))
            else:
                result.dx, result.dweight, result.dbias = self._call_backward(case, grad_out, x_in, leaves, arrays)
        return result

    def _run_numpy(self, case: Case, arrays: dict, gradients: bool) -> RunResult:
        fn = self.functions[case.variant]
        x = case.numpy_array(arrays["x"], memory=True)
        params = {k: case.numpy_array(arrays[k]) for k in ("weight", "bias")}
        running = {k: case.numpy_array(arrays[k]) for k in ("running_mean", "running_var")}
        y = case.call(fn, x, params["weight"], params["bias"], running["running_mean"], running["running_var"])
        result = RunResult(_np(y), running_mean=_np(running["running_mean"]), running_var=_np(running["running_var"]))
        if gradients:
            grad_out = case.numpy_array(arrays["grad_out"])
            result.dx, result.dweight, result.dbias = self._call_backward(case, grad_out, x, params, arrays)
        return result

    def _call_backward(self, case: Case, grad_out, x, params: dict, arrays: dict):
        """The supplied backward, called with fresh running statistics (it must not need them updated)."""
        lib = case.numpy_array if self.array == "numpy" else (lambda a: case.torch_tensor(a, device=self.device))
        backward = self.backwards[case.variant]
        detached = {k: (v.detach() if isinstance(v, torch.Tensor) else v) for k, v in params.items()}
        x = x.detach() if isinstance(x, torch.Tensor) else x
        grads = case.call(lambda *a: backward(grad_out, *a), x, detached["weight"], detached["bias"],
                          lib(arrays["running_mean"]), lib(arrays["running_var"]))
        grads = tuple(grads) + (None,) * (3 - len(tuple(grads)))
        return tuple(_np(g) for g in grads[:3])


def _memory_view(case: Case, leaf: torch.Tensor) -> torch.Tensor:
    """The case's memory layout applied to a leaf, differentiably."""
    from verify.case import _with_memory_layout

    return _with_memory_layout(leaf, case.memory)


def _np(value) -> np.ndarray | None:
    if value is None:
        return None
    if isinstance(value, torch.Tensor):
        return value.detach().to("cpu", torch.float64).numpy()
    return np.asarray(value, dtype=np.float64)


def builtin(name: str) -> Implementation:
    """The implementations normspec ships: 'numpy_ref', 'torch_ref', 'torch_native'."""
    variants = ("batch_norm", "layer_norm", "instance_norm", "group_norm", "rms_norm")
    if name == "numpy_ref":
        from reference import numpy_ref as module

        return Implementation(name, {v: getattr(module, v) for v in variants}, array="numpy",
                              gradients="backward",
                              backwards={v: getattr(module, f"{v}_backward") for v in variants})
    if name == "torch_ref":
        from reference import torch_ref as module
    elif name == "torch_native":
        import torch.nn.functional as module
    else:
        raise ValueError(f"implementation={name!r}: expected 'numpy_ref', 'torch_ref' or 'torch_native'")
    return Implementation(name, {v: getattr(module, v) for v in variants})
