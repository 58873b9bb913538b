"""The project's one error type, and the checks that raise it with a message naming the argument."""
from __future__ import annotations

import argparse
import math
import numbers


class NormSpecError(ValueError):
    """Bad input to normspec: the message names the argument, its value and what was expected."""


def require(condition: bool, argument: str, value: object, expected: str) -> None:
    """Raise NormSpecError naming ``argument``, its ``value`` and what was ``expected``."""
    if not condition:
        raise NormSpecError(f"{argument}={value!r}: expected {expected}")


def check_eps(eps: object, *, name: str = "eps") -> float:
    require(isinstance(eps, numbers.Real) and not isinstance(eps, bool), name, eps, "a real number")
    require(math.isfinite(eps) and eps >= 0, name, eps, "a finite number >= 0")
    return float(eps)


def check_weight_offset(offset: object, *, name: str = "weight_offset") -> float:
    require(isinstance(offset, numbers.Real) and not isinstance(offset, bool), name, offset, "a real number")
    require(math.isfinite(offset), name, offset, "a finite number")
    return float(offset)


def check_momentum(momentum: object) -> float:
    require(isinstance(momentum, numbers.Real) and not isinstance(momentum, bool), "momentum", momentum,
            "a float in [0, 1] (momentum=None, a cumulative average, is the module's business: "
            "pass 1/num_batches_tracked)")
    require(0.0 <= momentum <= 1.0, "momentum", momentum, "a float in [0, 1]")
    return float(momentum)


def check_timeout(seconds: object, *, name: str = "timeout") -> float:
    """A time limit in seconds: positive and finite (0 does not mean 'no limit')."""
    require(isinstance(seconds, numbers.Real) and not isinstance(seconds, bool), name, seconds,
            "a number of seconds")
    require(math.isfinite(seconds) and seconds > 0, name, seconds, "a positive, finite number of seconds")
    return float(seconds)


def positive_seconds(text: str) -> float:
    """A command-line type: a positive, finite number of seconds."""
    try:
        return check_timeout(float(text), name="--timeout")
    except (ValueError, NormSpecError):
        raise argparse.ArgumentTypeError(f"{text!r}: expected a positive, finite number of seconds") from None


def positive_int(text: str) -> int:
    """A command-line type: a positive integer (argparse reports the text otherwise)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected a positive integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: expected a positive integer")
    return value
