"""The verify-side commands of ``normspec`` (verify, repro, list, and the battery of ``all``).

``normspec.cli`` parses the command line and calls these; they print with rich.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from contextlib import contextmanager
from pathlib import Path

import torch
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from normspec.derive.dtypes import DTYPES
from normspec.derive.errors import positive_int
from normspec.derive.variants import NAMES as VARIANT_NAMES
from normspec.derive.variants import VARIANTS
from normspec.verify import api
from normspec.verify.cases.case import Case
from normspec.verify.checks import CHECKS
from normspec.verify.implementations.builtin import BUILTIN, builtin
from normspec.verify.implementations import conventions as declared_conventions
from normspec.verify.reporting import report
from normspec.verify.reporting.report import Report
from normspec.verify.reporting.repro import read_case
from normspec.verify.running import battery as bat
from normspec.verify.running.profiles import current_settings

console = Console(highlight=False, width=None if sys.stdout.isatty() else 200)


def cmd_verify(args: argparse.Namespace) -> int:
    _require_device(args.device)
    if args.convention and not args.user_impl:
        raise SystemExit("--convention: only with --impl of your own (the built-ins follow torch's conventions)")
    function = args.user_impl is not None and ":" in args.user_impl
    if args.backward and not function:
        raise SystemExit("--backward: only with --impl package.module:function")
    if function and len(args.variant or ()) != 1:
        raise SystemExit("--variant: name exactly one variant for --impl package.module:function")
    if args.user_impl is None:
        args.variant = args.variant or list(VARIANT_NAMES)
    if args.case:
        impls = [_user_implementation(args)] if args.user_impl else [_on_device(builtin(n), args.device)
                                                                      for n in args.impl]
        return _replay(impls, args.check, Case.from_json(args.case))
    reports = []
    if args.user_impl:
        with _progress(f"{args.user_impl}") as advance:
            reports.append(api.check(args.user_impl, args.variant, backward=args.backward, device=args.device,
                                     conventions=args.convention,
                                     dtypes=args.dtype, checks=args.check, max_examples=args.max_examples,
                                     expected_failures=args.expected_failures, timeout=args.timeout, array=args.array,
                                     isolate=args.isolate, artifacts=args.artifacts, seed=args.seed,
                                     progress=advance, strict=args.strict))
    else:
        for name in args.impl:
            impl = _on_device(builtin(name), args.device)
            settings = _settings(args)
            with _progress(name) as advance:
                result = bat.run_battery(impl, variants=args.variant, dtypes=args.dtype, checks=args.check,
                                         hypothesis_settings=settings, seed=args.seed, progress=advance)
            report = Report(result, impl, strict=args.strict)
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

    return current_settings(args.max_examples, seeded=args.seed is not None)


@contextmanager
def _progress(label: str):
    """A progress bar on a terminal (none when output is captured)."""

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

    if ":" not in args.user_impl:
        return api.build_module(args.user_impl, variants_wanted=tuple(args.variant or ()) or None,
                                device=args.device, timeout=args.timeout, array=args.array,
                                conventions=args.convention)
    return api.build(args.user_impl, args.variant[0], backward=args.backward, device=args.device,
                     timeout=args.timeout, array=args.array, conventions=args.convention)


def _require_device(device: str) -> None:

    if device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit(f"--device {device}: CUDA is not available on this machine")


def cmd_repro(args: argparse.Namespace) -> int:

    saved = read_case(args.case_file)
    console.print(f"case:  {saved['case'].short()}")
    console.print(f"check: {saved['meta']['check']} — saved failure: {saved['meta']['failure']}")
    if saved["meta"].get("conventions"):  # the truth of the replay follows them too
        console.print(f"conventions: {declared_conventions.parse(saved['meta']['conventions']).describe()}")
    case, check, comparisons = api.replay_file(args.case_file, impl=args.impl, backward=args.backward,
                                              device=args.device)
    status = 0
    for comparison in comparisons:
        console.print(f"{'[green]ok[/green]' if comparison.ok else '[red]FAIL[/red]'} {comparison.line()}")
        status = status or (0 if comparison.ok else 1)
    console.print("reproduced: the check still fails" if status else "the check passes now")
    return status


def cmd_list(args: argparse.Namespace) -> int:

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

    return dataclasses.replace(impl, device=device)


def _replay(impls, checks, case) -> int:

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


def battery_rows() -> list[tuple[str, str, bool, str, float]]:
    """Run the battery on the built-in implementations; one summary row (variant, what, ok, note,
    seconds) per variant each."""
    rows = []

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
            limits = sum(r.status == bat.RANGE_LIMIT for r in mine)
            note = f"passing checks within {worst:.2g} of tolerance" + (
                f"; {expected} expected deviations" if expected else "") + (
                f"; {limits} range limits" if limits else "")
            rows.append((variant, f"battery: {name} ({sum(r.examples for r in mine)} examples)",
                         not failed, note, sum(r.seconds for r in mine)))
    return rows


def add_verify_options(parser: argparse.ArgumentParser) -> None:

    def listed(choices):
        def parse(text: str) -> list[str]:
            values = [v.strip() for v in text.split(",") if v.strip()]
            unknown = [v for v in values if v not in choices]
            if unknown:
                raise argparse.ArgumentTypeError(f"{','.join(unknown)}: expected some of {', '.join(choices)}")
            return values
        return parse

    parser.add_argument("--impl", type=_impl_option(listed(BUILTIN)), default=list(BUILTIN),
                        help="package.module:function or package.module (your implementation), or built-ins, comma-separated: "
                             + ", ".join(BUILTIN))
    parser.add_argument("--backward", default=None,
                        help="package.module:function with the signature of normspec.numpy_ref.*_backward")
    parser.add_argument("--variant", type=listed(VARIANTS), default=None,
                        help="comma-separated (default: every variant; for a module, every one it provides)")
    parser.add_argument("--dtype", type=listed(DTYPES), default=list(DTYPES), help="comma-separated")
    parser.add_argument("--check", type=listed(tuple(CHECKS)), default=None, help="comma-separated")
    parser.add_argument("--array", choices=("torch", "numpy"), default=None,
                        help="the arrays --impl takes (default: probed with one call of each kind)")
    parser.add_argument("--convention", type=_convention_option, action="append", default=None,
                        metavar="KEY=VALUE", help="a convention --impl declares (repeatable), e.g. running_var=biased, "
                                                  "momentum=old; keys: " + ", ".join(declared_conventions.KEYS))
    parser.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    parser.add_argument("--max-examples", type=positive_int, default=None,
                        help="examples per check (default: the HYPOTHESIS_PROFILE, 'ci')")
    parser.add_argument("--case", default=None, help="replay one case (JSON, as printed by a failure)")
    parser.add_argument("--json", default=None, help="write the report as JSON to this file")
    parser.add_argument("--markdown", default=None, help="write the report as Markdown (a PR comment)")
    parser.add_argument("--artifacts", default=None, help="folder for reproduction files of failures")
    parser.add_argument("--expected-failures", default=None,
                        help="file of check ids (variant::dtype::check), one per line, expected to fail; "
                             "bounds may follow: values=KIND,... ratio<=NUMBER")
    parser.add_argument("--strict", action="store_true",
                        help="fail on range limits too (failures only beyond the dtype's working range)")
    parser.add_argument("--isolate", action="store_true",
                        help="run every call in a worker process (kernels that can crash the process)")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds per call (default 60)")
    parser.add_argument("--seed", type=int, default=None, help="a random seed instead of the profile's "
                                                                 "derandomized examples")


def _impl_option(builtins_parser):
    """--impl is one import path (package.module:function, or package.module: a module of functions
    named after variants) or built-in names, comma-separated."""

    def parse(text: str):
        names = [part.strip() for part in text.split(",") if part.strip()]
        if ":" in text or (len(names) == 1 and names[0] not in BUILTIN):
            return text
        return builtins_parser(text)

    return parse


def _convention_option(text: str) -> str:
    """One ``--convention key=value``, validated (the keys and values of verify.implementations.conventions)."""
    try:
        declared_conventions.parse([text], argument="--convention")
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None
    return text
