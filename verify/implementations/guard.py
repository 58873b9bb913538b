"""Every call of an implementation under test goes through :func:`guarded`.

A harness runs other people's code, so a call may do anything. ``guarded``:

- bounds its time: SIGALRM interrupts Python code after ``seconds`` (and again every second,
  for code that swallows the first interrupt); code stuck in native code is killed from
  outside, by the supervisor (``normspec.verify.running.supervisor``) or the worker of
  ``--isolate``, which read the deadline published through :data:`watch`;
- turns whatever escapes the call into a failure of the check: an ``Exception`` passes
  through (the battery reports it), any other ``BaseException`` (``SystemExit``,
  ``GeneratorExit``, a ``KeyboardInterrupt`` the implementation raised itself) becomes
  :class:`ImplementationRaised`; only a real interrupt by the user (SIGINT while
  :func:`user_interrupts` is active) propagates;
- puts back the process state the call changed (``ProcessState``: the current directory,
  the environment, torch's and NumPy's global settings, the RNG states...) and reports the
  change as a :class:`ContractViolation`.
"""
from __future__ import annotations

import signal
import threading
import time
from contextlib import contextmanager
from normspec.verify.implementations.process_state import ProcessState

REARM_SECONDS = 1.0  # after the time limit, the interrupt repeats this often


class ContractViolation(AssertionError):
    """The implementation broke the calling contract: output shape, dtype or device, a
    modified input, a missing gradient, or a change to the process state."""


class CallTimeout(AssertionError):
    """The implementation did not return within the per-call time limit."""


class ImplementationCrashed(AssertionError):
    """The implementation killed its (worker) process: a segfault, an abort, an exit()."""


class ImplementationRaised(AssertionError):
    """The implementation raised a BaseException that is not an Exception (SystemExit, ...)."""


# Failures after which the same implementation is not called again in one search.
FATAL_ERRORS = (CallTimeout, ImplementationCrashed)


class Watch:
    """Where the deadline of the call in progress is published; this one publishes nowhere
    (the supervisor's runner installs one in shared memory)."""

    def arm(self, seconds: float | None, case) -> None:
        pass

    def disarm(self) -> None:
        pass


watch = Watch()


def install_watch(new: Watch) -> None:
    global watch
    watch = new


_interrupted_by_user = threading.Event()


@contextmanager
def user_interrupts():
    """While active (main thread only), a SIGINT is remembered as the user's: the
    KeyboardInterrupt it raises propagates through :func:`guarded` instead of being
    reported as the implementation's."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum, frame):
        _interrupted_by_user.set()
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGINT, interrupt)
    _interrupted_by_user.clear()
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def interrupted_by_user() -> bool:
    return _interrupted_by_user.is_set()


def describe_error(error: BaseException) -> str:
    """``Type: message``, safe for exceptions whose ``__str__`` itself raises."""
    try:
        message = str(error)
    except BaseException:  # noqa: BLE001 - a hostile __str__
        message = "<its message could not be read>"
    # lone surrogates and the like would stop the report from printing on a UTF-8 terminal
    message = message.encode("utf-8", "backslashreplace").decode("utf-8")
    name = type(error).__name__
    if isinstance(error, SystemExit):
        return f"SystemExit({error.code!r})"
    return f"{name}: {message}" if message else name


@contextmanager
def guarded(seconds: float | None, case=None, *, what: str = "the call", report_changes: bool = True):
    """Run the body (one call of the implementation) under the rules of the module docstring.
    ``report_changes=False`` only puts the process state back (the probe: the checks report it)."""
    state = ProcessState.capture()
    watch.arm(seconds, case)
    try:
        with _alarm(seconds, what):
            yield
    except Exception:
        raise
    except KeyboardInterrupt:
        if interrupted_by_user():
            raise
        raise ImplementationRaised(f"{what} raised KeyboardInterrupt (not an interrupt by the user)") from None
    except BaseException as error:  # noqa: BLE001 - SystemExit, GeneratorExit...: the implementation's
        raise ImplementationRaised(f"{what} raised {describe_error(error)}") from None
    finally:
        watch.disarm()
        changed = state.restore()
    if changed and report_changes:
        raise ContractViolation(f"{what} changed the process state (normspec put it back): {'; '.join(changed)}")


@contextmanager
def _alarm(seconds: float | None, what: str):
    """SIGALRM after ``seconds``, repeated every REARM_SECONDS until the body ends (main
    thread only; elsewhere the body runs unbounded here and the watch is what bounds it)."""
    if not seconds or threading.current_thread() is not threading.main_thread():
        yield
        return

    def expire(signum, frame):
        raise CallTimeout(f"{what} did not return within {seconds:g} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds, REARM_SECONDS)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def monotonic() -> float:
    """The clock of the deadlines (system-wide on Linux: comparable across processes)."""
    return time.monotonic()

