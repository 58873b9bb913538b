"""An implementation under test, built from a callable or an import path and probed.

The array kind (torch tensors or NumPy arrays) and differentiability are found by
calling the implementation on a small case, under the time limit, and in a worker
process when isolated (a probe may crash).
"""
from __future__ import annotations

import multiprocessing
from types import ModuleType
from typing import Callable, Iterable, Mapping

import numpy as np
import torch

from normspec.derive import variants
from normspec.derive.abi import ATEN, FROM_OUTPUT, aten, check_abi
from normspec.derive.dtypes import DTYPES
from normspec.derive.errors import NormSpecError, check_weight_offset, require
from normspec.verify.cases.case import Case
from normspec.verify.implementations.base import Implementation
from normspec.verify.implementations.guard import FATAL_ERRORS, ImplementationRaised, describe_error, guarded
from normspec.verify.implementations.conventions import Conventions
from normspec.verify.implementations.conventions import parse as parse_conventions
from normspec.verify.implementations.loading import load, load_module


def build(impl: Callable | str, variant: str, *, backward: Callable | str | None = None, device: str = "cpu",
          array: str | None = None, name: str | None = None, timeout: float | None = None,
          isolate: bool = False, conventions: Conventions | Mapping | Iterable[str] | None = None,
          options: Mapping[str, object] | Iterable[str] | None = None, abi: str = "functional",
          backward_from_output: Callable | str | None = None) -> Implementation:
    """An :class:`Implementation` of one variant from a callable or an import path.

    The array kind and differentiability are probed by calling ``impl`` on a small case,
    under the time limit, and in a worker process when ``isolate`` (a probe may crash).
    ``conventions``: how it differs from torch on purpose (``conventions.parse`` reads them).
    ``options``: the variant's keyword options it has fixed (``{"weight_offset": 1.0}``, or
    ``["weight_offset=1"]``; :func:`parse_options`). ``abi="aten"``: ``impl`` is a forward that returns
    (y, mean, rstd) and ``backward`` takes them, in aten's signatures (``normspec.derive.abi``); no probe
    call (they are torch functions). ``backward_from_output``: a backward from y (Apex's form,
    ``derive.abi.FROM_OUTPUT``), checked by the backward_from_output check.
    """
    variants.get(variant)
    check_abi(abi)
    require(abi == "functional" or aten(variant) is not None, "abi", abi,
            f"functional for {variant} (aten has a saved-statistics convention for {', '.join(ATEN)} only)")
    require(backward_from_output is None or variant in FROM_OUTPUT, "backward_from_output", backward_from_output,
            f"None for {variant} (a backward from the output exists for {', '.join(FROM_OUTPUT)})")
    conventions = parse_conventions(conventions)
    options = parse_options(options, (variant,))
    require(array in (None, "torch", "numpy"), "array", array, "'torch', 'numpy' or None (detect)")
    source = {}
    if isinstance(impl, str):
        source["impl"] = impl
        impl = load(impl, argument="impl")
    if isinstance(backward, str):
        source["backward"] = backward
        backward = load(backward, argument="backward")
    if isinstance(backward_from_output, str):
        source["backward_from_output"] = backward_from_output
        backward_from_output = load(backward_from_output, argument="backward_from_output")
    require(callable(impl), "impl", impl, "a callable or 'package.module:function'")
    require(backward is None or callable(backward), "backward", backward, "a callable or an import path")
    require(backward_from_output is None or callable(backward_from_output), "backward_from_output",
            backward_from_output, "a callable or an import path")
    if abi == "aten":  # aten's forwards take no functional signature to probe with: torch, autograd unless a backward
        array, differentiable = array or "torch", backward is None
    else:
        array, differentiable = probe(impl, variant, array, timeout=timeout, isolate=isolate,
                                      dtype=_probe_dtype(conventions))
    gradients = "autograd" if differentiable else ("backward" if backward else None)
    if gradients == "autograd" and backward is not None:
        gradients = "backward"  # a supplied backward is what the user wants checked
    label = name or source.get("impl") or getattr(impl, "__qualname__", repr(impl))
    return Implementation(label, {variant: impl}, array=array, gradients=gradients,
                          backwards={variant: backward} if backward else {}, device=device, timeout=timeout,
                          source=source, conventions=conventions, options=options, abi=abi,
                          from_output={variant: backward_from_output} if backward_from_output else {})


def build_module(module: ModuleType | str, *, variants_wanted: tuple[str, ...] | None = None, device: str = "cpu",
                 array: str | None = None, name: str | None = None, timeout: float | None = None,
                 isolate: bool = False, conventions: Conventions | Mapping | Iterable[str] | None = None,
                 options: Mapping[str, object] | Iterable[str] | None = None) -> Implementation:
    """An :class:`Implementation` of every variant a module provides: its functions named after
    variants (``layer_norm``, ...), with ``<variant>_backward`` where it has one (the signature of
    ``normspec.numpy_ref.*_backward``) and ``<variant>_backward_from_output`` where it has one
    (``derive.abi.FROM_OUTPUT``). ``variants_wanted`` are checked to be there (the
    caller runs the battery on them; the other functions serve the identities). ``conventions``:
    and ``options`` as for :func:`build`, for every function of the module."""
    conventions = parse_conventions(conventions)
    source = {}
    if isinstance(module, str):
        source["impl"] = module
        module = load_module(module, argument="impl")
    require(isinstance(module, ModuleType), "impl", module, "a module or 'package.module'")
    provided = tuple(v for v in variants.NAMES if callable(getattr(module, v, None)))
    label = name or source.get("impl") or module.__name__
    require(bool(provided), "impl", label, f"a module with functions named after variants ({', '.join(variants.NAMES)})")
    for variant in variants_wanted or ():
        require(variant in provided, "variant", variant, f"one that {label} provides ({', '.join(provided)})")
    # every function the module provides is available (the identities call other variants)
    functions = {v: getattr(module, v) for v in provided}
    backwards = {v: getattr(module, f"{v}_backward") for v in provided
                 if callable(getattr(module, f"{v}_backward", None))}
    from_output = {v: getattr(module, f"{v}_backward_from_output") for v in provided
                   if v in FROM_OUTPUT and callable(getattr(module, f"{v}_backward_from_output", None))}
    kinds = {v: probe(fn, v, array, timeout=timeout, isolate=isolate, dtype=_probe_dtype(conventions))
             for v, fn in functions.items()}
    arrays = {kind for kind, _ in kinds.values()}
    require(len(arrays) == 1, "impl", label, f"functions of one array kind (the probe found {sorted(arrays)}; "
                                             f"pass array= to state it)")
    differentiable = all(d for _, d in kinds.values())
    gradients = "backward" if backwards else ("autograd" if differentiable else None)
    return Implementation(label, functions, array=arrays.pop(), gradients=gradients, backwards=backwards,
                          device=device, timeout=timeout, source=source, conventions=conventions,
                          options=parse_options(options, provided), from_output=from_output)


def parse_options(options: Mapping[str, object] | Iterable[str] | None, provided: Iterable[str], *,
                  argument: str = "options") -> dict[str, float]:
    """Pinned options from a mapping (``{"weight_offset": 1.0}``) or ``"name=value"`` strings (the
    CLI's ``--option``, pytest's ``--normspec-option``): each an option of one of the ``provided``
    variants, with a value it takes. A bad name or value raises NormSpecError naming it."""
    if options is None:
        return {}
    if isinstance(options, Mapping):
        pairs = list(options.items())
    else:
        pairs = []
        for entry in [options] if isinstance(options, str) else list(options):
            name, sep, value = str(entry).partition("=")
            require(bool(sep) and bool(name.strip()), argument, entry, "'name=value', e.g. weight_offset=1")
            pairs.append((name.strip(), value.strip()))
    known = {o.name for v in provided for o in variants.get(v).options}
    pinned: dict[str, float] = {}
    for name, value in pairs:
        require(name in known, argument, f"{name}={value}",
                f"an option of {', '.join(provided)} ({', '.join(sorted(known)) or 'they have none'})")
        require(name not in pinned, argument, f"{name}={value}", f"one value (already {name}={pinned.get(name)})")
        try:
            number = float(value) if isinstance(value, str) else value
        except ValueError:
            number = value
        pinned[name] = check_weight_offset(number, name=f"{argument} {name}")
    return pinned


class ProbeFailed(NormSpecError):
    """The probe call could not tell which arrays the implementation takes."""


def probe(impl: Callable, variant: str, array: str | None, *, timeout: float | None = None,
          isolate: bool = False, dtype: str = "float64") -> tuple[str, bool]:
    """(array kind, differentiable) of ``impl``. A probe whose calls fail raises
    :class:`ProbeFailed` saying what each call did (pass ``array`` to skip it); one that
    hangs, crashes its worker (``isolate``) or ends its process another way decides
    ``array`` or 'torch', not differentiable, and the checks then report what goes wrong.
    The probe calls are in ``dtype``; with ``isolate`` they run in a worker process that is
    killed after 3 x ``timeout`` (60 s when None)."""
    if isolate:
        return _probe_in_worker(impl, variant, array, timeout, dtype)
    return _probe_here(impl, variant, array, timeout, dtype)


def _probe_in_worker(impl: Callable, variant: str, array: str | None, timeout: float | None,
                     dtype: str) -> tuple[str, bool]:
    context = multiprocessing.get_context("spawn")
    receiver, sender = context.Pipe(duplex=False)
    worker = context.Process(target=_probe_and_send, args=(sender, impl, variant, array, timeout, dtype),
                             daemon=True)
    worker.start()
    sender.close()
    try:
        if receiver.poll((timeout or 60) * 3):
            status, payload = receiver.recv()
            if status == "probe failed":
                raise ProbeFailed(payload)
            if status == "ok":
                return payload
    except EOFError:  # the worker died before answering
        pass
    finally:
        worker.kill()
        worker.join(5)
        receiver.close()
    return array or "torch", False


def _probe_and_send(connection, impl: Callable, variant: str, array: str | None, timeout: float | None,
                    dtype: str) -> None:
    try:
        connection.send(("ok", _probe_here(impl, variant, array, timeout, dtype)))
    except ProbeFailed as error:
        connection.send(("probe failed", str(error)))


def _probe_here(impl: Callable, variant: str, array: str | None, timeout: float | None,
                dtype: str = "float64") -> tuple[str, bool]:
    try:
        array = array or detect_array(impl, variant, dtype, timeout)
        return array, array == "torch" and is_differentiable(impl, variant, dtype, timeout)
    except (*FATAL_ERRORS, ImplementationRaised):  # hung or ended the process: the checks will say
        return array or "torch", False


def _probe_case(variant: str, dtype: str = "float64") -> Case:
    return Case(variant, (2, 4, 3), dtype=dtype, num_groups=2, training=True)


def _probe_dtype(conventions: Conventions) -> str:
    """The dtype of the probe calls: the first the implementation does not declare unsupported
    (bfloat16 last: NumPy has none)."""
    return next((d for d in DTYPES if not conventions.unsupported(d)), DTYPES[0])


def _outcome(call: Callable[[], object], case: Case, timeout: float | None) -> tuple[object, str]:
    """(the result or None, what happened in words); a hang or an exit propagates."""
    try:
        with guarded(timeout, case, what="the probe call", report_changes=False):
            out = call()
    except (*FATAL_ERRORS, ImplementationRaised):
        raise
    except Exception as error:  # noqa: BLE001 - the probe reports what the call raised
        return None, f"raised {describe_error(error)}"
    return out, f"returned a {type(out).__name__}"


def _first_output(out: object, case: Case, raised: str) -> object:
    """The array a probe call gave: its return value, its first output (the fused add returns
    (y, residual_out)), or for a fused add that returned None without raising (the in-place form)
    the marker that it took the arrays it was given."""
    if isinstance(out, (tuple, list)) and out:
        return out[0]
    if out is None and case.record.residual and not raised.startswith("raised"):
        return _TOOK_ITS_ARRAYS
    return out


_TOOK_ITS_ARRAYS = object()
_PROBED = ("x", "residual", "weight", "bias")


def detect_array(impl: Callable, variant: str, dtype: str = "float64", timeout: float | None = None) -> str:
    """'torch' if ``impl`` returns a tensor for tensor inputs, 'numpy' if it returns an array
    for NumPy inputs; otherwise :class:`ProbeFailed` naming what both calls did. The probe
    calls pass no keyword option."""
    case = _probe_case(variant, dtype)
    arrays = case.arrays()
    tensors = {k: case.torch_tensor(arrays[k]) for k in _PROBED}
    out, with_torch = _outcome(lambda: case.call(impl, tensors, options=()), case, timeout)
    out = _first_output(out, case, with_torch)
    if isinstance(out, torch.Tensor) or out is _TOOK_ITS_ARRAYS:
        return "torch"
    numpy_arrays = {k: case.numpy_array(arrays[k]) for k in _PROBED}
    out, with_numpy = _outcome(lambda: case.call(impl, numpy_arrays, options=()), case, timeout)
    out = _first_output(out, case, with_numpy)
    if isinstance(out, np.ndarray) or out is _TOOK_ITS_ARRAYS:
        return "numpy"
    raise ProbeFailed(f"impl={getattr(impl, '__qualname__', impl)!r}: expected a function of torch tensors or of "
                      f"NumPy arrays, but the probe call ({case.short()}) with torch tensors {with_torch} and "
                      f"with NumPy arrays {with_numpy}; pass array='torch' or 'numpy' (--array) to skip the "
                      f"probe and let the checks report each call")


def is_differentiable(impl: Callable, variant: str, dtype: str = "float64", timeout: float | None = None) -> bool:
    case = _probe_case(variant, dtype)
    arrays = case.arrays()
    inputs = {k: case.torch_tensor(arrays[k]) for k in _PROBED}
    inputs["x"].requires_grad_()
    out, happened = _outcome(lambda: case.call(impl, inputs, options=()), case, timeout)
    out = _first_output(out, case, happened)
    if out is _TOOK_ITS_ARRAYS:  # the in-place form wrote y into its (non-leaf) x
        return False
    return isinstance(out, torch.Tensor) and out.requires_grad
