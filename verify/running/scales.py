"""The battery's scales: which cases a search draws, and which checks run at that size.

``small`` is the battery as it always was (``verify.cases.strategies`` and ``verify.cases.grid``);
``kernel`` draws kernel-scale cases (``verify.cases.kernel``) for the checks of
``kernel.CHECKS``; ``huge`` adds cases of more than 2^31 elements, run only where the memory they
need is there (:func:`huge_memory`), and refused with what they need and what there is otherwise.
"""
from __future__ import annotations

import os

from hypothesis import settings

from normspec.derive import dtypes
from normspec.verify.cases import grid as small_grid
from normspec.verify.cases import kernel, strategies
from normspec.verify.cases.case import Case

SCALES = kernel.SCALES

KERNEL_EXAMPLES = 8  # hypothesis examples per kernel-scale search (after its grid): each is 10^5..10^6 elements
HUGE_ROWS, HUGE_HIDDEN = 32769, 65537  # 2,147,581,953 elements: just past 2^31
TRUTH_ARRAYS = 12  # float64 arrays of x's size the truth and the comparisons hold at once (measured: x, g,
#                    the autograd graph of the plain definition, y, dx, the errors)


def check_scale(scale: object) -> str:
    return kernel.check_scale(scale)


def skip(check: str, scale: str, variant: str, dtype: str) -> str | None:
    """Why ``check`` does not run at ``scale`` (None: it does)."""
    if scale == "small":
        return None
    if check not in kernel.CHECKS:
        return f"small shapes only (the {scale} tier runs {', '.join(kernel.CHECKS)})"
    if scale == "huge":
        return huge_refusal(variant, dtype)
    return None


def huge_memory(dtype: str) -> int:
    """Bytes a huge case needs: x, grad_out, y and dx in ``dtype`` and the float64 truth."""
    elements = HUGE_ROWS * HUGE_HIDDEN
    return elements * (4 * dtypes.finfo(dtype).bits // 8 + TRUTH_ARRAYS * 8)


def available_memory() -> int:
    """Bytes of memory available to this process (MemAvailable; the page count where /proc has none)."""
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def huge_refusal(variant: str, dtype: str) -> str | None:
    need, have = huge_memory(dtype), available_memory()
    if need <= have:
        return None
    gib = 2.0**30
    return (f"the huge tier's case ({HUGE_ROWS} x {HUGE_HIDDEN} = {HUGE_ROWS * HUGE_HIDDEN} elements of {dtype}) "
            f"needs {need / gib:.0f} GiB (x, grad_out, y, dx and a float64 truth of {TRUTH_ARRAYS} arrays of x's "
            f"size); {have / gib:.1f} GiB is available here: not run")


def strategy(scale: str, variant: str, dtype: str, *, options: dict, parameter_dtypes: tuple, case_options: dict):
    if scale == "small":
        return strategies.cases(variant, dtype, options=options, parameter_dtypes=parameter_dtypes, **case_options)
    return kernel.cases(variant, dtype, options=options, parameter_dtypes=parameter_dtypes,
                        many_rows=scale == "huge", max_numel=_max_numel(scale), **_kernel_options(case_options))


def grid(scale: str, variant: str, dtype: str, *, sweep: bool, options: dict, parameter_dtypes: tuple,
         case_options: dict) -> tuple[Case, ...]:
    if scale == "small":
        return small_grid.cases(variant, dtype, sweep=sweep, options=options, parameter_dtypes=parameter_dtypes,
                                **case_options)
    cases = kernel.grid(variant, dtype, options=options, parameter_dtypes=parameter_dtypes,
                        many_rows=scale == "huge", max_numel=_max_numel(scale), **_kernel_options(case_options))
    if scale == "huge":
        shape = kernel.shape_for(variant, HUGE_ROWS, HUGE_HIDDEN, 2)
        cases = (*cases, Case(variant, shape, dtype, eps=1e-5))
    return cases


def hypothesis_settings(scale: str, chosen: settings) -> settings:
    """The profile's settings; at kernel scale at most KERNEL_EXAMPLES examples after the grid."""
    if scale == "small":
        return chosen
    return settings(chosen, max_examples=min(chosen.max_examples, KERNEL_EXAMPLES))


def _max_numel(scale: str) -> int:
    return kernel.MAX_NUMEL if scale == "kernel" else 4 * kernel.MAX_NUMEL


def _kernel_options(case_options: dict) -> dict:
    """The options a check's small-case constraints carry over to kernel scale (its mode, affine)."""
    return {k: v for k, v in case_options.items() if k in ("training", "affine")}
