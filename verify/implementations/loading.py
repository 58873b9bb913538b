"""Loading a user's implementation by import path (``package.module:function`` or ``package.module``),
never by exec."""
from __future__ import annotations

import importlib
import os
import sys
from types import ModuleType
from typing import Callable

from normspec.derive.errors import NormSpecError, require
from normspec.verify.implementations.guard import describe_error, interrupted_by_user


def load_module(path: str, *, argument: str = "--impl") -> ModuleType:
    """The module named by ``package.module`` (its functions named after variants are the
    implementation)."""
    require(bool(path) and ":" not in path and all(part.isidentifier() for part in path.split(".")), argument,
            path, "'package.module' (a module of functions named after variants) or 'package.module:function'")
    return _imported(path, path, argument)


def _imported(module_name: str, path: str, argument: str) -> ModuleType:
    """The module, imported; whatever importing raises (an ImportError, an exception or exit()
    at import time) is an input error naming the argument."""
    _current_folder_importable()
    try:
        return importlib.import_module(module_name)
    except ImportError as error:
        raise NormSpecError(f"{argument}={path!r}: cannot import {module_name!r} ({describe_error(error)})") from None
    except BaseException as error:  # noqa: BLE001 - the module's own code failed while importing
        if isinstance(error, KeyboardInterrupt) and interrupted_by_user():
            raise
        raise NormSpecError(f"{argument}={path!r}: importing {module_name!r} raised {describe_error(error)}") from None


def _current_folder_importable() -> None:
    if os.getcwd() not in sys.path:  # as `python -m` does: modules in the current folder import
        sys.path.insert(0, os.getcwd())


def load(path: str, *, argument: str = "--impl") -> Callable:
    """The callable named by ``package.module:attribute[.attribute]``."""
    module_name, sep, attribute = path.partition(":")
    if not sep or not module_name or not attribute:
        raise NormSpecError(f"{argument}={path!r}: expected 'package.module:function'")
    target = _imported(module_name, path, argument)
    for part in attribute.split("."):
        if not hasattr(target, part):
            raise NormSpecError(f"{argument}={path!r}: module {module_name!r} has no attribute {attribute!r}")
        target = getattr(target, part)
    if not callable(target):
        raise NormSpecError(f"{argument}={path!r}: {attribute!r} is not callable")
    return target
