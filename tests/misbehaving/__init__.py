"""Implementations that misbehave towards the harness itself (not numerically wrong ones:
those are tests/bug_zoo). The harness must report each as a failure and keep going."""
