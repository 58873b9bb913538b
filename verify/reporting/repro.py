"""Reproduction files: one failing case on disk, replayed by ``normspec repro FILE.npz``.

A file holds the case (its JSON description: every array is regenerated from it), the
check, how the implementation was loaded (import paths, array kind, gradients), the
conventions it declared (the replay's truth follows them too) and, for inspection with
NumPy, the float64 input arrays themselves.
"""
from __future__ import annotations

import json
import math
import zipfile
import zlib
from pathlib import Path

import numpy as np

from normspec.derive.errors import NormSpecError, require
from normspec.verify.cases.case import ARRAY_NAMES, MAX_CASE_ELEMENTS, Case
from normspec.verify.checks import CHECKS

# The fields write_case writes, with the JSON type each must have; "conventions" came later, so
# older files lack it.
META_FIELDS = {"case": (dict, "a JSON object"), "check": (str, "a string"), "id": (str, "a string"),
               "implementation": (str, "a string"), "source": (dict, "a JSON object"),
               "array": (str, "a string"), "gradients": ((str, type(None)), "a string or null"),
               "failure": (str, "a string")}
OPTIONAL_META_FIELDS = {"conventions": ((dict, type(None)), "a JSON object or null"),
                        "options": ((dict, type(None)), "a JSON object or null"),
                        "abi": (str, "'functional' or 'aten'")}
MAX_META_CHARACTERS = 2**20  # a real description is a few kilobytes
# What reading a damaged archive raises (a truncated member, a bad CRC, an unknown compression).
DAMAGED = (OSError, EOFError, ValueError, zipfile.BadZipFile, zlib.error, NotImplementedError, RuntimeError)
_HEADER_READERS = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}


def write_case(path: Path, report, implementation) -> Path:
    """Write ``report``'s minimal case of ``implementation`` to ``path``."""
    meta = {"case": json.loads(report.case.to_json()), "check": report.check, "id": report.id,
            "implementation": implementation.name, "source": implementation.source,
            "array": implementation.array, "gradients": implementation.gradients,
            "failure": report.reason,
            "conventions": implementation.conventions.declared(),  # what the truth followed
            "options": dict(getattr(implementation, "options", {})),  # pinned: the keywords not passed
            "abi": getattr(implementation, "abi", "functional")}  # how its forward and backward are called
    arrays = {k: v for k, v in report.case.arrays().items() if v is not None}
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, meta=np.array(json.dumps(meta)), **arrays)
    return path


def read_case(path: str | Path, *, max_elements: int = MAX_CASE_ELEMENTS) -> dict:
    """The meta, case and arrays of a reproduction file, every part validated before it is used: the
    .npy headers (nothing beyond ``max_elements`` is loaded), the meta's fields, the case. A missing,
    damaged or foreign file is a NormSpecError naming ``CASE='path'``."""
    path = Path(path)
    argument = f"CASE={str(path)!r}"
    expected = "expected a reproduction file (.npz) written by normspec"
    if not path.exists():
        raise NormSpecError(f"{argument}: no such file ({expected})")
    if not path.is_file():
        raise NormSpecError(f"{argument}: not a file ({expected})")
    _check_headers(_headers(path, argument), argument, max_elements)
    try:
        with np.load(path, allow_pickle=False) as data:
            meta = _checked_meta(str(data["meta"]), argument)
            case = Case.from_dict(meta["case"], argument=argument, max_elements=max_elements)
            arrays = {k: data[k] for k in data.files if k != "meta"}
    except NormSpecError:
        raise
    except DAMAGED as error:  # the headers were sound, the data behind them is not
        raise NormSpecError(f"{argument}: a damaged reproduction file ({error})") from None
    meta["case"] = {**meta["case"], "shape": case.shape}
    return {"meta": meta, "case": case, "arrays": arrays}


def _headers(path: Path, argument: str) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
    """(shape, dtype) of every member of the archive, from its .npy header alone (no data is read)."""
    try:
        with zipfile.ZipFile(path) as archive:
            return {info.filename: _header(archive, info) for info in archive.infolist()}
    except DAMAGED as error:
        raise NormSpecError(f"{argument}: not a reproduction file (.npz) written by normspec ({error})") from None


def _header(archive: zipfile.ZipFile, info: zipfile.ZipInfo) -> tuple[tuple[int, ...], np.dtype]:
    with archive.open(info) as member:
        version = np.lib.format.read_magic(member)
        if version not in _HEADER_READERS:
            raise ValueError(f"{info.filename}: .npy format version {version}, expected 1.0 or 2.0")
        shape, _, dtype = _HEADER_READERS[version](member)
    return shape, dtype


def _check_headers(headers: dict[str, tuple[tuple[int, ...], np.dtype]], argument: str, max_elements: int) -> None:
    """The archive holds a short meta string and float64 arrays of at most ``max_elements`` elements
    (the dtype bounds the bytes: one element of 'V1000000' is a megabyte)."""
    if "meta.npy" not in headers:
        raise NormSpecError(f"{argument}: no meta in the archive: not a reproduction file written by normspec")
    for member, (shape, dtype) in headers.items():
        name = member.removesuffix(".npy")
        if name == "meta":
            _check_meta_header(shape, dtype, argument)
        elif member != f"{name}.npy" or name not in ARRAY_NAMES:
            raise NormSpecError(f"{argument}: unexpected member {member!r}: a reproduction file holds meta.npy "
                                f"and some of {', '.join(f'{n}.npy' for n in ARRAY_NAMES)}")
        else:
            _check_array_header(name, shape, dtype, argument, max_elements)


def _check_meta_header(shape: tuple[int, ...], dtype: np.dtype, argument: str) -> None:
    if shape != () or dtype.kind != "U" or dtype.itemsize > 4 * MAX_META_CHARACTERS:  # 4 bytes a character
        raise NormSpecError(f"{argument}: meta is a {dtype} array of shape {shape}: expected one string of "
                            f"at most {MAX_META_CHARACTERS} characters")


def _check_array_header(name: str, shape: tuple[int, ...], dtype: np.dtype, argument: str,
                        max_elements: int) -> None:
    require(dtype == np.float64, f"{argument}: {name}.dtype", str(dtype), "float64")
    elements = math.prod(shape)
    if elements > max_elements:
        raise NormSpecError(f"{argument}: {name}.shape={shape}: {elements} elements, over the limit of "
                            f"{max_elements} (raise the limit with --max-elements)")


def _checked_meta(text: str, argument: str) -> dict:
    """The meta's JSON object, with the fields write_case writes, each of its JSON type."""
    try:
        meta = json.loads(text)
    except (ValueError, RecursionError) as error:
        raise NormSpecError(f"{argument}: meta is not JSON ({error})") from None
    if not isinstance(meta, dict):
        raise NormSpecError(f"{argument}: meta is a JSON {type(meta).__name__}: expected a JSON object")
    missing = [name for name in META_FIELDS if name not in meta]
    if missing:
        raise NormSpecError(f"{argument}: meta lacks {', '.join(missing)}: expected the fields "
                            f"{', '.join(META_FIELDS)} (and {', '.join(OPTIONAL_META_FIELDS)}, in newer files)")
    for name, (kind, described) in {**META_FIELDS, **OPTIONAL_META_FIELDS}.items():
        if name in meta:
            require(isinstance(meta[name], kind), f"{argument}: {name}", meta[name], described)
    require(meta["check"] in CHECKS, f"{argument}: check", meta["check"], f"one of {', '.join(CHECKS)}")
    return meta
