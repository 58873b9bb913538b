"""verify: the battery of checks, and the harness that points it at any implementation.

    import verify
    report = verify.check(my_layer_norm, "layer_norm")

Importing ``verify`` is light (no torch); the API loads on first use.
"""
from __future__ import annotations

__all__ = ["check", "parametrize_checks"]


def __getattr__(name: str):
    if name == "check":
        from verify.api import check

        return check
    if name == "parametrize_checks":
        from verify.pytest_plugin import parametrize_checks

        return parametrize_checks
    raise AttributeError(f"module 'verify' has no attribute {name!r}")
