"""Printing a battery's results: one table per implementation, then the failures.

Rows are (variant, check), columns the dtypes; a cell shows the status, the worst
error as a fraction of its tolerance (<= 1 passes) and the examples tried.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

from rich.console import Console
from rich.table import Table

from normspec.verify.reporting.repro import write_case
from normspec.verify.running.battery import EXPECTED, FAILED, PASSED, SKIPPED, BatteryReport, CheckReport
from normspec.derive.dtypes import DTYPES

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
    """Failures with their minimal case and reproduction; expected failures (known deviations); why checks were skipped."""
    for r in battery.by_status(FAILED):
        console.print(f"[red]FAILED[/red] {battery.implementation} {r.id}: {r.reason}")
        if r.case is not None:
            console.print(f"  minimal case: {r.case.short()}")
            console.print(f"  reproduce:    {f'normspec repro {r.repro_path}' if r.repro_path else r.reproduction()}")
    for r in battery.by_status(EXPECTED):
        console.print(f"[yellow]expected failure[/yellow] {battery.implementation} {r.id}: {r.reason}")
    stale = battery.stale_expectations()
    if stale:
        console.print(f"[yellow]warning[/yellow]: {len(stale)} known deviations or listed expected failures of {battery.implementation} "
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


# --- the harness's report -------------------------------------------------------------------

class Report:
    """The result of :func:`verify.check`: per check status, worst errors, examples, minimal
    counterexample and reproduction file; JSON for machines, Markdown for a PR comment."""

    def __init__(self, battery: BatteryReport, implementation, *, unknown_expected: list[str] | None = None):
        self.battery, self.implementation = battery, implementation
        self.variant = ", ".join(dict.fromkeys(r.variant for r in battery.reports)) or "-"
        self.gradients, self.device = implementation.gradients, implementation.device
        self.unknown_expected = unknown_expected or []

    @property
    def checks(self) -> list[CheckReport]:
        return self.battery.reports

    @property
    def ok(self) -> bool:
        return not self.battery.failed

    @property
    def mode(self) -> str:
        return {"autograd": "forward and gradients (torch autograd)",
                "backward": "forward and gradients (the supplied backward)"}.get(
            self.gradients, "forward only: no autograd and no backward given, gradient checks skipped")

    def to_dict(self) -> dict:
        return {
            "implementation": self.battery.implementation, "variant": self.variant, "device": self.device,
            "mode": self.mode, "ok": self.ok, "seconds": round(self.battery.seconds, 3),
            "unknown_expected_failures": self.unknown_expected,
            "checks": [_check_dict(r) for r in self.checks],
        }

    def to_json(self, path: str | Path | None = None) -> str:
        text = json.dumps(self.to_dict(), indent=2, allow_nan=False, default=str)
        if path is not None:
            Path(path).write_text(text + "\n")
        return text

    def to_markdown(self) -> str:
        lines = [f"### normspec: `{self.battery.implementation}` ({self.variant}) — "
                 f"{'passed' if self.ok else 'FAILED'}", "", f"Mode: {self.mode}. Device: {self.device}.", "",
                 "| check | dtype | status | worst error / tolerance | examples |", "|---|---|---|---|---|"]
        for r in self.checks:
            ratio = f"{r.worst.worst_ratio:.3g}" if r.worst and math.isfinite(r.worst.worst_ratio) else "-"
            status = r.status if r.status != SKIPPED else f"skipped ({r.reason})"
            lines.append(f"| {r.check} | {r.dtype} | {status} | {ratio} | {r.examples} |")
        for r in self.battery.failed:
            lines += ["", f"**{r.id}** failed: {r.reason}", "", f"- minimal case: `{r.case.short() if r.case else '-'}`",
                      f"- reproduce: `{r.repro_path and f'normspec repro {r.repro_path}' or r.reproduction()}`"]
        return "\n".join(lines) + "\n"

    def write_artifacts(self, folder: Path) -> None:
        """One reproduction file per failing check (``normspec repro FILE`` replays it)."""
        folder.mkdir(parents=True, exist_ok=True)
        for r in self.battery.failed:
            if r.case is not None:
                r.repro_path = str(write_case(folder / f"{r.id.replace('::', '-')}.npz", r, self.implementation))

    def print(self, console: Console) -> None:
        console.print(table(self.battery))
        details(self.battery, console)
        if ulp_line(self.battery):
            console.print(ulp_line(self.battery))
        console.print(f"mode: {self.mode}")
        for entry in self.unknown_expected:
            console.print(f"[yellow]warning[/yellow]: expected failure {entry!r} matches no check")
        console.print(summary_line(self.battery))


def _check_dict(r: CheckReport) -> dict:
    worst = None
    if r.worst is not None:
        w = r.worst
        worst = {"quantity": w.quantity, "max_abs": _finite(w.max_abs), "max_rel": _finite(w.max_rel),
                 "max_ulp": _finite(w.max_ulp), "index": list(w.worst_index), "actual": _finite(w.actual),
                 "true_value": _finite(w.true_value), "allowed": _finite(w.allowed), "ratio": _finite(w.worst_ratio),
                 "tolerance": w.tolerance}
    return {"id": r.id, "check": r.check, "dtype": r.dtype, "status": r.status, "examples": r.examples,
            "seconds": round(r.seconds, 3), "examples_digest": r.examples_digest, "reason": r.reason,
            "worst": worst,
            "minimal_case": json.loads(r.case.to_json()) if r.case else None,
            "reproduction": r.reproduction() or None, "reproduction_file": r.repro_path}


def _finite(value: float) -> float | str:
    """JSON has no inf/nan: write them as strings."""
    return value if math.isfinite(value) else str(value)
