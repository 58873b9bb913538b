"""Hypothesis profiles, chosen by HYPOTHESIS_PROFILE: 'dev', 'ci' (the default) and 'thorough'.

- dev: a handful of examples per check, for editing loops;
- ci: derandomized (the same examples every run), bounded examples per check, so the
  default test run and `normspec verify` stay within minutes on 2 cores;
- thorough: many examples per check, random, for long property runs.
"""
from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path

from hypothesis import HealthCheck, settings
from hypothesis import configuration as hypothesis_configuration
from hypothesis.internal.conjecture.choice import choice_constraints_key, choice_permitted
from hypothesis.internal.conjecture.providers import GLOBAL_CONSTANTS, HypothesisProvider

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


_GLOBAL_ONLY: dict = {}  # (choice type, constraints) -> the built-in constants permitted


def _draw_builtin_constant(self, choice_type, constraints, *, p: float = 0.05):
    """``HypothesisProvider._maybe_draw_constant`` without the pool of local-module literals."""
    if self._random.random() > p:
        return None
    key = (choice_type, choice_constraints_key(choice_type, constraints))
    if key not in _GLOBAL_ONLY:
        _GLOBAL_ONLY[key] = tuple(c for c in GLOBAL_CONSTANTS.set_for_type(choice_type)
                                  if choice_permitted(c, constraints))
    constants = _GLOBAL_ONLY[key]
    return self._random.choice(constants) if constants else None


@contextmanager
def import_independent_draws():
    """Hypothesis' draws, made independent of which modules are imported, for one search.

    Hypothesis occasionally (p = 0.05 per draw) replaces a drawn value by a constant: one of
    its built-in ones, or a literal read from the source of every local module in
    ``sys.modules``. The second pool grows with each import, so a derandomized search drew
    other cases (and shrank along other paths) after importing, say, the mpmath oracle or a
    user's module first. While this is active every provider keeps only the built-in pool;
    the previous behaviour is restored on exit. (This patches a private method of the
    pinned Hypothesis version; tests/test_verify_determinism.py fails if it stops working.)
    """
    previous = HypothesisProvider._maybe_draw_constant
    HypothesisProvider._maybe_draw_constant = _draw_builtin_constant
    try:
        yield
    finally:
        HypothesisProvider._maybe_draw_constant = previous


def cache_folder() -> Path:
    """normspec's cache folder: ``$XDG_CACHE_HOME/normspec`` (``~/.cache/normspec``)."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "normspec"


@contextmanager
def hypothesis_files_in_cache():
    """Hypothesis' files (its cache of module literals, ...) go to normspec's cache folder, not to
    ``./.hypothesis`` in the user's folder, for one search; the previous home is restored on exit."""
    previous = hypothesis_configuration.storage_directory(intent_to_write=False).path
    hypothesis_configuration.set_hypothesis_home_dir(cache_folder() / "hypothesis")
    try:
        yield
    finally:
        hypothesis_configuration.set_hypothesis_home_dir(previous)
