"""Oracle checks: the implementation against independent truths (the plain definition by autograd,
finite differences of its own forward, 50-digit mpmath), running statistics, determinism."""
from __future__ import annotations

import dataclasses
from contextlib import contextmanager
from contextvars import ContextVar

import numpy as np
import torch

from normspec.derive import dtypes, variants
from normspec.derive.errors import require
from normspec.verify.cases.case import Case
from normspec.verify.checks.base import Check, Context
from normspec.verify.implementations.base import RESULT_FIELDS, Implementation
from normspec.verify.truth import definition
from normspec.verify.truth.high_precision import high_precision
from normspec.verify.truth.contracts import emulate
from normspec.verify.truth.tolerance import Comparison, compare, compare_within, compute_dtype, exact, policy


def _residual_out(ctx: Context, got) -> list[Comparison]:
    """The fused add's second output, x + residual, rounded once."""
    if not ctx.case.has_residual:
        return []
    return [compare("residual_out", got.residual_out, ctx.truth.residual_out, ctx.policy_residual_out())]


def check_forward(impl: Implementation, case: Case) -> list[Comparison]:
    ctx = Context.of(case)
    got = impl.run(case, ctx.arrays, gradients=False)
    return [compare("y", got.y, ctx.truth.y, ctx.policy_y()), *_residual_out(ctx, got)]


def check_backward(impl: Implementation, case: Case) -> list[Comparison]:
    ctx = Context.of(case)
    return gradient_comparisons(ctx, impl.run(case, ctx.arrays))


def gradient_comparisons(ctx: Context, got, label: str = "") -> list[Comparison]:
    """dx (dresidual), dweight and dbias of ``got`` against the truth (``label`` follows each name)."""
    case = ctx.case
    comparisons = [compare(f"dx{label}", got.dx, ctx.truth.dx, ctx.policy_dx())]
    if case.has_residual:
        comparisons.append(compare(f"dresidual{label}", got.dresidual, ctx.truth.dresidual, ctx.policy_dx()))
    g, xhat = ctx.arrays["grad_out"], ctx.xhat()
    name = case.record.signature_name
    if case.has_weight:
        comparisons.append(compare(f"d{name('weight')}{label}", got.dweight, ctx.truth.dweight,
                                   ctx.policy_param(g * (1 + np.abs(xhat)))))
    if case.has_bias:
        comparisons.append(compare(f"d{name('bias')}{label}", got.dbias, ctx.truth.dbias, ctx.policy_param(g)))
    return comparisons


def check_running_stats(impl: Implementation, case: Case) -> list[Comparison]:
    """The running buffers after a training call: torch's update, or the declared one (biased
    variance, momentum of the old value); declared ``running_stats=none``: left as passed, bit for bit."""
    case = dataclasses.replace(case, running=True, training=True)
    ctx = Context.of(case)
    got = impl.run(case, ctx.arrays, gradients=False)
    if not impl.conventions.updates_running_stats:
        same = exact(case.dtype_of("running_mean"), ctx.arrays["running_mean"].shape)
        return [compare("running_mean (declared running_stats=none: untouched)", got.running_mean,
                        ctx.truth.running_mean, same),
                compare("running_var (declared running_stats=none: untouched)", got.running_var,
                        ctx.truth.running_var, same)]
    magnitude_mean = np.abs(ctx.arrays["running_mean"]) + float(np.max(np.abs(ctx.arrays["x"])))
    magnitude_var = np.abs(ctx.arrays["running_var"]) + float(np.max(ctx.var())) * 2
    # the buffers may be in another dtype than x (parameter_dtype): the coarser rounds
    dtype = dtypes.coarser(case.dtype, case.dtype_of("running_mean"))
    tol_mean = policy(dtype, ctx.group_size, magnitude_mean, float(np.max(ctx.kappa())))
    tol_var = policy(dtype, ctx.group_size, magnitude_var, float(np.max(ctx.kappa())))
    return [compare("running_mean", got.running_mean, ctx.truth.running_mean, tol_mean),
            compare("running_var", got.running_var, ctx.truth.running_var, tol_var)]


REPEATED_CALLS = 5  # calls the deterministic check compares (and the battery replays a failure with)
# the calls it compares in the search in progress: REPEATED_CALLS, or K set by run_check(calls=K)
# (--calls K: a race that shows once in 100 calls needs that many)
_calls: ContextVar[int] = ContextVar("calls", default=REPEATED_CALLS)


def check_calls(calls: object, *, argument: str = "calls") -> int | None:
    """``calls`` validated: None (REPEATED_CALLS) or an int >= 2."""
    require(calls is None or (isinstance(calls, int) and not isinstance(calls, bool) and calls >= 2), argument, calls,
            "an int >= 2 (the first call and the calls compared with it)")
    return calls  # type: ignore[return-value]


@contextmanager
def repeated_calls(calls: int | None):
    """The deterministic check compares ``calls`` identical calls meanwhile (None: REPEATED_CALLS)."""
    check_calls(calls)
    token = _calls.set(REPEATED_CALLS if calls is None else calls)
    try:
        yield
    finally:
        _calls.reset(token)


def check_deterministic(impl: Implementation, case: Case) -> list[Comparison]:
    """Identical calls give bit-identical results (forward, gradients, saved statistics): each of
    K - 1 further calls against the first (K = REPEATED_CALLS, or --calls K)."""
    ctx = Context.of(case)
    first = impl.run(case, ctx.arrays)
    comparisons = []
    for call in range(2, _calls.get() + 1):
        again = impl.run(case, ctx.arrays)
        for name in RESULT_FIELDS:
            a, b = getattr(first, name), getattr(again, name)
            if a is None or b is None:
                continue
            comparisons.append(compare(f"{name}: call {call} - call 1", b, a, exact(case.dtype, np.shape(a))))
        for name, saved in first.saved.items():
            comparisons.append(compare(f"saved {name}: call {call} - call 1", again.saved[name], saved,
                                       exact(case.dtype, np.shape(saved))))
    return comparisons


def check_output_memory(impl: Implementation, case: Case) -> list[Comparison]:
    """The results do not depend on what the memory they are written to held: the call again after
    the allocator's free memory was filled with NaN (:func:`poison_free_memory`) gives the same
    results bit for bit, and they still match the truth (a tail left unwritten shows as NaN)."""
    ctx = Context.of(case)
    clean = impl.run(case, ctx.arrays)
    poison_free_memory(case, impl.device)
    dirty = impl.run(case, ctx.arrays)
    comparisons = [compare("y after NaN-filled free memory", dirty.y, ctx.truth.y, ctx.policy_y())]
    if dirty.dx is not None:
        comparisons += gradient_comparisons(ctx, dirty, " after NaN-filled free memory")
    for name in RESULT_FIELDS:
        a, b = getattr(dirty, name), getattr(clean, name)
        if a is not None and b is not None:
            comparisons.append(compare(f"{name}: after NaN-filled free memory - before", a, b,
                                       exact(case.dtype, np.shape(b))))
    return comparisons


POISON_ROUNDS = 2  # glibc raises its mmap threshold after the first free: the second round is reused


def poison_free_memory(case: Case, device: str) -> None:
    """Fill the memory the next allocations will likely get with NaN, then free it: on CUDA the caching
    allocator hands the blocks out again; on the CPU, glibc reuses freed heap chunks (after one round
    of large ones, whose free raises its mmap threshold, up to 32 MiB). Where neither holds (memory
    returned to the system comes back zeroed), the check still compares the call with the truth."""
    nbytes = int(np.prod(case.shape)) * 8
    for _ in range(POISON_ROUNDS):
        blocks = [torch.full((nbytes // 4 + 64,), float("nan"), dtype=torch.float32, device=device)
                  for _ in range(6)]
        del blocks


def check_eval_running_unchanged(impl: Implementation, case: Case) -> list[Comparison]:
    """batch_norm in eval mode reads the running statistics and must not update them."""
    case = dataclasses.replace(case, training=False, running=False)
    ctx = Context.of(case)
    got = impl.run(case, ctx.arrays, gradients=False)
    zero = exact(case.dtype_of("running_mean"), ctx.arrays["running_mean"].shape)
    return [compare("running_mean after eval", got.running_mean, ctx.arrays["running_mean"], zero),
            compare("running_var after eval", got.running_var, ctx.arrays["running_var"], zero)]


def check_finite_differences(impl: Implementation, case: Case) -> list[Comparison]:
    """The implementation's VJP against central differences of its own forward (float64),
    on every element for small cases and on random directions otherwise.

    Difference quotients are only as good as the forward they difference: its own y is
    compared with the truth first, and when it is off (a one-pass variance, say) the
    difference quotients are reported as measuring the forward's noise, not the gradient."""
    ctx = Context.of(case)
    got = impl.run(case, ctx.arrays)
    forward = compare("y at the base point (the forward differenced)", got.y, ctx.truth.y, ctx.policy_y())
    blame = "" if forward.ok else ": the forward itself is off (see y), so this measures its noise, not the gradient"
    g, g_s = ctx.arrays["grad_out"], ctx.arrays["grad_residual_out"]
    rng = np.random.default_rng(case.seed + 1)
    targets = [("x", got.dx)] + ([("residual", got.dresidual)] if case.has_residual else []) + \
        ([("weight", got.dweight)] if case.has_weight else []) + ([("bias", got.dbias)] if case.has_bias else [])
    spread = float(np.min(np.sqrt(ctx.var() + case.effective_eps)))
    spacing = dtypes.spacing_at_one(compute_dtype(case.dtype))  # the forward's rounding (a declared compute dtype)
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
            # steps on the scale that moves y: the spread per group, the parameters' size
            scale = spread if name in ("x", "residual") else float(np.max(np.abs(base))) + 1.0
            fd = definition.directional_fd(loss, scale, noise, spacing=spacing)
            # the fused add's sum is linear: its part of the loss, sum(g_s * s), has derivative g_s . u
            # exactly (the forward check compares the sum itself), so only y is differenced
            passed_through = float(np.sum(g_s * direction)) if case.has_residual and name in ("x", "residual") else 0.0
            estimates.append(fd.estimate + passed_through)
            claimed.append(float(np.sum(analytic * direction)))
            bounds.append(fd.error_bound)
        tol = policy("float64", ctx.group_size, np.array(bounds) / (2.0**-52), 1.0)
        tol = dataclasses.replace(tol, factor=np.full(len(bounds), 10 * 2.0**-52), rtol=1e-7)
        shown = case.record.signature_name(name)
        comparisons.append(compare(f"d{shown} . u (finite differences{blame})", claimed, estimates, tol))
    return [forward, *comparisons] if not forward.ok else comparisons


def _directions(shape: tuple[int, ...], rng: np.random.Generator) -> list[np.ndarray]:
    size = int(np.prod(shape))
    if size <= 24:  # the full VJP: one unit direction per element
        return [np.eye(size)[i].reshape(shape) for i in range(size)]
    return [rng.standard_normal(shape) for _ in range(6)]


def check_mpmath(impl: Implementation, case: Case) -> list[Comparison]:
    """Forward and VJP against a 50-digit mpmath evaluation of the plain definition."""
    ctx = Context.of(case)
    got = impl.run(case, ctx.arrays)
    a = ctx.arrays
    exact = high_precision(case.layout, a["x"], a["weight"], a["bias"], a["grad_out"], eps=case.effective_eps,
                           centered=case.centered,
                           given_mean=a["running_mean"] if case.given_statistics else None,
                           given_var=a["running_var"] if case.given_statistics else None,
                           weight_offset=case.effective_weight_offset if a["weight"] is not None else 0.0,
                           residual=a["residual"], grad_residual_out=a["grad_residual_out"])
    comparisons = [compare("y vs mpmath", got.y, exact.y, ctx.policy_y())]
    if case.has_residual:
        comparisons.append(compare("residual_out vs mpmath", got.residual_out, exact.residual_out,
                                   ctx.policy_residual_out()))
    if got.dx is not None:
        comparisons.append(compare("dx vs mpmath", got.dx, exact.dx, ctx.policy_dx()))
    return comparisons


def check_contract(impl: Implementation, case: Case) -> list[Comparison]:
    """y against an exact emulation of the declared precision contract (every value a kernel that
    rounds where the contract says can give), and the contract itself against the float64 truth."""
    contract = impl.conventions.precision_contract
    ctx = Context.of(case)
    got = impl.run(case, ctx.arrays, gradients=False)
    emulated = emulate(contract, case, ctx.arrays, work=ctx.view.work, param=ctx.view.param)
    where = ", ".join(f"{step} {dtype}" for step, dtype in emulated.dtypes.items())
    return [compare_within(f"y vs the {contract.name} contract's emulation", got.y, emulated.y.lo, emulated.y.hi,
                           case.dtype, f"{contract.name}: {where}, output {case.dtype}; float32 steps with "
                           f"their rounding noise, each rounding point both ways"),
            dataclasses.replace(
                compare(f"the {contract.name} contract itself vs the float64 truth (its own error)",
                        emulated.nominal, ctx.truth.y, ctx.policy_y()),
                limit=f"the declared {contract.name} contract itself errs beyond {case.dtype}'s tolerance here, "
                      f"whoever implements it (its emulation is the value compared)")]


CHECKS = (
    Check("forward", "oracle", "y against the plain definition (float64 torch)", check_forward),
    Check("backward", "oracle", "dx, dweight, dbias against autograd of the plain definition", check_backward,
          needs_gradients=True),
    Check("running_stats", "oracle", "running mean/var update (momentum, unbiased variance)",
          check_running_stats, variants=variants.matching(lambda v: v.running is not None), case_options={"training": True}),
    Check("deterministic", "oracle", "two identical calls give bit-identical results", check_deterministic,
          case_options={"max_numel": 512}),
    Check("eval_running_unchanged", "oracle", "eval mode leaves the running statistics untouched",
          check_eval_running_unchanged, variants=variants.matching(lambda v: v.running is not None and v.running.eval_drawn),
          case_options={"training": False}),
    Check("finite_differences", "oracle", "VJP against central differences of the forward", check_finite_differences,
          dtypes=("float64",), needs_gradients=True,
          case_options={"max_numel": 48, "value_kinds": ("normal", "outlier", "gamma_mixed", "offset", "tiny")}),
    Check("mpmath", "oracle", "forward and dx against 50-digit mpmath (ULP error)", check_mpmath,
          dtypes=("float64",), case_options={"max_numel": 96}),
    Check("output_memory", "oracle", "results independent of what the output memory held (NaN-filled before)",
          check_output_memory, needs_gradients=False, case_options={"max_numel": 512}),
    Check("contract", "oracle", "y within one rounding of an exact emulation of the declared precision contract",
          check_contract, needs_contract=True),
)
