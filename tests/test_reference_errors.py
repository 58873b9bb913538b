"""Bad input to numpy_ref and torch_ref raises NormSpecError naming the argument, its value
and what was expected, from the forward and from *_backward alike, before touching anything."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytest
import torch

from normspec.derive.errors import NormSpecError
from normspec.reference import numpy_ref, torch_ref

LIBS = {"numpy_ref": (numpy_ref, lambda a: a.copy()), "torch_ref": (torch_ref, lambda a: torch.tensor(a))}
VARIANTS = ("layer_norm", "batch_norm", "instance_norm", "group_norm", "rms_norm")


def f64(*shape: int) -> np.ndarray:
    return np.random.default_rng(sum(shape) + len(shape)).standard_normal(shape)


def i64(*shape: int) -> np.ndarray:
    return np.arange(int(np.prod(shape)), dtype=np.int64).reshape(shape)


@dataclass(frozen=True)
class Bad:
    """``variant(x, **kwargs)`` must raise NormSpecError whose message contains every ``expected``."""

    id: str
    variant: str
    x: Any  # a numpy array (converted per library) or anything else (passed as is)
    kwargs: dict[str, Any]
    expected: tuple[str, ...]
    grad_out: Any = field(default=None)  # for *_backward; default: ones like x

    def __str__(self) -> str:
        return self.id


# A valid call of each variant on x of shape (4, 6, 5), for the checks that apply to all variants.
VALID = {
    "layer_norm": {"normalized_shape": (5,), "weight": f64(5), "bias": f64(5)},
    "rms_norm": {"normalized_shape": (5,), "weight": f64(5)},
    "group_norm": {"num_groups": 2, "weight": f64(6), "bias": f64(6)},
    "batch_norm": {"running_mean": f64(6), "running_var": f64(6) ** 2 + 0.5, "weight": f64(6), "bias": f64(6),
                   "training": True},
    "instance_norm": {"running_mean": f64(6), "running_var": f64(6) ** 2 + 0.5, "weight": f64(6), "bias": f64(6)},
}
X = f64(4, 6, 5)

BAD: tuple[Bad, ...] = (
    # weight / bias / running statistics of the wrong shape
    Bad("layer_norm-weight-shape", "layer_norm", f64(3, 5), {"normalized_shape": (5,), "weight": f64(4)},
        ("weight.shape=(4,)", "(5,)")),
    Bad("layer_norm-bias-shape", "layer_norm", f64(3, 5), {"normalized_shape": (5,), "bias": f64(1, 5)},
        ("bias.shape=(1, 5)", "(5,)")),
    Bad("layer_norm-2d-weight-shape", "layer_norm", f64(2, 3, 5), {"normalized_shape": (3, 5), "weight": f64(5)},
        ("weight.shape=(5,)", "(3, 5)")),
    Bad("rms_norm-weight-shape", "rms_norm", f64(3, 5), {"normalized_shape": (5,), "weight": f64(3)},
        ("weight.shape=(3,)", "(5,)")),
    Bad("group_norm-weight-shape", "group_norm", f64(2, 6, 5), {"num_groups": 2, "weight": f64(2)},
        ("weight.shape=(2,)", "(6,)")),
    Bad("group_norm-bias-shape", "group_norm", f64(2, 6, 5), {"num_groups": 2, "bias": f64(6, 1)},
        ("bias.shape=(6, 1)", "(6,)")),
    Bad("batch_norm-weight-shape", "batch_norm", f64(4, 3, 5),
        {"running_mean": None, "running_var": None, "weight": f64(4), "training": True},
        ("weight.shape=(4,)", "(3,)")),
    Bad("batch_norm-bias-shape", "batch_norm", f64(4, 3), {"running_mean": f64(3), "running_var": f64(3) ** 2,
                                                          "bias": f64(4)}, ("bias.shape=(4,)", "(3,)")),
    Bad("instance_norm-weight-shape", "instance_norm", f64(2, 3, 5), {"weight": f64(2)},
        ("weight.shape=(2,)", "(3,)")),
    Bad("batch_norm-running_mean-shape", "batch_norm", f64(4, 3, 5),
        {"running_mean": f64(4), "running_var": f64(3) ** 2, "training": True}, ("running_mean.shape=(4,)", "(3,)")),
    Bad("instance_norm-running_var-shape", "instance_norm", f64(2, 3, 5),
        {"running_mean": f64(3), "running_var": f64(2) ** 2}, ("running_var.shape=(2,)", "(3,)")),
    Bad("batch_norm-running_var-without-mean", "batch_norm", f64(4, 3),
        {"running_mean": None, "running_var": f64(3) ** 2, "training": True}, ("running_var=", "running_mean")),
    # normalized_shape not the trailing dimensions
    Bad("layer_norm-normalized_shape=(4,)", "layer_norm", f64(3, 5), {"normalized_shape": (4,)},
        ("normalized_shape=(4,)", "x.shape=(3, 5)")),
    Bad("layer_norm-normalized_shape=(5,3)", "layer_norm", f64(2, 3, 5), {"normalized_shape": (5, 3)},
        ("normalized_shape=(5, 3)", "x.shape=(2, 3, 5)")),
    Bad("layer_norm-normalized_shape-longer-than-x", "layer_norm", f64(5), {"normalized_shape": (1, 5)},
        ("normalized_shape=(1, 5)", "x.shape=(5,)")),
    Bad("rms_norm-normalized_shape=(3,)", "rms_norm", f64(3, 5), {"normalized_shape": (3,)},
        ("normalized_shape=(3,)", "x.shape=(3, 5)")),
    # num_groups
    Bad("group_norm-num_groups=4-C=6", "group_norm", f64(2, 6, 5), {"num_groups": 4},
        ("num_groups=4", "divisor", "C=6")),
    Bad("group_norm-num_groups=0", "group_norm", f64(2, 6, 5), {"num_groups": 0}, ("num_groups=0", "positive")),
    Bad("group_norm-num_groups=-2", "group_norm", f64(2, 6, 5), {"num_groups": -2}, ("num_groups=-2", "positive")),
    # one value per group when training
    Bad("group_norm-(1,2)-G=2-one-value", "group_norm", f64(1, 2), {"num_groups": 2},
        ("x.shape=(1, 2)", "more than 1 value per group")),
    Bad("batch_norm-train-eps=0", "batch_norm", f64(2, 3),
        {"running_mean": None, "running_var": None, "training": True, "eps": 0.0},
        ("eps=0.0", "positive")),
    Bad("batch_norm-train-(1,3)", "batch_norm", f64(1, 3),
        {"running_mean": None, "running_var": None, "training": True},
        ("x.shape=(1, 3)", "more than 1 value per channel")),
    Bad("batch_norm-train-(1,3,1,1)", "batch_norm", f64(1, 3, 1, 1),
        {"running_mean": f64(3), "running_var": f64(3) ** 2, "training": True},
        ("x.shape=(1, 3, 1, 1)", "more than 1 value per channel")),
    Bad("instance_norm-(2,3,1)", "instance_norm", f64(2, 3, 1), {}, ("x.shape=(2, 3, 1)", "more than 1 spatial element")),
    Bad("instance_norm-(4,3)", "instance_norm", f64(4, 3), {"running_mean": f64(3), "running_var": f64(3) ** 2},
        ("x.shape=(4, 3)", "more than 1 spatial element")),
    # eval without running statistics
    Bad("batch_norm-eval-no-running", "batch_norm", f64(4, 3, 5), {"running_mean": None, "running_var": None},
        ("running_mean=None", "training=False", "(3,)")),
    Bad("instance_norm-use_input_stats=False-no-running", "instance_norm", f64(4, 3, 5), {"use_input_stats": False},
        ("running_mean=None", "use_input_stats=False", "(3,)")),
    # momentum outside [0, 1]
    Bad("batch_norm-momentum=1.5", "batch_norm", X, {**VALID["batch_norm"], "momentum": 1.5},
        ("momentum=1.5", "[0, 1]")),
    Bad("batch_norm-momentum=-0.1", "batch_norm", X, {**VALID["batch_norm"], "momentum": -0.1},
        ("momentum=-0.1", "[0, 1]")),
    Bad("batch_norm-momentum=nan", "batch_norm", X, {**VALID["batch_norm"], "momentum": float("nan")},
        ("momentum=nan", "[0, 1]")),
    Bad("instance_norm-momentum=2.0", "instance_norm", X, {**VALID["instance_norm"], "momentum": 2.0},
        ("momentum=2.0", "[0, 1]")),
    # non-floating arrays
    *(Bad(f"{v}-int-x", v, i64(4, 6, 5), VALID[v], ("x.dtype=", "int64", "floating")) for v in VARIANTS),
    Bad("layer_norm-int-weight", "layer_norm", f64(3, 5), {"normalized_shape": (5,), "weight": i64(5)},
        ("weight.dtype=", "int64", "floating")),
    Bad("group_norm-int-bias", "group_norm", X, {**VALID["group_norm"], "bias": i64(6)},
        ("bias.dtype=", "int64", "floating")),
    Bad("batch_norm-int-running_var", "batch_norm", X, {**VALID["batch_norm"], "running_var": i64(6)},
        ("running_var.dtype=", "int64", "floating")),
    # eps negative, NaN, infinite
    *(Bad(f"{v}-eps=-0.5", v, X, {**VALID[v], "eps": -0.5}, ("eps=-0.5", ">= 0")) for v in VARIANTS),
    *(Bad(f"{v}-eps=nan", v, X, {**VALID[v], "eps": float("nan")}, ("eps=nan", "finite")) for v in VARIANTS),
    Bad("layer_norm-eps=inf", "layer_norm", X, {**VALID["layer_norm"], "eps": float("inf")}, ("eps=inf", "finite")),
    # x not an array
    *(Bad(f"{v}-x-list", v, X.tolist(), VALID[v], ("x='list'",)) for v in VARIANTS),
    # arguments of the wrong type or rank, and calls that do not bind
    Bad("group_norm-num_groups=True", "group_norm", X, {"num_groups": True}, ("num_groups=True", "positive int")),
    Bad("layer_norm-eps=True", "layer_norm", X, {"normalized_shape": (5,), "eps": True}, ("eps=True", "real")),
    Bad("batch_norm-training=1", "batch_norm", X, {**VALID["batch_norm"], "training": 1}, ("training=1", "bool")),
    Bad("instance_norm-use_input_stats=1", "instance_norm", X, {"use_input_stats": 1},
        ("use_input_stats=1", "bool")),
    Bad("batch_norm-momentum=None", "batch_norm", X, {**VALID["batch_norm"], "momentum": None}, ("momentum=None",)),
    Bad("layer_norm-normalized_shape=()", "layer_norm", X, {"normalized_shape": ()}, ("normalized_shape=()",)),
    Bad("rms_norm-normalized_shape=(5.0,)", "rms_norm", X, {"normalized_shape": (5.0,)},
        ("normalized_shape=(5.0,)",)),
    Bad("layer_norm-empty-x", "layer_norm", f64(0, 5), {"normalized_shape": (5,)},
        ("x.shape=(0, 5)", "at least one element")),
    Bad("batch_norm-1d-x", "batch_norm", f64(5), {"running_mean": None, "running_var": None, "training": True},
        ("x.shape=(5,)", "at least 2 dimensions")),
    Bad("group_norm-1d-x", "group_norm", f64(6), {"num_groups": 2}, ("x.shape=(6,)", "at least 2 dimensions")),
    Bad("layer_norm-unknown-keyword", "layer_norm", X, {"normalized_shape": (5,), "gamma": f64(5)},
        ("layer_norm(", "'gamma'")),
    Bad("group_norm-missing-num_groups", "group_norm", X, {}, ("group_norm(", "'num_groups'")),
)

BAD_GRAD_OUT: tuple[Bad, ...] = (
    *(Bad(f"{v}-grad_out-shape", v, X, VALID[v], ("grad_out.shape=(4, 6, 4)", "x.shape=(4, 6, 5)"),
          grad_out=f64(4, 6, 4)) for v in VARIANTS),
    Bad("layer_norm-grad_out-transposed", "layer_norm", f64(5, 5, 3), {"normalized_shape": (3,)},
        ("grad_out.shape=(5, 3, 5)", "x.shape=(5, 5, 3)"), grad_out=f64(5, 3, 5)),
    Bad("batch_norm-grad_out-flat", "batch_norm", X, VALID["batch_norm"],
        ("grad_out.shape=(120,)", "x.shape=(4, 6, 5)"), grad_out=f64(120)),
    Bad("rms_norm-grad_out-int", "rms_norm", X, VALID["rms_norm"], ("grad_out.dtype=", "int64"),
        grad_out=i64(4, 6, 5)),
    Bad("group_norm-grad_out-list", "group_norm", X, VALID["group_norm"], ("grad_out='list'",),
        grad_out=np.ones((4, 6, 5)).tolist()),
)


def _convert(value: Any, to_array) -> Any:
    return to_array(value) if isinstance(value, np.ndarray) else value


def _assert_raises(call, bad: Bad) -> None:
    with pytest.raises(NormSpecError) as info:
        call()
    assert isinstance(info.value, ValueError)
    message = str(info.value)
    for expected in bad.expected:
        assert expected in message, f"{expected!r} not in {message!r}"


def _running_untouched(kwargs: dict[str, Any], originals: dict[str, Any]) -> None:
    for name in ("running_mean", "running_var"):
        if kwargs.get(name) is not None:
            np.testing.assert_array_equal(np.asarray(kwargs[name]), originals[name], err_msg=f"{name} changed")


@pytest.mark.parametrize("lib", list(LIBS))
@pytest.mark.parametrize("bad", BAD, ids=[str(b) for b in BAD])
def test_forward_rejects(bad, lib):
    module, to_array = LIBS[lib]
    kwargs = {k: _convert(v, to_array) for k, v in bad.kwargs.items()}
    _assert_raises(lambda: getattr(module, bad.variant)(_convert(bad.x, to_array), **kwargs), bad)
    _running_untouched(kwargs, bad.kwargs)


@pytest.mark.parametrize("lib", list(LIBS))
@pytest.mark.parametrize("bad", BAD + BAD_GRAD_OUT, ids=[str(b) for b in BAD + BAD_GRAD_OUT])
def test_backward_rejects(bad, lib):
    module, to_array = LIBS[lib]
    kwargs = {k: _convert(v, to_array) for k, v in bad.kwargs.items()}
    grad_out = np.ones(np.shape(bad.x)) if bad.grad_out is None else bad.grad_out
    backward = getattr(module, f"{bad.variant}_backward")
    _assert_raises(lambda: backward(_convert(grad_out, to_array), _convert(bad.x, to_array), **kwargs), bad)
    _running_untouched(kwargs, bad.kwargs)


@pytest.mark.parametrize("lib", list(LIBS))
@pytest.mark.parametrize("variant", VARIANTS)
def test_valid_calls_of_the_table_pass(variant, lib):
    """The VALID calls the table perturbs are themselves accepted (so each Bad has one fault)."""
    module, to_array = LIBS[lib]
    kwargs = {k: _convert(v, to_array) for k, v in VALID[variant].items()}
    x = _convert(X, to_array)
    assert tuple(getattr(module, variant)(x, **kwargs).shape) == X.shape
    grads = getattr(module, f"{variant}_backward")(_convert(np.ones(X.shape), to_array), x, **kwargs)
    assert tuple(grads[0].shape) == X.shape
