"""The implementations normspec ships, by name: its two references and torch's own ops."""
from __future__ import annotations

import torch.nn.functional

from normspec.derive import abi, variants
from normspec.derive.errors import require
from normspec.reference import numpy_ref, torch_ref
from normspec.verify.implementations.base import Implementation

BUILTIN = ("numpy_ref", "torch_ref", "torch_native", "torch_aten")
# built-ins run in a supervised worker process: an aten backward segfaults on some inputs (see
# verify/running/deviations.py), and a crash must fail one check, not end the run
SUPERVISED = ("torch_aten",)


def builtin(name: str) -> Implementation:
    """'numpy_ref' (with its hand-off ``*_backward``), 'torch_ref' or 'torch_native'
    (torch.nn.functional), for every variant of the registry; 'torch_aten' (torch.ops.aten's
    native_layer_norm and its backward, ...) under the saved-statistics convention."""
    require(name in BUILTIN, "implementation", name, f"one of {', '.join(BUILTIN)}")
    if name == "numpy_ref":
        return Implementation(name, {v: getattr(numpy_ref, v) for v in variants.NAMES}, array="numpy",
                              gradients="backward",
                              backwards={v: getattr(numpy_ref, f"{v}_backward") for v in variants.NAMES})
    if name == "torch_ref":
        return Implementation(name, {v: getattr(torch_ref, v) for v in variants.NAMES})
    if name == "torch_aten":  # the saved-statistics convention: torch.ops.aten's forward and backward ops
        ops = torch.ops.aten
        return Implementation(name, {v: getattr(ops, c.forward) for v, c in abi.ATEN.items()}, gradients="backward",
                              backwards={v: getattr(ops, c.backward) for v, c in abi.ATEN.items()}, abi="aten")
    native = [v for v in variants.NAMES if hasattr(torch.nn.functional, v)]  # torch has no fused or adaptive norms
    return Implementation(name, {v: getattr(torch.nn.functional, v) for v in native})
