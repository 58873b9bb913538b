"""Checks of the saved-statistics convention (``--abi aten``): what the forward saves, the backward
fed the true statistics and its own, and the output mask."""
from __future__ import annotations

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


CHECKS = (
    Check("saved_statistics", "oracle", "the saved mean and rstd: shape, dtype and values (--abi aten)",
          check_saved_statistics, variants=ATEN_VARIANTS, needs_abi="aten"),
    Check("backward_true_statistics", "oracle", "the backward fed the true mean and rstd (--abi aten)",
          check_backward_true_statistics, variants=ATEN_VARIANTS, needs_abi="aten", needs_gradients=True),
    Check("output_mask", "oracle", "masked gradients not computed, the others unchanged (--abi aten)",
          check_output_mask, variants=ATEN_VARIANTS, needs_abi="aten", needs_gradients=True,
          case_options={"affine": True, "max_numel": 512}),
)
