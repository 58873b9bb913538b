"""Hypothesis strategies for cases, in hypothesis' own style.

``cases(variant, dtype)`` draws a :class:`normspec.verify.cases.case.Case`: shape, the
configuration (the settings of the variant's registry record, each from the values it
allows for the shape), eps, affine, memory layout, value kind and seed; the tensor
values come from the seed. Examples shrink towards small shapes of the first side sizes
(1, 2, 3), the first value of each setting, eps = 1e-5, contiguous memory,
standard-normal values, seed 0.
"""
from __future__ import annotations

import dataclasses

from hypothesis import strategies as st

from normspec.derive import variants
from normspec.derive.errors import NormSpecError
from normspec.verify.cases.case import VALUE_KINDS, Case, parameter_choices, weight_offsets

SIDES = (1, 2, 3, 4, 5, 7, 8, 9, 15, 16, 17)  # 2^k - 1, 2^k, 2^k + 1
EPS_VALUES = (1e-5, 1e-3, 0.1, 1e-12, 0.0)
MOMENTUM_VALUES = (0.1, 0.5, 1.0, 0.0)
# Value kinds whose groups keep a positive variance in float32/float64, so eps = 0 is defined.
SPREAD_KINDS = ("normal", "outlier", "gamma_mixed")


def _validate(variant: str, min_rank: int, max_rank: int, max_numel: int) -> None:
    variants.get(variant)
    if not 1 <= min_rank <= max_rank <= 5:
        raise NormSpecError(f"min_rank={min_rank}, max_rank={max_rank}: expected 1 <= min_rank <= max_rank <= 5")
    if max_numel < 1:
        raise NormSpecError(f"max_numel={max_numel}: expected a positive int")


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
          max_numel: int = 2048, value_kinds: tuple[str, ...] | None = None, affine: bool | None = None,
          training: bool | None = None, eps_zero: bool = True, options: dict | None = None,
          parameter_dtypes: tuple[str | None, ...] = (None,)) -> Case:
    """One case of ``variant`` in ``dtype``; see the module docstring for what shrinks where.

    The configuration is the variant's registry settings, each drawn from the values it
    allows for the drawn shape; ``training`` pins the running-statistics mode. The variant's
    keyword options are drawn (``weight_offset``: 0, 1, 0.375 with a weight; shrinks to 0)
    unless ``options`` pins them (the implementation has them fixed). The parameters' dtype is
    drawn from ``parameter_dtypes`` where the case has parameters (shrinks to the first, None:
    x's own dtype).
    """
    record = variants.get(variant)
    min_rank = max(min_rank, record.min_rank)
    max_rank = max(max_rank, min_rank)
    _validate(variant, min_rank, max_rank, max_numel)
    shape = draw(shapes(min_rank=min_rank, max_rank=max_rank, max_numel=max_numel), label="shape")
    config: dict = {}
    for setting in record.settings:
        pinned = training if setting.name == "training" and training is not None else None
        config[setting.name] = pinned if pinned is not None else draw(
            st.sampled_from(setting.values(shape)), label=setting.name)
    shape = accepted_shape(Case(variant, shape, dtype, **config))
    probe = Case(variant, shape, dtype, **config)
    if record.running is not None and not probe.given_statistics:
        config["running"] = draw(st.booleans(), label="running")
        config["momentum"] = draw(st.sampled_from(MOMENTUM_VALUES), label="momentum")
    values = draw(st.sampled_from(value_kinds or VALUE_KINDS), label="values")
    eps_choices = [e for e in EPS_VALUES if e > 0 or (eps_zero and _eps_zero_defined(probe, values))]
    if record.default("eps") is None:
        eps_choices.append(None)
    affine = draw(st.booleans(), label="affine") if affine is None else affine
    weight, bias = draw(st.sampled_from(parameter_choices(record)), label="parameters") if affine else (True, True)
    offset = draw(st.sampled_from(weight_offsets(record, affine and weight, options)), label="weight_offset")
    parameter_dtype = draw(st.sampled_from(parameter_dtype_choices(record, affine, parameter_dtypes)),
                           label="parameter_dtype")
    return Case(
        variant, shape, dtype,
        eps=draw(st.sampled_from(eps_choices), label="eps"),
        affine=affine, weight=weight, bias=bias, weight_offset=offset, parameter_dtype=parameter_dtype,
        memory=draw(st.sampled_from(_memories(shape)), label="memory"),
        values=values,
        seed=draw(st.integers(0, 2**16 - 1), label="seed"),
        **config,
    )


def parameter_dtype_choices(record: variants.Variant, affine: bool,
                            parameter_dtypes: tuple[str | None, ...]) -> tuple[str | None, ...]:
    """The parameter dtypes of a case: ``parameter_dtypes`` where it passes parameters or running
    buffers, else x's own (None)."""
    has_parameters = affine or record.parameters_required or record.running is not None
    return tuple(parameter_dtypes) or (None,) if has_parameters else (None,)


def accepted_shape(case: Case) -> tuple[int, ...]:
    """``case.shape``, or the nearest shape the variant accepts: torch refuses one value per
    group when it computes batch statistics, so a spatial axis, then the batch, grows to 2."""
    grown = [case.shape]
    if len(case.shape) > 2:
        grown.append((*case.shape[:-1], max(2, case.shape[-1])))
    grown.append((max(2, case.shape[0]), *case.shape[1:]))
    for shape in grown:
        candidate = dataclasses.replace(case, shape=shape)
        try:
            layout = candidate.layout
            if not candidate.given_statistics:
                candidate.record.check_batch_statistics(layout, shape)
            return shape
        except NormSpecError:
            continue
    return grown[-1]


def _eps_zero_defined(case: Case, values: str) -> bool:
    """eps = 0 only where every group keeps a positive variance, and torch accepts it (some
    variants refuse eps = 0 when training)."""
    running = case.record.running
    refused = running is not None and running.refuses_zero_eps and not case.given_statistics
    return (not refused and values in SPREAD_KINDS and case.dtype in ("float32", "float64")
            and case.layout.group_size > 1)


def _memories(shape: tuple[int, ...]) -> list[str]:
    return ["contiguous", "noncontiguous", *(["channels_last"] if len(shape) in (4, 5) else [])]
