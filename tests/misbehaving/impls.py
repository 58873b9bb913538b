"""layer_norm implementations that break the calling contract in one way each."""
import os
import signal
import time

import torch
import torch.nn.functional as F

_calls = {"n": 0}


def correct(x, normalized_shape, weight=None, bias=None, eps=1e-5):
    """torch's own layer_norm: the control."""
    return F.layer_norm(x, normalized_shape, weight, bias, eps)


def raises(x, normalized_shape, weight=None, bias=None, eps=1e-5):
    """Raises on every call."""
    raise RuntimeError("kernel launch failed")


def wrong_shape(x, normalized_shape, weight=None, bias=None, eps=1e-5):
    """Returns one row too few."""
    return F.layer_norm(x, normalized_shape, weight, bias, eps)[:-1]


def wrong_dtype(x, normalized_shape, weight=None, bias=None, eps=1e-5):
    """Returns float32 whatever the input dtype."""
    return F.layer_norm(x.float(), normalized_shape, None if weight is None else weight.float(),
                        None if bias is None else bias.float(), eps)


def wrong_device(x, normalized_shape, weight=None, bias=None, eps=1e-5):
    """Returns its result on the meta device."""
    return F.layer_norm(x, normalized_shape, weight, bias, eps).to("meta")


def nan_output(x, normalized_shape, weight=None, bias=None, eps=1e-5):
    """Puts a NaN in the first element."""
    y = F.layer_norm(x, normalized_shape, weight, bias, eps).clone()
    y.view(-1)[0] = float("nan")
    return y


def modifies_input(x, normalized_shape, weight=None, bias=None, eps=1e-5):
    """Normalizes x in place as a side effect."""
    y = F.layer_norm(x, normalized_shape, weight, bias, eps)
    with torch.no_grad():
        x.mul_(2)
    return y


def nondeterministic(x, normalized_shape, weight=None, bias=None, eps=1e-5):
    """Adds a different tiny amount on every call."""
    _calls["n"] += 1
    return F.layer_norm(x, normalized_shape, weight, bias, eps) * (1 + _calls["n"] * 1e-3)


def hangs(x, normalized_shape, weight=None, bias=None, eps=1e-5):
    """Never returns (in Python: the per-call time limit interrupts it)."""
    while True:
        time.sleep(0.05)


def crashes(x, normalized_shape, weight=None, bias=None, eps=1e-5):
    """Kills its own process, as a segfaulting kernel would."""
    os.kill(os.getpid(), signal.SIGSEGV)


_flaky_calls = {"n": 0}


def flaky(x, normalized_shape, weight=None, bias=None, eps=1e-5):
    """Right on three calls in four; the fourth is 1% off (a race in a reduction, say)."""
    _flaky_calls["n"] += 1
    y = F.layer_norm(x, normalized_shape, weight, bias, eps)
    return y * 1.01 if _flaky_calls["n"] % 4 == 0 else y
