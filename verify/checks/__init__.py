"""The battery's named checks: oracles, invariants and cross-variant identities.

A :class:`Check` (``base``) runs an implementation on one case and returns the
comparisons it made (each with its errors and tolerance, see ``normspec.verify.truth.tolerance``).
``skip`` says when a check does not apply to a variant, dtype or implementation, and why;
a check may also adapt the drawn case (turn affine off, force a value kind) before
running. The checks are declared beside their functions, by kind.
"""
from __future__ import annotations

from normspec.verify.checks import identities, invariants, oracle_checks, saved_statistics
from normspec.verify.checks.base import Check, Context, GroupView, effective_case

CHECKS: dict[str, Check] = {c.name: c for c in (*oracle_checks.CHECKS, *saved_statistics.CHECKS, *invariants.CHECKS,
                                              *identities.CHECKS)}

__all__ = ["CHECKS", "Check", "Context", "GroupView", "effective_case"]
