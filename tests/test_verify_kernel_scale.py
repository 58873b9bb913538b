"""The kernel-scale tier (``--scale kernel``, ``verify.cases.kernel``, ``verify.running.scales``):
the strided views it draws keep the values and really are strided; its strategy and grid stay
within their bounds and cover every hidden size, row count and memory layout; correct
implementations (the built-in references, a plain-autograd layer_norm written here) pass its
checks; the checks it does not run are skipped and bad scale= and calls= values are refused; the
huge tier is refused where the memory it needs is not there; the memory hazards it is for (an
output aliasing the input, a backward writing into grad_out or the saved statistics, a tail left
unwritten, a race seen once in a few calls) fail; the pytest plugin carries scale and calls."""
import hashlib
import math
import os
import re

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import find, given

import normspec
from normspec import cli
from normspec.derive import variants
from normspec.derive.errors import NormSpecError
from normspec.reference import numpy_ref
from normspec.verify.cases import kernel
from normspec.verify.cases.case import (PAD, VIEW_LAYOUTS, Case, _numpy_memory_layout, with_memory_layout)
from normspec.verify.checks import CHECKS
from normspec.verify.checks.oracle_checks import repeated_calls
from normspec.verify.implementations.base import Implementation
from normspec.verify.implementations.builtin import builtin
from normspec.verify.pytest_plugin import NormspecCheck, parametrize_checks
from normspec.verify.running import scales
from normspec.verify.running.battery import FAILED, PASSED, SKIPPED, run_battery, run_check
from normspec.verify.running.profiles import current_settings
from tests.styles import aten_kernels as aten

KERNEL_CHECKS = ("forward", "backward", "deterministic", "output_memory")
EXAMPLES = 2  # hypothesis examples after the kernel grid (which is ~33 cases of up to 10^6 elements)
GIB = 2.0**30
EVERY_MEMORY = {"contiguous", *VIEW_LAYOUTS, "channels_last"}


def _kernel(impl: Implementation, check: str, variant: str = "layer_norm", *, dtype: str = "float32",
            examples: int = EXAMPLES, grid: bool = True, calls: int | None = None, scale: str = "kernel"):
    return run_check(impl, CHECKS[check], variant, dtype, hypothesis_settings=current_settings(examples),
                     coverage_grid=grid, scale=scale, calls=calls)


def _trailing(variant: str) -> bool:
    return variants.get(variant).layout_arguments == ("normalized_shape",)


# --- 1. the views ------------------------------------------------------------------------------

def _strides(view) -> tuple[int, ...]:
    """Strides in elements (torch's, or NumPy's bytes / itemsize)."""
    if isinstance(view, torch.Tensor):
        return tuple(view.stride())
    return tuple(s // view.itemsize for s in view.strides)


def _offset(view) -> int:
    """Elements from the start of the view's buffer to its first element."""
    if isinstance(view, torch.Tensor):
        return view.storage_offset()
    base = view.base if view.base is not None else view
    return (view.__array_interface__["data"][0] - base.__array_interface__["data"][0]) // view.itemsize


def _laid_out(library: str, values: np.ndarray, memory: str):
    if library == "torch":
        return with_memory_layout(torch.from_numpy(values.copy()), memory)
    return _numpy_memory_layout(values.copy(), memory)


@pytest.mark.parametrize("library", ("torch", "numpy"))
@pytest.mark.parametrize("memory", VIEW_LAYOUTS)
def test_a_view_keeps_the_values_is_last_dim_contiguous_and_its_rows_are_not_hidden_apart(memory, library):
    shape = (5, 6, 7)
    hidden = shape[-1]
    values = np.arange(math.prod(shape), dtype=np.float32).reshape(shape) - 50.5
    view = _laid_out(library, values, memory)
    got = view.numpy() if library == "torch" else view
    assert tuple(view.shape) == shape and got.dtype == np.float32
    np.testing.assert_array_equal(got, values)
    strides = _strides(view)
    assert strides[-1] == 1, (memory, strides)  # last-dim contiguous
    assert strides[-2] != hidden, (memory, strides)  # the row stride is not the hidden size
    contiguous = view.is_contiguous() if library == "torch" else view.flags.c_contiguous
    assert not contiguous, memory
    if memory == "padded_rows":
        assert strides[-2] == hidden + PAD and _offset(view) == 0
    elif memory == "narrow":  # the middle third of a 3x wider last axis (q of a split qkv)
        assert strides[-2] == 3 * hidden and _offset(view) == hidden
    else:  # the first two axes transposed
        assert strides[:2] == (hidden, shape[0] * hidden) and _offset(view) == 0


@pytest.mark.parametrize("memory", VIEW_LAYOUTS)
def test_a_torch_view_is_a_copy_gradients_flow_through(memory):
    """The harness lays out autograd leaves with with_memory_layout: it must not alias them, and
    the gradient must reach the leaf unchanged."""
    leaf = torch.randn(4, 3, 9, dtype=torch.float64, requires_grad=True)
    view = with_memory_layout(leaf, memory)
    assert view.untyped_storage().data_ptr() != leaf.untyped_storage().data_ptr()
    weights = torch.randn(4, 3, 9, dtype=torch.float64)
    (view * weights).sum().backward()
    torch.testing.assert_close(leaf.grad, weights, rtol=0, atol=0)


@pytest.mark.parametrize("library", ("torch", "numpy"))
def test_a_rank_2_shape_cannot_take_transposed_leading_and_is_returned_unchanged(library):
    values = np.arange(12, dtype=np.float64).reshape(3, 4)
    array = torch.from_numpy(values) if library == "torch" else values
    laid = (with_memory_layout(array, "transposed_leading") if library == "torch"
            else _numpy_memory_layout(array, "transposed_leading"))
    assert laid is array
    assert "transposed_leading" not in kernel.memories((3, 4))
    assert kernel.memories((3, 4)) == ("contiguous", "padded_rows", "narrow")
    assert "transposed_leading" in kernel.memories((2, 3, 4)) and "channels_last" in kernel.memories((2, 3, 4, 5))


@pytest.mark.parametrize("memory", VIEW_LAYOUTS)
def test_a_case_in_a_view_layout_round_trips_and_builds_its_view(memory):
    case = Case("layer_norm", (5, 6, 33), "float32", memory=memory, seed=3)
    assert Case.from_json(case.to_json()) == case
    x = case.arrays()["x"]
    tensor = case.torch_tensor(x, memory=True)
    array = case.numpy_array(x, memory=True)
    np.testing.assert_array_equal(tensor.numpy(), x.astype(np.float32))
    np.testing.assert_array_equal(array, x.astype(np.float32))
    assert not tensor.is_contiguous() and _strides(tensor) == _strides(array)


def test_every_transposed_leading_view_of_several_rows_is_strided():
    degenerate = []
    for rows in kernel.ROWS:
        for rank in (3, 4):
            shape = kernel.shape_for("layer_norm", rows, 127, rank)
            if rows > 1 and "transposed_leading" in kernel.memories(shape):
                if with_memory_layout(torch.zeros(shape), "transposed_leading").is_contiguous():
                    degenerate.append(shape)
    assert not degenerate, f"transposed_leading is contiguous for {degenerate}"


# --- 2. the strategy and the grid --------------------------------------------------------------

def _rows(case: Case) -> int:
    return math.prod(case.shape[:-1])


@pytest.mark.parametrize("variant, max_numel", [("layer_norm", kernel.MAX_NUMEL), ("rms_norm", 2**14),
                                                ("adaptive_layer_norm", kernel.MAX_NUMEL),
                                                ("group_norm", kernel.MAX_NUMEL), ("batch_norm", kernel.MAX_NUMEL)])
def test_the_strategy_draws_kernel_cases_within_max_numel(variant, max_numel):
    seen = set()

    @current_settings(30)
    @given(kernel.cases(variant, "float32", max_numel=max_numel))
    def drawn(case: Case):
        assert math.prod(case.shape) <= max_numel, case.short()
        assert case.layout is not None  # a valid case (group_norm: num_groups divides C)
        hidden = case.shape[-1]
        assert hidden in kernel.HIDDEN and hidden <= max_numel, case.short()
        assert case.memory in kernel.memories(case.shape), case.short()
        assert case.values in kernel.KERNEL_VALUES and case.eps in kernel.KERNEL_EPS and case.dtype == "float32"
        if _trailing(variant):
            assert case.layout.group_size == hidden
            assert _rows(case) in kernel.ROWS, case.short()
        else:  # (samples, 4, hidden) or (samples, 4, 1, hidden): hidden the spatial size
            assert case.shape[1] == 4 and case.shape[0] in {max(1, r // 4) for r in kernel.ROWS}, case.short()
        seen.add(case.memory)

    drawn()
    assert seen & set(VIEW_LAYOUTS), seen  # 30 examples draw some view


def test_the_strategy_shrinks_to_the_smallest_kernel_case():
    smallest = find(kernel.cases("layer_norm"), lambda case: True, settings=current_settings(20))
    assert smallest.shape == (1, kernel.HIDDEN[0]) and smallest.memory == "contiguous"
    assert smallest.values == "normal"
    wide = find(kernel.cases("layer_norm"), lambda case: case.shape[-1] > 5000, settings=current_settings(50))
    assert wide.shape == (1, 8191), wide.short()  # the smallest hidden size of HIDDEN above 5000, one row


@pytest.mark.parametrize("variant", ("layer_norm", "rms_norm", "group_norm", "batch_norm"))
def test_the_grid_is_sorted_and_covers_every_hidden_size_row_count_and_memory_layout(variant):
    grid = kernel.grid(variant, "float32")
    sizes = [math.prod(c.shape) for c in grid]
    assert sizes == sorted(sizes)
    assert len(set(grid)) == len(grid)
    assert max(sizes) <= kernel.MAX_NUMEL
    for case in grid:
        assert case.layout is not None and case.memory in kernel.memories(case.shape), case.short()
    hidden = {c.shape[-1] for c in grid}
    assert hidden >= {h for h in kernel.HIDDEN if 3 * h <= kernel.MAX_NUMEL}, sorted(hidden)
    assert {c.memory for c in grid} == EVERY_MEMORY
    assert {len(c.shape) for c in grid} >= {3, 4}
    rows = {_rows(c) if _trailing(variant) else c.shape[0] for c in grid if c.shape[-1] == 1023}
    fitting = [r for r in kernel.ROWS if r * 1023 <= kernel.MAX_NUMEL]
    expected = set(fitting) if _trailing(variant) else {max(1, r // 4) for r in fitting}
    assert rows >= expected, (sorted(rows), sorted(expected))


def test_a_smaller_max_numel_keeps_the_grid_within_it_and_drops_only_what_does_not_fit():
    grid = kernel.grid("layer_norm", max_numel=2**14)
    assert all(math.prod(c.shape) <= 2**14 for c in grid)
    assert {c.shape[-1] for c in grid} == {h for h in kernel.HIDDEN if 3 * h <= 2**14}
    assert {_rows(c) for c in grid if c.shape[-1] == 1023} == {r for r in kernel.ROWS if r * 1023 <= 2**14}


def test_the_grid_has_every_row_count_of_rows():
    kernel_rows = {_rows(c) for c in kernel.grid("layer_norm")}
    huge_rows = {_rows(c) for c in kernel.grid("layer_norm", many_rows=True, max_numel=4 * kernel.MAX_NUMEL)}
    assert set(kernel.ROWS) <= kernel_rows, sorted(set(kernel.ROWS) - kernel_rows)
    assert kernel.MANY_ROWS in huge_rows, sorted(huge_rows)


def test_the_channel_variants_stay_within_a_smaller_max_numel():
    over = [c.shape for c in kernel.grid("group_norm", max_numel=2**14) if math.prod(c.shape) > 2**14]
    assert not over, over


@pytest.mark.parametrize("variant", variants.NAMES)
def test_shape_for_gives_valid_cases_for_every_variant(variant):
    record = variants.get(variant)
    eps = None if record.default("eps") is None else 1e-5
    for rank in (2, 3, 4):
        for rows in kernel.ROWS:
            for hidden in (127, 4097):
                shape = kernel.shape_for(variant, rows, hidden, rank)
                case = Case(variant, shape, "float32", eps=eps)
                layout = case.layout  # raises for an invalid shape
                assert shape[-1] == hidden and len(shape) >= record.min_rank
                if _trailing(variant):
                    assert layout.group_size == hidden and math.prod(shape) == rows * hidden, shape
                else:
                    assert shape[1] == 4 and shape[0] == max(1, rows // 4), shape


# --- 3. correct implementations pass -----------------------------------------------------------

def plain_layer_norm(x, normalized_shape, weight=None, bias=None, eps=1e-5):
    """The textbook definition in torch ops (autograd differentiates it)."""
    dims = tuple(range(x.ndim - len(normalized_shape), x.ndim))
    mean = x.mean(dims, keepdim=True)
    var = ((x - mean) ** 2).mean(dims, keepdim=True)
    y = (x - mean) / torch.sqrt(var + eps)
    y = y * weight if weight is not None else y
    return y + bias if bias is not None else y


def plain_rms_norm(x, normalized_shape, weight=None, eps=None):
    dims = tuple(range(x.ndim - len(normalized_shape), x.ndim))
    eps = torch.finfo(x.dtype).eps if eps is None else eps
    y = x * torch.rsqrt((x * x).mean(dims, keepdim=True) + eps)
    return y * weight if weight is not None else y


PLAIN = Implementation("plain_autograd", {"layer_norm": plain_layer_norm, "rms_norm": plain_rms_norm})


@pytest.mark.parametrize("variant", ("layer_norm", "rms_norm"))
@pytest.mark.parametrize("name", ("torch_ref", "numpy_ref", "plain_autograd"))
def test_correct_implementations_pass_at_kernel_scale(name, variant):
    impl = PLAIN if name == "plain_autograd" else builtin(name)
    battery = run_battery(impl, variants=[variant], dtypes=["float32"], checks=KERNEL_CHECKS,
                          hypothesis_settings=current_settings(EXAMPLES), scale="kernel", calls=3)
    assert [r.check for r in battery.reports] == list(KERNEL_CHECKS)
    grid = len(kernel.grid(variant, "float32"))
    for report in battery.reports:
        assert report.status == PASSED, (report.id, report.status, report.reason)
        assert report.examples >= grid, (report.id, report.examples)


def test_group_norm_passes_at_kernel_scale():
    impl = builtin("torch_ref")
    for check in ("forward", "backward"):
        report = _kernel(impl, check, "group_norm")
        assert report.status == PASSED, (report.id, report.reason)
        assert report.examples >= len(kernel.grid("group_norm", "float32"))


def test_the_api_checks_a_function_at_kernel_scale():
    report = normspec.check(plain_layer_norm, "layer_norm", dtypes=["float32"], checks=["forward", "deterministic"],
                            max_examples=EXAMPLES, scale="kernel", calls=3)
    assert report.ok, report.to_markdown()
    assert [r.status for r in report.checks] == [PASSED, PASSED]
    assert all(r.examples >= len(kernel.grid("layer_norm")) for r in report.checks)


# --- 4. what does not run, and what is refused -------------------------------------------------

@pytest.mark.parametrize("check", ("mean_zero", "gradient_sum", "shift_invariance"))
def test_a_check_outside_the_kernel_checks_is_skipped_at_kernel_scale(check):
    assert check not in kernel.CHECKS
    report = _kernel(builtin("torch_ref"), check)
    assert report.status == SKIPPED and report.examples == 0
    assert report.reason.startswith("small shapes only"), report.reason
    assert scales.skip(check, "small", "layer_norm", "float32") is None


def test_the_kernel_checks_are_checks():
    assert set(kernel.CHECKS) <= set(CHECKS)
    assert scales.hypothesis_settings("kernel", current_settings(100)).max_examples == scales.KERNEL_EXAMPLES
    assert scales.hypothesis_settings("small", current_settings(100)).max_examples == 100


def test_an_unknown_scale_is_refused_by_the_api():
    with pytest.raises(NormSpecError, match="scale"):
        normspec.check(plain_layer_norm, "layer_norm", dtypes=["float32"], checks=["forward"], scale="nope")
    with pytest.raises(NormSpecError, match="scale='nope'"):
        kernel.check_scale("nope")
    with pytest.raises(NormSpecError, match="scale='nope'"):
        scales.check_scale("nope")
    with pytest.raises(NormSpecError, match="scale"):
        parametrize_checks(plain_layer_norm, variant="layer_norm", scale="nope")


def test_an_unknown_scale_is_refused_by_run_check():
    with pytest.raises(NormSpecError, match="scale"):
        _kernel(builtin("torch_ref"), "forward", examples=1, grid=False, scale="nope")


def test_the_command_line_refuses_an_unknown_scale_and_too_few_calls(capsys):
    for argv, message in ((["verify", "--scale", "nope"], "invalid choice: 'nope'"),
                          (["verify", "--calls", "1"], "expected an int >= 2")):
        with pytest.raises(SystemExit) as exited:
            cli.main(argv)
        assert exited.value.code == 2
        assert message in capsys.readouterr().err


def test_too_few_calls_are_refused_by_the_plugin():
    for calls in (1, 0, True):
        with pytest.raises(NormSpecError, match="calls"):
            parametrize_checks(plain_layer_norm, variant="layer_norm", calls=calls)


def test_too_few_calls_are_refused_by_the_api():
    with pytest.raises(NormSpecError, match="calls"):
        normspec.check(plain_layer_norm, "layer_norm", dtypes=["float32"], checks=["forward"], max_examples=1,
                       calls=1)


def test_too_few_calls_are_refused_by_run_check():
    with pytest.raises(NormSpecError, match="calls"):
        _kernel(builtin("torch_ref"), "forward", examples=1, grid=False, calls=1)


def test_repeated_calls_refuses_fewer_than_two():
    for calls in (1, 0, True, 2.0):
        with pytest.raises(NormSpecError, match="calls"):
            with repeated_calls(calls):
                pass
    with repeated_calls(None), repeated_calls(7):
        pass


# --- 5. the huge tier --------------------------------------------------------------------------

def test_the_huge_tier_is_refused_here_saying_what_it_needs_and_what_there_is():
    need, have = scales.huge_memory("float32"), scales.available_memory()
    if need <= have:
        pytest.skip(f"this machine has {have / GIB:.0f} GiB: the huge tier would run")
    refusal = scales.huge_refusal("layer_norm", "float32")
    assert refusal is not None and "not run" in refusal
    needed = float(re.search(r"needs ([\d.]+) GiB", refusal).group(1))
    available = float(re.search(r"([\d.]+) GiB is available", refusal).group(1))
    assert abs(needed - need / GIB) <= 0.5 and needed > available
    assert abs(available - have / GIB) <= 1.0
    assert scales.skip("forward", "huge", "layer_norm", "float32") is not None
    assert math.prod((scales.HUGE_ROWS, scales.HUGE_HIDDEN)) > 2**31 and str(scales.HUGE_ROWS) in refusal


def test_huge_memory_counts_the_dtype_and_the_float64_truth():
    elements = scales.HUGE_ROWS * scales.HUGE_HIDDEN
    assert scales.huge_memory("float64") - scales.huge_memory("float16") == elements * 4 * (8 - 2)
    assert scales.huge_memory("float32") == elements * (4 * 4 + scales.TRUTH_ARRAYS * 8)


def test_the_huge_refusal_follows_the_memory_available(monkeypatch):
    need = scales.huge_memory("bfloat16")
    monkeypatch.setattr(scales, "available_memory", lambda: need - 1)
    refusal = scales.huge_refusal("rms_norm", "bfloat16")
    assert f"needs {need / GIB:.0f} GiB" in refusal and f"{(need - 1) / GIB:.1f} GiB is available" in refusal
    assert "bfloat16" in refusal
    assert scales.skip("backward", "huge", "rms_norm", "bfloat16") == refusal
    report = run_check(builtin("torch_ref"), CHECKS["backward"], "rms_norm", "bfloat16", scale="huge")
    assert report.status == SKIPPED and report.reason == refusal and report.examples == 0
    assert scales.skip("mean_zero", "huge", "rms_norm", "bfloat16").startswith("small shapes only")
    monkeypatch.setattr(scales, "available_memory", lambda: need)  # just enough: not refused (not run here)
    assert scales.huge_refusal("rms_norm", "bfloat16") is None
    assert scales.skip("backward", "huge", "rms_norm", "bfloat16") is None


def test_the_huge_grid_ends_with_a_case_past_2_to_the_31():
    grid = scales.grid("huge", "layer_norm", "float32", sweep=True, options={}, parameter_dtypes=(None,),
                       case_options={})
    last = grid[-1]
    assert last.shape == (scales.HUGE_ROWS, scales.HUGE_HIDDEN) and math.prod(last.shape) > 2**31
    assert max(math.prod(c.shape) for c in grid[:-1]) <= 4 * kernel.MAX_NUMEL


# --- 6. memory hazards -------------------------------------------------------------------------

def layer_norm_into_x(x, normalized_shape, weight=None, bias=None, eps=1e-5):
    """Bug: normalizes in place into x and returns it."""
    dims = tuple(range(x.ndim - len(normalized_shape), x.ndim))
    mean = x.mean(dims, keepdim=True)
    rstd = torch.rsqrt(x.var(dims, unbiased=False, keepdim=True) + eps)
    x.sub_(mean).mul_(rstd)
    if weight is not None:
        x.mul_(weight)
    if bias is not None:
        x.add_(bias)
    return x


def numpy_layer_norm_view_of_x(x, normalized_shape, weight=None, bias=None, eps=1e-5):
    """Bug: writes y into x and returns a view of it."""
    x[...] = numpy_ref.layer_norm(x, normalized_shape, weight, bias, eps)
    return x[...]


@pytest.mark.parametrize("impl", [Implementation("layer_norm_into_x", {"layer_norm": layer_norm_into_x}),
                                  Implementation("view_of_x", {"layer_norm": numpy_layer_norm_view_of_x},
                                                 array="numpy", gradients=None)], ids=["torch", "numpy"])
def test_an_output_that_is_the_input_fails(impl):
    report = _kernel(impl, "forward")
    assert report.status == FAILED
    assert "shares memory with the input x" in report.reason, report.reason


def numpy_backward_into_grad_out(grad_out, x, normalized_shape, weight=None, bias=None, eps=1e-5, *,
                                 weight_offset=0.0):
    """Bug: writes dx into grad_out and returns it."""
    dx, dweight, dbias = numpy_ref.layer_norm_backward(grad_out, x, normalized_shape, weight, bias, eps,
                                                       weight_offset=weight_offset)
    grad_out[...] = dx
    return grad_out, dweight, dbias


def numpy_backward_returns_grad_out(grad_out, x, normalized_shape, weight=None, bias=None, eps=1e-5, *,
                                    weight_offset=0.0):
    """Bug: returns (a view of) grad_out as dx, e.g. an "identity" fast path."""
    _, dweight, dbias = numpy_ref.layer_norm_backward(grad_out, x, normalized_shape, weight, bias, eps,
                                                      weight_offset=weight_offset)
    return grad_out[...], dweight, dbias


def aten_backward_into_grad_out(grad_out, x, normalized_shape, mean, rstd, weight, bias, output_mask):
    dx, dweight, dbias = aten.layer_norm_backward(grad_out, x, normalized_shape, mean, rstd, weight, bias, output_mask)
    grad_out.copy_(dx)
    return grad_out, dweight, dbias


def aten_backward_overwrites_rstd(grad_out, x, normalized_shape, mean, rstd, weight, bias, output_mask):
    """Bug: uses the saved rstd as scratch memory."""
    grads = aten.layer_norm_backward(grad_out, x, normalized_shape, mean, rstd, weight, bias, output_mask)
    rstd.mul_(0.5)
    return grads


def _numpy_backward(backward) -> Implementation:
    return Implementation(backward.__name__, {"layer_norm": numpy_ref.layer_norm}, array="numpy",
                          gradients="backward", backwards={"layer_norm": backward})


def _aten_backward(backward) -> Implementation:
    return Implementation(backward.__name__, {"layer_norm": aten.layer_norm_forward}, gradients="backward",
                          backwards={"layer_norm": backward}, abi="aten")


@pytest.mark.parametrize("impl, message", [
    (_numpy_backward(numpy_backward_into_grad_out), "modified its input grad_out|shares memory"),
    (_numpy_backward(numpy_backward_returns_grad_out), "the gradient of x shares memory with grad_out"),
    (_aten_backward(aten_backward_into_grad_out), "modified its input grad_out|shares memory"),
    (_aten_backward(aten_backward_overwrites_rstd), "its backward modified its input rstd in place"),
], ids=["numpy-writes-grad_out", "numpy-returns-grad_out", "aten-writes-grad_out", "aten-writes-rstd"])
def test_a_backward_that_writes_into_its_inputs_fails(impl, message):
    report = _kernel(impl, "backward")
    assert report.status == FAILED
    assert re.search(message, report.reason), report.reason


TAIL = 3  # elements of each row the bug leaves unwritten


def layer_norm_unwritten_tail(x, normalized_shape, weight=None, bias=None, eps=1e-5):
    """Bug: a kernel's last block skips the row's tail once a row spans more than one block
    (hidden >= 4095): those elements of torch.empty's y keep what the memory held."""
    full = F.layer_norm(x, normalized_shape, weight, bias, eps)
    hidden = x.shape[-1]
    written = hidden - TAIL if hidden >= 4095 else hidden
    y = torch.empty(x.shape, dtype=x.dtype, device=x.device)
    y[..., :written] = full[..., :written]
    return y


UNWRITTEN_TAIL = Implementation("unwritten_tail", {"layer_norm": layer_norm_unwritten_tail}, gradients=None)


def test_a_tail_left_unwritten_fails_output_memory_at_kernel_scale_only():
    small = _kernel(UNWRITTEN_TAIL, "output_memory", scale="small", examples=4)
    assert small.status == PASSED, small.reason  # no row of the small battery spans a block
    report = _kernel(UNWRITTEN_TAIL, "output_memory")
    assert report.status == FAILED, report.reason
    # the garbage differs from call to call: the battery may add that the minimal case is nondeterministic
    assert re.search(r"y:? after NaN-filled free memory", report.reason), report.reason
    assert report.case.shape[-1] >= 4095, report.case.short()


def _fingerprint(x: torch.Tensor) -> tuple:
    data = x.detach().contiguous().numpy()
    return tuple(x.shape), tuple(x.stride()), hashlib.blake2b(data.tobytes(), digest_size=16).hexdigest()


def every_third_call_noisy():
    """A race that shows on every 3rd identical call: noise from a generator nobody seeded
    (torch's global one would be put back by the guard and reported as a process-state change)."""
    generator = torch.Generator().manual_seed(int.from_bytes(os.urandom(8), "little") >> 1)
    state = {"key": None, "count": 0}

    def layer_norm(x, normalized_shape, weight=None, bias=None, eps=1e-5):
        key = _fingerprint(x)
        state["count"] = state["count"] + 1 if key == state["key"] else 1
        state["key"] = key
        y = F.layer_norm(x, normalized_shape, weight, bias, eps)
        if state["count"] % 3 == 0:
            y = y + 1e-7 * torch.randn(y.shape, generator=generator, dtype=y.dtype)
        return y

    return Implementation("every_third_call_noisy", {"layer_norm": layer_norm})


def test_calls_finds_a_race_that_two_calls_miss():
    two = _kernel(every_third_call_noisy(), "deterministic", calls=2)
    assert two.status == PASSED, two.reason
    six = _kernel(every_third_call_noisy(), "deterministic", calls=6)
    assert six.status == FAILED
    assert "call 3 - call 1" in six.reason, six.reason
    assert six.nondeterministic  # the battery's replays of the minimal case disagree too


# --- 7. the pytest plugin ----------------------------------------------------------------------

def test_the_plugin_items_carry_scale_and_calls():
    mark = parametrize_checks(plain_layer_norm, variant="layer_norm", dtypes=("float32",),
                              checks=("forward", "deterministic", "mean_zero"), scale="kernel", calls=3).mark
    name, items = mark.args
    assert name == "normspec_check" and mark.kwargs["ids"] == [
        "layer_norm-float32-forward", "layer_norm-float32-deterministic", "layer_norm-float32-mean_zero"]
    assert all(isinstance(i, NormspecCheck) and i.scale == "kernel" and i.calls == 3 for i in items)
    default = parametrize_checks(plain_layer_norm, variant="layer_norm", dtypes=("float32",), checks=("forward",))
    assert [(i.scale, i.calls) for i in default.mark.args[1]] == [("small", None)]
    with pytest.raises(pytest.skip.Exception, match="small shapes only"):
        items[2].run()  # mean_zero does not run at kernel scale


def test_a_plugin_item_runs_at_kernel_scale():
    item = NormspecCheck(plain_layer_norm, "layer_norm", "float32", "forward", scale="kernel", calls=3)
    item.run()  # passes: no exception
    bad = NormspecCheck(UNWRITTEN_TAIL.functions["layer_norm"], "layer_norm", "float32", "output_memory",
                        scale="kernel")
    with pytest.raises(pytest.fail.Exception, match="output_memory"):
        bad.run()
