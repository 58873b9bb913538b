"""False alarms of the battery on correct implementations written in other styles.

The five modules of ``tests/styles`` (plain torch autograd, autograd.Functions with a
closed-form backward, reshape-based, NumPy with hand-written backwards, and compositions of
torch's own ops for the variants kernels ship) are correct: every
failure the battery reports on them is either a false alarm of normspec or a real deviation
of the style, and each has to be classified by hand (its minimal case and replay command are
printed). For each style x seed it runs the battery (``run_battery`` on
``build_module("tests.styles.<style>")``) with ``--examples`` examples per check under
``current_settings(N, seeded=True)`` and ``seed=``, then prints

- a table of failures per style x variant x dtype: failed (check, seed) runs out of those
  run, range limits and expected failures (these do not fail a verdict), skipped runs, the
  examples tried and the time;
- every failure: style, check id, seed, the message, the minimal case and the command that
  replays it.

Nothing is asserted. ``--json PATH`` writes every (style, seed, check) record.

Run from the repository root::

    .venv/bin/python benchmarks/false_positives.py [--examples 200] [--seeds 0,1,2]
        [--styles plain_autograd,numpy_backward] [--variants layer_norm] [--dtypes float32]
        [--checks forward,backward] [--json PATH]
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # tests.styles imports from the repository root
    sys.path.insert(0, str(ROOT))

from normspec.derive.dtypes import DTYPES  # noqa: E402
from normspec.derive.variants import NAMES as VARIANTS  # noqa: E402
from normspec.verify.checks import CHECKS  # noqa: E402
from normspec.verify.implementations.probing import build_module  # noqa: E402
from normspec.verify.running.battery import EXPECTED, FAILED, RANGE_LIMIT, SKIPPED, run_battery  # noqa: E402
from normspec.verify.running.profiles import current_settings  # noqa: E402

STYLES = ("plain_autograd", "closed_form", "reshape_based", "numpy_backward", "kernel_variants")


def _listed(text: str | None, allowed: tuple[str, ...], option: str) -> list[str]:
    if not text:
        return list(allowed)
    values = [v.strip() for v in text.split(",") if v.strip()]
    unknown = [v for v in values if v not in allowed]
    if unknown:
        raise SystemExit(f"{option}={text!r}: unknown {unknown}; expected some of {', '.join(allowed)}")
    return values


def _seeds(text: str) -> list[int]:
    try:
        return [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise SystemExit(f"--seeds={text!r}: expected comma-separated integers") from None


def _record(style: str, seed: int, report) -> dict:
    return {
        "style": style, "seed": seed, "variant": report.variant, "dtype": report.dtype, "check": report.check,
        "id": report.id, "status": report.status, "examples": report.examples,
        "seconds": round(report.seconds, 3),
        "worst_ratio": None if report.worst is None else float(report.worst.worst_ratio),
        "reason": report.reason, "case": None if report.case is None else report.case.to_json(),
        "minimal_case": None if report.case is None else report.case.short(),
        "reproduce": report.reproduction() if report.case is not None else "",
        "nondeterministic": report.nondeterministic,
    }


def measure(styles, variants, dtypes, checks, examples: int, seeds, progress=True) -> tuple[list[dict], float]:
    settings = current_settings(examples, seeded=True)
    records, start = [], time.perf_counter()
    for style in styles:
        impl = build_module(f"tests.styles.{style}")
        provided = [v for v in variants if v in impl.functions]
        for seed in seeds:
            began = time.perf_counter()
            battery = run_battery(impl, variants=provided, dtypes=dtypes, checks=checks,
                                  hypothesis_settings=settings, seed=seed)
            records.extend(_record(style, seed, r) for r in battery.reports)
            if progress:
                bad = sum(r.status == FAILED for r in battery.reports)
                print(f"# {style} seed={seed}: {len(battery.reports)} checks, {bad} failed, "
                      f"{time.perf_counter() - began:.1f} s", file=sys.stderr, flush=True)
    return records, time.perf_counter() - start


def table(records: list[dict]) -> str:
    rows: dict = defaultdict(lambda: defaultdict(int))
    for r in records:
        row = rows[(r["style"], r["variant"], r["dtype"])]
        row["seconds"] += r["seconds"]
        if r["status"] == SKIPPED:
            row["skipped"] += 1
            continue
        row["run"] += 1
        row["examples"] += r["examples"]
        row[r["status"]] += 1
    head = ("style", "variant", "dtype", "failed/run", "range limit", "expected", "skipped", "examples", "s")
    body = [(s, v, d, f"{row[FAILED]}/{row['run']}", str(row[RANGE_LIMIT]), str(row[EXPECTED]),
             str(row["skipped"]), str(row["examples"]), f"{row['seconds']:.1f}")
            for (s, v, d), row in rows.items()]
    widths = [max(len(h), *(len(b[i]) for b in body)) if body else len(h) for i, h in enumerate(head)]
    line = lambda cells: "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths)) + " |"  # noqa: E731
    return "\n".join([line(head), line(["-" * w for w in widths]), *(line(b) for b in body)])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--examples", type=int, default=200, help="examples per check and seed (default 200)")
    parser.add_argument("--seeds", default="0,1,2", help="comma-separated hypothesis seeds (default 0,1,2)")
    parser.add_argument("--styles", help=f"comma-separated, of {', '.join(STYLES)} (default all)")
    parser.add_argument("--variants", help="comma-separated variants (default all)")
    parser.add_argument("--dtypes", help="comma-separated dtypes (default all)")
    parser.add_argument("--checks", help="comma-separated checks (default all)")
    parser.add_argument("--json", type=Path, help="write every record to this file")
    args = parser.parse_args(argv)
    if args.examples < 1:
        raise SystemExit(f"--examples={args.examples}: expected a positive int")
    styles = _listed(args.styles, STYLES, "--styles")
    variants = _listed(args.variants, VARIANTS, "--variants")
    dtypes = _listed(args.dtypes, DTYPES, "--dtypes")
    checks = _listed(args.checks, tuple(CHECKS), "--checks")
    seeds = _seeds(args.seeds)

    records, seconds = measure(styles, variants, dtypes, checks, args.examples, seeds)
    failures = [r for r in records if r["status"] == FAILED]
    total_examples = sum(r["examples"] for r in records)
    print(table(records))
    print(f"\n{len(failures)} failed of {sum(r['status'] != SKIPPED for r in records)} check runs; "
          f"{total_examples} examples; {seconds:.1f} s "
          f"(--examples {args.examples} --seeds {','.join(map(str, seeds))})")
    for r in failures:
        print(f"\nFAILED {r['style']} {r['id']} seed={r['seed']}"
              + (" (nondeterministic)" if r["nondeterministic"] else ""))
        print(f"  {r['reason']}")
        print(f"  minimal case: {r['minimal_case']}")
        print(f"  reproduce:    {r['reproduce']}")
    if args.json:
        args.json.write_text(json.dumps({
            "examples": args.examples, "seeds": seeds, "styles": styles, "variants": variants, "dtypes": dtypes,
            "checks": checks, "seconds": round(seconds, 1), "total_examples": total_examples,
            "failed": len(failures), "records": records}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
