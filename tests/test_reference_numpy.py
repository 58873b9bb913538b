"""reference.numpy_ref agrees with torch.nn.functional: forward, backward, running statistics, dtypes."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from normspec.reference import numpy_ref
from tests._cases import (
    CASES, GRADS, LOW_TOL, RUNNING, RUNNING_CASES, RUNNING_STEPS, SMALL_CASES, assert_close, call_kwargs,
    copy_arrays, ids, make_arrays, native, running_case, running_params, seed_of,
)


def forward(case, arrays):
    return getattr(numpy_ref, case.variant)(arrays["x"], **call_kwargs(case, arrays))


def backward(case, arrays):
    return getattr(numpy_ref, f"{case.variant}_backward")(arrays["grad_out"], arrays["x"],
                                                          **call_kwargs(case, arrays))


@pytest.mark.parametrize("case", CASES, ids=ids(CASES))
def test_forward_matches_torch(case):
    arrays = make_arrays(case)
    expected = native(case, arrays)
    mine = copy_arrays(arrays)
    y = forward(case, mine)
    assert isinstance(y, np.ndarray) and y.dtype == np.float64
    assert_close(y, expected["y"], "y")
    for name in RUNNING:  # updated in place as torch does (or left alone in eval)
        assert_close(mine[name], expected[name], name)


@pytest.mark.parametrize("case", CASES, ids=ids(CASES))
def test_backward_matches_torch(case):
    arrays = make_arrays(case)
    expected = native(case, arrays)
    grads = backward(case, copy_arrays(arrays))
    assert isinstance(grads, tuple) and len(grads) == 3
    for name, got in zip(GRADS, grads):
        if got is not None:
            assert got.dtype == np.float64, name
        assert_close(got, expected[name], name)


@pytest.mark.parametrize("variant, shape, momentum", running_params())
def test_running_stats_match_torch(variant, shape, momentum):
    """Several training steps update the running statistics as torch does; eval then uses them."""
    train = running_case(variant, shape, momentum, train=True)
    start = make_arrays(train)
    mine = {name: start[name].copy() for name in RUNNING}
    theirs = {name: start[name].copy() for name in RUNNING}
    for step in range(RUNNING_STEPS):
        arrays = {**make_arrays(train, seed=seed_of(train.id) + step), **theirs}
        expected = native(train, arrays)
        forward(train, {**copy_arrays(arrays), **mine})
        for name in RUNNING:
            assert_close(mine[name], expected[name], f"{name} after step {step}")
            theirs[name] = expected[name]
    if momentum == 0.0:
        for name in RUNNING:
            np.testing.assert_array_equal(mine[name], start[name], err_msg=f"{name} with momentum=0")
    evaluate = running_case(variant, shape, momentum, train=False)
    arrays = {**make_arrays(evaluate), **theirs}
    expected = native(evaluate, arrays)
    y = forward(evaluate, {**copy_arrays(arrays), **mine})
    assert_close(y, expected["y"], "eval y")
    for name in RUNNING:
        assert_close(mine[name], expected[name], f"{name} after eval")


@pytest.mark.parametrize("case", CASES, ids=ids(CASES))
def test_inputs_not_modified(case):
    arrays = make_arrays(case)
    mine = copy_arrays(arrays)
    forward(case, mine)
    backward(case, mine)
    kept = ("x", "weight", "bias", "grad_out") + (() if case.updates_running else RUNNING)
    for name in kept:
        if arrays[name] is not None:
            np.testing.assert_array_equal(mine[name], arrays[name], err_msg=f"{name} was modified")


@pytest.mark.parametrize("case", RUNNING_CASES, ids=ids(RUNNING_CASES))
def test_backward_leaves_running_stats(case):
    arrays = make_arrays(case)
    mine = copy_arrays(arrays)
    backward(case, mine)
    for name in RUNNING:
        np.testing.assert_array_equal(mine[name], arrays[name], err_msg=f"{name} touched by backward")


@pytest.mark.parametrize("case", SMALL_CASES, ids=ids(SMALL_CASES))
def test_float16_close_to_float64(case):
    """float16 in, float16 out, close to torch's float64 result on the same (rounded) inputs."""
    arrays = {k: None if v is None else v.astype(np.float16) for k, v in make_arrays(case).items()}
    expected = native(case, {k: None if v is None else v.astype(np.float64) for k, v in arrays.items()})
    mine = copy_arrays(arrays)
    y = forward(case, mine)
    assert y.dtype == np.float16
    assert_close(y, expected["y"], "y", **LOW_TOL)
    if case.updates_running:
        for name in RUNNING:
            assert mine[name].dtype == np.float16, name
            assert_close(mine[name], expected[name], name, **LOW_TOL)
    grads = backward(case, copy_arrays(arrays))
    for name, got in zip(GRADS, grads):
        if got is not None:
            assert got.dtype == np.float16, name
        assert_close(got, expected[name], name, **LOW_TOL)


def test_rms_norm_default_eps_float16_matches_torch():
    """eps=None: torch's rms_norm uses the epsilon of its compute type (float32 for float16 input).

    Inputs of RMS ~0.03 make the difference visible: with eps = finfo(float16).eps ~ 1e-3
    instead of finfo(float32).eps the output shrinks to about half.
    """
    x = (0.03 * np.random.default_rng(7).standard_normal((4, 16))).astype(np.float16)
    expected = F.rms_norm(torch.from_numpy(x), (16,)).double().numpy()
    y = numpy_ref.rms_norm(x, (16,))
    assert y.dtype == np.float16
    np.testing.assert_allclose(y.astype(np.float64), expected, **LOW_TOL)
