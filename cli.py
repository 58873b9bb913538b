"""The ``normspec`` command.

    normspec derive            regenerate reference/_generated (only changed files are written)
    normspec derive --check    exit 1, naming the file, when regenerating would change anything
    normspec derive --prove    prove the closed forms against brute force at N = 1..8
    normspec verify            the battery on numpy_ref, torch_ref and torch_native (CPU)
    normspec verify --impl package.module:function --variant layer_norm
                               the battery on your implementation; exit 0 only if every check passes
    normspec repro CASE.npz    re-run one saved failing case
    normspec list              the variants and the checks
    normspec docs [--check]    regenerate (or check) the spec documentation
    normspec all               the main job: freshness, proofs, quick comparison, battery, summary
"""
from __future__ import annotations

import argparse
import sys
import time
import traceback
from dataclasses import dataclass

from rich.console import Console
from rich.table import Table
from rich.text import Text

from normspec.derive.errors import positive_int

# nothing printed is markup or emoji: messages carry users' text (see verify/reporting/terminal.py)
console = Console(highlight=False, markup=False, emoji=False, width=None if sys.stdout.isatty() else 200)

# Exit statuses: each means one thing.
PASSED, CHECK_FAILED, USAGE_ERROR, HARNESS_FAILED = 0, 1, 2, 3

QUICK_TOLERANCE = 1e-10


@dataclass
class Row:
    variant: str
    check: str
    ok: bool
    error: str
    seconds: float


def _shown(path) -> str:
    from normspec.derive import codegen

    return str(path.relative_to(codegen.ROOT)) if path.is_relative_to(codegen.ROOT) else str(path)


def _check_fresh() -> tuple[bool, list[str]]:
    """(fresh, problems): stale generated files, and strays in reference/_generated."""
    from normspec.derive import codegen

    files = codegen.generated_files()
    problems = [f"stale: {_shown(p)} (regenerate with `normspec derive`)" for p in codegen.stale_files(files)]
    problems += [f"stray: {_shown(p)} (not produced by `normspec derive`; delete it)"
                 for p in codegen.stray_files(files)]
    return not problems, problems


def cmd_derive(args: argparse.Namespace) -> int:
    from normspec.derive import codegen

    start = time.perf_counter()
    if args.check:
        fresh, problems = _check_fresh()
        for problem in problems:
            console.print(Text(problem, style="red"))
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
        for path in codegen.stray_files(files):
            console.print(Text.assemble(("stray", "yellow"), f": {_shown(path)} (not produced by `normspec derive`; "
                                                             f"delete it)"))
        console.print(f"derivation-hash {codegen.derivation_hash()}, {time.perf_counter() - start:.2f} s")
        status = 0
    if args.prove and not _prove(max_n=args.max_n):
        status = 1
    return status


def _prove(max_n: int, rows: list[Row] | None = None) -> bool:
    """Print one line per family and N; return True when every proof holds."""
    from normspec.derive import proofs, symbolic

    all_ok = True
    for family in symbolic.FAMILIES:
        family_ok, total = True, 0.0
        for n in range(1, max_n + 1):
            start = time.perf_counter()
            try:
                result = proofs.prove(family, n)
                line = Text(f"proved {family.name:12s} N={n}: {', '.join(result.checked)}")
            except AssertionError as failure:
                family_ok, line = False, Text.assemble(("FAILED", "red"), f" {failure}")
            seconds = time.perf_counter() - start
            total += seconds
            console.print(line + f"  ({seconds:.3f} s)")
        all_ok &= family_ok
        if rows is not None:
            rows.append(Row(f"{family.name} (family)", f"proof N=1..{max_n}", family_ok, "exact", total))
    return all_ok


def cmd_all(args: argparse.Namespace) -> int:
    from normspec.verify import commands, quick

    rows: list[Row] = []
    start = time.perf_counter()
    fresh, problems = _check_fresh()
    rows.append(Row("(all)", "generated files fresh", fresh, "; ".join(problems) or "-",
                    time.perf_counter() - start))
    console.rule("proofs")
    _prove(args.max_n, rows)
    console.rule("quick comparison with torch.nn.functional (float64)")
    for result in quick.run_all():
        for part, error in (("forward", result.forward_error), ("backward", result.backward_error)):
            rows.append(Row(result.variant, f"{result.implementation} {part} vs native",
                            error <= QUICK_TOLERANCE, f"{error:.1e}", result.seconds))
    console.rule("the battery (HYPOTHESIS_PROFILE, default 'ci')")
    rows += [Row(*row) for row in commands.battery_rows()]
    console.print(_summary(rows))
    failed = [r for r in rows if not r.ok]
    console.print(f"{len(rows) - len(failed)} passed, {len(failed)} failed "
                  f"in {time.perf_counter() - start:.1f} s")
    return 1 if failed else 0


def cmd_verify(args: argparse.Namespace) -> int:
    from normspec.verify import commands

    return commands.cmd_verify(args)


def cmd_repro(args: argparse.Namespace) -> int:
    from normspec.verify import commands

    return commands.cmd_repro(args)


def cmd_list(args: argparse.Namespace) -> int:
    from normspec.verify import commands

    return commands.cmd_list(args)


def cmd_docs(args: argparse.Namespace) -> int:
    from normspec import docs

    return docs.run(check=args.check, with_battery=args.with_battery)


def _summary(rows: list[Row]) -> Table:
    table = Table(title="normspec summary")
    for column in ("variant", "check", "result", "max error", "time (s)"):
        table.add_column(column)
    for r in rows:
        table.add_row(r.variant, r.check, Text("pass", "green") if r.ok else Text("FAIL", "red"),
                      r.error, f"{r.seconds:.2f}")
    return table


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The parser; the verify options (which need the battery, hence torch) are only built when
    ``command`` is ``verify`` (or unknown, for ``--help``), so ``normspec derive`` stays light."""
    parser = argparse.ArgumentParser(prog="normspec", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    derive = sub.add_parser("derive", help="regenerate the references from the derivation")
    derive.add_argument("--check", action="store_true", help="only report stale generated files")
    derive.add_argument("--prove", action="store_true", help="prove the closed forms at N = 1..max-n")
    derive.add_argument("--max-n", type=positive_int, default=8, help="largest N proved (default 8)")
    derive.set_defaults(run=cmd_derive)
    verify = sub.add_parser("verify", help="run the property-based battery")
    if command in (None, "verify"):
        from normspec.verify.commands import add_verify_options

        add_verify_options(verify)
    verify.set_defaults(run=cmd_verify)
    repro = sub.add_parser("repro", help="re-run one saved failing case (a .npz written with --artifacts)")
    repro.add_argument("case_file", metavar="CASE.npz")
    repro.add_argument("--impl", default=None,
                       help="the implementation to replay it on: a built-in or package.module:function "
                            "(required: the one the file records is shown, never imported on its own)")
    repro.add_argument("--backward", default=None)
    repro.add_argument("--backward-from-output", default=None)
    repro.add_argument("--device", default="cpu")
    repro.add_argument("--max-elements", type=positive_int, default=None,
                       help="largest case (elements of x) the file may describe (default 4194304)")
    repro.set_defaults(run=cmd_repro)
    listing = sub.add_parser("list", help="list the variants and the checks")
    listing.set_defaults(run=cmd_list)
    docs = sub.add_parser("docs", help="regenerate the spec documentation (docs/spec, docs/site)")
    docs.add_argument("--check", action="store_true", help="exit 1, naming the file, if the docs are stale")
    docs.add_argument("--with-battery", action="store_true",
                      help="also run the battery and refresh docs/verification.json and its picture")
    docs.set_defaults(run=cmd_docs)
    everything = sub.add_parser("all", help="freshness, proofs, quick comparison, summary table")
    everything.add_argument("--max-n", type=positive_int, default=8, help="largest N proved (default 8)")
    everything.set_defaults(run=cmd_all)
    return parser





def main(argv: list[str] | None = None) -> int:
    """Run one command. Exit status: 0 every check passed, 1 a check failed, 2 a usage or input
    error (argparse's too), 3 normspec itself failed (a bug to report); 130 interrupted by the user
    (the report of what ran is printed first)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    command = next((a for a in argv if not a.startswith("-")), None)
    args = build_parser(command).parse_args(argv)
    if getattr(args, "impl", None) is not None and isinstance(args.impl, str) and args.run is cmd_verify:
        args.user_impl, args.impl = args.impl, []
    elif args.run is cmd_verify:
        args.user_impl = None
    return _run(args)


def _run(args: argparse.Namespace) -> int:
    from normspec.derive.errors import NormSpecError

    try:
        return args.run(args)
    except NormSpecError as error:
        console.print(Text.assemble(("error", "red"), f": {error}"))
        return USAGE_ERROR
    except KeyboardInterrupt:
        console.print(Text.assemble(("interrupted", "red"), " by the user"))
        return 130
    except Exception:  # noqa: BLE001 - normspec's own failure: said so, with the traceback to report
        console.print(Text.assemble(("normspec failed", "red"), " (a bug in normspec, not in the implementation "
                                                                "under test; please report it):"))
        traceback.print_exc()
        return HARNESS_FAILED


if __name__ == "__main__":
    sys.exit(main())
