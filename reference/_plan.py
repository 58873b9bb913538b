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

from derive import spec
from derive.errors import NormSpecError
from derive.spec import Layout, require


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
            spec.check_param(tuple(value.shape), layout, name)


def _check_running(backend: Backend, x, running_mean, running_var, channels: int) -> None:
    for name, value in (("running_mean", running_mean), ("running_var", running_var)):
        if value is not None:
            backend.check_array(value, name, like=x)
            spec.check_running(tuple(value.shape), channels, name)


# --- the variants: signatures and defaults of torch.nn.functional, stated once ------

def layer_norm(backend: Backend, x, normalized_shape, weight=None, bias=None, eps=1e-5) -> Plan:
    """Layer normalization over the trailing ``normalized_shape`` (torch.nn.functional.layer_norm)."""
    backend.check_array(x, "x")
    layout = spec.trailing_layout(tuple(x.shape), normalized_shape)
    _check_affine(backend, x, weight, bias, layout)
    return Plan("centered", layout, x, weight, bias, spec.check_eps(eps))


def rms_norm(backend: Backend, x, normalized_shape, weight=None, eps=None) -> Plan:
    """RMS normalization over the trailing ``normalized_shape``; eps=None is the machine epsilon
    of the compute dtype (float32 for 16-bit inputs), as in torch."""
    backend.check_array(x, "x")
    layout = spec.trailing_layout(tuple(x.shape), normalized_shape)
    _check_affine(backend, x, weight, None, layout)
    eps = backend.machine_eps(x) if eps is None else spec.check_eps(eps)
    return Plan("rms", layout, x, weight, None, eps)


def group_norm(backend: Backend, x, num_groups, weight=None, bias=None, eps=1e-5) -> Plan:
    """Group normalization of (N, C, *S) over C/num_groups contiguous channels and S."""
    backend.check_array(x, "x")
    layout = spec.group_layout(tuple(x.shape), num_groups)
    _check_affine(backend, x, weight, bias, layout)
    return Plan("centered", layout, x, weight, bias, spec.check_eps(eps))


def batch_norm(backend: Backend, x, running_mean, running_var, weight=None, bias=None, training=False,
               momentum=0.1, eps=1e-5) -> Plan:
    """Batch normalization of (N, C, *S) per channel (torch.nn.functional.batch_norm).

    Training normalizes with the batch's biased variance and, when running statistics
    are given, updates them in place: running = (1 - momentum) * running + momentum * batch,
    with the unbiased variance. Eval (training=False) normalizes with the running statistics.
    """
    require(isinstance(training, bool), "training", training, "a bool")
    return _channel_norm(backend, "batch_norm", x, running_mean, running_var, weight, bias,
                         training, momentum, eps)


def instance_norm(backend: Backend, x, running_mean=None, running_var=None, weight=None, bias=None,
                  use_input_stats=True, momentum=0.1, eps=1e-5) -> Plan:
    """Instance normalization of (N, C, *S) per sample and channel (torch.nn.functional.instance_norm).

    With running statistics and use_input_stats, they are updated in place with the
    batch average of the per-instance mean and unbiased variance.
    """
    require(isinstance(use_input_stats, bool), "use_input_stats", use_input_stats, "a bool")
    return _channel_norm(backend, "instance_norm", x, running_mean, running_var, weight, bias,
                         use_input_stats, momentum, eps)


def _channel_norm(backend, variant, x, running_mean, running_var, weight, bias,
                  batch_statistics, momentum, eps) -> Plan:
    backend.check_array(x, "x")
    layout = spec.channel_layout(tuple(x.shape), per_sample=(variant == "instance_norm"))
    channels = layout.work_shape[1]
    _check_affine(backend, x, weight, bias, layout)
    _check_running(backend, x, running_mean, running_var, channels)
    eps = spec.check_eps(eps)
    require((running_mean is None) == (running_var is None), "running_var",
            None if running_var is None else "<array>", "given together with running_mean, or both None")
    if not batch_statistics:
        mode = "training=False" if variant == "batch_norm" else "use_input_stats=False"
        require(running_mean is not None, "running_mean", None, f"an array of shape ({channels},) when {mode}")
        return Plan("given_stats", layout, x, weight, bias, eps, running_mean, running_var)
    spec.check_training_group(layout, tuple(x.shape), variant)
    if variant == "batch_norm":  # as torch: a constant channel would divide by zero
        require(eps > 0, "eps", eps, "a positive number when batch_norm is training")
    running = None
    if running_mean is not None:
        n = layout.group_size
        running = RunningUpdate(running_mean, running_var, spec.check_momentum(momentum),
                                unbiased_factor=n / (n - 1), average_over_batch=(variant == "instance_norm"))
    return Plan("centered", layout, x, weight, bias, eps, running=running)


VARIANT_PLANS = {f.__name__: f for f in (batch_norm, layer_norm, instance_norm, group_norm, rms_norm)}


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
    """The public ``name`` and ``name_backward`` of one library: the plan's signature
    (without ``backend``) and docstring, run by ``forward`` and by :func:`run_backward`."""
    plan_of = VARIANT_PLANS[name]
    signature = inspect.signature(plan_of)
    public = signature.replace(parameters=list(signature.parameters.values())[1:], return_annotation="Array")

    def plan(args, kwargs) -> Plan:
        try:
            bound = signature.bind(backend, *args, **kwargs)
        except TypeError as error:
            raise NormSpecError(f"{name}{public}: {error}") from None
        return plan_of(*bound.args, **bound.kwargs)

    def variant(*args, **kwargs):
        return forward(plan(args, kwargs))

    def variant_backward(grad_out, *args, **kwargs):
        return run_backward(backend, plan(args, kwargs), grad_out)

    variant.__name__, variant.__doc__, variant.__signature__ = name, plan_of.__doc__, public
    grad_param = inspect.Parameter("grad_out", inspect.Parameter.POSITIONAL_OR_KEYWORD)
    variant_backward.__name__ = f"{name}_backward"
    variant_backward.__doc__ = (f"(dx, dweight, dbias) of :func:`{name}` for upstream gradient ``grad_out``, "
                                f"from the derived closed form; None for an absent parameter.")
    variant_backward.__signature__ = public.replace(parameters=[grad_param, *public.parameters.values()],
                                                    return_annotation="tuple")
    return variant, variant_backward
