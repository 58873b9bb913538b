"""The one writer of generated outputs: text or bytes, written only when changed.

Every generated file of the project (``reference/_generated``, ``docs/spec``,
``docs/site``, ``docs/verification.json``) is a :class:`GeneratedFile` held in memory;
:func:`write` writes the stale ones, :func:`stale` names them, and :func:`strays` names
files in a generated folder that generation does not produce (left over, or added by
hand). The marker that tools recognise generated files by is assembled here, not
spelled, so that those tools do not skip the generators themselves.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

MARKER = "@" + "generated"  # what tools look for to skip generated files (spelled out only in outputs)


@dataclass(frozen=True)
class GeneratedFile:
    """One generated file's path and content (``str``: UTF-8 text; ``bytes``: written as is)."""

    path: Path
    content: str | bytes

    @property
    def data(self) -> bytes:
        return self.content.encode() if isinstance(self.content, str) else self.content

    @property
    def stale(self) -> bool:
        return not self.path.exists() or self.path.read_bytes() != self.data


def write(files: Iterable[GeneratedFile]) -> list[Path]:
    """Write the stale files; return the paths written."""
    written = []
    for f in files:
        if f.stale:
            f.path.parent.mkdir(parents=True, exist_ok=True)
            f.path.write_bytes(f.data)
            written.append(f.path)
    return written


def stale(files: Iterable[GeneratedFile]) -> list[Path]:
    return [f.path for f in files if f.stale]


def strays(folders: Iterable[Path], files: Iterable[GeneratedFile], *,
           ignore: tuple[str, ...] = ("__pycache__",)) -> list[Path]:
    """Files under ``folders`` that ``files`` does not produce (parts named in ``ignore`` aside)."""
    expected = {f.path for f in files}
    found = [p for d in folders if d.exists() for p in sorted(d.rglob("*")) if p.is_file()]
    return [p for p in found if p not in expected and not set(p.parts) & set(ignore)]
