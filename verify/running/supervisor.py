"""A supervised battery: the implementation runs in a worker process, the report stays here.

``normspec verify --impl package.module[:function]`` (and ``normspec.check`` given an import
path) runs the battery in one *runner* process, which imports the implementation (this process
never does), probes it and runs every search, sending each finished check report back.
Runners are forked from a ``forkserver`` that has imported torch and normspec once (a runner
starts in about 10 ms instead of the 1.7 s of a fresh interpreter) and that never runs any
implementation; each runner takes this process's current directory, ``sys.path`` and
environment as they are when it starts. Calls stay in the runner, so they cost what they cost in
process. This process watches it:

- before each call the runner publishes the call's deadline and case in shared memory
  (``guard.watch``); a call still running :func:`grace` seconds after its time limit (stuck in native
  code, or a Python loop that swallows the interrupt) gets its runner killed;
- a runner that ends (an ``exit()``, a segfault, an abort, a kill) or is killed fails the
  check in progress, with the case it was calling, and a new runner carries on with the
  checks that remain;
- a hang or an exit while importing is an input error (the run cannot start); one in the
  probe call fails every check (the implementation cannot be called on a small case).

So every run ends with its report, whatever the implementation does.
"""
from __future__ import annotations

import dataclasses

import ctypes
import faulthandler
import multiprocessing
import os
import signal
import sys
import tempfile
import time
import traceback
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from normspec.derive.errors import NormSpecError
from normspec.derive.variants import NAMES as VARIANT_NAMES
from normspec.verify.cases.case import Case
from normspec.verify.checks import CHECKS
from normspec.verify.implementations import guard
from normspec.verify.implementations.base import Implementation, describe_implementation
from normspec.verify.implementations.isolation import describe_exit, isolated
from normspec.verify.implementations.loading import load, load_module
from normspec.verify.implementations.builtin import BUILTIN, builtin
from normspec.verify.running import deviations
from normspec.verify.implementations.probing import build, build_module
from normspec.verify.running import battery as bat
from normspec.verify.running.profiles import current_settings

POLL_SECONDS = 0.1
STACK_SIGNAL = signal.SIGUSR1  # asks a runner for the stacks of its threads before it is killed
STACK_LINES = 5  # of the stuck thread's stack, in the failure's reason
# imported once by the forkserver, so that a runner starts without importing them
PRELOADED = ["numpy", "torch", "hypothesis", "normspec.verify.running.supervisor"]
CASE_BYTES = 8192  # room for the JSON of the case being called
RESTARTS_WITHOUT_PROGRESS = 3  # runners that die before finishing any check, then the rest fails


def grace(timeout: float) -> float:
    """How long past its limit a call may run before its runner is killed: the in-process
    alarm gets the first chance."""
    return 1.0 + 0.5 * timeout


class HarnessError(RuntimeError):
    """normspec itself failed in the runner (not the implementation): exit status 3."""


@dataclass(frozen=True)
class RunSpec:
    """Everything the runner needs, as plain data (the implementation by import path)."""

    impl: str
    variants: tuple[str, ...] | None
    dtypes: tuple[str, ...]
    checks: tuple[str, ...]
    timeout: float
    backward: str | None = None
    device: str = "cpu"
    array: str | None = None
    name: str | None = None
    conventions: dict = field(default_factory=dict)
    options: dict = field(default_factory=dict)  # pinned keyword options ({"weight_offset": 1.0})
    isolate: bool = False
    pending_folder: str | None = None  # for --isolate: the case being called is written here
    expected_failures: dict = field(default_factory=dict)
    max_examples: int | None = None
    seed: int | None = None
    abi: str = "functional"
    backward_from_output: str | None = None
    scale: str = "small"  # the battery's scale (verify.running.scales)
    calls: int | None = None  # the deterministic check's calls (None: its default)

    @property
    def is_module(self) -> bool:
        return ":" not in self.impl


class SharedWatch(guard.Watch):
    """The runner's side of the watch: the deadline and the case of the call in progress."""

    def __init__(self, deadline, case):
        self.deadline, self.case = deadline, case

    def arm(self, seconds: float | None, case) -> None:
        self.case.value = (case.to_json() if isinstance(case, Case) else "").encode()[:CASE_BYTES - 1]
        self.deadline.value = guard.monotonic() + (seconds or float("inf"))

    def disarm(self) -> None:
        self.deadline.value = 0.0


# --- the runner process ---------------------------------------------------------------------

@dataclass(frozen=True)
class Surroundings:
    """What a runner takes from the process that starts it (a forked runner would otherwise have
    the forkserver's, as they were when it started)."""

    cwd: str
    path: tuple[str, ...]
    environment: dict

    @classmethod
    def here(cls) -> "Surroundings":
        return cls(os.getcwd(), tuple(sys.path), dict(os.environ))

    def enter(self) -> None:
        os.chdir(self.cwd)
        sys.path[:] = list(self.path)
        os.environ.clear()
        os.environ.update(self.environment)


def _runner(connection, spec: RunSpec, done: frozenset, deadline, case, surroundings: Surroundings,
            stack_path: str) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the supervisor's to handle
    stack_file = open(stack_path, "w")  # noqa: SIM115 - open for the process's life: faulthandler writes to it
    faulthandler.register(STACK_SIGNAL, file=stack_file, all_threads=True)  # where a stuck call is
    surroundings.enter()
    guard.install_watch(SharedWatch(deadline, case))
    try:
        _run(connection, spec, done)
    except NormSpecError as error:
        connection.send(("input error", str(error)))
    except Exception:  # noqa: BLE001 - normspec's own failure, reported as such
        connection.send(("harness error", traceback.format_exc()))


def _run(connection, spec: RunSpec, done: frozenset) -> None:
    connection.send(("importing", None))
    implementation, planned = _build(connection, spec)
    connection.send(("built", describe_implementation(implementation)))
    settings = current_settings(spec.max_examples, seeded=spec.seed is not None)
    for variant, dtype, check in planned:
        item = f"{variant}::{dtype}::{check}"
        if item in done:
            continue
        connection.send(("start", item))
        report = bat.run_check(implementation, CHECKS[check], variant, dtype, hypothesis_settings=settings,
                               expected_failures=spec.expected_failures, seed=spec.seed, scale=spec.scale,
                               calls=spec.calls)
        connection.send(("report", report))
    connection.send(("end", None))


def _build(connection, spec: RunSpec) -> tuple[Implementation, list[tuple[str, str, str]]]:
    """The implementation, imported and probed, and the plan of its searches (sent before the
    probe: a probe that hangs or crashes fails every planned check)."""
    if spec.impl in BUILTIN:  # a built-in whose ops can crash the process (torch_aten's)
        implementation = dataclasses.replace(builtin(spec.impl), device=spec.device, timeout=spec.timeout)
        planned = bat.plan(spec.variants or implementation.variants, spec.dtypes, spec.checks)
        connection.send(("planned", planned))
        return implementation, planned
    guard.watch.arm(spec.timeout, None)  # importing runs the module's code: bounded like a call
    try:
        target = load_module(spec.impl) if spec.is_module else load(spec.impl)
    finally:
        guard.watch.disarm()
    chosen = spec.variants or tuple(v for v in VARIANT_NAMES if callable(getattr(target, v, None)))
    planned = bat.plan(chosen, spec.dtypes, spec.checks)
    connection.send(("planned", planned))
    if spec.is_module:
        implementation = build_module(spec.impl, variants_wanted=spec.variants, device=spec.device,
                                      array=spec.array, name=spec.name, timeout=spec.timeout,
                                      isolate=spec.isolate, conventions=spec.conventions, options=spec.options)
    else:
        implementation = build(spec.impl, spec.variants[0], backward=spec.backward, device=spec.device,
                               array=spec.array, name=spec.name, timeout=spec.timeout, isolate=spec.isolate,
                               conventions=spec.conventions, options=spec.options, abi=spec.abi,
                               backward_from_output=spec.backward_from_output)
    return (isolated(implementation, artifacts=spec.pending_folder) if spec.isolate else implementation), planned


# --- the supervisor -------------------------------------------------------------------------

@dataclass
class _Progress:
    """What the runners reported so far."""

    planned: list | None = None
    described: object = None
    reports: dict = field(default_factory=dict)  # check id -> CheckReport
    current: str | None = None  # the check id in progress
    notes: list = field(default_factory=list)


def supervise(spec: RunSpec, *, progress: Callable | None = None):
    """(BatteryReport, the implementation's description) of a supervised run of ``spec``."""
    start = time.perf_counter()
    state, restarts = _Progress(), 0
    name = spec.name or spec.impl
    battery = bat.BatteryReport(name)
    try:
        while True:
            before = len(state.reports)
            ended = _one_runner(spec, state, progress)
            if ended:
                break
            restarts = 0 if len(state.reports) > before else restarts + 1
            if restarts >= RESTARTS_WITHOUT_PROGRESS:
                _fail_remaining(spec, state, f"{restarts} runner processes in a row ended before finishing a check")
                break
    except KeyboardInterrupt:
        battery.interrupted = True
    order = [f"{v}::{d}::{c}" for v, d, c in state.planned or ()]
    battery.reports = [state.reports[i] for i in order if i in state.reports]
    battery.notes = state.notes
    battery.seconds = time.perf_counter() - start
    return battery, state.described


def _one_runner(spec: RunSpec, state: _Progress, progress: Callable | None) -> bool:
    """Run one runner until it ends; True when the whole plan is done (or cannot go on)."""
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(PRELOADED)  # takes effect when the server starts (the first runner)
    receiver, sender = context.Pipe(duplex=False)
    deadline = context.Value(ctypes.c_double, 0.0, lock=False)
    case = context.Array(ctypes.c_char, CASE_BYTES, lock=False)
    # not a daemon: with --isolate the runner starts workers of its own; it is killed in `finally`
    stacks = tempfile.NamedTemporaryFile(prefix="normspec-stacks-", suffix=".txt")  # removed on close
    runner = context.Process(target=_runner, args=(sender, spec, frozenset(state.reports), deadline, case,
                                                   Surroundings.here(), stacks.name))
    with _main_module_hidden():
        runner.start()
    sender.close()
    phase = "starting"
    try:
        while True:
            if receiver.poll(POLL_SECONDS):
                try:
                    kind, payload = receiver.recv()
                except EOFError:
                    return _runner_ended(spec, state, runner, phase, _case_of(case), killed=None)
                phase = _receive(kind, payload, state, phase, progress)
                if phase == "done":
                    return True
                continue
            armed = deadline.value  # read once: the runner disarms concurrently (0.0 between calls)
            if armed and guard.monotonic() > armed + grace(spec.timeout):
                where = _stuck_at(runner, stacks.name)
                runner.kill()
                runner.join(5)
                return _runner_ended(spec, state, runner, phase, _case_of(case), killed=spec.timeout, where=where)
            if not runner.is_alive() and not receiver.poll(0):
                return _runner_ended(spec, state, runner, phase, _case_of(case), killed=None)
    finally:
        if runner.is_alive():
            runner.kill()
        runner.join(5)
        receiver.close()
        stacks.close()


def _stuck_at(runner, stacks_path: str) -> str:
    """The innermost frames of the runner's stuck thread, dumped by faulthandler on request."""
    try:
        os.kill(runner.pid, STACK_SIGNAL)
        time.sleep(0.5)  # faulthandler writes from its signal handler, even while the thread is stuck
        text = Path(stacks_path).read_text(errors="replace")
    except OSError:
        return ""
    current = text.split("Current thread")[-1] if "Current thread" in text else text
    frames = [line.strip() for line in current.splitlines() if line.strip().startswith("File ")]
    return " <- ".join(frames[:STACK_LINES])


@contextmanager
def _main_module_hidden():
    """Start a runner without re-running the caller's main script in it: multiprocessing would
    (to find functions defined there), and a script calling normspec.check at top level, without
    ``if __name__ == "__main__"``, would then call it again in the runner. The runner needs
    nothing from ``__main__``: it imports the implementation by its path."""
    main = sys.modules["__main__"]
    saved = {name: main.__dict__[name] for name in ("__file__", "__spec__") if name in main.__dict__}
    main.__dict__.pop("__file__", None)
    main.__spec__ = None
    try:
        yield
    finally:
        main.__dict__.pop("__spec__", None)
        main.__dict__.update(saved)


def _receive(kind: str, payload, state: _Progress, phase: str, progress: Callable | None) -> str:
    if kind == "input error":
        raise NormSpecError(payload)
    if kind == "harness error":
        raise HarnessError(f"normspec failed in its runner process:\n{payload}")
    if kind == "importing":
        return "importing"
    if kind == "planned":
        state.planned = state.planned or payload
        return "probing"
    if kind == "built":
        state.described = payload
        return "checking"
    if kind == "start":
        state.current = payload
        return "checking"
    if kind == "report":
        state.reports[payload.id] = payload
        state.current = None
        if progress:
            progress(payload)
        return "checking"
    return "done"  # "end"


def _case_of(case) -> Case | None:
    text = case.value.decode(errors="replace")
    try:
        return Case.from_json(text) if text else None
    except Exception:  # noqa: BLE001 - a torn write; the report says the case is unknown
        return None


def _runner_ended(spec: RunSpec, state: _Progress, runner, phase: str, case: Case | None, *,
                  killed: float | None, where: str = "") -> bool:
    """Record why the runner ended; True when no new runner should start."""
    runner.join(10)  # the pipe closes before the process is reaped
    if killed is not None:
        what = f"did not return within {killed:g} s (stuck past the interrupt: its process was killed)"
        if where:
            what += f" [stuck in: {where}]"
    else:
        what = f"ended its process ({describe_exit(runner.exitcode)})"
    where = f" on {case.short()}" if case is not None else ""
    if phase in ("starting", "importing"):
        raise NormSpecError(f"--impl={spec.impl!r}: importing it {what}")
    if phase == "probing":
        _fail_remaining(spec, state, f"the probe call{where} {what}: the implementation cannot be called on a small "
                               f"case, so no check ran", case=case)
        return True
    if state.current is None:
        state.notes.append(f"a runner process {what} between checks; a new one carries on")
        return False
    variant, dtype, check = state.current.split("::")
    reason = f"the implementation {what}{where}; the case was not shrunk"
    known = deviations.lookup(spec.name or spec.impl, state.current, case)  # a built-in's known crash
    state.reports[state.current] = bat.CheckReport(
        spec.name or spec.impl, variant, dtype, check, bat.EXPECTED if known else bat.FAILED, examples=1, case=case,
        reason=f"{known} (observed: {reason})" if known else reason, importable=True)
    state.notes.append(f"{state.current}: the implementation {what}; a new runner process ran the checks after it")
    state.current = None
    return False


def _fail_remaining(spec: RunSpec, state: _Progress, reason: str, *, case: Case | None = None) -> None:
    for variant, dtype, check in state.planned or ():
        item = f"{variant}::{dtype}::{check}"
        if item not in state.reports:
            state.reports[item] = bat.CheckReport(spec.name or spec.impl, variant, dtype, check, bat.FAILED, case=case, reason=reason,
                                                  importable=True)
