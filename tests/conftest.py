"""Hypothesis profile for the suite: HYPOTHESIS_PROFILE = dev | ci (default) | thorough."""
from hypothesis import settings

from normspec.verify.running.profiles import profile_name

settings.load_profile(profile_name())
