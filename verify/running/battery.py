"""The battery: every check, under hypothesis, on one implementation, and its report.

``run_battery(impl)`` runs each (variant, dtype, check) as one hypothesis search over
cases (``verify.strategies.cases``) and records, per check: status, the worst
comparison, the examples tried, and, on failure, the minimal case with a one-line
reproduction. Known deviations of an implementation are named and explained in
``normspec.verify.running.deviations`` and reported as expected failures; they never loosen a
check for anyone else.
"""
from __future__ import annotations

import dataclasses
import hashlib
import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Mapping

import numpy as np
from hypothesis import given, settings
from hypothesis import seed as hypothesis_seed
from hypothesis import example as hypothesis_example
from hypothesis.errors import Flaky, Unsatisfiable

from normspec.derive.variants import NAMES as VARIANT_NAMES

from normspec.verify.running import deviations
from normspec.verify.running import scales as scaled
from normspec.derive.dtypes import DTYPES
from normspec.verify.cases.case import Case
from normspec.verify.checks import CHECKS, Check, effective_case
from normspec.verify.checks.oracle_checks import check_calls, repeated_calls
from normspec.verify.implementations.base import FATAL_ERRORS, Implementation, RunResult
from normspec.verify.implementations.guard import ImplementationRaised, describe_error, user_interrupts
from normspec.verify.implementations.builtin import BUILTIN
from normspec.verify.running.profiles import current_settings, hypothesis_files_in_cache, import_independent_draws
from normspec.verify.running.expected_failures import ExpectedFailure
from normspec.verify.truth.tolerance import Comparison, working_range

PASSED, FAILED, EXPECTED, SKIPPED = "passed", "failed", "expected failure", "skipped"
RANGE_LIMIT = "range limit"  # right in the working range, wrong only beyond it: fails only when strict


@dataclass
class CheckReport:
    implementation: str
    variant: str
    dtype: str
    check: str
    status: str
    examples: int = 0
    worst: Comparison | None = None
    reason: str = ""  # skip reason, failure message, or the deviation's explanation
    case: Case | None = None  # the minimal failing case
    seconds: float = 0.0
    max_ulp: float = 0.0  # over every comparison of every example
    repro_path: str | None = None  # the reproduction file written for a failure, if any
    examples_digest: str = ""  # a digest of the cases tried, in order: equal digests, the same examples ran
    nondeterministic: bool = False  # the implementation disagreed with itself on the minimal case
    importable: bool = False  # the implementation was loaded by import path (the CLI can replay it)

    @property
    def id(self) -> str:
        """Stable identifier: implementation-independent, so expectation files keep working."""
        return f"{self.variant}::{self.dtype}::{self.check}"

    def reproduction(self) -> str:
        """One line that replays the minimal case: a shell command for the built-in
        implementations and import paths, a Python call (``normspec.replay_case``, with the
        implementation's name, which is the function's in the caller's namespace) for one
        passed in as an object."""
        if self.case is None:
            return ""
        if self.implementation in BUILTIN or self.importable:
            variant = "" if self.implementation in BUILTIN else f" --variant {self.variant}"
            return (f"normspec verify --impl {self.implementation}{variant} --check {self.check} "
                    f"--case '{self.case.to_json()}'")
        return f"normspec.replay_case({self.implementation}, {self.check!r}, '{self.case.to_json()}')"


class CheckFailed(AssertionError):
    pass


REPLAYS = 8  # calls of a failing check's minimal case that must agree bit for bit


def self_disagreement(impl: Implementation, case: Case) -> int:
    """How many of REPLAYS calls on ``case`` differ from the first (an error counts as differing
    when the first call did not raise, and the other way round)."""
    def call():
        try:
            return impl.run(case, case.arrays())
        except FATAL_ERRORS:
            raise
        except Exception as error:  # noqa: BLE001 - compared like a result
            return describe_error(error)

    try:
        first = call()
        results = [call() for _ in range(REPLAYS - 1)]
    except FATAL_ERRORS:
        return 0
    same = [r.same_as(first) if isinstance(r, RunResult) and isinstance(first, RunResult) else r == first
            for r in results]
    return same.count(False)


def _working_range(impl: Implementation, case: Case) -> float:
    """The working range of the case's dtype, in the compute dtype the implementation declares."""
    return working_range(case.dtype, case.layout.group_size,
                         compute=impl.conventions.compute_dtype_of(case.dtype))


def _tolerated(impl: Implementation, check_id: str, case: Case, ratio: float,
               expected_failures: Mapping[str, ExpectedFailure]) -> tuple[str, str] | None:
    """(status, why) when a failure on ``case`` is not a bug: a known deviation of a built-in
    implementation, within the bounds of a listed expected failure, or beyond the dtype's working
    range (a range limit). None: a bug. Deviations and listed failures come first: their causes do
    not depend on the magnitude, and a range limit is re-examined inside the range (``_onset``)."""
    expected = _expected(impl, check_id, case, ratio, expected_failures)
    if expected:
        return EXPECTED, expected
    magnitude = float(np.max(np.abs(case.arrays()["x"])))
    limit = _working_range(impl, case)
    if magnitude > limit:
        return RANGE_LIMIT, f"beyond {case.dtype}'s working range (|x| <= {limit:.2g}): |x| = {magnitude:.2g}"
    return None


def _expected_status(impl: Implementation, check_id: str, case: Case, ratio: float,
                     expected_failures: Mapping[str, ExpectedFailure]) -> tuple[str, str] | None:
    expected = _expected(impl, check_id, case, ratio, expected_failures)
    return (EXPECTED, expected) if expected else None


def _expected(impl: Implementation, check_id: str, case: Case, ratio: float,
              expected_failures: Mapping[str, ExpectedFailure]) -> str | None:
    """Why a failure on ``case`` is expected (a known deviation, a listed entry), or None."""
    deviation = deviations.lookup(impl.name, check_id, case)
    if deviation:
        return deviation
    listed = expected_failures.get(check_id)
    if listed is not None and listed.covers(case.values, ratio):
        return f"listed in the expected failures ({listed})"
    return None


def run_check(impl: Implementation, check: Check, variant: str, dtype: str, *,
              hypothesis_settings: settings | None = None,
              expected_failures: Mapping[str, ExpectedFailure] | Iterable[str] = (),
              seed: int | None = None, coverage_grid: bool = True, scale: str = "small",
              calls: int | None = None) -> CheckReport:
    """One hypothesis search for a counterexample to ``check`` on ``impl``, after the deterministic
    coverage grid (``coverage_grid=False``: the search alone, for a run that repeats a grid
    another run has covered, e.g. the same battery under another seed).

    A failure that is not a bug (see :func:`_tolerated`) is recorded and the search goes on,
    so a range limit or a known deviation never hides a bug of the same check; the first
    bug stops the search and is shrunk to a minimal case. ``scale``: 'small' (the battery's shapes),
    'kernel' (``verify.cases.kernel``: hidden sizes to 131073, views, many rows) or 'huge' (more than
    2^31 elements, run only where the memory it needs is there). ``calls``: how many identical
    calls the deterministic check compares (default REPEATED_CALLS).
    """
    scaled.check_scale(scale)
    check_calls(calls)  # before any example runs: a bad value is the caller's, not the implementation's
    if not isinstance(expected_failures, Mapping):
        expected_failures = {i: ExpectedFailure(i) for i in expected_failures}
    report = CheckReport(impl.name, variant, dtype, check.name, PASSED, importable="impl" in impl.source)
    reason = check.skip(impl, variant, dtype) or scaled.skip(check.name, scale, variant, dtype)
    if reason:
        report.status, report.reason = SKIPPED, reason
        return report
    start = time.perf_counter()
    state: dict = {}
    drawn = hashlib.sha256()  # every case tried, in order

    def failure(case: Case, message: str, ratio: float, worst: Comparison | None = None, limit: str = "") -> None:
        tolerated = (_expected_status(impl, report.id, case, ratio, expected_failures)
                     or ((RANGE_LIMIT, f"range limit of the method: {limit}") if limit else None)
                     or _tolerated(impl, report.id, case, ratio, expected_failures))
        if tolerated is not None:
            state.setdefault(tolerated[0], (case, f"{tolerated[1]} (observed: {message})", worst))
            return
        state.update(case=case, message=message, worst=worst)
        raise CheckFailed(message)

    pinned = impl.pinned_options(variant) if variant in impl.functions else {}
    parameter_dtypes = impl.parameter_dtypes(dtype)

    drawing = scaled.strategy(scale, variant, dtype, options=pinned, parameter_dtypes=parameter_dtypes,
                              case_options=check.case_options)
    chosen = scaled.hypothesis_settings(scale, hypothesis_settings or current_settings(seeded=seed is not None))

    @chosen
    @given(drawing)
    def search(case: Case) -> None:
        if state.get("fatal"):  # a hang or a crash: shrinking would repeat it for every example
            raise CheckFailed(state["message"])
        report.examples += 1
        drawn.update(case.to_json().encode())
        effective_case.set(None)
        try:
            with repeated_calls(calls):
                comparisons = check.run(impl, case)
        except FATAL_ERRORS as error:
            state.update(case=effective_case.get() or case, message=_raised(error), fatal=True)
            raise CheckFailed(state["message"]) from error
        except Exception as error:  # the implementation (or the case) raised: a failure, reported
            failure(effective_case.get() or case, _raised(error), math.inf)
            return
        for comparison in comparisons:
            report.max_ulp = max(report.max_ulp, comparison.max_ulp)
            if report.worst is None or comparison.worst_ratio > report.worst.worst_ratio:
                report.worst = comparison
        bad = [c for c in comparisons if not c.ok]
        if bad:
            limits = [c.limit for c in bad]
            failure(effective_case.get() or case, "; ".join(c.line() for c in bad),
                    max(c.worst_ratio for c in bad), bad[0], limit="; ".join(limits) if all(limits) else "")

    if seed is not None:
        search = hypothesis_seed(seed)(search)
    # the deterministic coverage grid runs first, in its order (explicit examples: never shrunk)
    grid_cases = scaled.grid(scale, variant, dtype, sweep=check.kind == "oracle", options=pinned,
                             parameter_dtypes=parameter_dtypes, case_options=check.case_options) if coverage_grid else ()
    for grid_case in reversed(grid_cases):
        search = hypothesis_example(grid_case)(search)
    try:
        # NaN and inf are what comparisons report, not NumPy warnings
        with np.errstate(all="ignore"), import_independent_draws(), hypothesis_files_in_cache():
            search()
    except (CheckFailed, Flaky):  # Flaky: a fatal failure replayed from the record, not re-run
        report.status, report.case, report.reason = FAILED, state.get("case"), state.get("message", "")
        report.worst = state.get("worst") or report.worst
    except Unsatisfiable as error:
        report.status, report.reason = SKIPPED, f"no valid case could be drawn: {error}"
    if report.status == FAILED and report.case is not None and not state.get("fatal"):
        differing = self_disagreement(impl, report.case)
        if differing:
            report.nondeterministic = True
            report.reason = (f"nondeterministic: {differing} of {REPLAYS} calls on the minimal case differ from "
                             f"the first, so no property of {check.name} is blamed (the failure seen: "
                             f"{report.reason})")
    for status in (RANGE_LIMIT, EXPECTED):
        if report.status == PASSED and status in state:
            report.case, report.reason, worst = state[status]
            report.status, report.worst = status, worst or report.worst
    if report.status == RANGE_LIMIT and not report.reason.startswith("range limit of the method"):
        _onset(impl, check, report, expected_failures)
    report.seconds = time.perf_counter() - start
    report.examples_digest = drawn.hexdigest()[:16]
    return report


def _raised(error: Exception) -> str:
    """A failure's message for what a call raised (the guard's own errors already say it)."""
    if isinstance(error, ImplementationRaised):
        return str(error)
    return f"raised {describe_error(error)}"


def _onset(impl: Implementation, check: Check, report: CheckReport,
           expected_failures: Mapping[str, ExpectedFailure]) -> None:
    """Where a range limit starts: the case scaled down a decade at a time until the check passes.
    A case that still fails inside the working range is a bug after all, unless that failure is
    an expected one (a known deviation, a listed entry)."""
    case = report.case
    limit = _working_range(impl, case)
    magnitude = float(np.max(np.abs(case.arrays()["x"])))
    failing = magnitude
    while magnitude > limit / 10:
        scaled = dataclasses.replace(case, scale=case.scale * 0.1)
        magnitude = float(np.max(np.abs(scaled.arrays()["x"])))
        try:
            ok = all(c.ok for c in check.run(impl, scaled))
        except FATAL_ERRORS:
            return
        except Exception:  # noqa: BLE001 - a raise is a failure here too
            ok = False
        if ok:
            report.reason = (f"range limit: correct up to |x| = {magnitude:.2g} in {case.dtype}, fails from "
                             f"|x| = {failing:.2g} (its working range ends at {limit:.2g}); {report.reason}")
            return
        if magnitude <= limit:
            expected = _expected(impl, report.id, scaled, math.inf, expected_failures)
            report.status, report.case = (EXPECTED if expected else FAILED), scaled
            report.reason = (f"fails inside {case.dtype}'s working range too, at |x| = {magnitude:.2g}"
                             + (f", as expected: {expected}" if expected else "")
                             + f" (first seen beyond it: {report.reason})")
            return
        case, failing = scaled, magnitude
    report.reason = f"range limit: fails from |x| = {failing:.2g} (working range ends at {limit:.2g}); {report.reason}"


@dataclass
class BatteryReport:
    implementation: str
    reports: list[CheckReport] = field(default_factory=list)
    seconds: float = 0.0
    interrupted: bool = False  # the user interrupted the run: the checks after the last report did not run
    notes: list[str] = field(default_factory=list)  # how the run went (a worker restarted, ...), printed

    @property
    def failed(self) -> list[CheckReport]:
        return [r for r in self.reports if r.status == FAILED]

    def by_status(self, status: str) -> list[CheckReport]:
        return [r for r in self.reports if r.status == status]

    def stale_expectations(self, expected_failures: Iterable[str] = ()) -> list[str]:
        """Known deviations and listed expected failures whose check ran and passed."""
        listed = deviations.check_ids(self.implementation) | set(expected_failures)
        return sorted(r.id for r in self.reports if r.id in listed and r.status == PASSED)


def plan(variants: Iterable[str] = VARIANT_NAMES, dtypes: Iterable[str] = DTYPES,
         checks: Iterable[str] | None = None) -> list[tuple[str, str, str]]:
    """The (variant, dtype, check) searches of a battery, in the order they run."""
    return [(variant, dtype, check) for variant in variants for dtype in dtypes for check in (checks or CHECKS)]


def run_battery(impl: Implementation, *, variants: Iterable[str] = VARIANT_NAMES, dtypes: Iterable[str] = DTYPES,
                checks: Iterable[str] | None = None, hypothesis_settings: settings | None = None,
                progress: Callable[[CheckReport], None] | None = None,
                expected_failures: Mapping[str, ExpectedFailure] | Iterable[str] = (),
                seed: int | None = None, coverage_grid: bool = True, scale: str = "small",
                calls: int | None = None) -> BatteryReport:
    """Every search of :func:`plan`, in this process. An interrupt by the user (Ctrl-C) ends the
    run early with the reports so far (``interrupted``); ``coverage_grid``, ``scale`` and ``calls`` as
    for :func:`run_check`."""
    start = time.perf_counter()
    battery = BatteryReport(impl.name)
    try:
        with user_interrupts():
            for variant, dtype, check in plan(variants, dtypes, checks):
                report = run_check(impl, CHECKS[check], variant, dtype, hypothesis_settings=hypothesis_settings,
                                   expected_failures=expected_failures, seed=seed, coverage_grid=coverage_grid,
                                   scale=scale, calls=calls)
                battery.reports.append(report)
                if progress:
                    progress(report)
    except KeyboardInterrupt:
        battery.interrupted = True
    battery.seconds = time.perf_counter() - start
    return battery


def check_case(impl: Implementation, check_name: str, case: Case) -> list[Comparison]:
    """Run one check on one case (what a reproduction replays)."""
    return CHECKS[check_name].run(impl, case)
