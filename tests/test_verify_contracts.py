"""Precision contracts (normspec.derive.contracts) and the "contract" check: the kernels of
tests/styles/contract_kernels.py pass under the contract they keep and fail under any other; a
kernel that moves one rounding point (vLLM's drift) passes the per-dtype forward check but not the
contract check; the records, the exact emulation's round_down, the declaration (with_contract, the
CLI) and mixed parameter dtypes (Case.parameter_dtype)."""
import dataclasses
import functools
import json
import re

import numpy as np
import pytest
import torch

from normspec import cli
from normspec.derive import contracts, dtypes
from normspec.derive.contracts import get, promote, resolve
from normspec.derive.errors import NormSpecError
from normspec.verify.cases.case import Case, conventions_in_force, round_to
from normspec.verify.checks import CHECKS
from normspec.verify.checks.base import Context
from normspec.verify.implementations.base import Implementation
from normspec.verify.implementations.builtin import builtin
from normspec.verify.implementations.conventions import parse, with_contract
from normspec.verify.running import deviations
from normspec.verify.running.battery import FAILED, PASSED, RANGE_LIMIT, SKIPPED, run_check
from normspec.verify.running.profiles import current_settings
from normspec.verify.truth.contracts import emulate, round_down
from tests.styles import contract_kernels

CONTRACTS = contracts.NAMES  # float32, llama, weight_dtype, input_dtype
VARIANTS = ("rms_norm", "layer_norm")
SEEDS = (3, 17)
EXAMPLES = 30


def _kernel(contract: str, variant: str):
    return getattr(contract_kernels, f"{contract}_{variant}")


def _impl(function, variant: str, declared: dict | None = None, name: str | None = None) -> Implementation:
    return Implementation(name or function.__name__, {variant: function}, conventions=parse(declared))


def _run(impl: Implementation, check: str, variant: str, dtype: str, *, seed: int | None = None,
         max_examples: int = EXAMPLES):
    return run_check(impl, CHECKS[check], variant, dtype,
                     hypothesis_settings=current_settings(max_examples, seeded=seed is not None), seed=seed)


def _emulation_comparison(impl: Implementation, case: Case):
    """The first comparison of check_contract: y against the contract's emulation."""
    comparisons = CHECKS["contract"].run(impl, case)
    assert "contract's emulation" in comparisons[0].quantity
    return comparisons[0]


def _inside_the_emulation_where_defined(impl: Implementation, case: Case) -> bool:
    """Assert that ``impl``'s y lies in its contract's emulated interval wherever that is not NaN;
    return whether it is NaN anywhere (while the contract's nominal output is not)."""
    token = conventions_in_force.set(impl.conventions)
    try:
        ctx = Context.of(case)
        emulated = emulate(impl.conventions.precision_contract, case, ctx.arrays, work=ctx.view.work,
                           param=ctx.view.param)
    finally:
        conventions_in_force.reset(token)
    got = impl.run(case, ctx.arrays, gradients=False).y
    undefined = np.isnan(emulated.y.lo) | np.isnan(emulated.y.hi)
    outside = ~emulated.y.contains(got) & ~undefined
    assert not np.any(outside), (case.to_json(), got[outside], emulated.y.lo[outside], emulated.y.hi[outside])
    return bool(np.any(undefined & ~np.isnan(emulated.nominal)))


# --- 1. each kernel keeps its own contract -----------------------------------------------------

@pytest.mark.parametrize("dtype", ("bfloat16", "float16"))
@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("contract", CONTRACTS)
def test_a_contract_kernel_passes_under_its_own_contract(contract, variant, dtype):
    impl = _impl(_kernel(contract, variant), variant, {"contract": contract})
    digests = set()
    for seed in SEEDS:
        report = _run(impl, "contract", variant, dtype, seed=seed)
        digests.add(report.examples_digest)
        assert report.examples > EXAMPLES // 2, report.examples
        assert report.worst is not None  # comparisons ran
        if report.status == PASSED:
            continue
        # input_dtype in float16: a float16 accumulator errs beyond float16's tolerance for large x,
        # whoever implements it; that is a range limit of the contract, never a failure
        assert (contract, dtype) == ("input_dtype", "float16") and report.status == RANGE_LIMIT, \
            (seed, report.status, report.reason)
        assert ("range limit of the method" in report.reason
                or "beyond float16's working range" in report.reason), report.reason
        # the kernel matched the emulation wherever the emulation is defined (where a float16 step
        # overflows it is NaN: test_the_emulation_of_an_overflowing_float16_step_is_not_nan)
        undefined = _inside_the_emulation_where_defined(impl, report.case)
        assert "range limit of the method" in report.reason or undefined, report.reason
    assert len(digests) == len(SEEDS), "the seeds drew the same examples"


def test_the_emulation_of_an_overflowing_float16_step_is_not_nan():
    case = Case.from_json('{"variant":"rms_norm","shape":[2,8],"dtype":"float16","eps":1e-12,'
                          '"values":"offset","seed":45331}')
    impl = _impl(contract_kernels.input_dtype_rms_norm, "rms_norm", {"contract": "input_dtype"})
    ctx = Context.of(case)
    assert np.all(np.isfinite(ctx.arrays["x"]))  # x itself is representable; its squares are not
    emulated = emulate(get("input_dtype"), case, ctx.arrays, work=ctx.view.work, param=ctx.view.param)
    got = impl.run(case, ctx.arrays, gradients=False).y
    assert np.all(got == 0) and np.all(emulated.nominal == 0)  # var = inf, rstd = 0: the contract's output
    assert not np.any(np.isnan(emulated.y.lo)) and not np.any(np.isnan(emulated.y.hi))
    assert np.all(emulated.y.contains(got))
    assert _emulation_comparison(impl, case).ok


# --- 2. and fails under another ----------------------------------------------------------------

@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("kernel, declared", [
    ("float32", "llama"), ("llama", "float32"),
    ("float32", "weight_dtype"), ("weight_dtype", "float32"),
    ("llama", "weight_dtype"), ("input_dtype", "float32"), ("float32", "input_dtype"),
])
def test_a_contract_kernel_fails_under_another_contract_in_bfloat16(kernel, declared, variant):
    impl = _impl(_kernel(kernel, variant), variant, {"contract": declared})
    report = _run(impl, "contract", variant, "bfloat16")
    assert report.status == FAILED, (report.status, report.reason)
    assert f"y vs the {declared} contract's emulation" in report.reason, report.reason
    assert not report.nondeterministic and report.case is not None
    # the minimal case replays the failure, on the emulation comparison
    assert not _emulation_comparison(impl, report.case).ok
    if {kernel, declared} == {"float32", "weight_dtype"}:
        # the two differ only where the weight is 16-bit (float32 weights: xhat stays float32)
        assert report.case.has_weight and report.case.dtype_of("weight") == "bfloat16", report.case
        float32_weights = dataclasses.replace(report.case, parameter_dtype="float32")
        assert _emulation_comparison(impl, float32_weights).ok


@pytest.mark.parametrize("variant", VARIANTS)
def test_weight_dtype_with_16_bit_weights_beside_float32_x(variant):
    """parameter_dtypes=any draws 16-bit weights beside float32 x: the weight_dtype kernel rounds to
    the weight's dtype there and fails the float32 contract, the float32 kernel passes it."""
    declared = {"contract": "float32", "parameter_dtypes": "any"}
    drawn = set()

    def seen(weight):
        drawn.add(None if weight is None else str(weight.dtype).removeprefix("torch."))

    def layer_norm(x, normalized_shape, weight=None, bias=None, eps=1e-5):
        seen(weight)
        return contract_kernels.float32_layer_norm(x, normalized_shape, weight, bias, eps)

    def rms_norm(x, normalized_shape, weight=None, eps=None):
        seen(weight)
        return contract_kernels.float32_rms_norm(x, normalized_shape, weight, eps)

    float32_kernel = layer_norm if variant == "layer_norm" else rms_norm

    weight_dtype = _impl(_kernel("weight_dtype", variant), variant, declared)
    assert weight_dtype.parameter_dtypes("float32") == (None, "float16", "bfloat16")
    report = _run(weight_dtype, "contract", variant, "float32")
    assert report.status == FAILED and "float32 contract's emulation" in report.reason, report.reason
    assert report.case.dtype_of("weight") in dtypes.LOW_PRECISION, report.case
    correct = Implementation("float32_kernel", {variant: float32_kernel}, conventions=parse(declared))
    passed = _run(correct, "contract", variant, "float32")
    assert passed.status == PASSED, passed.reason
    assert {"float32", "float16", "bfloat16"} <= drawn, drawn  # both sides of the mix were drawn
    # and under the weight_dtype contract the float32 kernel fails on a 16-bit weight
    wrong = _run(_impl(_kernel("float32", variant), variant, {**declared, "contract": "weight_dtype"}),
                 "contract", variant, "float32")
    assert wrong.status == FAILED and "weight_dtype contract's emulation" in wrong.reason
    assert wrong.case.dtype_of("weight") in dtypes.LOW_PRECISION


# --- 3. vLLM's drift: one cast moved -----------------------------------------------------------

def drift_rms_norm(x, normalized_shape, weight=None, eps=None):
    """Declares float32 but rounds xhat to x's dtype before the weight multiply (vLLM #42325)."""
    dims = tuple(range(x.ndim - len(normalized_shape), x.ndim))
    eps = torch.finfo(torch.float32).eps if eps is None else eps
    xf = x.float()
    xhat = (xf * torch.rsqrt(xf.pow(2).mean(dims, keepdim=True) + eps)).to(x.dtype)  # the moved cast
    return (xhat * weight).to(x.dtype) if weight is not None else xhat


def drift_layer_norm(x, normalized_shape, weight=None, bias=None, eps=1e-5):
    dims = tuple(range(x.ndim - len(normalized_shape), x.ndim))
    xf = x.float()
    centered = xf - xf.mean(dims, keepdim=True)
    xhat = (centered * torch.rsqrt((centered * centered).mean(dims, keepdim=True) + eps)).to(x.dtype)
    y = xhat * weight if weight is not None else xhat
    y = y + bias if bias is not None else y
    return y.to(x.dtype)


@pytest.mark.parametrize("dtype", ("bfloat16", "float16"))
@pytest.mark.parametrize("variant, function", [("rms_norm", drift_rms_norm), ("layer_norm", drift_layer_norm)])
def test_a_moved_cast_passes_forward_but_fails_the_contract(variant, function, dtype):
    impl = _impl(function, variant, {"contract": "float32"})
    forward = _run(impl, "forward", variant, dtype)
    assert forward.status == PASSED, forward.reason
    contract = _run(impl, "contract", variant, dtype)
    assert contract.status == FAILED, (contract.status, contract.reason)
    assert "y vs the float32 contract's emulation" in contract.reason
    # off by about one ulp: what a per-dtype tolerance accepts, and an exact emulation does not
    assert 0 < contract.worst.max_ulp <= 4, contract.worst.line()
    # the same kernel is the llama contract, kept
    assert _run(_impl(function, variant, {"contract": "llama"}), "contract", variant, dtype).status == PASSED


# --- 4. no contract declared: skipped ----------------------------------------------------------

@pytest.mark.parametrize("variant", VARIANTS)
def test_the_contract_check_is_skipped_without_a_declared_contract(variant):
    report = _run(_impl(_kernel("float32", variant), variant), "contract", variant, "bfloat16")
    assert report.status == SKIPPED and report.examples == 0
    assert "no precision contract declared" in report.reason and "--contract" in report.reason
    declared = _run(_impl(_kernel("float32", variant), variant, {"contract": "none"}), "contract", variant,
                    "bfloat16")
    assert declared.status == SKIPPED and "--contract" in declared.reason


# --- 5. the records ----------------------------------------------------------------------------

def test_promote_follows_torchs_type_promotion():
    assert promote("bfloat16", "float32") == promote("float32", "bfloat16") == "float32"
    assert promote("float16", "bfloat16") == promote("bfloat16", "float16") == "float32"
    assert promote("float16", "float32") == "float32" and promote("float32", "float64") == "float64"
    for dtype in dtypes.DTYPES:
        assert promote(dtype, dtype) == dtype
    for a in ("float16", "bfloat16", "float32", "float64"):  # torch agrees
        for b in ("float16", "bfloat16", "float32", "float64"):
            expected = torch.promote_types(getattr(torch, a), getattr(torch, b))
            assert promote(a, b) == str(expected).removeprefix("torch."), (a, b)


def test_resolve_maps_each_role_to_a_dtype():
    roles = dict(input_dtype="bfloat16", weight_dtype="float32")
    assert resolve("compute", **roles) == "float32"
    assert resolve("input", **roles) == "bfloat16"
    assert resolve("weight", **roles) == "float32"
    assert resolve("promoted", **roles) == "float32"
    assert resolve("compute", input_dtype="float64", weight_dtype="float32") == "float64"
    assert resolve("compute", input_dtype="float16", weight_dtype="float16") == "float32"
    assert resolve("promoted", input_dtype="float16", weight_dtype="bfloat16") == "float32"
    assert resolve("weight", input_dtype="float32", weight_dtype="bfloat16") == "bfloat16"
    with pytest.raises(NormSpecError, match="role='wide'"):
        resolve("wide", **roles)
    llama = get("llama")
    assert llama.dtype("normalize", input_dtype="bfloat16", weight_dtype="float32") == "bfloat16"
    assert llama.dtype("multiply", input_dtype="bfloat16", weight_dtype="float32") == "float32"
    assert llama.dtype("multiply", input_dtype="bfloat16", weight_dtype="bfloat16") == "bfloat16"
    assert llama.add == llama.multiply and llama.role("statistics") == "compute"
    assert get("weight_dtype").dtype("normalize", input_dtype="float32", weight_dtype="bfloat16") == "bfloat16"
    assert get("input_dtype").dtype("statistics", input_dtype="float16", weight_dtype="float32") == "float16"
    assert all(get("float32").role(step) == "compute" for step in contracts.STEPS)
    with pytest.raises(NormSpecError, match="step='output'"):
        llama.role("output")


def test_an_unknown_contract_name_is_refused_naming_the_argument():
    assert set(contracts.NAMES) == {"float32", "llama", "weight_dtype", "input_dtype"}
    assert all(get(name).name == name for name in contracts.NAMES)
    with pytest.raises(NormSpecError) as error:
        get("nope")
    assert "contract='nope'" in str(error.value) and "float32, llama, weight_dtype, input_dtype" in str(error.value)
    with pytest.raises(NormSpecError, match="--contract='nope'"):
        get("nope", argument="--contract")
    with pytest.raises(NormSpecError, match="contract=None"):
        get(None)


# --- 6. round_down ------------------------------------------------------------------------------

@functools.lru_cache(maxsize=None)
def _representable(dtype: str) -> np.ndarray:
    """Every finite value of a 16-bit dtype, sorted (every bit pattern, cast by torch)."""
    bits = torch.arange(-(2**15), 2**15, dtype=torch.int32).to(torch.int16)
    values = bits.view(getattr(torch, dtype)).double().numpy()
    return np.unique(values[np.isfinite(values)])


def _brute_round_down(value: float, dtype: str) -> float:
    if dtype == "float32":
        nearest = np.float32(value)  # round to nearest, then one step down if above
        below = nearest if float(nearest) <= value else np.nextafter(nearest, np.float32(-np.inf))
        return float(below)
    table = _representable(dtype)
    return float(table[np.searchsorted(table, value, side="right") - 1])


@pytest.mark.parametrize("dtype", ("bfloat16", "float16", "float32"))
def test_round_down_is_the_largest_representable_value_not_above(dtype):
    tiny = dtypes.smallest_subnormal(dtype)
    values = [0.0, -0.0, 1.0, -1.0, 2.0, -2.0, 0.5, -0.25, 1024.0, -4096.0, 2.0**-10, -(2.0**-10),
              1 + 2.0**-30, 1 - 2.0**-30, 2 - 2.0**-30, -(2 - 2.0**-30), 2 + 2.0**-30, -(2 + 2.0**-30),
              3.3, -3.3, 0.1, -0.1, 1e-3, -1e-3, 123.456, -123.456, 1e-6, -1e-6,
              tiny, -tiny, tiny / 3, -tiny / 3, 1.5 * tiny, -1.5 * tiny]
    got = round_down(np.array(values), dtype)
    for value, down in zip(values, got):
        expected = _brute_round_down(value, dtype)
        assert down == expected, (dtype, value, down, expected)
        assert down <= value and round_to(np.array(down), dtype) == down  # representable, not above
    # exactly representable values (powers of two among them) are their own round_down
    exact = round_to(np.array([2.0**k for k in range(-8, 9)] + [-(2.0**k) for k in range(-8, 9)] + [1.5, -0.75]), dtype)
    assert np.array_equal(round_down(exact, dtype), exact)
    # elementwise on an array of random values too
    rng = np.random.default_rng(5)
    random = rng.standard_normal(200) * 10.0 ** rng.uniform(-4, 3, 200)
    assert np.array_equal(round_down(random, dtype), [_brute_round_down(v, dtype) for v in random])


# --- 7. with_contract ----------------------------------------------------------------------------

def test_with_contract_adds_the_contract_and_refuses_a_conflict():
    assert with_contract(None, "llama").contract == "llama"
    assert with_contract(None, "llama").precision_contract is get("llama")
    assert with_contract(None, None) == parse(None) and parse(None).precision_contract is None
    declared = with_contract({"running_var": "biased"}, "float32")
    assert declared.contract == "float32" and declared.running_var == "biased"
    assert with_contract(["contract=llama"], "llama").contract == "llama"  # declared both ways, agreeing
    assert with_contract(["contract=llama"], None).contract == "llama"
    assert with_contract(["contract=none"], "input_dtype").contract == "input_dtype"
    with pytest.raises(NormSpecError) as error:
        with_contract({"contract": "float32"}, "llama")
    assert "contract='llama'" in str(error.value) and "(float32)" in str(error.value)
    with pytest.raises(NormSpecError, match="--contract='llama'"):
        with_contract(["contract=weight_dtype"], "llama", argument="--contract")
    with pytest.raises(NormSpecError) as error:
        with_contract(None, "nope")
    assert "contract='nope'" in str(error.value) and "float32, llama" in str(error.value)
    with pytest.raises(NormSpecError, match="--contract='nope'"):
        with_contract(None, "nope", argument="--contract")
    with pytest.raises(NormSpecError, match="contract='nope'"):
        parse({"contract": "nope"})


def test_a_declared_contract_sets_the_compute_dtype_of_the_statistics():
    assert parse({"contract": "input_dtype"}).compute_dtype_of("float16") == "float16"
    assert parse({"contract": "llama"}).compute_dtype_of("bfloat16") == "float32"
    assert parse(None).compute_dtype_of("bfloat16") == "float32"
    assert parse({"contract": "input_dtype", "compute_dtype": "float64"}).compute_dtype_of("float16") == "float64"


# --- 8. the CLI ------------------------------------------------------------------------------------

def test_the_cli_contract_needs_an_impl_of_ones_own(capsys):
    assert cli.main(["verify", "--contract", "float32", "--variant", "rms_norm", "--dtype", "bfloat16",
                     "--check", "contract"]) == 2
    out = capsys.readouterr().out
    assert "--contract='float32'" in out and "expected --impl of your own" in out
    assert cli.main(["verify", "--impl", "torch_native", "--contract", "llama", "--variant", "rms_norm"]) == 2
    assert "--contract='llama'" in capsys.readouterr().out


def test_the_cli_refuses_an_unknown_contract(capsys):
    with pytest.raises(SystemExit) as exit_:
        cli.main(["verify", "--impl", "tests.styles.contract_kernels:float32_rms_norm", "--variant", "rms_norm",
                  "--contract", "nope"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert "--contract" in err and "invalid choice: 'nope'" in err and "llama" in err


def test_the_cli_runs_the_contract_check(capsys):
    command = ["verify", "--impl", "tests.styles.contract_kernels:llama_rms_norm", "--variant", "rms_norm",
               "--dtype", "bfloat16", "--check", "contract", "--max-examples", "5", "--in-process"]
    assert cli.main(command + ["--contract", "llama"]) == 0
    assert "conventions: contract=llama" in capsys.readouterr().out
    assert cli.main(command + ["--contract", "float32"]) == 1
    assert "float32 contract's emulation" in capsys.readouterr().out


def test_the_printed_reproduction_of_a_contract_failure_declares_the_contract(capsys):
    command = ["verify", "--impl", "tests.styles.contract_kernels:llama_rms_norm", "--variant", "rms_norm",
               "--dtype", "bfloat16", "--check", "contract", "--max-examples", "5", "--in-process",
               "--contract", "float32"]
    assert cli.main(command) == 1
    out = re.sub(r"\s+", "", capsys.readouterr().out)
    line = out[out.index("reproduce:"):]
    line = line[:line.index("mode:")] if "mode:" in line else line
    assert "contract=float32" in line or "--contractfloat32" in line, line


# --- 9. mixed parameter dtypes ---------------------------------------------------------------------

def test_a_mixed_case_rounds_each_array_to_its_own_dtype():
    case = Case("layer_norm", (4, 16), dtype="bfloat16", parameter_dtype="float32", seed=3)
    assert case.mixed and case.dtype_of("weight") == case.dtype_of("bias") == "float32"
    assert case.dtype_of("x") == case.dtype_of("grad_out") == "bfloat16"
    arrays = case.arrays()
    for name in ("x", "grad_out"):
        assert np.array_equal(arrays[name], round_to(arrays[name], "bfloat16")), name
    for name in ("weight", "bias"):
        assert np.array_equal(arrays[name], round_to(arrays[name], "float32")), name
        assert not np.array_equal(arrays[name], round_to(arrays[name], "bfloat16")), name  # float32-valued
    same = dataclasses.replace(case, parameter_dtype=None)
    assert not same.mixed and not dataclasses.replace(case, parameter_dtype="bfloat16").mixed
    assert np.array_equal(same.arrays()["weight"], round_to(arrays["weight"], "bfloat16"))
    assert np.array_equal(same.arrays()["x"], arrays["x"])  # the same draws, only rounded otherwise
    assert "parameters in float32" in case.short() and "parameters in" not in same.short()


def test_a_mixed_case_round_trips_through_json_and_a_bad_parameter_dtype_is_refused():
    case = Case("rms_norm", (2, 3, 8), dtype="bfloat16", parameter_dtype="float32", seed=9, values="outlier")
    assert Case.from_json(case.to_json()) == case
    assert json.loads(case.to_json())["parameter_dtype"] == "float32"
    assert Case.from_json(dataclasses.replace(case, parameter_dtype=None).to_json()).parameter_dtype is None
    for bad in ("float8", 32, True, ["float32"]):
        data = dict(json.loads(case.to_json()), parameter_dtype=bad)
        with pytest.raises(NormSpecError) as error:
            Case.from_json(json.dumps(data))
        assert "parameter_dtype" in str(error.value) and "--case" in str(error.value), str(error.value)


MIXED_CASES = [Case("layer_norm", shape, dtype="bfloat16", parameter_dtype="float32", seed=seed, values=values,
                    weight=weight, bias=bias)
               for shape, seed, values, weight, bias in [
                   ((3, 8), 0, "normal", True, True), ((2, 4, 16), 1, "gamma_mixed", True, True),
                   ((4, 5), 2, "offset", True, True), ((2, 3, 7), 3, "normal", True, False),
                   ((6, 32), 4, "tiny", True, True)]]


@pytest.mark.parametrize("case", MIXED_CASES, ids=lambda c: c.short())
def test_torch_native_passes_forward_on_mixed_layer_norm(case):
    comparisons = CHECKS["forward"].run(builtin("torch_native"), case)
    assert comparisons and all(c.ok for c in comparisons), [c.line() for c in comparisons]


def test_torch_native_receives_float32_parameters_beside_bfloat16_x():
    seen = []

    def spy(x, normalized_shape, weight=None, bias=None, eps=1e-5):
        seen.append((x.dtype, weight.dtype, bias.dtype))
        return torch.nn.functional.layer_norm(x, normalized_shape, weight, bias, eps)

    impl = Implementation("spy", {"layer_norm": spy})
    assert all(c.ok for c in CHECKS["forward"].run(impl, MIXED_CASES[0]))
    assert seen == [(torch.bfloat16, torch.float32, torch.float32)]


def test_the_mixed_layer_norm_backward_deviation_is_looked_up():
    mixed = MIXED_CASES[0]
    same = dataclasses.replace(mixed, parameter_dtype=None)
    check_id = "layer_norm::bfloat16::backward"
    assert isinstance(deviations.lookup("torch_native", check_id, mixed), str)
    # the deviation of the mixed case's own cause covers it, and not the same-dtype case
    (mixed_deviation,) = [d for d in deviations.DEVIATIONS
                          if d.name == "mixed-dtype layer_norm parameter gradients accumulated in 16-bit"]
    assert mixed_deviation.covers("torch_native", check_id, mixed)
    assert not mixed_deviation.covers("torch_native", check_id, same)
    assert not mixed_deviation.covers("torch_ref", check_id, mixed)
    assert deviations.lookup("torch_ref", check_id, mixed) is None
    # lookup returns the first covering deviation: for layer_norm's 16-bit backward that is the
    # unconditional "16-bit backward intermediates" one, for mixed and same-dtype cases alike
    assert deviations.lookup("torch_native", check_id, same).startswith("16-bit backward intermediates")
    # a check only the mixed deviations cover: a string for the mixed case, None for the same-dtype one
    bias_only = dataclasses.replace(mixed, weight=False)
    deterministic = "layer_norm::bfloat16::deterministic"
    assert deviations.lookup("torch_native", deterministic, bias_only).startswith("mixed-dtype layer_norm")
    assert deviations.lookup("torch_native", deterministic, dataclasses.replace(bias_only, parameter_dtype=None)) is None
