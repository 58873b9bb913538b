"""The floating dtypes normspec knows, and their facts: the one place that states them.

Names are torch's (``float64``, ``float32``, ``float16``, ``bfloat16``). The *compute
dtype* is the precision the statistics are accumulated in: float32 for the 16-bit
types (as torch's kernels and the references do), the dtype itself otherwise. Unit
roundoff, spacing and range are read from ``finfo`` (NumPy's, and ml_dtypes' for
bfloat16, which NumPy lacks), never typed.
"""
from __future__ import annotations

import functools

import ml_dtypes
import numpy as np

from normspec.derive.errors import require

DTYPES = ("float64", "float32", "float16", "bfloat16")
LOW_PRECISION = ("float16", "bfloat16")


def check(name: object, *, argument: str = "dtype") -> str:
    require(name in DTYPES, argument, name, f"one of {', '.join(DTYPES)}")
    return name  # type: ignore[return-value]


def compute_dtype(name: str) -> str:
    """The dtype statistics are accumulated in for inputs of ``name``."""
    return "float32" if check(name) in LOW_PRECISION else name


@functools.cache
def finfo(name: str):
    """``finfo`` of ``name`` (eps, max, tiny, ...)."""
    return ml_dtypes.finfo(ml_dtypes.bfloat16) if check(name) == "bfloat16" else np.finfo(np.dtype(name))


def unit_roundoff(name: str) -> float:
    """Half the spacing at 1: the relative error of one correctly rounded result."""
    return float(finfo(name).eps) / 2


def spacing_at_one(name: str) -> float:
    return float(finfo(name).eps)


def largest(name: str) -> float:
    return float(finfo(name).max)


def smallest_subnormal(name: str) -> float:
    """The spacing of the dtype's subnormal range (float16: 2^-24, about 6e-8)."""
    return float(finfo(name).smallest_subnormal)


def spacing(name: str, values) -> np.ndarray:
    """The spacing of ``name``'s values at ``values`` (float64 arrays): one ulp there, the
    subnormal spacing below the normal range."""
    info = finfo(name)
    magnitude = np.maximum(np.abs(np.asarray(values, dtype=np.float64)), float(info.tiny))
    with np.errstate(divide="ignore", over="ignore", invalid="ignore"):
        exponent = np.floor(np.log2(magnitude))
    return np.where(np.isfinite(exponent), 2.0 ** exponent * float(info.eps), np.inf)


def coarser(*names: str) -> str:
    """The least precise of ``names`` (the one with the largest spacing at 1)."""
    return max(names, key=spacing_at_one)


def machine_eps(name: str) -> float:
    """rms_norm's eps=None: the machine epsilon of the compute dtype (as torch)."""
    return spacing_at_one(compute_dtype(name))
