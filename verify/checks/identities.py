"""Cross-variant identities: one variant equals another on suitable inputs."""
from __future__ import annotations

import dataclasses

import numpy as np

from normspec.derive import variants
from normspec.verify.cases.case import Case, round_to
from normspec.verify.cases.strategies import accepted_shape
from normspec.verify.checks.base import Check, Context, GroupView
from normspec.verify.implementations.base import Implementation
from normspec.verify.truth import definition
from normspec.verify.truth.tolerance import Comparison, compare


def _other(relation: str) -> str:
    return variants.RELATIONS[relation].other


def _run_other(impl: Implementation, case: Case, arrays: dict) -> np.ndarray:
    return impl.run(case, arrays, gradients=False).y


def check_group_norm_one_group(impl: Implementation, case: Case) -> list[Comparison]:
    """group_norm(G=1) = layer_norm over (C, *S), then the per-channel affine."""
    case = dataclasses.replace(case, num_groups=1)
    ctx = Context.of(case)  # group_norm(G=1)
    y_gn = _run_other(impl, case, ctx.arrays)
    ln = Case(_other("group_norm_one_group"), case.shape, case.dtype, eps=case.eps, affine=False,
              normalized_ndim=len(case.shape) - 1, memory=case.memory, seed=case.seed)
    y_ln = _run_other(impl, ln, dict(ctx.arrays, weight=None, bias=None))
    w = ctx.view.param(ctx.arrays["weight"], 1.0)
    b = ctx.view.param(ctx.arrays["bias"], 0.0)
    tol = ctx.policy_y()
    return [compare("group_norm(G=1) - affine(layer_norm)", y_gn, y_ln * w + b,
                    dataclasses.replace(tol, magnitude=2 * tol.magnitude))]


def check_group_norm_all_groups(impl: Implementation, case: Case) -> list[Comparison]:
    """group_norm(G=C) = instance_norm."""
    inorm = dataclasses.replace(case, variant=_other("group_norm_all_groups"), running=False)
    shape = accepted_shape(inorm)
    case, inorm = (dataclasses.replace(c, shape=shape, num_groups=shape[1]) for c in (case, inorm))
    ctx = Context.of(case)
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
    ln = dataclasses.replace(case, variant=_other("rms_is_layer_norm"), eps=case.effective_eps)
    ctx = Context(case, arrays, definition.truth(case, arrays))
    tol = ctx.policy_y()
    return [compare("rms_norm - layer_norm on zero-mean x", _run_other(impl, case, arrays),
                    _run_other(impl, ln, arrays), dataclasses.replace(tol, magnitude=2 * tol.magnitude))]


def check_batch_norm_is_transposed_layer_norm(impl: Implementation, case: Case) -> list[Comparison]:
    """batch_norm of (N, C) = layer_norm of its transpose over the last axis (no affine)."""
    n, c = case.shape[0], case.shape[1]
    case = dataclasses.replace(case, shape=(max(n, 2), c), training=True, running=False, affine=False,
                               memory="contiguous", eps=case.eps or 1e-5)
    ctx = Context.of(case)
    ln = Case(_other("batch_norm_transposed"), (c, case.shape[0]), case.dtype, eps=case.eps, affine=False, seed=case.seed)
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


def _both(label: str, got, other, tol) -> Comparison:
    """``got`` against ``other``: two results of the implementation, each within ``tol`` of the truth."""
    return compare(label, got, other, dataclasses.replace(tol, magnitude=2 * tol.magnitude))


def _two_calls(impl: Implementation, ctx: Context, label: str, first: tuple[Case, dict],
               second: tuple[Case, dict]) -> list[Comparison]:
    """y (and dx, where both calls have gradients) of two calls that must agree, each within the
    tolerance of ``ctx``'s truth."""
    gradients = impl.has_gradients(first[0].variant) and impl.has_gradients(second[0].variant)
    a, b = (impl.run(case, arrays, gradients=gradients) for case, arrays in (first, second))
    comparisons = [_both(f"y: {label}", a.y, b.y, ctx.policy_y())]
    if gradients:
        comparisons.append(_both(f"dx: {label}", a.dx, b.dx, ctx.policy_dx()))
    return comparisons


def check_offset_is_shifted_weight(impl: Implementation, case: Case) -> list[Comparison]:
    """f(weight, weight_offset=c) = f(weight + c, weight_offset=0): forward and gradients."""
    offset = case.weight_offset or 1.0
    case = dataclasses.replace(case, affine=True, weight=True, weight_offset=offset, running=False)
    ctx = Context.of(case)
    shifted_weight = round_to(ctx.arrays["weight"] + offset, case.dtype_of("weight"))
    plain_case = dataclasses.replace(case, weight_offset=0.0)
    # the offset form's truth with the same effective weight (weight + c rounded as the plain call gets it)
    arrays = dict(ctx.arrays, weight=shifted_weight - offset)
    ctx = Context(case, arrays, definition.truth(case, arrays))
    return _two_calls(impl, ctx, f"weight_offset={offset:g} - (weight + {offset:g}, weight_offset=0)",
                      (case, arrays), (plain_case, dict(arrays, weight=shifted_weight)))


def check_fused_add_is_norm_of_sum(impl: Implementation, case: Case) -> list[Comparison]:
    """fused_add_<norm>(x, residual) = (<norm>(x + residual), x + residual); dx = dresidual =
    g_s + the norm's dx at x + residual."""
    ctx = Context.of(case)
    base = dataclasses.replace(case, variant=case.record.name.removeprefix("fused_add_"))
    summed = round_to(ctx.normalized(), case.dtype)  # what the plain norm is handed: the sum in the dtype
    gradients = impl.has_gradients(case.variant) and impl.has_gradients(base.variant)
    fused = impl.run(case, ctx.arrays, gradients=gradients)
    plain_result = impl.run(base, dict(ctx.arrays, x=summed, residual=None, grad_residual_out=None),
                            gradients=gradients)
    comparisons = [_both(f"{case.variant} y - {base.variant}(x + residual)", fused.y, plain_result.y, ctx.policy_y()),
                   compare("residual_out - (x + residual)", fused.residual_out, summed,
                           dataclasses.replace(ctx.policy_residual_out(), factor=1.0))]
    if gradients:
        passed_through = plain_result.dx + ctx.arrays["grad_residual_out"]
        comparisons += [_both(f"dx - (g_s + {base.variant}'s dx)", fused.dx, passed_through, ctx.policy_dx()),
                        _both("dresidual - dx", fused.dresidual, fused.dx, ctx.policy_dx())]
    return comparisons


def check_unmodulated(impl: Implementation, case: Case) -> list[Comparison]:
    """adaptive_<norm> with scale = 0 and shift = 0 = <norm> without affine parameters."""
    case = dataclasses.replace(case, affine=False)  # the identity modulation
    ctx = Context.of(case)
    base = Case(case.record.name.removeprefix("adaptive_"), case.shape, case.dtype, eps=case.eps, affine=False,
                normalized_ndim=case.normalized_ndim, memory=case.memory, values=case.values, seed=case.seed)
    return _two_calls(impl, ctx, f"{case.variant}(scale=0, shift=0) - {base.variant}",
                      (case, ctx.arrays), (base, dict(ctx.arrays, weight=None, bias=None)))


def check_modulated_per_sample(impl: Implementation, case: Case) -> list[Comparison]:
    """The adaptive norm of a batch = its calls on one sample at a time, stacked (sample b reads
    scale[b] and shift[b] only)."""
    case = dataclasses.replace(case, shape=(max(case.shape[0], 2), *case.shape[1:]))
    ctx = Context.of(case)
    whole = impl.run(case, ctx.arrays, gradients=False).y
    one = dataclasses.replace(case, shape=(1, *case.shape[1:]))
    rows = []
    for b in range(case.shape[0]):
        sample = {k: (None if v is None else v[b:b + 1]) for k, v in ctx.arrays.items()}
        rows.append(impl.run(one, sample, gradients=False).y)
    return [_both("y - the per-sample calls stacked", whole, np.concatenate(rows), ctx.policy_y())]


def _related(name: str) -> dict:
    """The variants a relation check applies to and needs, from the registry's relation."""
    relation = variants.RELATIONS[name]
    return {"variants": (relation.variant,), "needs": (relation.other,)}


def _related_kind(prefix: str) -> dict:
    """The variants of the registry's relations named ``<prefix>_<base>`` and what each needs: a
    check that applies to several variants, each needing its own counterpart."""
    relations = [r for name, r in variants.RELATIONS.items() if name.startswith(prefix + "_")]
    return {"variants": tuple(r.variant for r in relations), "needs_of": {r.variant: (r.other,) for r in relations}}


CHECKS = (
    Check("group_norm_one_group", "identity", "group_norm(G=1) = layer_norm over (C, *S) + affine",
          check_group_norm_one_group, **_related("group_norm_one_group")),
    Check("group_norm_all_groups", "identity", "group_norm(G=C) = instance_norm", check_group_norm_all_groups,
          **_related("group_norm_all_groups"), case_options={"min_rank": 3}),
    Check("rms_is_layer_norm", "identity", "rms_norm = layer_norm on zero-mean input",
          check_rms_is_layer_norm_on_zero_mean, **_related("rms_is_layer_norm")),
    Check("batch_norm_transposed", "identity", "batch_norm of (N, C) = layer_norm of the transpose",
          check_batch_norm_is_transposed_layer_norm, **_related("batch_norm_transposed")),
    Check("per_sample_independence", "identity", "other samples do not change a sample's output",
          check_per_sample_independence, variants=variants.matching(lambda v: v.per_sample)),
    Check("batch_permutation", "identity", "batch_norm is equivariant under permuting the batch",
          check_batch_permutation, variants=variants.matching(lambda v: not v.per_sample), case_options={"training": True}),
    Check("offset_is_shifted_weight", "identity", "weight_offset=c equals the plain call with weight + c",
          check_offset_is_shifted_weight, variants=variants.matching(lambda v: v.option("weight_offset") is not None),
          keyword="weight_offset"),
    Check("fused_add_is_norm_of_sum", "identity", "fused_add_*(x, r) = (norm(x + r), x + r), gradients included",
          check_fused_add_is_norm_of_sum, **_related_kind("fused_add_is_norm_of_sum")),
    Check("unmodulated", "identity", "adaptive_* with scale = 0, shift = 0 = the norm without affine",
          check_unmodulated, **_related_kind("unmodulated")),
    Check("modulated_per_sample", "identity", "adaptive_* of a batch = its per-sample calls stacked",
          check_modulated_per_sample, variants=variants.matching(lambda v: v.parameters_required)),
)
