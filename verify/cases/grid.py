"""The deterministic coverage grid: cases every search runs first, before hypothesis draws.

Kernels branch on size: a vectorised path when N % 8 == 0, a second reduction level past
one block of 256 or 1024 elements, a tail loop for the last N % 4 elements, a grid of row
blocks. A bug on such a branch is found by a random search only when it happens to draw
that size, so ``cases(variant, dtype, **case_options)`` lists, deterministically (no
randomness; every seed fixed):

- the **size sweep**: every group size N in :data:`SIZES` (1, 2, 3 and 2^k - 1, 2^k, 2^k + 1
  up to 4097), each with two or three groups at the smallest rank or one above (so the group
  spans other axes too: spatial ones, two normalized ones), combined with the cheap choices
  (contiguous or strided memory; every value kind, eps and setting value in turn);
- the **row counts** :data:`ROW_COUNTS` (65 and 130 groups: more than one block of rows,
  not a multiple of 4, 8, 16 or 32), with group sizes whose last dimension is odd;
- the **configuration cover**: small shapes (sides from the strategy's SIDES) at every rank,
  so that every value of every dimension appears at least once -- each setting of the
  variant's registry record (normalized_ndim 1..3, num_groups 1, an inner divisor and C,
  training and eval), running and momentum, every value kind, every eps the strategy allows
  (0 only where it allows it), affine on and off, every memory layout.

It is a covering design, not the cartesian product: a dimension takes its values in turn,
preferring one no earlier case of the grid has used. A check's ``case_options`` are the
strategy's (``min_rank``, ``max_rank``, ``value_kinds``, ``affine``, ``training``,
``eps_zero``, ``max_numel``), honoured the same way, so a grid case is always one the
strategy could have drawn but for its size: shapes pass ``accepted_shape`` unchanged and
eps comes from the strategy's own rule. The grid's size budget is its own,
:data:`GRID_MAX_NUMEL`, independent of the strategy's default ``max_numel`` (hypothesis keeps
its small shapes); a check that declares ``max_numel`` (an expensive one: mpmath, finite
differences, determinism) keeps it for the grid too and gets the thin sweep.

``sweep=False`` (the battery passes it for the invariants and identities, whose
counterparts in the oracles see any size bug of the output or dx) runs the thin sweep
:data:`THIN_SIZES` instead of every size. Cases come sorted by size, smallest first: the
first failing grid case is the smallest one that fails (explicit examples are not shrunk).
"""
from __future__ import annotations

import dataclasses
import functools
import itertools
import math
import zlib
from typing import Any, Iterable, Sequence

from normspec.derive import variants
from normspec.derive.errors import NormSpecError
from normspec.verify.cases.case import VALUE_KINDS, Case, parameter_choices, weight_offsets
from normspec.verify.cases.strategies import (
    EPS_VALUES,
    MOMENTUM_VALUES,
    _eps_zero_defined,
    _memories,
    _validate,
    accepted_shape,
    parameter_dtype_choices,
)

SIZES = tuple(sorted({1, 2, 3, *(2**k + d for k in range(2, 13) for d in (-1, 0, 1))}))  # ... 4095, 4096, 4097
THIN_SIZES = (1, 2, 3, 16, 17, 256, 257, 4096)  # the sweep of the invariants, identities and expensive checks
ROW_COUNTS = ((65, 17), (130, 33))  # (groups, group size): more rows than a block, none a multiple of 4
SWEEP_ROWS = (2, 3)  # groups per case in the size sweep, in turn (then whatever fits)
GRID_MAX_NUMEL = 16384  # the grid's own budget: 4097 x 3 fits; the strategy keeps its max_numel
# Small shapes for the configuration cover, by rank, first that fits the budget: sides from the
# strategy's SIDES; C = 4 has an inner divisor (num_groups 1, 2, 4); odd last dims.
CONFIG_SHAPES = {
    1: ((5,), (3,)),
    2: ((3, 4), (2, 4), (2, 3)),
    3: ((2, 4, 5), (2, 4, 3), (1, 4, 3)),
    4: ((2, 4, 3, 5), (2, 4, 3, 2), (1, 4, 2, 3), (1, 2, 2, 3)),
    5: ((2, 4, 3, 2, 3), (1, 4, 2, 2, 3), (1, 2, 1, 2, 3), (1, 1, 1, 2, 3)),
}


def cases(variant: str, dtype: str = "float64", *, sweep: bool = True, min_rank: int = 2, max_rank: int = 5,
          max_numel: int | None = None, value_kinds: tuple[str, ...] | None = None, affine: bool | None = None,
          training: bool | None = None, eps_zero: bool = True, options: dict | None = None,
          parameter_dtypes: tuple[str | None, ...] = (None,)) -> tuple[Case, ...]:
    """The grid of ``variant`` in ``dtype`` under a check's case options (see the module docstring);
    ``options`` pins keyword options as for the strategy (else every weight offset in turn).

    ``max_numel=None``: the grid's own budget GRID_MAX_NUMEL and, with ``sweep``, every size of
    SIZES; a declared ``max_numel`` bounds every case and selects the thin sweep.
    """
    record = variants.get(variant)
    min_rank = max(min_rank, record.min_rank)
    max_rank = max(max_rank, min_rank)
    _validate(variant, min_rank, max_rank, max_numel or GRID_MAX_NUMEL)
    budget = max_numel or GRID_MAX_NUMEL
    sizes = SIZES if sweep and max_numel is None else THIN_SIZES
    rows = ROW_COUNTS if sweep and max_numel is None else ROW_COUNTS[:1]
    kinds = tuple(value_kinds or VALUE_KINDS)
    shapes = _plan(variant, min_rank, max_rank, budget, training, sizes, rows)
    cover = _Cover()
    built = [cover.complete(variant, dtype, shape, config, index, kinds=kinds, affine=affine, eps_zero=eps_zero,
                            options=options, parameter_dtypes=parameter_dtypes)
             for index, (shape, config) in enumerate(shapes)]
    unique = list(dict.fromkeys(built))
    return tuple(sorted(unique, key=lambda case: math.prod(case.shape)))  # stable: plan order among equals


# --- shapes and settings (independent of the dtype and the per-case choices: computed once) ---------

Config = tuple[tuple[str, Any], ...]


@functools.lru_cache(maxsize=None)
def _plan(variant: str, min_rank: int, max_rank: int, budget: int, training: bool | None,
          sizes: tuple[int, ...], rows: tuple[tuple[int, int], ...]) -> tuple[tuple[tuple[int, ...], Config], ...]:
    """(shape, settings) of every grid case: the configuration cover, the size sweep, the row counts."""
    used: dict[str, set] = {}
    plan = list(_configuration_shapes(variant, min_rank, max_rank, budget, training, used))
    for index, n in enumerate(sizes):
        preferred = SWEEP_ROWS[index % 2:] + SWEEP_ROWS[:index % 2]
        for groups in (*preferred, 1, 4, 6):
            found = n * groups <= budget and _shape_for(variant, n, groups, min_rank, max_rank, training, used, index)
            if found:
                plan.append(found)
                break
    for index, (groups, n) in enumerate(rows):
        found = n * groups <= budget and _shape_for(variant, n, groups, min_rank, max_rank, training, used, index)
        if found:
            plan.append(found)
    return tuple(plan)


def _setting_choices(variant: str, shape: tuple[int, ...], training: bool | None) -> list[dict]:
    """Every combination of the record's settings for ``shape`` (``training`` pinned if given)
    whose case is valid and keeps its shape under ``accepted_shape``, in the settings' order."""
    record = variants.get(variant)
    axes = []
    for setting in record.settings:
        values = setting.values(shape)
        if setting.name == "training" and training is not None:
            values = (training,)
        axes.append([(setting.name, value) for value in values])
    valid = []
    for combination in itertools.product(*axes):
        config = dict(combination)
        if _valid(Case(variant, shape, **config)):
            valid.append(config)
    return valid


def _valid(case: Case) -> bool:
    try:
        case.layout
        return accepted_shape(case) == case.shape
    except NormSpecError:
        return False


def _prefer_unused(options: Sequence[dict], used: dict[str, set], turn: int) -> dict:
    """The first option with a setting value no earlier case used; otherwise the ``turn``-th."""
    for option in options:
        if any(value not in used.get(name, set()) for name, value in option.items()):
            chosen = option
            break
    else:
        chosen = options[turn % len(options)]
    for name, value in chosen.items():
        used.setdefault(name, set()).add(value)
    return chosen


def _configuration_shapes(variant: str, min_rank: int, max_rank: int, budget: int, training: bool | None,
                          used: dict[str, set]) -> Iterable[tuple[tuple[int, ...], Config]]:
    """Small shapes at every rank, each setting value in turn, until every setting value of
    those shapes has appeared (at least one case per rank, and as many cases as value kinds)."""
    per_rank = []
    for rank in range(min_rank, max_rank + 1):
        for shape in CONFIG_SHAPES[rank]:
            options = _setting_choices(variant, shape, training) if math.prod(shape) <= budget else []
            if options:
                per_rank.append((shape, options))
                break
    if not per_rank:
        return
    wanted = {(name, value) for _, options in per_rank for option in options for name, value in option.items()}
    turn = 0
    while turn < max(len(VALUE_KINDS), len(per_rank)) or (
            not wanted <= {(n, v) for n, vs in used.items() for v in vs} and turn < 4 * len(VALUE_KINDS)):
        shape, options = per_rank[turn % len(per_rank)]
        yield shape, tuple(sorted(_prefer_unused(options, used, turn).items()))
        turn += 1


def _shape_for(variant: str, n: int, groups: int, min_rank: int, max_rank: int, training: bool | None,
               used: dict[str, set], turn: int) -> tuple[tuple[int, ...], Config] | None:
    """A shape (and settings) whose groups have exactly ``n`` elements and whose call has exactly
    ``groups`` groups, or None where the variant has none: at the smallest rank on even turns, one
    rank up on odd ones (the group then spans other axes: spatial ones, two normalized ones)."""
    sides = sorted({1, 2, 3, n, 2 * n, 3 * n, groups, 2 * groups, 3 * groups})
    ranks = list(range(min_rank, max_rank + 1))
    if turn % 2 and len(ranks) > 1:
        ranks = [ranks[1], ranks[0], *ranks[2:]]
    for rank in ranks:
        matches = []
        for shape in _factorizations(n * groups, rank, sides):
            for config in _setting_choices(variant, shape, training):
                layout = Case(variant, shape, **config).layout
                if layout.group_size == n and layout.group_count == groups:
                    matches.append((shape, config))
        if matches:
            chosen = _prefer_unused([config for _, config in matches], used, turn)
            shape = next(shape for shape, config in matches if config is chosen)
            return shape, tuple(sorted(chosen.items()))
    return None


def _factorizations(total: int, rank: int, sides: Sequence[int]) -> Iterable[tuple[int, ...]]:
    """Shapes of ``rank`` axes, sides from ``sides``, with ``total`` elements (in order)."""
    if rank == 1:
        if total in sides:
            yield (total,)
        return
    for side in sides:
        if total % side == 0:
            for rest in _factorizations(total // side, rank - 1, sides):
                yield (side, *rest)


# --- the per-case choices: value kind, eps, affine, memory, running statistics, seed ----------------

class _Cover:
    """Chooses each remaining dimension of a case, preferring a value no earlier case has used,
    otherwise taking the values in turn."""

    def __init__(self):
        self.used: dict[str, set] = {}

    def pick(self, dimension: str, options: Sequence, turn: int):
        seen = self.used.setdefault(dimension, set())
        # in turn, but each dimension in its own fixed order, so that no two dimensions move together
        chosen = next((o for o in options if o not in seen), None)
        if chosen is None:
            chosen = options[zlib.crc32(f"{dimension}:{turn}".encode()) % len(options)]
        seen.add(chosen)
        return chosen

    def complete(self, variant: str, dtype: str, shape: tuple[int, ...], config: Config, turn: int, *,
                 kinds: tuple[str, ...], affine: bool | None, eps_zero: bool, options: dict | None = None,
                 parameter_dtypes: tuple[str | None, ...] = (None,)) -> Case:
        record = variants.get(variant)
        settings = dict(config)
        probe = Case(variant, shape, dtype, **settings)
        if record.running is not None and not probe.given_statistics:
            settings["running"] = self.pick("running", (False, True), turn)
            settings["momentum"] = self.pick("momentum", MOMENTUM_VALUES, turn)
        values = self.pick("values", kinds, turn)
        eps_choices: list = [e for e in EPS_VALUES if e > 0 or (eps_zero and _eps_zero_defined(probe, values))]
        if record.default("eps") is None:
            eps_choices.append(None)
        affine = self.pick("affine", (True, False), turn) if affine is None else affine
        weight, bias = self.pick("parameters", parameter_choices(record), turn) if affine else (True, True)
        offset = self.pick("weight_offset", weight_offsets(record, affine and weight, options), turn)
        parameter_dtype = self.pick("parameter_dtype", parameter_dtype_choices(record, affine, parameter_dtypes), turn)
        return dataclasses.replace(
            probe, **settings,
            values=values,
            eps=self.pick("eps", eps_choices, turn),
            affine=affine, weight=weight, bias=bias, weight_offset=offset, parameter_dtype=parameter_dtype,
            memory=self.pick("memory", _memories(shape), turn),
            seed=(7919 * turn + 1) % 2**16,
        )
