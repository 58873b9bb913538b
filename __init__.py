"""normspec: a symbolic-plus-numeric verification suite for normalization layers and their gradients.

    import normspec
    report = normspec.check(my_layer_norm, "layer_norm", dtypes=("float32", "bfloat16"))
    y = normspec.numpy_ref.layer_norm(x, (16,))

The repository's folders are its subpackages: ``normspec.derive`` (the SymPy derivation,
proofs and code generation), ``normspec.reference`` (the generated NumPy and torch
references), ``normspec.verify`` (the battery and the harness), ``normspec.docs`` (the spec
generator) and ``normspec.cli`` (the ``normspec`` command). Importing ``normspec`` is light:
the names below load their modules on first use, so ``normspec derive --check`` never
imports torch.
"""
from __future__ import annotations

import importlib

from normspec.derive.errors import NormSpecError

# public name -> (module, attribute or None for the module itself)
_PUBLIC = {
    "check": ("normspec.verify.api", "check"),
    "replay_case": ("normspec.verify.api", "replay_case"),
    "parametrize_checks": ("normspec.verify.pytest_plugin", "parametrize_checks"),
    "numpy_ref": ("normspec.reference.numpy_ref", None),
    "torch_ref": ("normspec.reference.torch_ref", None),
    "VARIANTS": ("normspec.derive.variants", "VARIANTS"),
}
__all__ = ["NormSpecError", *_PUBLIC]


def __getattr__(name: str):
    if name not in _PUBLIC:
        raise AttributeError(f"module 'normspec' has no attribute {name!r}")
    module_name, attribute = _PUBLIC[name]
    module = importlib.import_module(module_name)
    return module if attribute is None else getattr(module, attribute)
