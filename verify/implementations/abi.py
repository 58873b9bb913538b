"""The aten calling convention (``normspec.derive.abi``) applied to a case: the arguments of a
forward that returns its saved statistics and of the backward that consumes them, and the saved
statistics the truth expects."""
from __future__ import annotations

import math

import numpy as np

from normspec.derive import dtypes
from normspec.derive.abi import AtenConvention
from normspec.verify.cases.case import Case


def _sizes(case: Case) -> dict:
    """group_norm's N, C, HxW and group."""
    shape = case.shape
    return {"N": shape[0], "C": shape[1] if len(shape) > 1 else 1, "HxW": math.prod(shape[2:]),
            "group": case.num_groups}


def values(case: Case, inputs: dict) -> dict:
    """The vocabulary's values for one call (arrays from ``inputs``, by internal names)."""
    arguments = case.arguments(inputs)
    found = dict(inputs, **{k: v for k, v in arguments.items() if k not in inputs})
    found.update(_sizes(case), eps=case.eps, momentum=case.momentum, training=case.training, train=case.training)
    if "normalized_shape" not in found:
        found["normalized_shape"] = case.normalized_shape
    found["normalized_shape"] = list(found["normalized_shape"])
    return found


def forward_arguments(convention: AtenConvention, case: Case, inputs: dict) -> list:
    found = values(case, inputs)
    return [found[name] for name in convention.forward_arguments]


def output_mask(convention: AtenConvention, case: Case) -> tuple[bool, ...]:
    """Every gradient of a passed argument (dx always)."""
    passed = {"x": True, "weight": case.has_weight, "bias": case.has_bias}
    return tuple(passed[name] for name in convention.gradients)


def backward_arguments(convention: AtenConvention, case: Case, inputs: dict, saved: dict, grad_out,
                       mask: tuple[bool, ...]) -> list:
    found = dict(values(case, inputs), **saved, grad_out=grad_out, output_mask=list(mask))
    return [found[name] for name in convention.backward_arguments]


def saved_shape(convention: AtenConvention, case: Case) -> tuple[int, ...]:
    if convention.saved_shape == "leading":
        k = case.normalized_ndim
        return (*case.shape[:len(case.shape) - k], *(1,) * k)
    if convention.saved_shape == "samples_groups":
        return (case.shape[0], case.num_groups)
    return (case.shape[1],)


def saved_dtype(case: Case) -> str:
    """The dtype saved statistics are expected in: the compute dtype of x."""
    return dtypes.compute_dtype(case.dtype)


def expected_saved(convention: AtenConvention, case: Case, mean: np.ndarray, var: np.ndarray) -> dict:
    """The true saved statistics (float64) in their expected shape, from the per-group ``mean`` and
    biased ``var`` (keepdims in the layout's working shape)."""
    shape = saved_shape(convention, case)
    rstd = 1 / np.sqrt(var + case.effective_eps)
    found = {"mean": np.broadcast_to(mean, np.shape(var)), "rstd": rstd}
    return {name: np.asarray(found[name], dtype=np.float64).reshape(shape) for name in convention.saved}
