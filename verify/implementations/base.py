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

import dataclasses
import functools
import inspect
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import torch

from normspec.derive import abi as abi_records
from normspec.derive import variants
from normspec.verify.cases.case import Case, with_memory_layout
from normspec.verify.implementations import abi
from normspec.verify.implementations.conventions import TORCH, Conventions
from normspec.verify.implementations.guard import (FATAL_ERRORS, CallTimeout, ContractViolation,
                                                   ImplementationCrashed, ImplementationRaised, guarded)


# Re-exported: the errors of a guarded call are part of the implementation's interface.
__all__ = ["CallTimeout", "ContractViolation", "FATAL_ERRORS", "Implementation", "ImplementationCrashed",
           "ImplementationRaised", "ImplementationSummary", "RunResult", "describe_implementation"]


RESULT_FIELDS = ("y", "residual_out", "dx", "dresidual", "dweight", "dbias", "running_mean", "running_var")


@dataclass
class RunResult:
    """What one call gave, as float64 NumPy arrays, by internal name (an adaptive norm's dscale is
    ``dweight``, see ``Variant.parameter_names``); None where the call has no such result."""

    y: np.ndarray
    residual_out: np.ndarray | None = None  # the fused residual add's x + residual
    dx: np.ndarray | None = None
    dresidual: np.ndarray | None = None
    dweight: np.ndarray | None = None
    dbias: np.ndarray | None = None
    running_mean: np.ndarray | None = None
    running_var: np.ndarray | None = None
    # --abi aten: the statistics the forward saved (mean, rstd), as float64, and their dtypes
    saved: dict = field(default_factory=dict)
    saved_dtypes: dict = field(default_factory=dict)
    computed_despite_mask: tuple[str, ...] = ()  # gradients returned although output_mask said not to

    def same_as(self, other: "RunResult") -> bool:
        """Bit-identical in every result (NaN where the other has NaN)."""
        pairs = [(getattr(self, n), getattr(other, n)) for n in RESULT_FIELDS]
        pairs += [(self.saved.get(n), other.saved.get(n)) for n in {*self.saved, *other.saved}]
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
    options: dict[str, float] = field(default_factory=dict)  # pinned options ({"weight_offset": 1.0})
    abi: str = "functional"  # 'aten': forwards return (y, *saved statistics), backwards take them
    from_output: dict[str, Callable] = field(default_factory=dict)  # backwards from y (derive.abi.FROM_OUTPUT)

    @property
    def variants(self) -> tuple[str, ...]:
        return tuple(self.functions)

    def unsupported(self, variant: str, dtype: str) -> str | None:
        """Why this implementation cannot run ``variant`` in ``dtype``, or None."""
        if variant not in self.functions:
            return f"{self.name} provides no {variant}"
        if self.abi == "aten" and abi_records.aten(variant) is None:
            return f"aten has no saved-statistics convention for {variant}"
        if self.array == "numpy" and dtype == "bfloat16":
            return "NumPy has no bfloat16"
        return self.conventions.unsupported(dtype)

    def parameter_dtypes(self, dtype: str) -> tuple[str | None, ...]:
        """The parameter dtypes a case in ``dtype`` draws, simplest (None: x's own) first: what the
        declared ``parameter_dtypes`` convention allows and the array library has."""
        allowed = self.conventions.parameter_dtypes_of(dtype)
        return tuple(d for d in allowed if not (self.array == "numpy" and d == "bfloat16"))

    def has_gradients(self, variant: str) -> bool:
        return self.gradients == "autograd" or variant in self.backwards

    def run_from_output(self, case: Case, arrays: dict, *, rstd: np.ndarray | None = None) -> RunResult:
        """The forward, then the backward from its output ``y`` (``from_output``), handed the forward's
        saved rstd under ``abi="aten"``, else ``rstd`` (float64, cast to the compute dtype)."""
        call = _Call(self, case, arrays)
        forward = call.run(False)
        return call.from_output(forward, rstd)

    # --- options -----------------------------------------------------------------------
    def takes_keyword(self, variant: str, option: str) -> bool:
        """Whether ``variant``'s function (and its backward, where one is given) takes ``option``
        as a keyword: named in its signature, or through ``**kwargs``."""
        functions = [self.functions[variant], *([self.backwards[variant]] if variant in self.backwards else [])]
        return all(_cached_takes_keyword(fn, option) for fn in functions)

    def pinned_options(self, variant: str) -> dict[str, float]:
        """The options of ``variant`` every case takes at one value: those pinned by the user, and
        those its function takes no keyword for, at their defaults (the function has them fixed)."""
        record = variants.get(variant)
        pinned = {o.name: self.options[o.name] for o in record.options if o.name in self.options}
        for o in record.options:  # aten's signatures take no option (their records have none)
            if o.name not in pinned and variant in self.functions and (
                    self.abi == "aten" or not self.takes_keyword(variant, o.name)):
                pinned[o.name] = o.default
        return pinned

    def option_notes(self, variant: str) -> list[str]:
        """For a report: the options of ``variant`` that are not drawn, and why."""
        notes = []
        for name, value in self.pinned_options(variant).items():
            why = ("pinned" if name in self.options else "aten's signature has no options" if self.abi == "aten" else
                   f"its function takes no {name} keyword; pin another value with --option {name}=...")
            notes.append(f"{variant}: {name}={value:g} in every case ({why})")
        return notes

    def _keywords(self, variant: str) -> tuple[str, ...]:
        record = variants.get(variant)
        return tuple(o.name for o in record.options if self.takes_keyword(variant, o.name))

    # --- calling -----------------------------------------------------------------------
    def run(self, case: Case, arrays: dict, *, gradients: bool = True, statistics: dict | None = None,
            output_mask: tuple[bool, ...] | None = None) -> RunResult:
        """Call ``case.variant`` on ``arrays`` (float64 values, cast to the case's dtype here). Under
        ``abi="aten"`` the backward is handed the forward's saved statistics, or ``statistics``
        (float64 arrays by name, cast to the compute dtype), with ``output_mask`` (default: every
        gradient of a passed argument)."""
        gradients = gradients and self.has_gradients(case.variant)
        return _Call(self, case, arrays, statistics=statistics, output_mask=output_mask).run(gradients)


class _Call:
    """One call of an implementation on one case: its inputs in the implementation's array
    library, the forward, the gradients (autograd or the supplied backward), the contract checks."""

    def __init__(self, impl: Implementation, case: Case, arrays: dict, *, statistics: dict | None = None,
                 output_mask: tuple[bool, ...] | None = None):
        self.impl, self.case, self.arrays, self.record = impl, case, arrays, case.record
        self.aten = abi_records.aten(case.variant) if impl.abi == "aten" else None
        self.statistics, self.mask = statistics, output_mask
        self.saved: dict = {}
        self.torch = impl.array == "torch"
        self.differentiable = [n for n in self.record.gradients if arrays.get(n) is not None]
        self.in_place = self.record.residual and impl.conventions.fused_add_in_place

    def make(self, name: str, *, memory: bool = False):
        """Array ``name`` of the case, in its dtype."""
        return self.array(self.arrays.get(name), self.case.dtype_of(name), memory=memory)

    def array(self, values, dtype: str, *, memory: bool = False):
        """float64 ``values`` in the implementation's array library, in ``dtype``."""
        if self.torch:
            return self.case.torch_tensor(values, device=self.impl.device, memory=memory, dtype=dtype)
        return self.case.numpy_array(values, memory=memory, dtype=dtype)

    def run(self, gradients: bool) -> RunResult:
        impl, case = self.impl, self.case
        autograd = gradients and impl.gradients == "autograd" and self.torch
        leaves = {n: self.make(n) for n in self.differentiable}
        if autograd:
            for tensor in leaves.values():
                tensor.requires_grad_()
        inputs = dict(leaves)
        for name in ("x", "residual"):  # the per-element inputs in the case's memory layout
            if name in leaves:
                inputs[name] = (with_memory_layout(leaves[name], case.memory) if autograd
                                else self.make(name, memory=True))
        inputs.update({k: self.make(k) for k in ("running_mean", "running_var")})
        before = {k: _copy(inputs[k]) for k in self.differentiable}
        if self.in_place:  # it writes into x and residual: give it copies (differentiable ones)
            for name in ("x", "residual"):
                inputs[name] = inputs[name].clone() if self.torch else inputs[name].copy()
        with guarded(impl.timeout, case, what="the forward"):
            if self.aten is not None:
                returned = impl.functions[case.variant](*abi.forward_arguments(self.aten, case, inputs))
            else:
                returned = case.call(impl.functions[case.variant], inputs, options=impl._keywords(case.variant))
        if self.aten is not None:
            returned = self._saved_statistics(returned)
        outputs = self._outputs(returned, inputs)
        unchanged = [k for k in self.differentiable if not (self.in_place and k in ("x", "residual"))]
        named = lambda d: {self.record.signature_name(k): d[k] for k in unchanged}  # noqa: E731
        _check_unchanged(named(before), named(inputs))
        result = RunResult(_np(outputs["y"]), residual_out=_np(outputs.get("residual_out")),
                           running_mean=_np(inputs["running_mean"]), running_var=_np(inputs["running_var"]),
                           saved={k: _np(v) for k, v in self.saved.items()},
                           saved_dtypes={k: _describe(v)[0] for k, v in self.saved.items()})
        if gradients:
            upstream = {name: self.make(name) for name in self.record.upstream.values()}
            upstream_before = {k: _copy(v) for k, v in upstream.items()}
            if autograd:
                grads = self._autograd(outputs, leaves, upstream)
            else:
                detached = {k: (v.detach() if isinstance(v, torch.Tensor) else v) for k, v in inputs.items()}
                for name in ("x", "residual"):  # the backward reads the inputs, not what the forward wrote
                    if name in leaves:
                        detached[name] = self.make(name, memory=True)
                grads = (self._call_aten_backward(upstream["grad_out"], detached, result) if self.aten is not None
                         else self._call_backward(upstream, detached))
            _check_unchanged(upstream_before, upstream, what="its backward")
            for name, grad in grads.items():
                # a supplied backward owns its results; autograd may hand back grad_out itself (db = g)
                for other, array in ({} if autograd else upstream).items():
                    if _aliased(grad, array):
                        raise ContractViolation(f"the gradient of {self.record.signature_name(name)} shares memory "
                                                f"with {other}: the backward wrote its result into the incoming "
                                                f"gradient's buffer")
                setattr(result, f"d{name}", _np(grad))
        return result

    def from_output(self, forward: RunResult, rstd: np.ndarray | None) -> RunResult:
        impl, case = self.impl, self.case
        convention = abi_records.FROM_OUTPUT[case.variant]
        if "rstd" in forward.saved:
            rstd, dtype = forward.saved["rstd"], forward.saved_dtypes["rstd"]
        else:
            dtype = abi.saved_dtype(case)
        inputs = {name: self.make(name) for name in ("weight", "bias") if self.arrays.get(name) is not None}
        found = dict(abi.values(case, inputs), grad_out=self.make("grad_out"), y=self.array(forward.y, case.dtype),
                     rstd=self.array(np.reshape(rstd, abi.saved_shape(abi_records.ATEN[case.variant], case)), dtype))
        with guarded(impl.timeout, case, what="the backward from the output"):
            grads = impl.from_output[case.variant](*(found[name] for name in convention.arguments))
        shown = ", ".join(f"d{name}" for name in convention.gradients)
        if not isinstance(grads, (tuple, list)) or len(grads) != len(convention.gradients):
            raise ContractViolation(f"the backward from the output returned {type(grads).__name__}, expected "
                                    f"({shown}) ({convention.signature()})")
        result = dataclasses.replace(forward)
        for name, grad in zip(convention.gradients, grads):
            like = found["y"] if name == "x" else found.get(name)
            if like is None:
                continue
            if grad is None:
                raise ContractViolation(f"the backward from the output returned None for d{name}")
            _check_output(f"the gradient of {name} (from the output)", grad, like=like)
            setattr(result, f"d{name}", _np(grad))
        return result

    def _saved_statistics(self, returned):
        """y of an aten forward's (y, *saved); the saved statistics kept for the backward."""
        names = self.aten.saved_names
        if not isinstance(returned, (tuple, list)) or len(returned) != 1 + len(names):
            shown = f"{len(returned)} values" if isinstance(returned, (tuple, list)) else type(returned).__name__
            raise ContractViolation(f"the forward returned {shown}, expected (y, {', '.join(names)}) "
                                    f"(--abi aten: {self.aten.signature()})")
        for name, shown, value in zip(self.aten.saved, names, returned[1:]):
            if not isinstance(value, (torch.Tensor, np.ndarray)):
                raise ContractViolation(f"the saved {shown} is a {type(value).__name__}, expected an array")
            self.saved[name] = value
        return returned[0]

    def _call_aten_backward(self, grad_out, inputs: dict, result: RunResult) -> dict:
        """The supplied backward in aten's signature, fed the forward's saved statistics (or those
        given), with the output mask; a masked gradient must not be returned (None)."""
        impl, case, convention = self.impl, self.case, self.aten
        saved = dict(self.saved)
        if self.statistics is not None:  # the true statistics, in the dtype the forward saved them in
            dtypes = {k: _describe(v)[0] for k, v in saved.items()}
            saved = {k: self.array(v, dtypes.get(k, abi.saved_dtype(case))) for k, v in self.statistics.items()}
        if self.torch:
            saved = {k: v.detach() for k, v in saved.items()}
        mask = self.mask or abi.output_mask(convention, case)
        saved_before = {k: _copy(v) for k, v in saved.items()}
        with guarded(impl.timeout, case, what="the backward"):
            grads = impl.backwards[case.variant](*abi.backward_arguments(convention, case, inputs, saved, grad_out, mask))
        _check_unchanged(saved_before, saved, what="its backward")  # the saved mean and rstd
        shown = ", ".join(f"d{name}" for name in convention.gradients)
        if not isinstance(grads, (tuple, list)) or len(grads) != len(convention.gradients):
            raise ContractViolation(f"the backward returned {type(grads).__name__}, expected ({shown}) "
                                    f"({convention.signature('backward')})")
        got, computed = {}, []
        for name, grad, wanted in zip(convention.gradients, grads, mask):
            if not wanted:
                if grad is not None:
                    computed.append(name)
                continue
            if grad is None:
                raise ContractViolation(f"the backward returned None for d{name}, but output_mask asked for it")
            _check_output(f"the gradient of {name}", grad, like=inputs[name])
            got[name] = grad
        result.computed_despite_mask = tuple(computed)
        return got

    def _outputs(self, returned, inputs: dict) -> dict:
        """The outputs by name (y; residual_out for the fused add), checked against the contract."""
        names = self.record.outputs
        x = inputs["x"]
        if self.in_place:
            if returned is not None:
                raise ContractViolation(f"the call returned {type(returned).__name__}; declared fused_add=in_place, "
                                        f"it should write y into x and the sum into residual and return None")
            outputs = {"y": inputs["x"], "residual_out": inputs["residual"]}
        elif len(names) == 1:
            outputs = {"y": returned}
        else:
            if not isinstance(returned, (tuple, list)) or len(returned) != len(names):
                shown = f"{len(returned)} values" if isinstance(returned, (tuple, list)) else type(returned).__name__
                raise ContractViolation(f"the call returned {shown}, expected ({', '.join(names)}) (or declare "
                                        f"--convention fused_add=in_place for the form that writes into its inputs)")
            outputs = dict(zip(names, returned))
        for name, value in outputs.items():
            _check_output("the output" if name == "y" else f"the output {name}", value, like=x)
            if not self.in_place:  # an output must be memory of its own (the in-place form writes into x)
                for other, array in inputs.items():
                    if _aliased(value, array):
                        shown = "the output" if name == "y" else f"the output {name}"
                        raise ContractViolation(f"{shown} shares memory with the input "
                                                f"{self.record.signature_name(other)} (the call returned a view "
                                                f"of it, or wrote into it)")
        return outputs

    def _autograd(self, outputs: dict, leaves: dict, upstream: dict) -> dict:
        pairs = [(outputs[name], upstream[grad]) for name, grad in self.record.upstream.items()]
        for (tensor, _), name in zip(pairs, self.record.outputs):
            if not tensor.requires_grad:
                what = "the output" if name == "y" else f"the output {name}"
                raise ContractViolation(f"{what} does not require grad although x does: the implementation is "
                                        f"not differentiable (pass a backward, or gradients=None for forward-only)")
        with guarded(self.impl.timeout, self.case, what="the backward (autograd)"):
            grads = torch.autograd.grad([p[0] for p in pairs], list(leaves.values()), [p[1] for p in pairs],
                                        allow_unused=True)
        got = dict(zip(leaves, grads))
        for name, leaf in leaves.items():
            shown = self.record.signature_name(name)
            if got[name] is None:
                raise ContractViolation(f"the output does not depend on {shown} (autograd found no path to it), "
                                        f"so there is no gradient of {shown} to check")
            _check_output(f"the gradient of {shown}", got[name], like=leaf)
        return got

    def _call_backward(self, upstream: dict, inputs: dict) -> dict:
        """The supplied backward, called with fresh running statistics (it must not need them updated)."""
        impl, case = self.impl, self.case
        backward = impl.backwards[case.variant]
        first = list(upstream.values())
        with guarded(impl.timeout, case, what="the backward"):
            grads = case.call(lambda *a, **k: backward(*first, *a, **k), inputs,
                              options=impl._keywords(case.variant))
        names = self.record.gradients
        shown = ", ".join(f"d{self.record.signature_name(n)}" for n in names)
        if not isinstance(grads, (tuple, list)) or len(grads) != len(names):
            raise ContractViolation(f"the backward returned {type(grads).__name__}, expected ({shown})")
        got = {}
        for name, grad in zip(names, grads):
            like = inputs.get(name)
            if like is None:
                continue
            label = self.record.signature_name(name)
            if grad is None:
                raise ContractViolation(f"the backward returned None for d{label}, but {label} was passed: its "
                                        f"gradient is required")
            _check_output(f"the gradient of {label}", grad, like=like)
            got[name] = grad
        return got


def _copy(value):
    if value is None:
        return None
    return value.detach().clone() if isinstance(value, torch.Tensor) else value.copy()


@functools.lru_cache(maxsize=1024)
def _signature_takes(fn: Callable, name: str) -> bool:
    return _takes_keyword(fn, name)


def _cached_takes_keyword(fn: Callable, name: str) -> bool:
    """:func:`_takes_keyword`, cached where ``fn`` is hashable: every call of an implementation asks."""
    try:
        return _signature_takes(fn, name)
    except TypeError:  # an unhashable callable
        return _takes_keyword(fn, name)


def _takes_keyword(fn: Callable, name: str) -> bool:
    try:
        parameters = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):  # no signature to read (a builtin): assume the textbook one
        return False
    return any(p.name == name and p.kind != p.POSITIONAL_ONLY or p.kind == p.VAR_KEYWORD for p in parameters)


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
    options: dict = field(default_factory=dict)  # the options pinned by the user
    option_notes: tuple[str, ...] = ()  # the options not drawn, and why (Implementation.option_notes)
    abi: str = "functional"


def describe_implementation(impl: Implementation) -> ImplementationSummary:
    notes = tuple(note for variant in impl.functions for note in impl.option_notes(variant))
    return ImplementationSummary(impl.name, impl.array, impl.gradients, impl.device, dict(impl.source),
                                 impl.conventions, tuple(impl.functions), dict(impl.options), notes, impl.abi)


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


def _aliased(a, b) -> bool:
    """Whether arrays ``a`` and ``b`` (torch tensors or NumPy arrays) share memory."""
    if isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor):
        if a.device != b.device or a.numel() == 0 or b.numel() == 0:
            return False
        start_a, start_b = a.untyped_storage().data_ptr(), b.untyped_storage().data_ptr()
        end_a, end_b = start_a + a.untyped_storage().nbytes(), start_b + b.untyped_storage().nbytes()
        return start_a < end_b and start_b < end_a
    if isinstance(a, np.ndarray) and isinstance(b, np.ndarray):
        return bool(np.shares_memory(a, b))
    return False


def _np(value) -> np.ndarray | None:
    if value is None:
        return None
    if isinstance(value, torch.Tensor):
        return value.detach().to("cpu", torch.float64).numpy()
    return np.asarray(value, dtype=np.float64)
