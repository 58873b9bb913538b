"""The kernel authors' variants (weight offset, fused residual add, adaptive norms) in both references,
against compositions of torch's native ops in float64, and their bad inputs."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from normspec.derive.errors import NormSpecError
from normspec.reference import numpy_ref, torch_ref

TOLERANCE = 1e-10
OFFSETS = (0.0, 1.0, 0.375)
SHAPES = ((4, 16), (2, 3, 8), (2, 3, 5, 7))


def _tensors(shape, *names, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return [torch.randn(shape, dtype=torch.float64, generator=generator).requires_grad_() for _ in names]


def _max_error(ours, theirs):
    return max(float((a - b).detach().abs().max()) for a, b in zip(ours, theirs))


def _vjp(outputs, upstream, inputs):
    loss = sum((o * g).sum() for o, g in zip(outputs, upstream))
    return torch.autograd.grad(loss, inputs)


def _native_fused(kind, x, residual, weight, bias, offset):
    s = x + residual
    d = x.shape[-1:]
    if kind == "layer_norm":
        return F.layer_norm(s, d, weight + offset, bias, 1e-5), s
    return F.rms_norm(s, d, weight + offset), s


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("offset", OFFSETS)
@pytest.mark.parametrize("kind", ("layer_norm", "rms_norm"))
def test_weight_offset_is_the_weight_plus_offset(kind, offset, shape):
    (x,) = _tensors(shape, "x")
    weight, bias = (t.reshape(-1)[: shape[-1]].detach().clone().requires_grad_() for t in _tensors(shape, "w", "b", seed=1))
    (grad_out,) = _tensors(shape, "g", seed=2)
    extra = (bias,) if kind == "layer_norm" else ()
    ours = getattr(torch_ref, kind)(x, shape[-1:], weight, *extra, weight_offset=offset)
    native = getattr(F, kind)(x, shape[-1:], weight + offset, *extra)
    inputs = [x, weight, *extra]
    expected = _vjp([native], [grad_out], inputs)
    assert _max_error([ours], [native]) < TOLERANCE
    assert _max_error(_vjp([ours], [grad_out], inputs), expected) < TOLERANCE
    numpy_grads = getattr(numpy_ref, f"{kind}_backward")(
        grad_out.detach().numpy(), x.detach().numpy(), shape[-1:], weight.detach().numpy(),
        *(b.detach().numpy() for b in extra), weight_offset=offset)
    numpy_grads = [g for g in numpy_grads if g is not None]
    assert max(float(np.abs(a - b.numpy()).max()) for a, b in zip(numpy_grads, expected)) < TOLERANCE


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("offset", OFFSETS)
@pytest.mark.parametrize("kind", ("layer_norm", "rms_norm"))
def test_fused_add_is_the_norm_of_the_sum(kind, offset, shape):
    x, residual, grad_out, grad_residual_out = _tensors(shape, "x", "r", "g", "gs")
    weight, bias = (t.reshape(-1)[: shape[-1]].detach().clone().requires_grad_() for t in _tensors(shape, "w", "b", seed=1))
    extra = (bias,) if kind == "layer_norm" else ()
    fused = getattr(torch_ref, f"fused_add_{kind}")
    ours = fused(x, residual, shape[-1:], weight, *extra, weight_offset=offset)
    native = _native_fused(kind, x, residual, weight, bias, offset)
    inputs = [x, residual, weight, *extra]
    upstream = [grad_out, grad_residual_out]
    expected = _vjp(native, upstream, inputs)
    assert _max_error(ours, native) < TOLERANCE
    assert _max_error(_vjp(ours, upstream, inputs), expected) < TOLERANCE
    numpy_fused = getattr(numpy_ref, f"fused_add_{kind}")
    arrays = [t.detach().numpy() for t in (x, residual)]
    params = [t.detach().numpy() for t in (weight, *extra)]
    y, s = numpy_fused(*arrays, shape[-1:], *params, weight_offset=offset)
    assert max(float(np.abs(a - b.detach().numpy()).max()) for a, b in zip((y, s), native)) < TOLERANCE
    grads = getattr(numpy_ref, f"fused_add_{kind}_backward")(
        grad_out.detach().numpy(), grad_residual_out.detach().numpy(), *arrays, shape[-1:], *params, weight_offset=offset)
    assert len(grads) == len(inputs)
    assert max(float(np.abs(a - b.numpy()).max()) for a, b in zip(grads, expected)) < TOLERANCE


@pytest.mark.parametrize("shape", SHAPES[1:])
@pytest.mark.parametrize("kind", ("layer_norm", "rms_norm"))
def test_adaptive_norm_is_the_plain_norm_modulated_per_sample(kind, shape):
    x, grad_out = _tensors(shape, "x", "g")
    params = (shape[0], shape[-1])
    scale, shift = (t.reshape(-1)[: params[0] * params[1]].reshape(params).detach().clone().requires_grad_()
                    for t in _tensors(shape, "scale", "shift", seed=1))
    middle = (slice(None),) + (None,) * (len(shape) - 2)
    extra = (shift,) if kind == "layer_norm" else ()
    ours = getattr(torch_ref, f"adaptive_{kind}")(x, shape[-1:], scale, *extra)
    native = getattr(F, kind)(x, shape[-1:], eps=1e-6) * (1 + scale[middle]) + (shift[middle] if extra else 0)
    inputs = [x, scale, *extra]
    expected = _vjp([native], [grad_out], inputs)
    assert _max_error([ours], [native]) < TOLERANCE
    assert _max_error(_vjp([ours], [grad_out], inputs), expected) < TOLERANCE
    grads = getattr(numpy_ref, f"adaptive_{kind}_backward")(
        grad_out.detach().numpy(), x.detach().numpy(), shape[-1:], *(t.detach().numpy() for t in (scale, *extra)))
    assert max(float(np.abs(a - b.numpy()).max()) for a, b in zip(grads, expected)) < TOLERANCE


def test_the_torch_references_are_twice_differentiable():
    x, residual = _tensors((3, 6), "x", "r")
    weight = torch.randn(6, dtype=torch.float64).requires_grad_()
    assert torch.autograd.gradgradcheck(
        lambda a, b, w: torch_ref.fused_add_rms_norm(a, b, (6,), w, weight_offset=1.0), (x, residual, weight))
    scale, shift = (torch.randn(3, 6, dtype=torch.float64).requires_grad_() for _ in range(2))
    x3 = torch.randn(3, 2, 6, dtype=torch.float64).requires_grad_()
    assert torch.autograd.gradgradcheck(lambda a, s, t: torch_ref.adaptive_layer_norm(a, (6,), s, t), (x3, scale, shift))


@pytest.mark.parametrize("module", (numpy_ref, torch_ref), ids=("numpy_ref", "torch_ref"))
@pytest.mark.parametrize("call, expected", [
    (lambda m, a: m.layer_norm(a(4, 8), (8,), None, None, weight_offset=1.0), "weight_offset=1.0: expected 0.0 when"),
    (lambda m, a: m.rms_norm(a(4, 8), (8,), a(8), weight_offset=float("nan")), "weight_offset=nan: expected a finite"),
    (lambda m, a: m.rms_norm(a(4, 8), (8,), a(8), weight_offset="1"), "weight_offset='1': expected a real number"),
    (lambda m, a: m.fused_add_rms_norm(a(4, 8), a(4, 7), (8,)), "residual.shape=(4, 7): expected x.shape=(4, 8)"),
    (lambda m, a: m.fused_add_layer_norm(a(4, 8), None, (8,)), "residual="),
    (lambda m, a: m.adaptive_layer_norm(a(2, 3, 8), (8,), a(3, 8), a(2, 8)), "scale.shape=(3, 8): expected (2, 8)"),
    (lambda m, a: m.adaptive_layer_norm(a(2, 3, 8), (8,), a(2, 8), None), "shift=None: expected an array"),
    (lambda m, a: m.adaptive_rms_norm(a(2, 8), (2, 8), a(2, 8)), "normalized_shape=(2, 8): expected trailing"),
    (lambda m, a: m.layer_norm(a(4, 8), (8,), weight=None, bias=None, eps=1e-5, offset=1.0), "unexpected keyword"),
    (lambda m, a: m.fused_add_rms_norm_backward(grad_out=a(4, 8), x=a(4, 8), residual=a(4, 8), normalized_shape=(8,)),
     "grad_residual_out=None: expected an array: fused_add_rms_norm_backward takes grad_out, grad_residual_out"),
])
def test_bad_input_is_named(module, call, expected):
    def array(*shape):
        value = np.random.default_rng(0).standard_normal(shape)
        return value if module is numpy_ref else torch.from_numpy(value)
    with pytest.raises(NormSpecError) as info:
        call(module, array)
    assert expected in str(info.value), str(info.value)
