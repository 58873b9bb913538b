"""Printing a battery's results: one table per implementation, then the failures.

Rows are (variant, check), columns the dtypes; a cell shows the status, the worst
error as a fraction of its tolerance (<= 1 passes) and the examples tried.
"""
from __future__ import annotations

import json
import math
from typing import Iterable
from pathlib import Path

from rich.console import Console
from rich.table import Table
from rich.text import Text

from normspec.verify.implementations.builtin import BUILTIN
from normspec.verify.implementations.conventions import TORCH, Conventions
from normspec.verify.reporting.outputs import file_stem
from normspec.verify.reporting.repro import write_case
from normspec.verify.reporting.terminal import marked
from normspec.verify.running.battery import (EXPECTED, FAILED, PASSED, RANGE_LIMIT, SKIPPED, BatteryReport,
                                             CheckReport)
from normspec.derive.dtypes import DTYPES

_MARK = {PASSED: ("pass", "green"), FAILED: ("FAIL", "red"), EXPECTED: ("xfail", "yellow"),
         RANGE_LIMIT: ("range", "magenta"), SKIPPED: ("skip", "dim")}


def _cell(report: CheckReport | None) -> Text:
    if report is None:
        return Text("")
    if report.status == SKIPPED:
        return marked(_MARK[SKIPPED])
    ratio = f" {report.worst.worst_ratio:.2g}" if report.worst and report.worst.worst_ratio < float("inf") else ""
    return marked(_MARK[report.status], f"{ratio} ({report.examples})")


def table(battery: BatteryReport) -> Table:
    dtypes = [d for d in DTYPES if any(r.dtype == d for r in battery.reports)]
    out = Table(title=Text(f"{battery.implementation}: status, worst error/tolerance, (examples)"))
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
        out.add_row(Text(variant), Text(check), *(_cell(by_dtype.get(d)) for d in dtypes))
    return out


def details(battery: BatteryReport, console: Console, *, expected_failures: Iterable[str] = (),
            conventions: Conventions = TORCH, options: dict | None = None, flags: str = "") -> None:
    """Failures (bugs) with their minimal case and reproduction; range limits; expected failures
    (known deviations, listed ones) and the listed or known ones that no longer fail; skips."""
    for r in battery.by_status(FAILED):
        console.print(marked(("FAILED", "red"), f" {battery.implementation} {r.id}: {r.reason}"))
        if r.case is not None:
            console.print(f"  minimal case: {r.case.short()}")
            # soft_wrap: a line copied from a log runs as printed (a wrap inside its JSON would not)
            console.print(f"  reproduce:    {replay_line(r, battery.implementation, conventions, options, flags)}",
                          soft_wrap=True)
    for r in battery.by_status(RANGE_LIMIT):
        console.print(marked(("range limit", "magenta"), f" {battery.implementation} {r.id}: {r.reason}"))
    for r in battery.by_status(EXPECTED):
        console.print(marked(("expected failure", "yellow"), f" {battery.implementation} {r.id}: {r.reason}"))
    stale = battery.stale_expectations(expected_failures)
    if stale:
        console.print(marked(("warning", "yellow"), f": {len(stale)} known deviations or listed expected failures "
                             f"of {battery.implementation} ran and passed this run (the case that trips them was "
                             f"not drawn, or the entry is stale): {', '.join(stale)}"))
    reasons = sorted({r.reason for r in battery.by_status(SKIPPED) if not r.reason.startswith("does not apply")})
    for reason in reasons:
        console.print(marked((f"skipped: {reason}", "dim")))
    for note in battery.notes:
        console.print(marked(("note", "yellow"), f": {note}"))
    if battery.interrupted:
        console.print(marked(("interrupted", "red"), f": the run was interrupted after {len(battery.reports)} "
                             f"checks; the checks after them did not run"))


def replay_line(r: CheckReport, implementation: str, conventions: Conventions = TORCH,
                options: dict | None = None, flags: str = "") -> str:
    """The command that replays ``r``: its reproduction file (naming the implementation, which the
    file only records) or its one-line reproduction, declaring the conventions and options."""
    if r.repro_path:
        backwards = flags.split(" --abi ")[0]  # the file records the abi; the backwards are named again
        return f"normspec repro {r.repro_path} --impl {implementation}{backwards}"
    return reproduction(r, conventions, options, flags)


def ulp_line(battery: BatteryReport) -> str | None:
    """Max ULP error against the 50-digit mpmath oracle, per variant (float64 cases)."""
    ulps = {r.variant: r.max_ulp for r in battery.reports if r.check == "mpmath" and r.status == PASSED}
    if not ulps:
        return None
    return (f"{battery.implementation}: max ULP error vs mpmath (float64, at the quantity's scale): "
            + ", ".join(f"{v} {u:.2g}" for v, u in ulps.items()))


def summary_line(battery: BatteryReport) -> str:
    counts = {s: len(battery.by_status(s)) for s in (PASSED, FAILED, RANGE_LIMIT, EXPECTED, SKIPPED)}
    examples = sum(r.examples for r in battery.reports)
    return (f"{battery.implementation}: {counts[PASSED]} passed, {counts[FAILED]} failed (bugs), "
            f"{counts[RANGE_LIMIT]} range limits, {counts[EXPECTED]} expected failures, {counts[SKIPPED]} skipped; "
            f"{examples} examples in {battery.seconds:.1f} s")


# --- the harness's report -------------------------------------------------------------------

class Report:
    """The result of :func:`verify.check`: per check status, worst errors, examples, minimal
    counterexample and reproduction file; JSON for machines, Markdown for a PR comment."""

    def __init__(self, battery: BatteryReport, implementation, *, unknown_expected: list[str] | None = None,
                 strict: bool = False, expected_failures: Iterable[str] = (), execution: str = "this process"):
        self.battery, self.implementation = battery, implementation
        self.strict, self.expected_failures = strict, tuple(expected_failures)
        self.variant = ", ".join(dict.fromkeys(r.variant for r in battery.reports)) or "-"
        self.gradients, self.device = implementation.gradients, implementation.device
        self.unknown_expected = unknown_expected or []
        self.conventions = getattr(implementation, "conventions", TORCH)  # declared: the truth followed them
        self.options = dict(getattr(implementation, "options", {}))  # pinned: every case used them
        self.flags = calling_flags(implementation)  # how it was called (its backwards, its abi)
        chosen = set(r.variant for r in battery.reports)
        notes = getattr(implementation, "option_notes", ())
        if callable(notes):  # an Implementation (a summary carries them as data)
            notes = [n for v in implementation.functions for n in implementation.option_notes(v)]
        self.option_notes = [n for n in notes if n.split(":")[0] in chosen]
        self.execution = execution  # where the implementation's calls ran

    @property
    def checks(self) -> list[CheckReport]:
        return self.battery.reports

    @property
    def ok(self) -> bool:
        """No bug; with ``strict``, no range limit either."""
        return not self.battery.failed and not (self.strict and self.battery.by_status(RANGE_LIMIT))

    @property
    def mode(self) -> str:
        return {"autograd": "forward and gradients (torch autograd)",
                "backward": "forward and gradients (the supplied backward)"}.get(
            self.gradients, "forward only: no autograd and no backward given, gradient checks skipped")

    def to_dict(self) -> dict:
        return {
            "implementation": self.battery.implementation, "variant": self.variant, "device": self.device,
            "mode": self.mode, "execution": self.execution, "interrupted": self.battery.interrupted,
            "notes": list(self.battery.notes), "ok": self.ok, "strict": self.strict, "seconds": round(self.battery.seconds, 3),
            "counts": {status: len(self.battery.by_status(status))
                       for status in (PASSED, FAILED, RANGE_LIMIT, EXPECTED, SKIPPED)},
            "unknown_expected_failures": self.unknown_expected,
            "conventions": self.conventions.declared(), "options": self.options, "option_notes": self.option_notes,
            "checks": [_check_dict(r, self.conventions, self.options, self.flags) for r in self.checks],
        }

    def to_json(self, path: str | Path | None = None) -> str:
        text = json.dumps(self.to_dict(), indent=2, allow_nan=False, default=str)
        if path is not None:
            Path(path).write_text(text + "\n")
        return text

    def to_markdown(self) -> str:
        lines = [f"### normspec: `{self.battery.implementation}` ({self.variant}) — "
                 f"{'passed' if self.ok else 'FAILED'}", "", f"Mode: {self.mode}. Device: {self.device}. "
                 f"Conventions: {self.conventions.describe()}.", "",
                 "| check | dtype | status | worst error / tolerance | examples |", "|---|---|---|---|---|"]
        for r in self.checks:
            ratio = f"{r.worst.worst_ratio:.3g}" if r.worst and math.isfinite(r.worst.worst_ratio) else "-"
            status = r.status if r.status != SKIPPED else f"skipped ({r.reason})"
            lines.append(f"| {r.check} | {r.dtype} | {status} | {ratio} | {r.examples} |")
        for r in self.battery.failed:
            reproduce = (replay_line(r, self.battery.implementation) if r.repro_path
                         else reproduction(r, self.conventions, self.options, self.flags))
            lines += ["", f"**{r.id}** failed: {r.reason}", "", f"- minimal case: `{r.case.short() if r.case else '-'}`",
                      f"- reproduce: `{reproduce}`"]
        return "\n".join(lines) + "\n"

    def write_artifacts(self, folder: Path) -> None:
        """One reproduction file per failing check, named by implementation, variant, dtype and
        check (two implementations can share a folder); ``normspec repro FILE --impl ...`` replays it."""
        folder.mkdir(parents=True, exist_ok=True)
        stem = file_stem(self.battery.implementation)
        for r in self.battery.failed:
            if r.case is not None:
                path = folder / f"{stem}-{r.id.replace('::', '-')}.npz"
                r.repro_path = str(write_case(path, r, self.implementation))

    def print(self, console: Console) -> None:
        console.print(table(self.battery))
        details(self.battery, console, expected_failures=self.expected_failures, conventions=self.conventions,
                options=self.options, flags=self.flags)
        if ulp_line(self.battery):
            console.print(ulp_line(self.battery))
        console.print(f"mode: {self.mode}")
        console.print(f"calls ran in: {self.execution}")
        console.print(f"conventions: {self.conventions.describe()}")
        for note in self.option_notes:
            console.print(f"option: {note}")
        for entry in self.unknown_expected:
            console.print(marked(("warning", "yellow"), f": expected failure {entry!r} matches no check"))
        console.print(summary_line(self.battery))


def calling_flags(implementation) -> str:
    """The ``normspec verify`` options that call ``implementation`` as it was called: its backward,
    its backward from the output (by import path), its calling convention."""
    source, flags = getattr(implementation, "source", {}) or {}, ""
    for key, option in (("backward", "--backward"), ("backward_from_output", "--backward-from-output")):
        if key in source:
            flags += f" {option} {source[key]}"
    abi = getattr(implementation, "abi", "functional")
    return flags + (f" --abi {abi}" if abi != "functional" else "")


def reproduction(r: CheckReport, conventions: Conventions = TORCH, options: dict | None = None,
                 flags: str = "") -> str:
    """``r``'s one-line reproduction; a command line also declares the implementation's conventions,
    pinned options and ``flags`` (:func:`calling_flags`)."""
    line = r.reproduction()
    if line.startswith("normspec verify"):
        if r.implementation in BUILTIN:
            flags = ""  # a built-in is named, not assembled
        return (line + flags + conventions.command_line()
                + "".join(f" --option {k}={v:g}" for k, v in (options or {}).items()))
    declared = conventions.declared()
    if line and declared:  # the Python call: the same declarations as keywords
        line = line[:-1] + f", conventions={declared!r})"
    if line and options:
        line = line[:-1] + f", options={options!r})"
    return line


def _check_dict(r: CheckReport, conventions: Conventions = TORCH, options: dict | None = None,
                flags: str = "") -> dict:
    worst = None
    if r.worst is not None:
        w = r.worst
        worst = {"quantity": w.quantity, "max_abs": _finite(w.max_abs), "max_rel": _finite(w.max_rel),
                 "max_ulp": _finite(w.max_ulp), "index": list(w.worst_index), "actual": _finite(w.actual),
                 "true_value": _finite(w.true_value), "allowed": _finite(w.allowed), "ratio": _finite(w.worst_ratio),
                 "tolerance": w.tolerance}
    return {"id": r.id, "check": r.check, "dtype": r.dtype, "status": r.status, "examples": r.examples,
            "seconds": round(r.seconds, 3), "examples_digest": r.examples_digest, "reason": r.reason,
            "nondeterministic": r.nondeterministic,
            "worst": worst,
            "minimal_case": json.loads(r.case.to_json()) if r.case else None,
            "reproduction": reproduction(r, conventions, options, flags) or None, "reproduction_file": r.repro_path}


def _finite(value: float) -> float | str:
    """JSON has no inf/nan: write them as strings."""
    return value if math.isfinite(value) else str(value)
