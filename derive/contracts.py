"""Precision contracts: where a kernel rounds, declared by name.

A correct kernel in a 16-bit dtype still has to choose where it rounds, and the choice
shows in its output (moving one cast across the weight multiply drifted a model by 2% in
token match, vLLM #42325). A :class:`Contract` names the choice as data: the dtype each
step of the forward

    statistics   mean, var, rstd = 1 / sqrt(var + eps)         (rms_norm: mean = 0)
    normalize    xhat = (x - mean) * rstd
    multiply     t = xhat * gamma,  gamma = weight + weight_offset
    add          y = t + beta
    output       y cast to the output dtype (x's)

is computed in, by *role*:

    compute   the compute dtype of x: float32 for 16-bit x, x's own dtype otherwise
    input     x's dtype
    weight    the weight's dtype
    promoted  torch's type promotion of x's and the weight's dtype (bfloat16 * float32 = float32;
              float16 * bfloat16 = float32)

A step in the compute role carries the rounding noise of a float32 (or float64) computation;
a step in a 16-bit role is one rounding to that dtype, applied to the step's exact result.
Reductions (the means) are exact sums rounded once, whatever their order. ``verify``
emulates a contract exactly (``normspec.verify.truth.contracts``) and the spec pages print
these records. Plain Python, no array library.
"""
from __future__ import annotations

from dataclasses import dataclass

from normspec.derive import dtypes
from normspec.derive.errors import require

STEPS = ("statistics", "normalize", "multiply", "add")
ROLES = ("compute", "input", "weight", "promoted")


@dataclass(frozen=True, kw_only=True)
class Contract:
    """Where one named contract rounds: the role of each step of :data:`STEPS`."""

    name: str
    summary: str
    statistics: str
    normalize: str
    multiply: str
    source: str  # who rounds this way

    @property
    def add(self) -> str:
        return self.multiply  # the bias is added in the multiply's dtype (one fused step in every contract)

    def role(self, step: str) -> str:
        require(step in STEPS, "step", step, f"one of {', '.join(STEPS)}")
        return getattr(self, step)

    def dtype(self, step: str, *, input_dtype: str, weight_dtype: str) -> str:
        """The dtype ``step`` is computed in for x in ``input_dtype`` and the weight in ``weight_dtype``."""
        return resolve(self.role(step), input_dtype=input_dtype, weight_dtype=weight_dtype)

    def formula(self) -> str:
        """The forward with its rounding points, for readers: fl_D(...) rounds to D."""
        def fl(step: str, text: str) -> str:
            role = self.role(step)
            return text if role == "compute" else f"fl_{role}({text})"
        stats = "mean, rstd in the " + ("compute dtype" if self.statistics == "compute" else f"{self.statistics} dtype")
        xhat = fl("normalize", "(x - mean) * rstd")
        y = fl("multiply", f"{xhat} * gamma + beta")
        return f"{stats}; y = fl_output({y})"


def resolve(role: str, *, input_dtype: str, weight_dtype: str) -> str:
    """The dtype of ``role`` (see the module docstring) for these input and weight dtypes."""
    if role == "compute":
        return dtypes.compute_dtype(input_dtype)
    if role == "input":
        return input_dtype
    if role == "weight":
        return weight_dtype
    require(role == "promoted", "role", role, f"one of {', '.join(ROLES)}")
    return promote(input_dtype, weight_dtype)


def promote(a: str, b: str) -> str:
    """torch's result dtype of a binary op on floating tensors of dtypes ``a`` and ``b``."""
    if a == b:
        return a
    if {a, b} == set(dtypes.LOW_PRECISION):
        return "float32"
    return min((a, b), key=dtypes.spacing_at_one)


CONTRACTS: dict[str, Contract] = {c.name: c for c in (
    Contract(name="float32", summary="everything in float32 (the compute dtype), one rounding at the end",
             statistics="compute", normalize="compute", multiply="compute",
             source="torch's CUDA layer_norm, Apex, the Triton tutorial"),
    Contract(name="llama", summary="statistics in float32, xhat rounded to the input dtype before the weight "
                                   "multiply, which runs in the promoted dtype",
             statistics="compute", normalize="input", multiply="promoted",
             source="Hugging Face LlamaRMSNorm: weight * hidden_states.to(input_dtype)"),
    Contract(name="weight_dtype", summary="statistics in float32, xhat cast to the weight's dtype, the multiply "
                                          "(and bias) in the weight's dtype",
             statistics="compute", normalize="weight", multiply="weight",
             source="vLLM's RMSNorm reference: x.to(weight.dtype) * weight"),
    Contract(name="input_dtype", summary="everything in the input dtype, each step rounded to it",
             statistics="input", normalize="input", multiply="input",
             source="a kernel with no wider accumulator (naive 16-bit code)"),
)}
NAMES = tuple(CONTRACTS)


def get(name: object, *, argument: str = "contract") -> Contract:
    require(name in CONTRACTS, argument, name, f"one of {', '.join(NAMES)}")
    return CONTRACTS[name]  # type: ignore[index]
