"""The harness's Python API: point the battery at your own implementation.

    import verify
    report = verify.check(my_layer_norm, "layer_norm", dtypes=("float32", "bfloat16"))
    assert report.ok, report.to_markdown()

``impl`` is a callable with the ``torch.nn.functional`` signature of ``variant`` (or an
import path ``"package.module:function"``), on torch tensors or NumPy arrays: detected
by a probe call, or stated with ``array=``. Gradients come from torch autograd when the
implementation is differentiable, else from ``backward`` (the signature of
``reference.numpy_ref.*_backward``); without either it is checked forward-only, and the
report says so.
"""
from __future__ import annotations

import tempfile
import warnings
from pathlib import Path
from typing import Callable, Iterable

import numpy as np
import torch

from derive.errors import NormSpecError
from derive.spec import require
from verify import battery as bat
from verify.case import DTYPES, Case
from verify.checks import CHECKS
from verify.implementation import CallTimeout, Implementation, time_limit
from verify.loading import load
from verify.report import Report

VARIANTS = bat.VARIANTS


def check(impl: Callable | str, variant: str = "layer_norm", *, backward: Callable | str | None = None,
          device: str = "cpu", dtypes: Iterable[str] | None = None, checks: Iterable[str] | None = None,
          max_examples: int | None = None, expected_failures: Iterable[str] | str | Path | None = None,
          array: str | None = None, name: str | None = None, timeout: float | None = 60.0,
          isolate: bool = False, artifacts: str | Path | None = None, seed: int | None = None,
          progress: Callable | None = None) -> Report:
    """Run the battery on ``impl`` for ``variant``; see the module docstring.

    expected_failures: check ids (``variant::dtype::check``) or a file with one per line
        ('#' comments); they are reported as expected failures, and ids that match no
        check are warned about. isolate: run every call in a worker process, so that a
        kernel that crashes the process is reported, not fatal. artifacts: a folder for
        reproduction files (one ``.npz`` per failing check, replayed by ``normspec repro``);
        by default a new temporary folder, created only when something fails.
    """
    implementation = build(impl, variant, backward=backward, device=device, array=array, name=name,
                           timeout=timeout, isolate=isolate)
    dtypes = _validated(dtypes, DTYPES, "dtypes")
    checks = _validated(checks, tuple(CHECKS), "checks")
    expected = read_expected(expected_failures)
    unknown = sorted(expected - {f"{variant}::{d}::{c}" for d in DTYPES for c in CHECKS})
    for entry in unknown:
        warnings.warn(f"expected failure {entry!r} matches no check of {variant}", stacklevel=2)
    if isolate:
        from verify.isolation import isolated

        artifacts = artifacts or tempfile.mkdtemp(prefix="normspec-")  # the pending case survives a crash
        implementation = isolated(implementation, artifacts=artifacts)
    settings = None
    if max_examples or seed is not None:
        from verify.profiles import current_settings

        settings = current_settings(max_examples, seeded=seed is not None)
    result = bat.run_battery(implementation, variants=[variant], dtypes=dtypes, checks=checks,
                             hypothesis_settings=settings, expected=expected, seed=seed, progress=progress)
    report = Report(result, implementation, unknown_expected=unknown)
    if not report.ok:  # every failure gets its reproduction file (a temporary folder unless given)
        report.write_artifacts(Path(artifacts or tempfile.mkdtemp(prefix="normspec-")))
    return report


def build(impl: Callable | str, variant: str, *, backward: Callable | str | None = None, device: str = "cpu",
          array: str | None = None, name: str | None = None, timeout: float | None = None,
          isolate: bool = False) -> Implementation:
    """An :class:`Implementation` of one variant from a callable or an import path.

    The array kind and differentiability are probed by calling ``impl`` on a small case,
    under the time limit, and in a worker process when ``isolate`` (a probe may crash).
    """
    require(variant in VARIANTS, "variant", variant, f"one of {', '.join(VARIANTS)}")
    require(array in (None, "torch", "numpy"), "array", array, "'torch', 'numpy' or None (detect)")
    source = {}
    if isinstance(impl, str):
        source["impl"] = impl
        impl = load(impl, argument="impl")
    if isinstance(backward, str):
        source["backward"] = backward
        backward = load(backward, argument="backward")
    require(callable(impl), "impl", impl, "a callable or 'package.module:function'")
    require(backward is None or callable(backward), "backward", backward, "a callable or an import path")
    array, differentiable = probe(impl, variant, array, timeout=timeout, isolate=isolate)
    gradients = "autograd" if differentiable else ("backward" if backward else None)
    if gradients == "autograd" and backward is not None:
        gradients = "backward"  # a supplied backward is what the user wants checked
    label = name or source.get("impl") or getattr(impl, "__qualname__", repr(impl))
    return Implementation(label, {variant: impl}, array=array, gradients=gradients,
                          backwards={variant: backward} if backward else {}, device=device, timeout=timeout,
                          source=source)


def probe(impl: Callable, variant: str, array: str | None, *, timeout: float | None = None,
          isolate: bool = False) -> tuple[str, bool]:
    """(array kind, differentiable) of ``impl``; a probe that crashes or hangs decides 'torch',
    not differentiable, and the checks then report what goes wrong."""
    if isolate:
        from concurrent.futures import ProcessPoolExecutor
        from multiprocessing import get_context

        with ProcessPoolExecutor(max_workers=1, mp_context=get_context("spawn")) as pool:
            try:
                return pool.submit(_probe_here, impl, variant, array, timeout).result(timeout=(timeout or 60) * 3)
            except Exception:  # noqa: BLE001 - the worker died or hung: decided by the checks
                return array or "torch", False
    return _probe_here(impl, variant, array, timeout)


def _probe_here(impl: Callable, variant: str, array: str | None, timeout: float | None) -> tuple[str, bool]:
    try:
        with time_limit(timeout):
            array = array or detect_array(impl, variant)
            return array, array == "torch" and is_differentiable(impl, variant)
    except CallTimeout:
        return array or "torch", False


def _probe_case(variant: str) -> Case:
    return Case(variant, (2, 4, 3), num_groups=2, training=True)


def detect_array(impl: Callable, variant: str) -> str:
    """'torch' if ``impl`` returns a tensor for tensor inputs, 'numpy' if it works on arrays."""
    case = _probe_case(variant)
    arrays = case.arrays()
    try:
        out = case.call(impl, case.torch_tensor(arrays["x"]), case.torch_tensor(arrays["weight"]),
                        case.torch_tensor(arrays["bias"]))
        if isinstance(out, torch.Tensor):
            return "torch"
    except CallTimeout:
        raise
    except Exception:  # noqa: BLE001 - the probe decides between two kinds; errors show in the checks
        pass
    try:
        out = case.call(impl, arrays["x"], arrays["weight"], arrays["bias"])
        if isinstance(out, np.ndarray):
            return "numpy"
    except Exception:  # noqa: BLE001
        pass
    return "torch"  # undecidable: the checks will report what goes wrong


def is_differentiable(impl: Callable, variant: str) -> bool:
    case = _probe_case(variant)
    x = case.torch_tensor(case.arrays()["x"]).requires_grad_()
    try:
        out = case.call(impl, x)
        return isinstance(out, torch.Tensor) and out.requires_grad
    except CallTimeout:
        raise
    except Exception:  # noqa: BLE001
        return False


def read_expected(expected: Iterable[str] | str | Path | None) -> set[str]:
    """Check ids from an iterable, or from a file with one id per line and '#' comments."""
    if expected is None:
        return set()
    if isinstance(expected, (str, Path)):
        path = Path(expected)
        require(path.is_file(), "expected_failures", str(expected), "a file with one check id per line")
        lines = path.read_text().splitlines()
        return {line.split("#", 1)[0].strip() for line in lines if line.split("#", 1)[0].strip()}
    return set(expected)


def _validated(values: Iterable[str] | None, allowed: tuple[str, ...], argument: str) -> list[str]:
    if values is None:
        return list(allowed)
    values = [values] if isinstance(values, str) else list(values)
    unknown = [v for v in values if v not in allowed]
    if unknown:
        raise NormSpecError(f"{argument}={unknown!r}: expected some of {', '.join(allowed)}")
    return values
