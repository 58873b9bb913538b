"""The kernel-scale tier (``--scale kernel``): the shapes and views real kernels branch on.

The small battery's shapes (at most 2048 elements) never pass one block of a kernel. This tier
draws what does: hidden sizes (the group size N of the trailing variants, the spatial size of the
channel ones) 2^k - 1, 2^k and 2^k + 1 up to 65536 and beyond (:data:`HIDDEN`), row counts that
are not multiples of a block of rows (:data:`ROWS`; 65537 rows with ``many_rows``), leading ranks up
to 4, and last-dim-contiguous views whose row stride is not the hidden size (``padded_rows``,
``narrow``, ``transposed_leading``: ``verify.cases.case.VIEW_LAYOUTS``) besides contiguous and
channels_last memory. Every case stays within ``max_numel`` elements of x (:data:`MAX_NUMEL`; the
``huge`` scale raises it, see :func:`huge_cases`).

:func:`cases` is the hypothesis strategy (examples shrink toward the smallest hidden size, one
row, rank 2, contiguous memory, standard-normal values): a failure at 65537 is reported at the
smallest size that still fails. :func:`grid` is the deterministic list that runs first, smallest
first: every hidden size, every row count, every view.
"""
from __future__ import annotations

import math

from hypothesis import strategies as st

from normspec.derive import variants
from normspec.derive.errors import require
from normspec.verify.cases.case import VIEW_LAYOUTS, Case, parameter_choices, weight_offsets
from normspec.verify.cases.strategies import parameter_dtype_choices

HIDDEN = tuple(sorted({2**k + d for k in (7, 10, 12, 13, 16) for d in (-1, 0, 1)} | {2**17 + 1}))
ROWS = (1, 3, 15, 65, 127, 1000, 2049, 4097)  # no multiple of 4, 16, 32 or 64 rows (1000: of 8 only)
MANY_ROWS = 65537  # >= 2^16 rows: grids of row blocks past 65535 (with many_rows)
MAX_NUMEL = 2**21  # elements of x per case (the truth, in float64, is a few arrays of this size)
KERNEL_VALUES = ("normal", "offset", "outlier", "gamma_mixed")
KERNEL_EPS = (1e-5, 1e-6)
# the checks that run at kernel scale: the oracles that compare with the truth and the memory hazards
# (the invariants, identities, finite differences and mpmath stay small)
CHECKS = ("forward", "backward", "deterministic", "running_stats", "saved_statistics", "backward_true_statistics",
          "output_mask", "contract", "backward_from_output", "output_memory")
SCALES = ("small", "kernel", "huge")


def check_scale(scale: object, *, argument: str = "scale") -> str:
    require(scale in SCALES, argument, scale, f"one of {', '.join(SCALES)}")
    return scale  # type: ignore[return-value]


def _leading(rows: int, rank: int) -> tuple[int, ...]:
    """``rows`` as ``rank - 1`` leading sides (the smallest divisor first, then the rest)."""
    if rank == 2 or rows == 1:
        return (rows,) + (1,) * (rank - 2)
    divisor = next((d for d in range(2, math.isqrt(rows) + 1) if rows % d == 0), rows)
    rest = rows // divisor
    return (divisor, rest) if rank == 3 else (divisor, rest, 1)


def shape_for(variant: str, rows: int, hidden: int, rank: int) -> tuple[int, ...]:
    """A shape of ``variant`` with ``rows`` groups' worth of rows of ``hidden`` elements: the trailing
    variants normalize the hidden axis; the channel ones take (N, 4, hidden) (rank 4: (N, 4, 1, hidden)),
    hidden their spatial size; the modulated ones need a sample axis and a token axis."""
    record = variants.get(variant)
    if record.layout_arguments == ("normalized_shape",):
        rank = max(rank, record.min_rank + (1 if record.parameters_required else 0))
        return (*_leading(rows, rank), hidden)
    samples = max(1, rows // 4)
    return (samples, 4, 1, hidden) if rank >= 4 else (samples, 4, hidden)


def _settings(record: variants.Variant, shape: tuple[int, ...], training: bool) -> dict:
    """Each setting at its kernel value: one normalized axis, 2 groups of 2 channels, the drawn mode."""
    chosen = {}
    for setting in record.settings:
        allowed = setting.values(shape)
        if setting.name == "num_groups":
            chosen[setting.name] = 2 if 2 in allowed else allowed[0]
        elif setting.name == "training":
            chosen[setting.name] = training
        else:
            chosen[setting.name] = allowed[0]
    return chosen


def memories(shape: tuple[int, ...]) -> tuple[str, ...]:
    # transposing two leading axes of which one is 1 changes no stride: only where both are > 1
    views = tuple(m for m in VIEW_LAYOUTS if m != "transposed_leading" or (len(shape) >= 3 and min(shape[:2]) > 1))
    return ("contiguous", *views, *(("channels_last",) if len(shape) == 4 else ()))


@st.composite
def cases(draw, variant: str, dtype: str = "float32", *, max_numel: int = MAX_NUMEL, many_rows: bool = False,
          options: dict | None = None, parameter_dtypes: tuple[str | None, ...] = (None,),
          training: bool | None = None, affine: bool | None = None) -> Case:
    """One kernel-scale case of ``variant`` in ``dtype`` (see the module docstring for what shrinks where)."""
    record = variants.get(variant)
    hidden = draw(st.sampled_from([h for h in HIDDEN if h <= max_numel]), label="hidden")
    rank = draw(st.sampled_from((2, 3, 4)), label="rank")
    row_counts = [r for r in (*ROWS, *((MANY_ROWS,) if many_rows else ()))
                  if math.prod(shape_for(variant, r, hidden, rank)) <= max_numel]
    rows = draw(st.sampled_from(row_counts or [1]), label="rows")
    shape = shape_for(variant, rows, hidden, rank)
    mode = training if training is not None else (draw(st.booleans(), label="training")
                                                  if record.running is not None else True)
    affine = draw(st.booleans(), label="affine") if affine is None else affine
    weight, bias = draw(st.sampled_from(parameter_choices(record)), label="parameters") if affine else (True, True)
    return Case(variant, shape, dtype, **_settings(record, shape, mode),
                eps=draw(st.sampled_from(KERNEL_EPS), label="eps"), affine=affine, weight=weight, bias=bias,
                weight_offset=draw(st.sampled_from(weight_offsets(record, affine and weight, options)),
                                   label="weight_offset"),
                parameter_dtype=draw(st.sampled_from(parameter_dtype_choices(record, affine, parameter_dtypes)),
                                     label="parameter_dtype"),
                memory=draw(st.sampled_from(memories(shape)), label="memory"),
                values=draw(st.sampled_from(KERNEL_VALUES), label="values"),
                seed=draw(st.integers(0, 2**16 - 1), label="seed"))


def grid(variant: str, dtype: str = "float32", *, max_numel: int = MAX_NUMEL, many_rows: bool = False,
         options: dict | None = None, parameter_dtypes: tuple[str | None, ...] = (None,),
         training: bool | None = None, affine: bool | None = None) -> tuple[Case, ...]:
    """The deterministic kernel-scale cases, smallest first: every hidden size (3 rows), every row
    count (hidden 1023), every memory layout and rank (hidden 4097, 65 rows), each parameter dtype."""
    record = variants.get(variant)
    mode = training if training is not None else True
    # past 2^20 elements (an offset that wraps there): 2049 x 1023 and 15 x 131073 fill the budget
    plans = [(3, h, 2, "contiguous") for h in HIDDEN] + [(15, HIDDEN[-1], 2, "contiguous")]
    # every row count, at hidden 1023 where the budget allows, else 127 (the smallest hidden size)
    for rows in (*ROWS, *((MANY_ROWS,) if many_rows else ())):
        plans.append((rows, 1023 if rows * 1023 <= max_numel else HIDDEN[0], 2, "contiguous"))
    plans += [(65, 4097, rank, memory) for rank in (2, 3, 4) for memory in memories(shape_for(variant, 65, 4097, rank))]
    offsets = weight_offsets(record, True, options)
    built = []
    for turn, (rows, hidden, rank, memory) in enumerate(plans):
        shape = shape_for(variant, rows, hidden, rank)
        if math.prod(shape) > max_numel:
            continue
        if memory not in memories(shape):
            memory = "contiguous"
        kinds = parameter_dtype_choices(record, affine is not False, parameter_dtypes)
        built.append(Case(variant, shape, dtype, **_settings(record, shape, mode), eps=1e-5,
                          affine=affine if affine is not None else turn % 4 != 3,
                          weight_offset=offsets[turn % len(offsets)], parameter_dtype=kinds[turn % len(kinds)],
                          memory=memory, values=KERNEL_VALUES[turn % len(KERNEL_VALUES)], seed=(7919 * turn + 1) % 2**16))
    return tuple(sorted(dict.fromkeys(built), key=lambda case: math.prod(case.shape)))
