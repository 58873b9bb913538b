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
from normspec.derive.errors import NormSpecError, check_eps, check_momentum, check_weight_offset, require
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
    residual: Any = None  # the fused residual add: the array added to x before normalizing
    weight_offset: float = 0.0  # the affine step multiplies by weight + weight_offset
    variant: Variant | None = None


def _check_affine(backend: Backend, x, weight, bias, layout: Layout, variant: Variant) -> None:
    for name, value in ((variant.parameter("weight"), weight), (variant.parameter("bias"), bias)):
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
    weight, bias = (arguments.get(variant.parameter(name)) for name in ("weight", "bias"))
    if variant.parameters_required:
        for name in ("weight", "bias")[: 1 + variant.has_bias]:
            require(arguments[variant.parameter(name)] is not None, variant.parameter(name), None,
                    f"an array of shape {layout.weight_shape}")
    _check_affine(backend, x, weight, bias, layout, variant)
    eps = arguments["eps"]
    eps = backend.machine_eps(x) if eps is None and variant.default("eps") is None else check_eps(eps)
    residual = _residual(backend, variant, arguments)
    offset = _weight_offset(variant, arguments, weight)
    if variant.running is None:
        return Plan(variant.family(), layout, x, weight, bias, eps, residual=residual, weight_offset=offset,
                    variant=variant)
    return _running_plan(backend, variant, arguments, layout, eps)


def _residual(backend: Backend, variant: Variant, arguments: dict[str, Any]) -> Any:
    if not variant.residual:
        return None
    x, residual = arguments["x"], arguments["residual"]
    backend.check_array(residual, "residual", like=x)
    require(tuple(residual.shape) == tuple(x.shape), "residual.shape", tuple(residual.shape),
            f"x.shape={tuple(x.shape)}")
    return residual


def _weight_offset(variant: Variant, arguments: dict[str, Any], weight: Any) -> float:
    """The offset added to the weight: the variant's own (adaptive: 1), the keyword's, or 0."""
    if variant.fixed_weight_offset is not None:
        return variant.fixed_weight_offset
    if variant.option("weight_offset") is None:
        return 0.0
    offset = check_weight_offset(arguments["weight_offset"])
    require(offset == 0.0 or weight is not None, "weight_offset", offset,
            "0.0 when weight is None (the offset is added to a weight; pass one)")
    return offset


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
        return Plan(variant.family(False), layout, x, weight, bias, eps, running_mean, running_var, variant=variant)
    variant.check_batch_statistics(layout, tuple(x.shape))
    if variant.running.refuses_zero_eps:  # as torch: a constant channel would divide by zero
        require(eps > 0, "eps", eps, f"a positive number when {variant.name} is training")
    running = None
    if running_mean is not None:
        n = layout.group_size
        running = RunningUpdate(running_mean, running_var, check_momentum(arguments["momentum"]),
                                unbiased_factor=n / (n - 1), average_over_batch=variant.running.average_over_batch)
    return Plan(variant.family(), layout, x, weight, bias, eps, running=running, variant=variant)


# --- running the generated kernels -------------------------------------------------

def call_kernel(kernels, name: str, values: dict[str, Any]) -> dict[str, Any]:
    """Call generated kernel ``name`` with the arguments it names; return its results by name."""
    function = getattr(kernels, name)
    arguments = [values[a] for a in inspect.signature(function).parameters]
    return dict(zip(kernels.RETURNS[name], function(*arguments)))


def kernel_inputs(plan: Plan, backend: Backend, grad_out: Any = None, grad_residual_out: Any = None
                  ) -> dict[str, Any]:
    """The generated kernels' inputs for ``plan``, reshaped to its layout.

    Every array is in one compute dtype (see :meth:`Backend.compute_dtype`): the kernels
    finish per-element results in place, which must not round an operand of a wider
    dtype down. A missing weight or bias is the scalar 1 or 0.
    """
    layout = plan.layout
    given = {"weight": plan.weight, "bias": plan.bias, "mean": plan.given_mean, "var": plan.given_var,
             "grad_out": grad_out, "residual": plan.residual, "grad_residual_out": grad_residual_out}
    present = {name: array for name, array in given.items() if array is not None}
    dtype = backend.compute_dtype([plan.x, *present.values()])
    values = {
        "x": backend.to_dtype(plan.x, dtype).reshape(layout.work_shape),
        "weight": 1.0,
        "bias": 0.0,
        "weight_offset": plan.weight_offset,
        "eps": plan.eps,
        "group_dims": layout.group_dims,
        "affine_dims": layout.affine_dims,
    }
    for name, array in present.items():
        shape = layout.work_shape if name in _PER_ELEMENT else layout.param_shape
        values[name] = backend.to_dtype(array, dtype).reshape(shape)
    if plan.residual is not None and grad_out is not None and grad_residual_out is None:
        values["grad_residual_out"] = 0.0  # y's gradient only: the sum's is zero
    return values


_PER_ELEMENT = ("grad_out", "residual", "grad_residual_out")  # arrays of x's shape


def update_running(plan: Plan, stats: dict[str, Any]) -> None:
    """Apply torch's running-statistics update in place (NumPy arrays and torch tensors alike)."""
    run = plan.running
    if run is None:
        return
    for running, batch in ((run.running_mean, stats["mean"]), (run.running_var, stats["var"] * run.unbiased_factor)):
        batch = batch.mean(0) if run.average_over_batch else batch
        running *= 1 - run.momentum
        running += run.momentum * batch.reshape(-1)


def run_backward(backend: Backend, plan: Plan, grad_out: Any, grad_residual_out: Any = None) -> tuple:
    """The gradients of ``plan`` from the generated closed forms, in the caller's shapes and
    dtypes, in the order of ``Variant.gradients``: (dx, dweight, dbias) for the textbook
    variants (None for an absent parameter), (dx, dresidual, dweight[, dbias]) for the fused
    residual add (dresidual = dx: the derivation proves it), (dx, dscale[, dshift]) for the
    adaptive norms. Running statistics are not touched."""
    for name, array in (("grad_out", grad_out), ("grad_residual_out", grad_residual_out)):
        if array is None and name == "grad_residual_out":
            continue
        backend.check_array(array, name, like=plan.x)
        require(tuple(array.shape) == tuple(plan.x.shape), f"{name}.shape", tuple(array.shape),
                f"x.shape={tuple(plan.x.shape)}")
    values = kernel_inputs(plan, backend, grad_out, grad_residual_out)
    grads = call_kernel(backend.kernels, f"{plan.family}_vjp", values)
    grads["dresidual"] = grads["dx"]
    like = {"x": plan.x, "residual": plan.residual, "weight": plan.weight, "bias": plan.bias}

    def back(name: str):
        if like[name] is None or f"d{name}" not in grads:
            return None
        return backend.cast(grads[f"d{name}"].reshape(tuple(like[name].shape)), like[name])

    return tuple(back(name) for name in plan.variant.gradients)


def public_variant(backend: Backend, name: str, forward: Callable[[Plan], tuple]) -> tuple[Callable, Callable]:
    """The public ``name`` and ``name_backward`` of one library, with the registry's signature
    of ``name``, run by ``forward`` (which returns the variant's outputs) and by :func:`run_backward`."""
    variant = variants.get(name)
    upstream = tuple(variant.upstream.values())

    def call(*args, **kwargs):
        outputs = forward(plan(backend, variant, variant.bind(args, kwargs)))
        return outputs if len(outputs) > 1 else outputs[0]

    kind = inspect.Parameter.POSITIONAL_OR_KEYWORD
    backward_signature = variant.signature.replace(
        parameters=[*(inspect.Parameter(n, kind) for n in upstream), *variant.signature.parameters.values()],
        return_annotation="tuple")

    def call_backward(*args, **kwargs):
        grads, rest = list(args[: len(upstream)]), args[len(upstream):]
        for missing in upstream[len(grads):]:
            require(missing in kwargs, missing, None, f"an array: {name}_backward takes {', '.join(upstream)} first")
            grads.append(kwargs.pop(missing))
        return run_backward(backend, plan(backend, variant, variant.bind(rest, kwargs)), *grads)

    call.__name__, call.__signature__ = name, variant.signature.replace(return_annotation="Array")
    returned = "(y, residual_out)" if variant.residual else "y"
    call.__doc__ = f"{name}: normalization {variant.summary}; returns {returned}."
    gradients = ", ".join(f"d{variant.signature_name(g)}" for g in variant.gradients)
    call_backward.__name__ = f"{name}_backward"
    call_backward.__doc__ = (f"({gradients}) of :func:`{name}` for upstream gradient{'s' * (len(upstream) > 1)} "
                             f"{', '.join(upstream)}, from the derived closed form; None for an absent parameter.")
    call_backward.__signature__ = backward_signature
    return call, call_backward
