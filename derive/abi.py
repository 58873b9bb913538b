"""Calling conventions of fused kernels (``--abi``): how a forward that returns the statistics it
saves, and a backward that consumes them, are called — aten's, as data.

``torch.ops.aten.native_layer_norm(x, normalized_shape, weight, bias, eps) -> (y, mean, rstd)`` and
its ``native_layer_norm_backward(grad_out, x, normalized_shape, mean, rstd, weight, bias,
output_mask) -> (dx, dweight, dbias)`` are the register every fused norm kernel is written in
(the Triton tutorial, Apex, Liger): the forward saves one mean and one rstd per group, the
backward recomputes xhat = (x - mean) * rstd from them, and ``output_mask`` says which gradients
to compute (a masked one is not computed: None). An :class:`AtenConvention` lists each call's
arguments by name, from this vocabulary:

    x, grad_out, weight, bias, eps, running_mean, running_var, momentum, training
        the case's own (training also as train, the batch-norm backward's name)
    normalized_shape                the trailing shape the statistics are taken over
    N, C, HxW, group                group_norm's sizes: samples, channels, spatial elements, groups
    mean, rstd                      the saved statistics handed to the backward (batch_norm calls
                                    them save_mean and save_invstd)
    output_mask                     one bool per gradient the backward returns

The saved statistics have one value per group, in the shape ``saved_shape`` names: ``leading``
(x.shape[:-k] + (1,) * k for a normalized_shape of k axes), ``samples_groups`` (N, G) or
``channels`` (C,); rstd = 1 / sqrt(var + eps) with the biased variance. Their dtype is the compute
dtype (float32 for 16-bit x, x's own otherwise). Plain Python, no array library.
"""
from __future__ import annotations

from dataclasses import dataclass

from normspec.derive.errors import require

ABIS = ("functional", "aten")
SAVED_SHAPES = {"leading": "x.shape[:-k] + (1,) * k, k = len(normalized_shape)",
                "samples_groups": "(N, G)", "channels": "(C,)"}


@dataclass(frozen=True, kw_only=True)
class AtenConvention:
    variant: str
    forward: str  # the aten op
    forward_arguments: tuple[str, ...]
    saved: tuple[str, ...]  # what the forward returns after y, by the vocabulary's names (mean, rstd)
    saved_names: tuple[str, ...]  # their names in aten's signature
    backward: str
    backward_arguments: tuple[str, ...]
    gradients: tuple[str, ...]  # what the backward returns, in order (the output_mask's entries)
    saved_shape: str  # a key of SAVED_SHAPES

    def signature(self, which: str = "forward") -> str:
        """``name(arguments) -> (results)`` as aten writes it, for readers."""
        if which == "forward":
            return f"{self.forward}({', '.join(self.forward_arguments)}) -> (y, {', '.join(self.saved_names)})"
        arguments = [dict(zip(self.saved, self.saved_names)).get(a, a) for a in self.backward_arguments]
        return f"{self.backward}({', '.join(arguments)}) -> ({', '.join('d' + g for g in self.gradients)})"


ATEN: dict[str, AtenConvention] = {c.variant: c for c in (
    AtenConvention(variant="layer_norm", forward="native_layer_norm",
                   forward_arguments=("x", "normalized_shape", "weight", "bias", "eps"),
                   saved=("mean", "rstd"), saved_names=("mean", "rstd"), backward="native_layer_norm_backward",
                   backward_arguments=("grad_out", "x", "normalized_shape", "mean", "rstd", "weight", "bias",
                                       "output_mask"),
                   gradients=("x", "weight", "bias"), saved_shape="leading"),
    AtenConvention(variant="group_norm", forward="native_group_norm",
                   forward_arguments=("x", "weight", "bias", "N", "C", "HxW", "group", "eps"),
                   saved=("mean", "rstd"), saved_names=("mean", "rstd"), backward="native_group_norm_backward",
                   backward_arguments=("grad_out", "x", "mean", "rstd", "weight", "N", "C", "HxW", "group",
                                       "output_mask"),
                   gradients=("x", "weight", "bias"), saved_shape="samples_groups"),
    AtenConvention(variant="batch_norm", forward="native_batch_norm",
                   forward_arguments=("x", "weight", "bias", "running_mean", "running_var", "training", "momentum",
                                      "eps"),
                   saved=("mean", "rstd"), saved_names=("save_mean", "save_invstd"),
                   backward="native_batch_norm_backward",
                   backward_arguments=("grad_out", "x", "weight", "running_mean", "running_var", "mean", "rstd",
                                       "train", "eps", "output_mask"),
                   gradients=("x", "weight", "bias"), saved_shape="channels"),
    AtenConvention(variant="rms_norm", forward="_fused_rms_norm",
                   forward_arguments=("x", "normalized_shape", "weight", "eps"),
                   saved=("rstd",), saved_names=("rstd",), backward="_fused_rms_norm_backward",
                   backward_arguments=("grad_out", "x", "normalized_shape", "rstd", "weight", "output_mask"),
                   gradients=("x", "weight"), saved_shape="leading"),
)}


def check_abi(abi: object, *, argument: str = "abi") -> str:
    require(abi in ABIS, argument, abi, f"one of {', '.join(ABIS)}")
    return abi  # type: ignore[return-value]


def aten(variant: str) -> AtenConvention | None:
    """The aten convention of ``variant``, or None where aten has none (instance_norm, the fused
    and adaptive norms)."""
    return ATEN.get(variant)


@dataclass(frozen=True, kw_only=True)
class FromOutput:
    """A backward from the output (Apex's memory-efficient form): it saves y instead of x and
    reconstructs xhat = (y - beta) / gamma, so it needs a weight and is ill-conditioned where the
    weight is small (y's rounding is divided by |gamma|; dweight = sum(g * xhat) shows it)."""

    variant: str
    function: str
    arguments: tuple[str, ...]  # from the vocabulary above, y the forward's output
    gradients: tuple[str, ...]

    def signature(self) -> str:
        return f"{self.function}({', '.join(self.arguments)}) -> ({', '.join('d' + g for g in self.gradients)})"


FROM_OUTPUT: dict[str, FromOutput] = {c.variant: c for c in (
    FromOutput(variant="layer_norm", function="layer_norm_backward_from_output",
               arguments=("grad_out", "y", "normalized_shape", "rstd", "weight", "bias"),
               gradients=("x", "weight", "bias")),
    FromOutput(variant="rms_norm", function="rms_norm_backward_from_output",
               arguments=("grad_out", "y", "normalized_shape", "rstd", "weight"), gradients=("x", "weight")),
)}
