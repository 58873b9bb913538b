"""Loading a user's implementation by import path (``package.module:function``), never by exec."""
from __future__ import annotations

import importlib
import os
import sys
from typing import Callable

from normspec.derive.errors import NormSpecError


def load(path: str, *, argument: str = "--impl") -> Callable:
    """The callable named by ``package.module:attribute[.attribute]``."""
    module_name, sep, attribute = path.partition(":")
    if not sep or not module_name or not attribute:
        raise NormSpecError(f"{argument}={path!r}: expected 'package.module:function'")
    if os.getcwd() not in sys.path:  # as `python -m` does: modules in the current folder import
        sys.path.insert(0, os.getcwd())
    try:
        target = importlib.import_module(module_name)
    except ImportError as error:
        raise NormSpecError(f"{argument}={path!r}: cannot import {module_name!r} ({error})") from None
    for part in attribute.split("."):
        if not hasattr(target, part):
            raise NormSpecError(f"{argument}={path!r}: module {module_name!r} has no attribute {attribute!r}")
        target = getattr(target, part)
    if not callable(target):
        raise NormSpecError(f"{argument}={path!r}: {attribute!r} is not callable")
    return target
