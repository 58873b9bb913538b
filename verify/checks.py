"""The battery's named checks: oracles, invariants and cross-variant identities.

A :class:`Check` runs an implementation on one case and returns the comparisons it
made (each with its errors and tolerance, see ``verify.tolerance``). ``skip`` says
when a check does not apply to a variant, dtype or implementation, and why; a check
may also adapt the drawn case (turn affine off, force a value family) before running.
"""
from __future__ import annotations

import dataclasses
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch

from verify import oracles
from verify.case import CENTERING_VARIANTS, TORCH_DTYPES, Case, round_to
from verify.implementation import Implementation
from verify.tolerance import Comparison, compare, exact, policy


class GroupView:
    """Per-group arithmetic on x-shaped arrays, through the case's layout."""

    def __init__(self, case: Case):
        self.case, self.layout = case, case.layout

    def work(self, a: np.ndarray) -> np.ndarray:
        return np.asarray(a).reshape(self.layout.work_shape)

    def back(self, a: np.ndarray) -> np.ndarray:
        """A work-shaped (or keepdims per-group) array in the caller's shape x.shape."""
        a = np.asarray(a)
        if a.shape == self.case.shape:
            return a
        return np.broadcast_to(a, self.layout.work_shape).reshape(self.case.shape)

    def max(self, a) -> np.ndarray:
        return self.back(np.max(np.abs(self.work(a)), axis=self.layout.group_dims, keepdims=True))

    def mean(self, a) -> np.ndarray:
        """Per-group mean, keepdims in the work shape."""
        return np.mean(self.work(a), axis=self.layout.group_dims, keepdims=True)

    def param(self, p: np.ndarray | None, default: float) -> np.ndarray:
        if p is None:
            return np.full(self.case.shape, default)
        return self.back(np.reshape(p, self.layout.param_shape))

    def affine_sum(self, a) -> np.ndarray:
        summed = np.sum(self.work(a), axis=self.layout.affine_dims, keepdims=True)
        return summed.reshape(self.layout.weight_shape)

    def kappa(self, x: np.ndarray, var: np.ndarray) -> np.ndarray:
        spread = np.sqrt(np.broadcast_to(var, self.layout.stats_shape) + self.case.effective_eps)
        with np.errstate(divide="ignore", invalid="ignore"):
            k = 1 + np.max(np.abs(self.work(x)), axis=self.layout.group_dims, keepdims=True) / spread
        return self.back(np.where(np.isfinite(k), k, 1.0))


# The case a check actually ran (checks adapt the drawn case: affine off, constant values,
# one sample...); the battery reports it as the minimal case, so that it replays as shown.
effective_case: ContextVar[Case | None] = ContextVar("effective_case", default=None)


@dataclass
class Context:
    """A case with its arrays and float64 truth, and the tolerances derived from them."""

    case: Case
    arrays: dict
    truth: oracles.Truth
    view: GroupView = field(init=False)

    def __post_init__(self):
        self.view = GroupView(self.case)
        if effective_case.get() is None:
            effective_case.set(self.case)

    @classmethod
    def of(cls, case: Case) -> "Context":
        arrays = case.arrays()
        return cls(case, arrays, oracles.truth(case, arrays))

    @property
    def group_size(self) -> int:
        return self.case.layout.group_size

    def statistics(self) -> tuple[np.ndarray, np.ndarray]:
        """(mean, biased var) of each group in the work shape, float64; given ones in eval."""
        if self.case.given_statistics:
            shape = self.case.layout.param_shape
            return self.arrays["running_mean"].reshape(shape), self.arrays["running_var"].reshape(shape)
        x = self.view.work(self.arrays["x"])
        mean = self.view.mean(x) if self.case.centered else np.zeros(self.case.layout.stats_shape)
        return mean, self.view.mean((x - mean) ** 2)

    def var(self) -> np.ndarray:
        return self.statistics()[1]

    def kappa(self) -> np.ndarray:
        return self.view.kappa(self.arrays["x"], self.var())

    def xhat(self) -> np.ndarray:
        mean, var = self.statistics()
        return self.view.back((self.view.work(self.arrays["x"]) - mean) / np.sqrt(var + self.case.effective_eps))

    def rstd(self) -> np.ndarray:
        return self.view.back(1 / np.sqrt(self.var() + self.case.effective_eps))

    def representable_groups(self) -> np.ndarray:
        """Groups whose true dx fits the dtype (r * h can honestly overflow float16)."""
        fits = np.isfinite(round_to(self.truth.dx, self.case.dtype))
        return np.all(self.view.work(fits), axis=self.case.layout.group_dims, keepdims=True)

    def policy_y(self, dtype: str | None = None):
        gamma = self.view.param(self.arrays["weight"], 1.0)
        beta = self.view.param(self.arrays["bias"], 0.0)
        # xhat's rounding error is absolute (xhat is O(1)), hence the 1 + |xhat|
        magnitude = np.abs(gamma) * (1 + self.view.max(self.xhat())) + np.abs(beta)
        return policy(dtype or self.case.dtype, self.group_size, magnitude, self.kappa())

    def policy_dx(self):
        h = self.view.param(self.arrays["weight"], 1.0) * self.arrays["grad_out"]
        magnitude = self.view.max(self.rstd() * np.abs(h)) * (1 + self.view.max(self.xhat()))
        return policy(self.case.dtype, self.group_size, magnitude, self.kappa())

    def policy_param(self, terms: np.ndarray):
        """For sums over the affine axes of ``terms`` (g * xhat for dweight, g for dbias)."""
        length = int(np.prod([self.case.layout.work_shape[d] for d in self.case.layout.affine_dims]))
        kappa = float(np.max(self.kappa()))
        return policy(self.case.dtype, max(length, self.group_size), self.view.affine_sum(np.abs(terms)), kappa)


@dataclass(frozen=True)
class Check:
    name: str
    kind: str  # 'oracle', 'invariant' or 'identity'
    description: str
    run: Callable[[Implementation, Case], list[Comparison]]
    variants: tuple[str, ...] = ("batch_norm", "layer_norm", "instance_norm", "group_norm", "rms_norm")
    dtypes: tuple[str, ...] = ("float64", "float32", "float16", "bfloat16")
    needs_gradients: bool = False
    needs: tuple[str, ...] = ()  # other variants the implementation must provide
    case_options: dict = field(default_factory=dict)  # constraints for verify.strategies.cases

    def skip(self, impl: Implementation, variant: str, dtype: str) -> str | None:
        """Why this check does not run for (impl, variant, dtype), or None."""
        if variant not in self.variants:
            return f"does not apply to {variant}"
        if dtype not in self.dtypes:
            return f"runs in {', '.join(self.dtypes)} only"
        for reason in [impl.unsupported(variant, dtype), *(impl.unsupported(v, dtype) for v in self.needs)]:
            if reason:
                return reason
        if self.needs_gradients and not impl.has_gradients(variant):
            return f"{impl.name} is forward-only (no autograd, no backward given)"
        return None


# --- oracle checks ----------------------------------------------------------------------

def check_forward(impl: Implementation, case: Case) -> list[Comparison]:
    ctx = Context.of(case)
    got = impl.run(case, ctx.arrays, gradients=False)
    return [compare("y", got.y, ctx.truth.y, ctx.policy_y())]


def check_backward(impl: Implementation, case: Case) -> list[Comparison]:
    ctx = Context.of(case)
    got = impl.run(case, ctx.arrays)
    comparisons = [compare("dx", got.dx, ctx.truth.dx, ctx.policy_dx())]
    g, xhat = ctx.arrays["grad_out"], ctx.xhat()
    if case.affine:
        comparisons.append(compare("dweight", got.dweight, ctx.truth.dweight, ctx.policy_param(g * (1 + np.abs(xhat)))))
    if case.has_bias:
        comparisons.append(compare("dbias", got.dbias, ctx.truth.dbias, ctx.policy_param(g)))
    return comparisons


def check_running_stats(impl: Implementation, case: Case) -> list[Comparison]:
    case = dataclasses.replace(case, running=True, training=True)
    ctx = Context.of(case)
    got = impl.run(case, ctx.arrays, gradients=False)
    magnitude_mean = np.abs(ctx.arrays["running_mean"]) + float(np.max(np.abs(ctx.arrays["x"])))
    magnitude_var = np.abs(ctx.arrays["running_var"]) + float(np.max(ctx.var())) * 2
    tol_mean = policy(case.dtype, ctx.group_size, magnitude_mean, float(np.max(ctx.kappa())))
    tol_var = policy(case.dtype, ctx.group_size, magnitude_var, float(np.max(ctx.kappa())))
    return [compare("running_mean", got.running_mean, ctx.truth.running_mean, tol_mean),
            compare("running_var", got.running_var, ctx.truth.running_var, tol_var)]


def check_deterministic(impl: Implementation, case: Case) -> list[Comparison]:
    """Two identical calls give bit-identical results (forward and gradients)."""
    ctx = Context.of(case)
    first, second = impl.run(case, ctx.arrays), impl.run(case, ctx.arrays)
    comparisons = []
    for name in ("y", "dx", "dweight", "dbias", "running_mean", "running_var"):
        a, b = getattr(first, name), getattr(second, name)
        if a is None or b is None:
            continue
        comparisons.append(compare(f"{name}: second call - first call", b, a, exact(case.dtype, np.shape(a))))
    return comparisons


def check_eval_running_unchanged(impl: Implementation, case: Case) -> list[Comparison]:
    """batch_norm in eval mode reads the running statistics and must not update them."""
    case = dataclasses.replace(case, training=False, running=False)
    ctx = Context.of(case)
    got = impl.run(case, ctx.arrays, gradients=False)
    zero = exact(case.dtype, ctx.arrays["running_mean"].shape)
    return [compare("running_mean after eval", got.running_mean, ctx.arrays["running_mean"], zero),
            compare("running_var after eval", got.running_var, ctx.arrays["running_var"], zero)]


def check_finite_differences(impl: Implementation, case: Case) -> list[Comparison]:
    """The implementation's VJP against central differences of its own forward (float64),
    on every element for small cases and on random directions otherwise."""
    ctx = Context.of(case)
    got = impl.run(case, ctx.arrays)
    g = ctx.arrays["grad_out"]
    rng = np.random.default_rng(case.seed + 1)
    targets = [("x", got.dx)] + ([("weight", got.dweight)] if case.affine else []) + \
        ([("bias", got.dbias)] if case.has_bias else [])
    spread = float(np.min(np.sqrt(ctx.var() + case.effective_eps)))
    noise = float(np.sum(np.abs(g) * (np.abs(ctx.truth.y) + 1))) * float(np.max(ctx.kappa()))
    comparisons = []
    for name, analytic in targets:
        base = ctx.arrays[name]
        directions = _directions(base.shape, rng)
        estimates, claimed, bounds = [], [], []
        for direction in directions:
            def loss(t, direction=direction):
                moved = dict(ctx.arrays, **{name: base + t * direction})
                return float(np.sum(g * impl.run(case, moved, gradients=False).y))
            # steps on the scale that moves y: x's spread per group, the parameters' size
            scale = spread if name == "x" else float(np.max(np.abs(base))) + 1.0
            fd = oracles.directional_fd(loss, scale, noise)
            estimates.append(fd.estimate)
            claimed.append(float(np.sum(analytic * direction)))
            bounds.append(fd.error_bound)
        tol = policy("float64", ctx.group_size, np.array(bounds) / (2.0**-52), 1.0)
        tol = dataclasses.replace(tol, factor=np.full(len(bounds), 10 * 2.0**-52), rtol=1e-7)
        comparisons.append(compare(f"d{name} . u (finite differences)", claimed, estimates, tol))
    return comparisons


def _directions(shape: tuple[int, ...], rng: np.random.Generator) -> list[np.ndarray]:
    size = int(np.prod(shape))
    if size <= 24:  # the full VJP: one unit direction per element
        return [np.eye(size)[i].reshape(shape) for i in range(size)]
    return [rng.standard_normal(shape) for _ in range(6)]


def check_mpmath(impl: Implementation, case: Case) -> list[Comparison]:
    """Forward and VJP against a 50-digit mpmath evaluation of the plain definition."""
    from verify.oracle_mp import high_precision

    ctx = Context.of(case)
    got = impl.run(case, ctx.arrays)
    a = ctx.arrays
    exact = high_precision(case.layout, a["x"], a["weight"], a["bias"], a["grad_out"], eps=case.effective_eps,
                           centered=case.centered,
                           given_mean=a["running_mean"] if case.given_statistics else None,
                           given_var=a["running_var"] if case.given_statistics else None)
    comparisons = [compare("y vs mpmath", got.y, exact.y, ctx.policy_y())]
    if got.dx is not None:
        comparisons.append(compare("dx vs mpmath", got.dx, exact.dx, ctx.policy_dx()))
    return comparisons


# --- invariants --------------------------------------------------------------------------

def _batch_statistics(case: Case) -> Case:
    """Invariants of the statistics need them computed from the batch (batch_norm training)."""
    return dataclasses.replace(case, training=True, running=False)


def _plain_case(case: Case) -> Case:
    """The case with batch statistics and without affine parameters: the output is xhat itself."""
    return dataclasses.replace(_batch_statistics(case), affine=False)


def check_mean_zero(impl: Implementation, case: Case) -> list[Comparison]:
    ctx = Context.of(_plain_case(case))
    xhat = impl.run(ctx.case, ctx.arrays, gradients=False).y
    tol = ctx.policy_y()
    return [compare("mean(xhat) over the group", ctx.view.mean(xhat), np.zeros(ctx.case.layout.stats_shape),
                    dataclasses.replace(tol, magnitude=ctx.view.mean(ctx.view.back(tol.magnitude)),
                                        factor=float(np.max(tol.factor))))]


def check_second_moment(impl: Implementation, case: Case) -> list[Comparison]:
    """mean(xhat^2) = var / (var + eps) (RMS: mean(x^2) / (mean(x^2) + eps))."""
    ctx = Context.of(_plain_case(case))
    xhat = impl.run(ctx.case, ctx.arrays, gradients=False).y
    var = ctx.var()
    expected = np.broadcast_to(var / (var + ctx.case.effective_eps), ctx.case.layout.stats_shape)
    tol = ctx.policy_y()
    magnitude = ctx.view.mean(2 * np.abs(ctx.truth.y) * ctx.view.back(tol.magnitude) + tol.magnitude ** 2)
    return [compare("mean(xhat^2) - var/(var+eps)", ctx.view.mean(xhat**2), expected,
                    dataclasses.replace(tol, magnitude=magnitude, factor=float(np.max(tol.factor))))]


def check_identity_recovery(impl: Implementation, case: Case) -> list[Comparison]:
    """gamma = sqrt(var + eps), beta = mean give y = x, for one group per affine parameter."""
    case = dataclasses.replace(_single_group_per_parameter(case), affine=True, running=False)
    ctx = Context.of(case)
    view, x = ctx.view, ctx.arrays["x"]
    mean = view.mean(x) if case.centered else np.zeros(case.layout.stats_shape)
    std = np.sqrt(view.mean((view.work(x) - mean) ** 2) + case.effective_eps)
    # exact broadcasting of per-group statistics onto per-parameter slots
    weight = np.broadcast_to(std, case.layout.param_shape).reshape(case.layout.weight_shape)
    arrays = dict(ctx.arrays, weight=weight.copy(),
                  bias=np.broadcast_to(mean, case.layout.param_shape).reshape(case.layout.weight_shape).copy()
                  if case.has_bias else None)
    arrays = {k: (round_to(v, case.dtype) if isinstance(v, np.ndarray) else v) for k, v in arrays.items()}
    y = impl.run(case, arrays, gradients=False).y
    magnitude = 2 * view.max(x) + view.param(arrays["weight"], 1.0) * view.max(ctx.xhat())
    tol = policy(case.dtype, ctx.group_size, magnitude, ctx.kappa())
    truth_with_rounded_params = oracles.truth(case, arrays).y
    return [compare("y - x with gamma = sqrt(var+eps), beta = mean", y, truth_with_rounded_params, tol),
            compare("plain definition gives y = x", truth_with_rounded_params, x, tol)]


def _single_group_per_parameter(case: Case) -> Case:
    """Keep one sample where the affine axes do not cover the group (layer/rms, instance, group)."""
    if case.variant == "batch_norm":
        return dataclasses.replace(case, training=True)
    if case.variant in ("layer_norm", "rms_norm"):
        return dataclasses.replace(case, shape=case.normalized_shape, normalized_ndim=len(case.normalized_shape))
    shape = (1, *case.shape[1:])
    if case.variant == "group_norm" and (shape[1] // case.num_groups) * int(np.prod(shape[2:])) == 1:
        shape = (1, shape[1], 2)  # torch refuses a one-element group over the whole batch
    return dataclasses.replace(case, shape=shape)


def _relational(impl: Implementation, case: Case, arrays_b: dict, name: str,
                quantity: str = "y") -> list[Comparison]:
    """f(b) - f(a) against the truth's T(b) - T(a): an invariance up to input rounding."""
    ctx = Context.of(case)
    arrays_b = {k: (round_to(v, case.dtype) if isinstance(v, np.ndarray) else v) for k, v in arrays_b.items()}
    ctx_b = Context(case, arrays_b, oracles.truth(case, arrays_b))
    fa = impl.run(case, ctx.arrays, gradients=False).y
    fb = impl.run(case, arrays_b, gradients=False).y
    tol_a, tol_b = ctx.policy_y(), ctx_b.policy_y()
    tol = dataclasses.replace(tol_a, magnitude=tol_a.magnitude + tol_b.magnitude,  # both results' errors,
                              factor=np.maximum(tol_a.factor, tol_b.factor),  # the worse conditioning
                              kappa=max(tol_a.kappa, tol_b.kappa))
    tb = ctx_b.truth.y
    return [compare(name, fb - fa, tb - ctx.truth.y, tol)]


def check_shift_invariance(impl: Implementation, case: Case) -> list[Comparison]:
    case = _plain_case(case)
    x = case.arrays()["x"]
    shift = 2.0 ** np.round(np.log2(np.max(np.abs(x)) + 1e-30))
    return _relational(impl, case, dict(case.arrays(), x=x + shift), f"f(x + {shift:g}) - f(x)")


def check_bias_cancels(impl: Implementation, case: Case) -> list[Comparison]:
    """A bias constant within each group (a Linear/conv bias before the norm) cancels."""
    case = _plain_case(case)
    arrays = case.arrays()
    view = GroupView(case)
    rng = np.random.default_rng(case.seed + 2)
    bias = view.back(rng.standard_normal(case.layout.stats_shape) * (np.max(np.abs(arrays["x"])) + 1))
    return _relational(impl, case, dict(arrays, x=arrays["x"] + bias), "f(x + per-group bias) - f(x)")


def check_scale_invariance(impl: Implementation, case: Case) -> list[Comparison]:
    """f(a x; a^2 eps) = f(x; eps) for a power of two a > 0 (exact scaling of the inputs)."""
    case = _plain_case(case)
    if case.eps is None:
        case = dataclasses.replace(case, eps=case.effective_eps)
    compute_max = float(torch.finfo(torch.float64 if case.dtype == "float64" else torch.float32).max)
    storage_max = float(torch.finfo(TORCH_DTYPES[case.dtype]).max)
    largest = 8.0 * float(np.max(np.abs(case.arrays()["x"])))
    fits = largest < storage_max / 16 and largest < np.sqrt(compute_max / 16 / case.layout.group_size)
    a = 8.0 if fits else 0.125  # scaling by a power of two is exact; keep x^2 summable
    scaled = dataclasses.replace(case, eps=case.eps * a * a)
    arrays = case.arrays()
    base = impl.run(case, arrays, gradients=False).y
    moved = impl.run(scaled, dict(arrays, x=arrays["x"] * a), gradients=False).y
    tol = Context(case, arrays, oracles.truth(case, arrays)).policy_y()
    tol = dataclasses.replace(tol, magnitude=2 * tol.magnitude)
    return [compare(f"f({a:g} x; {a * a:g} eps) - f(x; eps)", moved, base, tol)]


def check_gradient_sum(impl: Implementation, case: Case) -> list[Comparison]:
    """sum over the group of dx = 0 (centering variants)."""
    ctx = Context.of(_batch_statistics(case))
    case = ctx.case
    dx = impl.run(case, ctx.arrays).dx
    tol = ctx.policy_dx()
    allowed = np.sum(ctx.view.work(tol.atol + tol.rtol * np.abs(ctx.truth.dx)), axis=ctx.case.layout.group_dims,
                     keepdims=True)
    sums = np.sum(ctx.view.work(dx), axis=ctx.case.layout.group_dims, keepdims=True)
    sums = np.where(ctx.representable_groups(), sums, 0.0)
    return [compare("sum_group dx (groups whose true dx fits the dtype)", sums, np.zeros_like(sums),
                    dataclasses.replace(tol, magnitude=allowed, factor=1.0, rtol=0.0))]


def check_gradient_xhat(impl: Implementation, case: Case) -> list[Comparison]:
    """sum over the group of dx * xhat = r N mean(h xhat) eps / (var + eps)."""
    ctx = Context.of(_batch_statistics(case))
    case = ctx.case
    dx = impl.run(case, ctx.arrays).dx
    xhat, view, eps = ctx.xhat(), ctx.view, case.effective_eps
    h = view.param(ctx.arrays["weight"], 1.0) * ctx.arrays["grad_out"]
    n, var = ctx.group_size, ctx.var()
    expected = np.sqrt(1 / (var + eps)) * n * view.mean(h * xhat) * eps / (var + eps)
    tol = ctx.policy_dx()
    allowed = np.sum(view.work((tol.atol + tol.rtol * np.abs(ctx.truth.dx)) * np.abs(xhat)),
                     axis=case.layout.group_dims, keepdims=True)
    lhs = np.sum(view.work(dx * xhat), axis=case.layout.group_dims, keepdims=True)
    expected = np.broadcast_to(expected, lhs.shape)
    lhs = np.where(ctx.representable_groups(), lhs, expected)
    return [compare("sum_group dx*xhat - r N mean(h xhat) eps/(var+eps)", lhs, expected,
                    dataclasses.replace(tol, magnitude=allowed * 2, factor=1.0, rtol=0.0))]


def check_constant_group(impl: Implementation, case: Case) -> list[Comparison]:
    """A constant group (exact mean) gives y = beta exactly and finite gradients."""
    case = dataclasses.replace(_batch_statistics(case), values="constant", eps=case.eps or 1e-5, affine=True)
    ctx = Context.of(case)
    got = impl.run(case, ctx.arrays)
    beta = round_to(ctx.view.param(ctx.arrays["bias"], 0.0), case.dtype)
    comparisons = [compare("y - beta (exact)", got.y, beta, exact(case.dtype, beta.shape))]
    for name in ("dx", "dweight", "dbias"):
        value, true = getattr(got, name), getattr(ctx.truth, name)
        if value is None or true is None:
            continue
        if value.shape != true.shape:
            comparisons.append(compare(name, value, true, exact(case.dtype, true.shape)))  # reports the shape
            continue
        representable = np.isfinite(round_to(true, case.dtype))  # r * h may overflow float16 honestly
        if not np.all(np.isfinite(value[representable])):
            comparisons.append(compare(f"{name} finite where the truth is", np.where(representable, value, 0),
                                       np.zeros_like(value), exact(case.dtype, value.shape)))
    return comparisons


# --- cross-variant identities ---------------------------------------------------------------

def _run_other(impl: Implementation, case: Case, arrays: dict) -> np.ndarray:
    return impl.run(case, arrays, gradients=False).y


def check_group_norm_one_group(impl: Implementation, case: Case) -> list[Comparison]:
    """group_norm(G=1) = layer_norm over (C, *S), then the per-channel affine."""
    case = dataclasses.replace(case, num_groups=1)
    ctx = Context.of(case)  # group_norm(G=1)
    y_gn = _run_other(impl, case, ctx.arrays)
    ln = Case("layer_norm", case.shape, case.dtype, eps=case.eps, affine=False,
              normalized_ndim=len(case.shape) - 1, memory=case.memory, seed=case.seed)
    y_ln = _run_other(impl, ln, dict(ctx.arrays, weight=None, bias=None))
    w = ctx.view.param(ctx.arrays["weight"], 1.0)
    b = ctx.view.param(ctx.arrays["bias"], 0.0)
    tol = ctx.policy_y()
    return [compare("group_norm(G=1) - affine(layer_norm)", y_gn, y_ln * w + b,
                    dataclasses.replace(tol, magnitude=2 * tol.magnitude))]


def check_group_norm_all_groups(impl: Implementation, case: Case) -> list[Comparison]:
    """group_norm(G=C) = instance_norm."""
    from verify.strategies import enough_per_group

    case = dataclasses.replace(case, num_groups=case.shape[1], shape=enough_per_group("instance_norm", case.shape))
    ctx = Context.of(case)
    inorm = dataclasses.replace(case, variant="instance_norm", running=False)
    tol = ctx.policy_y()
    return [compare("group_norm(G=C) - instance_norm", _run_other(impl, case, ctx.arrays),
                    _run_other(impl, inorm, ctx.arrays), dataclasses.replace(tol, magnitude=2 * tol.magnitude))]


def check_rms_is_layer_norm_on_zero_mean(impl: Implementation, case: Case) -> list[Comparison]:
    """rms_norm = layer_norm (no bias) on input whose groups have mean exactly zero."""
    case = dataclasses.replace(case, values="exact")
    arrays = case.arrays()
    view = GroupView(case)
    zero_mean = view.back(view.work(arrays["x"]) - view.mean(arrays["x"]))  # exact: few-bit pairs
    arrays = dict(arrays, x=zero_mean, bias=None)
    ln = dataclasses.replace(case, variant="layer_norm", eps=case.effective_eps)
    ctx = Context(case, arrays, oracles.truth(case, arrays))
    tol = ctx.policy_y()
    return [compare("rms_norm - layer_norm on zero-mean x", _run_other(impl, case, arrays),
                    _run_other(impl, ln, arrays), dataclasses.replace(tol, magnitude=2 * tol.magnitude))]


def check_batch_norm_is_transposed_layer_norm(impl: Implementation, case: Case) -> list[Comparison]:
    """batch_norm of (N, C) = layer_norm of its transpose over the last axis (no affine)."""
    n, c = case.shape[0], case.shape[1]
    case = dataclasses.replace(case, shape=(max(n, 2), c), training=True, running=False, affine=False,
                               memory="contiguous", eps=case.eps or 1e-5)
    ctx = Context.of(case)
    ln = Case("layer_norm", (c, case.shape[0]), case.dtype, eps=case.eps, affine=False, seed=case.seed)
    y_ln = _run_other(impl, ln, dict(ctx.arrays, x=ctx.arrays["x"].T.copy())).T
    tol = ctx.policy_y()
    return [compare("batch_norm(x) - layer_norm(x.T).T", _run_other(impl, case, ctx.arrays), y_ln,
                    dataclasses.replace(tol, magnitude=2 * tol.magnitude))]


def check_per_sample_independence(impl: Implementation, case: Case) -> list[Comparison]:
    """Perturbing every other sample leaves the first sample's output unchanged."""
    case = dataclasses.replace(case, running=False,
                               normalized_ndim=min(case.normalized_ndim, len(case.shape) - 1))
    ctx = Context.of(case)
    arrays = ctx.arrays
    moved = arrays["x"].copy()
    moved[1:] = moved[1:] * 3 + 5
    first = _run_other(impl, case, arrays)[:1]
    again = _run_other(impl, case, dict(arrays, x=round_to(moved, case.dtype)))[:1]
    tol = ctx.policy_y()
    return [compare("sample 0 after changing samples 1..", again, first,
                    dataclasses.replace(tol, magnitude=tol.magnitude[:1] if np.ndim(tol.magnitude) else
                                        tol.magnitude, factor=tol.factor[:1] if np.ndim(tol.factor) else
                                        tol.factor))]


def check_batch_permutation(impl: Implementation, case: Case) -> list[Comparison]:
    """batch_norm(x[p]) = batch_norm(x)[p] for a permutation p of the batch."""
    case = dataclasses.replace(case, training=True, running=False)
    ctx = Context.of(case)
    perm = np.random.default_rng(case.seed + 3).permutation(case.shape[0])
    permuted = _run_other(impl, case, dict(ctx.arrays, x=ctx.arrays["x"][perm]))
    tol = ctx.policy_y()
    return [compare("batch_norm(x[p]) - batch_norm(x)[p]", permuted, _run_other(impl, case, ctx.arrays)[perm],
                    dataclasses.replace(tol, magnitude=2 * tol.magnitude[perm] if np.ndim(tol.magnitude)
                                        else 2 * tol.magnitude,
                                        factor=tol.factor[perm] if np.ndim(tol.factor) else tol.factor))]


_PER_SAMPLE = ("layer_norm", "instance_norm", "group_norm", "rms_norm")
_SMALL = {"max_numel": 96}

CHECKS: dict[str, Check] = {c.name: c for c in (
    Check("forward", "oracle", "y against the plain definition (float64 torch)", check_forward),
    Check("backward", "oracle", "dx, dweight, dbias against autograd of the plain definition", check_backward,
          needs_gradients=True),
    Check("running_stats", "oracle", "running mean/var update (momentum, unbiased variance)",
          check_running_stats, variants=("batch_norm", "instance_norm"), case_options={"training": True}),
    Check("deterministic", "oracle", "two identical calls give bit-identical results", check_deterministic,
          case_options={"max_numel": 512}),
    Check("eval_running_unchanged", "oracle", "eval mode leaves the running statistics untouched",
          check_eval_running_unchanged, variants=("batch_norm",), case_options={"training": False}),
    Check("finite_differences", "oracle", "VJP against central differences of the forward", check_finite_differences,
          dtypes=("float64",), needs_gradients=True,
          case_options={"max_numel": 48, "families": ("normal", "outlier", "gamma_mixed", "offset", "tiny")}),
    Check("mpmath", "oracle", "forward and dx against 50-digit mpmath (ULP error)", check_mpmath,
          dtypes=("float64",), case_options=_SMALL),
    Check("mean_zero", "invariant", "mean over the group of xhat = 0", check_mean_zero,
          variants=CENTERING_VARIANTS, case_options={"training": True}),
    Check("second_moment", "invariant", "mean(xhat^2) = var/(var+eps)", check_second_moment,
          case_options={"training": True}),
    Check("identity_recovery", "invariant", "gamma = sqrt(var+eps), beta = mean give y = x",
          check_identity_recovery, case_options={"training": True}),
    Check("shift_invariance", "invariant", "f(x + c) = f(x)", check_shift_invariance,
          variants=CENTERING_VARIANTS, case_options={"training": True}),
    Check("scale_invariance", "invariant", "f(a x; a^2 eps) = f(x; eps)", check_scale_invariance,
          case_options={"training": True}),
    Check("bias_cancels", "invariant", "a per-group bias before the norm cancels", check_bias_cancels,
          variants=CENTERING_VARIANTS, case_options={"training": True}),
    Check("gradient_sum", "invariant", "sum over the group of dx = 0", check_gradient_sum,
          variants=CENTERING_VARIANTS, needs_gradients=True, case_options={"training": True}),
    Check("gradient_xhat", "invariant", "sum dx*xhat = r N mean(h xhat) eps/(var+eps)", check_gradient_xhat,
          needs_gradients=True, case_options={"training": True}),
    Check("constant_group", "invariant", "constant group: y = beta exactly, finite gradients",
          check_constant_group, variants=CENTERING_VARIANTS, case_options={"training": True}),
    Check("group_norm_one_group", "identity", "group_norm(G=1) = layer_norm over (C, *S) + affine",
          check_group_norm_one_group, variants=("group_norm",), needs=("layer_norm",)),
    Check("group_norm_all_groups", "identity", "group_norm(G=C) = instance_norm", check_group_norm_all_groups,
          variants=("group_norm",), needs=("instance_norm",), case_options={"min_rank": 3}),
    Check("rms_is_layer_norm", "identity", "rms_norm = layer_norm on zero-mean input",
          check_rms_is_layer_norm_on_zero_mean, variants=("rms_norm",), needs=("layer_norm",)),
    Check("batch_norm_transposed", "identity", "batch_norm of (N, C) = layer_norm of the transpose",
          check_batch_norm_is_transposed_layer_norm, variants=("batch_norm",), needs=("layer_norm",)),
    Check("per_sample_independence", "identity", "other samples do not change a sample's output",
          check_per_sample_independence, variants=_PER_SAMPLE),
    Check("batch_permutation", "identity", "batch_norm is equivariant under permuting the batch",
          check_batch_permutation, variants=("batch_norm",), case_options={"training": True}),
)}
