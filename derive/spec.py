"""The named variants, as data: which elements share statistics, which axes carry gamma/beta.

Every variant is one generic normalize (``derive.symbolic``) applied to a *layout*:
the input is reshaped to a working shape in which the group is a set of axes
(``group_dims``) and the affine parameters broadcast from ``param_shape``; parameter
gradients are summed over ``affine_dims``. A variant only chooses that layout.

This module is plain Python (no SymPy, no array library) so that the references can
import it cheaply; every check of a shape or argument that the variants share lives
here, and raises :class:`NormSpecError` naming the argument.
"""
from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from typing import Callable

from derive.errors import NormSpecError


@dataclass(frozen=True)
class Layout:
    """How one call maps onto the generic kernel."""

    work_shape: tuple[int, ...]  # the input is reshaped to this
    group_dims: tuple[int, ...]  # axes of work_shape whose elements share statistics
    affine_dims: tuple[int, ...]  # axes parameter gradients are summed over
    param_shape: tuple[int, ...]  # weight and bias are reshaped to this
    weight_shape: tuple[int, ...]  # the shape the caller's weight and bias must have

    @property
    def group_size(self) -> int:
        return math.prod(self.work_shape[d] for d in self.group_dims)

    @property
    def stats_shape(self) -> tuple[int, ...]:
        """Shape of the per-group statistics (keepdims over group_dims)."""
        return tuple(1 if d in self.group_dims else n for d, n in enumerate(self.work_shape))


@dataclass(frozen=True)
class Variant:
    name: str
    family: str  # the derive.symbolic family: 'centered' or 'rms'
    group: str  # which elements share statistics (for docs and reports)
    affine: str  # which axes carry gamma and beta
    has_bias: bool


VARIANTS = {
    v.name: v
    for v in (
        Variant("batch_norm", "centered", "all of N and the spatial axes, per channel", "channel", True),
        Variant("layer_norm", "centered", "the trailing normalized_shape, per leading index",
                "element of normalized_shape", True),
        Variant("instance_norm", "centered", "the spatial axes, per sample and channel", "channel", True),
        Variant("group_norm", "centered", "C/G channels x the spatial axes, per sample and group",
                "channel", True),
        Variant("rms_norm", "rms", "the trailing normalized_shape, per leading index (no centering)",
                "element of normalized_shape", False),
    )
}


def require(condition: bool, argument: str, value: object, expected: str) -> None:
    """Raise NormSpecError naming ``argument``, its ``value`` and what was ``expected``."""
    if not condition:
        raise NormSpecError(f"{argument}={value!r}: expected {expected}")


def check_eps(eps: object, *, name: str = "eps") -> float:
    require(isinstance(eps, numbers.Real) and not isinstance(eps, bool), name, eps, "a real number")
    require(math.isfinite(eps) and eps >= 0, name, eps, "a finite number >= 0")
    return float(eps)


def check_momentum(momentum: object) -> float:
    require(isinstance(momentum, numbers.Real) and not isinstance(momentum, bool), "momentum", momentum,
            "a float in [0, 1] (momentum=None, a cumulative average, is the module's business: "
            "pass 1/num_batches_tracked)")
    require(0.0 <= momentum <= 1.0, "momentum", momentum, "a float in [0, 1]")
    return float(momentum)


def _check_input(shape: tuple[int, ...], min_rank: int, what: str) -> None:
    require(len(shape) >= min_rank, "x.shape", shape, f"at least {min_rank} dimensions ({what})")
    require(math.prod(shape) > 0, "x.shape", shape, "at least one element")


def _normalized_shape(normalized_shape: object, x_shape: tuple[int, ...]) -> tuple[int, ...]:
    if isinstance(normalized_shape, numbers.Integral):
        normalized_shape = (int(normalized_shape),)
    require(isinstance(normalized_shape, (tuple, list)) and len(normalized_shape) > 0
            and all(isinstance(n, numbers.Integral) for n in normalized_shape),
            "normalized_shape", normalized_shape, "a non-empty tuple of ints")
    dims = tuple(int(n) for n in normalized_shape)
    require(len(dims) <= len(x_shape) and x_shape[len(x_shape) - len(dims):] == dims,
            "normalized_shape", dims, f"the trailing dimensions of x.shape={x_shape}")
    return dims


def trailing_layout(x_shape: tuple[int, ...], normalized_shape: object) -> Layout:
    """layer_norm and rms_norm: the group is the trailing normalized_shape."""
    _check_input(x_shape, 1, "(..., *normalized_shape)")
    dims = _normalized_shape(normalized_shape, x_shape)
    inner = math.prod(dims)
    outer = math.prod(x_shape[: len(x_shape) - len(dims)])
    return Layout((outer, inner), (1,), (0,), (1, inner), dims)


def channel_layout(x_shape: tuple[int, ...], *, per_sample: bool) -> Layout:
    """batch_norm (per_sample=False) and instance_norm (True) on (N, C, *S)."""
    _check_input(x_shape, 2, "(N, C, *spatial)")
    n, c, spatial = x_shape[0], x_shape[1], math.prod(x_shape[2:])
    group_dims = (2,) if per_sample else (0, 2)
    return Layout((n, c, spatial), group_dims, (0, 2), (1, c, 1), (c,))


def group_layout(x_shape: tuple[int, ...], num_groups: object) -> Layout:
    """group_norm on (N, C, *S): channels split into num_groups contiguous groups."""
    _check_input(x_shape, 2, "(N, C, *spatial)")
    n, c, spatial = x_shape[0], x_shape[1], math.prod(x_shape[2:])
    require(isinstance(num_groups, numbers.Integral) and not isinstance(num_groups, bool)
            and num_groups > 0, "num_groups", num_groups, "a positive int")
    require(c % num_groups == 0, "num_groups", num_groups,
            f"a divisor of the number of channels C={c} (x.shape={x_shape})")
    g = int(num_groups)
    # torch refuses N * C/G * spatial == 1 (it checks group_norm like a training batch_norm)
    require(n * (c // g) * spatial > 1, "x.shape", x_shape,
            f"more than 1 value per group over the batch (N * C/num_groups * spatial > 1, num_groups={g})")
    return Layout((n, g, c // g, spatial), (2, 3), (0, 3), (1, g, c // g, 1), (c,))


def check_training_group(layout: Layout, x_shape: tuple[int, ...], variant: str) -> None:
    """torch refuses one value per group in training for batch_norm and instance_norm."""
    what = "value per channel" if variant == "batch_norm" else "spatial element"
    require(layout.group_size > 1, "x.shape", x_shape,
            f"more than 1 {what} when training ({variant} with batch statistics)")


def check_param(value_shape: tuple[int, ...] | None, layout: Layout, name: str) -> None:
    if value_shape is not None:
        require(tuple(value_shape) == layout.weight_shape, f"{name}.shape", tuple(value_shape),
                f"{layout.weight_shape}")


def check_running(shape: tuple[int, ...] | None, channels: int, name: str) -> None:
    if shape is not None:
        require(tuple(shape) == (channels,), f"{name}.shape", tuple(shape), f"({channels},)")


LAYOUTS: dict[str, Callable[..., Layout]] = {
    "layer_norm": trailing_layout,
    "rms_norm": trailing_layout,
    "batch_norm": lambda shape: channel_layout(shape, per_sample=False),
    "instance_norm": lambda shape: channel_layout(shape, per_sample=True),
    "group_norm": group_layout,
}
