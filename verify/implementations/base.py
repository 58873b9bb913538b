"""An implementation under test: functions with torch.nn.functional signatures.

An :class:`Implementation` maps variant names to forward functions on torch tensors
or NumPy arrays. Gradients come from torch autograd (``gradients="autograd"``), from
supplied backward functions with the signature of ``reference.numpy_ref.*_backward``
(``gradients="backward"``), or not at all (``gradients=None``: forward-only).
``run`` calls one variant on one case and returns float64 NumPy results. ``conventions``
are the ways it differs from torch on purpose (``normspec.verify.implementations.conventions``):
the truth follows them.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import torch

from normspec.verify.cases.case import Case, with_memory_layout
from normspec.verify.implementations.conventions import TORCH, Conventions
from normspec.verify.implementations.guard import (FATAL_ERRORS, CallTimeout, ContractViolation,
                                                   ImplementationCrashed, ImplementationRaised, guarded)


# Re-exported: the errors of a guarded call are part of the implementation's interface.
__all__ = ["CallTimeout", "ContractViolation", "FATAL_ERRORS", "Implementation", "ImplementationCrashed",
           "ImplementationRaised", "ImplementationSummary", "RunResult", "describe_implementation"]


RESULT_FIELDS = ("y", "dx", "dweight", "dbias", "running_mean", "running_var")


@dataclass
class RunResult:
    y: np.ndarray
    dx: np.ndarray | None = None
    dweight: np.ndarray | None = None
    dbias: np.ndarray | None = None
    running_mean: np.ndarray | None = None
    running_var: np.ndarray | None = None

    def same_as(self, other: "RunResult") -> bool:
        """Bit-identical in every result (NaN where the other has NaN)."""
        pairs = [(getattr(self, n), getattr(other, n)) for n in RESULT_FIELDS]
        return all((a is None) == (b is None) and (a is None or (np.shape(a) == np.shape(b)
                                                                and np.array_equal(a, b, equal_nan=True)))
                   for a, b in pairs)


@dataclass(frozen=True)
class Implementation:
    name: str
    functions: dict[str, Callable]
    array: str = "torch"  # 'torch' or 'numpy'
    gradients: str | None = "autograd"  # 'autograd', 'backward' or None
    backwards: dict[str, Callable] = field(default_factory=dict)
    device: str = "cpu"
    timeout: float | None = None  # seconds per call
    source: dict[str, str] = field(default_factory=dict)  # import paths, for reproduction files
    conventions: Conventions = TORCH  # declared differences from torch (the truth follows them)

    @property
    def variants(self) -> tuple[str, ...]:
        return tuple(self.functions)

    def unsupported(self, variant: str, dtype: str) -> str | None:
        """Why this implementation cannot run ``variant`` in ``dtype``, or None."""
        if variant not in self.functions:
            return f"{self.name} provides no {variant}"
        if self.array == "numpy" and dtype == "bfloat16":
            return "NumPy has no bfloat16"
        return self.conventions.unsupported(dtype)

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
        autograd = gradients and self.gradients == "autograd"
        if autograd:
            for tensor in leaves.values():
                if tensor is not None:
                    tensor.requires_grad_()
        running = {k: case.torch_tensor(arrays[k], device=self.device) for k in ("running_mean", "running_var")}
        x_in = _memory_view(case, leaves["x"]) if autograd else case.torch_tensor(arrays["x"], device=self.device,
                                                                                  memory=True)
        inputs = {"x": x_in, "weight": leaves["weight"], "bias": leaves["bias"]}
        before = {k: v.detach().clone() for k, v in inputs.items() if v is not None}
        with guarded(self.timeout, case, what="the forward"):
            y = case.call(fn, x_in, leaves["weight"], leaves["bias"], running["running_mean"], running["running_var"])
        _check_output("the output", y, like=x_in)
        _check_unchanged(before, inputs)
        result = RunResult(_np(y), running_mean=_np(running["running_mean"]), running_var=_np(running["running_var"]))
        if gradients:
            grad_out = case.torch_tensor(arrays["grad_out"], device=self.device)
            grad_before = grad_out.clone()
            if autograd:
                result.dx, result.dweight, result.dbias = self._autograd(case, y, leaves, grad_out)
            else:
                result.dx, result.dweight, result.dbias = self._call_backward(case, grad_out, x_in, leaves, arrays)
            _check_unchanged({"grad_out": grad_before}, {"grad_out": grad_out}, what="its backward")
        return result

    def _autograd(self, case: Case, y, leaves: dict, grad_out):
        inputs = [t for t in leaves.values() if t is not None]
        if not y.requires_grad:
            raise ContractViolation("the output does not require grad although x does: the implementation is "
                                    "not differentiable (pass a backward, or gradients=None for forward-only)")
        with guarded(self.timeout, case, what="the backward (autograd)"):
            grads = iter(torch.autograd.grad(y, inputs, grad_out, allow_unused=True))
        got = {k: next(grads) if t is not None else None for k, t in leaves.items()}
        for name, leaf in leaves.items():
            if leaf is None:
                continue
            if got[name] is None:
                raise ContractViolation(f"the output does not depend on {name} (autograd found no path to it), "
                                        f"so there is no gradient of {name} to check")
            _check_output(f"the gradient of {name}", got[name], like=leaf)
        return tuple(_np(got[k]) for k in ("x", "weight", "bias"))

    def _run_numpy(self, case: Case, arrays: dict, gradients: bool) -> RunResult:
        fn = self.functions[case.variant]
        x = case.numpy_array(arrays["x"], memory=True)
        params = {k: case.numpy_array(arrays[k]) for k in ("weight", "bias")}
        running = {k: case.numpy_array(arrays[k]) for k in ("running_mean", "running_var")}
        inputs = {"x": x, **params}
        before = {k: v.copy() for k, v in inputs.items() if v is not None}
        with guarded(self.timeout, case, what="the forward"):
            y = case.call(fn, x, params["weight"], params["bias"], running["running_mean"], running["running_var"])
        _check_output("the output", y, like=x)
        _check_unchanged(before, inputs)
        result = RunResult(_np(y), running_mean=_np(running["running_mean"]), running_var=_np(running["running_var"]))
        if gradients:
            grad_out = case.numpy_array(arrays["grad_out"])
            grad_before = grad_out.copy()
            result.dx, result.dweight, result.dbias = self._call_backward(case, grad_out, x, params, arrays)
            _check_unchanged({"grad_out": grad_before}, {"grad_out": grad_out}, what="its backward")
        return result

    def _call_backward(self, case: Case, grad_out, x, params: dict, arrays: dict):
        """The supplied backward, called with fresh running statistics (it must not need them updated)."""
        lib = case.numpy_array if self.array == "numpy" else (lambda a: case.torch_tensor(a, device=self.device))
        backward = self.backwards[case.variant]
        detached = {k: (v.detach() if isinstance(v, torch.Tensor) else v) for k, v in params.items()}
        x = x.detach() if isinstance(x, torch.Tensor) else x
        with guarded(self.timeout, case, what="the backward"):
            grads = case.call(lambda *a: backward(grad_out, *a), x, detached["weight"], detached["bias"],
                              lib(arrays["running_mean"]), lib(arrays["running_var"]))
        if not isinstance(grads, (tuple, list)) or len(grads) != 3:
            raise ContractViolation(f"the backward returned {type(grads).__name__}, expected (dx, dweight, dbias)")
        for name, grad, like in zip(("x", "weight", "bias"), grads, (x, detached["weight"], detached["bias"])):
            if like is None:
                continue
            if grad is None:
                raise ContractViolation(f"the backward returned None for d{name}, but {name} was passed: its "
                                        f"gradient is required")
            _check_output(f"the gradient of {name}", grad, like=like)
        return tuple(_np(g) for g in grads)


@dataclass(frozen=True)
class ImplementationSummary:
    """What a report needs of an implementation, as plain data (no functions): a supervised run
    receives it from its runner process, which alone imports the implementation."""

    name: str
    array: str
    gradients: str | None
    device: str
    source: dict
    conventions: Conventions
    variants: tuple[str, ...]


def describe_implementation(impl: Implementation) -> ImplementationSummary:
    return ImplementationSummary(impl.name, impl.array, impl.gradients, impl.device, dict(impl.source),
                                 impl.conventions, tuple(impl.functions))


def _describe(value: Any) -> tuple[str, tuple, str]:
    if isinstance(value, torch.Tensor):
        return str(value.dtype).replace("torch.", ""), tuple(value.shape), str(value.device)
    if isinstance(value, np.ndarray):
        return str(value.dtype), tuple(value.shape), "cpu"
    return type(value).__name__, (), "-"


def _check_output(what: str, value: Any, *, like: Any) -> None:
    """Same type of array, shape, dtype and device as ``like``."""
    if not isinstance(value, (torch.Tensor, np.ndarray)):
        raise ContractViolation(f"{what} is a {type(value).__name__}, expected an array like the input")
    got, want = _describe(value), _describe(like)
    for field_name, g, w in zip(("dtype", "shape", "device"), got, want):
        if g != w:
            raise ContractViolation(f"{what} has {field_name} {g}, expected {w} (the input's)")


def _check_unchanged(before: dict, after: dict, *, what: str = "the implementation") -> None:
    for name, original in before.items():
        now = after[name].detach() if isinstance(after[name], torch.Tensor) else after[name]
        if isinstance(now, torch.Tensor):
            same = torch.allclose(now, original, rtol=0, atol=0, equal_nan=True)
        else:
            same = np.array_equal(now, original, equal_nan=True)
        if not same:
            raise ContractViolation(f"{what} modified its input {name} in place")


def _memory_view(case: Case, leaf: torch.Tensor) -> torch.Tensor:
    """The case's memory layout applied to a leaf, differentiably."""
    return with_memory_layout(leaf, case.memory)


def _np(value) -> np.ndarray | None:
    if value is None:
        return None
    if isinstance(value, torch.Tensor):
        return value.detach().to("cpu", torch.float64).numpy()
    return np.asarray(value, dtype=np.float64)
