"""Runtime helpers of the generated NumPy kernels: fused reductions of products.

A real module, so that it is read, linted and tested as code; ``derive.codegen`` copies
its imports and function definitions (nothing else may stand at its top level) into
``reference/_generated/numpy_kernels.py``, which stays self-contained (stdlib and numpy
only). The generated kernels call them as ``_group_mean(group_dims, h, xhat)`` (the mean
over the group of h * xhat) and ``_affine_sum(affine_dims, grad_out, xhat)``.
"""
import itertools
import math

import numpy


def _is_array(value):
    return isinstance(value, numpy.ndarray)


def _sum_of_products(axes, factors):
    """(sum over axes of the product of factors, keepdims; the number of terms summed).

    The arrays among the factors (all of the working rank) broadcast together and are
    multiplied and summed in one pass, without a temporary for the product: a dot
    product per group (numpy.matmul) when two contiguous arrays of the full shape are
    summed over their trailing axes, else one numpy.einsum; the other factors (Python
    scalars) scale the result.
    """
    arrays = list(filter(_is_array, factors))
    scale = math.prod(itertools.filterfalse(_is_array, factors))
    shape = numpy.broadcast_shapes(*map(numpy.shape, arrays))
    index = list(range(len(shape)))
    kept = sorted(set(index).difference(axes))
    if _is_trailing_pair(arrays, kept, shape):
        total = _trailing_dot(arrays, len(kept), shape)
    else:
        operands = itertools.chain.from_iterable(zip(arrays, itertools.repeat(index)))
        total = numpy.expand_dims(numpy.einsum(*operands, kept), tuple(axes))
    return (total if scale == 1 else total * scale), math.prod(shape) // total.size


def _is_trailing_pair(arrays, kept, shape):
    """Two C-contiguous arrays of the full shape, summed over the axes after ``kept``."""
    if len(arrays) != 2 or kept != list(range(len(kept))) or len(kept) == len(shape):
        return False
    left, right = arrays[0], arrays[1]
    same = left.shape == shape == right.shape
    return same and left.flags.c_contiguous and right.flags.c_contiguous


def _trailing_dot(arrays, lead, shape):
    """Sum of the product of the two arrays over their axes after the first ``lead``, keepdims."""
    groups = shape[:lead]
    total = numpy.matmul(arrays[0].reshape(groups + (1, -1)), arrays[1].reshape(groups + (-1, 1)))
    return total.reshape(groups + (1,) * (len(shape) - lead))


def _group_mean(axes, *factors):
    """mean over the group (axes) of the product of factors, keepdims."""
    total, count = _sum_of_products(axes, factors)
    return total / count


def _affine_sum(axes, *factors):
    """sum over the affine axes of the product of factors, keepdims."""
    return _sum_of_products(axes, factors)[0]
