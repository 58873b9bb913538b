"""The variant registry: one record per named normalization, declared once.

A :class:`Variant` says everything the project knows about one variant: its
``torch.nn.functional`` signature, the layout its call maps to, the derivation options
(centering, bias, given statistics) that pick its symbolic family, the configuration
a case draws and how, its running-statistics semantics, and what the spec pages show.
The references build their public functions from it, the battery its strategies,
cases, calls and check defaults, the CLI its tables, the docs their pages. Adding a
variant is a record here plus, if it is a new kind of mathematics, derivation options.

Plain Python (no SymPy, no array library), so that every layer imports it cheaply.
"""
from __future__ import annotations

import dataclasses
import functools
import inspect
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

from normspec.derive import layouts
from normspec.derive.errors import NormSpecError, require
from normspec.derive.layouts import Layout

REQUIRED = inspect.Parameter.empty
# The array arguments of the variants' signatures, by the names the battery uses internally
# (an adaptive norm's scale and shift are its weight and bias, see Variant.parameter_names).
ARRAY_ARGUMENTS = ("x", "residual", "weight", "bias", "running_mean", "running_var")


@dataclass(frozen=True)
class Argument:
    """One parameter of a variant's ``torch.nn.functional`` signature."""

    name: str
    default: Any = REQUIRED


@dataclass(frozen=True, kw_only=True)
class Option:
    """A keyword-only option of a variant's signature (after ``*``). The battery passes it as a
    keyword, drawing ``values`` (simplest first), unless the implementation under test has it
    pinned (a Gemma kernel with the offset built in takes no keyword)."""

    name: str
    default: Any
    values: tuple
    summary: str


WEIGHT_OFFSET = Option(name="weight_offset", default=0.0, values=(0.0, 1.0, 0.375),
                       summary="the affine step multiplies by weight + weight_offset (Gemma's zero-centered "
                               "weight: 1.0)")
OPTIONS = {WEIGHT_OFFSET.name: WEIGHT_OFFSET}


@dataclass(frozen=True, kw_only=True)
class Setting:
    """A configuration field of a case (a field of ``normspec.verify`` 's Case), drawn by the battery.

    ``values(shape)`` are the allowed values for an input shape, in the order examples
    shrink towards (the first is the simplest); ``argument`` is the call argument it
    sets, computed by ``to_argument(shape, value)``; ``describe(value)`` is how a case
    prints it.
    """

    name: str
    values: Callable[[tuple[int, ...]], tuple]
    argument: str
    to_argument: Callable[[tuple[int, ...], Any], Any] = lambda shape, value: value
    describe: Callable[[Any], str] | None = None

    def text(self, value: Any) -> str:
        return self.describe(value) if self.describe else f"{self.name}={value}"


@dataclass(frozen=True, kw_only=True)
class RunningStatistics:
    """torch's running statistics: with ``mode_argument`` True the call normalizes with the batch
    statistics and, when running buffers are passed, updates them in place
    (``running = (1 - momentum) * running + momentum * batch``, unbiased variance); False
    normalizes with the given running statistics (the ``given_stats`` family)."""

    mode_argument: str  # 'training' or 'use_input_stats'
    average_over_batch: bool  # the batch statistic is the average of per-sample ones
    eval_drawn: bool  # the battery also draws the mode that normalizes with the running statistics
    one_value: str  # what a group of one element is called in the error torch gives in training
    refuses_zero_eps: bool  # torch refuses eps = 0 in training (a constant channel divides by zero)


@dataclass(frozen=True, kw_only=True)
class NaturalAxes:
    """The definition on x's own axes (no working-shape reshape), for the independent oracle.

    ``statistics(ndim, arguments)``: the axes the statistics are taken over (of the view
    (N, G, C/G * spatial) when ``split_channels`` names the argument G); ``parameters``:
    the axes of x that weight and bias span; ``samples``: the axes along which neither
    statistics nor parameters are shared (independent samples).
    """

    statistics: Callable[[int, Mapping[str, Any]], tuple[int, ...]]
    parameters: Callable[[int, Mapping[str, Any]], tuple[int, ...]]
    samples: Callable[[int, Mapping[str, Any]], tuple[int, ...]]
    split_channels: str | None = None


def _trailing(ndim: int, arguments: Mapping[str, Any]) -> tuple[int, ...]:
    return tuple(range(ndim - len(arguments["normalized_shape"]), ndim))


def _leading(ndim: int, arguments: Mapping[str, Any]) -> tuple[int, ...]:
    return tuple(range(ndim - len(arguments["normalized_shape"])))


TRAILING_AXES = NaturalAxes(statistics=_trailing, parameters=_trailing, samples=_leading)
_CHANNEL = lambda ndim, arguments: (1,)  # noqa: E731
_BATCH = lambda ndim, arguments: (0,)  # noqa: E731
_SPATIAL = lambda ndim, arguments: tuple(range(2, ndim))  # noqa: E731


# The derive.symbolic family of each combination of derivation options:
# (centered, batch_statistics, has_bias, residual) -> family name.
FAMILIES = {(True, True, True, False): "centered", (False, True, False, False): "rms",
            (True, False, True, False): "given_stats", (True, True, True, True): "centered_residual",
            (False, True, False, True): "rms_residual"}
PLAIN_PARAMETERS = {"weight": "weight", "bias": "bias"}


@dataclass(frozen=True, kw_only=True)
class Variant:
    name: str
    summary: str  # one line: what it normalizes over
    arguments: tuple[Argument, ...]  # the torch.nn.functional signature, x first
    layout: Callable[..., Layout]  # (x_shape, **layout_arguments) -> Layout
    layout_arguments: tuple[str, ...] = ()
    centered: bool = True  # subtract the group mean (False: RMS normalization)
    residual: bool = False  # the fused residual add: normalizes x + residual and returns the sum too
    options: tuple[Option, ...] = ()  # keyword-only options (after * in the signature)
    # the signature's names of the affine parameters (an adaptive norm's scale and shift)
    parameter_names: Mapping[str, str] = field(default_factory=lambda: PLAIN_PARAMETERS)
    parameters_required: bool = False  # the affine parameters are required arguments (adaptive norms)
    fixed_weight_offset: float | None = None  # the offset the variant always adds (adaptive: 1 + scale)
    per_sample: bool = True  # statistics never mix samples of the batch
    min_rank: int = 2  # the smallest input rank the battery draws
    settings: tuple[Setting, ...] = ()
    running: RunningStatistics | None = None
    natural: NaturalAxes = TRAILING_AXES
    # --- for readers: the spec pages and the CLI's list ---------------------------------
    input_axes: str = ""  # the input's axes, e.g. '(N, C, *spatial)'
    group: str = ""  # which elements share statistics
    affine: str = ""  # which axes carry gamma and beta
    work_axes: tuple[str, ...] = ()  # names of the axes of the layout's working shape
    example_shape: tuple[int, ...] = ()
    example_arguments: Mapping[str, Any] = field(default_factory=dict)
    notes: tuple[tuple[str, str], ...] = ()  # (title, text) paragraphs on the layout, for the spec page

    # --- derivation options --------------------------------------------------------------
    @property
    def has_bias(self) -> bool:
        return self.parameter_names["bias"] in self.argument_names

    def family(self, batch_statistics: bool = True) -> str:
        """The derive.symbolic family this variant runs in (given statistics: eval mode)."""
        return FAMILIES[(self.centered, batch_statistics, self.has_bias, self.residual)]

    def parameter(self, name: str) -> str:
        """The signature's name of affine parameter ``name`` ('weight' or 'bias')."""
        return self.parameter_names[name]

    @property
    def outputs(self) -> tuple[str, ...]:
        """What a call returns, in order (one output: returned bare)."""
        return ("y", "residual_out") if self.residual else ("y",)

    @property
    def upstream(self) -> dict[str, str]:
        """Each output's upstream gradient, by the name a backward takes it under, in output order."""
        return {output: "grad_out" if output == "y" else f"grad_{output}" for output in self.outputs}

    @property
    def gradients(self) -> tuple[str, ...]:
        """The internal names of what ``<name>_backward`` returns, in order: (x, weight, bias) for
        the textbook variants (None for an absent parameter), and the differentiable arguments
        of the others (fused: x, residual, weight[, bias]; adaptive: x, scale[, shift])."""
        if self.residual:
            return ("x", "residual", "weight", *(("bias",) if self.has_bias else ()))
        if self.parameters_required:
            return ("x", "weight", *(("bias",) if self.has_bias else ()))
        return ("x", "weight", "bias")

    def signature_name(self, name: str) -> str:
        """The signature's name of internal argument ``name`` (scale for an adaptive norm's weight)."""
        return self.parameter_names.get(name, name)

    def option(self, name: str) -> Option | None:
        return next((o for o in self.options if o.name == name), None)

    @property
    def families(self) -> tuple[str, ...]:
        modes = (True, False) if self.running else (True,)
        return tuple(self.family(mode) for mode in modes)

    # --- the signature -------------------------------------------------------------------
    @property
    def argument_names(self) -> tuple[str, ...]:
        return tuple(a.name for a in self.arguments)

    @functools.cached_property
    def signature(self) -> inspect.Signature:
        kind = inspect.Parameter.POSITIONAL_OR_KEYWORD
        keyword = inspect.Parameter.KEYWORD_ONLY
        return inspect.Signature([*(inspect.Parameter(a.name, kind, default=a.default) for a in self.arguments),
                                  *(inspect.Parameter(o.name, keyword, default=o.default) for o in self.options)])

    def bind(self, args: tuple, kwargs: dict) -> dict[str, Any]:
        """The call's arguments by name, defaults applied; a bad call raises NormSpecError."""
        try:
            bound = self.signature.bind(*args, **kwargs)
        except TypeError as error:
            raise NormSpecError(f"{self.name}{self.signature}: {error}") from None
        bound.apply_defaults()
        return dict(bound.arguments)

    def default(self, name: str) -> Any:
        return self.signature.parameters[name].default

    # --- layout --------------------------------------------------------------------------
    def layout_of(self, x_shape: tuple[int, ...], arguments: Mapping[str, Any]) -> Layout:
        """The layout of a call with these arguments (validated: NormSpecError names the argument)."""
        return self.layout(tuple(x_shape), **{name: arguments[name] for name in self.layout_arguments})

    def batch_statistics(self, arguments: Mapping[str, Any]) -> bool:
        """Whether a call normalizes with statistics of its input (False: the given running ones)."""
        if self.running is None:
            return True
        mode = arguments[self.running.mode_argument]
        require(isinstance(mode, bool), self.running.mode_argument, mode, "a bool")
        return mode

    def check_batch_statistics(self, layout: Layout, x_shape: tuple[int, ...]) -> None:
        """torch refuses one value per group when computing batch statistics with running semantics."""
        if self.running is not None:
            require(layout.group_size > 1, "x.shape", x_shape,
                    f"more than 1 {self.running.one_value} when training ({self.name} with batch statistics)")

    def example_layout(self) -> Layout:
        return self.layout_of(self.example_shape, self.example_arguments)

    def axes(self, dims: tuple[int, ...]) -> str:
        """Names of the working-shape axes ``dims`` (for readers)."""
        return ", ".join(self.work_axes[d] for d in dims)


# --- the records -----------------------------------------------------------------------------

_X = Argument("x")
_WEIGHT, _BIAS = Argument("weight", None), Argument("bias", None)
_EPS = Argument("eps", 1e-5)


def _normalized_ndims(shape: tuple[int, ...]) -> tuple[int, ...]:
    return tuple(range(1, min(3, len(shape)) + 1))


def _divisors(shape: tuple[int, ...]) -> tuple[int, ...]:
    return tuple(g for g in range(1, shape[1] + 1) if shape[1] % g == 0)


_NORMALIZED_NDIM = Setting(name="normalized_ndim", values=_normalized_ndims, argument="normalized_shape",
                           to_argument=lambda shape, n: tuple(shape[len(shape) - n:]))
# the adaptive norms keep the first axis out: it is the sample axis of scale and shift
_MODULATED_NDIM = dataclasses.replace(_NORMALIZED_NDIM, values=lambda shape: _normalized_ndims(shape[1:]))
_TRAILING_READER = dict(input_axes="(*leading, *normalized_shape)", affine="element of normalized_shape",
                        work_axes=("leading", "normalized_shape"), example_shape=(8, 10, 16),
                        example_arguments={"normalized_shape": (16,)})
_CHANNEL_READER = dict(input_axes="(N, C, *spatial)", affine="channel", work_axes=("N", "C", "spatial"),
                       example_shape=(8, 6, 4, 4))


def _per_leading_index(has_bias: bool) -> tuple[tuple[str, str], ...]:
    params = "gamma and beta are" if has_bias else "gamma is"
    return (("Per sample", "Statistics are per leading index (per sample, or per token); "
             f"{params} per element of normalized_shape, so they vary inside a group."),)


_OFFSET_NOTE = ("Weight offset", "With weight_offset=c the affine step multiplies by gamma = weight + c (Gemma "
                "stores its weight zero-centered and passes c = 1). dx reads gamma; dweight keeps its form, "
                "sum(g * xhat).")
_RESIDUAL_NOTE = ("Fused residual add", "The call normalizes s = x + residual and returns (y, s), as the "
                  "pre-norm residual stream of a transformer block does in one kernel. The backward receives a "
                  "gradient for each output: dx = dresidual = g_s + J^T g_y, the residual's gradient passing "
                  "through unchanged beside the norm's.")
_MODULATION_NOTE = ("Per-sample modulation", "The norm has no affine parameters of its own; scale and shift of "
                    "shape (x.shape[0], *normalized_shape), produced per sample (a DiT/AdaLN conditioning "
                    "MLP), give y = xhat * (1 + scale) + shift, broadcast over the axes between the first and "
                    "the normalized ones (tokens). It is the weight-offset program with c = 1, weight = scale "
                    "and bias = shift, its parameter gradients summed over those middle axes only.")
_MODULATED_NATURAL = NaturalAxes(statistics=_trailing, parameters=lambda ndim, arguments: (0, *_trailing(ndim, arguments)),
                                 samples=lambda ndim, arguments: (0,))
_MODULATED_PARAMETERS = {"weight": "scale", "bias": "shift"}
_MODULATED_READER = dict(input_axes="(N, *tokens, *normalized_shape)", affine="sample and element of normalized_shape",
                         work_axes=("N", "tokens", "normalized_shape"), example_shape=(4, 10, 16),
                         example_arguments={"normalized_shape": (16,)})


VARIANTS: dict[str, Variant] = {v.name: v for v in (
    Variant(
        name="batch_norm", summary="per channel, over the batch and the spatial axes",
        arguments=(_X, Argument("running_mean"), Argument("running_var"), _WEIGHT, _BIAS,
                   Argument("training", False), Argument("momentum", 0.1), _EPS),
        layout=functools.partial(layouts.channel_layout, per_sample=False), per_sample=False,
        natural=NaturalAxes(statistics=lambda ndim, arguments: (0, *range(2, ndim)), parameters=_CHANNEL,
                            samples=lambda ndim, arguments: ()),
        settings=(Setting(name="training", values=lambda shape: (False, True), argument="training",
                          describe=lambda training: "training" if training else "eval"),),
        running=RunningStatistics(mode_argument="training", average_over_batch=False, eval_drawn=True,
                                  one_value="value per channel", refuses_zero_eps=True),
        group="all of N and the spatial axes, per channel", **_CHANNEL_READER,
        notes=(("Across the batch", "The group spans the whole batch: every sample's output depends on every "
                "other sample, and permuting the batch permutes the output."),),
    ),
    Variant(
        name="layer_norm", summary="per leading index, over the trailing normalized_shape",
        arguments=(_X, Argument("normalized_shape"), _WEIGHT, _BIAS, _EPS), options=(WEIGHT_OFFSET,),
        layout=layouts.trailing_layout, layout_arguments=("normalized_shape",), settings=(_NORMALIZED_NDIM,),
        group="the trailing normalized_shape, per leading index", **_TRAILING_READER,
        notes=(*_per_leading_index(True), _OFFSET_NOTE),
    ),
    Variant(
        name="instance_norm", summary="per sample and channel, over the spatial axes",
        arguments=(_X, Argument("running_mean", None), Argument("running_var", None), _WEIGHT, _BIAS,
                   Argument("use_input_stats", True), Argument("momentum", 0.1), _EPS),
        layout=functools.partial(layouts.channel_layout, per_sample=True), min_rank=3,
        natural=NaturalAxes(statistics=_SPATIAL, parameters=_CHANNEL, samples=_BATCH),
        running=RunningStatistics(mode_argument="use_input_stats", average_over_batch=True, eval_drawn=False,
                                  one_value="spatial element", refuses_zero_eps=False),
        group="the spatial axes, per sample and channel", **_CHANNEL_READER,
    ),
    Variant(
        name="group_norm", summary="per sample and group of channels, over C/G channels and the spatial axes",
        arguments=(_X, Argument("num_groups"), _WEIGHT, _BIAS, _EPS),
        layout=layouts.group_layout, layout_arguments=("num_groups",),
        natural=NaturalAxes(statistics=lambda ndim, arguments: (2,), parameters=_CHANNEL, samples=_BATCH,
                            split_channels="num_groups"),
        settings=(Setting(name="num_groups", values=_divisors, argument="num_groups"),),
        group="C/G channels x the spatial axes, per sample and group",
        **{**_CHANNEL_READER, "work_axes": ("N", "G", "C/G", "spatial"), "example_arguments": {"num_groups": 3}},
        notes=(("Groups of channels", "The C channels are split into G contiguous groups of C/G channels; "
                "statistics are per sample and group, gamma and beta per channel, so they vary inside a group."),),
    ),
    Variant(
        name="rms_norm", summary="per leading index, over the trailing normalized_shape, without centering",
        arguments=(_X, Argument("normalized_shape"), _WEIGHT, Argument("eps", None)), options=(WEIGHT_OFFSET,),
        layout=layouts.trailing_layout, layout_arguments=("normalized_shape",), centered=False,
        settings=(_NORMALIZED_NDIM,),
        group="the trailing normalized_shape, per leading index (no centering)", **_TRAILING_READER,
        notes=(*_per_leading_index(False), _OFFSET_NOTE),
    ),
    Variant(
        name="fused_add_layer_norm", summary="layer_norm of x + residual, returning (y, x + residual)",
        arguments=(_X, Argument("residual"), Argument("normalized_shape"), _WEIGHT, _BIAS, _EPS),
        options=(WEIGHT_OFFSET,), residual=True,
        layout=layouts.trailing_layout, layout_arguments=("normalized_shape",), settings=(_NORMALIZED_NDIM,),
        group="the trailing normalized_shape of x + residual, per leading index", **_TRAILING_READER,
        notes=(*_per_leading_index(True), _RESIDUAL_NOTE, _OFFSET_NOTE),
    ),
    Variant(
        name="fused_add_rms_norm", summary="rms_norm of x + residual, returning (y, x + residual)",
        arguments=(_X, Argument("residual"), Argument("normalized_shape"), _WEIGHT, Argument("eps", None)),
        options=(WEIGHT_OFFSET,), residual=True, centered=False,
        layout=layouts.trailing_layout, layout_arguments=("normalized_shape",), settings=(_NORMALIZED_NDIM,),
        group="the trailing normalized_shape of x + residual, per leading index (no centering)",
        **_TRAILING_READER, notes=(*_per_leading_index(False), _RESIDUAL_NOTE, _OFFSET_NOTE),
    ),
    Variant(
        name="adaptive_layer_norm", summary="layer_norm without affine, then xhat * (1 + scale) + shift per sample",
        arguments=(_X, Argument("normalized_shape"), Argument("scale"), Argument("shift"), Argument("eps", 1e-6)),
        parameter_names=_MODULATED_PARAMETERS, parameters_required=True, fixed_weight_offset=1.0,
        layout=layouts.modulated_layout, layout_arguments=("normalized_shape",), settings=(_MODULATED_NDIM,),
        natural=_MODULATED_NATURAL, group="the trailing normalized_shape, per leading index", **_MODULATED_READER,
        notes=(_MODULATION_NOTE,),
    ),
    Variant(
        name="adaptive_rms_norm", summary="rms_norm without affine, then xhat * (1 + scale) per sample",
        arguments=(_X, Argument("normalized_shape"), Argument("scale"), Argument("eps", 1e-6)), centered=False,
        parameter_names=_MODULATED_PARAMETERS, parameters_required=True, fixed_weight_offset=1.0,
        layout=layouts.modulated_layout, layout_arguments=("normalized_shape",), settings=(_MODULATED_NDIM,),
        natural=_MODULATED_NATURAL, group="the trailing normalized_shape, per leading index (no centering)",
        **_MODULATED_READER, notes=(_MODULATION_NOTE,),
    ),
)}
NAMES = tuple(VARIANTS)


def get(name: object, *, argument: str = "variant") -> Variant:
    """The record of ``name``; NormSpecError naming ``argument`` for an unknown one."""
    require(name in VARIANTS, argument, name, f"one of {', '.join(NAMES)}")
    return VARIANTS[name]  # type: ignore[index]


def matching(predicate: Callable[[Variant], bool]) -> tuple[str, ...]:
    """Names of the variants for which ``predicate`` holds (e.g. ``lambda v: v.centered``)."""
    return tuple(name for name, v in VARIANTS.items() if predicate(v))


# --- cross-variant identities ------------------------------------------------------------------

@dataclass(frozen=True, kw_only=True)
class Relation:
    """An identity between two variants: ``variant`` equals ``other`` on suitable inputs."""

    name: str
    variant: str
    other: str
    statement: str


RELATIONS: dict[str, Relation] = {r.name: r for r in (
    Relation(name="group_norm_one_group", variant="group_norm", other="layer_norm",
             statement="group_norm(G=1) = layer_norm over (C, *S), then the per-channel affine"),
    Relation(name="group_norm_all_groups", variant="group_norm", other="instance_norm",
             statement="group_norm(G=C) = instance_norm"),
    Relation(name="rms_is_layer_norm", variant="rms_norm", other="layer_norm",
             statement="rms_norm = layer_norm (no bias) on input whose groups have mean exactly zero"),
    Relation(name="batch_norm_transposed", variant="batch_norm", other="layer_norm",
             statement="batch_norm of (N, C) = layer_norm of its transpose over the last axis (no affine)"),
    *(Relation(name=f"offset_is_shifted_weight_{base}", variant=base, other=base,
               statement=f"{base}(weight_offset=c) = {base}(weight + c, weight_offset=0)")
      for base in ("layer_norm", "rms_norm")),
    *(Relation(name=f"fused_add_is_norm_of_sum_{base}", variant=f"fused_add_{base}", other=base,
               statement=f"fused_add_{base}(x, residual) = ({base}(x + residual), x + residual), gradients included")
      for base in ("layer_norm", "rms_norm")),
    *(Relation(name=f"unmodulated_{base}", variant=f"adaptive_{base}", other=base,
               statement=f"adaptive_{base} with scale = 0 and shift = 0 = {base} without affine parameters")
      for base in ("layer_norm", "rms_norm")),
    *(Relation(name=f"modulated_per_sample_{base}", variant=f"adaptive_{base}", other=f"adaptive_{base}",
               statement=f"adaptive_{base} of a batch = its calls on one sample at a time "
                         f"(x[b:b+1], scale[b:b+1], ...), stacked")
      for base in ("layer_norm", "rms_norm")),
)}
