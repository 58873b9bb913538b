"""Hostile implementations of layer_norm: each does one thing a harness must survive (issue 10's
table, one function per row). ``tests/test_verify_hostile.py`` runs each through the CLI.

Most are right on the probe's small case, shape (2, 4, 3), and misbehave on a case whose last
side is larger (``_later``), so the hostile act happens in a check, after the probe; the
``*_always`` ones misbehave in the probe call too.
"""
import os
import random
import signal
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F


def _later(x) -> bool:
    return x.shape[-1] > 3


def _right(x, normalized_shape, weight, bias, eps):
    return F.layer_norm(x, normalized_shape, weight, bias, eps)


def exits_in_forward(x, normalized_shape, weight=None, bias=None, eps=1e-5):
    if _later(x):
        sys.exit(3)
    return _right(x, normalized_shape, weight, bias, eps)


def exits_always(x, normalized_shape, weight=None, bias=None, eps=1e-5):
    sys.exit(3)


class _ExitsInBackward(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        return x.clone()

    @staticmethod
    def backward(ctx, grad):
        sys.exit(3)


def exits_in_backward(x, normalized_shape, weight=None, bias=None, eps=1e-5):
    return _right(_ExitsInBackward.apply(x), normalized_shape, weight, bias, eps)


def ends_process_always(x, normalized_shape, weight=None, bias=None, eps=1e-5):
    os._exit(3)  # no Python unwinding at all, as a kernel calling exit() would


def ends_process_later(x, normalized_shape, weight=None, bias=None, eps=1e-5):
    if _later(x):
        os._exit(3)
    return _right(x, normalized_shape, weight, bias, eps)


def raises_keyboard_interrupt(x, normalized_shape, weight=None, bias=None, eps=1e-5):
    if _later(x):
        raise KeyboardInterrupt
    return _right(x, normalized_shape, weight, bias, eps)


def raises_generator_exit(x, normalized_shape, weight=None, bias=None, eps=1e-5):
    if _later(x):
        raise GeneratorExit
    return _right(x, normalized_shape, weight, bias, eps)


def _stuck_in_native_code():
    # A kernel spinning in C never returns to the interpreter, so SIGALRM's Python handler never
    # runs; blocking the signal and sleeping behaves the same way, without a compiler.
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGALRM})
    time.sleep(3600)


def hangs_in_native_code(x, normalized_shape, weight=None, bias=None, eps=1e-5):
    if _later(x):
        _stuck_in_native_code()
    return _right(x, normalized_shape, weight, bias, eps)


def hangs_in_native_code_always(x, normalized_shape, weight=None, bias=None, eps=1e-5):
    _stuck_in_native_code()


def swallows_interrupts(x, normalized_shape, weight=None, bias=None, eps=1e-5):
    """A Python loop that catches everything, the time limit's interrupt included."""
    while _later(x):
        try:
            time.sleep(0.01)
        except BaseException:  # noqa: BLE001 - the hostile part
            pass
    return _right(x, normalized_shape, weight, bias, eps)


def markup_in_message(x, normalized_shape, weight=None, bias=None, eps=1e-5):
    raise ValueError("bad [/x] [bold]value[/bold] :ok: [link=http://example.com]here[/link]")


def ok(x, normalized_shape, weight=None, bias=None, eps=1e-5):
    """Correct; its path ``...hostile:ok`` followed by ':' reads as the :ok: emoji to rich."""
    return _right(x, normalized_shape, weight, bias, eps)


def changes_directory(x, normalized_shape, weight=None, bias=None, eps=1e-5):
    os.chdir(os.path.dirname(os.path.abspath(__file__)))
    return _right(x, normalized_shape, weight, bias, eps)


def changes_hypothesis_profile(x, normalized_shape, weight=None, bias=None, eps=1e-5):
    os.environ["HYPOTHESIS_PROFILE"] = "no-such-profile"
    return _right(x, normalized_shape, weight, bias, eps)


def changes_global_settings(x, normalized_shape, weight=None, bias=None, eps=1e-5):
    """The default dtype, the thread count, NumPy's error handling and every RNG seed."""
    torch.set_default_dtype(torch.float64)
    torch.set_num_threads(1)
    np.seterr(all="raise")
    torch.manual_seed(12345)  # not 0: hypothesis seeds the global RNGs with 0 around each example
    np.random.seed(12345)
    random.seed(12345)
    return _right(x, normalized_shape, weight, bias, eps)


class _MutatesGradOut(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        return x.clone()

    @staticmethod
    def backward(ctx, grad):
        out = grad.clone()
        grad.mul_(2)  # writes into the gradient buffer it was handed
        return out


def mutates_grad_out(x, normalized_shape, weight=None, bias=None, eps=1e-5):
    return _MutatesGradOut.apply(_right(x, normalized_shape, weight, bias, eps))


def layer_norm_numpy(x, normalized_shape, weight=None, bias=None, eps=1e-5):
    from normspec.reference import numpy_ref

    return numpy_ref.layer_norm(x, normalized_shape, weight, bias, eps)


def backward_without_dx(grad_out, x, normalized_shape, weight=None, bias=None, eps=1e-5):
    from normspec.reference import numpy_ref

    _, dweight, dbias = numpy_ref.layer_norm_backward(grad_out, x, normalized_shape, weight, bias, eps)
    return None, dweight, dbias


def backward_mutating_grad_out(grad_out, x, normalized_shape, weight=None, bias=None, eps=1e-5):
    from normspec.reference import numpy_ref

    grads = numpy_ref.layer_norm_backward(grad_out, x, normalized_shape, weight, bias, eps)
    grad_out *= 0
    return grads


def undecodable_message(x, normalized_shape, weight=None, bias=None, eps=1e-5):
    raise ValueError("bad \udc80 byte")  # a lone surrogate: not encodable to UTF-8
