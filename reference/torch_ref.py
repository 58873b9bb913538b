"""torch reference implementations, with ``torch.nn.functional`` signatures.

Each variant is one :class:`torch.autograd.Function` (``_Normalize``) whose forward
and backward are the generated kernels (``reference/_generated/torch_kernels.py``,
printed from the SymPy derivation); this module is the glue: validation, reshapes
and the dtype policy (float16 and bfloat16 are computed in float32 and cast back).
Device-agnostic: nothing here names a device or leaves torch.

Every variant of the registry (the five textbook ones, ``fused_add_layer_norm``,
``fused_add_rms_norm``, ``adaptive_layer_norm``, ``adaptive_rms_norm``) is differentiable
through ``_Normalize``; each ``*_backward(<upstream gradients>, <same inputs>)`` calls the
generated backward directly, as in numpy_ref.

The forward saves xhat, so a first-order backward only runs the closed forms. The
backward is itself differentiable: under ``create_graph=True`` it recomputes the
statistics from x with differentiable ops, so double backward is exact too.
"""
from __future__ import annotations

from typing import Any

import torch

from normspec.derive import dtypes, variants
from normspec.derive.errors import require
from normspec.reference import _plan
from normspec.reference._generated import torch_kernels

Tensor = torch.Tensor


def _name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


class _TorchBackend:
    kernels = torch_kernels

    def check_array(self, value: Any, name: str, *, like: Any = None) -> None:
        require(isinstance(value, torch.Tensor), name, type(value).__name__, "a torch.Tensor")
        require(value.is_floating_point(), f"{name}.dtype", str(value.dtype),
                "a floating dtype (float16, bfloat16, float32 or float64)")
        if like is not None:
            require(value.device == like.device, f"{name}.device", str(value.device),
                    f"x's device {like.device}")

    def machine_eps(self, array: Tensor) -> float:
        return dtypes.machine_eps(_name(array.dtype))

    def compute_dtype(self, tensors: list[Tensor]) -> torch.dtype:
        dtype = tensors[0].dtype
        for tensor in tensors[1:]:
            dtype = torch.promote_types(dtype, tensor.dtype)
        return getattr(torch, dtypes.compute_dtype(_name(dtype)))

    def to_dtype(self, tensor: Tensor, dtype: torch.dtype) -> Tensor:
        return tensor.to(dtype)

    def cast(self, tensor: Tensor, like: Tensor) -> Tensor:
        return tensor.to(like.dtype)


_BACKEND = _TorchBackend()


def _statistics(family: str) -> tuple[str, ...]:
    """The statistics ``<family>_forward`` returns besides its outputs and xhat (outputs of _Normalize)."""
    return tuple(name for name in torch_kernels.RETURNS[f"{family}_forward"]
                 if name not in ("y", "residual_out", "xhat"))


def _outputs(family: str) -> tuple[str, ...]:
    """What ``<family>_forward`` computes for the caller: y, and the sum of the fused residual add."""
    return tuple(name for name in ("y", "residual_out") if name in torch_kernels.RETURNS[f"{family}_forward"])


class _Normalize(torch.autograd.Function):
    """y (and the fused residual add's sum) and the statistics of one generated family; backward =
    the derived closed form.

    The forward saves xhat and rstd, so a first-order backward runs the closed forms
    directly (``<family>_backward``). Under ``create_graph`` the backward instead runs
    ``<family>_vjp``, which recomputes the statistics and xhat from x with recorded
    operations, so that double backward differentiates through them exactly.
    """

    @staticmethod
    def forward(ctx, x, residual, weight, bias, given_mean, given_var, family, eps, weight_offset, group_dims,
                affine_dims):
        values = {"x": x, "residual": residual, "weight": 1.0 if weight is None else weight,
                  "bias": 0.0 if bias is None else bias, "mean": given_mean, "var": given_var, "eps": eps,
                  "weight_offset": weight_offset, "group_dims": group_dims}
        out = _plan.call_kernel(torch_kernels, f"{family}_forward", values)
        ctx.family, ctx.eps, ctx.weight_offset, ctx.dims = family, eps, weight_offset, (group_dims, affine_dims)
        ctx.has_weight = weight is not None
        ctx.save_for_backward(x, residual, weight, out["xhat"], out["rstd"], given_mean, given_var)
        stats = [out[name] for name in _statistics(family)]
        ctx.mark_non_differentiable(*stats)
        return (*(out[name] for name in _outputs(family)), *stats)

    @staticmethod
    def backward(ctx, grad_y, *grad_rest):
        x, residual, weight, xhat, rstd, given_mean, given_var = ctx.saved_tensors
        group_dims, affine_dims = ctx.dims
        values = {"grad_out": grad_y, "weight": weight if ctx.has_weight else 1.0,
                  "weight_offset": ctx.weight_offset, "group_dims": group_dims, "affine_dims": affine_dims}
        if residual is not None:
            values["grad_residual_out"] = grad_rest[0]
        if torch.is_grad_enabled():  # create_graph: recompute from x, recorded
            values.update(x=x, residual=residual, mean=given_mean, var=given_var, eps=ctx.eps)
            grads = _plan.call_kernel(torch_kernels, f"{ctx.family}_vjp", values)
        else:
            values.update(xhat=xhat, rstd=rstd)
            grads = _plan.call_kernel(torch_kernels, f"{ctx.family}_backward", values)
        need_x, need_residual, need_weight, need_bias = ctx.needs_input_grad[:4]
        return (grads["dx"] if need_x else None,
                grads["dx"] if need_residual else None,  # s = x + residual: the derivation proves dresidual = dx
                grads["dweight"] if need_weight else None,
                grads.get("dbias") if need_bias else None,
                None, None, None, None, None, None, None)


def _forward(plan: _plan.Plan) -> tuple[Tensor, ...]:
    values = _plan.kernel_inputs(plan, _BACKEND)
    layout = plan.layout
    results = _Normalize.apply(values["x"], values.get("residual"), None if plan.weight is None else values["weight"],
                               None if plan.bias is None else values["bias"], values.get("mean"), values.get("var"),
                               plan.family, plan.eps, plan.weight_offset, layout.group_dims, layout.affine_dims)
    outputs = _outputs(plan.family)
    with torch.no_grad():
        _plan.update_running(plan, dict(zip(_statistics(plan.family), results[len(outputs):])))
    return tuple(_BACKEND.cast(result.reshape(plan.x.shape), plan.x) for result in results[:len(outputs)])


# The public functions, one pair per variant of the registry (named as in torch.nn.functional).
__all__ = [f"{name}{suffix}" for name in variants.NAMES for suffix in ("", "_backward")]
for _variant_name in variants.NAMES:
    globals()[_variant_name], globals()[f"{_variant_name}_backward"] = _plan.public_variant(_BACKEND, _variant_name, _forward)
