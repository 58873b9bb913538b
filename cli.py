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
import json
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console
from rich.table import Table

console = Console(highlight=False, width=None if sys.stdout.isatty() else 200)

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
    from normspec.derive import codegen

    stale = [_shown(f.path) for f in codegen.generated_files() if f.stale]
    return not stale, stale


def cmd_derive(args: argparse.Namespace) -> int:
    from normspec.derive import codegen

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
    from normspec.derive import proofs, symbolic

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
    from normspec.verify import quick

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
    console.rule("the battery (HYPOTHESIS_PROFILE, default 'ci')")
    _battery_rows(rows)
    console.print(_summary(rows))
    failed = [r for r in rows if not r.ok]
    console.print(f"{len(rows) - len(failed)} passed, {len(failed)} failed "
                  f"in {time.perf_counter() - start:.1f} s")
    return 1 if failed else 0


def cmd_verify(args: argparse.Namespace) -> int:
    from normspec.verify import api
    from normspec.verify.running import battery as bat
    from normspec.verify.cases.case import Case
    from normspec.verify.implementations.builtin import builtin
    from normspec.verify.reporting.report import Report

    _require_device(args.device)
    if args.backward and not args.user_impl:
        raise SystemExit("--backward: only with --impl package.module:function")
    if args.user_impl and len(args.variant) != 1:
        raise SystemExit("--variant: name exactly one variant for --impl package.module:function")
    if args.case:
        impls = [_user_implementation(args)] if args.user_impl else [_on_device(builtin(n), args.device)
                                                                      for n in args.impl]
        return _replay(impls, args.check, Case.from_json(args.case))
    reports = []
    if args.user_impl:
        with _progress(f"{args.user_impl}") as advance:
            reports.append(api.check(args.user_impl, args.variant[0], backward=args.backward, device=args.device,
                                     dtypes=args.dtype, checks=args.check, max_examples=args.max_examples,
                                     expected_failures=args.expected_failures, timeout=args.timeout,
                                     isolate=args.isolate, artifacts=args.artifacts, seed=args.seed,
                                     progress=advance))
    else:
        for name in args.impl:
            impl = _on_device(builtin(name), args.device)
            settings = _settings(args)
            with _progress(name) as advance:
                result = bat.run_battery(impl, variants=args.variant, dtypes=args.dtype, checks=args.check,
                                         hypothesis_settings=settings, seed=args.seed, progress=advance)
            report = Report(result, impl)
            if args.artifacts:
                report.write_artifacts(Path(args.artifacts))
            reports.append(report)
    for report in reports:
        report.print(console)
    _write_reports(reports, args)
    return 0 if all(r.ok for r in reports) else 1


def _settings(args: argparse.Namespace):
    if not args.max_examples and args.seed is None:
        return None
    from normspec.verify.running.profiles import current_settings

    return current_settings(args.max_examples, seeded=args.seed is not None)


@contextmanager
def _progress(label: str):
    """A progress bar on a terminal (none when output is captured)."""
    from rich.progress import Progress

    with Progress(console=console, transient=True, disable=not console.is_terminal) as progress:
        task = progress.add_task(label, total=None)
        yield lambda report: progress.update(task, advance=1, description=f"{label} {report.id}")


def _write_reports(reports, args: argparse.Namespace) -> None:
    if args.json:
        payload = [r.to_dict() for r in reports]
        Path(args.json).write_text(json.dumps(payload if len(payload) > 1 else payload[0], indent=2,
                                              default=str) + "\n")
        console.print(f"JSON report: {args.json}")
    if args.markdown:
        Path(args.markdown).write_text("\n".join(r.to_markdown() for r in reports))
        console.print(f"Markdown report: {args.markdown}")


def _user_implementation(args: argparse.Namespace):
    from normspec.verify import api

    return api.build(args.user_impl, args.variant[0], backward=args.backward, device=args.device,
                     timeout=args.timeout)


def _require_device(device: str) -> None:
    import torch

    if device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit(f"--device {device}: CUDA is not available on this machine")


def cmd_repro(args: argparse.Namespace) -> int:
    from normspec.verify.api import replay_file
    from normspec.verify.reporting.repro import read_case

    saved = read_case(args.case_file)
    console.print(f"case:  {saved['case'].short()}")
    console.print(f"check: {saved['meta']['check']} — saved failure: {saved['meta']['failure']}")
    case, check, comparisons = replay_file(args.case_file, impl=args.impl, backward=args.backward, device=args.device)
    status = 0
    for comparison in comparisons:
        console.print(f"{'[green]ok[/green]' if comparison.ok else '[red]FAIL[/red]'} {comparison.line()}")
        status = status or (0 if comparison.ok else 1)
    console.print("reproduced: the check still fails" if status else "the check passes now")
    return status


def cmd_docs(args: argparse.Namespace) -> int:
    from normspec import docs

    return docs.run(check=args.check, with_battery=args.with_battery)


def cmd_list(args: argparse.Namespace) -> int:
    from normspec.derive.variants import VARIANTS
    from normspec.verify.checks import CHECKS

    variants = Table(title="variants")
    for column in ("variant", "statistics shared over", "affine per"):
        variants.add_column(column)
    for v in VARIANTS.values():
        variants.add_row(v.name, v.group, v.affine)
    checks = Table(title="checks")
    for column in ("check", "kind", "what it states", "variants", "dtypes"):
        checks.add_column(column)
    for c in CHECKS.values():
        checks.add_row(c.name, c.kind, c.description, ", ".join(c.variants), ", ".join(c.dtypes))
    console.print(variants)
    console.print(checks)
    return 0


def _on_device(impl, device: str):
    import dataclasses

    return dataclasses.replace(impl, device=device)


def _replay(impls, checks, case) -> int:
    from normspec.verify.checks import CHECKS
    from normspec.verify.running import battery as bat

    status = 0
    for impl in impls:
        for check in checks or list(CHECKS):
            reason = CHECKS[check].skip(impl, case.variant, case.dtype)
            if reason:
                console.print(f"{impl.name} {check}: skipped ({reason})")
                continue
            for comparison in bat.check_case(impl, check, case):
                mark = "[green]ok[/green]" if comparison.ok else "[red]FAIL[/red]"
                console.print(f"{impl.name} {check} {mark} {comparison.line()}")
                status = max(status, 0 if comparison.ok else 1)
    console.print(f"case: {case.short()}")
    return status


def _battery_rows(rows: list[Row]) -> None:
    """Run the battery on the three built-in implementations; one summary row per variant each."""
    from normspec.verify.running import battery as bat
    from normspec.verify.reporting import report
    from normspec.derive.variants import NAMES as VARIANT_NAMES
    from normspec.verify.implementations.builtin import BUILTIN, builtin

    for name in BUILTIN:
        result = bat.run_battery(builtin(name))
        report.details(result, console)
        if report.ulp_line(result):
            console.print(report.ulp_line(result))
        console.print(report.summary_line(result))
        for variant in VARIANT_NAMES:
            mine = [r for r in result.reports if r.variant == variant and r.status != bat.SKIPPED]
            worst = max((r.worst.worst_ratio for r in mine if r.worst and r.status == bat.PASSED), default=0.0)
            failed = [r for r in mine if r.status == bat.FAILED]
            expected = sum(r.status == bat.EXPECTED for r in mine)
            note = f"passing checks within {worst:.2g} of tolerance" + (
                f"; {expected} expected deviations" if expected else "")
            rows.append(Row(variant, f"battery: {name} ({sum(r.examples for r in mine)} examples)",
                            not failed, note, sum(r.seconds for r in mine)))


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
    verify = sub.add_parser("verify", help="run the property-based battery")
    _add_verify_options(verify)
    verify.set_defaults(run=cmd_verify)
    repro = sub.add_parser("repro", help="re-run one saved failing case (a .npz written with --artifacts)")
    repro.add_argument("case_file", metavar="CASE.npz")
    repro.add_argument("--impl", default=None, help="package.module:function (default: the one saved)")
    repro.add_argument("--backward", default=None)
    repro.add_argument("--device", default="cpu")
    repro.set_defaults(run=cmd_repro)
    listing = sub.add_parser("list", help="list the variants and the checks")
    listing.set_defaults(run=cmd_list)
    docs = sub.add_parser("docs", help="regenerate the spec documentation (docs/spec, docs/site)")
    docs.add_argument("--check", action="store_true", help="exit 1, naming the file, if the docs are stale")
    docs.add_argument("--with-battery", action="store_true",
                      help="also run the battery and refresh docs/verification.json and its picture")
    docs.set_defaults(run=cmd_docs)
    everything = sub.add_parser("all", help="freshness, proofs, quick comparison, summary table")
    everything.add_argument("--max-n", type=_positive_int, default=8, help="largest N proved (default 8)")
    everything.set_defaults(run=cmd_all)
    return parser


def _add_verify_options(parser: argparse.ArgumentParser) -> None:
    from normspec.derive.variants import NAMES as VARIANTS
    from normspec.verify.checks import CHECKS
    from normspec.derive.dtypes import DTYPES

    def listed(choices):
        def parse(text: str) -> list[str]:
            values = [v.strip() for v in text.split(",") if v.strip()]
            unknown = [v for v in values if v not in choices]
            if unknown:
                raise argparse.ArgumentTypeError(f"{','.join(unknown)}: expected some of {', '.join(choices)}")
            return values
        return parse

    from normspec.verify.implementations.builtin import BUILTIN as builtins
    parser.add_argument("--impl", type=_impl_option(listed(builtins)), default=list(builtins),
                        help="package.module:function (your implementation), or built-ins, comma-separated: "
                             + ", ".join(builtins))
    parser.add_argument("--backward", default=None,
                        help="package.module:function with the signature of reference.numpy_ref.*_backward")
    parser.add_argument("--variant", type=listed(VARIANTS), default=list(VARIANTS), help="comma-separated")
    parser.add_argument("--dtype", type=listed(DTYPES), default=list(DTYPES), help="comma-separated")
    parser.add_argument("--check", type=listed(tuple(CHECKS)), default=None, help="comma-separated")
    parser.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    parser.add_argument("--max-examples", type=_positive_int, default=None,
                        help="examples per check (default: the HYPOTHESIS_PROFILE, 'ci')")
    parser.add_argument("--case", default=None, help="replay one case (JSON, as printed by a failure)")
    parser.add_argument("--json", default=None, help="write the report as JSON to this file")
    parser.add_argument("--markdown", default=None, help="write the report as Markdown (a PR comment)")
    parser.add_argument("--artifacts", default=None, help="folder for reproduction files of failures")
    parser.add_argument("--expected-failures", default=None,
                        help="file of check ids (variant::dtype::check), one per line, expected to fail")
    parser.add_argument("--isolate", action="store_true",
                        help="run every call in a worker process (kernels that can crash the process)")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds per call (default 60)")
    parser.add_argument("--seed", type=int, default=None, help="a random seed instead of the profile's "
                                                                 "derandomized examples")


def _impl_option(builtins_parser):
    """--impl is either one import path (package.module:function) or built-in names."""

    def parse(text: str):
        if ":" in text:
            return text
        return builtins_parser(text)

    return parse


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: expected a positive integer")
    return value


def main(argv: list[str] | None = None) -> int:
    from normspec.derive.errors import NormSpecError

    args = build_parser().parse_args(argv)
    if getattr(args, "impl", None) is not None and isinstance(args.impl, str) and args.run is cmd_verify:
        args.user_impl, args.impl = args.impl, []
    elif args.run is cmd_verify:
        args.user_impl = None
    try:
        return args.run(args)
    except NormSpecError as error:
        console.print(f"[red]error[/red]: {error}")
        return 2


if __name__ == "__main__":
    sys.exit(main())
