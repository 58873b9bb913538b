"""Where a run writes: validated before the run starts, as absolute paths.

An output that cannot be written is an input error found before any check runs (not a
traceback after an hour of checks that loses the report), and a path is resolved against
the current directory when the run starts, so an implementation that changes directory
cannot move the report.
"""
from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path

from normspec.derive.errors import NormSpecError


def output_file(path: str | os.PathLike, *, argument: str) -> Path:
    """``path`` as an absolute path to a writable file; its folder is created if missing."""
    target = Path(path).expanduser().absolute()
    if target.is_dir():
        raise NormSpecError(f"{argument}={str(path)!r}: is a folder, expected a file to write")
    _writable_folder(target.parent, argument, path)
    if target.exists():
        try:
            with open(target, "a"):
                pass
        except OSError as error:
            raise NormSpecError(f"{argument}={str(path)!r}: the file cannot be written "
                                f"({error.strerror or error})") from None
    return target


def output_folder(path: str | os.PathLike, *, argument: str) -> Path:
    """``path`` as an absolute path to a writable folder, created if missing."""
    target = Path(path).expanduser().absolute()
    if target.exists() and not target.is_dir():
        raise NormSpecError(f"{argument}={str(path)!r}: is a file, expected a folder")
    _writable_folder(target, argument, path)
    return target


def _writable_folder(folder: Path, argument: str, given) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise NormSpecError(f"{argument}={str(given)!r}: cannot create the folder {str(folder)!r} "
                            f"({error.strerror or error})") from None
    try:  # a real write: permission bits do not tell for root or a read-only file system
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as error:
        raise NormSpecError(f"{argument}={str(given)!r}: the folder {str(folder)!r} is not writable "
                            f"({error.strerror or error})") from None


def file_stem(name: str) -> str:
    """A file-name-safe form of an implementation's name (``pkg.mod:fn`` -> ``pkg.mod-fn``)."""
    return re.sub(r"[^A-Za-z0-9_.]+", "-", name).strip("-.") or "implementation"
