"""Hypothesis profiles, chosen by HYPOTHESIS_PROFILE: 'dev', 'ci' (the default) and 'thorough'.

- dev: a handful of examples per check, for editing loops;
- ci: derandomized (the same examples every run), bounded examples per check, so the
  default test run and `normspec verify` stay within minutes on 2 cores;
- thorough: many examples per check, random, for long property runs.
"""
from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

_COMMON = dict(deadline=None, database=None, print_blob=False, report_multiple_bugs=False,
               suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much,
                                      HealthCheck.data_too_large, HealthCheck.function_scoped_fixture])
PROFILES = {
    "dev": dict(max_examples=4, derandomize=True),
    "ci": dict(max_examples=8, derandomize=True),
    "thorough": dict(max_examples=100, derandomize=False),
}
for _name, _options in PROFILES.items():
    settings.register_profile(_name, **_COMMON, **_options)


def profile_name() -> str:
    name = os.environ.get("HYPOTHESIS_PROFILE", "ci")
    if name not in PROFILES:
        raise ValueError(f"HYPOTHESIS_PROFILE={name!r}: expected one of {sorted(PROFILES)}")
    return name


def current_settings(max_examples: int | None = None, *, seeded: bool = False) -> settings:
    """The profile's settings; ``seeded`` turns derandomization off for a run with an explicit
    seed (which verify.battery.run_check applies)."""
    base = settings.get_profile(profile_name())
    if max_examples:
        base = settings(base, max_examples=max_examples)
    if seeded:
        base = settings(base, derandomize=False)
    return base
