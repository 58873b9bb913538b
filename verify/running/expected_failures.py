"""Expected failures listed by a user: the one parser of such lists, for the API, the CLI and pytest.

An entry is a check id, ``variant::dtype::check``, or the pytest id of the same check,
``variant-dtype-check`` (variants, dtypes and checks never contain '-'); a file holds one
per line, with '#' comments. Entries are returned as check ids.
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterable

from normspec.derive.errors import require


def test_id(check_id: str) -> str:
    """The pytest id of a check id: ``layer_norm::float32::forward`` -> ``layer_norm-float32-forward``."""
    return check_id.replace("::", "-")


def check_id(entry: str) -> str:
    """A check id from either spelling."""
    entry = entry.strip()
    return entry if "::" in entry else entry.replace("-", "::")


def parse(source: Iterable[str] | str | Path | None, *, argument: str = "expected_failures") -> set[str]:
    """Check ids from an iterable of entries, or from a file with one entry per line and '#' comments."""
    if source is None:
        return set()
    if isinstance(source, (str, Path)):
        path = Path(source)
        require(path.is_file(), argument, str(source), "a file with one check id per line")
        source = path.read_text().splitlines()
    entries = (line.split("#", 1)[0].strip() for line in source)
    return {check_id(entry) for entry in entries if entry}
