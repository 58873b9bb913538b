"""How one call maps onto the generic kernel: a *layout* of reduction and affine axes.

Every variant is one generic normalize (``normspec.derive.symbolic``) applied to a layout:
the input is reshaped to a working shape in which the group is a set of axes
(``group_dims``) and the affine parameters broadcast from ``param_shape``; parameter
gradients are summed over ``affine_dims``. The layout functions here are the ones the
variant registry (``normspec.derive.variants``) names; each validates the shapes it is
given and raises :class:`NormSpecError` naming the argument.

Plain Python (no SymPy, no array library), so that the references import it cheaply.
"""
from __future__ import annotations

import math
import numbers
from dataclasses import dataclass

from normspec.derive.errors import require


@dataclass(frozen=True, kw_only=True)
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

    @property
    def group_count(self) -> int:
        return math.prod(self.work_shape) // self.group_size


def check_input(shape: tuple[int, ...], min_rank: int, what: str) -> None:
    require(len(shape) >= min_rank, "x.shape", shape, f"at least {min_rank} dimensions ({what})")
    require(math.prod(shape) > 0, "x.shape", shape, "at least one element")


def check_normalized_shape(normalized_shape: object, x_shape: tuple[int, ...]) -> tuple[int, ...]:
    if isinstance(normalized_shape, numbers.Integral):
        normalized_shape = (int(normalized_shape),)
    require(isinstance(normalized_shape, (tuple, list)) and len(normalized_shape) > 0
            and all(isinstance(n, numbers.Integral) for n in normalized_shape),
            "normalized_shape", normalized_shape, "a non-empty tuple of ints")
    dims = tuple(int(n) for n in normalized_shape)
    require(len(dims) <= len(x_shape) and x_shape[len(x_shape) - len(dims):] == dims,
            "normalized_shape", dims, f"the trailing dimensions of x.shape={x_shape}")
    return dims


def trailing_layout(x_shape: tuple[int, ...], *, normalized_shape: object) -> Layout:
    """The group is the trailing ``normalized_shape`` (one group per leading index)."""
    check_input(x_shape, 1, "(..., *normalized_shape)")
    dims = check_normalized_shape(normalized_shape, x_shape)
    inner = math.prod(dims)
    outer = math.prod(x_shape[: len(x_shape) - len(dims)])
    return Layout(work_shape=(outer, inner), group_dims=(1,), affine_dims=(0,), param_shape=(1, inner),
                  weight_shape=dims)


def modulated_layout(x_shape: tuple[int, ...], *, normalized_shape: object) -> Layout:
    """Like :func:`trailing_layout`, with parameters per sample: (N, *tokens, *normalized_shape), the
    parameters of shape (N, *normalized_shape), broadcast over the tokens and summed over them."""
    check_input(x_shape, 2, "(N, *tokens, *normalized_shape)")
    dims = check_normalized_shape(normalized_shape, x_shape)
    require(len(dims) < len(x_shape), "normalized_shape", dims,
            f"trailing dimensions of x.shape={x_shape} that leave out its first (the sample axis of scale and shift)")
    inner = math.prod(dims)
    n = x_shape[0]
    tokens = math.prod(x_shape[1: len(x_shape) - len(dims)])
    return Layout(work_shape=(n, tokens, inner), group_dims=(2,), affine_dims=(1,), param_shape=(n, 1, inner),
                  weight_shape=(n, *dims))


def channel_layout(x_shape: tuple[int, ...], *, per_sample: bool) -> Layout:
    """(N, C, *S) per channel: over N and S (``per_sample=False``) or over S alone (True)."""
    check_input(x_shape, 2, "(N, C, *spatial)")
    n, c, spatial = x_shape[0], x_shape[1], math.prod(x_shape[2:])
    return Layout(work_shape=(n, c, spatial), group_dims=(2,) if per_sample else (0, 2), affine_dims=(0, 2),
                  param_shape=(1, c, 1), weight_shape=(c,))


def group_layout(x_shape: tuple[int, ...], *, num_groups: object) -> Layout:
    """(N, C, *S) with the channels split into ``num_groups`` contiguous groups."""
    check_input(x_shape, 2, "(N, C, *spatial)")
    n, c, spatial = x_shape[0], x_shape[1], math.prod(x_shape[2:])
    require(isinstance(num_groups, numbers.Integral) and not isinstance(num_groups, bool)
            and num_groups > 0, "num_groups", num_groups, "a positive int")
    require(c % num_groups == 0, "num_groups", num_groups,
            f"a divisor of the number of channels C={c} (x.shape={x_shape})")
    g = int(num_groups)
    # torch refuses N * C/G * spatial == 1 (it checks group_norm like a training batch_norm)
    require(n * (c // g) * spatial > 1, "x.shape", x_shape,
            f"more than 1 value per group over the batch (N * C/num_groups * spatial > 1, num_groups={g})")
    return Layout(work_shape=(n, g, c // g, spatial), group_dims=(2, 3), affine_dims=(0, 3),
                  param_shape=(1, g, c // g, 1), weight_shape=(c,))


def check_param(value_shape: tuple[int, ...] | None, layout: Layout, name: str) -> None:
    if value_shape is not None:
        require(tuple(value_shape) == layout.weight_shape, f"{name}.shape", tuple(value_shape),
                f"{layout.weight_shape}")


def check_running(shape: tuple[int, ...] | None, channels: int, name: str) -> None:
    if shape is not None:
        require(tuple(shape) == (channels,), f"{name}.shape", tuple(shape), f"({channels},)")
