"""The tolerance policy and comparisons."""
import numpy as np

from normspec.verify.truth.tolerance import compare, policy


def test_policy_scales_with_dtype_group_size_and_conditioning():
    base = policy("float32", 4, np.ones(3), 1.0).atol
    assert np.all(policy("float64", 4, np.ones(3), 1.0).atol < base)
    assert np.all(policy("float32", 64, np.ones(3), 1.0).atol > base)
    assert np.all(policy("float32", 4, np.ones(3), 1e3).atol > 100 * base)
    assert "N=4" in policy("float32", 4, np.ones(3), 1.0).describe()


def test_compare_records_the_worst_element():
    tol = policy("float64", 2, np.ones(3), 1.0)
    result = compare("y", [1.0, 2.0, 3.5], [1.0, 2.0, 3.0], tol)
    assert not result.ok and result.worst_index == (2,) and result.max_abs == 0.5
    assert result.actual == 3.5 and result.true_value == 3.0


def test_compare_shape_mismatch_and_nan_fail():
    tol = policy("float64", 2, np.ones(2), 1.0)
    assert not compare("y", np.ones(3), np.ones(2), tol).ok
    assert not compare("y", [np.nan, 1.0], [1.0, 1.0], tol).ok


def test_overflow_to_the_correctly_signed_infinity_is_correct():
    tol = policy("float16", 2, np.ones(2), 1.0)
    assert compare("dx", [-np.inf, 1.0], [-448608.0, 1.0], tol).ok
    assert not compare("dx", [np.inf, 1.0], [-448608.0, 1.0], tol).ok
