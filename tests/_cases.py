"""Hand-picked cases and helpers shared by the test_reference_* files.

A :class:`Case` is one call of one variant with ``torch.nn.functional``'s keyword
arguments; its arrays come from a generator seeded by the case id, so every test of
a case sees the same values. ``torch.nn.functional`` in float64 is the oracle.
"""
from __future__ import annotations

import zlib
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

TOL = {"rtol": 1e-10, "atol": 1e-10}  # float64 against float64
LOW_TOL = {"rtol": 1e-2, "atol": 1e-2}  # float16 / bfloat16 against float64
MOMENTA = (0.0, 0.1, 0.5, 1.0)

RUNNING = ("running_mean", "running_var")
GRADS = ("dx", "dweight", "dbias")


@dataclass(frozen=True)
class Case:
    """One call: ``variant(x, **options, weight=..., bias=..., running_mean=..., running_var=...)``."""

    id: str
    variant: str
    shape: tuple[int, ...]
    options: dict[str, Any] = field(default_factory=dict)
    weight: bool = True
    bias: bool = True
    running: bool = False  # pass running_mean / running_var (batch_norm, instance_norm)

    @property
    def param_shape(self) -> tuple[int, ...]:
        if self.variant in ("layer_norm", "rms_norm"):
            ns = self.options["normalized_shape"]
            return (ns,) if isinstance(ns, int) else tuple(ns)
        return (self.shape[1],)

    @property
    def updates_running(self) -> bool:
        """True when the forward updates running_mean / running_var in place."""
        if not self.running:
            return False
        return self.options.get("training", False) or self.options.get("use_input_stats", True)

    def __str__(self) -> str:
        return self.id


def _ln(id, shape, ns, **kw):
    return Case(id, "layer_norm", shape, {"normalized_shape": ns, **kw.pop("options", {})}, **kw)


def _rms(id, shape, ns, **kw):
    return Case(id, "rms_norm", shape, {"normalized_shape": ns, **kw.pop("options", {})}, bias=False, **kw)


def _gn(id, shape, groups, **kw):
    return Case(id, "group_norm", shape, {"num_groups": groups, **kw.pop("options", {})}, **kw)


def _bn(id, shape, training, **kw):
    return Case(id, "batch_norm", shape, {"training": training, **kw.pop("options", {})}, **kw)


def _in(id, shape, use_input_stats=True, **kw):
    return Case(id, "instance_norm", shape, {"use_input_stats": use_input_stats, **kw.pop("options", {})}, **kw)


CASES: tuple[Case, ...] = (
    # layer_norm: normalized_shape of 1, 2 and 3 dims; group of one element; affine off
    _ln("layer_norm-(5,7)-ns(7,)", (5, 7), (7,)),
    _ln("layer_norm-(3,5,7)-ns(5,7)", (3, 5, 7), (5, 7)),
    _ln("layer_norm-(2,3,5,7)-ns(3,5,7)", (2, 3, 5, 7), (3, 5, 7)),
    _ln("layer_norm-(7,)-ns[7]-list", (7,), [7]),
    _ln("layer_norm-(5,1)-ns(1,)-N=1", (5, 1), (1,)),
    _ln("layer_norm-(3,5)-no-affine", (3, 5), (5,), weight=False, bias=False),
    _ln("layer_norm-(3,5)-weight-only", (3, 5), (5,), bias=False),
    _ln("layer_norm-(3,5)-bias-only", (3, 5), (5,), weight=False),
    _ln("layer_norm-(5,3)-eps=0.1", (5, 3), (3,), options={"eps": 0.1}),
    # batch_norm: (N, C), (N, C, L), (N, C, H, W), (N, C, D, H, W); train and eval
    _bn("batch_norm-(5,3)-train", (5, 3), True, running=True),
    _bn("batch_norm-(3,5,7)-train", (3, 5, 7), True, running=True, options={"momentum": 0.3}),
    _bn("batch_norm-(2,3,5,7)-train", (2, 3, 5, 7), True, running=True),
    _bn("batch_norm-(2,3,3,2,5)-train", (2, 3, 3, 2, 5), True, running=True),
    _bn("batch_norm-(1,3,5)-train-N=1", (1, 3, 5), True, running=True),
    _bn("batch_norm-(7,5)-train-no-running", (7, 5), True),
    _bn("batch_norm-(3,5,7)-train-no-affine", (3, 5, 7), True, running=True, weight=False, bias=False),
    _bn("batch_norm-(5,3)-eval", (5, 3), False, running=True),
    _bn("batch_norm-(3,5,7)-eval", (3, 5, 7), False, running=True, options={"eps": 1e-3}),
    _bn("batch_norm-(2,3,3,2,5)-eval-no-affine", (2, 3, 3, 2, 5), False, running=True, weight=False, bias=False),
    # instance_norm: with and without running statistics, use_input_stats=False
    _in("instance_norm-(3,5,7)", (3, 5, 7)),
    _in("instance_norm-(2,3,5,7)-running", (2, 3, 5, 7), running=True, options={"momentum": 0.3}),
    _in("instance_norm-(2,3,3,2,5)-no-affine", (2, 3, 3, 2, 5), weight=False, bias=False),
    _in("instance_norm-(1,5,3)-running-N=1", (1, 5, 3), running=True),
    _in("instance_norm-(3,5,7)-eval", (3, 5, 7), use_input_stats=False, running=True),
    # group_norm: G = 1, 2, C; one element per group; affine off
    _gn("group_norm-(3,6,5)-G=1", (3, 6, 5), 1),
    _gn("group_norm-(3,6,5)-G=2", (3, 6, 5), 2),
    _gn("group_norm-(3,6,5)-G=3", (3, 6, 5), 3),
    _gn("group_norm-(3,6,5)-G=C", (3, 6, 5), 6),
    _gn("group_norm-(2,4)-G=4-one-element", (2, 4), 4),
    _gn("group_norm-(5,6)-G=2", (5, 6), 2),
    _gn("group_norm-(2,6,3,5)-G=3-no-affine", (2, 6, 3, 5), 3, weight=False, bias=False),
    _gn("group_norm-(2,4,3,1,5)-G=2", (2, 4, 3, 1, 5), 2),
    # rms_norm: eps=None and eps given; 1, 2, 3 normalized dims; affine off
    _rms("rms_norm-(5,7)-ns(7,)-eps=None", (5, 7), (7,)),
    _rms("rms_norm-(5,7)-ns(7,)-eps=1e-3", (5, 7), (7,), options={"eps": 1e-3}),
    _rms("rms_norm-(3,5,7)-ns(5,7)-eps=1e-5", (3, 5, 7), (5, 7), options={"eps": 1e-5}),
    _rms("rms_norm-(2,3,5,7)-ns(3,5,7)", (2, 3, 5, 7), (3, 5, 7)),
    _rms("rms_norm-(5,1)-ns(1,)-N=1", (5, 1), (1,), options={"eps": 1e-5}),
    _rms("rms_norm-(3,5)-no-affine", (3, 5), (5,), weight=False),
)

#: One representative case per variant and mode, for the slower checks (low precision, gradgradcheck).
SMALL_CASES: tuple[Case, ...] = tuple(
    c for c in CASES
    if c.id in {
        "layer_norm-(3,5,7)-ns(5,7)", "layer_norm-(3,5)-no-affine", "batch_norm-(3,5,7)-train",
        "batch_norm-(5,3)-eval", "instance_norm-(2,3,5,7)-running", "instance_norm-(3,5,7)-eval",
        "group_norm-(3,6,5)-G=2", "group_norm-(2,4)-G=4-one-element", "rms_norm-(5,7)-ns(7,)-eps=None",
        "rms_norm-(3,5,7)-ns(5,7)-eps=1e-5",
    }
)

#: Cases whose forward updates running statistics (for the backward-leaves-them-alone check).
RUNNING_CASES: tuple[Case, ...] = tuple(c for c in CASES if c.running)


def seed_of(text: str) -> int:
    return zlib.crc32(text.encode())


def make_arrays(case: Case, *, seed: int | None = None) -> dict[str, np.ndarray | None]:
    """float64 arrays for ``case``: x, grad_out, weight, bias, running_mean, running_var
    (None where the case has none). Weights are random with mixed signs."""
    rng = np.random.default_rng(seed_of(case.id) if seed is None else seed)
    x = rng.standard_normal(case.shape) * 1.5 + 0.5
    channels = case.shape[1] if len(case.shape) > 1 else None
    arrays: dict[str, np.ndarray | None] = {
        "x": x,
        "grad_out": rng.standard_normal(case.shape),
        "weight": rng.standard_normal(case.param_shape) if case.weight else None,
        "bias": rng.standard_normal(case.param_shape) if case.bias else None,
        "running_mean": rng.standard_normal(channels) if case.running else None,
        "running_var": rng.uniform(0.5, 2.0, channels) if case.running else None,
    }
    if case.weight:  # mixed signs guaranteed
        w = arrays["weight"].reshape(-1)
        w[0] = -abs(w[0]) - 0.25
        if w.size > 1:
            w[1] = abs(w[1]) + 0.25
    return arrays


def call_kwargs(case: Case, arrays: dict[str, Any]) -> dict[str, Any]:
    """Keyword arguments of the call (everything but x), arrays taken from ``arrays``."""
    kwargs = dict(case.options)
    kwargs["weight"] = arrays["weight"]
    if case.variant != "rms_norm":
        kwargs["bias"] = arrays["bias"]
    if case.variant in ("batch_norm", "instance_norm"):
        kwargs["running_mean"] = arrays["running_mean"]
        kwargs["running_var"] = arrays["running_var"]
    return kwargs


def copy_arrays(arrays: dict[str, Any]) -> dict[str, Any]:
    return {k: None if v is None else v.copy() for k, v in arrays.items()}


def to_torch(arrays: dict[str, Any], dtype: torch.dtype = torch.float64) -> dict[str, Any]:
    return {k: None if v is None else torch.tensor(v, dtype=dtype) for k, v in arrays.items()}


def as_numpy(value: Any) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        return value.detach().to(torch.float64).cpu().numpy()
    return np.asarray(value, dtype=np.float64)


def native(case: Case, arrays: dict[str, np.ndarray | None]) -> dict[str, np.ndarray | None]:
    """torch.nn.functional's forward and autograd backward in float64 on (copies of) ``arrays``.

    Returns y, dx, dweight, dbias and running_mean / running_var after the call.
    """
    t = to_torch(arrays)
    for name in ("x", "weight", "bias"):
        if t[name] is not None:
            t[name].requires_grad_(True)
    y = getattr(F, case.variant)(t["x"], **call_kwargs(case, t))
    y.backward(t["grad_out"])
    grad = lambda name: None if t[name] is None else as_numpy(t[name].grad)  # noqa: E731
    return {
        "y": as_numpy(y),
        "dx": grad("x"),
        "dweight": grad("weight"),
        "dbias": grad("bias"),
        "running_mean": None if t["running_mean"] is None else as_numpy(t["running_mean"]),
        "running_var": None if t["running_var"] is None else as_numpy(t["running_var"]),
    }


def assert_close(actual: Any, expected: np.ndarray | None, what: str, **tol: float) -> None:
    """``actual`` (numpy or torch) equals ``expected`` in shape and within ``tol`` (TOL by default);
    both None when ``expected`` is None."""
    if expected is None:
        assert actual is None, f"{what}: expected None, got {type(actual).__name__}"
        return
    assert actual is not None, f"{what}: expected an array of shape {expected.shape}, got None"
    assert tuple(actual.shape) == expected.shape, f"{what}: shape {tuple(actual.shape)} != {expected.shape}"
    np.testing.assert_allclose(as_numpy(actual), expected, err_msg=what, **(tol or TOL))


def ids(cases) -> list[str]:
    return [str(c) for c in cases]


#: (variant, shape) of the running-statistics checks: several steps, then eval with the result.
RUNNING_SHAPES: tuple[tuple[str, tuple[int, ...]], ...] = (
    ("batch_norm", (5, 3)),
    ("batch_norm", (3, 5, 7)),
    ("batch_norm", (2, 3, 5, 7)),
    ("batch_norm", (2, 3, 3, 2, 5)),
    ("instance_norm", (3, 5, 7)),
    ("instance_norm", (2, 3, 5, 7)),
    ("instance_norm", (2, 3, 3, 2, 5)),
)
RUNNING_STEPS = 3


def running_params():
    """pytest params (variant, shape, momentum) with ids like ``batch_norm-(3,5,7)-momentum=0.1``."""
    import pytest

    return [
        pytest.param(variant, shape, m, id=f"{variant}-({','.join(map(str, shape))})-momentum={m}")
        for variant, shape in RUNNING_SHAPES
        for m in MOMENTA
    ]


def running_case(variant: str, shape: tuple[int, ...], momentum: float, *, train: bool) -> Case:
    """A case with running statistics: training (batch statistics, update) or eval (use them)."""
    mode = {"batch_norm": "training", "instance_norm": "use_input_stats"}[variant]
    return Case(f"{variant}-{shape}-{momentum}", variant, shape, {mode: train, "momentum": momentum},
                running=True)
