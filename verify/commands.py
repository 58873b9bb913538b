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
from rich.markup import escape
from rich.progress import Progress
from rich.table import Table
from rich.text import Text

from normspec.derive import contracts
from normspec.derive.abi import ABIS
from normspec.verify.checks.oracle_checks import repeated_calls
from normspec.verify.running.scales import SCALES
from normspec.derive.dtypes import DTYPES
from normspec.derive.errors import positive_int, positive_seconds, require
from normspec.derive.variants import NAMES as VARIANT_NAMES
from normspec.derive.variants import VARIANTS
from normspec.verify import api
from normspec.verify.cases.case import MAX_CASE_ELEMENTS, Case
from normspec.verify.checks import CHECKS
from normspec.verify.implementations.builtin import BUILTIN, builtin
from normspec.verify.implementations import conventions as declared_conventions
from normspec.verify.reporting import report
from normspec.verify.reporting.outputs import output_file, output_folder
from normspec.verify.reporting.report import Report
from normspec.verify.reporting.terminal import make_console, marked
from normspec.verify.reporting.repro import read_case
from normspec.verify.running import battery as bat
from normspec.verify.running.expected_failures import parse as parse_expected_failures
from normspec.verify.running.profiles import current_settings
from normspec.verify.implementations.probing import parse_options

console = make_console()


def cmd_verify(args: argparse.Namespace) -> int:
    _require_device(args.device)
    require(not args.contract or args.user_impl, "--contract", args.contract,
            "--impl of your own with it (the built-ins keep torch's rounding)")
    if args.contract:  # the shorthand of --convention contract=NAME
        args.convention = [*(args.convention or []), f"contract={args.contract}"]
    require(not args.convention or args.user_impl, "--convention", args.convention,
            "--impl of your own with it (the built-ins follow torch's conventions)")
    require(not args.option or args.user_impl, "--option", args.option,
            "--impl of your own with it (the built-ins take every option as a keyword)")
    function = args.user_impl is not None and ":" in args.user_impl
    require(not args.backward or function, "--backward", args.backward, "--impl package.module:function with it")
    require(not args.backward_from_output or function, "--backward-from-output", args.backward_from_output,
            "--impl package.module:function with it (the forward whose y it takes)")
    require(args.abi == "functional" or function, "--abi", args.abi,
            "--impl package.module:function with it (the built-in torch_aten is aten's own ops)")
    require(not function or len(args.variant or ()) == 1, "--variant", ",".join(args.variant or ()) or None,
            "exactly one variant for --impl package.module:function")
    outputs = _outputs(args)  # validated and made absolute before anything runs
    if args.user_impl is None:
        args.variant = args.variant or list(VARIANT_NAMES)
    if args.case:
        written = [flag for flag, value in (("--json", args.json), ("--markdown", args.markdown),
                                            ("--artifacts", args.artifacts)) if value]
        require(not written, written[0] if written else "--json", ",".join(written),
                "no report file with --case (it replays one case and prints its comparisons)")
        case = Case.from_json(args.case, argument="--case", max_elements=args.max_elements)
        impls = [_user_implementation(args)] if args.user_impl else [_on_device(builtin(n), args.device)
                                                                      for n in args.impl]
        with repeated_calls(args.calls):  # the deterministic check compares --calls K calls here too
            return _replay(impls, args.check, case)
    reports = []
    if args.user_impl:
        with _progress(f"{args.user_impl}") as advance:
            reports.append(api.check(args.user_impl, args.variant, backward=args.backward, device=args.device,
                                     abi=args.abi, backward_from_output=args.backward_from_output,
                                     conventions=args.convention, options=args.option,
                                     dtypes=args.dtype, checks=args.check, max_examples=args.max_examples,
                                     expected_failures=parse_expected_failures(args.expected_failures,
                                                                               argument="--expected-failures"),
                                     timeout=args.timeout, array=args.array,
                                     isolate=args.isolate, in_process=args.in_process, artifacts=outputs["artifacts"],
                                     seed=args.seed, progress=advance, strict=args.strict, scale=args.scale,
                                     calls=args.calls))
    else:
        for name in args.impl:
            with _progress(name) as advance:
                result, impl = api.builtin_battery(name, variants=args.variant, dtypes=args.dtype, checks=args.check,
                                                   max_examples=args.max_examples, seed=args.seed,
                                                   device=args.device, progress=advance, scale=args.scale,
                                                   calls=args.calls)
            report = Report(result, impl, strict=args.strict)
            if outputs["artifacts"]:
                report.write_artifacts(outputs["artifacts"])
            reports.append(report)
    written = _write_reports(reports, outputs)  # first: the files do not depend on the terminal
    for report in reports:
        report.print(console)
    for line in written:
        console.print(line)
    if any(r.battery.interrupted for r in reports):
        return INTERRUPTED
    return 0 if all(r.ok for r in reports) else 1


INTERRUPTED = 130  # the user's Ctrl-C (the report of the checks that ran is printed)


def _outputs(args: argparse.Namespace) -> dict:
    return {"json": output_file(args.json, argument="--json") if args.json else None,
            "markdown": output_file(args.markdown, argument="--markdown") if args.markdown else None,
            "artifacts": output_folder(args.artifacts, argument="--artifacts") if args.artifacts else None}


@contextmanager
def _progress(label: str):
    """A progress bar on a terminal (none when output is captured)."""

    with Progress(console=console, transient=True, disable=not console.is_terminal) as progress:
        # the description column reads markup: names are escaped
        task = progress.add_task(escape(label), total=None)
        yield lambda report: progress.update(task, advance=1, description=escape(f"{label} {report.id}"))


def _write_reports(reports, outputs: dict) -> list[str]:
    """Write the --json and --markdown reports; the lines that say where."""
    written = []
    if outputs["json"]:
        payload = [r.to_dict() for r in reports]
        outputs["json"].write_text(json.dumps(payload if len(payload) > 1 else payload[0], indent=2,
                                              default=str) + "\n")
        written.append(f"JSON report: {outputs['json']}")
    if outputs["markdown"]:
        outputs["markdown"].write_text("\n".join(r.to_markdown() for r in reports))
        written.append(f"Markdown report: {outputs['markdown']}")
    return written


def _user_implementation(args: argparse.Namespace):
    """The implementation of ``--case``: one call, in this process."""
    if ":" not in args.user_impl:
        return api.build_module(args.user_impl, variants_wanted=tuple(args.variant or ()) or None,
                                device=args.device, timeout=args.timeout, array=args.array,
                                conventions=args.convention, options=args.option)
    return api.build(args.user_impl, args.variant[0], backward=args.backward, device=args.device,
                     timeout=args.timeout, array=args.array, conventions=args.convention, options=args.option,
                     abi=args.abi, backward_from_output=args.backward_from_output)


def _require_device(device: str) -> None:
    require(device == "cpu" or device.startswith("cuda"), "--device", device, "cpu or cuda[:N]")
    require(not device.startswith("cuda") or torch.cuda.is_available(), "--device", device,
            "a device this machine has (CUDA is not available here)")


def cmd_repro(args: argparse.Namespace) -> int:
    """Replay a reproduction file on the implementation the user names: the file is data, the
    implementation it records is only shown."""
    max_elements = args.max_elements or MAX_CASE_ELEMENTS
    saved = read_case(args.case_file, max_elements=max_elements)
    meta = saved["meta"]
    console.print(f"case:  {saved['case'].short()}")
    console.print(f"check: {meta['check']} — saved failure: {meta['failure']}")
    console.print(f"recorded implementation: {meta['implementation']} ({meta['source'] or 'passed as an object'})")
    if meta.get("conventions"):  # the truth of the replay follows them too
        console.print(f"conventions: {declared_conventions.parse(meta['conventions']).describe()}")
    require(args.impl is not None, "--impl", args.impl,
            f"the implementation to replay the case on (a built-in or package.module:function; the file records "
            f"{meta['implementation']!r}, which normspec does not import on its own)")
    case, check, comparisons = api.replay_file(args.case_file, impl=args.impl, backward=args.backward,
                                              backward_from_output=args.backward_from_output,
                                              device=args.device, max_elements=max_elements)
    status = 0
    for comparison in comparisons:
        console.print(marked(("ok", "green") if comparison.ok else ("FAIL", "red"), f" {comparison.line()}"))
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
                mark = ("ok", "green") if comparison.ok else ("FAIL", "red")
                console.print(marked(f"{impl.name} {check} ", mark, f" {comparison.line()}"))
                status = max(status, 0 if comparison.ok else 1)
    console.print(f"case: {case.short()}")
    return status


def battery_rows() -> list[tuple[str, str, bool, str, float]]:
    """Run the battery on the built-in implementations; one summary row (variant, what, ok, note,
    seconds) per variant each."""
    rows = []

    for name in BUILTIN:
        result, implementation = api.builtin_battery(name)
        report.details(result, console)
        if report.ulp_line(result):
            console.print(report.ulp_line(result))
        console.print(report.summary_line(result))
        missing = [v for v in VARIANT_NAMES if v not in implementation.variants]  # torch: no fused or adaptive norms
        if missing:
            console.print(f"{name} provides no {', '.join(missing)}: not run")
        for variant in implementation.variants:
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
            if not values:
                raise argparse.ArgumentTypeError(f"{text!r}: expected at least one of {', '.join(choices)}")
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
    parser.add_argument("--backward-from-output", default=None, metavar="MODULE:FUNCTION",
                        help="a backward from the output y, e.g. layer_norm_backward_from_output(grad_out, y, "
                             "normalized_shape, rstd, weight, bias) -> (dx, dweight, dbias) (Apex's memory-efficient "
                             "form); it is handed --impl's y and rstd (the true rstd unless --abi aten)")
    parser.add_argument("--abi", choices=ABIS, default="functional",
                        help="the calling convention of --impl and --backward: functional (torch.nn.functional's, "
                             "default) or aten (the forward returns (y, mean, rstd) as "
                             "torch.ops.aten.native_layer_norm, the backward takes them and an output_mask as "
                             "native_layer_norm_backward)")
    parser.add_argument("--variant", type=listed(VARIANTS), default=None,
                        help="comma-separated (default: every variant; for a module, every one it provides)")
    parser.add_argument("--dtype", type=listed(DTYPES), default=list(DTYPES), help="comma-separated")
    parser.add_argument("--check", type=listed(tuple(CHECKS)), default=None, help="comma-separated")
    parser.add_argument("--array", choices=("torch", "numpy"), default=None,
                        help="the arrays --impl takes (default: probed with one call of each kind)")
    parser.add_argument("--convention", type=_convention_option, action="append", default=None,
                        metavar="KEY=VALUE", help="a convention --impl declares (repeatable), e.g. running_var=biased, "
                                                  "momentum=old; keys: " + ", ".join(declared_conventions.KEYS))
    parser.add_argument("--contract", choices=contracts.NAMES, default=None,
                        help="the precision contract --impl keeps, where it rounds (--convention contract=NAME): "
                             + "; ".join(f"{c.name}: {c.summary}" for c in contracts.CONTRACTS.values()))
    parser.add_argument("--option", type=_pinned_option, action="append", default=None, metavar="NAME=VALUE",
                        help="a keyword option --impl has fixed (repeatable), e.g. weight_offset=1 for a Gemma "
                             "kernel: every case uses it, and the keyword is passed only where the function "
                             "takes it (default: options are drawn and passed as keywords)")
    parser.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    parser.add_argument("--scale", choices=SCALES, default="small",
                        help="small (default): the battery's shapes; kernel: hidden sizes 2^k-1, 2^k, 2^k+1 up to "
                             "131073, row counts that are no multiple of a block, strided views and channels_last, "
                             "for the checks that compare with the truth and the memory hazards; huge: adds a "
                             "case of more than 2^31 elements where the memory it needs is available")
    parser.add_argument("--calls", type=_calls_option, default=None, metavar="K",
                        help="identical calls the deterministic check compares (default 5; a race may need 100)")
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
                        help="run every call in its own worker process (by default your --impl runs in one "
                             "supervised worker process: a hang or a crash fails one check and a new worker "
                             "carries on)")
    parser.add_argument("--in-process", action="store_true",
                        help="run your --impl in this process (for a debugger; a hang in native code or a "
                             "crash then ends the run)")
    parser.add_argument("--timeout", type=positive_seconds, default=60.0,
                        help="seconds per call, positive (default 60)")
    add_max_elements_option(parser)
    parser.add_argument("--seed", type=int, default=None, help="a random seed instead of the profile's "
                                                                 "derandomized examples")


def add_max_elements_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--max-elements", type=positive_int, default=MAX_CASE_ELEMENTS,
                        help=f"largest case (elements of x) a --case or a reproduction file may describe "
                             f"(default {MAX_CASE_ELEMENTS})")


def _impl_option(builtins_parser):
    """--impl is one import path (package.module:function, or package.module: a module of functions
    named after variants) or built-in names, comma-separated."""

    def parse(text: str):
        names = [part.strip() for part in text.split(",") if part.strip()]
        if ":" in text or (len(names) == 1 and names[0] not in BUILTIN):
            return text
        return builtins_parser(text)

    return parse


def _calls_option(text: str) -> int:
    calls = positive_int(text)
    if calls < 2:
        raise argparse.ArgumentTypeError(f"{text!r}: expected an int >= 2 (the first call and those compared with it)")
    return calls


def _pinned_option(text: str) -> str:
    """One ``--option name=value``, validated (an option of some variant, with a value it takes)."""
    try:
        parse_options([text], VARIANT_NAMES, argument="--option")
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None
    return text


def _convention_option(text: str) -> str:
    """One ``--convention key=value``, validated (the keys and values of verify.implementations.conventions)."""
    try:
        declared_conventions.parse([text], argument="--convention")
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None
    return text
