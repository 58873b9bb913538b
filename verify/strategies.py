"""Hypothesis strategies for cases, in hypothesis' own style.

``cases(variant, dtype)`` draws a :class:`verify.case.Case`: shape, configuration,
eps, affine, memory layout, value family and seed; the tensor values come from the
seed. Examples shrink towards small shapes of the first side sizes (1, 2, 3), eps =
1e-5, contiguous memory, standard-normal values, seed 0.
"""
from __future__ import annotations

import math

from hypothesis import strategies as st

from verify.case import Case

SIDES = (1, 2, 3, 4, 5, 7, 8, 9, 15, 16, 17)  # 2^k - 1, 2^k, 2^k + 1
EPS_VALUES = (1e-5, 1e-3, 0.1, 1e-12, 0.0)
# Families whose groups keep a positive variance in float32/float64, so eps = 0 is defined.
SPREAD_FAMILIES = ("normal", "outlier", "gamma_mixed")
VARIANTS = ("batch_norm", "layer_norm", "instance_norm", "group_norm", "rms_norm")


def _validate(variant: str, min_rank: int, max_rank: int, max_numel: int) -> None:
    if variant not in VARIANTS:
        raise ValueError(f"variant={variant!r}: expected one of {VARIANTS}")
    if not 1 <= min_rank <= max_rank <= 5:
        raise ValueError(f"min_rank={min_rank}, max_rank={max_rank}: expected 1 <= min_rank <= max_rank <= 5")
    if max_numel < 1:
        raise ValueError(f"max_numel={max_numel}: expected a positive int")


@st.composite
def shapes(draw, *, min_rank: int = 2, max_rank: int = 5, max_numel: int = 2048,
           min_side: int = 1) -> tuple[int, ...]:
    """A shape whose sides come from SIDES, with at most ``max_numel`` elements."""
    rank = draw(st.integers(min_rank, max_rank), label="rank")
    sides, budget = [], max_numel
    for axis in range(rank):
        left = rank - axis - 1  # keep room for the remaining axes at their minimum side
        allowed = [s for s in SIDES if min_side <= s <= budget // max(1, min_side ** left)]
        side = draw(st.sampled_from(allowed or [min_side]), label=f"side{axis}")
        sides.append(side)
        budget = max(1, budget // side)
    return tuple(sides)


@st.composite
def cases(draw, variant: str, dtype: str = "float64", *, min_rank: int = 2, max_rank: int = 5,
          max_numel: int = 2048, families: tuple[str, ...] | None = None, affine: bool | None = None,
          training: bool | None = None, eps_zero: bool = True) -> Case:
    """One case of ``variant`` in ``dtype``; see the module docstring for what shrinks where."""
    from verify.case import VALUE_FAMILIES

    min_rank = max(min_rank, 3 if variant == "instance_norm" else 2)
    max_rank = max(max_rank, min_rank)
    _validate(variant, min_rank, max_rank, max_numel)
    shape = draw(shapes(min_rank=min_rank, max_rank=max_rank, max_numel=max_numel), label="shape")
    config: dict = {}
    if variant in ("layer_norm", "rms_norm"):
        config["normalized_ndim"] = draw(st.integers(1, min(3, len(shape))), label="normalized_ndim")
    if variant == "group_norm":
        divisors = [g for g in range(1, shape[1] + 1) if shape[1] % g == 0]
        config["num_groups"] = draw(st.sampled_from(divisors), label="num_groups")
        if shape[0] * (shape[1] // config["num_groups"]) * math.prod(shape[2:]) == 1:
            shape = (2, *shape[1:])  # torch refuses N * C/G * spatial == 1
    if variant == "batch_norm":
        config["training"] = draw(st.booleans(), label="training") if training is None else training
    if variant in ("batch_norm", "instance_norm") and config.get("training", True):
        shape = enough_per_group(variant, shape)
        config["running"] = draw(st.booleans(), label="running")
        config["momentum"] = draw(st.sampled_from([0.1, 0.5, 1.0, 0.0]), label="momentum")
    values = draw(st.sampled_from(families or VALUE_FAMILIES), label="values")
    probe = Case(variant, shape, dtype, **config)
    eps_choices = [e for e in EPS_VALUES if e > 0 or (eps_zero and _eps_zero_defined(probe, values))]
    if variant == "rms_norm":
        eps_choices.append(None)
    return Case(
        variant, shape, dtype,
        eps=draw(st.sampled_from(eps_choices), label="eps"),
        affine=draw(st.booleans(), label="affine") if affine is None else affine,
        memory=draw(st.sampled_from(_memories(shape)), label="memory"),
        values=values,
        seed=draw(st.integers(0, 2**16 - 1), label="seed"),
        **config,
    )


def enough_per_group(variant: str, shape: tuple[int, ...]) -> tuple[int, ...]:
    """torch refuses one value per group in training: grow the last axis to 2 if needed."""
    spatial = math.prod(shape[2:])
    per_group = spatial if variant == "instance_norm" else shape[0] * spatial
    if per_group > 1:
        return shape
    return (*shape[:-1], 2) if len(shape) > 2 else (2, shape[1])


def _eps_zero_defined(case: Case, values: str) -> bool:
    """eps = 0 only where every group keeps a positive variance, and torch accepts it
    (batch_norm refuses eps = 0 in training)."""
    refused = case.variant == "batch_norm" and case.training
    return (not refused and values in SPREAD_FAMILIES and case.dtype in ("float32", "float64")
            and case.layout.group_size > 1)


def _memories(shape: tuple[int, ...]) -> list[str]:
    return ["contiguous", "noncontiguous", *(["channels_last"] if len(shape) in (4, 5) else [])]
