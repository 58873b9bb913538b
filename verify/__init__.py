"""verify: the battery and the harness."""
