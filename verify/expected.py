"""Named, explained expected deviations of the implementations normspec ships with.

A deviation is keyed by implementation and check id (``variant::dtype::check``). It
marks a genuine limit of that implementation, never a loosened check: the check still
runs and its failure is shown as an expected failure with this explanation.
"""
from __future__ import annotations

EXPECTED: dict[str, dict[str, str]] = {
    "numpy_ref": {},
    "torch_ref": {},
    "torch_native": {},
}


def lookup(implementation: str, check_id: str) -> str | None:
    return EXPECTED.get(implementation, {}).get(check_id)
