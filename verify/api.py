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

import dataclasses
import tempfile
from contextlib import nullcontext
import warnings
from pathlib import Path
from types import ModuleType
from typing import Callable, Iterable

from normspec.derive import variants
from normspec.derive.dtypes import DTYPES
from normspec.derive.errors import NormSpecError, check_timeout, require
from normspec.verify.cases.case import MAX_CASE_ELEMENTS, Case
from normspec.verify.checks import CHECKS
from normspec.verify.checks.oracle_checks import check_calls
from normspec.verify.implementations.base import ImplementationSummary
from normspec.verify.implementations.builtin import BUILTIN, SUPERVISED, builtin
from normspec.verify.implementations.conventions import parse as parse_conventions
from normspec.verify.implementations.conventions import with_contract
from normspec.verify.implementations.isolation import isolated
from normspec.verify.implementations.probing import build, build_module, parse_options
from normspec.verify.reporting.outputs import output_folder
from normspec.verify.reporting.report import Report
from normspec.verify.reporting.repro import read_case
from normspec.verify.running import battery as bat
from normspec.verify.running.supervisor import RunSpec, supervise
from normspec.verify.running.expected_failures import parse as parse_expected_failures
from normspec.verify.running.profiles import current_settings
from normspec.verify.running.scales import check_scale

__all__ = ["build", "build_module", "builtin_battery", "check", "replay_case", "replay_file"]


def builtin_battery(name: str, *, variants: Iterable[str] | None = None, dtypes: Iterable[str] = DTYPES,
                    checks: Iterable[str] | None = None, max_examples: int | None = None, seed: int | None = None,
                    device: str = "cpu", progress: Callable | None = None, timeout: float = 60.0,
                    scale: str = "small", calls: int | None = None):
    """(BatteryReport, implementation) of the battery on built-in ``name``: in this process, or for
    those whose ops can crash it (``builtin.SUPERVISED``) in a supervised worker process."""
    implementation = dataclasses.replace(builtin(name), device=device)
    variants = tuple(variants or implementation.variants)
    if name not in SUPERVISED:
        settings = current_settings(max_examples, seeded=seed is not None)
        return bat.run_battery(implementation, variants=variants, dtypes=dtypes, checks=checks,
                               hypothesis_settings=settings, seed=seed, progress=progress, scale=scale,
                               calls=calls), implementation
    spec = RunSpec(name, variants, tuple(dtypes), tuple(checks or CHECKS), timeout, device=device,
                   max_examples=max_examples, seed=seed, scale=scale, calls=calls)
    result, described = supervise(spec, progress=progress)
    return result, described or implementation


def check(impl: Callable | ModuleType | str, variant: str | Iterable[str] | None = None, *,
          backward: Callable | str | None = None, abi: str = "functional",
          backward_from_output: Callable | str | None = None,
          conventions: dict[str, object] | Iterable[str] | None = None, contract: str | None = None,
          options: dict[str, object] | Iterable[str] | None = None,
          device: str = "cpu", dtypes: Iterable[str] | None = None, checks: Iterable[str] | None = None,
          max_examples: int | None = None, expected_failures: Iterable[str] | str | Path | None = None,
          array: str | None = None, name: str | None = None, timeout: float = 60.0,
          isolate: bool = False, in_process: bool = False, artifacts: str | Path | None = None,
          seed: int | None = None, progress: Callable | None = None, strict: bool = False,
          scale: str = "small", calls: int | None = None) -> Report:
    """Run the battery on ``impl`` for ``variant``; see the module docstring.

    impl: a function of one variant (``variant`` names it; default 'layer_norm'), or a module
        (or ``"package.module"``) whose functions are named after variants: every variant it
        provides is checked (``variant`` may restrict them), the cross-variant identities among
        them included, and ``<variant>_backward`` functions are used where present.

    How it is called: given as an import path (``"package.module:function"``), the
        implementation runs in a supervised worker process (``verify.running.supervisor``):
        a hang in native code, an exit() or a crash fails the check in progress and the run
        goes on; this process never imports it. Given as an object (or with ``in_process``),
        it runs here: ``timeout`` interrupts Python code, but a hang inside native code cannot
        be interrupted (pass the import path). ``isolate``: every call in its own worker
        process. Either way, what a call changes in the process (directory, environment,
        torch's and NumPy's settings, RNG states) is put back and fails the check.

    conventions: how ``impl`` differs from torch on purpose, ``{"running_var": "biased"}`` or
        ``["running_var=biased", "momentum=old"]`` (keys: ``normspec.verify.implementations.conventions``);
        the truth follows them, no check is switched off. Default: torch's.

    abi: the calling convention of ``impl`` and ``backward``: 'functional' (``torch.nn.functional``'s
        signature, the default) or 'aten' (``normspec.derive.abi``: a forward returning (y, mean, rstd)
        as ``torch.ops.aten.native_layer_norm`` does, a backward taking them with an output_mask as
        ``native_layer_norm_backward`` does); the saved statistics are then checked too.

    backward_from_output: a backward from the output y (Apex's memory-efficient form,
        ``layer_norm_backward_from_output(grad_out, y, normalized_shape, rstd, weight, bias)``), checked
        by the backward_from_output check; its failures where the weight is small are told apart
        from bugs.

    scale: 'small' (the battery's shapes, default), 'kernel' (hidden sizes 2^k - 1, 2^k, 2^k + 1 up to
        131073, row counts that are no multiple of a block, strided views, for the checks that compare
        with the truth and the memory hazards; ``verify.cases.kernel``) or 'huge' (adds a case of more
        than 2^31 elements, run only where the memory it needs is available). calls: how many
        identical calls the deterministic check compares (default 5; races may need 100).

    contract: the precision contract ``impl`` keeps (``normspec.derive.contracts``: float32, llama,
        weight_dtype, input_dtype), the same as ``conventions=["contract=llama"]``: the contract
        check compares y with an exact emulation of where it rounds.

    options: keyword options ``impl`` has fixed, ``{"weight_offset": 1.0}`` or
        ``["weight_offset=1"]`` (a Gemma kernel with the offset built in): every case uses that
        value and the keyword is passed only where the function takes it. An option the
        function takes no keyword for is pinned to its default without being named here; the
        others are drawn (weight_offset: 0, 1 and 0.375) and passed as keywords.

    expected_failures: check ids (``variant::dtype::check``) or a file with one per line
        ('#' comments); they are reported as expected failures, and ids that match no
        check are warned about. An expected failure may carry bounds
        (``"layer_norm::float16::backward values=offset ratio<=4"``): a failure outside them
        fails again. artifacts: a folder for reproduction files (one ``.npz`` per failing
        check, named by implementation, variant, dtype and check; replayed by ``normspec
        repro``); none are written without it. strict: range limits (failures only beyond the
        dtype's working range) fail the report too. timeout: seconds per call, positive and finite.
    """
    timeout = check_timeout(timeout)
    check_scale(scale)
    check_calls(calls)
    conventions = with_contract(conventions, contract)
    dtypes = _validated(dtypes, DTYPES, "dtypes")
    pinned = parse_options(options, variants.NAMES)  # validated now; again per variant when built
    checks = _validated(checks, tuple(CHECKS), "checks")
    expected = parse_expected_failures(expected_failures)
    folder = output_folder(artifacts, argument="artifacts") if artifacts is not None else None
    module = isinstance(impl, ModuleType) or (isinstance(impl, str) and ":" not in impl)
    wanted = _wanted_variants(variant, module=module)
    require(backward is None or not module, "backward", backward,
            "None for a module (its <variant>_backward functions are used)")
    require(backward_from_output is None or not module, "backward_from_output", backward_from_output,
            "None for a module (its <variant>_backward_from_output functions are used)")
    require(abi == "functional" or not module, "abi", abi, "functional for a module (aten's forwards are functions)")
    # --isolate writes the case being called here (a crash of this process keeps it): into the
    # artifacts folder when there is one, else a temporary folder removed when the run ends
    pending_folder = (nullcontext(str(folder)) if folder is not None or not isolate
                      else tempfile.TemporaryDirectory(prefix="normspec-pending-"))
    with pending_folder as pending:
        if isinstance(impl, str) and not in_process and all(f is None or isinstance(f, str)
                                                              for f in (backward, backward_from_output)):
            spec = RunSpec(impl, wanted, tuple(dtypes), tuple(checks), timeout, backward=backward, device=device,
                           array=array, name=name, conventions=parse_conventions(conventions).declared(),
                           options=pinned, isolate=isolate, pending_folder=pending, expected_failures=expected,
                           max_examples=max_examples, seed=seed, abi=abi, backward_from_output=backward_from_output,
                           scale=scale, calls=calls)
            result, implementation = supervise(spec, progress=progress)
            execution = "a supervised runner process (a hang, an exit or a crash fails one check; the run goes on)"
        else:
            implementation = _built(impl, wanted, module=module, backward=backward, device=device, array=array,
                                    name=name, timeout=timeout, isolate=isolate, conventions=conventions,
                                    options=pinned, abi=abi, backward_from_output=backward_from_output)
            if isolate:
                implementation = isolated(implementation, artifacts=pending)
            settings = current_settings(max_examples, seeded=seed is not None)
            result = bat.run_battery(implementation, variants=list(wanted or implementation.functions),
                                     dtypes=dtypes, checks=checks, hypothesis_settings=settings,
                                     expected_failures=expected, seed=seed, progress=progress, scale=scale,
                                     calls=calls)
            execution = ("one worker process per call (--isolate)" if isolate else
                         "this process (a hang inside native code cannot be interrupted: pass an import path)")
    if implementation is None:  # every check failed before the implementation could be described
        implementation = _unbuilt(impl, name, device, conventions)
    chosen = wanted or tuple(implementation.variants)
    unknown = sorted(set(expected) - {f"{v}::{d}::{c}" for v in chosen for d in DTYPES for c in CHECKS})
    for entry in unknown:
        warnings.warn(f"expected failure {entry!r} matches no check of {', '.join(chosen)}", stacklevel=2)
    report = Report(result, implementation, unknown_expected=unknown, strict=strict, expected_failures=expected,
                    execution=execution)
    if folder is not None:
        report.write_artifacts(folder)
    return report


def _wanted_variants(variant, *, module: bool) -> tuple[str, ...] | None:
    """The variants to check: as given (validated), or None for 'every one a module provides'."""
    if variant is None:
        return None if module else ("layer_norm",)
    wanted = (variant,) if isinstance(variant, str) else tuple(variant)
    require(bool(wanted), "variant", variant, "at least one variant name")
    for each in wanted:
        variants.get(each)
    require(module or len(wanted) == 1, "variant", variant, "one variant name for a function")
    return wanted


def _built(impl, wanted, *, module: bool, **arguments):
    if module:
        for name in ("backward", "abi", "backward_from_output"):
            arguments.pop(name)
        return build_module(impl, variants_wanted=wanted, **arguments)
    return build(impl, wanted[0], **arguments)


def _unbuilt(impl, name, device, conventions) -> ImplementationSummary:
    label = name or (impl if isinstance(impl, str) else getattr(impl, "__name__", repr(impl)))
    return ImplementationSummary(label, "torch", None, device, {"impl": impl} if isinstance(impl, str) else {},
                                 parse_conventions(conventions), ())  # no options: nothing was built


def replay_case(impl: Callable | ModuleType | str, check: str, case: str | Case, *,
                backward: Callable | str | None = None, array: str | None = None, abi: str = "functional",
                backward_from_output: Callable | str | None = None,
                conventions: dict[str, object] | Iterable[str] | None = None,
                options: dict[str, object] | Iterable[str] | None = None, device: str = "cpu",
                max_elements: int = MAX_CASE_ELEMENTS) -> list:
    """The comparisons of ``check`` on one ``case`` (a Case or its JSON, as a failure prints it),
    re-run now on ``impl``: what a failure's printed reproduction calls."""
    require(check in CHECKS, "check", check, f"one of {', '.join(CHECKS)}")
    if not isinstance(case, Case):
        case = Case.from_json(case, argument="case", max_elements=max_elements)
    if isinstance(impl, ModuleType) or (isinstance(impl, str) and ":" not in impl):
        implementation = build_module(impl, device=device, array=array, conventions=conventions, options=options)
    else:
        implementation = build(impl, case.variant, backward=backward, device=device, array=array,
                               conventions=conventions, options=options, abi=abi,
                               backward_from_output=backward_from_output)
    return bat.check_case(implementation, check, case)


def replay_file(path: str | Path, *, impl: str, backward: str | None = None,
                backward_from_output: str | None = None, device: str = "cpu",
                max_elements: int = MAX_CASE_ELEMENTS) -> tuple[Case, str, list]:
    """(case, check name, comparisons) of a saved reproduction file, re-run now on ``impl``.

    The file is data: the implementation is the one the caller names (an import path or a
    built-in name), never the one stored in the file, which is only shown."""
    saved = read_case(path, max_elements=max_elements)
    meta, case = saved["meta"], saved["case"]
    require(isinstance(impl, str) and bool(impl), "--impl", impl,
            f"the implementation to replay it on (the file names {meta['implementation']!r}; "
            f"pass that import path yourself if you trust it)")
    if impl in BUILTIN:
        implementation = builtin(impl)
        implementation = dataclasses.replace(implementation, device=device)
    else:
        implementation = build(impl, case.variant, backward=backward, device=device, array=meta["array"],
                               conventions=meta.get("conventions"),  # as declared when it was written
                               options=meta.get("options"), abi=meta.get("abi", "functional"),
                               backward_from_output=backward_from_output)
    return case, meta["check"], bat.check_case(implementation, meta["check"], case)


def _validated(values: Iterable[str] | None, allowed: tuple[str, ...], argument: str) -> list[str]:
    if values is None:
        return list(allowed)
    values = [values] if isinstance(values, str) else list(values)
    require(bool(values), argument, values, f"at least one of {', '.join(allowed)}")
    unknown = [v for v in values if v not in allowed]
    if unknown:
        raise NormSpecError(f"{argument}={unknown!r}: expected some of {', '.join(allowed)}")
    return values
