"""Checks of the kernels' calling conventions: the saved statistics (``--abi aten``: what the
forward saves, the backward fed the true statistics, the output mask) and the backward from the
output (``--backward-from-output``)."""
from __future__ import annotations

import dataclasses
import itertools

import numpy as np

from normspec.derive import abi as abi_records
from normspec.derive import dtypes
from normspec.verify.cases.case import Case
from normspec.verify.checks.base import Check, Context
from normspec.verify.checks.oracle_checks import gradient_comparisons
from normspec.verify.implementations import abi
from normspec.verify.implementations.base import RESULT_FIELDS, Implementation
from normspec.verify.truth.tolerance import Comparison, _failed, compare, exact, policy

ATEN_VARIANTS = tuple(abi_records.ATEN)


def true_saved(ctx: Context) -> dict:
    convention = abi_records.aten(ctx.case.variant)
    return abi.expected_saved(convention, ctx.case, *ctx.statistics())


def check_saved_statistics(impl: Implementation, case: Case) -> list[Comparison]:
    """The forward's saved mean and rstd: shape, dtype (the compute dtype) and values, rstd =
    1 / sqrt(var + eps) with the biased variance. In batch_norm's eval mode nothing is saved."""
    ctx = Context.of(case)
    got = impl.run(case, ctx.arrays, gradients=False)
    comparisons = [compare("y", got.y, ctx.truth.y, ctx.policy_y())]
    if case.given_statistics:
        return comparisons
    convention = abi_records.aten(case.variant)
    wanted_dtype = abi.saved_dtype(case)
    expected = true_saved(ctx)
    n = ctx.group_size
    kappa = float(np.max(ctx.kappa()))
    x = ctx.view.work(ctx.normalized())
    magnitude = {"mean": np.max(np.abs(x), axis=case.layout.group_dims, keepdims=True), "rstd": None}
    for name, shown in zip(convention.saved, convention.saved_names):
        dtype = got.saved_dtypes[name]
        if dtype != wanted_dtype:
            comparisons.append(_failed(f"{shown} dtype", policy(wanted_dtype, n, np.zeros(()), 1.0),
                                       f"saved as {dtype}, expected {wanted_dtype} (the compute dtype of "
                                       f"{case.dtype} x: a backward reads it back at that precision)"))
        value = expected[name]
        scale = value if magnitude[name] is None else np.broadcast_to(magnitude[name], ctx.var().shape).reshape(value.shape)
        rounding = dtypes.coarser(wanted_dtype, dtype) if dtype in dtypes.DTYPES else wanted_dtype
        comparisons.append(compare(f"saved {shown}", got.saved[name], value,
                                   policy(rounding, n, np.abs(scale), kappa, compute=dtypes.compute_dtype(case.dtype))))
    return comparisons


def check_backward_true_statistics(impl: Implementation, case: Case) -> list[Comparison]:
    """The backward fed the true mean and rstd (in the compute dtype), not the forward's: its own
    error, apart from the forward's."""
    ctx = Context.of(case)
    statistics = None if case.given_statistics else true_saved(ctx)
    got = impl.run(case, ctx.arrays, statistics=statistics)
    return gradient_comparisons(ctx, got, " (backward fed the true statistics)")


def check_output_mask(impl: Implementation, case: Case) -> list[Comparison]:
    """Every output_mask with some gradient asked for: the masked gradients not computed (None),
    the others bit-identical to those of the full mask."""
    ctx = Context.of(case)
    convention = abi_records.aten(case.variant)
    full = abi.output_mask(convention, case)
    reference = impl.run(case, ctx.arrays, output_mask=full)
    comparisons = []
    passed = [i for i, wanted in enumerate(full) if wanted]
    for keep in itertools.product((True, False), repeat=len(passed)):
        if all(keep) or not any(keep):
            continue
        mask = list(full)
        for index, kept in zip(passed, keep):
            mask[index] = kept
        got = impl.run(case, ctx.arrays, output_mask=tuple(mask))
        shown = f"output_mask={[bool(m) for m in mask]}"
        for name in got.computed_despite_mask:
            comparisons.append(_failed(f"d{name} with {shown}", exact(case.dtype, ()),
                                       f"returned although masked: a masked gradient is not computed (None)"))
        for name, wanted in zip(convention.gradients, mask):
            if wanted:
                a, b = getattr(got, f"d{name}"), getattr(reference, f"d{name}")
                comparisons.append(compare(f"d{name} with {shown} - with the full mask", a, b,
                                           exact(case.dtype, np.shape(b))))
    return comparisons


def check_backward_from_output(impl: Implementation, case: Case) -> list[Comparison]:
    """The backward from y (xhat = (y - beta) / gamma) against the truth, at the coarser of y's and
    the weight's dtype (the method reads xhat back at y's precision). Where the weight is small the
    method loses more, y's rounding divided by |gamma|: a failure is then compared with the exact
    backward from the implementation's own y and rstd, and if it agrees with that it is a range
    limit of the method (the conditioning of reconstructing xhat), else a bug."""
    case = dataclasses.replace(case, affine=True, weight=True, weight_offset=0.0, running=False)
    ctx = Context.of(case)
    rstd = None if impl.abi == "aten" else true_saved(ctx)["rstd"]
    got = impl.run_from_output(case, ctx.arrays, rstd=rstd)
    dtype = dtypes.coarser(case.dtype, case.dtype_of("weight"))
    method = _exact_from_output(ctx, got.y, rstd if rstd is not None else got.saved["rstd"])
    comparisons = []
    for name in ("dx", "dweight"):
        strict = _from_output_policy(ctx, name, ctx.xhat(), dtype)
        comparison = compare(f"{name} (backward from the output)", getattr(got, name), getattr(ctx.truth, name), strict)
        own = compare(name, getattr(got, name), method[name], _from_output_policy(ctx, name, method["xhat"], dtype))
        if not comparison.ok and own.ok:
            gamma = np.abs(ctx.gamma())
            comparison = dataclasses.replace(comparison, limit=(
                f"the backward from the output is ill-conditioned here: it reads xhat back from y, xhat = "
                f"(y - beta) / gamma, y's rounding divided by |weight| (down to {float(np.min(gamma)):.2g}), and "
                f"{name} agrees with the exact backward from this y (worst {own.worst_ratio:.2g} of its tolerance)"))
        comparisons.append(comparison)
    if case.has_bias:
        comparisons.append(compare("dbias (backward from the output)", got.dbias, ctx.truth.dbias,
                                   ctx.policy_param(ctx.arrays["grad_out"])))
    return comparisons


def _exact_from_output(ctx: Context, y: np.ndarray, rstd: np.ndarray) -> dict:
    """The backward from the output in float64 on the implementation's own y and rstd: what the
    method computes when it computes exactly (xhat, dx, dweight)."""
    view, case, g = ctx.view, ctx.case, ctx.arrays["grad_out"]
    gamma = ctx.gamma()
    xhat = (y - view.param(ctx.arrays["bias"], 0.0)) / gamma
    r = view.back(np.reshape(rstd, case.layout.stats_shape))
    h = gamma * g
    inner = view.work(h) - view.work(xhat) * view.mean(h * xhat)
    if case.centered:
        inner = inner - view.mean(h)
    return {"xhat": xhat, "dx": r * view.back(inner), "dweight": view.affine_sum(g * xhat)}


def _from_output_policy(ctx: Context, name: str, xhat: np.ndarray, dtype: str):
    view, case, g = ctx.view, ctx.case, ctx.arrays["grad_out"]
    n, kappa = ctx.group_size, ctx.kappa()
    if name == "dx":
        magnitude = view.max(ctx.rstd() * np.abs(ctx.gamma() * g)) * (1 + view.max(xhat))
        return policy(dtype, n, magnitude, kappa)
    length = int(np.prod([case.layout.work_shape[d] for d in case.layout.affine_dims]))
    return policy(dtype, max(length, n), view.affine_sum(np.abs(g) * (1 + np.abs(xhat))), float(np.max(kappa)))


CHECKS = (
    Check("saved_statistics", "oracle", "the saved mean and rstd: shape, dtype and values (--abi aten)",
          check_saved_statistics, variants=ATEN_VARIANTS, needs_abi="aten"),
    Check("backward_true_statistics", "oracle", "the backward fed the true mean and rstd (--abi aten)",
          check_backward_true_statistics, variants=ATEN_VARIANTS, needs_abi="aten", needs_gradients=True),
    Check("output_mask", "oracle", "masked gradients not computed, the others unchanged (--abi aten)",
          check_output_mask, variants=ATEN_VARIANTS, needs_abi="aten", needs_gradients=True,
          case_options={"affine": True, "max_numel": 512}),
    Check("backward_from_output", "oracle", "the backward from y (--backward-from-output): xhat = (y - beta) / gamma",
          check_backward_from_output, variants=tuple(abi_records.FROM_OUTPUT), needs_from_output=True,
          case_options={"affine": True, "value_kinds": ("normal", "gamma_tiny", "gamma_mixed", "outlier", "offset")}),
)
