"""Declared conventions: how an implementation differs from torch *on purpose*.

Correct libraries differ from torch in documented ways (flax and Keras store the biased
batch variance and write momentum as the weight of the old value; ONNX takes eps as a
float32 attribute and may compute in float32 whatever the input). An implementation
declares them, and the truth adapts to the declaration; no check is switched off (an
implementation that declares ``running_var=biased`` and stores the unbiased variance
fails). Every key, its values and its default (torch's):

    running_var=unbiased|biased     what running_var receives: the unbiased batch variance
                                    (N/(N-1), torch) or the biased one (flax, ONNX, Keras)
    momentum=new|old                the weight momentum is of: the batch value (torch:
                                    running = (1 - m) running + m batch) or the old value
                                    (flax, Keras: running = m running + (1 - m) batch; their
                                    0.99 is torch's 0.01)
    running_stats=updated|none      'none': the implementation keeps no running statistics;
                                    in training it must leave passed buffers untouched (or
                                    ignore them), and the running_stats check checks that
    scalars=float64|float32         float32: eps and momentum are rounded to float32 before
                                    use, as ONNX attributes are (the truth uses float32(eps))
    compute_dtype=torch|<dtype>     the dtype the statistics are computed in: torch's (float32
                                    for 16-bit inputs, the input dtype otherwise) or one dtype
                                    for every input (float32: ONNX's stash_type); the tolerance
                                    uses its unit roundoff for the compute part
    unsupported_dtypes=<dtype>,...  dtypes the implementation does not take: skipped with the
                                    reason "declared unsupported", not failed
    rms_eps=compute_dtype|input_dtype|<number>
                                    rms_norm's eps when the call passes eps=None: the machine
                                    epsilon of the compute dtype (torch), of the input dtype,
                                    or a fixed number (1e-6, say)
    parameter_dtypes=float32|same|any
                                    the dtypes of weight and bias (and running buffers) beside x:
                                    float32 beside 16-bit activations or x's own (torch's rule for
                                    layer_norm, group_norm and batch_norm), x's own only, or also
                                    16-bit parameters beside float32 activations (torch's rms_norm)
    contract=none|float32|llama|weight_dtype|input_dtype
                                    where the forward rounds (``normspec.derive.contracts``): the
                                    contract check compares y with an exact emulation of it, and
                                    the tolerances compute statistics in its statistics dtype
                                    (input_dtype: x's own); ``--contract NAME`` declares it
    fused_add=returns|in_place      the fused residual add's calling form: returns (y, x + residual)
                                    (the signature of normspec's references), or writes the sum
                                    into residual and y into x and returns None (FlashInfer's and
                                    vLLM's in-place form); checked on the arrays it wrote

:func:`parse` reads ``{"running_var": "biased"}`` or ``["running_var=biased", ...]`` (the
CLI's ``--convention`` and pytest's ``--normspec-convention``) and is the one place they
are validated.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Iterable, Mapping

import numpy as np

from normspec.derive import contracts, dtypes
from normspec.derive.dtypes import DTYPES
from normspec.derive.errors import NormSpecError
from normspec.verify.cases.case import Case

RUNNING_VAR = ("unbiased", "biased")
MOMENTUM = ("new", "old")
RUNNING_STATS = ("updated", "none")
SCALARS = ("float64", "float32")
COMPUTE_DTYPE = ("torch", *DTYPES)
RMS_EPS = ("compute_dtype", "input_dtype")  # or a positive number
FUSED_ADD = ("returns", "in_place")
PARAMETER_DTYPES = ("float32", "same", "any")
CONTRACT = ("none", *contracts.NAMES)
DECLARED_UNSUPPORTED = "declared unsupported"


@dataclass(frozen=True, kw_only=True)
class Conventions:
    """An implementation's declared conventions (see the module docstring); the defaults are torch's."""

    running_var: str = "unbiased"
    momentum: str = "new"
    running_stats: str = "updated"
    scalars: str = "float64"
    compute_dtype: str = "torch"
    unsupported_dtypes: tuple[str, ...] = ()
    rms_eps: str | float = "compute_dtype"
    fused_add: str = "returns"
    parameter_dtypes: str = "float32"
    contract: str = "none"

    def __post_init__(self):
        for key, allowed in (("running_var", RUNNING_VAR), ("momentum", MOMENTUM), ("running_stats", RUNNING_STATS),
                             ("scalars", SCALARS), ("compute_dtype", COMPUTE_DTYPE), ("fused_add", FUSED_ADD),
                             ("parameter_dtypes", PARAMETER_DTYPES), ("contract", CONTRACT)):
            _require_choice(key, getattr(self, key), allowed)
        unsupported = self.unsupported_dtypes
        if not isinstance(unsupported, (tuple, list)) or any(d not in DTYPES for d in unsupported):
            shown = _text(unsupported) if isinstance(unsupported, tuple) else unsupported
            raise _error("unsupported_dtypes", shown, f"dtypes among {', '.join(DTYPES)}, comma-separated")
        object.__setattr__(self, "unsupported_dtypes", tuple(dict.fromkeys(unsupported)))
        rms_eps = self.rms_eps
        number = isinstance(rms_eps, (int, float)) and not isinstance(rms_eps, bool)
        if not (rms_eps in RMS_EPS or (number and math.isfinite(rms_eps) and rms_eps > 0)):
            raise _error("rms_eps", rms_eps, f"{' or '.join(RMS_EPS)} or a positive number (1e-6, say)")
        if number:
            object.__setattr__(self, "rms_eps", float(rms_eps))

    # --- what was declared ---------------------------------------------------------------
    def declared(self) -> dict[str, str]:
        """The keys that differ from torch's conventions, with their values as text."""
        return {f.name: _text(getattr(self, f.name)) for f in dataclasses.fields(self)
                if getattr(self, f.name) != f.default}

    def options(self) -> list[str]:
        """``["key=value", ...]`` of the declared keys: what :func:`parse` reads back."""
        return [f"{key}={value}" for key, value in self.declared().items()]

    def describe(self) -> str:
        """One line for a report header: the declared keys, or that torch's conventions hold."""
        return ", ".join(self.options()) or "torch's (none declared)"

    def command_line(self) -> str:
        """The declared keys as ``normspec verify`` options (empty for torch's)."""
        return "".join(f" --convention {option}" for option in self.options())

    # --- what the truth and the tolerances read -------------------------------------------
    @property
    def biased_running_var(self) -> bool:
        return self.running_var == "biased"

    @property
    def momentum_weights_old(self) -> bool:
        return self.momentum == "old"

    @property
    def updates_running_stats(self) -> bool:
        return self.running_stats == "updated"

    @property
    def fused_add_in_place(self) -> bool:
        return self.fused_add == "in_place"

    def parameter_dtypes_of(self, dtype: str) -> tuple[str | None, ...]:
        """The parameter dtypes beside an x of ``dtype``, None (x's own) first."""
        if self.parameter_dtypes == "same" or dtype == "float64":
            return (None,)
        if dtype in dtypes.LOW_PRECISION:
            return (None, "float32")
        return (None, *dtypes.LOW_PRECISION) if self.parameter_dtypes == "any" else (None,)

    @property
    def precision_contract(self) -> contracts.Contract | None:
        """The declared precision contract, or None."""
        return None if self.contract == "none" else contracts.get(self.contract)

    def compute_dtype_of(self, dtype: str) -> str:
        """The dtype the statistics of an input of ``dtype`` are computed in: the declared compute
        dtype, else the declared contract's statistics dtype, else torch's."""
        if self.compute_dtype != "torch":
            return self.compute_dtype
        if self.precision_contract is not None:
            return self.precision_contract.dtype("statistics", input_dtype=dtype, weight_dtype=dtype)
        return dtypes.compute_dtype(dtype)

    def scalar(self, value: float) -> float:
        """A scalar argument (eps, momentum) as the implementation uses it."""
        return float(np.float32(value)) if self.scalars == "float32" else float(value)

    def eps_of(self, case: Case) -> float:
        """The eps the implementation normalizes ``case`` with: the call's eps, or for eps=None
        the declared rms_norm default; rounded as the scalars are."""
        eps = case.eps
        if eps is None:
            if self.rms_eps == "input_dtype":
                eps = dtypes.spacing_at_one(case.dtype)
            elif self.rms_eps == "compute_dtype":  # the declared one, or torch's (a contract keeps eps)
                compute = dtypes.compute_dtype(case.dtype) if self.compute_dtype == "torch" else self.compute_dtype
                eps = dtypes.spacing_at_one(compute)
            else:
                eps = self.rms_eps
        return self.scalar(eps)

    def momentum_of(self, case: Case) -> float:
        """The weight of the *batch* statistic in the running update of ``case``."""
        m = self.scalar(case.momentum)
        return 1.0 - m if self.momentum_weights_old else m

    def unsupported(self, dtype: str) -> str | None:
        if dtype in self.unsupported_dtypes:
            return f"{DECLARED_UNSUPPORTED} (unsupported_dtypes={','.join(self.unsupported_dtypes)})"
        return None


KEYS = tuple(f.name for f in dataclasses.fields(Conventions))


def parse(declared: Conventions | Mapping[str, Any] | Iterable[str] | str | None, *,
          argument: str = "conventions") -> Conventions:
    """Conventions from a mapping (``{"running_var": "biased"}``), ``"key=value"`` strings (a list
    of them, or one), or a :class:`Conventions`; None is torch's. A bad key or value raises
    NormSpecError naming the key, its value and what was expected."""
    if declared is None:
        return TORCH
    if isinstance(declared, Conventions):
        return declared
    if isinstance(declared, Mapping):
        pairs = list(declared.items())
    else:
        entries = [declared] if isinstance(declared, str) else list(declared)
        pairs = []
        for entry in entries:
            key, sep, value = str(entry).partition("=")
            if not sep or not key.strip():
                raise NormSpecError(f"{argument}={entry!r}: expected 'key=value' with a key among {', '.join(KEYS)}")
            pairs.append((key.strip(), value.strip()))
    fields: dict[str, Any] = {}
    for key, value in pairs:
        if key not in KEYS:
            raise _error(key, value, f"a convention key, one of {', '.join(KEYS)}", prefix="unknown convention ")
        if key in fields:
            raise _error(key, value, f"one value (already declared {key}={_text(fields[key])})")
        fields[key] = _value(key, value)
    return Conventions(**fields)


def with_contract(declared: Conventions | Mapping[str, Any] | Iterable[str] | str | None,
                  contract: str | None, *, argument: str = "contract") -> Conventions:
    """``declared`` (as :func:`parse` reads it) with the precision contract ``contract`` added
    (None: as declared); a contract declared both ways must agree."""
    conventions = parse(declared)
    if contract is None:
        return conventions
    contracts.get(contract, argument=argument)
    if conventions.contract not in ("none", contract):
        raise _error(argument, contract, f"the contract the conventions declare ({conventions.contract}), or none")
    return dataclasses.replace(conventions, contract=contract)


def _value(key: str, value: Any) -> Any:
    """A value as the field takes it (text from a command line, or already typed)."""
    if key == "unsupported_dtypes":
        if isinstance(value, str):
            return tuple(v.strip() for v in value.split(",") if v.strip())
        if isinstance(value, (list, tuple)):
            return tuple(value)
        raise _error(key, value, f"dtypes among {', '.join(DTYPES)}, comma-separated")
    if key == "rms_eps" and isinstance(value, str) and value not in RMS_EPS:
        try:
            return float(value)
        except ValueError:
            raise _error(key, value, f"{' or '.join(RMS_EPS)} or a positive number (1e-6, say)") from None
    return value


def _require_choice(key: str, value: Any, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise _error(key, value, f"one of {', '.join(allowed)} (default: {allowed[0]})")


def _error(key: str, value: Any, expected: str, *, prefix: str = "") -> NormSpecError:
    return NormSpecError(f"{prefix}{key}={value!r}: expected {expected}")


def _text(value: Any) -> str:
    if isinstance(value, tuple):
        return ",".join(value)
    return repr(value) if isinstance(value, float) else str(value)


TORCH = Conventions()  # torch's conventions: what the built-in implementations follow
