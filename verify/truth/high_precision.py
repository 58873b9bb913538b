"""An independent high-precision oracle: forward and VJP of every variant, in mpmath.

This oracle shares nothing with ``derive/`` but the layout (which elements share
statistics, which axes carry gamma and beta). It evaluates the *plain definition*
of one group,

    mu = mean(x)   (0 for RMS norm)    var = mean((x - mu)^2)
    y  = gamma * (x - mu) / sqrt(var + eps) + beta,

at ``digits`` significant digits, and obtains every derivative of the loss
``L = sum(grad_out * y)`` without any closed-form gradient:

* ``dx_j`` by the complex step: ``Im L(x + i h e_j) / h``. Everything is analytic,
  there is no subtraction, so the only error is the truncation ``O(h^2)``; with
  ``h = 2^(-3 prec)`` times the scale of the group that is far below the working
  precision. Only the group holding ``x_j`` is re-evaluated.
* ``dweight`` and ``dbias`` from the linearity of y in gamma and beta (the affine
  step itself): ``sum(grad_out * xhat)`` and ``sum(grad_out)`` over the elements
  using each parameter, with ``xhat`` in high precision.

Every float64 input converts exactly (``mpf(float)`` is exact), the work happens
in a local ``mpmath.workdps(digits)`` context, and the results are rounded once
to the nearest float64, so they are the exact values correctly rounded (to the
working precision). It is meant for small cases (a few hundred elements, groups
up to ~64): each group costs O(N^2) multi-precision operations.

Example: the group [-1, 1] has mean 0 and variance 1, so with eps=0 y = x.

>>> from normspec.derive.layouts import trailing_layout
>>> x = np.array([[-1.0, 1.0]])
>>> hp = high_precision(trailing_layout(x.shape, normalized_shape=2), x, None, None, np.ones_like(x), eps=0.0)
>>> hp.y.tolist(), hp.dx.tolist()
([[-1.0, 1.0]], [[0.0, 0.0]])
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import mpmath
import numpy as np
from mpmath import mp, mpc, mpf

from normspec.derive.errors import NormSpecError
from normspec.derive.errors import check_eps, require
from normspec.derive.layouts import Layout

__all__ = ["HighPrecision", "high_precision", "ulp_error"]


@dataclass(frozen=True)
class HighPrecision:
    """The exact forward and VJP of one call, each correctly rounded to float64."""

    y: np.ndarray  # shape of x
    dx: np.ndarray  # shape of x
    dweight: np.ndarray | None  # layout.weight_shape; None when weight is None
    dbias: np.ndarray | None  # layout.weight_shape; None when bias is None
    residual_out: np.ndarray | None = None  # the fused residual add's x + residual; None without one


def high_precision(layout: Layout, x: np.ndarray, weight: np.ndarray | None, bias: np.ndarray | None,
                   grad_out: np.ndarray, *, eps: float, centered: bool = True,
                   given_mean: np.ndarray | None = None, given_var: np.ndarray | None = None,
                   weight_offset: float = 0.0, residual: np.ndarray | None = None,
                   grad_residual_out: np.ndarray | None = None, digits: int = 50) -> HighPrecision:
    """Forward ``y`` and the VJP ``(dx, dweight, dbias)`` of ``L = sum(grad_out * y)``.

    ``weight``/``bias`` of shape ``layout.weight_shape``, or None for 1 and 0.
    ``centered=False`` is RMS norm (mu = 0, var = mean(x^2)). ``given_mean`` and
    ``given_var`` (both of shape ``layout.weight_shape``, e.g. batch_norm's running
    statistics in eval mode) replace the batch statistics; no gradient flows through
    them, so every element is then its own group. ``weight_offset`` is added to the weight (exactly,
    in high precision). With ``residual`` (the fused residual add) what is normalized is the exact
    sum x + residual, returned as ``residual_out``, and ``dx`` (= dresidual) adds
    ``grad_residual_out``, the upstream gradient of that sum. Raises ``ValueError``
    (:class:`NormSpecError`) when ``var + eps`` is exactly 0 in some group.
    """
    eps = check_eps(eps)
    _check_arrays(layout, x, weight, bias, grad_out, given_mean, given_var)
    require((residual is None) == (grad_residual_out is None), "grad_residual_out",
            None if grad_residual_out is None else "<array>", "given together with residual")
    for name, value in (("residual", residual), ("grad_residual_out", grad_residual_out)):
        if value is not None:
            require(value.shape == x.shape and value.dtype == np.float64 and bool(np.all(np.isfinite(value))),
                    name, f"<{value.dtype} array of shape {value.shape}>", f"a finite float64 array of x's shape")
    require(isinstance(digits, int) and digits >= 50, "digits", digits, "an int >= 50")
    given = given_mean is not None
    group_dims = () if given else layout.group_dims  # given statistics: each element alone
    with mpmath.workdps(digits):
        summed = _in_work(layout, x, per_element=True)
        if residual is not None:
            summed = summed + _in_work(layout, residual, per_element=True)  # exact: mpf sums of float64 values
        offset = mpf(float(weight_offset)) if weight is not None else mpf(0)
        work = {"x": summed, "g": _in_work(layout, grad_out, per_element=True),
                "gamma": _in_work(layout, weight, default=1.0) + offset, "beta": _in_work(layout, bias),
                "mean": _in_work(layout, given_mean), "var": _in_work(layout, given_var)}
        rows = {name: _to_rows(a, group_dims) for name, a in work.items()}
        xhat, dx = _all_groups(rows, mpf(eps), centered, given)
        xhat, dx = _from_rows(xhat, work["x"].shape, group_dims), _from_rows(dx, work["x"].shape, group_dims)
        y = work["gamma"] * xhat + work["beta"]
        if grad_residual_out is not None:  # the sum's own gradient passes through to x and residual
            dx = dx + _in_work(layout, grad_residual_out, per_element=True)
        dweight = None if weight is None else _sum_over(work["g"] * xhat, layout)
        dbias = None if bias is None else _sum_over(work["g"], layout)
        return HighPrecision(_round(y, x.shape), _round(dx, x.shape),
                             _round(dweight, layout.weight_shape), _round(dbias, layout.weight_shape),
                             residual_out=None if residual is None else _round(summed, x.shape))


def ulp_error(actual: np.ndarray, truth: np.ndarray, scale: np.ndarray | float) -> np.ndarray:
    """``|actual - truth|`` in units in the last place of ``max(|truth|, scale)``, elementwise.

    The unit is ``numpy.spacing(max(|truth|, scale))`` in float64: the ULP of the
    true value, except where the true value is smaller than ``scale`` (the natural
    magnitude of the quantity, e.g. max |y| of the tensor), where the error is
    measured in ULPs of ``scale`` instead, so that an element whose true value is
    near 0 (a cancellation) is not charged millions of ULPs for an absolute error
    that is tiny at the scale of the result. ``scale=0`` gives the plain ULP error.
    """
    actual, truth = np.asarray(actual, dtype=np.float64), np.asarray(truth, dtype=np.float64)
    unit = np.spacing(np.maximum(np.abs(truth), np.asarray(scale, dtype=np.float64)))
    return np.abs(actual - truth) / unit


# ----------------------------------------------------------------------------- one group


def _statistics(xs: list, centered: bool) -> tuple:
    """mean and biased variance of one group (mpf or mpc), by their definition."""
    mean = mpmath.fsum(xs) / len(xs) if centered else mpf(0)
    return mean, mpmath.fsum((v - mean) * (v - mean) for v in xs) / len(xs)


def _loss(xs: list, row: dict, eps: mpf, centered: bool, given: bool):
    """``L = sum(g * (gamma * xhat + beta))`` of one group, from the plain definition."""
    mean, var = (row["mean"][0], row["var"][0]) if given else _statistics(xs, centered)
    r = 1 / mpmath.sqrt(var + eps)
    return mpmath.fsum(g * (gamma * ((v - mean) * r) + beta)
                       for v, g, gamma, beta in zip(xs, row["g"], row["gamma"], row["beta"]))


def _group(row: dict, eps: mpf, centered: bool, given: bool) -> tuple[list, list]:
    """``xhat`` of one group and ``dx`` by the complex step, one element at a time."""
    xs = list(row["x"])
    mean, var = (row["mean"][0], row["var"][0]) if given else _statistics(xs, centered)
    if var + eps == 0:
        raise NormSpecError(f"var + eps = 0 exactly (a constant group with eps={float(eps)!r}, "
                            f"x={[float(v) for v in xs]}): the normalization is undefined")
    std = mpmath.sqrt(var + eps)
    xhat = [(v - mean) / std for v in xs]
    h = mpmath.ldexp(max(abs(v) for v in xs) + abs(mean) + std, -3 * mp.prec)
    dx = []
    for j, v in enumerate(xs):
        stepped = xs[:j] + [mpc(v, h)] + xs[j + 1:]
        dx.append(_loss(stepped, row, eps, centered, given).imag / h)
    return xhat, dx


def _all_groups(rows: dict, eps: mpf, centered: bool, given: bool) -> tuple[np.ndarray, np.ndarray]:
    xhat, dx = (np.empty(rows["x"].shape, dtype=object) for _ in range(2))
    for k in range(rows["x"].shape[0]):
        xhat[k], dx[k] = _group({name: a[k] for name, a in rows.items()}, eps, centered, given)
    return xhat, dx


# ----------------------------------------------------------------------------- layout plumbing


def _check_arrays(layout, x, weight, bias, grad_out, given_mean, given_var) -> None:
    require(math.prod(x.shape) == math.prod(layout.work_shape), "x.shape", x.shape,
            f"{math.prod(layout.work_shape)} elements (layout.work_shape={layout.work_shape})")
    require(grad_out.shape == x.shape, "grad_out.shape", grad_out.shape, f"x.shape={x.shape}")
    require((given_mean is None) == (given_var is None), "given_mean, given_var",
            (given_mean is None, given_var is None), "both given or both None")
    for name, value in (("weight", weight), ("bias", bias), ("given_mean", given_mean), ("given_var", given_var)):
        if value is not None:
            require(value.shape == layout.weight_shape, f"{name}.shape", value.shape, f"{layout.weight_shape}")
    for name, value in (("x", x), ("weight", weight), ("bias", bias), ("grad_out", grad_out),
                        ("given_mean", given_mean), ("given_var", given_var)):
        if value is not None:
            require(value.dtype == np.float64 and bool(np.all(np.isfinite(value))), name,
                    f"<{value.dtype} array>", "a finite float64 array")


def _in_work(layout: Layout, value: np.ndarray | None, *, per_element: bool = False,
             default: float = 0.0) -> np.ndarray:
    """``value`` as exact mpf in ``layout.work_shape``; per-parameter values broadcast, None is ``default``."""
    if value is None:
        value = np.full(layout.param_shape, default)
    exact = np.array([mpf(float(v)) for v in value.ravel()], dtype=object)
    shape = layout.work_shape if per_element else layout.param_shape
    return np.broadcast_to(exact.reshape(shape), layout.work_shape)


def _to_rows(a: np.ndarray, group_dims: tuple[int, ...]) -> np.ndarray:
    """(groups, group size): the group axes moved last and flattened."""
    rest = [d for d in range(a.ndim) if d not in group_dims]
    return a.transpose(rest + list(group_dims)).reshape(-1, math.prod(a.shape[d] for d in group_dims))


def _from_rows(rows: np.ndarray, shape: tuple[int, ...], group_dims: tuple[int, ...]) -> np.ndarray:
    perm = [d for d in range(len(shape)) if d not in group_dims] + list(group_dims)
    return rows.reshape([shape[d] for d in perm]).transpose(np.argsort(perm))


def _sum_over(a: np.ndarray, layout: Layout) -> np.ndarray:
    """``a`` summed (mpmath.fsum) over ``layout.affine_dims``, in ``layout.param_shape``."""
    sums = [mpmath.fsum(row) for row in _to_rows(a, layout.affine_dims)]
    return np.array(sums, dtype=object).reshape(layout.param_shape)


def _round(a: np.ndarray | None, shape: tuple[int, ...]) -> np.ndarray | None:
    """Round to the nearest float64, subnormals included (float(mpf) would round twice there)."""
    if a is None:
        return None
    tiny = mpmath.ldexp(1, -1022)

    def nearest(v: mpf) -> float:
        return float(mpmath.ldexp(mpmath.nint(mpmath.ldexp(v, 1074)), -1074)) if abs(v) < tiny else float(v)

    return np.array([nearest(v) for v in np.asarray(a).ravel()], dtype=np.float64).reshape(shape)
