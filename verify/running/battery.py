"""The battery: every check, under hypothesis, on one implementation, and its report.

``run_battery(impl)`` runs each (variant, dtype, check) as one hypothesis search over
cases (``verify.strategies.cases``) and records, per check: status, the worst
comparison, the examples tried, and, on failure, the minimal case with a one-line
reproduction. Known deviations of an implementation are named and explained in
``normspec.verify.running.deviations`` and reported as expected failures; they never loosen a
check for anyone else.
"""
from __future__ import annotations

import hashlib
import time
import traceback
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

import numpy as np
from hypothesis import given, settings
from hypothesis import seed as hypothesis_seed
from hypothesis.errors import Flaky, Unsatisfiable

from normspec.derive.variants import NAMES as VARIANT_NAMES

from normspec.verify.running import deviations
from normspec.verify.cases import strategies
from normspec.derive.dtypes import DTYPES
from normspec.verify.cases.case import Case
from normspec.verify.checks import CHECKS, Check, effective_case
from normspec.verify.implementations.base import FATAL_ERRORS, Implementation
from normspec.verify.implementations.builtin import BUILTIN
from normspec.verify.running.profiles import current_settings, import_independent_draws
from normspec.verify.truth.tolerance import Comparison

PASSED, FAILED, EXPECTED, SKIPPED = "passed", "failed", "expected failure", "skipped"


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
    drawn: Any = field(default_factory=hashlib.sha256, repr=False)  # every case tried, in order

    @property
    def examples_digest(self) -> str:
        """A digest of the cases tried, in order: equal digests mean the same examples ran."""
        return self.drawn.hexdigest()[:16]

    @property
    def id(self) -> str:
        """Stable identifier: implementation-independent, so expectation files keep working."""
        return f"{self.variant}::{self.dtype}::{self.check}"

    def reproduction(self) -> str:
        """One line that replays the minimal case: a shell command for the built-in
        implementations, a Python call for one passed in as an object."""
        if self.case is None:
            return ""
        if self.implementation in BUILTIN or ":" in self.implementation:
            variant = f" --variant {self.variant}" if ":" in self.implementation else ""
            return (f"normspec verify --impl {self.implementation}{variant} --check {self.check} "
                    f"--case '{self.case.to_json()}'")
        return (f"normspec.verify.running.battery.check_case(impl, {self.check!r}, "
                f"normspec.verify.cases.case.Case.from_json('{self.case.to_json()}'))")


class CheckFailed(AssertionError):
    pass


def run_check(impl: Implementation, check: Check, variant: str, dtype: str, *,
              hypothesis_settings: settings | None = None, expected_failures: set[str] | frozenset = frozenset(),
              seed: int | None = None) -> CheckReport:
    """One hypothesis search for a counterexample to ``check`` on ``impl``."""
    report = CheckReport(impl.name, variant, dtype, check.name, PASSED)
    reason = check.skip(impl, variant, dtype)
    if reason:
        report.status, report.reason = SKIPPED, reason
        return report
    start = time.perf_counter()
    state: dict = {}

    @hypothesis_settings or current_settings(seeded=seed is not None)
    @given(strategies.cases(variant, dtype, **check.case_options))
    def search(case: Case) -> None:
        if state.get("fatal"):  # a hang or a crash: shrinking would repeat it for every example
            raise CheckFailed(state["message"])
        report.examples += 1
        report.drawn.update(case.to_json().encode())
        effective_case.set(None)
        try:
            comparisons = check.run(impl, case)
        except Exception as error:  # the implementation (or the case) raised: a failure, reported
            state.update(case=effective_case.get() or case, message=f"raised {type(error).__name__}: {error}",
                         trace=traceback.format_exc(limit=-3), fatal=isinstance(error, FATAL_ERRORS))
            raise CheckFailed(state["message"]) from error
        for comparison in comparisons:
            report.max_ulp = max(report.max_ulp, comparison.max_ulp)
            if report.worst is None or comparison.worst_ratio > report.worst.worst_ratio:
                report.worst = comparison
        bad = [c for c in comparisons if not c.ok]
        if bad:
            state.update(case=effective_case.get() or case, message="; ".join(c.line() for c in bad), worst=bad[0])
            raise CheckFailed(state["message"])

    if seed is not None:
        search = hypothesis_seed(seed)(search)
    try:
        with np.errstate(all="ignore"), import_independent_draws():  # NaN/inf: what comparisons report
            search()
    except (CheckFailed, Flaky):  # Flaky: a fatal failure replayed from the record, not re-run
        report.status, report.case, report.reason = FAILED, state.get("case"), state.get("message", "")
        report.worst = state.get("worst", report.worst)
    except Unsatisfiable as error:
        report.status, report.reason = SKIPPED, f"no valid case could be drawn: {error}"
    report.seconds = time.perf_counter() - start
    deviation = deviations.lookup(impl.name, report.id, report.case)
    if report.id in expected_failures:
        deviation = "listed in the expected failures"
    if deviation and report.status == FAILED:
        report.status, report.reason = EXPECTED, f"{deviation} (observed: {report.reason})"
    return report


@dataclass
class BatteryReport:
    implementation: str
    reports: list[CheckReport] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def failed(self) -> list[CheckReport]:
        return [r for r in self.reports if r.status == FAILED]

    def by_status(self, status: str) -> list[CheckReport]:
        return [r for r in self.reports if r.status == status]

    def stale_expectations(self, expected_failures: set[str] | frozenset = frozenset()) -> list[str]:
        """Known deviations and listed expected failures whose check ran and passed."""
        listed = deviations.check_ids(self.implementation) | set(expected_failures)
        return sorted(r.id for r in self.reports if r.id in listed and r.status == PASSED)


def run_battery(impl: Implementation, *, variants: Iterable[str] = VARIANT_NAMES, dtypes: Iterable[str] = DTYPES,
                checks: Iterable[str] | None = None, hypothesis_settings: settings | None = None,
                progress: Callable[[CheckReport], None] | None = None,
                expected_failures: set[str] | frozenset = frozenset(), seed: int | None = None) -> BatteryReport:
    start = time.perf_counter()
    battery = BatteryReport(impl.name)
    selected = [CHECKS[name] for name in (checks or CHECKS)]
    for variant in variants:
        for dtype in dtypes:
            for check in selected:
                report = run_check(impl, check, variant, dtype, hypothesis_settings=hypothesis_settings,
                                   expected_failures=expected_failures, seed=seed)
                battery.reports.append(report)
                if progress:
                    progress(report)
    battery.seconds = time.perf_counter() - start
    return battery


def check_case(impl: Implementation, check_name: str, case: Case) -> list[Comparison]:
    """Run one check on one case (what a reproduction replays)."""
    return CHECKS[check_name].run(impl, case)
