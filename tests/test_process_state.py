"""ProcessState: each kind of state, changed inside a captured window, is named by restore() and is
back afterwards; nothing changed gives []; garbage left behind is reported, never raised.

Every test runs under ``_leaves_the_process_as_found``, which snapshots the same state through the
public APIs only (independent of the module under test), checks after the test that it is unchanged
and puts it back by those means if a test failed half-way."""
from __future__ import annotations

import ctypes
import io
import os
import random
import signal
import sys
import threading

import numpy as np
import pytest
import torch

from normspec.verify.implementations import process_state
from normspec.verify.implementations.process_state import ProcessState

_LIBC_GETENV = ctypes.CDLL(None).getenv
_LIBC_GETENV.restype = ctypes.c_char_p
KEY = "NORMSPEC_PROCESS_STATE_TEST"


def _c_environment(name: str) -> str | None:
    """The C environment (what subprocesses inherit), not os.environ's copy of it."""
    value = _LIBC_GETENV(name.encode())
    return None if value is None else value.decode()


def _public_snapshot() -> dict:
    return {
        "cwd": os.getcwd(),
        # pytest itself rewrites PYTEST_CURRENT_TEST between the setup, call and teardown phases.
        "environ": {k: v for k, v in os.environ.items() if k != "PYTEST_CURRENT_TEST"},
        "torch": (torch.get_default_dtype(), torch.get_num_threads(), torch.is_grad_enabled(),
                  torch.are_deterministic_algorithms_enabled(),
                  torch.is_deterministic_algorithms_warn_only_enabled()),
        "geterr": np.geterr(),
        "numpy_rng": np.random.get_state(),
        "python_rng": random.getstate(),
        "torch_rng": torch.get_rng_state(),
        "streams": (sys.stdout, sys.stderr, sys.stdin),
        "signals": (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGALRM)),
    }


def _put_back_publicly(saved: dict) -> None:
    os.chdir(saved["cwd"])
    for name in set(os.environ) - set(saved["environ"]) - {"PYTEST_CURRENT_TEST"}:
        del os.environ[name]
    os.environ.update(saved["environ"])
    torch.set_default_dtype(saved["torch"][0])
    torch.set_num_threads(saved["torch"][1])
    torch.set_grad_enabled(saved["torch"][2])
    torch.use_deterministic_algorithms(saved["torch"][3], warn_only=saved["torch"][4])
    np.seterr(**saved["geterr"])
    np.random.set_state(saved["numpy_rng"])
    random.setstate(saved["python_rng"])
    torch.set_rng_state(saved["torch_rng"])
    sys.stdout, sys.stderr, sys.stdin = saved["streams"]
    signal.signal(signal.SIGINT, saved["signals"][0])
    signal.signal(signal.SIGALRM, saved["signals"][1])


def _differences(saved: dict, now: dict) -> list[str]:
    def same(a, b):
        if isinstance(a, torch.Tensor):
            return torch.equal(a, b)
        if isinstance(a, tuple) and a and isinstance(a[0], str) and a[0] == "MT19937":
            return np.array_equal(a[1], b[1]) and a[2:] == b[2:]
        if isinstance(a, tuple):
            return len(a) == len(b) and all(x is y or x == y for x, y in zip(a, b))
        return a == b

    return [name for name in saved if not same(saved[name], now[name])]


@pytest.fixture(autouse=True)
def _leaves_the_process_as_found():
    saved = _public_snapshot()
    yield
    left = _differences(saved, _public_snapshot())
    _put_back_publicly(saved)
    assert left == [], f"the test left these changed: {left}"


def _named(changes: list[str], fragment: str) -> bool:
    return any(fragment in change for change in changes)


def test_nothing_changed_gives_an_empty_list():
    state = ProcessState.capture()
    assert state.restore() == []
    assert state.restore() == []


def test_the_current_directory(tmp_path):
    original = os.getcwd()
    state = ProcessState.capture()
    os.chdir(tmp_path)
    changes = state.restore()
    assert changes == [f"the current directory ({original!r} -> {str(tmp_path)!r})"]
    assert os.getcwd() == original


def test_a_current_directory_deleted_by_the_call_is_left_for_the_original(tmp_path):
    original, doomed = os.getcwd(), tmp_path / "doomed"
    doomed.mkdir()
    state = ProcessState.capture()
    os.chdir(doomed)
    doomed.rmdir()
    changes = state.restore()
    assert changes == [f"the current directory ({original!r} -> a deleted folder)"]
    assert os.getcwd() == original


def test_an_original_directory_deleted_by_the_call_is_reported_not_restored(tmp_path):
    original, start = os.getcwd(), tmp_path / "start"
    start.mkdir()
    os.chdir(start)
    try:
        state = ProcessState.capture()
        os.chdir(tmp_path)
        start.rmdir()
        changes = state.restore()
        assert len(changes) == 1 and changes[0].startswith("the current directory (")
        assert "not restored" in changes[0] and "no longer exists" in changes[0]
        assert os.getcwd() == str(tmp_path)
    finally:
        os.chdir(original)


def test_an_environment_variable_changed_added_and_removed():
    os.environ[KEY + "_CHANGED"] = "ci"
    os.environ[KEY + "_REMOVED"] = "gone"
    try:
        state = ProcessState.capture()
        os.environ[KEY + "_CHANGED"] = "thorough"
        os.environ[KEY + "_ADDED"] = "x" * 100
        del os.environ[KEY + "_REMOVED"]
        changes = state.restore()
        assert f"os.environ['{KEY}_CHANGED'] ('ci' -> 'thorough')" in changes
        assert f"os.environ['{KEY}_REMOVED'] ('gone' -> unset)" in changes
        added = [change for change in changes if f"{KEY}_ADDED" in change]
        assert len(added) == 1 and added[0].startswith(f"os.environ['{KEY}_ADDED'] (unset -> 'xxx")
        assert len(added[0]) < len(KEY) + 80  # the value is shortened
        assert len(changes) == 3
        # Back in os.environ and in the C environment too (putenv/unsetenv happened).
        assert os.environ[KEY + "_CHANGED"] == _c_environment(KEY + "_CHANGED") == "ci"
        assert os.environ[KEY + "_REMOVED"] == _c_environment(KEY + "_REMOVED") == "gone"
        assert KEY + "_ADDED" not in os.environ and _c_environment(KEY + "_ADDED") is None
    finally:
        os.environ.pop(KEY + "_CHANGED", None)
        os.environ.pop(KEY + "_REMOVED", None)


def test_a_replaced_os_environ_object():
    original = os.environ
    state = ProcessState.capture()
    os.environ = {"PATH": "/nowhere"}
    try:
        changes = state.restore()
    finally:
        os.environ = original
    assert changes == ["os.environ (replaced by {'PATH': '/nowhere'})"]


def test_garbage_in_os_environ_is_reported_not_raised():
    state = ProcessState.capture()
    os.environ._data[b"BAD=NAME"] = b"x"  # no putenv can set or unset such a name
    try:
        changes = state.restore()
    finally:
        os.environ._data.pop(b"BAD=NAME", None)
    assert len(changes) == 1
    assert changes[0].startswith("os.environ['BAD=NAME'] (unset -> 'x') (not restored:")


def test_torchs_default_dtype():
    state = ProcessState.capture()
    torch.set_default_dtype(torch.float64)
    assert state.restore() == ["torch's default dtype (float32 -> float64)"]
    assert torch.get_default_dtype() == torch.float32


def test_torchs_number_of_threads():
    before = torch.get_num_threads()
    other = 1 if before != 1 else 2
    state = ProcessState.capture()
    torch.set_num_threads(other)
    assert state.restore() == [f"torch's number of threads ({before} -> {other})"]
    assert torch.get_num_threads() == before


def test_torchs_grad_mode():
    state = ProcessState.capture()
    torch.set_grad_enabled(False)
    assert state.restore() == ["torch's grad mode (enabled -> disabled)"]
    assert torch.is_grad_enabled()


def test_torchs_deterministic_algorithms_and_warn_only():
    state = ProcessState.capture()
    torch.use_deterministic_algorithms(True, warn_only=True)
    changes = state.restore()
    # (The first use_deterministic_algorithms call of a process also sets TORCHINDUCTOR_CACHE_DIR.)
    assert "torch's deterministic algorithms (off -> on, warn_only)" in changes
    assert all(c.startswith("os.environ['TORCHINDUCTOR_CACHE_DIR']") for c in changes if "deterministic" not in c)
    assert not torch.are_deterministic_algorithms_enabled()
    assert not torch.is_deterministic_algorithms_warn_only_enabled()

    state = ProcessState.capture()
    torch.use_deterministic_algorithms(False, warn_only=True)
    assert state.restore() == ["torch's deterministic algorithms (off -> off, warn_only)"]
    assert not torch.is_deterministic_algorithms_warn_only_enabled()


def test_numpys_error_handling():
    before = np.geterr()
    state = ProcessState.capture()
    np.seterr(divide="raise")
    assert state.restore() == [f"numpy's floating-point error handling (divide: {before['divide']!r} -> 'raise')"]
    assert np.geterr() == before


def _numpy_state_equal(a, b) -> bool:
    return a[0] == b[0] and np.array_equal(a[1], b[1]) and a[2:] == b[2:]


@pytest.mark.parametrize("draw", [lambda: np.random.seed(7), lambda: np.random.random(1),
                                  lambda: np.random.random(1000)], ids=["seed", "one draw", "past a refill"])
def test_numpys_legacy_global_rng(draw):
    before = np.random.get_state()
    state = ProcessState.capture()
    draw()
    assert state.restore() == ["the global RNG state of numpy (np.random)"]
    assert _numpy_state_equal(np.random.get_state(), before)


def test_numpys_cached_gaussian_alone():
    as_found = np.random.get_state()
    try:
        np.random.seed(3)
        np.random.standard_normal(1)  # normals come in pairs: the second one is cached
        assert np.random.get_state()[3] == 1
        before = np.random.get_state()
        state = ProcessState.capture()
        np.random.standard_normal(1)  # uses up the cached one: only has_gauss changes
        assert state.restore() == ["the global RNG state of numpy (np.random)"]
        assert _numpy_state_equal(np.random.get_state(), before)
    finally:
        np.random.set_state(as_found)


def test_numpys_global_bit_generator_replaced():
    before_generator, before = np.random.get_bit_generator(), np.random.get_state()
    state = ProcessState.capture()
    np.random.set_bit_generator(np.random.PCG64(1))
    assert state.restore() == ["the global RNG state of numpy (np.random)"]
    assert np.random.get_bit_generator() is before_generator
    assert _numpy_state_equal(np.random.get_state(), before)


@pytest.mark.parametrize("draw", [lambda: random.seed(7), lambda: random.random(),
                                  lambda: random.getrandbits(32 * 1000)], ids=["seed", "one draw", "past a refill"])
def test_pythons_random_module(draw):
    before = random.getstate()
    state = ProcessState.capture()
    draw()
    assert state.restore() == ["the state of Python's random module"]
    assert random.getstate() == before


def test_pythons_cached_gaussian_alone():
    as_found = random.getstate()
    try:
        random.seed(3)
        random.gauss()  # gauss makes two normals and caches the second
        assert random.getstate()[2] is not None
        before = random.getstate()
        state = ProcessState.capture()
        random.gauss()  # returns the cached one: only gauss_next changes
        assert state.restore() == ["the state of Python's random module"]
        assert random.getstate() == before
    finally:
        random.setstate(as_found)


def test_the_fast_rng_readers_agree_with_the_public_getters():
    assert process_state._PROBES  # the module checked its memory readers at import; they were kept
    readers = {probe.what: probe.read for probe in process_state._PROBES}
    assert readers["the global RNG state of numpy (np.random)"] is not process_state._numpy_rng_public
    assert readers["the state of Python's random module"] is not process_state._python_rng_public
    assert readers["the global RNG state of numpy (np.random)"]() == process_state._numpy_rng_public()
    assert readers["the state of Python's random module"]() == process_state._python_rng_public()


def test_torchs_cpu_rng():
    before = torch.get_rng_state()
    state = ProcessState.capture()
    torch.rand(3)
    assert state.restore() == ["the global RNG state of torch"]
    assert torch.equal(torch.get_rng_state(), before)


class _FakeCuda:
    """Stands in for torch.cuda's RNG functions: this suite must run without a GPU."""

    def __init__(self, initialized: bool):
        self.initialized = initialized
        self.states = [torch.zeros(16, dtype=torch.uint8), torch.ones(16, dtype=torch.uint8)]

    def install(self, monkeypatch):
        monkeypatch.setattr(torch.cuda, "is_initialized", lambda: self.initialized)
        monkeypatch.setattr(torch.cuda, "get_rng_state_all", lambda: [s.clone() for s in self.states])
        monkeypatch.setattr(torch.cuda, "set_rng_state_all", lambda states: setattr(self, "states", list(states)))


def test_torchs_cuda_rngs_when_cuda_is_initialized(monkeypatch):
    cuda = _FakeCuda(initialized=True)
    cuda.install(monkeypatch)
    before = [s.clone() for s in cuda.states]
    state = ProcessState.capture()
    cuda.states[1] = torch.full((16,), 7, dtype=torch.uint8)
    assert state.restore() == ["the CUDA RNG states of torch"]
    assert all(torch.equal(a, b) for a, b in zip(cuda.states, before))


def test_cuda_initialized_during_the_call_is_not_a_change(monkeypatch):
    cuda = _FakeCuda(initialized=False)
    cuda.install(monkeypatch)
    state = ProcessState.capture()
    cuda.initialized = True
    assert state.restore() == []


@pytest.mark.parametrize("name", ["stdout", "stderr", "stdin"])
def test_a_replaced_standard_stream(name):
    original = getattr(sys, name)
    state = ProcessState.capture()
    setattr(sys, name, io.StringIO())
    changes = state.restore()
    assert len(changes) == 1 and changes[0].startswith(f"sys.{name} (") and "StringIO" in changes[0]
    assert getattr(sys, name) is original


class _Hostile:
    """What a kernel may leave behind: an object whose ==, != and repr raise."""

    def __eq__(self, other):
        raise RuntimeError("no")

    __ne__ = __eq__

    def __repr__(self):
        raise RuntimeError("no")

    __hash__ = object.__hash__


def test_a_hostile_object_is_reported_and_replaced_not_raised():
    original = sys.stdout
    state = ProcessState.capture()
    sys.stdout = _Hostile()
    changes = state.restore()
    assert sys.stdout is original
    assert len(changes) == 1 and changes[0].startswith("sys.stdout (") and "_Hostile" in changes[0]


class _EqualToAnything:
    def __eq__(self, other):
        return True

    __hash__ = object.__hash__


def test_an_object_equal_to_anything_is_still_a_replacement():
    original = sys.stdout
    state = ProcessState.capture()
    sys.stdout = _EqualToAnything()
    changes = state.restore()
    assert sys.stdout is original
    assert len(changes) == 1 and changes[0].startswith("sys.stdout (")


def _handler(signum, frame):
    pass


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGALRM], ids=["SIGINT", "SIGALRM"])
def test_a_signal_handler(signum):
    before = signal.getsignal(signum)
    state = ProcessState.capture()
    signal.signal(signum, _handler)
    changes = state.restore()
    assert len(changes) == 1 and changes[0].startswith(f"the {signum.name} handler (")
    assert changes[0].endswith(" -> _handler)")
    assert signal.getsignal(signum) == before


def test_a_signal_handler_cannot_be_restored_outside_the_main_thread():
    before = signal.getsignal(signal.SIGALRM)
    state = ProcessState.capture()
    signal.signal(signal.SIGALRM, _handler)
    try:
        changes: list[str] = []
        worker = threading.Thread(target=lambda: changes.extend(state.restore()))
        worker.start()
        worker.join()
        assert len(changes) == 1 and changes[0].startswith("the SIGALRM handler (")
        assert "not restored: only the main thread can set signal handlers" in changes[0]
        assert signal.getsignal(signal.SIGALRM) is _handler
    finally:
        signal.signal(signal.SIGALRM, before)


def test_many_changes_at_once_are_all_named_and_all_put_back(tmp_path):
    state = ProcessState.capture()
    os.chdir(tmp_path)
    torch.set_default_dtype(torch.float64)
    np.random.seed(1)
    random.seed(1)
    torch.manual_seed(1)
    sys.stderr = io.StringIO()
    changes = state.restore()
    for fragment in ("the current directory", "torch's default dtype", "numpy (np.random)",
                     "Python's random module", "RNG state of torch", "sys.stderr"):
        assert _named(changes, fragment), fragment
    assert len(changes) == 6
    assert ProcessState.capture().restore() == []
