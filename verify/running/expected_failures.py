"""Expected failures listed by a user: the one parser of such lists, for the API, the CLI and pytest.

An entry is a check id, ``variant::dtype::check``, or the pytest id of the same check,
``variant-dtype-check`` (variants, dtypes and checks never contain '-'), optionally followed
by bounds that say what the failure may look like:

    layer_norm::float16::backward                       # any failure of that check
    layer_norm::float16::backward values=offset,huge    # only on those value kinds
    layer_norm::float16::backward ratio<=4              # only up to 4x the tolerance

A failure outside its entry's bounds fails again, so an entry for a known deviation does not
hide a new bug in the same check. A file holds one entry per line, with '#' comments.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Mapping

from normspec.derive.errors import NormSpecError, require


@dataclass(frozen=True)
class ExpectedFailure:
    check_id: str
    values: tuple[str, ...] = ()  # the value kinds it covers (empty: every kind)
    max_ratio: float = math.inf  # the error / tolerance it may reach

    def covers(self, values: str, ratio: float) -> bool:
        return (not self.values or values in self.values) and ratio <= self.max_ratio

    def __str__(self) -> str:
        bounds = ([f"values={','.join(self.values)}"] if self.values else []) + (
            [f"ratio<={self.max_ratio:g}"] if math.isfinite(self.max_ratio) else [])
        return " ".join([self.check_id, *bounds])


def test_id(check_id: str) -> str:
    """The pytest id of a check id: ``layer_norm::float32::forward`` -> ``layer_norm-float32-forward``."""
    return check_id.replace("::", "-")


def check_id(entry: str) -> str:
    """A check id from either spelling."""
    entry = entry.strip()
    return entry if "::" in entry else entry.replace("-", "::")


def entry(text: str, *, argument: str = "expected_failures") -> ExpectedFailure:
    """One entry: a check id and optional ``values=...`` and ``ratio<=...`` bounds."""
    words = text.split()
    values: tuple[str, ...] = ()
    max_ratio = math.inf
    for word in words[1:]:
        if word.startswith("values="):
            values = tuple(v for v in word[len("values="):].split(",") if v)
        elif word.startswith("ratio<="):
            try:
                max_ratio = float(word[len("ratio<="):])
            except ValueError:
                raise NormSpecError(f"{argument}={text!r}: expected ratio<=NUMBER, got {word!r}") from None
            require(max_ratio > 0, argument, text, "a positive ratio bound")
        else:
            raise NormSpecError(f"{argument}={text!r}: expected 'variant::dtype::check' followed by "
                                f"'values=KIND,...' or 'ratio<=NUMBER', got {word!r}")
    return ExpectedFailure(check_id(words[0]), values, max_ratio)


def parse(source: Iterable[str] | str | Path | None, *,
          argument: str = "expected_failures") -> dict[str, ExpectedFailure]:
    """Entries by check id, from an iterable of entries or a file with one per line and '#' comments."""
    if source is None:
        return {}
    if isinstance(source, Mapping):  # already parsed (the CLI parses with its option's name)
        return dict(source)
    if isinstance(source, (str, Path)):
        source = _lines(Path(source), argument=argument)
    lines = (line.split("#", 1)[0].strip() for line in source)
    entries = [entry(line, argument=argument) for line in lines if line]
    return {e.check_id: e for e in entries}


def _lines(path: Path, *, argument: str) -> list[str]:
    """The lines of a text file of entries; a binary or unreadable one is the argument's fault."""
    expected = "a UTF-8 text file with one check id per line"
    require(path.is_file(), argument, str(path), expected)
    try:
        text = path.read_text(encoding="utf-8-sig")  # -sig: a BOM is no part of the first entry
    except UnicodeDecodeError as error:
        raise NormSpecError(f"{argument}={str(path)!r}: expected {expected}, got bytes that are not UTF-8 "
                            f"(byte {error.start})") from None
    except OSError as error:
        raise NormSpecError(f"{argument}={str(path)!r}: cannot be read ({error.strerror or error})") from None
    require("\0" not in text, argument, str(path), f"{expected}, not a binary file (it holds NUL bytes)")
    return text.splitlines()
