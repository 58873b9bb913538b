"""NumPy reference implementations, with ``torch.nn.functional`` signatures.

The mathematics is generated (``reference/_generated/numpy_kernels.py``, printed from
the SymPy derivation); the glue (validation, reshapes, dtype policy) is shared with
torch_ref in ``reference._plan``. float16 inputs are computed in float32 and the
results cast back, as torch does; float32 and float64 in their own precision.

``layer_norm``, ``batch_norm``, ``instance_norm``, ``group_norm``, ``rms_norm`` and each
``*_backward(grad_out, <same inputs>) -> (dx, dweight, dbias)``; ``fused_add_layer_norm`` and
``fused_add_rms_norm`` return ``(y, residual_out)`` and their backward takes ``grad_out,
grad_residual_out`` and returns ``(dx, dresidual, dweight[, dbias])``; ``adaptive_layer_norm`` and
``adaptive_rms_norm``'s backward returns ``(dx, dscale[, dshift])``. A backward never updates
running statistics; a gradient is None for an absent parameter.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from normspec.derive import dtypes, variants
from normspec.derive.errors import require
from normspec.reference import _plan
from normspec.reference._generated import numpy_kernels


class _NumpyBackend:
    kernels = numpy_kernels

    def check_array(self, value: Any, name: str, *, like: Any = None) -> None:
        require(isinstance(value, np.ndarray), name, type(value).__name__, "a numpy.ndarray")
        require(np.issubdtype(value.dtype, np.floating), f"{name}.dtype", str(value.dtype),
                "a floating dtype (float16, float32 or float64)")

    def machine_eps(self, array: np.ndarray) -> float:
        return dtypes.machine_eps(array.dtype.name)

    def compute_dtype(self, arrays: list[np.ndarray]) -> np.dtype:
        return np.dtype(dtypes.compute_dtype(np.result_type(*arrays).name))

    def to_dtype(self, array: np.ndarray, dtype: np.dtype) -> np.ndarray:
        return array.astype(dtype, copy=False)

    def cast(self, array: np.ndarray, like: np.ndarray) -> np.ndarray:
        return array.astype(like.dtype, copy=False)


_BACKEND = _NumpyBackend()


def _forward(plan: _plan.Plan) -> tuple[np.ndarray, ...]:
    values = _plan.kernel_inputs(plan, _BACKEND)
    results = _plan.call_kernel(numpy_kernels, f"{plan.family}_forward", values)
    _plan.update_running(plan, results)
    return tuple(_BACKEND.cast(results[name].reshape(plan.x.shape), plan.x) for name in plan.variant.outputs)


# The public functions, one pair per variant of the registry (named as in torch.nn.functional).
__all__ = [f"{name}{suffix}" for name in variants.NAMES for suffix in ("", "_backward")]
for _variant_name in variants.NAMES:
    globals()[_variant_name], globals()[f"{_variant_name}_backward"] = _plan.public_variant(_BACKEND, _variant_name, _forward)
