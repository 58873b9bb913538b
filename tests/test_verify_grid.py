"""The deterministic coverage grid (normspec.verify.cases.grid): the same cases in every process,
every size, setting, layout and value family it promises, only cases the strategy could have
drawn but for their size, within each check's case options, and run first by the battery."""
from __future__ import annotations

import hashlib
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from normspec.derive import variants
from normspec.derive.dtypes import DTYPES
from normspec.verify.cases import grid
from normspec.verify.cases.case import MEMORY_LAYOUTS, VALUE_KINDS
from normspec.verify.cases.strategies import (
    EPS_VALUES,
    MOMENTUM_VALUES,
    _eps_zero_defined,
    _memories,
    accepted_shape,
)
from normspec.verify.checks import CHECKS
from normspec.verify.implementations.base import Implementation
from normspec.verify.running.battery import FAILED, PASSED, run_check
from normspec.verify.implementations.builtin import builtin
from tests.bug_zoo.size_bugs import layer_norm_power_of_two_wide_rows

ROOT = Path(__file__).resolve().parent.parent


def _grid(variant: str, dtype: str, check: str):
    c = CHECKS[check]
    return grid.cases(variant, dtype, sweep=c.kind == "oracle", **c.case_options)


def _applicable():
    for check in CHECKS.values():
        for variant in check.variants:
            for dtype in check.dtypes:
                yield variant, dtype, check


def _digest() -> str:
    h = hashlib.sha256()
    for variant, dtype, check in _applicable():
        for case in _grid(variant, dtype, check.name):
            h.update(case.to_json().encode())
    return h.hexdigest()


# --- deterministic -----------------------------------------------------------------------------

def test_same_list_twice():
    for variant, dtype, check in _applicable():
        first = _grid(variant, dtype, check.name)
        grid._plan.cache_clear()
        assert _grid(variant, dtype, check.name) == first


def test_same_grid_in_other_processes_and_hash_seeds():
    code = (f"import sys; sys.path.insert(0, {str(ROOT)!r}); "
            "from tests.test_verify_grid import _digest; print(_digest())")
    here = _digest()
    for hash_seed in ("0", "12345"):
        env = dict(os.environ, PYTHONHASHSEED=hash_seed)
        run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, env=env,
                             timeout=300)
        assert run.returncode == 0, run.stderr[-2000:]
        assert run.stdout.strip().splitlines()[-1] == here


# --- covers every value of every dimension ---------------------------------------------------------

@pytest.mark.parametrize("variant", variants.NAMES)
def test_forward_sweeps_every_size(variant):
    sizes = {case.layout.group_size for case in _grid(variant, "float32", "forward")}
    assert {4095, 4096, 4097} <= sizes
    possible = set(grid.SIZES) - ({1} if variant == "instance_norm" else set())  # torch refuses N = 1 there
    assert possible <= sizes, sorted(possible - sizes)


@pytest.mark.parametrize("variant", variants.NAMES)
def test_thin_sweep_of_the_invariants(variant):
    check = next(c for c in CHECKS.values() if c.kind == "invariant" and variant in c.variants)
    cases = _grid(variant, "float64", check.name)
    sizes = {case.layout.group_size for case in cases}
    assert set(grid.THIN_SIZES) - {1} <= sizes
    assert len(cases) < len(_grid(variant, "float64", "forward"))


@pytest.mark.parametrize("variant", variants.NAMES)
@pytest.mark.parametrize("check", ["forward", "backward", "second_moment"])
def test_every_configuration_value_appears(variant, check):
    if variant not in CHECKS[check].variants:
        pytest.skip(f"{check} does not run on {variant}")
    cases = _grid(variant, "float32", check)
    record = variants.get(variant)
    assert {c.values for c in cases} == set(VALUE_KINDS)
    assert {c.memory for c in cases} == set(MEMORY_LAYOUTS)
    assert {c.affine for c in cases} == {True, False}
    assert {len(c.shape) for c in cases} == set(range(record.min_rank, 6))
    eps = {c.eps for c in cases}
    assert set(EPS_VALUES) <= eps | {0.0} and (record.default("eps") is not None or None in eps)
    if any(_eps_zero_defined(c, c.values) for c in cases):  # eps = 0 wherever the strategy would allow it
        assert 0.0 in eps
    groups = {c.layout.group_count for c in cases}
    rows = {groups for groups, _ in (grid.ROW_COUNTS if CHECKS[check].kind == "oracle" else grid.ROW_COUNTS[:1])}
    assert rows <= groups  # more rows than one block (65, 130), not a multiple of 4, 8, 16, 32
    assert any(c.shape[-1] % 4 and c.shape[-1] > 16 for c in cases)  # a long last dim, not a multiple of 4
    for setting in record.settings:
        seen = {getattr(c, setting.name) for c in cases}
        if setting.name == "normalized_ndim":
            assert seen == {1, 2, 3}
        elif setting.name == "num_groups":
            assert 1 in seen and any(c.num_groups == c.shape[1] > 1 for c in cases)
            assert any(1 < c.num_groups < c.shape[1] for c in cases)  # an inner divisor
        else:  # training: both, unless the check pins it
            pinned = CHECKS[check].case_options.get(setting.name)
            assert seen == ({pinned} if pinned is not None else set(setting.values(cases[0].shape)))
    if record.running is not None:
        batch = [c for c in cases if not c.given_statistics]
        if check != "second_moment" and record.running.eval_drawn:
            assert any(c.given_statistics for c in cases)
        assert {c.running for c in batch} == {True, False}
        assert {c.momentum for c in batch} == set(MOMENTUM_VALUES)


def test_rms_norm_grid_draws_the_default_eps():
    assert None in {c.eps for c in _grid("rms_norm", "float32", "forward")}


# --- within each check's case options; a case the strategy could have drawn ----------------------

def test_respects_case_options_and_is_valid():
    for variant, dtype, check in _applicable():
        options = check.case_options
        record = variants.get(variant)
        for case in _grid(variant, dtype, check.name):
            where = f"{variant}::{dtype}::{check.name}: {case.short()}"
            assert case.variant == variant and case.dtype == dtype, where
            numel = math.prod(case.shape)
            assert numel <= options.get("max_numel", grid.GRID_MAX_NUMEL), where
            assert case.values in options.get("value_kinds", VALUE_KINDS), where
            assert max(options.get("min_rank", 2), record.min_rank) <= len(case.shape) <= 5, where
            if options.get("training") is not None and record.running is not None:
                assert case.training == options["training"], where
            if options.get("affine") is not None:
                assert case.affine == options["affine"], where
            layout = case.layout  # builds: the settings fit the shape
            assert accepted_shape(case) == case.shape, where
            for setting in record.settings:
                allowed = setting.values(case.shape)
                assert getattr(case, setting.name) in allowed, where
            assert case.memory in _memories(case.shape), where
            assert case.eps in EPS_VALUES or (case.eps is None and record.default("eps") is None), where
            if case.eps == 0:
                assert options.get("eps_zero", True) and _eps_zero_defined(case, case.values), where
            assert case.momentum in MOMENTUM_VALUES and 0 <= case.seed < 2**16, where
            if case.running:
                assert record.running is not None and not case.given_statistics, where
            assert layout.group_size * layout.group_count == numel, where


def test_expensive_checks_keep_their_budgets():
    for name in ("mpmath", "finite_differences", "deterministic"):
        budget = CHECKS[name].case_options["max_numel"]
        for variant in CHECKS[name].variants:
            cases = _grid(variant, "float64", name)
            assert cases and max(math.prod(c.shape) for c in cases) <= budget
            assert len(cases) <= 16


@pytest.mark.parametrize("variant", variants.NAMES)
def test_every_case_builds_its_arrays_and_layout(variant):
    for dtype in DTYPES:
        for case in _grid(variant, dtype, "forward"):
            arrays = case.arrays()
            assert arrays["x"].shape == case.shape
            x = case.torch_tensor(arrays["x"], memory=True)
            assert tuple(x.shape) == case.shape
            if case.memory == "noncontiguous" and case.shape[-1] > 1:
                assert not x.is_contiguous()
            elif case.memory == "channels_last":
                fmt = torch.channels_last if len(case.shape) == 4 else torch.channels_last_3d
                assert x.is_contiguous(memory_format=fmt)


def test_sorted_by_size():
    cases = _grid("layer_norm", "float64", "forward")
    sizes = [math.prod(c.shape) for c in cases]
    assert sizes == sorted(sizes) and len(set(cases)) == len(cases)


# --- run first by the battery ------------------------------------------------------------------------

def test_the_battery_runs_the_grid_before_the_search():
    report = run_check(builtin("numpy_ref"), CHECKS["forward"], "layer_norm", "float64")
    assert report.status == PASSED
    assert report.examples >= len(_grid("layer_norm", "float64", "forward"))


def test_a_failing_grid_case_is_the_reported_case():
    """A bug only on power-of-two rows of 1024 or more: hypothesis' small shapes never reach it,
    the grid does, and its first failing case (in the grid's order) is reported, unshrunk."""
    impl = Implementation("wide_rows", {"layer_norm": layer_norm_power_of_two_wide_rows})
    report = run_check(impl, CHECKS["forward"], "layer_norm", "float64")
    assert report.status == FAILED and report.case is not None
    cases = _grid("layer_norm", "float64", "forward")
    assert report.case in cases
    n = report.case.layout.group_size
    assert n >= 1024 and n & (n - 1) == 0
    assert report.examples == cases.index(report.case) + 1  # the grid stopped there; nothing was shrunk
