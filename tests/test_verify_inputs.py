"""Malformed input from outside (a --case line, a reproduction file, an expected-failures file) is a
NormSpecError naming the argument, never a traceback from inside a library, and a small file never
makes normspec allocate a large array."""
import dataclasses
import io
import json
import tracemalloc
import zipfile
from pathlib import Path

import numpy as np
import pytest

from normspec.derive.errors import NormSpecError
from normspec.verify.cases import case as case_module
from normspec.verify.cases.case import MAX_CASE_ELEMENTS, Case
from normspec.verify.implementations.builtin import builtin
from normspec.verify.reporting.repro import read_case, write_case
from normspec.verify.running import expected_failures
from normspec.verify.running.battery import FAILED, CheckReport

VALID = {"variant": "layer_norm", "shape": [2, 3]}


def _refused(text: str, *, argument: str = "--case") -> str:
    with pytest.raises(NormSpecError) as raised:
        Case.from_json(text)
    message = str(raised.value)
    assert message.startswith(argument), message
    return message


def _refused_field(**fields) -> str:
    return _refused(json.dumps({**VALID, **fields}))


# --- Case.from_json / from_dict ------------------------------------------------------------------

def test_a_valid_description_round_trips():
    case = Case("group_norm", (2, 4, 3), num_groups=2, eps=0.0, momentum=0.5, memory="noncontiguous",
                values="exact", seed=7, scale=0.25)
    assert Case.from_json(case.to_json()) == case
    assert Case.from_json(json.dumps({"variant": "rms_norm", "shape": [2, 3], "eps": None})).eps is None


def test_every_field_has_a_validation():
    checked = set(case_module._FIELD_CHECKS) | {"variant", "shape"}
    assert checked == {f.name for f in dataclasses.fields(Case)}


def test_text_that_is_not_json():
    assert "not JSON" in _refused("{'variant': 'layer_norm'")


def test_json_that_is_too_deep_or_too_long_a_number():
    assert "not JSON" in _refused("[" * 100_000)
    assert "not JSON" in _refused('{"variant": "layer_norm", "shape": [2, 3], "seed": ' + "9" * 5000 + "}")


def test_json_that_is_not_an_object():
    assert "JSON object" in _refused("[1, 2]")


def test_unknown_fields_are_named_with_the_allowed_ones():
    message = _refused_field(shpe=[2, 3], colour="red")
    assert "'shpe', 'colour'" in message and "variant, shape, dtype" in message


def test_missing_required_fields():
    assert "missing field shape" in _refused(json.dumps({"variant": "layer_norm"}))
    assert "missing fields variant, shape" in _refused("{}")


@pytest.mark.parametrize("fields, named", [
    ({"variant": "lyer_norm"}, "variant='lyer_norm'"),
    ({"variant": ["layer_norm"]}, "variant=['layer_norm']"),
    ({"shape": "2x3"}, "shape='2x3'"),
    ({"shape": [2, 0]}, "shape=[2, 0]"),
    ({"shape": [2, -3]}, "shape=[2, -3]"),
    ({"shape": [2, 3.0]}, "shape=[2, 3.0]"),
    ({"shape": [2, True]}, "shape=[2, True]"),
    ({"shape": [6]}, "2 to 5 dimensions"),  # below the variant's min_rank
    ({"variant": "instance_norm", "shape": [2, 3]}, "3 to 5 dimensions"),
    ({"shape": [1, 1, 1, 1, 1, 1]}, "2 to 5 dimensions"),
    ({"dtype": "int8"}, "dtype='int8'"),
    ({"eps": None}, "eps=None"),  # only rms_norm's signature defaults eps to None
    ({"eps": -1e-5}, "eps=-1e-05"),
    ({"eps": "1e-5"}, "eps='1e-5'"),
    ({"eps": float("inf")}, "eps=inf"),
    ({"affine": 1}, "affine=1"),
    ({"training": "yes"}, "training='yes'"),
    ({"running": None}, "running=None"),
    ({"momentum": 1.5}, "momentum=1.5"),
    ({"momentum": float("nan")}, "momentum=nan"),
    ({"memory": "fortran"}, "memory='fortran'"),
    ({"values": "random"}, "values='random'"),
    ({"normalized_ndim": 3}, "normalized_ndim=3"),
    ({"normalized_ndim": 0}, "normalized_ndim=0"),
    ({"num_groups": 0}, "num_groups=0"),
    ({"variant": "group_norm", "shape": [2, 4, 3], "num_groups": 3}, "a divisor of the number of channels C=4"),
    ({"seed": -1}, "seed=-1"),
    ({"seed": 1.5}, "seed=1.5"),
    ({"scale": 0}, "scale=0"),
    ({"scale": float("nan")}, "scale=nan"),
])
def test_a_bad_field_is_named_with_its_value(fields, named):
    assert named in _refused_field(**fields)


def test_a_huge_shape_is_refused_with_the_way_to_raise_the_limit():
    message = _refused_field(shape=[40000, 40000])
    assert "1600000000 elements" in message and str(MAX_CASE_ELEMENTS) in message
    assert "--max-elements" in message
    assert Case.from_json(json.dumps({**VALID, "shape": [40, 40]}), max_elements=1600).shape == (40, 40)
    with pytest.raises(NormSpecError, match="over the limit of 1599"):
        Case.from_json(json.dumps({**VALID, "shape": [40, 40]}), max_elements=1599)


def test_the_argument_is_the_callers():
    with pytest.raises(NormSpecError, match=r"^CASE='f.npz': variant="):
        Case.from_dict({"variant": 3, "shape": [2]}, argument="CASE='f.npz'")


# --- read_case ---------------------------------------------------------------------------------

def _written(tmp_path, case: Case = Case("layer_norm", (2, 3))):
    report = CheckReport("torch_native", case.variant, case.dtype, "forward", FAILED, reason="a failure", case=case)
    return write_case(tmp_path / "case.npz", report, builtin("torch_native"))


def _npz(path, meta, **arrays):
    np.savez(path, meta=np.array(meta if isinstance(meta, str) else json.dumps(meta)), **arrays)
    return path


def _meta(tmp_path) -> dict:
    with np.load(_written(tmp_path), allow_pickle=False) as data:
        return json.loads(str(data["meta"]))


def _read_refused(path) -> str:
    with pytest.raises(NormSpecError) as raised:
        read_case(path)
    message = str(raised.value)
    assert message.startswith(f"CASE={str(path)!r}: "), message
    return message


def test_a_written_case_reads_back(tmp_path):
    case = Case("batch_norm", (4, 3, 2), training=True, running=True, momentum=0.5, seed=3)
    saved = read_case(_written(tmp_path, case))
    assert saved["case"] == case
    assert saved["meta"]["check"] == "forward" and saved["meta"]["case"]["shape"] == (4, 3, 2)
    assert set(saved["arrays"]) == {k for k, v in case.arrays().items() if v is not None}
    np.testing.assert_array_equal(saved["arrays"]["x"], case.arrays()["x"])


def test_a_file_without_conventions_still_reads(tmp_path):
    meta = _meta(tmp_path)
    del meta["conventions"]
    assert read_case(_npz(tmp_path / "old.npz", meta))["case"] == Case("layer_norm", (2, 3))


def test_a_missing_file(tmp_path):
    assert "no such file" in _read_refused(tmp_path / "nowhere.npz")


def test_a_directory(tmp_path):
    assert "not a file" in _read_refused(tmp_path)


def test_a_file_that_is_not_a_zip(tmp_path):
    path = tmp_path / "text.npz"
    path.write_text("hello")
    assert "not a reproduction file" in _read_refused(path)


def test_a_truncated_file(tmp_path):
    path = _written(tmp_path)
    data = path.read_bytes()
    for length in (len(data) // 2, len(data) - 30, 100):
        path.write_bytes(data[:length])
        _read_refused(path)


def test_a_member_corrupted_behind_a_sound_header(tmp_path):
    path = _written(tmp_path)
    data = bytearray(path.read_bytes())
    position = data.index("layer_norm".encode("utf-32-le"))  # meta's data (NumPy strings are UTF-32)
    data[position] ^= 1  # 'l' -> 'm': the member's CRC no longer matches
    path.write_bytes(bytes(data))
    assert "Bad CRC-32" in _read_refused(path)


def test_an_npz_without_meta(tmp_path):
    path = tmp_path / "plain.npz"
    np.savez(path, x=np.zeros(3))
    assert "no meta" in _read_refused(path)


def test_a_member_that_is_not_an_array_or_not_a_case_array(tmp_path):
    path = _npz(tmp_path / "extra.npz", _meta(tmp_path), extra=np.zeros(3))
    assert "unexpected member 'extra.npy'" in _read_refused(path)
    with zipfile.ZipFile(path, "a") as archive:
        archive.writestr("notes.txt", "hello")
    _read_refused(path)


def test_an_array_of_another_dtype(tmp_path):
    path = _npz(tmp_path / "int.npz", _meta(tmp_path), x=np.zeros((2, 3), dtype=np.int64))
    assert "x.dtype='int64'" in _read_refused(path)


def test_meta_that_is_not_a_string(tmp_path):
    path = tmp_path / "meta.npz"
    np.savez(path, meta=np.zeros(3))
    assert "meta is a float64 array" in _read_refused(path)


def test_meta_that_is_not_json(tmp_path):
    assert "meta is not JSON" in _read_refused(_npz(tmp_path / "bad.npz", "{not json"))


def test_meta_that_is_not_an_object(tmp_path):
    assert "meta is a JSON list" in _read_refused(_npz(tmp_path / "list.npz", [1, 2]))


def test_meta_lacking_fields(tmp_path):
    meta = _meta(tmp_path)
    del meta["check"], meta["source"]
    assert "meta lacks check, source" in _read_refused(_npz(tmp_path / "lacking.npz", meta))


def test_meta_fields_of_the_wrong_type(tmp_path):
    meta = {**_meta(tmp_path), "source": "torch"}
    assert "source='torch': expected a JSON object" in _read_refused(_npz(tmp_path / "source.npz", meta))


def test_an_unknown_check(tmp_path):
    meta = {**_meta(tmp_path), "check": "fowrard"}
    assert "check='fowrard'" in _read_refused(_npz(tmp_path / "check.npz", meta))


def test_an_invalid_case(tmp_path):
    meta = _meta(tmp_path)
    meta["case"]["dtype"] = "float8"
    assert "dtype='float8'" in _read_refused(_npz(tmp_path / "case.npz", meta))


def test_a_case_too_large_in_a_file(tmp_path):
    meta = _meta(tmp_path)
    meta["case"]["shape"] = [40000, 40000]
    assert "--max-elements" in _read_refused(_npz(tmp_path / "large.npz", meta))


def _claiming_shape(path, meta: dict, shape: tuple[int, ...]):
    """A small archive whose x.npy header claims ``shape`` (with no data behind it)."""
    header = io.BytesIO()  # the magic string, then the header
    np.lib.format.write_array_header_1_0(header, {"descr": "<f8", "fortran_order": False, "shape": shape})
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        meta_npy = io.BytesIO()
        np.save(meta_npy, np.array(json.dumps(meta)))
        archive.writestr("meta.npy", meta_npy.getvalue())
        archive.writestr("x.npy", header.getvalue())
    return path


def test_a_small_file_claiming_a_huge_array_is_refused_without_allocating(tmp_path):
    path = _claiming_shape(tmp_path / "huge.npz", _meta(tmp_path), (40000, 40000))
    assert path.stat().st_size < 1024
    tracemalloc.start()
    try:
        message = _read_refused(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert "x.shape=(40000, 40000): 1600000000 elements" in message and "--max-elements" in message
    assert peak < 2**20, peak  # the array would be 12.8 GB


def test_an_array_header_within_the_limit_but_without_data(tmp_path):
    assert "damaged" in _read_refused(_claiming_shape(tmp_path / "short.npz", _meta(tmp_path), (2, 3)))


# --- expected failures -------------------------------------------------------------------------

def _parse_refused(path) -> str:
    with pytest.raises(NormSpecError) as raised:
        expected_failures.parse(path, argument="--expected-failures")
    message = str(raised.value)
    assert message.startswith(f"--expected-failures={str(path)!r}"), message
    return message


def test_expected_failures_read_from_a_text_file(tmp_path):
    path = tmp_path / "expected.txt"
    path.write_text("\ufeff# known\nlayer_norm::float16::backward values=offset\n", encoding="utf-8")
    assert list(expected_failures.parse(path)) == ["layer_norm::float16::backward"]


def test_expected_failures_from_a_binary_file(tmp_path):
    path = tmp_path / "binary.txt"
    path.write_bytes(b"\x89PNG\r\n\x1a\n\xff\xfe")
    assert "not UTF-8" in _parse_refused(path)
    path.write_bytes(b"layer_norm::float16::backward\x00\x01")
    assert "NUL" in _parse_refused(path)


def test_expected_failures_from_a_directory_or_a_missing_file(tmp_path):
    _parse_refused(tmp_path)
    _parse_refused(tmp_path / "missing.txt")


def _permission_denied(*args, **kwargs):
    raise PermissionError(13, "Permission denied")  # what chmod 0 gives anyone but root (who runs CI)


def test_expected_failures_from_an_unreadable_file(tmp_path, monkeypatch):
    path = tmp_path / "secret.txt"
    path.write_text("layer_norm::float16::backward\n")
    monkeypatch.setattr(Path, "read_text", _permission_denied)
    assert "cannot be read (Permission denied)" in _parse_refused(path)


def test_an_unreadable_reproduction_file(tmp_path, monkeypatch):
    path = _written(tmp_path)
    monkeypatch.setattr(zipfile, "ZipFile", _permission_denied)
    assert "Permission denied" in _read_refused(path)
