"""The process-wide state an implementation under test must leave alone, captured and put back.

The harness calls untrusted normalization kernels thousands of times in one process. A kernel
that changes global state (chdir, an environment variable, torch's default dtype or grad mode,
a seeded RNG, a swapped sys.stdout, a signal handler) breaks the calling contract, and worse,
silently changes what every later call and check sees. So the harness takes
``ProcessState.capture()`` before each call and ``restore()`` after it: restore puts back what
differs and names it, one short description per thing, for the report of contract violations.

Covered:

- the current working directory (also when the kernel chdir'd into a folder it then deleted);
- ``os.environ``: added, removed and changed keys (and the object itself, if replaced);
- torch: the default dtype, the number of intra-op threads, grad mode, deterministic
  algorithms (and their warn_only flag);
- NumPy's floating-point error handling (``np.seterr``);
- the RNGs a kernel can reach without being handed a generator: NumPy's legacy global one
  (``np.random.seed``/``rand``...), Python's ``random`` module, torch's CPU generator and,
  only when CUDA is initialized at capture, torch's CUDA generators;
- the ``sys.stdout``, ``sys.stderr`` and ``sys.stdin`` objects (by identity);
- the SIGINT and SIGALRM handlers (the harness's time limit uses SIGALRM); Python lets only
  the main thread set them, so elsewhere a change is reported but not put back.

Not covered: changes that bypass these Python objects (``os.putenv`` directly, C code calling
setenv or signal), the state of a non-MT19937 global NumPy bit generator installed before the
capture (tracked by identity only), and any state not listed.

Speed: capture() and restore() run around every kernel call, so with nothing changed they
must cost a few microseconds. Each kind of state is read into a cheap, comparable snapshot
(a string, a bytes copy, a dict copy) and restore compares all of them in one tuple
comparison. Two RNGs have no cheap public reader: ``np.random.get_state()`` and
``random.getstate()`` build 624-element arrays or tuples (25 and 7 us a read here). Their
Mersenne Twister states are therefore read as raw bytes from the objects' memory, at places
located and checked against the public getters once at import; if that check fails (another
NumPy or Python build), the public getters are used instead: slower, equally exact. Putting
state back always goes through the public setters.

Restore never raises: what cannot be put back is still reported, with the reason. Capture and
restore on the same thread: torch's grad mode is per thread.
"""
from __future__ import annotations

import _signal
import ctypes
import os
import random
import signal
import struct
import sys
import threading
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import torch

_SHORT = 40  # characters kept of a value in a description


class ProcessState:
    """A snapshot of the process state covered by this module (see the module docstring)."""

    __slots__ = ("_snapshots",)

    def __init__(self, snapshots: tuple):
        self._snapshots = snapshots

    @classmethod
    def capture(cls) -> "ProcessState":
        return cls(tuple([read() for read in _READERS]))

    def restore(self) -> list[str]:
        """Put back everything that differs from the captured state; return one short human
        description per thing that had changed, e.g. "the current directory ('/a' -> '/tmp/x')",
        "os.environ['HYPOTHESIS_PROFILE'] ('ci' -> 'thorough')", "torch's default dtype (float32 -> float64)",
        "the global RNG state of torch"; [] when nothing changed."""
        try:
            if tuple([read() for read in _READERS]) == self._snapshots:
                return []
        except Exception:
            pass  # a reader or a comparison failed: the careful path below finds out which
        return self._put_back_each()

    def _put_back_each(self) -> list[str]:
        changes: list[str] = []
        for probe, saved in zip(_PROBES, self._snapshots):
            try:
                now = probe.read()
                if not _same(saved, now):
                    changes += probe.put_back(saved, now)
            except Exception as error:  # the kernel left something we cannot even read
                changes.append(f"{probe.what} (could not be checked or restored: {_short_error(error)})")
        return changes


def _same(saved: Any, now: Any) -> bool:
    """Equality that survives what a kernel may have put there (an object whose == raises)."""
    if now is saved:
        return True
    try:
        return bool(now == saved)
    except Exception:
        return False


class _NotRestorable(Exception):
    """Why a changed piece of state stays changed; goes into the description."""


# --- descriptions ----------------------------------------------------------------------------

def _short(value: Any) -> str:
    try:
        text = repr(value)
    except Exception:  # a kernel's object may not even have a working repr
        text = f"<a {type(value).__name__} object>"
    return text if len(text) <= _SHORT else text[:_SHORT - 3] + "..."


def _short_error(error: BaseException) -> str:
    return str(error) or type(error).__name__


def _arrow(show: Callable[[Any], str] = _short) -> Callable[[Any, Any], str]:
    return lambda old, new: f"{show(old)} -> {show(new)}"


# --- probes: one kind of state each ----------------------------------------------------------

@dataclass(frozen=True)
class _Setting:
    """State with one getter and one setter. ``difference`` words old -> new for the
    description; None where the values mean nothing to a reader (RNG states)."""

    what: str
    read: Callable[[], Any]
    write: Callable[[Any], None]
    difference: Callable[[Any, Any], str] | None = _arrow()

    def put_back(self, saved: Any, now: Any) -> list[str]:
        change = self.what if self.difference is None else f"{self.what} ({self.difference(saved, now)})"
        try:
            self.write(saved)
        except Exception as error:
            return [f"{change} (not restored: {_short_error(error)})"]
        return [change]


# The current directory -----------------------------------------------------------------------

def _current_directory() -> str | None:
    try:
        return os.getcwd()
    except OSError:  # the current directory was deleted
        return None


def _change_directory(path: str | None) -> None:
    if path is None:
        raise _NotRestorable("it was already deleted when captured")
    if not os.path.isdir(path):
        raise _NotRestorable(f"{path!r} no longer exists")
    os.chdir(path)


def _show_directory(path: str | None) -> str:
    return "a deleted folder" if path is None else repr(path)


# os.environ ----------------------------------------------------------------------------------

def _read_environ() -> tuple[int, Any, dict]:
    """(id, object, contents): the object by identity, as in _by_identity; its contents from the
    dict of encoded keys and values it wraps (_data), ~100x cheaper to copy than dict(os.environ),
    which decodes every entry."""
    environ = os.environ
    data = getattr(environ, "_data", None)
    return id(environ), environ, (data.copy() if isinstance(data, dict) else dict(environ))


@dataclass(frozen=True)
class _Environ:
    what: str = "os.environ"

    read = staticmethod(_read_environ)

    def put_back(self, saved: tuple[int, Any, dict], now: tuple[int, Any, dict]) -> list[str]:
        _, saved_environ, saved_data = saved
        changes = []
        if now[1] is not saved_environ:
            os.environ = saved_environ
            changes.append(f"os.environ (replaced by {_short(now[1])})")
        current = _read_environ()[2]
        for key in sorted(saved_data.keys() | current.keys(), key=repr):
            old, new = saved_data.get(key), current.get(key)
            if old != new:
                changes.append(self._put_back_key(saved_environ, key, old, new))
        return changes

    @staticmethod
    def _put_back_key(environ: Any, key: Any, old: Any, new: Any) -> str:
        name, old_text, new_text = _decode_key(environ, key), _decode_value(environ, old), _decode_value(environ, new)
        change = f"os.environ[{name!r}] ({_show_env_value(old_text)} -> {_show_env_value(new_text)})"
        try:
            # Through os.environ, so that putenv/unsetenv reach the C environment (subprocesses).
            if old is None:
                environ.pop(name, None)
            else:
                environ[name] = old_text
        except Exception as error:
            return f"{change} (not restored: {_short_error(error)})"
        return change


def _decode_key(environ: Any, key: Any) -> str:
    return getattr(environ, "decodekey", str)(key)  # os.environ stores keys encoded (bytes on POSIX)


def _decode_value(environ: Any, value: Any) -> str | None:
    return None if value is None else getattr(environ, "decodevalue", str)(value)


def _show_env_value(value: str | None) -> str:
    return "unset" if value is None else _short(value)


# torch settings ------------------------------------------------------------------------------

def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def _read_deterministic() -> tuple[bool, bool]:
    return torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled()


def _write_deterministic(mode_and_warn_only: tuple[bool, bool]) -> None:
    mode, warn_only = mode_and_warn_only
    torch.use_deterministic_algorithms(mode, warn_only=warn_only)


def _show_deterministic(mode_and_warn_only: tuple[bool, bool]) -> str:
    mode, warn_only = mode_and_warn_only
    return ("on" if mode else "off") + (", warn_only" if warn_only else "")


def _show_enabled(enabled: bool) -> str:
    return "enabled" if enabled else "disabled"


# NumPy error handling ------------------------------------------------------------------------

def _write_numpy_errors(saved: dict) -> None:
    np.seterr(**saved)


def _numpy_errors_difference(old: dict, new: dict) -> str:
    return ", ".join(f"{kind}: {old.get(kind)!r} -> {new.get(kind)!r}"
                     for kind in sorted(old.keys() | new.keys()) if old.get(kind) != new.get(kind))


# Objects compared by identity: sys.stdout, sys.stderr, sys.stdin, signal handlers ---------
#
# A kernel's object may define == as it likes (a mock equal to anything), so these snapshots are
# (id, object): tuple equality stops at differing ids without calling the objects' ==, and the
# snapshot keeps the object alive, so that its id cannot be reused by another.

def _by_identity(what: str, get: Callable[[], Any], put: Callable[[Any], None],
                 show: Callable[[Any], str] = _short) -> _Setting:
    def read() -> tuple[int, Any]:
        current = get()
        return id(current), current

    return _Setting(what, read, lambda saved: put(saved[1]), lambda old, new: f"{show(old[1])} -> {show(new[1])}")


def _stream(name: str) -> _Setting:
    return _by_identity(f"sys.{name}", lambda: getattr(sys, name), lambda saved: setattr(sys, name, saved))


# Signal handlers -----------------------------------------------------------------------------

def _handler_name(handler: Any) -> str:
    if handler is None:
        return "a handler installed outside Python"
    if isinstance(handler, int):  # SIG_DFL or SIG_IGN
        return signal.Handlers(handler).name
    return getattr(handler, "__qualname__", None) or _short(handler)


def _signal_handler(signum: signal.Signals) -> _Setting:
    def write(saved: Any) -> None:
        if threading.current_thread() is not threading.main_thread():
            raise _NotRestorable("only the main thread can set signal handlers")
        if saved is None:
            raise _NotRestorable("the original was installed outside Python")
        signal.signal(signum, saved)

    # _signal.getsignal is signal.getsignal without the wrapping of SIG_DFL/SIG_IGN into an enum,
    # which costs ~1.5 us (a raised and caught ValueError) for any other handler.
    return _by_identity(f"the {signum.name} handler", lambda: _signal.getsignal(signum), write, _handler_name)


# torch's RNGs --------------------------------------------------------------------------------

def _torch_rng_bytes() -> bytes:
    return torch.get_rng_state().numpy().tobytes()  # bytes compare ~3x faster than torch.equal


def _state_tensor(state: bytes) -> torch.Tensor:
    return torch.frombuffer(bytearray(state), dtype=torch.uint8)  # bytearray: a writable buffer


def _set_torch_rng_bytes(state: bytes) -> None:
    torch.set_rng_state(_state_tensor(state))


def _cuda_rng_bytes() -> tuple[bytes, ...] | None:
    """One state per device; None when CUDA is not initialized (reading would initialize it)."""
    if not torch.cuda.is_initialized():
        return None
    return tuple(state.numpy().tobytes() for state in torch.cuda.get_rng_state_all())


@dataclass(frozen=True)
class _CudaRng:
    what: str = "the CUDA RNG states of torch"

    read = staticmethod(_cuda_rng_bytes)

    def put_back(self, saved: tuple[bytes, ...] | None, now: tuple[bytes, ...] | None) -> list[str]:
        if saved is None:
            return []  # CUDA was initialized during the call: its generators start from their seeds
        if now is None:
            return [f"{self.what} (not checked: CUDA is no longer initialized)"]
        try:
            torch.cuda.set_rng_state_all([_state_tensor(state) for state in saved])
        except Exception as error:
            return [f"{self.what} (not restored: {_short_error(error)})"]
        return [self.what]


# The Mersenne Twister RNGs of NumPy (legacy global) and Python's random ---------------------
#
# A snapshot of either is (the 2500 raw bytes of its twister state, its cached Gaussian), the
# same whether read from memory or built from the public getter, so that the getter is a drop-in
# fallback and the snapshot alone suffices to put the state back. NumPy's also starts with the
# bit generator object, which np.random.set_bit_generator can replace; one that is not an
# MT19937 (installed before the capture) is tracked by identity only.

_TWISTER_WORDS = 624
_TWISTER_BYTES = 4 * _TWISTER_WORDS + 4  # the 624 words and the position in them (a C int)
_NUMPY_RANDOM = np.random.mtrand._rand  # the RandomState behind np.random.seed, rand, normal...
_PYTHON_RANDOM = random._inst  # the Random behind random.seed, random, gauss...


_NumpySnapshot = tuple  # (bit generator, twister bytes, has_gauss, gauss)


def _numpy_rng_public() -> _NumpySnapshot:
    bit_generator = np.random.get_bit_generator()
    if type(bit_generator).__name__ != "MT19937":
        return bit_generator, b"", 0, 0.0
    _, key, pos, has_gauss, gauss = np.random.get_state()
    return bit_generator, key.astype(np.uint32).tobytes() + struct.pack("i", pos), has_gauss, gauss


def _set_numpy_rng(snapshot: _NumpySnapshot) -> None:
    bit_generator, twister, has_gauss, gauss = snapshot
    if np.random.get_bit_generator() is not bit_generator:
        np.random.set_bit_generator(bit_generator)
    if twister:
        key = np.frombuffer(twister, dtype=np.uint32, count=_TWISTER_WORDS)
        pos = struct.unpack_from("i", twister, 4 * _TWISTER_WORDS)[0]
        np.random.set_state(("MT19937", key, pos, has_gauss, gauss))


def _python_rng_public() -> tuple[bytes, Any]:
    _, internal, gauss_next = random.getstate()
    # Same order as in the C object: the position first, then the words.
    return struct.pack(f"i{_TWISTER_WORDS}I", internal[-1], *internal[:-1]), gauss_next


def _set_python_rng(snapshot: tuple[bytes, Any]) -> None:
    twister, gauss_next = snapshot
    position, *words = struct.unpack(f"i{_TWISTER_WORDS}I", twister)
    random.setstate((_PYTHON_RANDOM.VERSION, (*words, position), gauss_next))


def _numpy_gauss_address() -> int | None:
    """Where RandomState keeps its cached Gaussian (``has_gauss``, then ``gauss``): in the C
    struct that starts with a pointer to the object's own ``bitgen_t``, whose first field
    points to the twister state. Found by that chain, not by fixed offsets."""
    base, size = id(_NUMPY_RANDOM), type(_NUMPY_RANDOM).__basicsize__
    words = struct.unpack(f"{size // 8}Q", ctypes.string_at(base, size // 8 * 8))
    state_address = _NUMPY_RANDOM._bit_generator.ctypes.state_address
    bitgens = [base + 8 * i for i, word in enumerate(words) if word == state_address]
    for i, word in enumerate(words):
        if word in bitgens and 8 * i + 24 <= size:
            return base + 8 * i + 8
    return None


def _numpy_rng_reader() -> Callable[[], _NumpySnapshot]:
    bit_generator = _NUMPY_RANDOM._bit_generator
    gauss_address = _numpy_gauss_address()
    if type(bit_generator).__name__ != "MT19937" or gauss_address is None:
        return _numpy_rng_public
    twister = (ctypes.c_char * _TWISTER_BYTES).from_address(bit_generator.ctypes.state_address)
    has_gauss = ctypes.c_int.from_address(gauss_address)
    gauss = ctypes.c_double.from_address(gauss_address + 8)

    def read() -> _NumpySnapshot:
        if _NUMPY_RANDOM._bit_generator is not bit_generator:  # replaced: the memory read is not its state
            return _numpy_rng_public()
        return bit_generator, twister.raw, has_gauss.value, gauss.value

    return read


def _python_rng_reader() -> Callable[[], tuple[bytes, Any]]:
    header = object.__basicsize__  # the C struct is PyObject_HEAD, int index, uint32_t state[624]
    if type(_PYTHON_RANDOM).__basicsize__ < header + _TWISTER_BYTES:
        return _python_rng_public
    twister = (ctypes.c_char * _TWISTER_BYTES).from_address(id(_PYTHON_RANDOM) + header)
    return lambda: (twister.raw, _PYTHON_RANDOM.gauss_next)


def _matches_public(read: Callable, public: Callable, prepare_states: list[Callable[[], Any]]) -> bool:
    """Whether the memory reader gives the public getter's snapshot in a few distinct states."""
    for prepare in prepare_states:
        prepare()
        if read() != public():
            return False
    return True


def _checked_numpy_rng_reader() -> Callable[[], _NumpySnapshot]:
    """The memory reader if it agrees with np.random.get_state(), else that getter; either way the
    global RNG is left as found."""
    read, original = _numpy_rng_reader(), np.random.get_state()
    try:
        states = [lambda: np.random.seed(12345), lambda: np.random.standard_normal(3),  # a cached gauss
                  lambda: np.random.standard_normal(1), lambda: np.random.random(700)]  # past a refill
        return read if _matches_public(read, _numpy_rng_public, states) else _numpy_rng_public
    except Exception:
        return _numpy_rng_public
    finally:
        np.random.set_state(original)


def _checked_python_rng_reader() -> Callable[[], tuple[bytes, Any]]:
    """The memory reader if it agrees with random.getstate(), else that getter; either way the
    module's RNG is left as found."""
    read, original = _python_rng_reader(), random.getstate()
    try:
        states = [lambda: random.seed(12345), lambda: random.gauss(), lambda: random.getrandbits(32 * 700)]
        return read if _matches_public(read, _python_rng_public, states) else _python_rng_public
    except Exception:
        return _python_rng_public
    finally:
        random.setstate(original)


# --- the probes, in the order of the descriptions ---------------------------------------------

_PROBES = (
    _Setting("the current directory", _current_directory, _change_directory, _arrow(_show_directory)),
    _Setting("torch's default dtype", torch.get_default_dtype, torch.set_default_dtype, _arrow(_dtype_name)),
    _Setting("torch's number of threads", torch.get_num_threads, torch.set_num_threads),
    _Setting("torch's grad mode", torch.is_grad_enabled, torch.set_grad_enabled, _arrow(_show_enabled)),
    _Setting("torch's deterministic algorithms", _read_deterministic, _write_deterministic,
             _arrow(_show_deterministic)),
    _Setting("numpy's floating-point error handling", np.geterr, _write_numpy_errors, _numpy_errors_difference),
    _Setting("the global RNG state of numpy (np.random)", _checked_numpy_rng_reader(), _set_numpy_rng, None),
    _Setting("the state of Python's random module", _checked_python_rng_reader(), _set_python_rng, None),
    _Setting("the global RNG state of torch", _torch_rng_bytes, _set_torch_rng_bytes, None),
    _CudaRng(),
    _stream("stdout"),
    _stream("stderr"),
    _stream("stdin"),
    _signal_handler(signal.SIGINT),
    _signal_handler(signal.SIGALRM),
    # Last: putting torch's settings back can itself set environment variables (the first
    # torch.use_deterministic_algorithms call sets TORCHINDUCTOR_CACHE_DIR), which this removes.
    _Environ(),
)
_READERS = tuple(probe.read for probe in _PROBES)  # looked up once: capture and restore run very often
