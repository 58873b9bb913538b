"""Hostile implementations and hostile input, through the CLI: every run ends with its report and an
exit status that means one thing (0 passed, 1 a check failed, 2 a usage or input error, 3 normspec
failed), nothing is lost, and a reproduction file cannot run code.

One test per row of issue 10's table; the implementations are in tests/misbehaving/hostile.py.
Runs are small (one or two checks, float64, two examples) and time limits short (1 s), so a hang
costs a few seconds.
"""
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch

import normspec
from normspec import cli
from normspec.verify.cases.case import Case

ROOT = Path(__file__).resolve().parent.parent
HOSTILE = "tests.misbehaving.hostile:"
SMALL = ["--variant", "layer_norm", "--dtype", "float64", "--max-examples", "2", "--timeout", "1"]


def verify(capsys, impl: str, *options: str, checks: str = "forward") -> tuple[int, str]:
    status = cli.main(["verify", "--impl", impl, *SMALL, "--check", checks, *options])
    return status, capsys.readouterr().out


def written_report(path: Path) -> dict:
    return json.loads(path.read_text())


# --- the implementation exits, interrupts, hangs ---------------------------------------------

@pytest.mark.parametrize("impl, said", [
    ("exits_in_forward", "the forward raised SystemExit(3)"),
    ("exits_always", "the forward raised SystemExit(3)"),  # the probe's exit too: the checks report it
    ("raises_keyboard_interrupt", "raised KeyboardInterrupt (not an interrupt by the user)"),
    ("raises_generator_exit", "the forward raised GeneratorExit"),
])
def test_an_exit_or_interrupt_raised_by_the_implementation_fails_the_check(capsys, tmp_path, impl, said):
    status, out = verify(capsys, HOSTILE + impl, "--json", str(tmp_path / "report.json"))
    assert status == 1 and said in out
    assert "0 passed, 1 failed" in out and written_report(tmp_path / "report.json")["ok"] is False


def test_an_exit_in_the_backward_fails_the_backward(capsys):
    status, out = verify(capsys, HOSTILE + "exits_in_backward", checks="forward,backward")
    assert status == 1 and "the backward (autograd) raised SystemExit(3)" in out
    assert "1 passed, 1 failed" in out  # the forward is right


def test_a_process_ended_in_a_check_fails_that_check_and_the_run_goes_on(capsys, tmp_path):
    status, out = verify(capsys, HOSTILE + "ends_process_later", "--json", str(tmp_path / "r.json"),
                         checks="forward,backward")
    assert status == 1 and "ended its process (exit code 3)" in out
    report = written_report(tmp_path / "r.json")
    assert [c["status"] for c in report["checks"]] == ["failed", "failed"]  # a new runner ran the second
    assert report["checks"][0]["minimal_case"]["shape"][-1] > 3  # the case it was calling


def test_a_process_ended_in_the_probe_fails_every_check(capsys):
    status, out = verify(capsys, HOSTILE + "ends_process_always", checks="forward,backward")
    assert status == 1 and "the probe call on layer_norm shape=(2, 4, 3)" in out
    assert "0 passed, 2 failed" in out


@pytest.mark.parametrize("impl", ["hangs_in_native_code", "swallows_interrupts"])
def test_a_call_stuck_past_the_interrupt_is_killed_and_the_run_goes_on(capsys, impl):
    status, out = verify(capsys, HOSTILE + impl, checks="forward,backward")
    assert status == 1 and "did not return within 1 s" in out and "0 passed, 2 failed" in out


def test_a_hang_in_the_probe_call_is_killed(capsys):
    status, out = verify(capsys, HOSTILE + "hangs_in_native_code_always")
    assert status == 1 and "the probe call" in out and "did not return within 1 s" in out


def test_a_hang_in_the_probe_under_isolate_is_bounded(capsys):
    status, out = verify(capsys, HOSTILE + "swallows_interrupts", "--isolate")
    assert status == 1 and "did not return" in out


@pytest.mark.parametrize("value", ["0", "-1", "nan", "inf", "soon"])
def test_a_time_limit_is_positive_and_finite(capsys, value):
    with pytest.raises(SystemExit) as exit_:
        cli.main(["verify", "--impl", HOSTILE + "ok", "--variant", "layer_norm", "--timeout", value])
    assert exit_.value.code == 2 and "positive, finite number of seconds" in capsys.readouterr().err
    with pytest.raises(normspec.NormSpecError, match="timeout"):
        normspec.check(HOSTILE + "ok", "layer_norm", timeout=float(value) if value != "soon" else value)


# --- no user text is markup ---------------------------------------------------------------

def test_markup_in_messages_and_names_is_printed_as_written(capsys, tmp_path):
    status, out = verify(capsys, HOSTILE + "markup_in_message", "--json", str(tmp_path / "r.json"), "--array",
                         "torch")
    assert status == 1 and "bad [/x] [bold]value[/bold] :ok: [link=http://example.com]here[/link]" in out
    assert written_report(tmp_path / "r.json")["ok"] is False
    status, out = verify(capsys, HOSTILE + "ok")
    assert status == 0 and "hostile:ok: 1 passed" in out  # not an emoji
    status, out = verify(capsys, HOSTILE + "undecodable_message", "--array", "torch")
    assert status == 1 and "bad \\udc80 byte" in out


# --- what the implementation changes in the process --------------------------------------------

def test_a_changed_directory_is_put_back_and_the_outputs_stay_where_asked(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(ROOT))
    status, out = verify(capsys, HOSTILE + "changes_directory", "--json", "report.json", "--artifacts", "files")
    assert status == 1 and "the current directory" in out and "normspec put it back" in out
    assert (tmp_path / "report.json").is_file() and list((tmp_path / "files").glob("*.npz"))
    assert os.getcwd() == str(tmp_path)


@pytest.mark.parametrize("impl, named", [
    ("changes_hypothesis_profile", "os.environ['HYPOTHESIS_PROFILE']"),
    ("changes_global_settings", "torch's default dtype"),
])
def test_changed_process_state_is_put_back_and_reported(capsys, impl, named):
    before = (torch.get_default_dtype(), torch.get_num_threads(), np.geterr(), os.environ.get("HYPOTHESIS_PROFILE"))
    status, out = verify(capsys, HOSTILE + impl, "--in-process")  # in this process: nothing may leak
    assert status == 1 and named in out and "ContractViolation" in out
    assert (torch.get_default_dtype(), torch.get_num_threads(), np.geterr(),
            os.environ.get("HYPOTHESIS_PROFILE")) == before


def test_every_changed_setting_is_named():
    report = normspec.check(HOSTILE + "changes_global_settings", "layer_norm", checks=["forward"],
                            dtypes=["float64"], max_examples=1, in_process=True)
    reason = report.battery.failed[0].reason
    for named in ("default dtype", "threads", "numpy's floating-point error handling", "RNG state of torch",
                  "RNG state of numpy", "random module"):
        assert named in reason, reason


# --- the backward contract ------------------------------------------------------------------

def test_a_backward_that_writes_into_grad_out_fails(capsys):
    status, out = verify(capsys, HOSTILE + "mutates_grad_out", checks="backward")
    assert status == 1 and "its backward modified its input grad_out in place" in out
    status, out = verify(capsys, HOSTILE + "layer_norm_numpy", "--backward", HOSTILE + "backward_mutating_grad_out",
                         checks="backward")
    assert status == 1 and "modified its input grad_out in place" in out


def test_a_backward_without_dx_fails_naming_it(capsys):
    status, out = verify(capsys, HOSTILE + "layer_norm_numpy", "--backward", HOSTILE + "backward_without_dx",
                         checks="backward")
    assert status == 1 and "the backward returned None for dx" in out


# --- selections and outputs are validated before the run -----------------------------------

@pytest.mark.parametrize("option, value", [("--dtype", ""), ("--dtype", ","), ("--check", ""), ("--variant", ",")])
def test_an_empty_selection_is_a_usage_error(capsys, option, value):
    with pytest.raises(SystemExit) as exit_:
        cli.main(["verify", "--impl", HOSTILE + "ok", option, value])
    assert exit_.value.code == 2 and "expected at least one of" in capsys.readouterr().err


def test_an_unknown_pytest_selection_is_a_usage_error():
    run = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "--pyargs", "normspec.verify",
                          "-q", "--normspec-impl", HOSTILE + "ok", "--normspec-dtype", "float8"],
                         capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert run.returncode == 4 and "--normspec-dtype='float8': expected some of" in run.stderr + run.stdout


def test_outputs_are_made_or_refused_before_the_run(capsys, tmp_path):
    status, out = verify(capsys, HOSTILE + "ok", "--json", str(tmp_path / "new" / "deeper" / "r.json"))
    assert status == 0 and (tmp_path / "new" / "deeper" / "r.json").is_file()
    (tmp_path / "a_file").write_text("")
    for option, value, said in (("--json", str(tmp_path), "is a folder, expected a file"),
                                ("--artifacts", str(tmp_path / "a_file"), "is a file, expected a folder"),
                                ("--artifacts", str(tmp_path / "a_file" / "sub"), "cannot create the folder"),
                                ("--markdown", str(tmp_path / "a_file" / "r.md"), "cannot create the folder")):
        status, out = verify(capsys, HOSTILE + "ok", option, value)
        assert status == 2 and said in out and "passed" not in out  # refused before any check ran


def test_two_implementations_share_an_artifacts_folder(tmp_path):
    for impl in ("tests.broken.impls:layer_norm_unbiased_var", "tests.broken.impls:layer_norm_eps_outside_sqrt"):
        normspec.check(impl, "layer_norm", checks=["forward"], dtypes=["float64"], max_examples=2,
                       artifacts=tmp_path, in_process=True)
    names = sorted(p.name for p in tmp_path.glob("*.npz"))
    assert names == ["tests.broken.impls-layer_norm_eps_outside_sqrt-layer_norm-float64-forward.npz",
                     "tests.broken.impls-layer_norm_unbiased_var-layer_norm-float64-forward.npz"]


# --- a reproduction file is data --------------------------------------------------------------

def _reproduction_file(tmp_path: Path) -> Path:
    report = normspec.check("tests.misbehaving.imports_leave_a_mark:layer_norm", "layer_norm", checks=["forward"],
                            dtypes=["float64"], max_examples=1, artifacts=tmp_path / "files")
    return Path(report.battery.failed[0].repro_path)


def test_repro_never_imports_the_implementation_the_file_names(capsys, tmp_path, monkeypatch):
    saved = _reproduction_file(tmp_path)
    marker = tmp_path / "imported"
    monkeypatch.setenv("NORMSPEC_TEST_IMPORT_MARKER", str(marker))
    sys.modules.pop("tests.misbehaving.imports_leave_a_mark", None)
    assert cli.main(["repro", str(saved)]) == 2
    out = capsys.readouterr().out
    assert "recorded implementation: tests.misbehaving.imports_leave_a_mark:layer_norm" in out
    assert "--impl" in out and not marker.exists()
    assert cli.main(["repro", str(saved), "--impl", "torch_native"]) == 0  # named by the user: torch is right
    assert "the check passes now" in capsys.readouterr().out and not marker.exists()


def test_malformed_reproduction_files_are_input_errors(capsys, tmp_path):
    saved = _reproduction_file(tmp_path)
    truncated = tmp_path / "truncated.npz"
    truncated.write_bytes(saved.read_bytes()[:200])
    assert cli.main(["repro", str(truncated), "--impl", "torch_native"]) == 2
    assert f"CASE={str(truncated)!r}" in capsys.readouterr().out
    with np.load(saved) as data:
        meta = json.loads(str(data["meta"]))
        arrays = {k: data[k] for k in data.files if k != "meta"}
    for name, change in (("no_check", lambda m: m.pop("check")), ("unknown_check", lambda m: m.update(check="nope")),
                         ("extra_field", lambda m: m["case"].update(colour="red"))):
        broken = json.loads(json.dumps(meta))
        change(broken)
        path = tmp_path / f"{name}.npz"
        np.savez(path, meta=np.array(json.dumps(broken)), **arrays)
        assert cli.main(["repro", str(path), "--impl", "torch_native"]) == 2, name
        assert "CASE=" in capsys.readouterr().out


def test_a_small_file_cannot_ask_for_a_huge_case(capsys, tmp_path):
    huge = json.loads(Case("layer_norm", (2, 3)).to_json()) | {"shape": [40000, 40000]}
    assert cli.main(["verify", "--impl", "torch_native", "--check", "forward", "--case", json.dumps(huge)]) == 2
    out = capsys.readouterr().out
    assert "1600000000" in out and "--max-elements" in out
    assert cli.main(["verify", "--impl", "torch_native", "--check", "forward", "--case", "{not json"]) == 2


# --- usage errors and malformed options ------------------------------------------------------

def test_usage_errors_exit_2(capsys, tmp_path):
    assert cli.main(["verify", "--impl", HOSTILE + "ok", "--variant", "layer_norm,rms_norm"]) == 2
    assert cli.main(["verify", "--impl", "torch_ref", "--backward", HOSTILE + "ok"]) == 2
    assert cli.main(["verify", "--impl", "no.such.module:fn", "--variant", "layer_norm"]) == 2
    binary = tmp_path / "expected.bin"
    binary.write_bytes(bytes(range(256)))
    assert cli.main(["verify", "--impl", HOSTILE + "ok", *SMALL, "--expected-failures", str(binary)]) == 2
    assert "--expected-failures" in capsys.readouterr().out


# --- nothing left behind ------------------------------------------------------------------------

def test_a_failing_run_leaves_nothing_behind(capsys, tmp_path, monkeypatch):
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(ROOT))
    status, _ = verify(capsys, "tests.broken.impls:layer_norm_unbiased_var", "--isolate")
    assert status == 1
    assert list(scratch.iterdir()) == [] and sorted(p.name for p in tmp_path.iterdir()) == ["tmp"]


def test_a_failure_of_normspec_itself_exits_3(capsys, monkeypatch):
    from normspec.verify import commands

    def broken(*args, **kwargs):
        raise RuntimeError("a bug in normspec")

    monkeypatch.setattr(commands.bat, "run_battery", broken)
    assert cli.main(["verify", "--impl", "torch_ref", "--variant", "layer_norm", "--check", "forward"]) == 3
    assert "a bug in normspec, not in the implementation under test" in capsys.readouterr().out
