"""Deliberately broken normalization layers: proof that the verification battery has teeth.

Every function here has the exact ``torch.nn.functional`` signature of its variant, is
written in plain torch ops (so torch autograd differentiates it; gradient bugs are a
``torch.autograd.Function`` with a hand-written backward), takes float64, float32,
float16 and bfloat16 inputs (16-bit inputs are computed in float32 and the result cast
back, as torch does) and non-contiguous inputs, and is *correct in every respect except
one bug*, so that a check that fails on it fails for the right reason. Each docstring
names the bug class and the kind of check that should catch it.

``BROKEN`` maps a name to ``(variant, function, expected_kind)``; ``expected_kind`` is
one of ``"forward"``, ``"backward"``, ``"running_stats"``, ``"precision"``.
``CORRECT`` maps a name to ``(variant, function)``: the bug-free controls built from the
same pieces, which must pass everything (a battery that flags them has false positives).

Run ``python -m tests.broken.impls`` for a self-test that prints, for every entry, the
distance to ``torch.nn.functional`` of the output, the gradients and the running
statistics, plus the precision scenarios that the precision bugs need.
"""
from __future__ import annotations

import math
from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch.autograd.function import once_differentiable

Tensor = torch.Tensor
_LOW_PRECISION = (torch.float16, torch.bfloat16)


# --- shared, correct pieces ---------------------------------------------------------------
def _compute_dtype(x: Tensor) -> torch.dtype:
    """float32 for 16-bit inputs (torch's opmath type), the input's own dtype otherwise."""
    return torch.float32 if x.dtype in _LOW_PRECISION else x.dtype


def _two_pass(xf: Tensor, dims: Sequence[int]) -> tuple[Tensor, Tensor]:
    """Mean and biased variance over ``dims`` (keepdim), two-pass, in ``xf``'s dtype."""
    mu = xf.mean(dims, keepdim=True)
    return mu, (xf - mu).square().mean(dims, keepdim=True)


def _centered_stats(x: Tensor, dims: Sequence[int]) -> tuple[Tensor, Tensor]:
    return _two_pass(x.to(_compute_dtype(x)), dims)


def _rms_stats(x: Tensor, dims: Sequence[int]) -> tuple[Tensor, Tensor]:
    xf = x.to(_compute_dtype(x))
    return xf.new_zeros(()), xf.square().mean(dims, keepdim=True)


def _rstd(var: Tensor, eps: float) -> Tensor:
    return torch.rsqrt(var + eps)


def _affine(xhat: Tensor, weight: Tensor | None, bias: Tensor | None) -> Tensor:
    if weight is not None:
        xhat = xhat * weight.to(xhat.dtype)
    if bias is not None:
        xhat = xhat + bias.to(xhat.dtype)
    return xhat


def _per_channel(p: Tensor | None, x: Tensor) -> Tensor | None:
    """A (C,) parameter or statistic shaped to broadcast against x of shape (N, C, *S)."""
    return None if p is None else p.reshape(1, -1, *([1] * (x.dim() - 2)))


def _sum_over(t: Tensor, dims: Sequence[int]) -> Tensor:
    return t.sum(dims) if dims else t  # torch's sum(()) would reduce over everything


def _trailing_dims(x: Tensor, normalized_shape, weight: Tensor | None, bias: Tensor | None) -> tuple[int, ...]:
    shape = (normalized_shape,) if isinstance(normalized_shape, int) else tuple(normalized_shape)
    if not shape or len(shape) > x.dim() or tuple(x.shape[x.dim() - len(shape):]) != shape:
        raise RuntimeError(f"Given normalized_shape={list(shape)}, expected input with shape "
                           f"[*, {', '.join(map(str, shape))}], but got input of size {list(x.shape)}")
    for name, p in (("weight", weight), ("bias", bias)):
        if p is not None and tuple(p.shape) != shape:
            raise RuntimeError(f"Expected {name} to be of same shape as normalized_shape, but got "
                               f"{name} of shape {list(p.shape)} and normalized_shape = {list(shape)}")
    return tuple(range(x.dim() - len(shape), x.dim()))


def _rms_eps(x: Tensor, eps: float | None) -> float:
    # torch uses the epsilon of its compute type: float32's for 16-bit inputs.
    return torch.finfo(_compute_dtype(x)).eps if eps is None else eps


def _layer_norm_from(x: Tensor, normalized_shape, weight: Tensor | None, bias: Tensor | None,
                     eps: float, *, stats: Callable = _centered_stats, rstd: Callable = _rstd) -> Tensor:
    """Layer normalization over the trailing ``normalized_shape``; ``stats(x, dims)`` gives
    (mean, var) in the compute dtype and ``rstd(var, eps)`` the inverse scale."""
    dims = _trailing_dims(x, normalized_shape, weight, bias)
    mu, var = stats(x, dims)
    xhat = (x.to(mu.dtype) - mu) * rstd(var, eps)
    return _affine(xhat, weight, bias).to(x.dtype)


def _check_groups(x: Tensor, num_groups: int) -> None:
    if x.dim() < 2 or x.shape[1] % num_groups:
        raise RuntimeError("Expected number of channels in input to be divisible by num_groups, "
                           f"but got input of shape {list(x.shape)} and num_groups={num_groups}")


def _verify_batch_size(x: Tensor) -> None:
    if x.shape[0] * math.prod(x.shape[2:]) == 1:
        raise ValueError(f"Expected more than 1 value per channel when training, got input size {x.size()}")


def _verify_spatial_size(x: Tensor) -> None:
    if math.prod(x.shape[2:]) == 1:
        raise ValueError(f"Expected more than 1 spatial element when training, got input size {x.size()}")


def _ema(running: Tensor, batch: Tensor, momentum: float) -> None:
    """torch's rule: running = (1 - momentum) * running + momentum * batch, in place."""
    running.mul_(1 - momentum).add_(batch.to(running.dtype), alpha=momentum)


def _update_running(running_mean: Tensor | None, running_var: Tensor | None, mean: Tensor,
                    var: Tensor, n: int, momentum: float) -> None:
    """Correct update: ``var`` is the biased (C,) variance of groups of ``n`` elements and
    running_var tracks the unbiased one."""
    if running_mean is not None:
        _ema(running_mean, mean, momentum)
    if running_var is not None:
        _ema(running_var, var * (n / (n - 1)), momentum)


def _batch_norm_from(x: Tensor, running_mean: Tensor | None, running_var: Tensor | None,
                     weight: Tensor | None, bias: Tensor | None, training: bool, momentum: float,
                     eps: float, *, update: Callable = _update_running) -> Tensor:
    xf = x.to(_compute_dtype(x))
    if training:
        _verify_batch_size(x)
        mu, var = _two_pass(xf, (0, *range(2, x.dim())))
        if running_mean is not None or running_var is not None:
            with torch.no_grad():
                update(running_mean, running_var, mu.flatten(), var.flatten(), xf.numel() // xf.shape[1], momentum)
    else:
        if running_mean is None or running_var is None:
            missing = "running_mean" if running_mean is None else "running_var"
            raise RuntimeError(f"{missing} must be defined in evaluation mode")
        mu, var = _per_channel(running_mean, x).to(xf.dtype), _per_channel(running_var, x).to(xf.dtype)
    xhat = (xf - mu) * _rstd(var, eps)
    return _affine(xhat, _per_channel(weight, x), _per_channel(bias, x)).to(x.dtype)


def _spatial_dims(x: Tensor) -> tuple[int, ...]:
    return tuple(range(2, x.dim()))


def _instance_norm_from(x: Tensor, running_mean: Tensor | None, running_var: Tensor | None,
                        weight: Tensor | None, bias: Tensor | None, use_input_stats: bool,
                        momentum: float, eps: float, *, stat_dims: Callable = _spatial_dims) -> Tensor:
    """Instance normalization; ``stat_dims(x)`` are the axes the statistics that normalize
    are taken over. The running statistics (when given) always track the per-instance ones,
    as torch does: the batch average of per-instance means and unbiased variances."""
    xf = x.to(_compute_dtype(x))
    if use_input_stats:
        _verify_spatial_size(x)
        if running_mean is not None or running_var is not None:
            with torch.no_grad():
                m, v = _two_pass(xf, _spatial_dims(x))
                _update_running(running_mean, running_var, m.mean(0).flatten(), v.mean(0).flatten(),
                                math.prod(x.shape[2:]), momentum)
        mu, var = _two_pass(xf, stat_dims(x))
    else:
        if running_mean is None or running_var is None:
            raise RuntimeError("Expected running_mean and running_var to be defined when use_input_stats is false")
        mu, var = _per_channel(running_mean, x).to(xf.dtype), _per_channel(running_var, x).to(xf.dtype)
    xhat = (xf - mu) * _rstd(var, eps)
    return _affine(xhat, _per_channel(weight, x), _per_channel(bias, x)).to(x.dtype)


class _LayerNormFunction(torch.autograd.Function):
    """Layer norm with the closed-form backward of DESIGN.md; ``bug`` (None for the correct
    one) switches in exactly one mistake of a hand-written backward kernel. Saves xhat and
    rstd, so it is once-differentiable: double backward raises instead of lying."""

    @staticmethod
    def forward(ctx, x, weight, bias, dims, eps, bug):
        mu, var = _centered_stats(x, dims)
        rstd = _rstd(var, eps)
        xhat = (x.to(mu.dtype) - mu) * rstd
        ctx.save_for_backward(xhat, rstd, weight)
        ctx.dims, ctx.bug, ctx.x_dtype = dims, bug, x.dtype
        ctx.bias_dtype = None if bias is None else bias.dtype
        return _affine(xhat, weight, bias).to(x.dtype)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out):
        xhat, rstd, weight = ctx.saved_tensors
        dims, bug = ctx.dims, ctx.bug
        lead = tuple(range(xhat.dim() - len(dims)))
        g = grad_out.to(xhat.dtype)
        h = g if weight is None or bug == "gamma_missing_in_dx" else g * weight.to(g.dtype)
        dx = h - h.mean(dims, keepdim=True)
        if bug != "no_mean_xhat_term":
            dx = dx - xhat * (h * xhat).mean(dims, keepdim=True)
        dx = (rstd * dx).to(ctx.x_dtype) if ctx.needs_input_grad[0] else None
        dweight = dbias = None
        if weight is not None and ctx.needs_input_grad[1]:
            gx = g * xhat
            dweight = (gx.mean(lead) if bug == "dgamma_mean" and lead else _sum_over(gx, lead)).to(weight.dtype)
        if ctx.needs_input_grad[2]:
            dbias = _sum_over(g, lead).to(ctx.bias_dtype)
        return dx, dweight, dbias, None, None, None


def _layer_norm_function(x, normalized_shape, weight, bias, eps, bug):
    dims = _trailing_dims(x, normalized_shape, weight, bias)
    return _LayerNormFunction.apply(x, weight, bias, dims, eps, bug)


# --- the correct controls ---------------------------------------------------------------
def layer_norm(x, normalized_shape, weight=None, bias=None, eps=1e-5):
    """Correct layer_norm (control), differentiated by torch autograd. x is cast to the
    compute dtype once, so that its gradient paths meet in float32, not in float16."""
    return _layer_norm_from(x.to(_compute_dtype(x)), normalized_shape, weight, bias, eps).to(x.dtype)


def layer_norm_function(x, normalized_shape, weight=None, bias=None, eps=1e-5):
    """Correct layer_norm (control) through the hand-written backward the backward bugs share."""
    return _layer_norm_function(x, normalized_shape, weight, bias, eps, None)


def rms_norm(x, normalized_shape, weight=None, eps=None):
    """Correct rms_norm (control); x cast to the compute dtype once, as in layer_norm."""
    return _layer_norm_from(x.to(_compute_dtype(x)), normalized_shape, weight, None, _rms_eps(x, eps),
                            stats=_rms_stats).to(x.dtype)


def group_norm(x, num_groups, weight=None, bias=None, eps=1e-5):
    """Correct group_norm (control): contiguous channel groups."""
    _check_groups(x, num_groups)
    xf = x.to(_compute_dtype(x))
    xg = xf.reshape(x.shape[0], num_groups, x.shape[1] // num_groups, *x.shape[2:])
    mu, var = _two_pass(xg, tuple(range(2, xg.dim())))
    xhat = ((xg - mu) * _rstd(var, eps)).reshape(x.shape)
    return _affine(xhat, _per_channel(weight, x), _per_channel(bias, x)).to(x.dtype)


def batch_norm(x, running_mean, running_var, weight=None, bias=None, training=False, momentum=0.1, eps=1e-5):
    """Correct batch_norm (control)."""
    return _batch_norm_from(x, running_mean, running_var, weight, bias, training, momentum, eps)


def instance_norm(x, running_mean=None, running_var=None, weight=None, bias=None, use_input_stats=True,
                  momentum=0.1, eps=1e-5):
    """Correct instance_norm (control)."""
    return _instance_norm_from(x, running_mean, running_var, weight, bias, use_input_stats, momentum, eps)


# --- the broken implementations ------------------------------------------------------------
def layer_norm_unbiased_var(x, normalized_shape, weight=None, bias=None, eps=1e-5):
    """Bug class: wrong variance estimator -- normalizes with the unbiased variance (N - 1).

    Caught by a forward check against any reference: the output is too small by
    sqrt((N - 1) / N) (about 1/(2N) relative), so by about 6e-2 at N = 8 and still ~1e-4 at
    N = 4096 -- enough for float64/float32 tolerances, hidden in bfloat16 for large N. The
    invariant mean(xhat^2) = var / (var + eps) also fails; N = 1 gives NaN instead of bias.
    """
    def stats(x, dims):
        xf = x.to(_compute_dtype(x))
        return xf.mean(dims, keepdim=True), xf.var(dims, keepdim=True, correction=1)
    return _layer_norm_from(x, normalized_shape, weight, bias, eps, stats=stats)


def layer_norm_eps_outside_sqrt(x, normalized_shape, weight=None, bias=None, eps=1e-5):
    """Bug class: eps in the wrong place -- divides by sqrt(var) + eps, not sqrt(var + eps).

    Caught by a forward check: relative error about eps/std, so ~1e-5 on standard-normal
    data (float64, and float32 with a tight tolerance) and O(1) on the "tiny magnitude near
    eps" value kind; a constant group (var = 0) gives a NaN gradient (d sqrt at 0).
    """
    return _layer_norm_from(x, normalized_shape, weight, bias, eps,
                            rstd=lambda var, eps: 1 / (var.sqrt() + eps))


def layer_norm_no_mean_xhat_term(x, normalized_shape, weight=None, bias=None, eps=1e-5):
    """Bug class: gradient through the batch statistics incomplete -- the hand-written
    backward drops the path through the variance: dx = r * (h - mean(h)).

    Forward, dweight and dbias are exact. Caught by a backward check (against autograd of
    the plain definition, finite differences, or the invariant sum(dx * xhat) =
    r * N * mean(h * xhat) * eps / (var + eps); sum(dx) = 0 still holds).
    """
    return _layer_norm_function(x, normalized_shape, weight, bias, eps, "no_mean_xhat_term")


def layer_norm_gamma_missing_in_dx(x, normalized_shape, weight=None, bias=None, eps=1e-5):
    """Bug class: affine parameter forgotten in the chain rule -- dx uses g instead of
    h = gamma * g.

    Forward, dweight and dbias are exact; dx is exact when weight is None or all ones, so
    only a backward check with gamma != 1 (the "gamma_mixed" family) catches it.
    """
    return _layer_norm_function(x, normalized_shape, weight, bias, eps, "gamma_missing_in_dx")


def layer_norm_one_pass_var(x, normalized_shape, weight=None, bias=None, eps=1e-5):
    """Bug class: catastrophic cancellation -- variance as E[x^2] - E[x]^2 (clamped at 0, as
    such kernels do) in the compute dtype.

    Mathematically exact, so standard-normal data passes in every dtype; caught by a
    precision check on the "large mean offset" family against a float64 truth: in float32
    with an offset of 1e4 x std, E[x^2] ~ 1e8 has an ulp of 8 and the variance is garbage
    (float64 needs offsets ~1e6 and up).
    """
    def stats(x, dims):
        xf = x.to(_compute_dtype(x))
        mu = xf.mean(dims, keepdim=True)
        return mu, (xf.square().mean(dims, keepdim=True) - mu.square()).clamp_min(0)
    return _layer_norm_from(x, normalized_shape, weight, bias, eps, stats=stats)


def group_norm_strided_groups(x, num_groups, weight=None, bias=None, eps=1e-5):
    """Bug class: wrong grouping -- channel c belongs to group c % G (strided) instead of
    c // (C/G) (contiguous). The affine parameters stay per channel and correct.

    Caught by a forward check whenever 1 < G < C (G = 1 and G = C coincide with the correct
    grouping, so a battery that only tests those, or cross-checks against
    layer_norm / instance_norm there, misses it).
    """
    _check_groups(x, num_groups)
    c = x.shape[1]
    order = torch.arange(c, device=x.device).reshape(c // num_groups, num_groups).t().flatten()
    pick = lambda p: None if p is None else p.index_select(0, order)  # noqa: E731
    y = group_norm(x.index_select(1, order), num_groups, pick(weight), pick(bias), eps)
    return y.index_select(1, torch.argsort(order))


def batch_norm_biased_running_var(x, running_mean, running_var, weight=None, bias=None, training=False,
                                  momentum=0.1, eps=1e-5):
    """Bug class: wrong variance estimator in the running statistics -- running_var is
    updated with the biased batch variance instead of the unbiased N/(N-1) one.

    Output, gradients and running_mean are exact. Caught only by a running-statistics check
    after a training step (relative error of the update term 1/N: visible for small batches).
    """
    def update(running_mean, running_var, mean, var, n, momentum):
        if running_mean is not None:
            _ema(running_mean, mean, momentum)
        if running_var is not None:
            _ema(running_var, var, momentum)
    return _batch_norm_from(x, running_mean, running_var, weight, bias, training, momentum, eps, update=update)


def rms_norm_centered(x, normalized_shape, weight=None, eps=None):
    """Bug class: wrong variant -- subtracts the mean before normalizing, i.e. is layer_norm
    without bias, which is not RMSNorm.

    Caught by a forward check on any data whose groups do not have zero mean (standard
    normal with small groups suffices); the cross-variant identity rms_norm = layer_norm on
    zero-mean input still holds, so that invariant alone does not catch it.
    """
    return _layer_norm_from(x, normalized_shape, weight, None, _rms_eps(x, eps))


def instance_norm_batch_stats(x, running_mean=None, running_var=None, weight=None, bias=None,
                              use_input_stats=True, momentum=0.1, eps=1e-5):
    """Bug class: wrong reduction axes -- normalizes with batch statistics (over N and S per
    channel, i.e. batch_norm) instead of per-instance ones. The running statistics are still
    updated correctly from the per-instance statistics; use_input_stats=False is exact.

    Caught by a forward check with N > 1 (N = 1 coincides), and by the invariant that one
    sample's output does not depend on the other samples.
    """
    return _instance_norm_from(x, running_mean, running_var, weight, bias, use_input_stats, momentum, eps,
                               stat_dims=lambda x: (0, *range(2, x.dim())))


def layer_norm_fp16_accumulation(x, normalized_shape, weight=None, bias=None, eps=1e-5):
    """Bug class: low-precision accumulator -- for 16-bit inputs the mean and the variance
    are accumulated element by element in the input's own 16-bit dtype (sum, then divide),
    as a naive kernel with a ``scalar_t`` accumulator does; normalization and affine are in
    float32. float32/float64 inputs are exact (computed like the correct one).

    Caught by a precision check of 16-bit inputs against a float64 truth: sums overflow
    float16 (65504) on the "huge magnitude" / "large mean offset" families (inf/NaN), and
    for long rows the sum of squares stagnates (at 2048 in float16 adding ~1 is lost), so
    the variance is far too small. Short standard-normal rows pass.
    """
    def stats(x, dims):
        if _compute_dtype(x) == x.dtype:
            return _centered_stats(x, dims)
        rows = x.flatten(dims[0])  # (..., N) in the 16-bit dtype

        def accumulate(values):
            acc = torch.zeros_like(values[..., 0])
            for k in range(values.shape[-1]):
                acc = acc + values[..., k]  # rounded to 16 bits after every addition
            return acc / values.shape[-1]
        mu = accumulate(rows)
        var = accumulate((rows - mu[..., None]).square())
        keep = (*x.shape[:dims[0]], *[1] * len(dims))
        return mu.reshape(keep).float(), var.reshape(keep).float()
    return _layer_norm_from(x, normalized_shape, weight, bias, eps, stats=stats)


def layer_norm_dgamma_wrong_axes(x, normalized_shape, weight=None, bias=None, eps=1e-5):
    """Bug class: wrong reduction in a parameter gradient -- dweight averages g * xhat over
    the leading (non-affine) axes instead of summing it.

    Forward, dx and dbias are exact; dweight is too small by the number of leading rows M,
    so exact when M = 1. Caught by a backward check of dweight with M > 1.
    """
    return _layer_norm_function(x, normalized_shape, weight, bias, eps, "dgamma_mean")


def batch_norm_momentum_inverted(x, running_mean, running_var, weight=None, bias=None, training=False,
                                 momentum=0.1, eps=1e-5):
    """Bug class: convention mix-up (flax/keras momentum read as torch's) -- running =
    momentum * running + (1 - momentum) * batch.

    Output and gradients are exact (training uses batch statistics; eval uses the running
    ones as given). Caught only by a running-statistics check after a training step with
    momentum != 0.5 (0.5 coincides).
    """
    def update(running_mean, running_var, mean, var, n, momentum):
        _update_running(running_mean, running_var, mean, var, n, 1 - momentum)
    return _batch_norm_from(x, running_mean, running_var, weight, bias, training, momentum, eps, update=update)


BROKEN: dict[str, tuple[str, Callable, str]] = {
    "layer_norm_unbiased_var": ("layer_norm", layer_norm_unbiased_var, "forward"),
    "layer_norm_eps_outside_sqrt": ("layer_norm", layer_norm_eps_outside_sqrt, "forward"),
    "layer_norm_no_mean_xhat_term": ("layer_norm", layer_norm_no_mean_xhat_term, "backward"),
    "layer_norm_gamma_missing_in_dx": ("layer_norm", layer_norm_gamma_missing_in_dx, "backward"),
    "layer_norm_one_pass_var": ("layer_norm", layer_norm_one_pass_var, "precision"),
    "group_norm_strided_groups": ("group_norm", group_norm_strided_groups, "forward"),
    "batch_norm_biased_running_var": ("batch_norm", batch_norm_biased_running_var, "running_stats"),
    "rms_norm_centered": ("rms_norm", rms_norm_centered, "forward"),
    "instance_norm_batch_stats": ("instance_norm", instance_norm_batch_stats, "forward"),
    "layer_norm_fp16_accumulation": ("layer_norm", layer_norm_fp16_accumulation, "precision"),
    "layer_norm_dgamma_wrong_axes": ("layer_norm", layer_norm_dgamma_wrong_axes, "backward"),
    "batch_norm_momentum_inverted": ("batch_norm", batch_norm_momentum_inverted, "running_stats"),
}

CORRECT: dict[str, tuple[str, Callable]] = {
    "layer_norm": ("layer_norm", layer_norm),
    "layer_norm_function": ("layer_norm", layer_norm_function),
    "rms_norm": ("rms_norm", rms_norm),
    "group_norm": ("group_norm", group_norm),
    "batch_norm": ("batch_norm", batch_norm),
    "instance_norm": ("instance_norm", instance_norm),
}


# --- self-test ------------------------------------------------------------------------------
def _example(variant: str, dtype: torch.dtype = torch.float64, *, shape: tuple[int, ...] | None = None,
             offset: float = 0.0, seed: int = 0, training: bool = True) -> dict:
    """A call of ``variant`` on a non-contiguous input (values rounded to ``dtype``), weight
    and bias away from 1 and 0, tracked running statistics where the variant has them."""
    gen = torch.Generator().manual_seed(seed)
    randn = lambda *s: torch.randn(*s, generator=gen, dtype=torch.float64)  # noqa: E731
    default = {"layer_norm": (4, 3, 8), "rms_norm": (4, 3, 8), "group_norm": (2, 6, 5)}.get(variant, (4, 3, 5))
    shape = shape or default
    x = randn(*reversed(shape)).permute(*reversed(range(len(shape)))) + offset  # non-contiguous view
    params = shape[-1:] if variant in ("layer_norm", "rms_norm") else shape[1:2]
    ex = {"x": x.to(dtype), "weight": (1 + 0.5 * randn(*params)).to(dtype), "grad_out": randn(*shape).to(dtype)}
    if variant != "rms_norm":
        ex["bias"] = randn(*params).to(dtype)
    if variant in ("batch_norm", "instance_norm"):
        ex["running_mean"] = randn(*params).to(dtype)
        ex["running_var"] = (0.5 + randn(*params).abs()).to(dtype)
    if variant in ("layer_norm", "rms_norm"):
        ex["args"] = (params,)
    elif variant == "group_norm":
        ex["args"] = (3,)
    ex["options"] = ({"training": training, "momentum": 0.1} if variant == "batch_norm"
                     else {"use_input_stats": True, "momentum": 0.1} if variant == "instance_norm" else {})
    return ex


def _run(fn: Callable, variant: str, ex: dict) -> dict[str, Tensor]:
    """Forward, backward (dx, dweight, dbias) and the running statistics after the call."""
    x = ex["x"].detach().clone(memory_format=torch.preserve_format).requires_grad_()
    weight = ex["weight"].clone().requires_grad_()
    bias = ex["bias"].clone().requires_grad_() if "bias" in ex else None
    out: dict[str, Tensor] = {}
    if variant in ("batch_norm", "instance_norm"):
        rm, rv = ex["running_mean"].clone(), ex["running_var"].clone()
        y = fn(x, rm, rv, weight, bias, **ex["options"])
        out.update(running_mean=rm, running_var=rv)
    elif variant == "rms_norm":
        y = fn(x, *ex["args"], weight)
    else:
        y = fn(x, *ex["args"], weight, bias)
    inputs = [t for t in (x, weight, bias) if t is not None]
    grads = torch.autograd.grad(y, inputs, ex["grad_out"])
    out.update(y=y, **dict(zip(("dx", "dweight", "dbias"), grads)))
    return out


def _diff(a: dict[str, Tensor], b: dict[str, Tensor], keys: Sequence[str]) -> list[float]:
    return [float((a[k].detach().double() - b[k].detach().double()).abs().max()) if k in a else float("nan")
            for k in keys]


_NATIVE = {"layer_norm": F.layer_norm, "rms_norm": F.rms_norm, "group_norm": F.group_norm,
           "batch_norm": F.batch_norm, "instance_norm": F.instance_norm}
_KEYS = ("y", "dx", "dweight", "dbias", "running_mean", "running_var")


def _table(title: str, rows: list[tuple[str, str, list[float]]]) -> None:
    print(f"\n{title}")
    print(f"{'name':32s} {'kind':13s}" + "".join(f"{k:>13s}" for k in _KEYS))
    for name, kind, errs in rows:
        print(f"{name:32s} {kind:13s}" + "".join(f"{'-' if math.isnan(e) else f'{e:.2e}':>13s}" for e in errs))


def _self_test() -> None:
    torch.set_printoptions(precision=3)
    rows = []
    for name, (variant, fn, kind) in BROKEN.items():
        ex = _example(variant)
        rows.append((name, kind, _diff(_run(fn, variant, ex), _run(_NATIVE[variant], variant, ex), _KEYS)))
    _table("max |broken - torch.nn.functional|, float64, non-contiguous input, gamma != 1 ('-': not applicable)",
           rows)

    rows = []
    for name, (variant, fn) in CORRECT.items():
        for training in ((True, False) if variant == "batch_norm" else (True,)):
            ex = _example(variant, training=training)
            label = name + ("" if training else " (eval)") if variant == "batch_norm" else name
            rows.append((label, "control", _diff(_run(fn, variant, ex), _run(_NATIVE[variant], variant, ex), _KEYS)))
    _table("max |control - torch.nn.functional|, float64 (the same pieces without the bug)", rows)

    print("\nprecision scenarios: max |y - float64 truth| (truth: torch.nn.functional in float64 on the "
          "same rounded values)")
    print(f"{'name':32s} {'scenario':40s} {'broken':>10s} {'native':>10s}")
    scenarios = [
        ("layer_norm_one_pass_var", torch.float32, (4, 64), 0.0, "float32 standard normal"),
        ("layer_norm_one_pass_var", torch.float32, (4, 64), 1e4, "float32 mean offset 1e4"),
        ("layer_norm_one_pass_var", torch.float64, (4, 64), 1e4, "float64 mean offset 1e4"),
        ("layer_norm_one_pass_var", torch.float64, (4, 64), 1e7, "float64 mean offset 1e7"),
        ("layer_norm_fp16_accumulation", torch.float16, (4, 64), 0.0, "float16 standard normal, N=64"),
        ("layer_norm_fp16_accumulation", torch.float16, (2, 4096), 0.0, "float16 standard normal, N=4096"),
        ("layer_norm_fp16_accumulation", torch.float16, (4, 64), 2e3, "float16 mean offset 2e3 (sum overflow)"),
        ("layer_norm_fp16_accumulation", torch.bfloat16, (2, 4096), 0.0, "bfloat16 standard normal, N=4096"),
        ("layer_norm_fp16_accumulation", torch.float32, (4, 64), 1e3, "float32 mean offset 1e3"),
    ]
    for name, dtype, shape, offset, label in scenarios:
        variant, fn, _ = BROKEN[name]
        ex = _example(variant, dtype, shape=shape, offset=offset)
        truth = _example(variant, dtype, shape=shape, offset=offset)
        truth.update({k: v.double() for k, v in truth.items() if isinstance(v, Tensor)})
        expected = _run(_NATIVE[variant], variant, truth)["y"]
        errs = [_diff(_run(f, variant, ex), {"y": expected}, ["y"])[0] for f in (fn, _NATIVE[variant])]
        print(f"{name:32s} {label:40s} {errs[0]:10.2e} {errs[1]:10.2e}")

    # every implementation runs in every dtype on non-contiguous input and keeps the dtypes
    count = 0
    for name, (variant, fn, *_) in {**BROKEN, **CORRECT}.items():
        for dtype in (torch.float64, torch.float32, torch.float16, torch.bfloat16):
            ex = _example(variant, dtype)
            assert not ex["x"].is_contiguous()
            out = _run(fn, variant, ex)
            for key, value in out.items():
                assert value.dtype == dtype, (name, dtype, key, value.dtype)
            count += 1
    print(f"\nran forward + backward of all {len(BROKEN)} broken and {len(CORRECT)} control implementations in "
          f"float64/float32/float16/bfloat16 on non-contiguous inputs ({count} runs): output, gradient and "
          "running-stat dtypes match the input's")


if __name__ == "__main__":
    _self_test()
