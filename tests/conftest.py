"""Hypothesis profile for the suite: HYPOTHESIS_PROFILE = dev | ci (default) | thorough; its files
(the cache of module literals) in normspec's cache folder, not in the repository."""
from hypothesis import configuration, settings

from normspec.verify.running.profiles import cache_folder, profile_name

settings.load_profile(profile_name())
configuration.set_hypothesis_home_dir(cache_folder() / "hypothesis")
