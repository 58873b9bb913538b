"""Invariants: exact facts of the mathematics (moments of xhat, invariances, gradient identities)."""
from __future__ import annotations

import dataclasses

import numpy as np

from normspec.derive import dtypes, variants
from normspec.verify.cases.case import Case, round_to
from normspec.verify.cases.strategies import accepted_shape
from normspec.verify.checks.base import Check, Context, GroupView
from normspec.verify.implementations.base import Implementation
from normspec.verify.truth import definition
from normspec.verify.truth.tolerance import Comparison, compare, exact, policy


def _batch_statistics(case: Case) -> Case:
    """Invariants of the statistics need them computed from the batch (batch_norm training)."""
    return dataclasses.replace(case, training=True, running=False)


def _xhat_only(case: Case) -> Case:
    """The case with batch statistics and without affine parameters: the output is xhat itself."""
    return dataclasses.replace(_batch_statistics(case), affine=False)


def check_mean_zero(impl: Implementation, case: Case) -> list[Comparison]:
    ctx = Context.of(_xhat_only(case))
    xhat = impl.run(ctx.case, ctx.arrays, gradients=False).y
    tol = ctx.policy_y()
    return [compare("mean(xhat) over the group", ctx.view.mean(xhat), np.zeros(ctx.case.layout.stats_shape),
                    dataclasses.replace(tol, magnitude=ctx.view.mean(ctx.view.back(tol.magnitude)),
                                        factor=float(np.max(tol.factor))))]


def check_second_moment(impl: Implementation, case: Case) -> list[Comparison]:
    """mean(xhat^2) = var / (var + eps) (RMS: mean(x^2) / (mean(x^2) + eps))."""
    ctx = Context.of(_xhat_only(case))
    xhat = impl.run(ctx.case, ctx.arrays, gradients=False).y
    var = ctx.var()
    expected = np.broadcast_to(var / (var + ctx.case.effective_eps), ctx.case.layout.stats_shape)
    tol = ctx.policy_y()
    magnitude = ctx.view.mean(2 * np.abs(ctx.truth.y) * ctx.view.back(tol.magnitude) + tol.magnitude ** 2)
    return [compare("mean(xhat^2) - var/(var+eps)", ctx.view.mean(xhat**2), expected,
                    dataclasses.replace(tol, magnitude=magnitude, factor=float(np.max(tol.factor))))]


def check_identity_recovery(impl: Implementation, case: Case) -> list[Comparison]:
    """gamma = sqrt(var + eps), beta = mean give y = x, for one group per affine parameter."""
    case = dataclasses.replace(_single_group_per_parameter(case), affine=True, weight=True, bias=True, running=False)
    ctx = Context.of(case)
    view, x = ctx.view, ctx.normalized()  # the fused add normalizes x + residual: y recovers that sum
    mean = view.mean(x) if case.centered else np.zeros(case.layout.stats_shape)
    std = np.sqrt(view.mean((view.work(x) - mean) ** 2) + case.effective_eps)
    # exact broadcasting of per-group statistics onto per-parameter slots; the weight offset is the
    # implementation's to add (gamma = weight + offset = std)
    weight = np.broadcast_to(std, case.layout.param_shape).reshape(case.layout.weight_shape) - case.effective_weight_offset
    arrays = dict(ctx.arrays, weight=weight.copy(),
                  bias=np.broadcast_to(mean, case.layout.param_shape).reshape(case.layout.weight_shape).copy()
                  if case.has_bias else None)
    arrays = case.rounded(arrays)
    y = impl.run(case, arrays, gradients=False).y
    # the stored weight (std - offset) is rounded on its own scale, |weight| + |offset|, not gamma's
    gamma = np.abs(view.param(arrays["weight"], 1.0)) + abs(case.effective_weight_offset)
    magnitude = 2 * view.max(x) + gamma * view.max(ctx.xhat())
    tol = policy(ctx.rounding_dtype(), ctx.group_size, magnitude, ctx.kappa())  # a contract may round coarser
    truth_with_rounded_params = definition.truth(case, arrays).y
    # y = x holds up to the rounding of the stored gamma and beta, in their own dtype
    recovered = policy(dtypes.coarser(case.dtype, case.dtype_of("weight")), ctx.group_size, magnitude, ctx.kappa())
    return [compare("y - x with gamma = sqrt(var+eps), beta = mean", y, truth_with_rounded_params, tol),
            compare("plain definition gives y = x", truth_with_rounded_params, x, recovered)]


def _single_group_per_parameter(case: Case) -> Case:
    """Keep one sample where the affine axes do not cover the group (variants whose statistics
    are per sample): every sample axis of the shape becomes 1, and every axis a parameter is
    shared along without sharing statistics (an adaptive norm's tokens)."""
    if not case.record.per_sample:
        return dataclasses.replace(case, training=True)
    natural, ndim, arguments = case.record.natural, len(case.shape), case.arguments()
    samples = set(natural.samples(ndim, arguments))
    if natural.split_channels is None:  # the statistics axes are x's own
        shared = set(range(ndim)) - set(natural.statistics(ndim, arguments)) - set(natural.parameters(ndim, arguments))
        samples |= shared
    shape = tuple(1 if d in samples else n for d, n in enumerate(case.shape))
    single = dataclasses.replace(case, shape=shape)
    grown = accepted_shape(single)
    if any(grown[d] != 1 for d in samples):  # growing the batch would add a sample: add a spatial axis
        grown = (*shape, 2)
    return dataclasses.replace(single, shape=grown)


def _relational(impl: Implementation, case: Case, arrays_b: dict, name: str,
                quantity: str = "y") -> list[Comparison]:
    """f(b) - f(a) against the truth's T(b) - T(a): an invariance up to input rounding."""
    ctx = Context.of(case)
    arrays_b = case.rounded(arrays_b)
    ctx_b = Context(case, arrays_b, definition.truth(case, arrays_b))
    fa = impl.run(case, ctx.arrays, gradients=False).y
    fb = impl.run(case, arrays_b, gradients=False).y
    tol_a, tol_b = ctx.policy_y(), ctx_b.policy_y()
    tol = dataclasses.replace(tol_a, magnitude=tol_a.magnitude + tol_b.magnitude,  # both results' errors,
                              factor=np.maximum(tol_a.factor, tol_b.factor),  # the worse conditioning
                              kappa=max(tol_a.kappa, tol_b.kappa))
    tb = ctx_b.truth.y
    return [compare(name, fb - fa, tb - ctx.truth.y, tol)]


def check_shift_invariance(impl: Implementation, case: Case) -> list[Comparison]:
    case = _xhat_only(case)
    x = case.arrays()["x"]
    shift = 2.0 ** np.round(np.log2(np.max(np.abs(x)) + 1e-30))
    return _relational(impl, case, dict(case.arrays(), x=x + shift), f"f(x + {shift:g}) - f(x)")


def check_bias_cancels(impl: Implementation, case: Case) -> list[Comparison]:
    """A bias constant within each group (a Linear/conv bias before the norm) cancels."""
    case = _xhat_only(case)
    arrays = case.arrays()
    view = GroupView(case)
    rng = np.random.default_rng(case.seed + 2)
    bias = view.back(rng.standard_normal(case.layout.stats_shape) * (np.max(np.abs(arrays["x"])) + 1))
    return _relational(impl, case, dict(arrays, x=arrays["x"] + bias), "f(x + per-group bias) - f(x)")


def check_scale_invariance(impl: Implementation, case: Case) -> list[Comparison]:
    """f(a x; a^2 eps) = f(x; eps) for a power of two a > 0 (exact scaling of the inputs; the fused
    add's residual scales with x)."""
    case = _xhat_only(case)
    if case.eps is None:
        case = dataclasses.replace(case, eps=case.effective_eps)
    compute_max = dtypes.largest(dtypes.compute_dtype(case.dtype))
    storage_max = dtypes.largest(case.dtype)
    largest = 8.0 * float(np.max(np.abs(case.normalized_input(case.arrays()))))
    fits = largest < storage_max / 16 and largest < np.sqrt(compute_max / 16 / case.layout.group_size)
    a = 8.0 if fits else 0.125  # scaling by a power of two is exact; keep x^2 summable
    scaled = dataclasses.replace(case, eps=case.eps * a * a)
    arrays = case.arrays()
    base = impl.run(case, arrays, gradients=False).y
    moved_arrays = dict(arrays, x=arrays["x"] * a)
    if case.has_residual:
        moved_arrays["residual"] = arrays["residual"] * a
    moved = impl.run(scaled, moved_arrays, gradients=False).y
    tol = Context(case, arrays, definition.truth(case, arrays)).policy_y()
    tol = dataclasses.replace(tol, magnitude=2 * tol.magnitude)
    return [compare(f"f({a:g} x; {a * a:g} eps) - f(x; eps)", moved, base, tol)]


def _norm_part(ctx: Context, dx: np.ndarray) -> np.ndarray:
    """dx without the fused add's pass-through g_s: the norm's own J^T g."""
    return dx - ctx.arrays["grad_residual_out"] if ctx.case.has_residual else dx


def check_gradient_sum(impl: Implementation, case: Case) -> list[Comparison]:
    """sum over the group of dx = 0 (centering variants; the fused add: of dx - g_s)."""
    ctx = Context.of(_batch_statistics(case))
    case = ctx.case
    dx = _norm_part(ctx, impl.run(case, ctx.arrays).dx)
    tol = ctx.policy_dx()
    allowed = np.sum(ctx.view.work(tol.atol + tol.rtol * np.abs(ctx.truth.dx)), axis=ctx.case.layout.group_dims,
                     keepdims=True)
    sums = np.sum(ctx.view.work(dx), axis=ctx.case.layout.group_dims, keepdims=True)
    sums = np.where(ctx.representable_groups(), sums, 0.0)
    shown = "sum_group (dx - g_s)" if case.has_residual else "sum_group dx"
    return [compare(f"{shown} (groups whose true dx fits the dtype)", sums, np.zeros_like(sums),
                    dataclasses.replace(tol, magnitude=allowed, factor=1.0, rtol=0.0))]


def check_gradient_xhat(impl: Implementation, case: Case) -> list[Comparison]:
    """sum over the group of dx * xhat = r N mean(h xhat) eps / (var + eps).

    Both sides are formed here in float64 from a computed xhat, whose absolute error is
    about u64 * kappa (x - mean cancels digits): the tolerance is the implementation's dx
    tolerance carried through the sum, plus that xhat error carried through both sides.
    """
    ctx = Context.of(_batch_statistics(case))
    case = ctx.case
    dx = _norm_part(ctx, impl.run(case, ctx.arrays).dx)
    xhat, view, eps = ctx.xhat(), ctx.view, case.effective_eps
    h = ctx.gamma() * ctx.arrays["grad_out"]
    n, var = ctx.group_size, ctx.var()
    shrink = eps / (var + eps)
    expected = np.sqrt(1 / (var + eps)) * n * view.mean(h * xhat) * shrink
    tol = ctx.policy_dx()
    xhat_error = _FORMED_ERROR * dtypes.unit_roundoff("float64") * (1 + n) * ctx.kappa()
    group_sum = lambda a: np.sum(view.work(a), axis=case.layout.group_dims, keepdims=True)  # noqa: E731
    allowed = (group_sum((tol.atol + tol.rtol * np.abs(ctx.truth.dx)) * np.abs(xhat))  # the implementation's dx
               + group_sum(np.abs(ctx.truth.dx) * xhat_error)  # lhs: through xhat
               + np.sqrt(1 / (var + eps)) * n * view.mean(np.abs(h) * (np.abs(xhat) + xhat_error)) * shrink
               * (xhat_error.max() + _FORMED_ERROR * (1 + n) * dtypes.unit_roundoff("float64")))  # rhs
    lhs = group_sum(dx * xhat)
    expected = np.broadcast_to(expected, lhs.shape)
    lhs = np.where(ctx.representable_groups(), lhs, expected)
    shown = "(dx - g_s)" if case.has_residual else "dx"
    return [compare(f"sum_group {shown}*xhat - r N mean(h xhat) eps/(var+eps)", lhs, expected,
                    dataclasses.replace(tol, magnitude=allowed * 2, factor=1.0, rtol=0.0))]


_FORMED_ERROR = 4.0  # float64 operations that form xhat (and each side) from x, with a margin


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


_CENTERED = variants.matching(lambda v: v.centered)

CHECKS = (
    Check("mean_zero", "invariant", "mean over the group of xhat = 0", check_mean_zero,
          variants=_CENTERED, case_options={"training": True}),
    Check("second_moment", "invariant", "mean(xhat^2) = var/(var+eps)", check_second_moment,
          case_options={"training": True}),
    Check("identity_recovery", "invariant", "gamma = sqrt(var+eps), beta = mean give y = x",
          check_identity_recovery, case_options={"training": True}),
    Check("shift_invariance", "invariant", "f(x + c) = f(x)", check_shift_invariance,
          variants=_CENTERED, case_options={"training": True}),
    Check("scale_invariance", "invariant", "f(a x; a^2 eps) = f(x; eps)", check_scale_invariance,
          case_options={"training": True}),
    Check("bias_cancels", "invariant", "a per-group bias before the norm cancels", check_bias_cancels,
          variants=_CENTERED, case_options={"training": True}),
    Check("gradient_sum", "invariant", "sum over the group of dx = 0", check_gradient_sum,
          variants=_CENTERED, needs_gradients=True, case_options={"training": True}),
    Check("gradient_xhat", "invariant", "sum dx*xhat = r N mean(h xhat) eps/(var+eps)", check_gradient_xhat,
          needs_gradients=True, case_options={"training": True}),
    Check("constant_group", "invariant", "constant group: y = beta exactly, finite gradients",
          check_constant_group, variants=_CENTERED, case_options={"training": True}),
)
