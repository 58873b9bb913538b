"""reference.torch_ref agrees with torch.nn.functional: forward, autograd and *_backward,
running statistics, gradcheck / gradgradcheck, low-precision dtypes."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from normspec.reference import torch_ref
from tests._cases import (
    CASES, GRADS, LOW_TOL, RUNNING, RUNNING_CASES, RUNNING_STEPS, SMALL_CASES, as_numpy, assert_close,
    call_kwargs, copy_arrays, ids, make_arrays, native, running_case, running_params, seed_of, to_torch,
)

PARAMS = ("x", "weight", "bias")


def forward(case, tensors):
    return getattr(torch_ref, case.variant)(tensors["x"], **call_kwargs(case, tensors))


def backward(case, tensors):
    return getattr(torch_ref, f"{case.variant}_backward")(tensors["grad_out"], tensors["x"],
                                                          **call_kwargs(case, tensors))


def autograd(case, tensors):
    """y and (dx, dweight, dbias) of torch_ref through ``y.backward(grad_out)``."""
    leaves = {name: tensors[name].detach().clone().requires_grad_(True)
              for name in PARAMS if tensors[name] is not None}
    y = forward(case, {**tensors, **leaves})
    y.backward(tensors["grad_out"])
    return y, tuple(leaves[name].grad if name in leaves else None for name in PARAMS)


@pytest.mark.parametrize("case", CASES, ids=ids(CASES))
def test_forward_matches_torch(case):
    arrays = make_arrays(case)
    expected = native(case, arrays)
    mine = to_torch(arrays)
    with torch.no_grad():
        y = forward(case, mine)
    assert isinstance(y, torch.Tensor) and y.dtype == torch.float64
    assert_close(y, expected["y"], "y")
    for name in RUNNING:
        assert_close(mine[name], expected[name], name)


@pytest.mark.parametrize("case", CASES, ids=ids(CASES))
def test_autograd_matches_torch(case):
    arrays = make_arrays(case)
    expected = native(case, arrays)
    mine = to_torch(arrays)
    y, grads = autograd(case, mine)
    assert_close(y, expected["y"], "y")
    for name in RUNNING:  # updated once by the forward, not again by the backward
        assert_close(mine[name], expected[name], name)
    for name, got in zip(GRADS, grads):
        if got is not None:
            assert got.dtype == torch.float64, name
        assert_close(got, expected[name], name)


@pytest.mark.parametrize("case", CASES, ids=ids(CASES))
def test_backward_function_matches_torch(case):
    arrays = make_arrays(case)
    expected = native(case, arrays)
    grads = backward(case, to_torch(arrays))
    assert isinstance(grads, tuple) and len(grads) == 3
    for name, got in zip(GRADS, grads):
        if got is not None:
            assert got.dtype == torch.float64, name
        assert_close(got, expected[name], name)


@pytest.mark.parametrize("variant, shape, momentum", running_params())
def test_running_stats_match_torch(variant, shape, momentum):
    """Several training steps update the running statistics as torch does; eval then uses them."""
    train = running_case(variant, shape, momentum, train=True)
    start = make_arrays(train)
    mine = {name: torch.tensor(start[name]) for name in RUNNING}
    theirs = {name: start[name].copy() for name in RUNNING}
    for step in range(RUNNING_STEPS):
        arrays = {**make_arrays(train, seed=seed_of(train.id) + step), **theirs}
        expected = native(train, arrays)
        forward(train, {**to_torch(arrays), **mine})
        for name in RUNNING:
            assert_close(mine[name], expected[name], f"{name} after step {step}")
            theirs[name] = expected[name]
    if momentum == 0.0:
        for name in RUNNING:
            np.testing.assert_array_equal(as_numpy(mine[name]), start[name], err_msg=f"{name} with momentum=0")
    evaluate = running_case(variant, shape, momentum, train=False)
    arrays = {**make_arrays(evaluate), **theirs}
    expected = native(evaluate, arrays)
    y = forward(evaluate, {**to_torch(arrays), **mine})
    assert_close(y, expected["y"], "eval y")
    for name in RUNNING:
        assert_close(mine[name], expected[name], f"{name} after eval")


@pytest.mark.parametrize("case", CASES, ids=ids(CASES))
def test_inputs_not_modified(case):
    """Neither values nor version counters (in-place writes) of x, weight, bias, grad_out change."""
    arrays = make_arrays(case)
    mine = to_torch(arrays)
    watched = ("x", "weight", "bias", "grad_out") + (() if case.updates_running else RUNNING)
    versions = {name: mine[name]._version for name in watched if mine[name] is not None}
    forward(case, mine)
    backward(case, mine)
    leaves = {name: mine[name].requires_grad_(True) for name in PARAMS if mine[name] is not None}
    forward(case, mine).backward(mine["grad_out"])
    for name, version in versions.items():
        assert mine[name]._version == version, f"{name} written in place"
        np.testing.assert_array_equal(as_numpy(mine[name]), arrays[name], err_msg=f"{name} was modified")
    assert leaves  # x at least


@pytest.mark.parametrize("case", RUNNING_CASES, ids=ids(RUNNING_CASES))
def test_backward_leaves_running_stats(case):
    arrays = make_arrays(case)
    mine = to_torch(arrays)
    backward(case, mine)
    for name in RUNNING:
        np.testing.assert_array_equal(as_numpy(mine[name]), arrays[name], err_msg=f"{name} touched by backward")


def _differentiable(case):
    """(function of x, weight, bias as present, inputs requiring grad) for gradcheck."""
    tensors = to_torch(make_arrays(case))
    present = [name for name in PARAMS if tensors[name] is not None]
    inputs = tuple(tensors[name].requires_grad_(True) for name in present)

    def function(*values):
        fresh = {**tensors, **dict(zip(present, values))}
        for name in RUNNING:  # training updates them: give every call its own copy
            if fresh[name] is not None:
                fresh[name] = fresh[name].clone()
        return forward(case, fresh)

    return function, inputs


@pytest.mark.parametrize("case", CASES, ids=ids(CASES))
def test_gradcheck(case):
    function, inputs = _differentiable(case)
    assert torch.autograd.gradcheck(function, inputs)


@pytest.mark.parametrize("case", SMALL_CASES, ids=ids(SMALL_CASES))
def test_gradgradcheck(case):
    function, inputs = _differentiable(case)
    assert torch.autograd.gradgradcheck(function, inputs)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["float16", "bfloat16"])
@pytest.mark.parametrize("case", SMALL_CASES, ids=ids(SMALL_CASES))
def test_low_precision_close_to_float64(case, dtype):
    """16-bit in, same dtype out (y, running stats, gradients by autograd and *_backward),
    close to torch's float64 result on the same (rounded) inputs."""
    low = {k: None if v is None else torch.tensor(v).to(dtype) for k, v in make_arrays(case).items()}
    expected = native(case, {k: None if v is None else as_numpy(v) for k, v in low.items()})
    mine = {k: None if v is None else v.clone() for k, v in low.items()}
    y, grads = autograd(case, mine)
    assert y.dtype == dtype
    assert_close(y, expected["y"], "y", **LOW_TOL)
    if case.updates_running:
        for name in RUNNING:
            assert mine[name].dtype == dtype, name
            assert_close(mine[name], expected[name], name, **LOW_TOL)
    for how, result in (("autograd", grads), ("*_backward", backward(case, low))):
        for name, got in zip(GRADS, result):
            if got is not None:
                assert got.dtype == dtype, f"{how} {name}"
            assert_close(got, expected[name], f"{how} {name}", **LOW_TOL)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["float16", "bfloat16"])
def test_rms_norm_default_eps_low_precision_matches_torch(dtype):
    """eps=None: torch's rms_norm uses the epsilon of its compute type (float32 for 16-bit input).

    Inputs of RMS ~0.03 make the difference visible: with eps = finfo(dtype).eps instead of
    finfo(float32).eps the output shrinks to about half (float16) or less (bfloat16).
    """
    x = (0.03 * torch.randn(4, 16, generator=torch.Generator().manual_seed(7), dtype=torch.float64)).to(dtype)
    expected = F.rms_norm(x, (16,)).double().numpy()
    y = torch_ref.rms_norm(x, (16,))
    assert y.dtype == dtype
    np.testing.assert_allclose(as_numpy(y), expected, **LOW_TOL)
