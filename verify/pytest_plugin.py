"""pytest plugin (entry point ``pytest11``): the battery as test items.

    pytest --pyargs verify --normspec-impl package.module:function --normspec-variant layer_norm

collects one test per (check, dtype), with stable ids ``<variant>-<dtype>-<check>`` (the
check id ``variant::dtype::check`` with '-'), so that an expected-failures file keeps
working across runs; ids in that file that match no test are warned about. In your own
test files:

    @verify.parametrize_checks(my_layer_norm, variant="layer_norm")
    def test_my_layer_norm(normspec_check):
        normspec_check.run()

This module imports only pytest and the standard library at load time; torch and the
battery are imported when a check runs.
"""
from __future__ import annotations

import functools
import warnings
from dataclasses import dataclass
from typing import Any, Callable, Iterable

import pytest

from normspec.derive.dtypes import DTYPES
from normspec.verify.running.expected_failures import parse as parse_expected_failures
from normspec.verify.running.expected_failures import test_id



def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("normspec", "normspec: check a normalization implementation")
    group.addoption("--normspec-impl", default=None, help="package.module:function to check")
    group.addoption("--normspec-variant", default="layer_norm", help="its variant (default layer_norm)")
    group.addoption("--normspec-backward", default=None, help="package.module:function, signature of "
                                                              "reference.numpy_ref.*_backward")
    group.addoption("--normspec-dtype", default=",".join(DTYPES), help="comma-separated dtypes")
    group.addoption("--normspec-check", default=None, help="comma-separated checks (default: all)")
    group.addoption("--normspec-device", default="cpu")
    group.addoption("--normspec-strict", action="store_true", default=False,
                    help="fail on range limits too (failures only beyond the dtype's working range)")
    group.addoption("--normspec-expected-failures", default=None,
                    help="file of test ids (variant-dtype-check or variant::dtype::check) expected to fail")
    group.addoption("--normspec-convention", action="append", default=None, metavar="KEY=VALUE",
                    help="a convention the implementation declares (repeatable), e.g. running_var=biased")
    group.addoption("--normspec-contract", default=None, metavar="NAME",
                    help="the precision contract the implementation keeps (float32, llama, weight_dtype, input_dtype)")
    group.addoption("--normspec-abi", default="functional", choices=("functional", "aten"),
                    help="aten: the forward returns (y, mean, rstd) and --normspec-backward takes them (aten's signatures)")
    group.addoption("--normspec-backward-from-output", default=None, metavar="MODULE:FUNCTION",
                    help="a backward from the output y (layer_norm_backward_from_output's signature)")
    group.addoption("--normspec-scale", default="small", choices=("small", "kernel", "huge"),
                    help="small (default), kernel (kernel-scale shapes and views) or huge (more than 2^31 elements)")
    group.addoption("--normspec-calls", type=int, default=None, metavar="K",
                    help="identical calls the deterministic check compares (default 5)")
    group.addoption("--normspec-option", action="append", default=None, metavar="NAME=VALUE",
                    help="a keyword option the implementation has fixed (repeatable), e.g. weight_offset=1")


@dataclass
class NormspecCheck:
    """One (check, dtype) of one implementation, run as a test."""

    impl: Any  # callable or import path
    variant: str
    dtype: str
    check: str
    backward: Any = None
    device: str = "cpu"
    expected_failure: Any = None  # the listed ExpectedFailure entry (with its bounds), if any
    strict: bool = False  # range limits fail too
    conventions: Any = None  # the declared Conventions (None: torch's)
    options: tuple = ()  # the pinned options, as sorted (name, value) pairs (hashable: the build is cached)
    abi: str = "functional"  # 'aten': the forward returns its saved statistics, the backward takes them
    backward_from_output: Any = None  # a backward from y (derive.abi.FROM_OUTPUT)
    scale: str = "small"  # the battery's scale: small, kernel or huge (verify.running.scales)
    calls: int | None = None  # identical calls the deterministic check compares (None: 5)

    @property
    def id(self) -> str:
        return test_id(f"{self.variant}::{self.dtype}::{self.check}")

    def run(self) -> None:
        """Pass, fail with the minimal case and its reproduction, skip or xfail."""
        from normspec.verify.running.battery import EXPECTED, FAILED, RANGE_LIMIT, SKIPPED, run_check
        from normspec.verify.checks import CHECKS

        from normspec.verify.reporting.report import calling_flags, reproduction

        implementation = _implementation(self.impl, self.variant, self.backward, self.device, self.conventions,
                                         self.options, self.abi, self.backward_from_output)
        listed = {self.expected_failure.check_id: self.expected_failure} if self.expected_failure else {}
        report = run_check(implementation, CHECKS[self.check], self.variant, self.dtype, expected_failures=listed,
                           scale=self.scale, calls=self.calls)
        if report.status == SKIPPED:
            pytest.skip(report.reason)
        if report.status == EXPECTED:
            pytest.xfail(report.reason)
        if report.status == RANGE_LIMIT:
            if self.strict:
                pytest.fail(f"{report.id}: {report.reason}", pytrace=False)
            warnings.warn(f"normspec: {report.id}: {report.reason}", stacklevel=1)
        if report.status == FAILED:
            message = f"{report.id}: {report.reason}"
            if report.case is not None:
                message += (f"\n  minimal case: {report.case.short()}\n  reproduce: "
                            f"{reproduction(report, implementation.conventions, implementation.options, calling_flags(implementation))}")
            pytest.fail(message, pytrace=False)


@functools.lru_cache(maxsize=None)
def _implementation(impl: Any, variant: str, backward: Any, device: str, conventions: Any = None,
                    options: tuple = (), abi: str = "functional", backward_from_output: Any = None):
    from normspec.verify.api import build

    return build(impl, variant, backward=backward, device=device, conventions=conventions, options=dict(options),
                 abi=abi, backward_from_output=backward_from_output)


def parametrize_checks(impl: Callable | str, *, variant: str, dtypes: Iterable[str] = DTYPES,
                       checks: Iterable[str] | None = None, backward: Callable | str | None = None,
                       device: str = "cpu", expected_failures: Iterable[str] = (),
                       conventions: dict | Iterable[str] | None = None, contract: str | None = None,
                       options: dict | Iterable[str] | None = None, abi: str = "functional",
                       backward_from_output: Callable | str | None = None, scale: str = "small",
                       calls: int | None = None, strict: bool = False) -> pytest.MarkDecorator:
    """``pytest.mark.parametrize`` over the battery: the test gets ``normspec_check``."""
    from normspec.verify.checks import CHECKS

    items = _items(impl, variant, dtypes, checks or list(CHECKS), backward, device,
                   parse_expected_failures(expected_failures), strict)
    from normspec.verify.implementations.conventions import with_contract

    _declare(items, with_contract(conventions, contract), argument="conventions")
    _pin(items, options, variant, argument="options")
    _calling(items, abi, backward_from_output)
    _scaled(items, scale, calls)
    return pytest.mark.parametrize("normspec_check", items, ids=[item.id for item in items])


def _calling(items: list[NormspecCheck], abi: str, backward_from_output: Any) -> None:
    """The calling convention and the backward from the output on every item (validated now)."""
    from normspec.derive.abi import check_abi

    check_abi(abi)
    for item in items:
        item.abi, item.backward_from_output = abi, backward_from_output


def _scaled(items: list[NormspecCheck], scale: str, calls: int | None) -> None:
    """The battery's scale and the deterministic check's calls on every item (validated now)."""
    from normspec.verify.checks.oracle_checks import check_calls
    from normspec.verify.running.scales import check_scale

    check_scale(scale)
    check_calls(calls)
    for item in items:
        item.scale, item.calls = scale, calls


def _declare(items: list[NormspecCheck], conventions: Any, *, argument: str) -> None:
    """The implementation's declared conventions on every item (validated now, at collection)."""
    from normspec.verify.implementations.conventions import parse

    declared = parse(conventions, argument=argument)
    for item in items:
        item.conventions = declared


def _pin(items: list[NormspecCheck], options: Any, variant: str, *, argument: str) -> None:
    """The implementation's pinned options on every item (validated now, at collection)."""
    from normspec.verify.implementations.probing import parse_options

    pinned = tuple(sorted(parse_options(options, (variant,), argument=argument).items()))
    for item in items:
        item.options = pinned


def _items(impl, variant: str, dtypes: Iterable[str], checks: Iterable[str], backward, device: str,
           entries: dict, strict: bool) -> list[NormspecCheck]:
    """One item per (check, dtype), each with its listed expected failure; unknown entries warned about."""
    items = [NormspecCheck(impl, variant, dtype, check, backward, device, strict=strict)
             for check in checks for dtype in dtypes]
    by_id = {test_id(check_id): entry for check_id, entry in entries.items()}
    for item in items:
        item.expected_failure = by_id.get(item.id)
    for entry in sorted(set(by_id) - {item.id for item in items}):
        warnings.warn(f"normspec: expected failure {entry!r} matches no test", stacklevel=3)
    return items


def pytest_configure(config: pytest.Config) -> None:
    """Validate the --normspec-* selections before collection: a usage error (pytest's exit 4),
    not every test skipped and a green run."""
    if config.getoption("--normspec-impl", default=None) is not None:
        _selections(config)


def _selections(config: pytest.Config) -> tuple[list[str], list[str]]:
    """(checks, dtypes) named by the options, validated (the variant too)."""
    from normspec.derive import variants
    from normspec.verify.checks import CHECKS

    option = config.getoption
    checks = _selection(option("--normspec-check"), tuple(CHECKS), "--normspec-check") or list(CHECKS)
    dtypes = _selection(option("--normspec-dtype"), DTYPES, "--normspec-dtype")
    _selection(option("--normspec-variant"), variants.NAMES, "--normspec-variant", one=True)
    if not dtypes:
        raise pytest.UsageError(f"--normspec-dtype={option('--normspec-dtype')!r}: expected at least one of "
                                f"{', '.join(DTYPES)}")
    return checks, dtypes


def _selection(text: str | None, allowed: tuple[str, ...], option: str, *, one: bool = False) -> list[str]:
    """The comma-separated names of ``option``, each one of ``allowed`` (a usage error otherwise:
    an unknown name must not skip every test and pass)."""
    names = [n.strip() for n in (text or "").split(",") if n.strip()]
    unknown = [n for n in names if n not in allowed]
    if unknown or (text is not None and not names) or (one and len(names) != 1):
        wanted = "one of" if one else "some of"
        raise pytest.UsageError(f"{option}={text!r}: expected {wanted} {', '.join(allowed)}")
    return names


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Parametrize ``normspec_command_line_check`` from the --normspec-* options."""
    if "normspec_command_line_check" not in metafunc.fixturenames:
        return
    option = metafunc.config.getoption
    impl = option("--normspec-impl")
    if impl is None:
        metafunc.parametrize("normspec_command_line_check", [None], ids=["no-impl"])
        return
    from normspec.verify.checks import CHECKS

    checks, dtypes = _selections(metafunc.config)
    entries = parse_expected_failures(option("--normspec-expected-failures"), argument="--normspec-expected-failures")
    items = _items(impl, option("--normspec-variant"), dtypes, checks, option("--normspec-backward"),
                   option("--normspec-device"), entries, option("--normspec-strict"))
    contract = option("--normspec-contract")
    conventions = [*(option("--normspec-convention") or []), *([f"contract={contract}"] if contract else [])]
    _declare(items, conventions or None, argument="--normspec-convention")
    _pin(items, option("--normspec-option"), option("--normspec-variant"), argument="--normspec-option")
    _calling(items, option("--normspec-abi"), option("--normspec-backward-from-output"))
    _scaled(items, option("--normspec-scale"), option("--normspec-calls"))
    metafunc.parametrize("normspec_command_line_check", items, ids=[item.id for item in items])
