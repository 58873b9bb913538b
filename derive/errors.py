"""The project's one error type."""


class NormSpecError(ValueError):
    """Bad input to normspec: the message names the argument, its value and what was expected."""
