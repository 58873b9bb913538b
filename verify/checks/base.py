"""What a check is, and the context it runs in: a case, its arrays, its float64 truth, its tolerances."""
from __future__ import annotations

from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from normspec.derive import dtypes, variants
from normspec.derive.dtypes import DTYPES
from normspec.verify.cases.case import Case, conventions_in_force, round_to
from normspec.verify.implementations.base import Implementation
from normspec.verify.truth import definition
from normspec.verify.truth.tolerance import Comparison, policy


class GroupView:
    """Per-group arithmetic on x-shaped arrays, through the case's layout."""

    def __init__(self, case: Case):
        self.case, self.layout = case, case.layout

    def work(self, a: np.ndarray) -> np.ndarray:
        return np.asarray(a).reshape(self.layout.work_shape)

    def back(self, a: np.ndarray) -> np.ndarray:
        """A work-shaped (or keepdims per-group) array in the caller's shape x.shape."""
        a = np.asarray(a)
        if a.shape == self.case.shape:
            return a
        return np.broadcast_to(a, self.layout.work_shape).reshape(self.case.shape)

    def max(self, a) -> np.ndarray:
        return self.back(np.max(np.abs(self.work(a)), axis=self.layout.group_dims, keepdims=True))

    def mean(self, a) -> np.ndarray:
        """Per-group mean, keepdims in the work shape."""
        return np.mean(self.work(a), axis=self.layout.group_dims, keepdims=True)

    def param(self, p: np.ndarray | None, default: float) -> np.ndarray:
        if p is None:
            return np.full(self.case.shape, default)
        return self.back(np.reshape(p, self.layout.param_shape))

    def affine_sum(self, a) -> np.ndarray:
        summed = np.sum(self.work(a), axis=self.layout.affine_dims, keepdims=True)
        return summed.reshape(self.layout.weight_shape)

    def kappa(self, x: np.ndarray, var: np.ndarray) -> np.ndarray:
        spread = np.sqrt(np.broadcast_to(var, self.layout.stats_shape) + self.case.effective_eps)
        with np.errstate(divide="ignore", invalid="ignore"):
            k = 1 + np.max(np.abs(self.work(x)), axis=self.layout.group_dims, keepdims=True) / spread
        return self.back(np.where(np.isfinite(k), k, 1.0))


# The case a check actually ran (checks adapt the drawn case: affine off, constant values,
# one sample...); the battery reports it as the minimal case, so that it replays as shown.
effective_case: ContextVar[Case | None] = ContextVar("effective_case", default=None)


@dataclass
class Context:
    """A case with its arrays and float64 truth, and the tolerances derived from them."""

    case: Case
    arrays: dict
    truth: definition.Truth
    view: GroupView = field(init=False)
    _statistics: tuple | None = field(default=None, init=False, repr=False)

    def __post_init__(self):
        self.view = GroupView(self.case)
        if effective_case.get() is None:
            effective_case.set(self.case)

    @classmethod
    def of(cls, case: Case) -> "Context":
        arrays = case.arrays()
        return cls(case, arrays, definition.truth(case, arrays))

    @property
    def group_size(self) -> int:
        return self.case.layout.group_size

    def normalized(self) -> np.ndarray:
        """What the call normalizes, float64: x, or x + residual for the fused residual add."""
        return self.case.normalized_input(self.arrays)

    def gamma(self) -> np.ndarray:
        """The affine multiplier per element: weight + weight offset (1 without a weight)."""
        weight = self.arrays["weight"]
        return self.view.param(weight, 1.0) + (self.case.effective_weight_offset if weight is not None else 0.0)

    def gamma_magnitude(self) -> np.ndarray:
        """|weight| + |offset|: the scale of the multiplier's rounding (weight + offset is formed in
        the implementation's precision, so it is off by a unit of the larger, even where they cancel)."""
        weight = self.arrays["weight"]
        offset = abs(self.case.effective_weight_offset) if weight is not None else 0.0
        return np.abs(self.view.param(weight, 1.0)) + offset

    def statistics(self) -> tuple[np.ndarray, np.ndarray]:
        """(mean, biased var) of each group in the work shape, float64; given ones in eval. Computed
        once per context (every policy reads them; at kernel scale each pass is 10^6 elements)."""
        if self._statistics is None:
            self._statistics = self._compute_statistics()
        return self._statistics

    def _compute_statistics(self) -> tuple[np.ndarray, np.ndarray]:
        if self.case.given_statistics:
            shape = self.case.layout.param_shape
            return self.arrays["running_mean"].reshape(shape), self.arrays["running_var"].reshape(shape)
        x = self.view.work(self.normalized())
        mean = self.view.mean(x) if self.case.centered else np.zeros(self.case.layout.stats_shape)
        return mean, self.view.mean((x - mean) ** 2)

    def var(self) -> np.ndarray:
        return self.statistics()[1]

    def kappa(self) -> np.ndarray:
        return self.view.kappa(self.normalized(), self.var())

    def xhat(self) -> np.ndarray:
        mean, var = self.statistics()
        return self.view.back((self.view.work(self.normalized()) - mean) / np.sqrt(var + self.case.effective_eps))

    def rstd(self) -> np.ndarray:
        return self.view.back(1 / np.sqrt(self.var() + self.case.effective_eps))

    def representable_groups(self) -> np.ndarray:
        """Groups whose true dx fits the dtype (r * h can honestly overflow float16)."""
        fits = np.isfinite(round_to(self.truth.dx, self.case.dtype))
        return np.all(self.view.work(fits), axis=self.case.layout.group_dims, keepdims=True)

    def rounding_dtype(self) -> str:
        """The coarsest dtype the forward rounds to: the output's, or a coarser rounding point of the
        declared precision contract (weight_dtype with bfloat16 weights beside float32 x; llama's
        bfloat16 xhat, which dweight = sum(g xhat) inherits beside float32 weights)."""
        declared = conventions_in_force.get()
        contract = getattr(declared, "precision_contract", None)
        if contract is None:
            return self.case.dtype
        weight = self.case.dtype_of("weight") if self.case.has_weight else dtypes.compute_dtype(self.case.dtype)
        steps = [contract.dtype(s, input_dtype=self.case.dtype, weight_dtype=weight) for s in ("normalize", "multiply")]
        return dtypes.coarser(self.case.dtype, *steps)

    def policy_y(self, dtype: str | None = None):
        gamma = self.gamma_magnitude()
        beta = self.view.param(self.arrays["bias"], 0.0)
        # xhat's rounding error is absolute (xhat is O(1)), hence the 1 + |xhat|
        magnitude = np.abs(gamma) * (1 + self.view.max(self.xhat())) + np.abs(beta)
        return policy(dtype or self.rounding_dtype(), self.group_size, magnitude, self.kappa())

    def policy_dx(self):
        h = self.gamma_magnitude() * self.arrays["grad_out"]
        magnitude = self.view.max(self.rstd() * np.abs(h)) * (1 + self.view.max(self.xhat()))
        if self.case.has_residual:  # dx = g_s + J^T g: the pass-through adds its own size
            magnitude = magnitude + np.abs(self.arrays["grad_residual_out"])
        # a contract's rounding point in the forward (xhat in 16-bit) is one its autograd backward has too
        return policy(self.rounding_dtype(), self.group_size, magnitude, self.kappa())

    def policy_residual_out(self):
        """x + residual, rounded once to the dtype (a sum of two values: no reduction)."""
        magnitude = np.abs(self.arrays["x"]) + np.abs(self.arrays["residual"])
        return policy(self.case.dtype, 1, magnitude, 1.0)

    def policy_param(self, terms: np.ndarray):
        """For sums over the affine axes of ``terms`` (g * xhat for dweight, g for dbias), in the
        parameters' dtype (their gradients have it)."""
        length = int(np.prod([self.case.layout.work_shape[d] for d in self.case.layout.affine_dims]))
        kappa = float(np.max(self.kappa()))
        dtype = dtypes.coarser(self.case.dtype_of("weight"), self.rounding_dtype())  # a contract's xhat rounding
        return policy(dtype, max(length, self.group_size), self.view.affine_sum(np.abs(terms)), kappa)


@dataclass(frozen=True)
class Check:
    name: str
    kind: str  # 'oracle', 'invariant' or 'identity'
    description: str
    function: Callable[[Implementation, Case], list[Comparison]]
    variants: tuple[str, ...] = variants.NAMES
    dtypes: tuple[str, ...] = DTYPES
    needs_gradients: bool = False
    needs: tuple[str, ...] = ()  # other variants the implementation must provide
    needs_of: dict = field(default_factory=dict)  # per variant: other variants it needs (on top of needs)
    keyword: str | None = None  # an option the implementation must take as a keyword (not pinned)
    needs_contract: bool = False  # runs only on an implementation that declares a precision contract
    needs_abi: str | None = None  # runs only under this calling convention ('aten': saved statistics)
    needs_from_output: bool = False  # runs only on an implementation with a backward from the output
    case_options: dict = field(default_factory=dict)  # constraints for verify.strategies.cases

    def run(self, impl: Implementation, case: Case) -> list[Comparison]:
        """The check on ``impl`` and ``case``, under the conventions ``impl`` declares: every truth
        and tolerance computed meanwhile follows them (``conventions_in_force``); the truth is
        computed on ``impl``'s device."""
        token = conventions_in_force.set(getattr(impl, "conventions", None))
        device = definition.truth_device.set(getattr(impl, "device", "cpu"))  # the truth on the impl's device
        try:
            return self.function(impl, case)
        finally:
            definition.truth_device.reset(device)
            conventions_in_force.reset(token)

    def skip(self, impl: Implementation, variant: str, dtype: str) -> str | None:
        """Why this check does not run for (impl, variant, dtype), or None."""
        if variant not in self.variants:
            return f"does not apply to {variant}"
        if dtype not in self.dtypes:
            return f"runs in {', '.join(self.dtypes)} only"
        needed = (*self.needs, *self.needs_of.get(variant, ()))
        for reason in [impl.unsupported(variant, dtype), *(impl.unsupported(v, dtype) for v in needed)]:
            if reason:
                return reason
        if self.keyword and self.keyword in impl.pinned_options(variant):
            return (f"{self.keyword} is pinned to {impl.pinned_options(variant)[self.keyword]:g} "
                    f"({impl.name}'s {variant} takes no other value)")
        if self.needs_abi and getattr(impl, "abi", "functional") != self.needs_abi:
            return (f"runs under --abi {self.needs_abi} only (a forward that returns its saved statistics, "
                    f"a backward that takes them)")
        if self.needs_from_output and variant not in getattr(impl, "from_output", {}):
            return "no backward from the output given (--backward-from-output package.module:function)"
        if self.needs_contract and impl.conventions.precision_contract is None:
            return "no precision contract declared (--contract float32|llama|weight_dtype|input_dtype)"
        if self.needs_gradients and not impl.has_gradients(variant):
            return f"{impl.name} is forward-only (no autograd, no backward given)"
        return None
