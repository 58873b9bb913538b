"""The battery's results for the spec: docs/verification.json, run, read and summarised.

``normspec docs --with-battery`` writes ``docs/verification.json`` by running the battery
on the built-in implementations (:func:`battery_figure_data`); the index page's picture
and each variant page's table read it when it exists. Its schema is a JSON list of records::

    {"implementation": "torch_native",   # who was verified
     "variant": "layer_norm",            # a name of normspec.derive.variants.VARIANTS
     "dtype": "float32",                 # a name of normspec.derive.dtypes.DTYPES
     "check": "backward",                # a name of normspec.verify.checks.CHECKS
     "status": "passed",                 # passed | failed | expected failure | skipped
     "max_abs": 1.2e-07}                 # worst absolute error found; null if none (skipped)

Optional: ``"worst_ratio"``, the worst error as a fraction of its tolerance (<= 1 passes),
drawn above max_abs when present. Other keys are ignored (:func:`battery_figure_data` also
records ``examples``, the number of cases hypothesis tried). Only passing checks contribute
errors to the picture; failures and expected failures are counted in its cells.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

from normspec.derive.codegen import ROOT
from normspec.derive.dtypes import DTYPES
from normspec.verify.implementations.builtin import BUILTIN, builtin
from normspec.verify.running.battery import run_battery

VERIFICATION_JSON = ROOT / "docs" / "verification.json"
REPORT_FIELDS = ("implementation", "variant", "dtype", "check", "status", "max_abs")
# What the battery picture shows: (record key, colorbar label). worst_ratio is the honest
# comparison across checks; max_abs (the one number the schema requires) mixes quantities
# of every magnitude: the near-overflow value kinds give errors of 1e18 within tolerance.
METRICS = (
    ("worst_ratio", "error / tolerance, worst passing check\n(<= 1 passes)"),
    ("max_abs", "max abs error, passing checks\n(grows with |x|)"),
)


def battery_figure_data(implementations: tuple[str, ...] = BUILTIN, **options) -> list[dict]:
    """Run the battery on the built-in implementations; one record per (variant, dtype, check).

    ``options`` go to ``normspec.verify.running.battery.run_battery`` (variants, dtypes,
    checks, ...). The records follow the schema of this module's docstring.
    """
    records = []
    for name in implementations:
        result = run_battery(builtin(name), **options)
        for r in result.reports:
            worst = r.worst
            records.append({"implementation": r.implementation, "variant": r.variant, "dtype": r.dtype,
                            "check": r.check, "status": r.status,
                            "max_abs": _finite_or_none(worst.max_abs) if worst else None,
                            "worst_ratio": _finite_or_none(worst.worst_ratio) if worst else None,
                            "examples": r.examples})
    return records


def _finite_or_none(value: float | None) -> float | str | None:
    """A number for JSON: 4 significant digits, or "inf"/"-inf"/"nan"; None stays None."""
    if value is None:
        return None
    if math.isnan(value):
        return "nan"
    return float(f"{value:.4g}") if math.isfinite(value) else ("inf" if value > 0 else "-inf")


def verification_json(records: list[dict]) -> str:
    """One record per line (sorted keys): small, and a rerun's diff shows which checks moved."""
    lines = ",\n".join(json.dumps(r, sort_keys=True, separators=(", ", ": ")) for r in records)
    return f"[\n{lines}\n]\n"


def read_verification(path: Path | None = None) -> list[dict] | None:
    """The records of ``path`` (default docs/verification.json), or None when it does not exist."""
    path = path or VERIFICATION_JSON
    if not path.exists():
        return None
    records = json.loads(path.read_text())
    if not isinstance(records, list):
        raise ValueError(f"{path}: expected a JSON list of records with keys {REPORT_FIELDS}")
    for k, record in enumerate(records):
        missing = [f for f in REPORT_FIELDS if f not in record]
        if missing:
            raise ValueError(f"{path}: record {k} lacks {missing} (expected keys {REPORT_FIELDS})")
    return records


def _number(value) -> float | None:
    """A record's number: None for null or NaN; the strings 'inf'/'-inf' as floats."""
    if value is None:
        return None
    value = float(value)
    return None if math.isnan(value) else value


def battery_summary(records: list[dict]) -> dict[tuple[str, str, str], dict]:
    """(implementation, variant, dtype) -> the worst of each metric over the passing checks,
    and the count of checks per status."""
    summary: dict[tuple[str, str, str], dict] = {}
    for r in records:
        cell = summary.setdefault((r["implementation"], r["variant"], r["dtype"]),
                                  {"counts": {}, **{key: None for key, _ in METRICS}})
        cell["counts"][r["status"]] = cell["counts"].get(r["status"], 0) + 1
        if r["status"] != "passed":
            continue
        for key, _ in METRICS:
            value = _number(r.get(key))
            if value is not None:
                cell[key] = value if cell[key] is None else max(cell[key], value)
    order = {d: k for k, d in enumerate(DTYPES)}
    return dict(sorted(summary.items(), key=lambda kv: (kv[0][0], kv[0][1], order.get(kv[0][2], 99))))


def status_counts(records: list[dict]) -> dict[str, dict[str, int]]:
    """implementation -> status -> the number of records (variant, dtype, check) with it."""
    counts: dict[str, dict[str, int]] = {}
    for r in records:
        c = counts.setdefault(r["implementation"], {})
        c[r["status"]] = c.get(r["status"], 0) + 1
    return dict(sorted(counts.items()))
