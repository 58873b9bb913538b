"""The mpmath oracle (verify.oracle_mp) against torch.nn.functional in float64, and its edges."""
from __future__ import annotations

import zlib
from dataclasses import dataclass
from typing import Callable

import mpmath
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from normspec.derive.layouts import group_layout, trailing_layout
from normspec.derive.variants import VARIANTS
from normspec.verify.truth.high_precision import HighPrecision, high_precision, ulp_error

TOL = {"rtol": 1e-12, "atol": 1e-12}
EPS = 1e-5


@dataclass(frozen=True)
class OracleCase:
    id: str
    shape: tuple[int, ...]
    layout: Callable  # x.shape -> Layout
    call: Callable  # (x, weight, bias, running_mean, running_var) -> y, in torch
    centered: bool = True
    weight: bool = True
    bias: bool = True
    given_stats: bool = False  # eval mode: running statistics passed as given_mean / given_var


CASES = (
    OracleCase("layer_norm-ns(7,)", (3, 5, 7), lambda s: trailing_layout(s, normalized_shape=(7,)),
               lambda x, w, b, m, v: F.layer_norm(x, (7,), w, b, EPS)),
    OracleCase("layer_norm-ns(5,7)", (3, 5, 7), lambda s: trailing_layout(s, normalized_shape=(5, 7)),
               lambda x, w, b, m, v: F.layer_norm(x, (5, 7), w, b, EPS)),
    OracleCase("layer_norm-no-affine", (4, 6), lambda s: trailing_layout(s, normalized_shape=(6,)),
               lambda x, w, b, m, v: F.layer_norm(x, (6,), w, b, EPS), weight=False, bias=False),
    OracleCase("batch_norm-training", (4, 3, 5), VARIANTS["batch_norm"].layout,
               lambda x, w, b, m, v: F.batch_norm(x, None, None, w, b, training=True, eps=EPS)),
    OracleCase("batch_norm-eval", (4, 3, 5), VARIANTS["batch_norm"].layout,
               lambda x, w, b, m, v: F.batch_norm(x, m, v, w, b, training=False, eps=EPS), given_stats=True),
    OracleCase("instance_norm", (2, 3, 6), VARIANTS["instance_norm"].layout,
               lambda x, w, b, m, v: F.instance_norm(x, weight=w, bias=b, eps=EPS)),
    OracleCase("group_norm-G2", (2, 4, 5), lambda s: group_layout(s, num_groups=2),
               lambda x, w, b, m, v: F.group_norm(x, 2, w, b, EPS)),
    OracleCase("rms_norm", (3, 8), lambda s: trailing_layout(s, normalized_shape=(8,)),
               lambda x, w, b, m, v: F.rms_norm(x, (8,), w, eps=EPS), centered=False, bias=False),
    OracleCase("rms_norm-no-weight", (3, 2, 4), lambda s: trailing_layout(s, normalized_shape=(2, 4)),
               lambda x, w, b, m, v: F.rms_norm(x, (2, 4), w, eps=EPS), centered=False, weight=False,
               bias=False),
)


def _arrays(case: OracleCase) -> dict:
    rng = np.random.default_rng(zlib.crc32(case.id.encode()))
    wshape = case.layout(case.shape).weight_shape
    return {
        "x": rng.standard_normal(case.shape) * 2 + 0.5,
        "weight": rng.standard_normal(wshape) if case.weight else None,
        "bias": rng.standard_normal(wshape) if case.bias else None,
        "grad_out": rng.standard_normal(case.shape),
        "given_mean": rng.standard_normal(wshape) if case.given_stats else None,
        "given_var": rng.uniform(0.5, 2.0, wshape) if case.given_stats else None,
    }


def _torch_autograd(case: OracleCase, a: dict) -> tuple[np.ndarray, ...]:
    leaves = [None if a[k] is None else torch.tensor(a[k], requires_grad=True) for k in ("x", "weight", "bias")]
    stats = [None if a[k] is None else torch.tensor(a[k]) for k in ("given_mean", "given_var")]
    y = case.call(*leaves, *stats)
    y.backward(torch.tensor(a["grad_out"]))
    return (y.detach().numpy(),) + tuple(None if t is None else t.grad.numpy() for t in leaves)


def _oracle(case: OracleCase, a: dict, **kwargs) -> HighPrecision:
    return high_precision(case.layout(case.shape), a["x"], a["weight"], a["bias"], a["grad_out"], eps=EPS,
                          centered=case.centered, given_mean=a["given_mean"], given_var=a["given_var"], **kwargs)


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_agrees_with_torch_forward_and_vjp(case):
    a = _arrays(case)
    hp = _oracle(case, a)
    expected = _torch_autograd(case, a)
    for name, actual, want in zip(("y", "dx", "dweight", "dbias"), (hp.y, hp.dx, hp.dweight, hp.dbias), expected):
        assert (actual is None) == (want is None), name
        if want is not None:
            assert actual.dtype == np.float64 and actual.shape == want.shape, name
            np.testing.assert_allclose(actual, want, **TOL, err_msg=name)


def test_more_digits_give_the_same_float64():
    """The results are correctly rounded: raising the precision does not move a single bit."""
    case = CASES[6]
    a = _arrays(case)
    low, high = _oracle(case, a), _oracle(case, a, digits=80)
    for name in ("y", "dx", "dweight", "dbias"):
        np.testing.assert_array_equal(getattr(low, name), getattr(high, name), err_msg=name)


def test_global_precision_is_left_alone():
    before = mpmath.mp.dps
    _oracle(CASES[0], _arrays(CASES[0]))
    assert mpmath.mp.dps == before


def test_exact_small_case():
    """[-1, 1] with eps=0: mean 0, var 1, so y = gamma x + beta; a group of 2 has xhat = +-1 fixed, so dx = 0."""
    x = np.array([[-1.0, 1.0]])
    w, b = np.array([3.0, -2.0]), np.array([0.25, 0.5])
    hp = high_precision(trailing_layout(x.shape, normalized_shape=(2,)), x, w, b, np.ones_like(x), eps=0.0)
    np.testing.assert_array_equal(hp.y, [[-2.75, -1.5]])
    np.testing.assert_array_equal(hp.dx, [[0.0, 0.0]])
    np.testing.assert_array_equal(hp.dweight, [-1.0, 1.0])
    np.testing.assert_array_equal(hp.dbias, [1.0, 1.0])


def test_large_mean_cancellation_matches_definition():
    """A mean of 1e6 with spread 1e-3: y is unaffected by the offset (exact shift invariance)."""
    rng = np.random.default_rng(1)
    spread = np.array([[-3.0, -1.0, 0.5, 1.5, 2.0]]) * 2.0**-10
    g = rng.standard_normal(spread.shape)
    layout = trailing_layout(spread.shape, normalized_shape=(5,))
    base = high_precision(layout, spread, None, None, g, eps=1e-12)
    shifted = high_precision(layout, spread + 2.0**20, None, None, g, eps=1e-12)  # exact shift
    np.testing.assert_array_equal(base.y, shifted.y)
    np.testing.assert_array_equal(base.dx, shifted.dx)


def test_constant_group_with_zero_eps_raises():
    x = np.array([[1.0, 2.0], [3.0, 3.0]])
    with pytest.raises(ValueError, match="var \\+ eps = 0"):
        high_precision(trailing_layout(x.shape, normalized_shape=(2,)), x, None, None, np.ones_like(x), eps=0.0)


def test_zero_given_var_with_zero_eps_raises():
    x = np.ones((2, 1, 3))
    with pytest.raises(ValueError, match="var \\+ eps = 0"):
        high_precision(VARIANTS["batch_norm"].layout(x.shape), x, None, None, x, eps=0.0,
                       given_mean=np.zeros(1), given_var=np.zeros(1))


def test_bad_shapes_raise():
    x = np.ones((2, 3))
    with pytest.raises(ValueError, match="weight.shape"):
        high_precision(trailing_layout(x.shape, normalized_shape=(3,)), x, np.ones(2), None, x, eps=EPS)
    with pytest.raises(ValueError, match="given_mean, given_var"):
        high_precision(VARIANTS["batch_norm"].layout(x.shape), x, None, None, x, eps=EPS, given_mean=np.zeros(3))


def test_ulp_error_of_identical_arrays_is_zero():
    truth = np.array([1.0, -3.5, 1e-300, 0.0, 2.0**-1074])
    np.testing.assert_array_equal(ulp_error(truth.copy(), truth, 0.0), 0.0)


def test_ulp_error_of_one_ulp_is_one():
    truth = np.array([1.0, -3.5, 1e-300, 123.456, -2.0**-1074, 2.0**53])
    one_ulp_away = np.nextafter(truth, np.copysign(np.inf, truth))  # away from zero
    np.testing.assert_array_equal(ulp_error(one_ulp_away, truth, 0.0), 1.0)


def test_ulp_error_uses_the_scale_for_small_truths():
    truth = np.array([1e-20, 4.0])
    actual = truth + np.spacing(4.0)
    np.testing.assert_array_equal(ulp_error(actual, truth, 4.0), [1.0, 1.0])
    assert ulp_error(actual, truth, 0.0)[0] > 1e10
