"""The exact emulation of a precision contract (``normspec.derive.contracts``).

:func:`emulate` computes, for one case, every output value a kernel that rounds where the
contract says can produce: an interval ``[lo, hi]`` per element. Steps in the compute role
are the exact (float64) result widened by the float32 (or float64) rounding noise the
tolerance policy allows a reduction of N terms (``verify.truth.tolerance``); a step in a
16-bit role rounds both ends to that dtype (rounding to nearest is monotone, so the interval
stays an interval); the output cast rounds both ends to x's dtype. A kernel that keeps the
contract lands inside; one that moves a rounding point (xhat rounded to bfloat16 under the
``float32`` contract) lands outside on about half of its elements, though by no more than an
ulp or two, which the per-dtype tolerance accepts. Away from ill-conditioned groups the
interval is one or two output values wide.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from normspec.derive import dtypes
from normspec.derive.contracts import Contract
from normspec.verify.cases.case import Case, round_to
from normspec.verify.truth.tolerance import REDUCTION_SAFETY


@dataclass(frozen=True)
class Interval:
    lo: np.ndarray
    hi: np.ndarray

    @classmethod
    def point(cls, value) -> "Interval":
        value = np.asarray(value, dtype=np.float64)
        return cls(value, value)

    @property
    def mid(self) -> np.ndarray:
        return (self.lo + self.hi) / 2

    def __add__(self, other: "Interval") -> "Interval":
        return Interval(self.lo + other.lo, self.hi + other.hi)

    def __sub__(self, other: "Interval") -> "Interval":
        return Interval(self.lo - other.hi, self.hi - other.lo)

    def __mul__(self, other: "Interval") -> "Interval":
        products = np.stack(np.broadcast_arrays(self.lo * other.lo, self.lo * other.hi,
                                                self.hi * other.lo, self.hi * other.hi))
        return Interval(products.min(axis=0), products.max(axis=0))

    def square(self) -> "Interval":
        low, high = self.lo**2, self.hi**2
        spans_zero = (self.lo <= 0) & (self.hi >= 0)
        return Interval(np.where(spans_zero, 0.0, np.minimum(low, high)), np.maximum(low, high))

    def sqrt(self) -> "Interval":
        return Interval(np.sqrt(np.maximum(self.lo, 0.0)), np.sqrt(np.maximum(self.hi, 0.0)))

    def reciprocal(self) -> "Interval":  # of a positive interval
        with np.errstate(divide="ignore"):
            return Interval(1 / self.hi, 1 / self.lo)

    def mean(self, axes: tuple[int, ...]) -> "Interval":
        return Interval(self.lo.mean(axis=axes, keepdims=True), self.hi.mean(axis=axes, keepdims=True))

    def widened(self, by) -> "Interval":
        """Wider by ``by`` on each side; an infinite end (an overflowed step) stays where it is."""
        return Interval(np.where(np.isinf(self.lo), self.lo, self.lo - by),
                        np.where(np.isinf(self.hi), self.hi, self.hi + by))

    def rounded(self, dtype: str, *, faithful: bool = False) -> "Interval":
        """Each end rounded to ``dtype``: to nearest, or (``faithful``) outward to the neighbour on
        its side, as a faithfully rounded function (an approximate rsqrt) may return either."""
        if faithful:
            return Interval(round_down(self.lo, dtype), -round_down(-self.hi, dtype))
        return Interval(round_to(self.lo, dtype), round_to(self.hi, dtype))

    def contains(self, values: np.ndarray) -> np.ndarray:
        return (values >= self.lo) & (values <= self.hi)


def round_down(values: np.ndarray, dtype: str) -> np.ndarray:
    """The largest value of ``dtype`` <= ``values`` (float64 arrays)."""
    values = np.asarray(values, dtype=np.float64)
    nearest = round_to(values, dtype)
    # the step below a positive value is the spacing just under it (half at a power of two)
    below = np.where(nearest > 0, dtypes.spacing(dtype, np.nextafter(nearest, 0.0)),
                     np.where(nearest < 0, dtypes.spacing(dtype, nearest), dtypes.smallest_subnormal(dtype)))
    return np.where(nearest > values, nearest - below, nearest)


@dataclass(frozen=True)
class Emulation:
    y: Interval  # every output value the contract can produce, in x's dtype
    nominal: np.ndarray  # the contract's output with exact arithmetic between its rounding points
    dtypes: dict  # the dtype of each step (for the report)


class _Steps:
    """One case's arithmetic under a contract: each result rounded (or widened) per its step's role."""

    def __init__(self, contract: Contract, case: Case, *, noise: bool = True):
        self.contract, self.case, self.noise = contract, case, noise
        # without a weight there is no multiply and nothing to cast to its dtype: the compute dtype
        weight_dtype = case.dtype_of("weight") if case.has_weight else dtypes.compute_dtype(case.dtype)
        self.dtypes = {step: contract.dtype(step, input_dtype=case.dtype, weight_dtype=weight_dtype)
                       for step in ("statistics", "normalize", "multiply", "add")}
        self.wide = dtypes.compute_dtype(case.dtype)  # what a compute-role step is computed in
        # the relative noise of an N-term sum in the compute dtype, as the tolerance policy states it
        self.reduction_noise = (REDUCTION_SAFETY * dtypes.unit_roundoff(self.wide)
                                * (1 + math.sqrt(case.layout.group_size)))

    def done(self, step: str, value: Interval, *, reduction_magnitude=None, faithful: bool = False) -> Interval:
        """``value`` as step ``step`` leaves it: rounded to its role's dtype where that is coarser than
        the compute dtype (a rounding point), else widened by one rounding of the compute dtype; a
        reduction (``reduction_magnitude``: the mean of its terms' magnitudes) adds the noise of
        summing in the compute dtype, before any rounding; ``faithful``: a function kernels evaluate
        approximately (rsqrt), rounded to either neighbour at a rounding point."""
        dtype = self.dtypes[step]
        summed = 0.0 if reduction_magnitude is None else self.reduction_noise * reduction_magnitude
        if not self.noise:
            return value.rounded(dtype) if dtypes.spacing_at_one(dtype) > dtypes.spacing_at_one(self.wide) else value
        if dtypes.spacing_at_one(dtype) > dtypes.spacing_at_one(self.wide):
            return value.widened(summed).rounded(dtype, faithful=faithful)
        one_rounding = 2 * dtypes.unit_roundoff(self.wide) * np.maximum(np.abs(value.lo), np.abs(value.hi))
        return value.widened(one_rounding + summed)


def emulate(contract: Contract, case: Case, arrays: dict, *, work, param) -> Emulation:
    """The outputs ``contract`` allows for ``case`` on ``arrays`` (float64, rounded to their dtypes),
    and its nominal output (the same steps without the compute dtype's noise: the contract's own
    rounding, which its error against the float64 truth measures). ``work`` reshapes an x-shaped
    array to the layout's working shape, ``param(p, default)`` broadcasts a parameter onto x's shape."""
    steps = _Steps(contract, case)
    with np.errstate(all="ignore"):  # infinities and NaN are values here (an overflowing float16 step)
        allowed = _forward(_Steps(contract, case), case, arrays, work, param)
        nominal = _forward(_Steps(contract, case, noise=False), case, arrays, work, param)
    return Emulation(allowed, nominal.mid, steps.dtypes)


def _forward(steps: "_Steps", case: Case, arrays: dict, work, param) -> Interval:
    layout = case.layout
    x = arrays["x"]
    if case.has_residual and arrays.get("residual") is not None:  # the sum, rounded to x's dtype or not
        exact_sum = x + arrays["residual"]
        rounded_sum = round_to(exact_sum, case.dtype)
        s = Interval(np.minimum(exact_sum, rounded_sum), np.maximum(exact_sum, rounded_sum))
    else:
        s = Interval.point(x)
    s = Interval(work(s.lo), work(s.hi))
    xhat = _normalized(steps, case, arrays, s, layout)
    xhat = Interval(xhat.lo.reshape(case.shape), xhat.hi.reshape(case.shape))
    offset = case.effective_weight_offset if arrays["weight"] is not None else 0.0
    gamma = Interval.point(round_to(param(arrays["weight"], 1.0) + offset, steps.dtypes["multiply"])
                           if arrays["weight"] is not None else np.ones(case.shape))
    t = steps.done("multiply", xhat * gamma)
    beta = Interval.point(round_to(param(arrays["bias"], 0.0), steps.dtypes["add"]))
    y = steps.done("add", t + beta) if arrays["bias"] is not None else t
    return y.rounded(case.dtype)


def _normalized(steps: _Steps, case: Case, arrays: dict, s: Interval, layout) -> Interval:
    """xhat per the contract's statistics and normalize roles, in the working shape."""
    dims, eps = layout.group_dims, case.effective_eps
    if case.given_statistics:
        mean = Interval.point(arrays["running_mean"].reshape(layout.param_shape))
        var = Interval.point(arrays["running_var"].reshape(layout.param_shape))
    else:
        magnitude = np.maximum(np.abs(s.lo), np.abs(s.hi)).mean(axis=dims, keepdims=True)
        mean = (steps.done("statistics", s.mean(dims), reduction_magnitude=magnitude) if case.centered
                else Interval.point(np.zeros(layout.stats_shape)))
        centered = steps.done("statistics", s - mean)
        squares = steps.done("statistics", centered.square())
        var = steps.done("statistics", squares.mean(dims), reduction_magnitude=np.abs(squares.hi).mean(axis=dims, keepdims=True))
    if case.given_statistics:
        centered = steps.done("statistics", s - mean)
    var = Interval(np.maximum(var.lo, 0.0), var.hi)  # a variance is never negative, rounded or not
    # eps in the statistics' dtype: a 16-bit kernel adds it as a 16-bit number (1e-12 is 0 in float16)
    eps = float(round_to(np.float64(eps), steps.dtypes["statistics"]))
    shifted = steps.done("statistics", var + Interval.point(eps))
    shifted = Interval(np.maximum(shifted.lo, eps), shifted.hi)
    # rsqrt as one faithfully rounded function, or as 1 / sqrt with the square root rounded first
    # (torch's 16-bit CPU rsqrt): the interval of the second contains the first
    root = steps.done("statistics", shifted.sqrt(), faithful=True)
    rstd = steps.done("statistics", root.reciprocal(), faithful=True)
    return steps.done("normalize", centered * rstd)
