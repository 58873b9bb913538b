"""--isolate: every call of the implementation runs in a worker process.

A kernel that segfaults, aborts or calls exit() takes down only the worker: the call is
reported as a failure naming the exit code or signal, and a fresh worker serves the next
call. A call that hangs past the time limit is killed. When an artifacts folder is given,
each case is written to ``pending_case.json`` before the call, so a crash never loses it.
"""
from __future__ import annotations

import multiprocessing as mp
import signal
from pathlib import Path
from typing import Any

from normspec.verify.cases.case import Case
from normspec.verify.implementations.base import CallTimeout, Implementation, ImplementationCrashed, RunResult
from normspec.verify.implementations.guard import describe_error

DEFAULT_TIMEOUT = 120.0


def _serve(connection, implementation: Implementation) -> None:
    """Worker loop: run each (case, arrays, gradients) request, answer with the result or the error."""
    while True:
        try:
            request = connection.recv()
        except EOFError:
            return
        case_json, arrays, gradients = request
        try:
            result = implementation.run(Case.from_json(case_json), arrays, gradients=gradients)
            connection.send(("ok", result))
        except Exception as error:  # noqa: BLE001 - any error is the implementation's, reported
            connection.send(("error", (type(error).__name__, describe_error(error))))


class Isolated:
    """An Implementation whose ``run`` happens in a worker process; everything else delegates."""

    def __init__(self, inner: Implementation, *, artifacts: str | Path | None = None):
        self.inner, self.artifacts = inner, Path(artifacts) if artifacts else None
        self._process: Any = None
        self._connection: Any = None

    def __getattr__(self, name: str):
        return getattr(self.inner, name)

    def _start(self) -> None:
        context = mp.get_context("spawn")
        parent, child = context.Pipe()
        self._process = context.Process(target=_serve, args=(child, self.inner), daemon=True)
        self._process.start()
        self._connection = parent

    def _stop(self) -> None:
        if self._process is not None:
            self._process.kill()
            self._process.join(5)
        self._process = self._connection = None

    def run(self, case: Case, arrays: dict, *, gradients: bool = True) -> RunResult:
        if self.artifacts is not None:
            write_pending(self.artifacts, case)
        if self._process is None or not self._process.is_alive():
            self._start()
        self._connection.send((case.to_json(), arrays, gradients))
        limit = self.inner.timeout or DEFAULT_TIMEOUT
        # the worker's own alarm fires at the limit; the grace lets it answer before it is killed
        if not self._connection.poll(limit * 1.5 + 1):
            self._stop()
            raise CallTimeout(f"the call did not return within {limit:g} s (worker process killed)")
        try:
            status, payload = self._connection.recv()
        except EOFError:
            self._process.join(10)  # the pipe closes before the process is reaped
            code = self._process.exitcode
            self._stop()
            raise ImplementationCrashed(f"the implementation killed its process ({describe_exit(code)}) "
                                        f"on {case.short()}") from None
        if status == "error":
            name, message = payload
            if name == CallTimeout.__name__:  # fatal: the search stops calling it
                self._stop()
                raise CallTimeout(message)
            raise AssertionError(message)
        return payload

    def __del__(self):
        try:
            self._stop()
        except Exception:  # noqa: BLE001 - interpreter shutdown
            pass


def write_pending(folder: Path, case: Case) -> Path:
    """The case about to be run, written before the call (an isolated crash keeps it)."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "pending_case.json"
    path.write_text(case.to_json() + "\n")
    return path


def describe_exit(code: int | None) -> str:
    if code is None:
        return "no exit code"
    if code < 0:
        try:
            return f"killed by signal {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit code {code}"


def isolated(implementation: Implementation, *, artifacts: str | Path | None = None) -> Isolated:
    return Isolated(implementation, artifacts=artifacts)
