"""A *case*: one concrete call of one variant, small enough to replay from one line.

Hypothesis draws the case's description (variant, shape, configuration, eps, dtype,
memory layout, value kind, seed); the tensor values come from a generator seeded
by ``seed`` (hypothesis cannot draw kernel-sized arrays element by element). Values
are rounded to the case's dtype *before* anything else sees them, so a float64 truth
computed from the same rounded values is the truth for the low-precision call too.
"""
from __future__ import annotations

import dataclasses
import json
import math
import numbers
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, Callable, Protocol

import numpy as np
import torch

from normspec.derive import dtypes, variants
from normspec.derive.dtypes import DTYPES
from normspec.derive.errors import NormSpecError, check_eps, check_momentum, check_weight_offset, require
from normspec.derive.layouts import Layout
from normspec.derive.variants import ARRAY_ARGUMENTS, Variant

TORCH_DTYPES = {name: getattr(torch, name) for name in DTYPES}
# (weight, bias) passed when a case is affine: both, the weight only, the bias only (the bias only
# where the variant takes one); strategies shrink toward the first
PARAMETER_CHOICES = ((True, True), (True, False), (False, True))


def parameter_choices(record: Variant) -> tuple[tuple[bool, bool], ...]:
    """The (weight, bias) choices of an affine case of ``record``'s variant (an adaptive norm's
    scale and shift are required: both)."""
    return PARAMETER_CHOICES if record.has_bias and not record.parameters_required else PARAMETER_CHOICES[:1]


def weight_offsets(record: Variant, has_weight: bool, pinned: dict | None = None) -> tuple[float, ...]:
    """The weight offsets a case of ``record``'s variant draws, simplest first: the option's values
    where it has one and a weight is passed (an offset needs a weight), the pinned one if pinned."""
    option = record.option("weight_offset")
    if option is None:
        return (0.0,)
    if pinned and "weight_offset" in pinned:
        return (float(pinned["weight_offset"]),)
    return option.values if has_weight else (option.default,)


MEMORY_LAYOUTS = ("contiguous", "noncontiguous", "channels_last")
# last-dim-contiguous views a kernel receives (drawn by the kernel tier, verify.cases.kernel): rows
# padded to a wider row stride (a slice of a wider buffer), a narrow in the middle of a wider last
# axis (q of a split qkv projection: row stride 3x the hidden size, a storage offset), the first two
# leading axes transposed (rank >= 3)
VIEW_LAYOUTS = ("padded_rows", "narrow", "transposed_leading")
PAD = 3  # the padding of padded_rows: an odd number of elements, so rows are misaligned too
VALUE_KINDS = ("normal", "offset", "constant", "outlier", "huge", "tiny", "gamma_mixed", "exact")
# drawn only by the checks that ask for them: weights near zero (|w| from 1e-4 to 1e-1, both signs),
# where a backward from the output is ill-conditioned
EXTRA_VALUE_KINDS = ("gamma_tiny",)
# the arrays of Case.arrays(): the call's and the outputs' gradients
ARRAY_NAMES = (*ARRAY_ARGUMENTS, "grad_out", "grad_residual_out")
PARAMETER_ARRAYS = ("weight", "bias", "running_mean", "running_var")  # in the case's parameter_dtype
MAX_RANK = 5  # the highest input rank the battery draws (the strategies' and the grid's max_rank)
# The most elements of x a case read from outside (--case, a reproduction file) may ask for: a few
# bytes of JSON must not allocate gigabytes (x and grad_out are float64, the truth more).
MAX_CASE_ELEMENTS = 2**22


class Declared(Protocol):
    """What the truth reads of the declared conventions of the implementation under test (a
    ``normspec.verify.implementations.conventions.Conventions``, which this layer cannot import)."""

    @property
    def biased_running_var(self) -> bool: ...
    @property
    def momentum_weights_old(self) -> bool: ...
    @property
    def updates_running_stats(self) -> bool: ...
    def compute_dtype_of(self, dtype: str) -> str: ...
    def eps_of(self, case: "Case") -> float: ...
    def momentum_of(self, case: "Case") -> float: ...


# The conventions in force: those the implementation a check runs on declares (``Check.run`` sets
# them for the duration of the check). None, outside a check, is torch's. Every truth and tolerance
# computed from a case follows them (Case.effective_eps, the running update, the compute dtype).
conventions_in_force: ContextVar[Declared | None] = ContextVar("conventions_in_force", default=None)


@dataclass(frozen=True)
class Case:
    """One call. The configuration fields a variant uses are the settings of its registry
    record (``normalized_ndim``, ``num_groups``, ``training``: False normalizes with the
    running statistics); ``running`` and ``momentum`` apply to variants with running
    statistics; ``eps=None`` (where the signature allows it) is the machine epsilon of the
    compute dtype. ``affine=False`` passes no affine parameter; with ``affine``, ``weight`` and
    ``bias`` say which are passed (weight only, bias only or both: ``nn.LayerNorm(bias=False)``
    and kernels' bias-free paths), the bias only where the variant takes one. A variant whose
    parameters are required (the adaptive norms' scale and shift) always passes them; without
    ``affine`` they are the identity modulation (scale = 0, shift = 0). ``weight_offset`` is the
    keyword option of the variants that have it (the affine step multiplies by weight + offset).
    ``parameter_dtype`` puts the parameters in another dtype than x (float32 weights beside
    bfloat16 activations, or the reverse); the outputs stay in x's dtype, the parameter
    gradients in the parameters'."""

    variant: str
    shape: tuple[int, ...]
    dtype: str = "float64"
    eps: float | None = 1e-5
    affine: bool = True
    normalized_ndim: int = 1
    num_groups: int = 1
    training: bool = True
    running: bool = False  # with batch statistics: also check the running-statistics update
    momentum: float = 0.1
    memory: str = "contiguous"
    values: str = "normal"
    seed: int = 0
    scale: float = 1.0  # x is multiplied by it (range-limit scans move a case in magnitude)
    weight: bool = True  # with affine: a weight is passed
    bias: bool = True  # with affine: a bias is passed (where the variant takes one)
    weight_offset: float = 0.0  # the option of the variants that have one (0 without a weight)
    parameter_dtype: str | None = None  # the affine parameters' (and running buffers') dtype; None: dtype

    # --- description -----------------------------------------------------------------
    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str, *, argument: str = "--case", max_elements: int = MAX_CASE_ELEMENTS) -> "Case":
        """The case ``to_json`` wrote, validated as :meth:`from_dict` does."""
        try:
            data = json.loads(text)
        except (ValueError, TypeError, RecursionError) as error:  # JSONDecodeError is a ValueError
            raise NormSpecError(f"{argument}={_shown(text)}: not JSON ({error})") from None
        return cls.from_dict(data, argument=argument, max_elements=max_elements)

    @classmethod
    def from_dict(cls, data: object, *, argument: str = "--case", max_elements: int = MAX_CASE_ELEMENTS) -> "Case":
        """A case from its description (the fields of ``to_json``), read from outside: every field is
        validated, and a shape of more than ``max_elements`` elements refused before any array exists.
        A NormSpecError names ``argument``, the field, its value and what was expected."""
        require(_is_int(max_elements) and max_elements > 0, "max_elements", max_elements,
                "a positive int")
        if not isinstance(data, dict):
            raise NormSpecError(f"{argument}: expected a JSON object with the fields of a case, got {_shown(data)}")
        try:
            case = cls(**_checked_fields(data, max_elements))
            case.layout  # noqa: B018 -- the layout validates what it needs (group_norm: num_groups divides C)
        except NormSpecError as error:
            raise NormSpecError(f"{argument}: {error}") from None
        return case

    @property
    def record(self) -> Variant:
        """The variant's registry record."""
        return variants.get(self.variant)

    def short(self) -> str:
        record = self.record
        settings = [s.text(getattr(self, s.name)) for s in record.settings]
        every_parameter = "weight+bias" if record.has_bias else "weight"
        some = f" parameters={self.parameters}" if self.affine and self.parameters != every_parameter else ""
        offset = f" weight_offset={self.weight_offset:g}" if self.weight_offset and self.has_weight else ""
        offset += f" parameters in {self.parameter_dtype}" if self.mixed else ""
        return " ".join([f"{self.variant} shape={self.shape}", *settings,
                         f"{self.dtype} eps={self.eps} affine={self.affine}{some}{offset} {self.memory} "
                         f"values={self.values} seed={self.seed}" + (f" scale={self.scale:g}" if self.scale != 1 else "")])

    def arguments(self, arrays: dict | None = None) -> dict[str, Any]:
        """The call's arguments by the signature's names, its keyword options included; arrays from
        ``arrays`` (by the internal names: an adaptive norm's scale is its ``weight``)."""
        record, arrays = self.record, arrays or {}
        values = {record.signature_name(name): arrays.get(name) for name in ARRAY_ARGUMENTS}
        values.update(eps=self.eps, momentum=self.momentum, weight_offset=self.weight_offset if self.has_weight else 0.0)
        for setting in record.settings:
            values[setting.argument] = setting.to_argument(self.shape, getattr(self, setting.name))
        if record.running is not None and record.running.mode_argument not in values:
            values[record.running.mode_argument] = self.training
        return {name: values[name] for name in record.signature.parameters}

    @property
    def effective_weight_offset(self) -> float:
        """What the affine step adds to the weight: the variant's own offset (adaptive: 1), or the option."""
        fixed = self.record.fixed_weight_offset
        return fixed if fixed is not None else (self.weight_offset if self.has_weight else 0.0)

    @property
    def mixed(self) -> bool:
        """Some parameter (or running buffer) is passed, in another dtype than x."""
        passed = self.has_weight or self.has_bias or self.given_statistics or self.running
        return passed and self.parameter_dtype not in (None, self.dtype)

    def dtype_of(self, name: str) -> str:
        """The dtype of array ``name`` (an internal name of :data:`ARRAY_NAMES`): the parameters' and
        the running buffers' is ``parameter_dtype``, the others' the case's dtype."""
        return self.parameter_dtype or self.dtype if name in PARAMETER_ARRAYS else self.dtype

    def rounded(self, arrays: dict) -> dict:
        """``arrays`` (float64) with each array rounded to its own dtype (:meth:`dtype_of`)."""
        return {k: round_to(v, self.dtype_of(k)) if isinstance(v, np.ndarray) else v for k, v in arrays.items()}

    @property
    def centered(self) -> bool:
        return self.record.centered

    @property
    def given_statistics(self) -> bool:
        """The call normalizes with given running statistics (batch_norm's eval mode)."""
        return not self.record.batch_statistics(self.arguments())

    @property
    def has_weight(self) -> bool:
        return (self.affine and self.weight) or self.record.parameters_required

    @property
    def has_bias(self) -> bool:
        return ((self.affine and self.bias) or self.record.parameters_required) and self.record.has_bias

    @property
    def has_residual(self) -> bool:
        return self.record.residual

    @property
    def parameters(self) -> str:
        """Which affine parameters the call passes, in words (for a case's one-line description)."""
        passed = [name for name, given in (("weight", self.has_weight), ("bias", self.has_bias)) if given]
        return "+".join(passed) or "none"

    @property
    def normalized_shape(self) -> tuple[int, ...]:
        return self.shape[len(self.shape) - self.normalized_ndim:]

    @property
    def layout(self) -> Layout:
        return self.record.layout_of(self.shape, self.arguments())

    @property
    def effective_eps(self) -> float:
        """The eps the truth uses: eps=None (rms_norm) is the machine epsilon of the compute dtype
        (float32 for 16-bit), as torch; under declared conventions (:data:`conventions_in_force`)
        what they say (an rms_norm default, eps rounded to float32)."""
        declared = conventions_in_force.get()
        if declared is not None:
            return declared.eps_of(self)
        return dtypes.machine_eps(self.dtype) if self.eps is None else self.eps

    # --- values ------------------------------------------------------------------------
    def arrays(self) -> dict[str, np.ndarray | None]:
        """float64 arrays, already rounded to the case's dtype: x, residual, weight, bias, grad_out,
        grad_residual_out, running_mean, running_var (None where the call has none). For the fused
        residual add the value kind shapes what is normalized, x + residual (:func:`_split`)."""
        rng = np.random.default_rng(self.seed)
        layout = self.layout
        x = np.ascontiguousarray(_to_shape(layout, _group_values(self.values, rng, layout, self.dtype))
                                 .reshape(self.shape)) * self.scale  # C order: memory layouts apply later
        channels = layout.weight_shape
        weight = _weight(self.values, rng, channels) if self.affine else None  # drawn even when not passed:
        weight = weight if self.affine and self.weight else None  # the other arrays stay the same
        bias = rng.standard_normal(channels) if self.affine and self.bias and self.record.has_bias else None
        grad_out = rng.standard_normal(self.shape)
        running_mean = running_var = None
        if self.given_statistics or self.running:
            running_mean = rng.standard_normal(channels)
            running_var = rng.uniform(0.5, 2.0, channels)
        raw = dict(x=x, weight=weight, bias=bias, grad_out=grad_out, running_mean=running_mean,
                   running_var=running_var, residual=None, grad_residual_out=None)
        if self.record.parameters_required and not self.affine:  # the identity modulation
            raw["weight"] = np.full(channels, 1.0 - self.effective_weight_offset)
            raw["bias"] = np.zeros(channels) if self.record.has_bias else None
        if self.has_residual:
            rounded = round_to(x, self.dtype)
            raw["x"], raw["residual"] = _split(rounded, np.random.default_rng(self.seed + 7), self.dtype)
            raw["grad_residual_out"] = np.random.default_rng(self.seed + 8).standard_normal(self.shape)
        return self.rounded(raw)

    def normalized_input(self, arrays: dict) -> np.ndarray:
        """What the call normalizes, in float64: x, or x + residual for the fused residual add."""
        x = arrays["x"]
        return x + arrays["residual"] if self.has_residual and arrays.get("residual") is not None else x

    # --- calling an implementation -------------------------------------------------------
    def call(self, fn: Callable, inputs: dict, *, options: tuple[str, ...] | None = None) -> Any:
        """``fn`` called with the signature of the case's variant: its arguments positionally
        (arrays from ``inputs``, by their internal names), and the keyword ``options`` among the
        variant's (default: all; a function that takes no such keyword is not passed it)."""
        arguments = self.arguments(inputs)
        record = self.record
        positional = [arguments[a.name] for a in record.arguments]
        keywords = {o.name: arguments[o.name] for o in record.options if options is None or o.name in options}
        return fn(*positional, **keywords)

    def torch_tensor(self, array: np.ndarray | None, *, device: str = "cpu", memory: bool = False,
                     dtype: str | None = None):
        """``array`` as a torch tensor in the case's dtype; ``memory`` applies the memory layout."""
        if array is None:
            return None
        tensor = torch.from_numpy(np.array(array)).to(device=device, dtype=TORCH_DTYPES[dtype or self.dtype])
        return with_memory_layout(tensor, self.memory) if memory else tensor

    def numpy_array(self, array: np.ndarray | None, *, memory: bool = False, dtype: str | None = None):
        """``array`` as a NumPy array in the case's dtype (NumPy has no bfloat16: ValueError)."""
        if array is None:
            return None
        dtype = dtype or self.dtype
        if dtype == "bfloat16":
            raise ValueError("NumPy has no bfloat16")
        out = np.array(array, dtype=dtype)
        return _numpy_memory_layout(out, self.memory) if memory else out


# --- validating a description read from outside ----------------------------------------------

FIELD_NAMES = tuple(f.name for f in dataclasses.fields(Case))
REQUIRED_FIELDS = tuple(f.name for f in dataclasses.fields(Case) if f.default is dataclasses.MISSING)


def _shown(value: object, limit: int = 200) -> str:
    """``repr(value)``, cut short: a message quotes what it was given, not megabytes of it."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"


def _checked_fields(data: dict, max_elements: int) -> dict[str, Any]:
    """The fields of ``data``, validated in order of dependence: the variant, then the shape (its rank
    depends on the variant), then the rest (some depend on both)."""
    unknown = [key for key in data if key not in FIELD_NAMES]
    if unknown:
        raise NormSpecError(f"unknown field{'s' if len(unknown) > 1 else ''} {', '.join(map(_shown, unknown))}: "
                            f"a case has the fields {', '.join(FIELD_NAMES)}")
    missing = [name for name in REQUIRED_FIELDS if name not in data]
    if missing:
        raise NormSpecError(f"missing field{'s' if len(missing) > 1 else ''} {', '.join(missing)}: "
                            f"a case needs {', '.join(REQUIRED_FIELDS)}")
    record = _checked_variant(data["variant"])
    shape = _checked_shape(data["shape"], record, max_elements)
    fields = {"variant": record.name, "shape": shape}
    for name, value in data.items():  # fields left out keep their defaults, which are valid
        if name not in fields:
            fields[name] = _FIELD_CHECKS[name](name, value, record, shape)
    return fields


def _is_int(value: object) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)  # JSON's true is no int


def _is_real(value: object) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _checked_variant(name: object) -> Variant:
    # the registry looks names up in a dict: an unhashable one (a JSON list) would be a TypeError
    require(isinstance(name, str), "variant", name, f"one of {', '.join(variants.NAMES)}")
    return variants.get(name)


def _checked_shape(shape: object, record: Variant, max_elements: int) -> tuple[int, ...]:
    require(isinstance(shape, (list, tuple)), "shape", shape, "a list of positive ints")
    require(record.min_rank <= len(shape) <= MAX_RANK, "shape", shape,
            f"{record.min_rank} to {MAX_RANK} dimensions ({record.name})")
    require(all(_is_int(n) and n > 0 for n in shape), "shape", shape, "a list of positive ints")
    elements = math.prod(shape)
    if elements > max_elements:  # before anything is allocated: the arrays are of this size
        raise NormSpecError(f"shape={list(shape)!r}: {elements} elements, over the limit of {max_elements} "
                            f"(raise the limit with --max-elements)")
    return tuple(int(n) for n in shape)


def _checked_eps(name: str, eps: object, record: Variant, shape: tuple[int, ...]) -> float | None:
    if eps is None:  # the machine epsilon of the compute dtype, where the signature defaults to it
        allowing = variants.matching(lambda v: v.default("eps") is None)
        require(record.default("eps") is None, name, eps,
                f"a finite number >= 0 (None only for {', '.join(allowing)}, whose eps defaults to it)")
        return None
    return check_eps(eps, name=name)


def _checked_bool(name: str, value: object, record: Variant, shape: tuple[int, ...]) -> bool:
    require(isinstance(value, bool), name, value, "true or false")
    return value


def _one_of(allowed: tuple[str, ...]) -> Callable[[str, object, Variant, tuple[int, ...]], str]:
    def checked(name: str, value: object, record: Variant, shape: tuple[int, ...]) -> str:
        require(isinstance(value, str) and value in allowed, name, value, f"one of {', '.join(allowed)}")
        return value  # type: ignore[return-value]
    return checked


def _checked_normalized_ndim(name: str, value: object, record: Variant, shape: tuple[int, ...]) -> int:
    require(_is_int(value) and 1 <= value <= len(shape), name, value,
            f"an int from 1 to the rank of shape={shape}")
    return int(value)  # type: ignore[arg-type]


def _checked_num_groups(name: str, value: object, record: Variant, shape: tuple[int, ...]) -> int:
    require(_is_int(value) and value > 0, name, value, "a positive int")  # the layout checks it divides C
    return int(value)  # type: ignore[arg-type]


def _checked_seed(name: str, value: object, record: Variant, shape: tuple[int, ...]) -> int:
    require(_is_int(value) and value >= 0, name, value, "an int >= 0 (NumPy's generators take no negative seed)")
    return int(value)  # type: ignore[arg-type]


def _checked_scale(name: str, value: object, record: Variant, shape: tuple[int, ...]) -> float:
    require(_is_real(value) and math.isfinite(value) and value > 0, name, value, "a finite number > 0")
    return float(value)  # type: ignore[arg-type]


def _checked_weight_offset(name: str, value: object, record: Variant, shape: tuple[int, ...]) -> float:
    offset = check_weight_offset(value, name=name)
    require(offset == 0 or record.option("weight_offset") is not None, name, value,
            f"0 ({record.name} has no weight_offset option)")
    return offset


# How each field other than the variant and the shape is validated: (name, value, record, shape) -> value.
_FIELD_CHECKS: dict[str, Callable[[str, object, Variant, tuple[int, ...]], Any]] = {
    "dtype": lambda name, value, record, shape: dtypes.check(value, argument=name),
    "eps": _checked_eps,
    "affine": _checked_bool,
    "weight": _checked_bool,
    "bias": _checked_bool,
    "normalized_ndim": _checked_normalized_ndim,
    "num_groups": _checked_num_groups,
    "training": _checked_bool,
    "running": _checked_bool,
    "momentum": lambda name, value, record, shape: check_momentum(value),  # [0, 1]: NaN and inf fail
    "memory": _one_of(MEMORY_LAYOUTS + VIEW_LAYOUTS),
    "values": _one_of(VALUE_KINDS + EXTRA_VALUE_KINDS),
    "seed": _checked_seed,
    "scale": _checked_scale,
    "weight_offset": _checked_weight_offset,
    "parameter_dtype": lambda name, value, record, shape: None if value is None else dtypes.check(value, argument=name),
}


def round_to(array: np.ndarray, dtype: str) -> np.ndarray:
    """float64 copy of ``array`` rounded to ``dtype`` (round to nearest even, as torch casts)."""
    return torch.from_numpy(np.array(array, dtype=np.float64)).to(TORCH_DTYPES[dtype]).double().numpy()


def _to_shape(layout: Layout, groups: np.ndarray) -> np.ndarray:
    """Place rows of ``groups`` (one row per group) into the layout's work shape."""
    other = [d for d in range(len(layout.work_shape)) if d not in layout.group_dims]
    order = other + list(layout.group_dims)
    permuted_shape = [layout.work_shape[d] for d in order]
    return groups.reshape(permuted_shape).transpose(np.argsort(order))


def _group_values(kind: str, rng: np.random.Generator, layout: Layout, dtype: str) -> np.ndarray:
    n = layout.group_size
    count = math.prod(layout.work_shape) // n
    z = rng.standard_normal((count, n))
    largest = dtypes.largest(dtype)
    if kind == "offset":  # large mean, small spread: cancellation
        ratio = 10.0 ** rng.uniform(3, 6, (count, 1))
        offset = min(1e4, largest / 8) * rng.choice([-1.0, 1.0], (count, 1))
        return offset + z * np.abs(offset) / ratio
    if kind == "constant":  # variance 0; few mantissa bits, so that the mean is exact too
        return np.repeat(rng.integers(-24, 25, (count, 1)) / 8, n, axis=1)
    if kind == "outlier":  # one element far from the rest
        z[np.arange(count), rng.integers(0, n, count)] *= 1e3 if dtype != "float16" else 1e2
        return z
    if kind == "huge":
        # float16: a sum of squares overflows float16 but not float32 (accumulate wide!);
        # the others: squares near float32's overflow (for float64, beyond float32's range)
        if dtype == "float16":
            return z.clip(-3, 3) * 2.0 * math.sqrt(largest / n) / 3
        return z.clip(-3, 3) * 0.25 * math.sqrt(dtypes.largest("float32") / n) / 3
    if kind == "tiny":  # variance comparable to eps
        return z * 10.0 ** rng.uniform(-3.5, -1.5, (count, 1))
    if kind == "exact":
        return _exact_groups(rng, count, n)
    return z  # normal, gamma_mixed


def _exact_groups(rng: np.random.Generator, count: int, n: int) -> np.ndarray:
    """Pairs m +- d around a power-of-two mean m, d with 3 mantissa bits: mean and variance
    are exact in any summation order and in every dtype."""
    mean = 2.0 ** rng.integers(-2, 4, (count, 1))
    d = rng.integers(1, 8, (count, n // 2)) * mean / 8
    unpaired = [np.zeros((count, 1))] if n % 2 else []  # an odd group's extra element sits on the mean
    signed = np.concatenate([d, -d, *unpaired], axis=1)
    return mean + rng.permuted(signed, axis=1)


def _split(s: np.ndarray, rng: np.random.Generator, dtype: str) -> tuple[np.ndarray, np.ndarray]:
    """(x, residual) with x + residual = s (the value kind's values, already in ``dtype``): the
    residual has 3 mantissa bits on the scale of s's largest power of two, so that x = s - residual
    is exact wherever s has few bits (the constant and exact kinds stay exact after the sum) and
    |x| stays within 1.5 |s|."""
    top = 2.0 ** np.floor(np.log2(np.maximum(np.max(np.abs(s)), np.finfo(np.float64).tiny)))
    residual = rng.integers(-4, 5, s.shape) / 8 * top
    return s - residual, residual


def _weight(kind: str, rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    if kind == "gamma_mixed":  # mixed signs over two decades
        return rng.choice([-1.0, 1.0], shape) * 10.0 ** rng.uniform(-1, 1, shape)
    if kind == "gamma_tiny":  # near zero, both signs
        return rng.choice([-1.0, 1.0], shape) * 10.0 ** rng.uniform(-4, -1, shape)
    return 1.0 + 0.5 * rng.standard_normal(shape)


def with_memory_layout(tensor: torch.Tensor, memory: str) -> torch.Tensor:
    if memory in VIEW_LAYOUTS:
        return _view(tensor, memory, lambda shape: torch.zeros(shape, dtype=tensor.dtype, device=tensor.device),
                     lambda a, dims: a.permute(dims))
    if memory == "noncontiguous" and tensor.ndim >= 1:
        wide = torch.zeros(*tensor.shape[:-1], 2 * tensor.shape[-1], dtype=tensor.dtype, device=tensor.device)
        wide[..., ::2] = tensor
        return wide[..., ::2]
    if memory == "channels_last" and tensor.ndim in (4, 5):
        fmt = torch.channels_last if tensor.ndim == 4 else torch.channels_last_3d
        return tensor.contiguous(memory_format=fmt)
    return tensor


def _view(array, memory: str, zeros, permute):
    """``array``'s values in a last-dim-contiguous view of one of VIEW_LAYOUTS (a torch tensor or a
    NumPy array: ``zeros(shape)`` and ``permute(a, dims)`` are the library's)."""
    shape = tuple(array.shape)
    if memory == "transposed_leading" and len(shape) >= 3:
        order = (1, 0, *range(2, len(shape)))
        buffer = zeros(tuple(shape[d] for d in order))
        view = permute(buffer, order)
    elif memory in ("padded_rows", "narrow"):
        hidden = shape[-1]
        wider, start = (hidden + PAD, 0) if memory == "padded_rows" else (3 * hidden, hidden)
        buffer = zeros((*shape[:-1], wider))
        view = buffer[..., start:start + hidden]
    else:  # a layout the shape cannot take keeps the array as it is
        return array
    view[...] = array
    return view


def _numpy_memory_layout(array: np.ndarray, memory: str) -> np.ndarray:
    if memory in VIEW_LAYOUTS:
        return _view(array, memory, lambda shape: np.zeros(shape, dtype=array.dtype), np.transpose)
    if memory == "noncontiguous" and array.ndim >= 1:
        wide = np.zeros((*array.shape[:-1], 2 * array.shape[-1]), dtype=array.dtype)
        wide[..., ::2] = array
        return wide[..., ::2]
    if memory == "channels_last" and array.ndim in (4, 5):
        order = (0, *range(2, array.ndim), 1)
        return np.ascontiguousarray(array.transpose(order)).transpose(np.argsort(order))
    return array
