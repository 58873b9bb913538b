"""Printing a battery's results: one table per implementation, then the failures.

Rows are (variant, check), columns the dtypes; a cell shows the status, the worst
error as a fraction of its tolerance (<= 1 passes) and the examples tried.
"""
from __future__ import annotations

from rich.console import Console
from rich.table import Table

from verify.battery import EXPECTED, FAILED, PASSED, SKIPPED, BatteryReport, CheckReport
from verify.case import DTYPES

_MARK = {PASSED: "[green]pass[/green]", FAILED: "[red]FAIL[/red]", EXPECTED: "[yellow]xfail[/yellow]",
         SKIPPED: "[dim]skip[/dim]"}


def _cell(report: CheckReport | None) -> str:
    if report is None:
        return ""
    if report.status == SKIPPED:
        return _MARK[SKIPPED]
    ratio = f" {report.worst.worst_ratio:.2g}" if report.worst and report.worst.worst_ratio < float("inf") else ""
    return f"{_MARK[report.status]}{ratio} ({report.examples})"


def table(battery: BatteryReport) -> Table:
    dtypes = [d for d in DTYPES if any(r.dtype == d for r in battery.reports)]
    out = Table(title=f"{battery.implementation}: status, worst error/tolerance, (examples)")
    out.add_column("variant")
    out.add_column("check")
    for dtype in dtypes:
        out.add_column(dtype)
    cells: dict[tuple[str, str], dict[str, CheckReport]] = {}
    for r in battery.reports:
        cells.setdefault((r.variant, r.check), {})[r.dtype] = r
    for (variant, check), by_dtype in cells.items():
        if all(r.status == SKIPPED and r.reason.startswith("does not apply") for r in by_dtype.values()):
            continue
        out.add_row(variant, check, *(_cell(by_dtype.get(d)) for d in dtypes))
    return out


def details(battery: BatteryReport, console: Console) -> None:
    """Failures with their minimal case and reproduction; expected deviations; why checks were skipped."""
    for r in battery.by_status(FAILED):
        console.print(f"[red]FAILED[/red] {battery.implementation} {r.id}: {r.reason}")
        if r.case is not None:
            console.print(f"  minimal case: {r.case.short()}")
            console.print(f"  reproduce:    {r.reproduction()}")
    for r in battery.by_status(EXPECTED):
        console.print(f"[yellow]expected[/yellow] {battery.implementation} {r.id}: {r.reason}")
    stale = battery.stale_expectations()
    if stale:
        console.print(f"[yellow]warning[/yellow]: {len(stale)} expected deviations of {battery.implementation} "
                      f"ran and passed this run (the case that trips them was not drawn, or the entry is "
                      f"stale): {', '.join(stale)}")
    reasons = sorted({r.reason for r in battery.by_status(SKIPPED) if not r.reason.startswith("does not apply")})
    for reason in reasons:
        console.print(f"[dim]skipped: {reason}[/dim]")


def ulp_line(battery: BatteryReport) -> str | None:
    """Max ULP error against the 50-digit mpmath oracle, per variant (float64 cases)."""
    ulps = {r.variant: r.max_ulp for r in battery.reports if r.check == "mpmath" and r.status == PASSED}
    if not ulps:
        return None
    return (f"{battery.implementation}: max ULP error vs mpmath (float64, at the quantity's scale): "
            + ", ".join(f"{v} {u:.2g}" for v, u in ulps.items()))


def summary_line(battery: BatteryReport) -> str:
    counts = {s: len(battery.by_status(s)) for s in (PASSED, FAILED, EXPECTED, SKIPPED)}
    examples = sum(r.examples for r in battery.reports)
    return (f"{battery.implementation}: {counts[PASSED]} passed, {counts[FAILED]} failed, "
            f"{counts[EXPECTED]} expected failures, {counts[SKIPPED]} skipped; "
            f"{examples} examples in {battery.seconds:.1f} s")
