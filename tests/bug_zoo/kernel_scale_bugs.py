"""Kernel-scale bugs: layer_norms written the way a blocked Triton or CUDA kernel is (a block of
BLOCK elements along the hidden axis, or a block of rows per program, vectorised within a block),
each wrong only where the kernel tier of ``normspec verify --scale kernel`` looks: more than one
block of rows or of hidden elements, a hidden size that is no multiple of the block, a strided view
whose row stride is not the hidden size, many elements, more than one partial sum to combine.

Each is a real bug class, reported in the project its docstring names, and correct (exact up to
its float rounding) on every input its bug does not reach -- in particular on the small battery's
shapes for all but the tail-read bug, whose hidden sizes (1025 ... 4097) the small coverage grid
sweeps too. ``__all__`` lists the entries' ``--impl`` functions; :func:`layer_norm_kernel` is the
correct kernel they all are built from (outside ``__all__``).

Every function has ``torch.nn.functional.layer_norm``'s signature, computes 16-bit inputs in
float32 and casts back, takes any memory layout (copying what its bug does not concern), and
returns fresh tensors (never a view of an input). The hand-written backwards
(:class:`_RowKernel`) are once-differentiable.
"""
from __future__ import annotations

import math
import os

import torch
from torch.autograd.function import once_differentiable

from tests.broken.impls import _affine, _compute_dtype, _rstd, _trailing_dims, _two_pass

__all__ = ["layer_norm_floor_sized_dweight_buffer", "layer_norm_unmasked_tail_block",
           "layer_norm_row_stride_assumed_hidden", "layer_norm_narrow_row_offset",
           "layer_norm_racy_dweight_accumulation"]

BLOCK = 1024  # elements along the hidden axis a program loads at once (BLOCK_N)
BLOCK_ROWS = 256  # rows per program of the floor/ceil bug's weight-gradient reduction (BLOCK_SIZE_BATCH)
ROW_BLOCK_ELEMENTS = 4096  # the racy bug's programs reduce this many elements' worth of rows each
WRAP = 2**19  # where the narrow offset wraps (the real int32 offset wraps at 2^31; see the docstring)


def _hidden(x, normalized_shape, weight, bias) -> int:
    dims = _trailing_dims(x, normalized_shape, weight, bias)
    return math.prod(x.shape[dims[0]:])


def _normalize_rows(xf: torch.Tensor, weight, bias, eps: float) -> torch.Tensor:
    """Correct layer norm of each row of ``xf`` (rows, hidden), in ``xf``'s dtype, affine applied."""
    mu, var = _two_pass(xf, (1,))
    return _affine((xf - mu) * _rstd(var, eps), _flat(weight, xf), _flat(bias, xf))


def _flat(p, like: torch.Tensor):
    return None if p is None else p.reshape(-1).to(like.dtype)


def _programs(rows: int, block_rows: int) -> int:
    return -(-rows // block_rows)  # cdiv: the launch grid


def _row_block_partials(t: torch.Tensor, block_rows: int) -> torch.Tensor:
    """Each program's partial column sums of its block of ``block_rows`` rows of ``t`` (rows, hidden):
    (programs, hidden), the last block zero-padded (its loads masked)."""
    rows, hidden = t.shape
    programs = _programs(rows, block_rows)
    padded = torch.cat([t, t.new_zeros(programs * block_rows - rows, hidden)]) if programs * block_rows > rows else t
    return padded.reshape(programs, block_rows, hidden).sum(1)


# --- the correct kernel, with a pluggable reduction of the parameter gradients -------------------------

def _column_sums(t: torch.Tensor) -> torch.Tensor:
    """Correct: the parameter gradient's column sums over every row."""
    return t.sum(0)


class _RowKernel(torch.autograd.Function):
    """A row-wise layer norm on x seen as (rows, hidden) with a hand-written backward:
    dx = rstd * (h - mean(h) - xhat * mean(h * xhat)), h = weight * g, and dweight, dbias the column
    sums of g * xhat and g, reduced by ``reduce(t)`` -- where a kernel combines its per-program
    partials, and where the bugs below go wrong."""

    @staticmethod
    def forward(ctx, x, weight, bias, hidden, eps, reduce):
        xf = x.to(_compute_dtype(x)).reshape(-1, hidden)
        mu, var = _two_pass(xf, (1,))
        rstd = _rstd(var, eps)
        xhat = (xf - mu) * rstd
        ctx.save_for_backward(xhat, rstd, weight)
        ctx.reduce, ctx.x_shape, ctx.x_dtype = reduce, x.shape, x.dtype
        ctx.bias = None if bias is None else (bias.shape, bias.dtype)
        return _affine(xhat, _flat(weight, xhat), _flat(bias, xhat)).reshape(x.shape).to(x.dtype)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out):
        xhat, rstd, weight = ctx.saved_tensors
        g = grad_out.to(xhat.dtype).reshape(xhat.shape)
        h = g if weight is None else g * _flat(weight, g)
        dx = dweight = dbias = None
        if ctx.needs_input_grad[0]:
            dx = rstd * (h - h.mean(1, keepdim=True) - xhat * (h * xhat).mean(1, keepdim=True))
            dx = dx.reshape(ctx.x_shape).to(ctx.x_dtype)
        if weight is not None and ctx.needs_input_grad[1]:
            dweight = ctx.reduce(g * xhat).reshape(weight.shape).to(weight.dtype)
        if ctx.bias is not None and ctx.needs_input_grad[2]:
            shape, dtype = ctx.bias
            dbias = ctx.reduce(g).reshape(shape).to(dtype)
        return dx, dweight, dbias, None, None, None


def layer_norm_kernel(x, normalized_shape, weight=None, bias=None, eps=1e-5):
    """Correct: the row kernel the entries are built from (column sums of every row for the
    parameter gradients)."""
    return _RowKernel.apply(x, weight, bias, _hidden(x, normalized_shape, weight, bias), eps, _column_sums)


# --- 1. the partial buffer sized by floor, the grid by ceil --------------------------------------------

def _floor_sized_buffer(t: torch.Tensor) -> torch.Tensor:
    """The per-program partials, cdiv(rows, BLOCK_ROWS) programs, stored into a buffer of
    rows // BLOCK_ROWS rows: the last program's store lands past the buffer, and the sum over the
    buffer never sees it. A batch smaller than one block is one program (a buffer of one row)."""
    rows = t.shape[0]
    if rows < BLOCK_ROWS:
        return t.sum(0)
    partials = _row_block_partials(t, BLOCK_ROWS)
    buffer = rows // BLOCK_ROWS  # should be cdiv(rows, BLOCK_ROWS), the number of programs
    return partials[:buffer].sum(0)


def layer_norm_floor_sized_dweight_buffer(x, normalized_shape, weight=None, bias=None, eps=1e-5):
    """Bug class: the weight-gradient partial buffer sized by floor, the grid by ceil (attorch #18:
    LayerNorm and RMSNorm allocate ``batch_dim // BLOCK_SIZE_BATCH`` partial rows but launch
    ``cdiv(batch_dim, BLOCK_SIZE_BATCH)`` programs; the last program writes past the buffer, and the
    rows of the last block of rows are missing from dweight and dbias).

    The backward reduces dweight and dbias in blocks of BLOCK_ROWS = 256 rows, one partial row per
    program (attorch takes blocks of rows only for narrow rows, feat_dim < 64, which the kernel tier
    does not draw; here every row width takes them); with a row count that is no multiple of 256 (and at least 256 rows) the last
    ``rows % 256`` rows are dropped from both. dx and the forward are exact, and so is everything
    with fewer than 256 rows (one program) or a multiple of 256 rows -- the small battery's shapes
    (at most 130 rows of more than one element). Caught by ``backward`` at kernel scale, on the
    1000-row case of the grid (1000 = 3 * 256 + 232: 232 rows dropped).
    """
    return _RowKernel.apply(x, weight, bias, _hidden(x, normalized_shape, weight, bias), eps, _floor_sized_buffer)


# --- 2. the tail block loaded without its mask ----------------------------------------------------------

def layer_norm_unmasked_tail_block(x, normalized_shape, weight=None, bias=None, eps=1e-5):
    """Bug class: the tail block of a row read past the row (an unmasked load: the statistics loop
    over blocks of BLOCK = 1024 loads its last, partial block without ``mask=cols < N``). The tail
    block of blocked norm kernels is where such bugs live (mojo_opset #347, Liger-Kernel #518,
    triton #9838: the tail's masked-off lanes counted into the variance); here the load has no mask
    at all, so the lanes past the row read real data.

    A row that fits in one block takes the masked one-block path and is exact; a longer row is
    reduced block by block, and the last block reads the BLOCK - N % BLOCK elements that follow the
    row in memory -- the next row's first elements (the emulation reads a flattened contiguous copy
    at the row's offset; past the end of the storage it reads zeros) -- into the mean and the
    variance. The stores are masked: y has the right shape and only the statistics are wrong.
    Exact when N <= 1024 or N % 1024 == 0. Caught by ``forward`` at kernel scale at hidden 1025
    (3 rows); the small coverage grid's size sweep (1025 ... 4097) reaches it too.
    """
    hidden = _hidden(x, normalized_shape, weight, bias)
    xf = x.to(_compute_dtype(x)).reshape(-1, hidden)
    if hidden <= BLOCK or hidden % BLOCK == 0:
        y = _normalize_rows(xf, weight, bias, eps)
        return y.reshape(x.shape).to(x.dtype)
    rows, loaded = xf.shape[0], _programs(hidden, BLOCK) * BLOCK
    flat = torch.cat([xf.reshape(-1), xf.new_zeros(loaded - hidden)])  # the storage, then zeros past its end
    offsets = torch.arange(rows, device=x.device)[:, None] * hidden + torch.arange(loaded, device=x.device)
    blocks = flat[offsets]  # (rows, loaded): the row, then the next row's first loaded - hidden elements
    mu = blocks.sum(1, keepdim=True) / hidden
    var = (blocks - mu).square().sum(1, keepdim=True) / hidden
    y = _affine((xf - mu) * _rstd(var, eps), _flat(weight, xf), _flat(bias, xf))
    return y.reshape(x.shape).to(x.dtype)


# --- 3. the row stride assumed to be the hidden size ----------------------------------------------------

def layer_norm_row_stride_assumed_hidden(x, normalized_shape, weight=None, bias=None, eps=1e-5):
    """Bug class: the row stride assumed equal to the hidden size (LightLLM #1467, vLLM #28103: the
    wrapper checks only ``x.stride(-1) == 1`` and launches the kernel with ``row * N`` as the row's
    offset, so a last-dim-contiguous view whose rows are further apart is read at the wrong places).

    The normalized axes must be contiguous (a stride that is not is copied away, as the wrapper's
    ``.contiguous()`` fallback does); the rows are then read through
    ``x.as_strided((rows, N), (N, 1), x.storage_offset())``. Exact for contiguous x, for any x the
    fallback copies (the small battery's strided layout, channels_last with C > 1); wrong for rows
    padded to a wider stride, a narrow of a wider last axis (q of a fused qkv) and leading axes
    transposed -- the kernel tier's views. Caught by ``forward`` at kernel scale, on the grid's first
    view case (65 rows of 4097, padded_rows).
    """
    hidden = _hidden(x, normalized_shape, weight, bias)
    k = x.dim() - _trailing_dims(x, normalized_shape, weight, bias)[0]
    dense = tuple(math.prod(x.shape[x.dim() - i:]) for i in range(k - 1, -1, -1))
    if tuple(x.stride()[x.dim() - k:]) != dense:
        x = x.contiguous()
    rows = x.numel() // hidden
    seen = x.as_strided((rows, hidden), (hidden, 1), x.storage_offset())
    y = _normalize_rows(seen.to(_compute_dtype(x)), weight, bias, eps)
    return y.reshape(x.shape).to(x.dtype)


# --- 4. the row offset in a narrow integer ---------------------------------------------------------------

def layer_norm_narrow_row_offset(x, normalized_shape, weight=None, bias=None, eps=1e-5):
    """Bug class: the row offset ``row * N`` computed in a 32-bit integer that wraps (the int32
    offset overflow of norm kernels past 2^31 elements: Liger-Kernel #1483, ``tl.program_id(0)``
    left int32 before multiplying by the row stride; FlashInfer #3391, ``row * H`` in Int32 in the
    CuTe DSL RMSNorm).

    Scaled down honestly: the real bug needs 2^31 elements, which no test here allocates, so this
    kernel's row offset wraps at WRAP = 2^19 elements instead (a 20-bit signed offset). The kernel
    tier's cases stop short of 2^20 elements (its largest is 127 x 8193 = 1,040,511), so a wrap at
    2^20 would go unseen there; 2^19 is the largest power of two its grid passes (1000 x 1023).
    Rows whose offset passes 2^19 read and write the elements at ``offset - 2^19`` -- earlier rows,
    overwritten with the normalized window -- and their own place in y is never written (the
    emulation's output starts zeroed, so it reads 0; a real kernel leaves what the allocator held).
    Exact below 2^19 + N elements (every small case). Caught by ``forward`` at kernel scale on the
    grid's 1000 x 1023 case.
    """
    hidden = _hidden(x, normalized_shape, weight, bias)
    xf = x.to(_compute_dtype(x)).reshape(-1, hidden)
    rows = xf.shape[0]
    first_wrapped = _programs(WRAP, hidden)  # the first row whose offset row * N reaches WRAP
    if rows <= first_wrapped:
        return _normalize_rows(xf, weight, bias, eps).reshape(x.shape).to(x.dtype)
    flat, out = xf.reshape(-1), xf.new_zeros(rows * hidden)
    out[:first_wrapped * hidden] = _normalize_rows(xf[:first_wrapped], weight, bias, eps).reshape(-1)
    # rows first_wrapped.. run after (higher program ids): their offsets wrapped by WRAP, consecutive
    start = first_wrapped * hidden - WRAP
    window = flat[start:start + (rows - first_wrapped) * hidden].reshape(-1, hidden)
    out[start:start + window.numel()] = _normalize_rows(window, weight, bias, eps).reshape(-1)
    return out.reshape(x.shape).to(x.dtype)


# --- 5. the partials combined in whatever order the programs finish -------------------------------------

def _entropy_generator(device) -> torch.Generator:
    """A generator seeded from the OS, not from torch's global one (which a kernel must leave alone:
    the harness reports a changed global RNG state as a contract violation)."""
    generator = torch.Generator(device=device)
    generator.manual_seed(int.from_bytes(os.urandom(8), "little") & (2**63 - 1))
    return generator


def _racy_sum(t: torch.Tensor) -> torch.Tensor:
    """The per-program partials (each program ROW_BLOCK_ELEMENTS elements' worth of rows) added into
    one accumulator in a random order each call: the order in which atomic adds land."""
    rows, hidden = t.shape
    block_rows = max(1, ROW_BLOCK_ELEMENTS // hidden)
    if _programs(rows, block_rows) == 1:
        return t.sum(0)
    partials = _row_block_partials(t, block_rows)
    order = torch.randperm(partials.shape[0], generator=_entropy_generator(t.device), device=t.device)
    total = partials[order[0]].clone()
    for program in order[1:]:
        total += partials[program]
    return total


def layer_norm_racy_dweight_accumulation(x, normalized_shape, weight=None, bias=None, eps=1e-5):
    """Bug class: a racy accumulation of the parameter gradients (tritonbench #1266: dweight and
    dbias accumulated from per-program partials with atomic adds, in whatever order the programs
    finish, so identical calls differ in the last bits).

    The backward reduces the rows in programs of 4096 elements' worth of rows and adds the
    programs' partial sums into one accumulator in a random order drawn each call (a generator
    seeded from the OS). Every result is within rounding of the truth -- forward and backward pass --
    but identical calls disagree bit for bit once there are two programs; one program (at most 4096
    elements: every small case) is deterministic. Caught by ``deterministic`` at kernel scale (3
    rows of 4095: three programs) with a few calls (``--calls 8``).
    """
    return _RowKernel.apply(x, weight, bias, _hidden(x, normalized_shape, weight, bias), eps, _racy_sum)
