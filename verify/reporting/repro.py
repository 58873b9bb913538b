"""Reproduction files: one failing case on disk, replayed by ``normspec repro FILE.npz``.

A file holds the case (its JSON description: every array is regenerated from it), the
check, how the implementation was loaded (import paths, array kind, gradients), the
conventions it declared (the replay's truth follows them too) and, for inspection with
NumPy, the float64 input arrays themselves.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from normspec.derive.errors import NormSpecError
from normspec.verify.cases.case import Case


def write_case(path: Path, report, implementation) -> Path:
    """Write ``report``'s minimal case of ``implementation`` to ``path``."""
    meta = {"case": json.loads(report.case.to_json()), "check": report.check, "id": report.id,
            "implementation": implementation.name, "source": implementation.source,
            "array": implementation.array, "gradients": implementation.gradients,
            "failure": report.reason,
            "conventions": implementation.conventions.declared()}  # what the truth followed
    arrays = {k: v for k, v in report.case.arrays().items() if v is not None}
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, meta=np.array(json.dumps(meta)), **arrays)
    return path


def read_case(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise NormSpecError(f"CASE={str(path)!r}: expected a reproduction file (.npz) written by normspec")
    try:
        with np.load(path, allow_pickle=False) as data:
            meta = json.loads(str(data["meta"]))
            arrays = {k: data[k] for k in data.files if k != "meta"}
    except (OSError, ValueError, KeyError) as error:
        raise NormSpecError(f"CASE={str(path)!r}: not a normspec reproduction file ({error})") from None
    meta["case"]["shape"] = tuple(meta["case"]["shape"])
    return {"meta": meta, "case": Case(**meta["case"]), "arrays": arrays}
