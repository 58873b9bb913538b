"""The tolerance policy: the one place that says how close is close enough.

An implementation's result ``a`` is compared with a float64 (or mpmath) truth ``t``
computed from the *same* inputs, already rounded to the case's dtype. Element i passes
when

    |a_i - t_i| <= rtol * |t_i| + atol_i,
    rtol   = 2 u_out,
    atol_i = m_i * (2 u_out + 8 u_compute * (1 + sqrt(N)) * kappa_i),

with

- u_out: unit roundoff of the result's dtype (2^-53, 2^-24, 2^-11, 2^-8 for float64,
  float32, float16, bfloat16): the final rounding of a correct result costs up to
  u_out of the value, and a kernel that rounds xhat before the affine step up to
  u_out of the terms (hence the m_i term);
- u_compute: unit roundoff of the precision the statistics are accumulated in
  (float32 for 16-bit inputs, as torch's kernels do; the dtype itself otherwise), or of the
  compute dtype the implementation declares (``compute_dtype=float32``: ONNX's stash_type);
- N: the group size (reduction length). Sums of N terms in floating point err by
  about sqrt(N) u (pairwise or random rounding) and at most N u (a naive loop); the
  factor 8 (1 + sqrt(N)) covers blocked and pairwise summation with a margin;
- kappa_i: the conditioning of the element's group, 1 + max|x| / sqrt(var + eps).
  Subtracting the mean cancels digits in proportion to it (mean offset 1e4 with
  spread 1 loses 4 digits in any precision). A two-pass variance stays linear in
  kappa; the one-pass E[x^2] - E[x]^2 is quadratic and fails this policy;
- m_i: the natural magnitude of the quantity near element i, supplied by the check
  (for y the largest |gamma xhat| + |beta| of the group; for dx the largest
  r |gamma g| of the group; for dweight and dbias the sum of the absolute terms).

A floor of the result dtype's smallest subnormal spacing is added to every bound (float16:
2^-24, about 6e-8): a result in the subnormal range, correctly rounded, errs by up to that
much whatever its magnitude (exact comparisons have no floor).

ULP errors are reported in units of the dtype's spacing at max(|t_i|, m_i), so that
a true value near zero is measured against the magnitude of its quantity.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from normspec.derive import dtypes
from normspec.verify.cases.case import conventions_in_force

REDUCTION_SAFETY = 8.0


@dataclass(frozen=True)
class Policy:
    """The tolerance of one comparison; ``describe`` says where it came from."""

    dtype: str
    group_size: int
    rtol: float
    magnitude: np.ndarray  # m_i, per element (broadcastable)
    factor: np.ndarray  # atol_i = m_i * factor_i
    kappa: float  # the worst conditioning in the case
    floor: float = 0.0  # the result dtype's smallest subnormal: rounding there errs by up to one spacing
    compute: str = ""  # the compute dtype (empty: torch's for ``dtype``)

    @property
    def atol(self) -> np.ndarray:
        return self.magnitude * self.factor

    def describe(self) -> str:
        compute = self.compute or dtypes.compute_dtype(self.dtype)
        return (f"{self.dtype} (compute {compute}), N={self.group_size}, "
                f"kappa={self.kappa:.3g}: rtol={self.rtol:.2g}, atol=m*{float(np.max(self.factor)):.2g}")


def compute_dtype(dtype: str) -> str:
    """The dtype the statistics of a ``dtype`` input are computed in: torch's, or what the
    implementation under test declares (the conventions in force)."""
    declared = conventions_in_force.get()
    return dtypes.compute_dtype(dtype) if declared is None else declared.compute_dtype_of(dtype)


def policy(dtype: str, group_size: int, magnitude: np.ndarray, kappa: np.ndarray | float, *,
           compute: str | None = None) -> Policy:
    """The tolerance for a result of ``dtype`` from groups of ``group_size`` elements whose statistics
    are computed in ``compute`` (default: :func:`compute_dtype`)."""
    compute = compute or compute_dtype(dtype)
    u_out, u_compute = dtypes.unit_roundoff(dtype), dtypes.unit_roundoff(compute)
    factor = 2 * u_out + REDUCTION_SAFETY * u_compute * (1 + math.sqrt(group_size)) * np.asarray(kappa)
    return Policy(dtype, group_size, 2 * u_out, np.asarray(magnitude, dtype=np.float64), factor,
                  float(np.max(kappa)), floor=dtypes.smallest_subnormal(dtype), compute=compute)


def working_range(dtype: str, group_size: int, *, compute: str | None = None) -> float:
    """The largest max|x| of the dtype's working range: the squares summed over a group fit the
    compute dtype with a margin (N x^2 <= max / 16), and the derivative of rsqrt(var + eps),
    about |x|^-3, stays a normal number of the compute dtype (|x|^3 <= 1 / (16 tiny)).
    float64: 1.4e102; float32 and bfloat16 (float32's exponent range, computed in float32):
    1.7e12; float16 computes in float32 far inside those bounds, so its whole range is working."""
    compute = compute or compute_dtype(dtype)  # a declared compute dtype, else torch's
    squares = math.sqrt(dtypes.largest(compute) / (16 * max(group_size, 1)))
    derivative = (1 / (16 * float(dtypes.finfo(compute).tiny))) ** (1 / 3)
    bound = min(squares, derivative)
    return math.inf if bound >= dtypes.largest(dtype) else bound


def exact(dtype: str, shape: tuple[int, ...]) -> Policy:
    """Zero tolerance: for results that must be bit-identical (or exact by construction)."""
    return Policy(dtype, 1, 0.0, np.zeros(shape), np.zeros(shape), 1.0)


@dataclass(frozen=True)
class Comparison:
    """Every comparison records its worst errors, where, and the tolerance used."""

    quantity: str
    ok: bool
    max_abs: float
    max_rel: float
    max_ulp: float
    worst_index: tuple[int, ...]
    worst_ratio: float  # error / allowed at the worst element (<= 1 passes)
    actual: float
    true_value: float
    allowed: float
    tolerance: str
    note: str = ""
    # why a failure here is a limit of the method, not a bug (a declared contract's own error, the
    # conditioning of a backward from the output): such a failure is a range limit
    limit: str = ""

    def line(self) -> str:
        if self.note:
            return f"{self.quantity}: {self.note}"
        return (f"{self.quantity}: max abs {self.max_abs:.3g}, max rel {self.max_rel:.3g}, "
                f"max ulp {self.max_ulp:.3g}; worst at {self.worst_index}: got {self.actual!r}, "
                f"true {self.true_value!r}, allowed {self.allowed:.3g} [{self.tolerance}]")


def compare(quantity: str, actual, truth, tol: Policy) -> Comparison:
    """Compare ``actual`` with ``truth`` elementwise under ``tol``."""
    a = np.asarray(actual, dtype=np.float64)
    t = np.asarray(truth, dtype=np.float64)
    if a.shape != t.shape:
        return _failed(quantity, tol, f"shape {a.shape}, expected {t.shape}")
    if t.size and np.isfinite(a).all() and np.isfinite(t).all():
        return _compare_finite(quantity, a, t, tol)
    return _compare_any(quantity, a, t, tol)


def _compare_any(quantity: str, a: np.ndarray, t: np.ndarray, tol: Policy) -> Comparison:
    """:func:`compare` with infinities and NaN (same shapes)."""
    # A true value beyond the dtype's range rounds to +-inf: that is the correct result there.
    t = np.where(np.isinf(a) & (np.abs(t) > dtypes.largest(tol.dtype)) & (np.sign(a) == np.sign(t)), a, t)
    atol = np.broadcast_to(tol.atol, t.shape)
    finite_truth = np.isfinite(t)
    same_infinity = ~finite_truth & ((a == t) | (np.isnan(a) & np.isnan(t)))  # (NaN: comparing two runs)
    with np.errstate(invalid="ignore"):
        err = np.where(finite_truth, np.abs(a - t), np.where(same_infinity, 0.0, np.inf))
    err = np.where(np.isnan(err), np.inf, err)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        allowed = tol.rtol * np.abs(np.where(finite_truth, t, 0.0)) + atol + tol.floor
        ratio = np.where(err == 0, 0.0, err / allowed)
        rel = np.where(np.abs(t) > 0, err / np.abs(t), np.where(err == 0, 0.0, np.inf))
        scale = np.maximum(np.abs(t), np.broadcast_to(tol.magnitude, t.shape))
        ulp = err / (dtypes.spacing_at_one(tol.dtype) * np.maximum(scale, np.finfo(np.float64).tiny))
    if t.size == 0:
        return Comparison(quantity, True, 0, 0, 0, (), 0, 0, 0, 0, tol.describe())
    worst = np.unravel_index(int(np.argmax(ratio)), t.shape)
    return Comparison(
        quantity, bool(np.all(ratio <= 1.0)), float(np.max(err)), float(np.max(rel)), float(np.max(ulp)),
        tuple(int(i) for i in worst), float(ratio[worst]), float(a[worst]), float(t[worst]),
        float(allowed[worst]), tol.describe())


def _compare_finite(quantity: str, a: np.ndarray, t: np.ndarray, tol: Policy) -> Comparison:
    """:func:`compare` where every value is finite (the common case, and at kernel scale the costly
    one): the same figures with a few temporaries of the arrays' size instead of some twenty."""
    err = np.abs(a - t)
    abs_t = np.abs(t)
    allowed = abs_t * tol.rtol
    allowed += tol.atol
    allowed += tol.floor
    ratio = np.zeros(t.shape)
    with np.errstate(divide="ignore"):  # an exact comparison's nonzero error: inf
        np.divide(err, allowed, out=ratio, where=err > 0)
    worst = np.unravel_index(int(np.argmax(ratio)), t.shape)
    with np.errstate(divide="ignore", invalid="ignore"):
        rel = float(np.max(np.where(abs_t > 0, err / np.where(abs_t > 0, abs_t, 1.0), np.where(err == 0, 0.0, np.inf))))
    np.maximum(abs_t, np.broadcast_to(tol.magnitude, t.shape), out=abs_t)  # the ULP scale (reuses abs_t)
    np.maximum(abs_t, np.finfo(np.float64).tiny, out=abs_t)
    with np.errstate(over="ignore"):
        ulp = float(np.max(err / abs_t)) / dtypes.spacing_at_one(tol.dtype)
    allowed_worst = float(np.broadcast_to(allowed, t.shape)[worst])
    return Comparison(quantity, bool(np.all(ratio <= 1.0)), float(np.max(err)), rel, ulp,
                      tuple(int(i) for i in worst), float(ratio[worst]), float(a[worst]), float(t[worst]),
                      allowed_worst, tol.describe())


def compare_within(quantity: str, actual, lo, hi, dtype: str, tolerance: str) -> Comparison:
    """``actual`` against a set of allowed values per element, the interval ``[lo, hi]`` of values
    of ``dtype`` (an emulation's): an element passes when it lies inside. The error is the distance
    from the interval's middle, allowed its half-width (at least half a spacing: values of the dtype
    inside the interval pass, any other fails); ULPs count from the middle, in ``dtype``'s spacing."""
    a = np.asarray(actual, dtype=np.float64)
    lo, hi = (np.broadcast_to(np.asarray(v, dtype=np.float64), a.shape) for v in (lo, hi))
    if a.shape != lo.shape:
        return _failed(quantity, Policy(dtype, 1, 0.0, np.zeros(()), np.zeros(()), 1.0), f"shape {a.shape}")
    mid = (lo + hi) / 2
    # infinities the interval allows, and NaN where the emulation itself gives NaN (0 * inf)
    inside = (a >= lo) & (a <= hi) | ((a == lo) & (a == hi)) | (np.isnan(a) & np.isnan(lo) & np.isnan(hi))
    with np.errstate(invalid="ignore", over="ignore"):
        err = np.where(inside, np.where(np.isfinite(mid), np.abs(a - mid), 0.0), np.abs(a - mid))
        err = np.where(np.isnan(err), np.inf, err)
        unit = dtypes.spacing(dtype, mid)
        allowed = np.maximum((hi - lo) / 2, unit / 2)
        ratio = np.where(inside, np.minimum(err / allowed, 1.0), np.maximum(err / allowed, 1.0 + 1e-12))
        ratio = np.where(np.isnan(ratio), np.inf, ratio)
        ulp = np.where(np.isfinite(err), err / unit, np.inf)
    if a.size == 0:
        return Comparison(quantity, True, 0, 0, 0, (), 0, 0, 0, 0, tolerance)
    worst = np.unravel_index(int(np.argmax(ratio)), a.shape)
    rel = float(np.max(np.where(np.abs(mid) > 0, err / np.abs(mid), np.where(err == 0, 0.0, np.inf))))
    return Comparison(quantity, bool(np.all(inside)), float(np.max(err)), rel, float(np.max(ulp)),
                      tuple(int(i) for i in worst), float(ratio[worst]), float(a[worst]), float(mid[worst]),
                      float(allowed[worst]), tolerance)


def _failed(quantity: str, tol: Policy, note: str) -> Comparison:
    return Comparison(quantity, False, math.inf, math.inf, math.inf, (), math.inf, math.nan, math.nan, 0.0,
                      tol.describe(), note)
