"""The bug zoo: realistic wrong normalization layers, one bug each, to show what the
battery catches and which check catches it.

Every zoo function has the exact ``torch.nn.functional`` signature of its variant, is a
few lines of torch built from the correct pieces in :mod:`tests.broken.impls` (16-bit
inputs computed in float32 and cast back, any memory layout, torch-autograd
differentiable unless the bug is in a hand-written ``torch.autograd.Function`` backward)
and is correct except for the one bug its docstring names. The modules group them by
family: ``forward_bugs``, ``precision_bugs``, ``layout_bugs``, ``edge_case_bugs``,
``gradient_bugs``, ``running_stats_bugs``, ``size_bugs`` (wrong only on one branch of the kernel: a group
size, a memory layout, affine parameters given; what the deterministic coverage grid is for),
``parameter_bugs`` (wrong only with a weight and no bias, or a bias and no weight),
``kernel_variant_bugs`` (the weight offset, the fused residual add, the adaptive norms),
``calling_convention_bugs`` (saved statistics, the output mask, the backward from the output, a
precision contract), ``kernel_scale_bugs`` (blocked kernels wrong only past one block, in views or
across calls: caught by ``--scale kernel``).

``ZOO`` maps a name to a :class:`ZooEntry`: the variant, the ``module:function`` import
path (what ``normspec verify --impl`` takes), the checks that legitimately catch the bug
(at least one of them must fail), the dtypes worth running (``None``: all; a
dtype-independent forward bug runs in float64 and float32, a backward or running-statistics
bug, whose arithmetic is the same in every dtype, in float64 only: the suite stays fast)
and the bug class. Nothing but the table is imported here, so loading the package stays cheap.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ZooEntry:
    variant: str
    impl: str  # "tests.bug_zoo.<module>:<function>"
    catches: frozenset[str]
    dtypes: tuple[str, ...] | None = None
    bug_class: str = ""
    arguments: tuple[str, ...] = ()  # more `normspec verify` arguments: a pinned option, a convention


_WIDE = ("float64", "float32")  # a dtype-independent forward bug: the two tolerances that see it
_F64 = ("float64",)  # a backward or running-statistics bug: its arithmetic is the same in every dtype

# A 1% error on one branch: of the output (and so of dx and the moments of xhat), or of dx alone.
_SIZE_FORWARD = {"forward", "backward", "mpmath", "finite_differences", "second_moment", "identity_recovery",
                 "gradient_xhat"}
_SIZE_BACKWARD = {"backward", "finite_differences", "mpmath", "gradient_xhat"}


def _entry(variant: str, path: str, catches: set[str], bug_class: str,
           dtypes: tuple[str, ...] | None = _WIDE, arguments: tuple[str, ...] = ()) -> ZooEntry:
    return ZooEntry(variant, f"tests.bug_zoo.{path}", frozenset(catches), dtypes, bug_class, arguments)


ZOO: dict[str, ZooEntry] = {
    # --- forward -------------------------------------------------------------------------------
    "layer_norm_unbiased_var": _entry(
        "layer_norm", "forward_bugs:layer_norm_unbiased_var",
        # N = 1 divides 0 by 0: every check that draws a one-element group sees NaN
        {"forward", "backward", "mpmath", "second_moment", "identity_recovery", "gradient_xhat", "constant_group",
         "mean_zero", "shift_invariance", "scale_invariance", "bias_cancels", "gradient_sum", "finite_differences"},
        "unbiased variance (N - 1) in the normalization"),
    "layer_norm_eps_outside_sqrt": _entry(
        "layer_norm", "forward_bugs:layer_norm_eps_outside_sqrt",
        {"forward", "backward", "mpmath", "second_moment", "scale_invariance", "identity_recovery", "constant_group",
         "finite_differences", "gradient_sum", "gradient_xhat"},
        "eps outside the square root: sqrt(var) + eps"),
    "group_norm_hard_coded_eps": _entry(
        "group_norm", "forward_bugs:group_norm_hard_coded_eps",
        {"forward", "backward", "mpmath", "second_moment", "scale_invariance", "identity_recovery", "gradient_xhat"},
        "hard-coded eps (ignores the eps argument, uses 1e-5)"),
    "layer_norm_bias_before_scale": _entry(
        "layer_norm", "forward_bugs:layer_norm_bias_before_scale",
        {"forward", "backward", "mpmath", "identity_recovery", "constant_group"},
        "bias applied before scaling: (xhat + beta) * gamma"),
    "rms_norm_centered": _entry(
        "rms_norm", "forward_bugs:rms_norm_centered",
        {"forward", "backward", "mpmath", "second_moment", "identity_recovery", "gradient_xhat"},
        "wrong variant: RMSNorm subtracts the mean"),
    # --- precision -----------------------------------------------------------------------------
    "layer_norm_one_pass_var": _entry(
        "layer_norm", "precision_bugs:layer_norm_one_pass_var",
        {"forward", "backward", "second_moment", "shift_invariance", "bias_cancels", "gradient_sum", "gradient_xhat"},
        "variance as E[x^2] - E[x]^2 in float32 (cancellation on large offsets)", ("float32",)),
    "layer_norm_fp16_accumulation": _entry(
        "layer_norm", "precision_bugs:layer_norm_fp16_accumulation",
        {"forward", "backward", "mean_zero", "second_moment", "shift_invariance", "bias_cancels", "scale_invariance",
         "identity_recovery", "constant_group", "gradient_sum", "gradient_xhat"},
        "float16 accumulation of the statistics", ("float16",)),
    "rms_norm_no_upcast": _entry(
        "rms_norm", "precision_bugs:rms_norm_no_upcast",
        {"forward", "backward", "second_moment", "scale_invariance", "identity_recovery", "gradient_xhat"},
        "statistics in the 16-bit storage dtype (sum of squares overflows float16)", ("float16",)),
    # --- layout --------------------------------------------------------------------------------
    "layer_norm_last_dim_only": _entry(
        "layer_norm", "layout_bugs:layer_norm_last_dim_only",
        {"forward", "backward", "mpmath", "mean_zero", "second_moment", "bias_cancels", "identity_recovery",
         "gradient_xhat"},
        "layer_norm over the wrong dims (always only the last)"),
    "group_norm_strided_groups": _entry(
        "group_norm", "layout_bugs:group_norm_strided_groups",
        {"forward", "backward", "mpmath", "mean_zero", "second_moment", "bias_cancels", "identity_recovery",
         "constant_group", "gradient_sum", "gradient_xhat"},
        "group_norm groups channels strided (c % G), not contiguously"),
    "instance_norm_batch_stats": _entry(
        "instance_norm", "layout_bugs:instance_norm_batch_stats",
        {"forward", "backward", "mpmath", "mean_zero", "second_moment", "bias_cancels", "constant_group",
         "gradient_sum", "gradient_xhat", "per_sample_independence"},
        "instance_norm computes batch statistics"),
    "group_norm_assumes_contiguous": _entry(
        "group_norm", "layout_bugs:group_norm_assumes_contiguous",
        {"forward", "backward", "mpmath", "mean_zero", "second_moment", "shift_invariance", "bias_cancels",
         "scale_invariance", "identity_recovery", "constant_group", "gradient_sum", "gradient_xhat",
         "per_sample_independence"},
        "wrong only for non-contiguous inputs (as_strided with contiguous strides)"),
    # --- edge cases ----------------------------------------------------------------------------
    "layer_norm_single_element_passthrough": _entry(
        "layer_norm", "edge_case_bugs:layer_norm_single_element_passthrough",
        {"forward", "backward", "mpmath", "mean_zero", "second_moment", "constant_group", "identity_recovery",
         "shift_invariance", "scale_invariance", "bias_cancels", "gradient_sum", "gradient_xhat"},
        "wrong only for N = 1 groups (passes x through instead of beta)"),
    "group_norm_constant_group_nan": _entry(
        "group_norm", "edge_case_bugs:group_norm_constant_group_nan",
        {"forward", "backward", "mpmath", "finite_differences", "constant_group", "mean_zero", "second_moment",
         "shift_invariance", "scale_invariance", "bias_cancels", "gradient_sum", "gradient_xhat",
         "per_sample_independence"},
        "constant group gives NaN (rsqrt(var) * sqrt(var / (var + eps)) at var = 0)"),
    # --- gradients -----------------------------------------------------------------------------
    "layer_norm_no_mean_xhat_term": _entry(
        "layer_norm", "gradient_bugs:layer_norm_no_mean_xhat_term",
        {"backward", "finite_differences", "mpmath", "gradient_xhat"},
        "dx misses the through-the-batch term mean(h * xhat)", _F64),
    "group_norm_no_mean_h_term": _entry(
        "group_norm", "gradient_bugs:group_norm_no_mean_h_term",
        {"backward", "finite_differences", "mpmath", "gradient_sum"},
        "dx misses the through-the-batch term mean(h)", _F64),
    "layer_norm_gamma_missing_in_dx": _entry(
        "layer_norm", "gradient_bugs:layer_norm_gamma_missing_in_dx",
        {"backward", "finite_differences", "mpmath", "gradient_xhat", "gradient_sum"},
        "gamma missing from dx", _F64),
    "layer_norm_gamma_twice_in_dx": _entry(
        "layer_norm", "gradient_bugs:layer_norm_gamma_twice_in_dx",
        {"backward", "finite_differences", "mpmath", "gradient_xhat", "gradient_sum"},
        "gamma applied twice in dx", _F64),
    "layer_norm_dx_reductions_without_gamma": _entry(
        "layer_norm", "gradient_bugs:layer_norm_dx_reductions_without_gamma",
        {"backward", "finite_differences", "mpmath", "gradient_sum", "gradient_xhat"},
        "dx correct only when gamma = 1 (row sums of g reused for h = gamma * g)", _F64),
    "layer_norm_dgamma_wrong_axes": _entry(
        "layer_norm", "gradient_bugs:layer_norm_dgamma_wrong_axes",
        {"backward", "finite_differences"},
        "dgamma averaged over the rows instead of summed", _F64),
    "group_norm_dgamma_per_group": _entry(
        "group_norm", "gradient_bugs:group_norm_dgamma_per_group",
        {"backward", "finite_differences"},
        "dgamma summed over the wrong axes (per group, not per channel)", _F64),
    "batch_norm_stats_without_grad": _entry(
        "batch_norm", "gradient_bugs:batch_norm_stats_without_grad",
        {"backward", "finite_differences", "mpmath", "gradient_sum", "gradient_xhat"},
        "statistics cut from the autograd graph (computed under no_grad)", _F64),
    # --- size- and path-dependent branches (caught by the coverage grid, not by luck) ----------
    "layer_norm_approx_rsqrt_long_rows": _entry(
        "layer_norm", "size_bugs:layer_norm_approx_rsqrt_long_rows", _SIZE_FORWARD,
        "1% off only for groups of N >= 16 elements (vectorised path, unrefined rsqrt)"),
    "group_norm_two_level_long_groups": _entry(
        "group_norm", "size_bugs:group_norm_two_level_long_groups", _SIZE_FORWARD,
        "1% off only for groups of N >= 257 elements (two-level reduction)"),
    "layer_norm_long_rows_backward": _entry(
        "layer_norm", "size_bugs:layer_norm_long_rows_backward", _SIZE_BACKWARD,
        "dx 1% off only for rows of N >= 257 elements (two-level backward)", _F64),
    "group_norm_power_of_two_fast_path": _entry(
        "group_norm", "size_bugs:group_norm_power_of_two_fast_path", _SIZE_FORWARD,
        "1% off only for power-of-two groups N = 2^k >= 16 (tail-free fast path)"),
    "layer_norm_power_of_two_backward": _entry(
        "layer_norm", "size_bugs:layer_norm_power_of_two_backward", _SIZE_BACKWARD,
        "dx 1% off only for power-of-two rows N = 2^k >= 16 (tail-free backward)", _F64),
    "layer_norm_power_of_two_wide_rows": _entry(
        "layer_norm", "size_bugs:layer_norm_power_of_two_wide_rows", _SIZE_FORWARD,
        "1% off only for power-of-two rows N = 2^k >= 1024 (a block per row)"),
    "group_norm_strided_input_path": _entry(
        "group_norm", "size_bugs:group_norm_strided_input_path", _SIZE_FORWARD,
        "1% off only for non-contiguous or channels_last inputs (gather path)"),
    "layer_norm_strided_input_path": _entry(
        "layer_norm", "size_bugs:layer_norm_strided_input_path", _SIZE_FORWARD,
        "1% off only for non-contiguous inputs (gather path)"),
    "layer_norm_fused_affine_epilogue": _entry(
        "layer_norm", "size_bugs:layer_norm_fused_affine_epilogue",
        {"forward", "backward", "mpmath", "finite_differences", "identity_recovery", "gradient_xhat"},
        "1% off only when a weight is given (fused affine epilogue)"),
    "group_norm_affine_backward": _entry(
        "group_norm", "size_bugs:group_norm_affine_backward", _SIZE_BACKWARD,
        "dx 1% off only when a weight is given (fused affine backward)", _F64),
    # --- one combination of the affine parameters ----------------------------------------------
    "layer_norm_bias_free_path_drops_weight": _entry(
        "layer_norm", "parameter_bugs:layer_norm_bias_free_path_drops_weight", {"forward", "backward", "mpmath"},
        "the bias-free path (bias=None, weight given) drops the weight", _F64),
    "group_norm_weight_free_path_drops_bias": _entry(
        "group_norm", "parameter_bugs:group_norm_weight_free_path_drops_bias", {"forward", "mpmath"},
        "the weight-free path (weight=None, bias given) drops the bias", _F64),
    # --- running statistics --------------------------------------------------------------------
    "batch_norm_biased_running_var": _entry(
        "batch_norm", "running_stats_bugs:batch_norm_biased_running_var", {"running_stats"},
        "running variance biased instead of unbiased", _F64),
    "batch_norm_momentum_inverted": _entry(
        "batch_norm", "running_stats_bugs:batch_norm_momentum_inverted", {"running_stats"},
        "momentum convention inverted (flax/keras weight of the old value)", _F64),
    "batch_norm_running_not_updated": _entry(
        "batch_norm", "running_stats_bugs:batch_norm_running_not_updated", {"running_stats"},
        "running statistics not updated in training", _F64),
    "batch_norm_running_updated_in_eval": _entry(
        "batch_norm", "running_stats_bugs:batch_norm_running_updated_in_eval", {"eval_running_unchanged"},
        "running statistics updated in eval", _F64),
    # --- the variants kernels ship: weight offset, fused residual add, adaptive norms ------------
    "rms_norm_offset_backward_forgets_offset": _entry(
        "rms_norm", "kernel_variant_bugs:rms_norm_offset_backward_forgets_offset",
        {"backward", "finite_differences", "gradient_xhat", "offset_is_shifted_weight"},
        "zero-centered weight: the backward forgets the offset (TransformerEngine #67)", _F64),
    "gemma_rms_norm_without_offset": _entry(
        "rms_norm", "kernel_variant_bugs:gemma_rms_norm_without_offset",
        {"forward", "backward", "mpmath", "identity_recovery", "finite_differences"},
        "Gemma kernel: the built-in +1 of the weight missing (Liger-Kernel #74)", _F64,
        arguments=("--option", "weight_offset=1")),
    "fused_add_rms_norm_residual_grad_through_norm": _entry(
        "fused_add_rms_norm", "kernel_variant_bugs:fused_add_rms_norm_residual_grad_through_norm",
        {"backward", "finite_differences", "mpmath", "gradient_xhat", "fused_add_is_norm_of_sum"},
        "fused add: the residual gradient sent through the norm's backward (quack #53)", _F64),
    "fused_add_layer_norm_normalizes_x": _entry(
        "fused_add_layer_norm", "kernel_variant_bugs:fused_add_layer_norm_normalizes_x",
        {"forward", "backward", "mpmath", "fused_add_is_norm_of_sum", "identity_recovery", "second_moment"},
        "fused add: x normalized instead of x + residual", _F64),
    "fused_add_rms_norm_in_place_keeps_residual": _entry(
        "fused_add_rms_norm", "kernel_variant_bugs:fused_add_rms_norm_in_place_keeps_residual",
        {"forward", "mpmath", "fused_add_is_norm_of_sum"},
        "fused add, in-place form: the sum never written into the residual stream", _F64,
        arguments=("--convention", "fused_add=in_place")),
    "adaptive_layer_norm_scale_without_one": _entry(
        "adaptive_layer_norm", "kernel_variant_bugs:adaptive_layer_norm_scale_without_one",
        {"forward", "backward", "mpmath", "unmodulated", "identity_recovery"},
        "adaptive norm: multiplies by scale, not 1 + scale", _F64),
    "adaptive_rms_norm_first_sample_scale": _entry(
        "adaptive_rms_norm", "kernel_variant_bugs:adaptive_rms_norm_first_sample_scale",
        {"forward", "backward", "mpmath", "modulated_per_sample", "finite_differences"},
        "adaptive norm: every sample modulated by the first sample's scale", _F64),
    # --- calling conventions: aten's saved statistics, the backward from the output, contracts ---
    # (the check is pinned: the named check must catch it; the buggy or correct backward is an argument)
    "layer_norm_aten_forward_saves_var": _entry(
        "layer_norm", "calling_convention_bugs:layer_norm_aten_forward_saves_var", {"saved_statistics", "backward"},
        "aten forward: the variance saved where rstd belongs (FlagGems #5771)", _F64,
        arguments=("--abi", "aten", "--backward", "tests.bug_zoo.calling_convention_bugs:layer_norm_aten_backward",
                   "--check", "saved_statistics,backward")),
    "layer_norm_aten_forward_saves_input_dtype_statistics": _entry(
        "layer_norm", "calling_convention_bugs:layer_norm_aten_forward_saves_input_dtype_statistics",
        {"saved_statistics"}, "aten forward: mean and rstd saved in the 16-bit input dtype, not float32",
        ("bfloat16",),
        arguments=("--abi", "aten", "--backward", "tests.bug_zoo.calling_convention_bugs:layer_norm_aten_backward",
                   "--check", "saved_statistics")),
    "layer_norm_aten_pair_ignoring_output_mask": _entry(
        "layer_norm", "calling_convention_bugs:layer_norm_aten_pair_ignoring_output_mask", {"output_mask"},
        "aten backward: every gradient returned whatever output_mask says", _F64,
        arguments=("--abi", "aten", "--backward",
                   "tests.bug_zoo.calling_convention_bugs:layer_norm_aten_backward_ignores_output_mask",
                   "--check", "output_mask")),
    "layer_norm_pair_from_output_clamping_weight": _entry(
        "layer_norm", "calling_convention_bugs:layer_norm_pair_from_output_clamping_weight", {"backward_from_output"},
        "backward from the output: xhat divided by weight.clamp(min=eps), the sign of negative weights lost", _F64,
        arguments=("--backward-from-output",
                   "tests.bug_zoo.calling_convention_bugs:layer_norm_backward_from_output_clamps_weight",
                   "--check", "backward_from_output")),
    "rms_norm_float32_contract_rounds_xhat": _entry(
        "rms_norm", "calling_convention_bugs:rms_norm_float32_contract_rounds_xhat", {"contract"},
        "declared float32 contract, xhat cast to x's dtype before the weight multiply (vLLM #42325)", ("bfloat16",),
        arguments=("--contract", "float32", "--check", "contract")),
    # --- kernel scale: blocks of rows and of hidden elements, strided views, many elements -------
    # (run at --scale kernel, the check pinned: the kernel tier's shapes are where the bug is)
    "layer_norm_floor_sized_dweight_buffer": _entry(
        "layer_norm", "kernel_scale_bugs:layer_norm_floor_sized_dweight_buffer", {"backward", "output_memory"},
        "dweight partial buffer sized rows // BLOCK_ROWS, grid cdiv: the last row block dropped (attorch #18)",
        ("float32",), arguments=("--scale", "kernel", "--check", "backward")),
    "layer_norm_unmasked_tail_block": _entry(
        "layer_norm", "kernel_scale_bugs:layer_norm_unmasked_tail_block", {"forward", "backward", "output_memory"},
        "the last partial block of 1024 loaded unmasked: the next row's elements in the statistics",
        ("float32",), arguments=("--scale", "kernel", "--check", "forward")),
    "layer_norm_row_stride_assumed_hidden": _entry(
        "layer_norm", "kernel_scale_bugs:layer_norm_row_stride_assumed_hidden",
        {"forward", "backward", "output_memory"},
        "row stride assumed equal to the hidden size (LightLLM #1467, vLLM #28103)",
        ("float32",), arguments=("--scale", "kernel", "--check", "forward")),
    "layer_norm_narrow_row_offset": _entry(
        "layer_norm", "kernel_scale_bugs:layer_norm_narrow_row_offset", {"forward", "backward", "output_memory"},
        "row offset row * N in a narrow integer that wraps (int32 past 2^31, scaled down to 2^19)",
        ("float32",), arguments=("--scale", "kernel", "--check", "forward")),
    "layer_norm_racy_dweight_accumulation": _entry(
        "layer_norm", "kernel_scale_bugs:layer_norm_racy_dweight_accumulation", {"deterministic", "output_memory"},
        "dweight/dbias partials accumulated in a random order each call (tritonbench #1266)",
        ("float32",), arguments=("--scale", "kernel", "--calls", "8", "--check", "deterministic")),
}

