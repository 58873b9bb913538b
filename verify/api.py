"""The harness's Python API: point the battery at your own implementation.

    import normspec
    report = normspec.check(my_layer_norm, "layer_norm", dtypes=("float32", "bfloat16"))
    assert report.ok, report.to_markdown()

``impl`` is a callable with the ``torch.nn.functional`` signature of ``variant`` (or an
import path ``"package.module:function"``), on torch tensors or NumPy arrays: detected
by a probe call, or stated with ``array=``. Gradients come from torch autograd when the
implementation is differentiable, else from ``backward`` (the signature of
``normspec.numpy_ref.*_backward``); without either it is checked forward-only, and the
report says so.
"""
from __future__ import annotations

import tempfile
import warnings
from pathlib import Path
from types import ModuleType
from typing import Callable, Iterable

from normspec.derive import variants
from normspec.derive.dtypes import DTYPES
from normspec.derive.errors import NormSpecError, require
from normspec.verify.cases.case import Case
from normspec.verify.checks import CHECKS
from normspec.verify.implementations.isolation import isolated
from normspec.verify.implementations.probing import build, build_module
from normspec.verify.reporting.report import Report
from normspec.verify.reporting.repro import read_case
from normspec.verify.running import battery as bat
from normspec.verify.running.expected_failures import parse as parse_expected_failures
from normspec.verify.running.profiles import current_settings

__all__ = ["build", "build_module", "check", "replay_file"]


def check(impl: Callable | ModuleType | str, variant: str | Iterable[str] | None = None, *,
          backward: Callable | str | None = None,
          conventions: dict[str, object] | Iterable[str] | None = None,
          device: str = "cpu", dtypes: Iterable[str] | None = None, checks: Iterable[str] | None = None,
          max_examples: int | None = None, expected_failures: Iterable[str] | str | Path | None = None,
          array: str | None = None, name: str | None = None, timeout: float | None = 60.0,
          isolate: bool = False, artifacts: str | Path | None = None, seed: int | None = None,
          progress: Callable | None = None, strict: bool = False) -> Report:
    """Run the battery on ``impl`` for ``variant``; see the module docstring.

    impl: a function of one variant (``variant`` names it; default 'layer_norm'), or a module
        (or ``"package.module"``) whose functions are named after variants: every variant it
        provides is checked (``variant`` may restrict them), the cross-variant identities among
        them included, and ``<variant>_backward`` functions are used where present.

    conventions: how ``impl`` differs from torch on purpose, ``{"running_var": "biased"}`` or
        ``["running_var=biased", "momentum=old"]`` (keys: ``normspec.verify.implementations.conventions``);
        the truth follows them, no check is switched off. Default: torch's.

    expected_failures: check ids (``variant::dtype::check``) or a file with one per line
        ('#' comments); they are reported as expected failures, and ids that match no
        check are warned about. isolate: run every call in a worker process, so that a
        kernel that crashes the process is reported, not fatal. artifacts: a folder for
        reproduction files (one ``.npz`` per failing check, replayed by ``normspec repro``);
        by default a new temporary folder, created only when something fails. An expected
        failure may carry bounds (``"layer_norm::float16::backward values=offset ratio<=4"``):
        a failure outside them fails again. strict: range limits (failures only beyond the
        dtype's working range) fail the report too.
    """
    if isinstance(impl, ModuleType) or (isinstance(impl, str) and ":" not in impl):
        wanted = None if variant is None else tuple([variant] if isinstance(variant, str) else variant)
        for each in wanted or ():
            variants.get(each)
        require(backward is None, "backward", backward, "None for a module (its <variant>_backward functions are used)")
        implementation = build_module(impl, variants_wanted=wanted, device=device, array=array, name=name,
                                      timeout=timeout, isolate=isolate, conventions=conventions)
        chosen = list(wanted or implementation.functions)
    else:
        variant = variant or "layer_norm"
        if not isinstance(variant, str) and len(list(variant)) == 1:
            variant = list(variant)[0]
        require(isinstance(variant, str), "variant", variant, "one variant name for a function")
        variants.get(variant)
        implementation = build(impl, variant, backward=backward, device=device, array=array, name=name,
                               timeout=timeout, isolate=isolate, conventions=conventions)
        chosen = [variant]
    dtypes = _validated(dtypes, DTYPES, "dtypes")
    checks = _validated(checks, tuple(CHECKS), "checks")
    expected = parse_expected_failures(expected_failures)
    unknown = sorted(set(expected) - {f"{v}::{d}::{c}" for v in chosen for d in DTYPES for c in CHECKS})
    for entry in unknown:
        warnings.warn(f"expected failure {entry!r} matches no check of {', '.join(chosen)}", stacklevel=2)
    if isolate:
        artifacts = artifacts or tempfile.mkdtemp(prefix="normspec-")  # the pending case survives a crash
        implementation = isolated(implementation, artifacts=artifacts)
    settings = None
    if max_examples or seed is not None:
        settings = current_settings(max_examples, seeded=seed is not None)
    result = bat.run_battery(implementation, variants=chosen, dtypes=dtypes, checks=checks,
                             hypothesis_settings=settings, expected_failures=expected, seed=seed, progress=progress)
    report = Report(result, implementation, unknown_expected=unknown, strict=strict, expected_failures=expected)
    if not report.ok:  # every failure gets its reproduction file (a temporary folder unless given)
        report.write_artifacts(Path(artifacts or tempfile.mkdtemp(prefix="normspec-")))
    return report


def replay_file(path: str | Path, *, impl: str | None = None, backward: str | None = None,
                device: str = "cpu") -> tuple[Case, str, list]:
    """(case, check name, comparisons) of a saved reproduction file, re-run now."""
    saved = read_case(path)
    meta, case = saved["meta"], saved["case"]
    impl = impl or meta["source"].get("impl")
    if impl is None:
        raise NormSpecError(f"CASE={str(path)!r}: the implementation was passed as an object, not an import "
                            f"path; give it with --impl package.module:function")
    backward = backward or meta["source"].get("backward")
    implementation = build(impl, case.variant, backward=backward, device=device, array=meta["array"],
                           conventions=meta.get("conventions"))  # as declared when it was written
    return case, meta["check"], bat.check_case(implementation, meta["check"], case)


def _validated(values: Iterable[str] | None, allowed: tuple[str, ...], argument: str) -> list[str]:
    if values is None:
        return list(allowed)
    values = [values] if isinstance(values, str) else list(values)
    unknown = [v for v in values if v not in allowed]
    if unknown:
        raise NormSpecError(f"{argument}={unknown!r}: expected some of {', '.join(allowed)}")
    return values
