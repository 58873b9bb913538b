"""derive: the one symbolic definition of normalize and everything printed from it.

Importing this package is light (no SymPy); the symbolic modules are imported on use.
"""
from normspec.derive.errors import NormSpecError

__all__ = ["NormSpecError"]
