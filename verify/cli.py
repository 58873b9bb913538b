"""The ``normspec`` command.

    normspec derive            regenerate reference/_generated (only changed files are written)
    normspec derive --check    exit 1, naming the file, when regenerating would change anything
    normspec derive --prove    prove the closed forms against brute force at N = 1..8
    normspec all               the main job: freshness, proofs, quick comparison, summary table
"""
from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass

from rich.console import Console
from rich.table import Table

console = Console(highlight=False)

QUICK_TOLERANCE = 1e-10


@dataclass
class Row:
    variant: str
    check: str
    ok: bool
    error: str
    seconds: float


def _shown(path) -> str:
    from derive import codegen

    return str(path.relative_to(codegen.ROOT)) if path.is_relative_to(codegen.ROOT) else str(path)


def _check_fresh() -> tuple[bool, list[str]]:
    from derive import codegen

    stale = [_shown(f.path) for f in codegen.generated_files() if f.stale]
    return not stale, stale


def cmd_derive(args: argparse.Namespace) -> int:
    from derive import codegen

    start = time.perf_counter()
    if args.check:
        fresh, stale = _check_fresh()
        for path in stale:
            console.print(f"[red]stale[/red]: {path} (regenerate with `normspec derive`)")
        if fresh:
            console.print(f"generated files are fresh (derivation-hash {codegen.derivation_hash()}, "
                          f"{time.perf_counter() - start:.2f} s)")
        status = 0 if fresh else 1
    else:
        files = codegen.generated_files()
        written = codegen.write(files)
        for f in files:
            state = "written" if f.path in written else "unchanged"
            console.print(f"{state}: {_shown(f.path)} ({len(f.content.splitlines())} lines)")
        console.print(f"derivation-hash {codegen.derivation_hash()}, {time.perf_counter() - start:.2f} s")
        status = 0
    if args.prove and not _prove(max_n=args.max_n):
        status = 1
    return status


def _prove(max_n: int, rows: list[Row] | None = None) -> bool:
    """Print one line per family and N; return True when every proof holds."""
    from derive import proofs, symbolic

    all_ok = True
    for family in symbolic.FAMILIES:
        family_ok, total = True, 0.0
        for n in range(1, max_n + 1):
            start = time.perf_counter()
            try:
                result = proofs.prove(family, n)
                line = f"proved {family.name:12s} N={n}: {', '.join(result.checked)}"
            except AssertionError as failure:
                family_ok, line = False, f"[red]FAILED[/red] {failure}"
            seconds = time.perf_counter() - start
            total += seconds
            console.print(f"{line}  ({seconds:.3f} s)")
        all_ok &= family_ok
        if rows is not None:
            rows.append(Row(f"{family.name} (family)", f"proof N=1..{max_n}", family_ok, "exact", total))
    return all_ok


def cmd_all(args: argparse.Namespace) -> int:
    from verify import quick

    rows: list[Row] = []
    start = time.perf_counter()
    fresh, stale = _check_fresh()
    rows.append(Row("(all)", "generated files fresh", fresh, ", ".join(stale) or "-", time.perf_counter() - start))
    console.rule("proofs")
    _prove(args.max_n, rows)
    console.rule("quick comparison with torch.nn.functional (float64)")
    for result in quick.run_all():
        for part, error in (("forward", result.forward_error), ("backward", result.backward_error)):
            rows.append(Row(result.variant, f"{result.implementation} {part} vs native",
                            error <= QUICK_TOLERANCE, f"{error:.1e}", result.seconds))
    console.print(_summary(rows))
    failed = [r for r in rows if not r.ok]
    console.print(f"{len(rows) - len(failed)} passed, {len(failed)} failed "
                  f"in {time.perf_counter() - start:.1f} s")
    return 1 if failed else 0


def _summary(rows: list[Row]) -> Table:
    table = Table(title="normspec summary")
    for column in ("variant", "check", "result", "max error", "time (s)"):
        table.add_column(column)
    for r in rows:
        table.add_row(r.variant, r.check, "[green]pass[/green]" if r.ok else "[red]FAIL[/red]",
                      r.error, f"{r.seconds:.2f}")
    return table


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="normspec", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    derive = sub.add_parser("derive", help="regenerate the references from the derivation")
    derive.add_argument("--check", action="store_true", help="only report stale generated files")
    derive.add_argument("--prove", action="store_true", help="prove the closed forms at N = 1..max-n")
    derive.add_argument("--max-n", type=_positive_int, default=8, help="largest N proved (default 8)")
    derive.set_defaults(run=cmd_derive)
    everything = sub.add_parser("all", help="freshness, proofs, quick comparison, summary table")
    everything.add_argument("--max-n", type=_positive_int, default=8, help="largest N proved (default 8)")
    everything.set_defaults(run=cmd_all)
    return parser


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: expected a positive integer")
    return value


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
