"""Hand-written glue shared by numpy_ref and torch_ref: validation and the plan of one call.

A *plan* says which generated kernel family to run on which layout, with which
parameters, and which running statistics to update afterwards. Planning only looks
at shapes and dtypes (through a :class:`Backend`), so NumPy and torch share it; the
backends only differ in how arrays are cast, reshaped and updated in place.
"""
from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any, Callable, Protocol

from normspec.derive import layouts, variants
from normspec.derive.errors import check_eps, check_momentum, require
from normspec.derive.layouts import Layout
from normspec.derive.variants import Variant


class Backend(Protocol):
    """What planning needs to know about an array library."""

    def check_array(self, value: Any, name: str, *, like: Any = None) -> None:
        """Raise NormSpecError unless ``value`` is a floating array (on ``like``'s device)."""

    def machine_eps(self, array: Any) -> float:
        """rms_norm's eps=None: torch.finfo(compute dtype).eps (float32's for 16-bit inputs, as torch)."""

    def compute_dtype(self, arrays: list[Any]) -> Any:
        """The dtype the kernels compute in: the promotion of ``arrays``' dtypes, float32
        where that is a 16-bit type (as torch's kernels accumulate)."""

    def to_dtype(self, array: Any, dtype: Any) -> Any:
        """``array`` in ``dtype`` (itself when it already is)."""

    def cast(self, array: Any, like: Any) -> Any:
        """``array`` in ``like``'s dtype."""

    kernels: Any  # the generated kernel module of this library


@dataclass
class RunningUpdate:
    """running = (1 - momentum) * running + momentum * batch statistic (torch's convention).

    The variance written is the unbiased one (n / (n - 1)) while the normalization uses
    the biased one. instance_norm averages the per-instance statistics over the batch.
    """

    running_mean: Any
    running_var: Any
    momentum: float
    unbiased_factor: float
    average_over_batch: bool


@dataclass
class Plan:
    family: str  # a derive.symbolic family name: 'centered', 'rms' or 'given_stats'
    layout: Layout
    x: Any
    weight: Any
    bias: Any
    eps: float
    given_mean: Any = None  # given_stats only: the running statistics, shape (C,)
    given_var: Any = None
    running: RunningUpdate | None = None


def _check_affine(backend: Backend, x, weight, bias, layout: Layout) -> None:
    for name, value in (("weight", weight), ("bias", bias)):
        if value is not None:
            backend.check_array(value, name, like=x)
            layouts.check_param(tuple(value.shape), layout, name)


def _check_running(backend: Backend, x, running_mean, running_var, channels: int) -> None:
    for name, value in (("running_mean", running_mean), ("running_var", running_var)):
        if value is not None:
            backend.check_array(value, name, like=x)
            layouts.check_running(tuple(value.shape), channels, name)


def plan(backend: Backend, variant: Variant, arguments: dict[str, Any]) -> Plan:
    """The plan of one call of ``variant`` (its arguments by name, as ``Variant.bind`` gives them)."""
    x = arguments["x"]
    backend.check_array(x, "x")
    layout = variant.layout_of(tuple(x.shape), arguments)
    weight, bias = arguments.get("weight"), arguments.get("bias")
    _check_affine(backend, x, weight, bias, layout)
    eps = arguments["eps"]
    eps = backend.machine_eps(x) if eps is None and variant.default("eps") is None else check_eps(eps)
    if variant.running is None:
        return Plan(variant.family(), layout, x, weight, bias, eps)
    return _running_plan(backend, variant, arguments, layout, eps)


def _running_plan(backend: Backend, variant: Variant, arguments: dict[str, Any], layout: Layout,
                  eps: float) -> Plan:
    """batch_norm and instance_norm: batch statistics (and the running update), or the given ones."""
    x, weight, bias = arguments["x"], arguments["weight"], arguments["bias"]
    running_mean, running_var = arguments["running_mean"], arguments["running_var"]
    channels = layout.weight_shape[0]
    _check_running(backend, x, running_mean, running_var, channels)
    require((running_mean is None) == (running_var is None), "running_var",
            None if running_var is None else "<array>", "given together with running_mean, or both None")
    mode = variant.running.mode_argument
    if not variant.batch_statistics(arguments):
        require(running_mean is not None, "running_mean", None, f"an array of shape ({channels},) when {mode}=False")
        return Plan(variant.family(False), layout, x, weight, bias, eps, running_mean, running_var)
    variant.check_batch_statistics(layout, tuple(x.shape))
    if variant.running.refuses_zero_eps:  # as torch: a constant channel would divide by zero
        require(eps > 0, "eps", eps, f"a positive number when {variant.name} is training")
    running = None
    if running_mean is not None:
        n = layout.group_size
        running = RunningUpdate(running_mean, running_var, check_momentum(arguments["momentum"]),
                                unbiased_factor=n / (n - 1), average_over_batch=variant.running.average_over_batch)
    return Plan(variant.family(), layout, x, weight, bias, eps, running=running)


# --- running the generated kernels -------------------------------------------------

def call_kernel(kernels, name: str, values: dict[str, Any]) -> dict[str, Any]:
    """Call generated kernel ``name`` with the arguments it names; return its results by name."""
    function = getattr(kernels, name)
    arguments = [values[a] for a in inspect.signature(function).parameters]
    return dict(zip(kernels.RETURNS[name], function(*arguments)))


def kernel_inputs(plan: Plan, backend: Backend, grad_out: Any = None) -> dict[str, Any]:
    """The generated kernels' inputs for ``plan``, reshaped to its layout.

    Every array is in one compute dtype (see :meth:`Backend.compute_dtype`): the kernels
    finish per-element results in place, which must not round an operand of a wider
    dtype down. A missing weight or bias is the scalar 1 or 0.
    """
    layout = plan.layout
    given = {"weight": plan.weight, "bias": plan.bias, "mean": plan.given_mean, "var": plan.given_var,
             "grad_out": grad_out}
    present = {name: array for name, array in given.items() if array is not None}
    dtype = backend.compute_dtype([plan.x, *present.values()])
    values = {
        "x": backend.to_dtype(plan.x, dtype).reshape(layout.work_shape),
        "weight": 1.0,
        "bias": 0.0,
        "eps": plan.eps,
        "group_dims": layout.group_dims,
        "affine_dims": layout.affine_dims,
    }
    for name, array in present.items():
        shape = layout.work_shape if name == "grad_out" else layout.param_shape
        values[name] = backend.to_dtype(array, dtype).reshape(shape)
    return values


def update_running(plan: Plan, stats: dict[str, Any]) -> None:
    """Apply torch's running-statistics update in place (NumPy arrays and torch tensors alike)."""
    run = plan.running
    if run is None:
        return
    for running, batch in ((run.running_mean, stats["mean"]), (run.running_var, stats["var"] * run.unbiased_factor)):
        batch = batch.mean(0) if run.average_over_batch else batch
        running *= 1 - run.momentum
        running += run.momentum * batch.reshape(-1)


def run_backward(backend: Backend, plan: Plan, grad_out: Any) -> tuple:
    """(dx, dweight, dbias) of ``plan`` from the generated closed forms, in the caller's
    shapes and dtypes; None for an absent parameter. Running statistics are not touched."""
    backend.check_array(grad_out, "grad_out", like=plan.x)
    require(tuple(grad_out.shape) == tuple(plan.x.shape), "grad_out.shape", tuple(grad_out.shape),
            f"x.shape={tuple(plan.x.shape)}")
    values = kernel_inputs(plan, backend, grad_out)
    grads = call_kernel(backend.kernels, f"{plan.family}_vjp", values)

    def back(name: str, like: Any):
        if like is None or name not in grads:
            return None
        return backend.cast(grads[name].reshape(tuple(like.shape)), like)

    return back("dx", plan.x), back("dweight", plan.weight), back("dbias", plan.bias)


def public_variant(backend: Backend, name: str, forward: Callable[[Plan], Any]) -> tuple[Callable, Callable]:
    """The public ``name`` and ``name_backward`` of one library, with the registry's signature
    of ``name``, run by ``forward`` and by :func:`run_backward`."""
    variant = variants.get(name)

    def call(*args, **kwargs):
        return forward(plan(backend, variant, variant.bind(args, kwargs)))

    def call_backward(grad_out, *args, **kwargs):
        return run_backward(backend, plan(backend, variant, variant.bind(args, kwargs)), grad_out)

    call.__name__, call.__signature__ = name, variant.signature.replace(return_annotation="Array")
    call.__doc__ = f"{name}: normalization {variant.summary} (the signature of torch.nn.functional.{name})."
    grad_param = inspect.Parameter("grad_out", inspect.Parameter.POSITIONAL_OR_KEYWORD)
    call_backward.__name__ = f"{name}_backward"
    call_backward.__doc__ = (f"(dx, dweight, dbias) of :func:`{name}` for upstream gradient ``grad_out``, "
                             f"from the derived closed form; None for an absent parameter.")
    call_backward.__signature__ = variant.signature.replace(
        parameters=[grad_param, *variant.signature.parameters.values()], return_annotation="tuple")
    return call, call_backward
