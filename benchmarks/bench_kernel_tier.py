"""What one kernel-scale check example costs: the implementation's own forward + backward against
the harness's work around it (``--scale kernel``, ``verify.cases.kernel``).

For numpy_ref, torch_ref and torch_native (``torch.nn.functional``), for layer_norm and rms_norm,
at a few kernel-scale shapes (default (4097, 1023), (65, 32769), (15, 131073), float32, affine,
standard-normal values), it times with time.perf_counter (the median of ``--repeats`` runs after
``--warmup`` runs):

- impl: the implementation's own forward + backward, called directly on tensors (arrays) built
  beforehand: numpy_ref's forward and its ``*_backward``; torch's forward, then
  ``torch.autograd.grad`` for x, weight and bias;
- run: the same through normspec's ``Implementation.run`` (what a check calls): the float64
  arrays cast to the case's dtype, the memory layout, the guard (time limit, process state),
  the contract checks (shape, dtype, inputs unchanged, no aliasing) and the float64 results;
- the harness's work for one example of the backward check: ``case.arrays()`` (the case's
  float64 values, rounded to its dtype), the truth (``definition.truth``, the float64 autograd of
  the plain definition, i.e. ``Context.of(case)`` less its arrays) and the comparisons
  (``compare`` of y and of dx, dweight, dbias with their policies);
- check: ``CHECKS["backward"].run(impl, case)`` as a whole (arrays, truth, run, comparisons).

harness = check - impl (what one example costs beyond the implementation's own call), and the
ratio harness / impl against the target (<= 3x). Nothing is asserted: the figures are for reading.

Run from the repository root::

    .venv/bin/python benchmarks/bench_kernel_tier.py [--repeats 5] [--warmup 1]
        [--shapes 4097x1023,65x32769,15x131073] [--impls numpy_ref,torch_ref,torch_native]
        [--variants layer_norm,rms_norm] [--dtype float32] [--threads K]
"""
from __future__ import annotations

import argparse
import math
import os
import statistics
import time
from typing import Callable

import numpy as np
import torch

from normspec.reference import numpy_ref
from normspec.verify.cases.case import Case
from normspec.verify.checks import CHECKS
from normspec.verify.checks.base import Context
from normspec.verify.checks.oracle_checks import gradient_comparisons
from normspec.verify.implementations.builtin import builtin
from normspec.verify.truth import definition
from normspec.verify.truth.tolerance import compare

IMPLS = ("numpy_ref", "torch_ref", "torch_native")
VARIANTS = ("layer_norm", "rms_norm")
SHAPES = ((4097, 1023), (65, 32769), (15, 131073))
TARGET = 3.0  # harness / impl


def median_ms(step: Callable[[], object], repeats: int, warmup: int) -> float:
    for _ in range(warmup):
        step()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return 1e3 * statistics.median(times)


def direct_step(name: str, case: Case) -> Callable[[], object]:
    """The implementation's forward + backward on inputs built once, outside the timed step."""
    arrays = case.arrays()
    normalized_shape = case.shape[-1:]
    eps = case.eps
    rms = case.variant == "rms_norm"
    if name == "numpy_ref":
        x, w, g = (np.array(arrays[k], dtype=case.dtype) for k in ("x", "weight", "grad_out"))
        b = None if rms else np.array(arrays["bias"], dtype=case.dtype)
        if rms:
            return lambda: (numpy_ref.rms_norm(x, normalized_shape, w, eps),
                            numpy_ref.rms_norm_backward(g, x, normalized_shape, w, eps))
        return lambda: (numpy_ref.layer_norm(x, normalized_shape, w, b, eps),
                        numpy_ref.layer_norm_backward(g, x, normalized_shape, w, b, eps))
    fn = builtin(name).functions[case.variant]
    dtype = getattr(torch, case.dtype)
    x, w, g = (torch.from_numpy(np.array(arrays[k])).to(dtype) for k in ("x", "weight", "grad_out"))
    b = None if rms else torch.from_numpy(np.array(arrays["bias"])).to(dtype)
    leaves = [t.requires_grad_() for t in (x, w, b) if t is not None]

    def step():
        y = fn(x, normalized_shape, w, eps) if rms else fn(x, normalized_shape, w, b, eps)
        return y, torch.autograd.grad(y, leaves, g)

    return step


def harness_parts(name: str, case: Case, repeats: int, warmup: int) -> dict[str, float]:
    impl = builtin(name)
    arrays = case.arrays()
    ctx = Context(case, arrays, definition.truth(case, arrays))
    got = impl.run(case, arrays)

    def comparisons():
        return [compare("y", got.y, ctx.truth.y, ctx.policy_y()), *gradient_comparisons(ctx, got)]

    assert all(c.ok for c in comparisons()), [c.line() for c in comparisons() if not c.ok]
    return {
        "run": median_ms(lambda: impl.run(case, arrays), repeats, warmup),
        "arrays": median_ms(case.arrays, repeats, warmup),
        "truth": median_ms(lambda: definition.truth(case, arrays), repeats, warmup),
        "compare": median_ms(comparisons, repeats, warmup),
        "check": median_ms(lambda: CHECKS["backward"].run(impl, case), repeats, warmup),
    }


def shape_option(text: str) -> tuple[tuple[int, ...], ...]:
    try:
        shapes = tuple(tuple(int(n) for n in part.split("x")) for part in text.split(",") if part)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected shapes like 4097x1023,15x131073") from None
    if not shapes or any(len(s) < 2 or min(s) < 1 for s in shapes):
        raise argparse.ArgumentTypeError(f"{text!r}: expected shapes of rank >= 2, positive sides")
    return shapes


def names_option(allowed: tuple[str, ...]) -> Callable[[str], tuple[str, ...]]:
    def parse(text: str) -> tuple[str, ...]:
        names = tuple(n.strip() for n in text.split(",") if n.strip())
        unknown = [n for n in names if n not in allowed]
        if unknown or not names:
            raise argparse.ArgumentTypeError(f"{text!r}: expected some of {', '.join(allowed)}")
        return names
    return parse


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per figure (median; default 5)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed runs first (default 1)")
    parser.add_argument("--shapes", type=shape_option, default=SHAPES, help="e.g. 4097x1023,65x32769,15x131073")
    parser.add_argument("--impls", type=names_option(IMPLS), default=IMPLS)
    parser.add_argument("--variants", type=names_option(VARIANTS), default=VARIANTS)
    parser.add_argument("--dtype", choices=("float32", "float64"), default="float32")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} CPUs, "
          f"load {os.getloadavg()[0]:.2f}; {args.dtype}, median of {args.repeats} after {args.warmup} warm-up")
    print("impl: the function and its backward on prebuilt inputs; run: through Implementation.run; "
          "arrays/truth/compare (y, dx, dweight, dbias): the harness's parts; check: CHECKS['backward'].run; harness = check - impl")
    header = (f"{'implementation':<13} {'variant':<10} {'shape':<13} {'impl ms':>8} {'run ms':>8} "
              f"{'arrays':>7} {'truth':>7} {'compare':>8} {'check ms':>9} {'harness ms':>10} {'ratio':>6}  target")
    print(header)
    print("-" * len(header))
    worst = 0.0
    for shape in args.shapes:
        for variant in args.variants:
            case = Case(variant, shape, args.dtype, eps=1e-5, values="normal", seed=1)
            for name in args.impls:
                impl_ms = median_ms(direct_step(name, case), args.repeats, args.warmup)
                parts = harness_parts(name, case, args.repeats, args.warmup)
                harness = parts["check"] - impl_ms
                ratio = harness / impl_ms
                worst = max(worst, ratio)
                shown = "x".join(map(str, shape))
                print(f"{name:<13} {variant:<10} {shown:<13} {impl_ms:8.1f} {parts['run']:8.1f} "
                      f"{parts['arrays']:7.1f} {parts['truth']:7.1f} {parts['compare']:8.1f} {parts['check']:9.1f} "
                      f"{harness:10.1f} {ratio:5.1f}x  {'ok' if ratio <= TARGET else 'over'}")
    print(f"worst harness/impl: {worst:.1f}x (target <= {TARGET:g}x); {math.prod(args.shapes[0])} elements in the "
          f"first shape")


if __name__ == "__main__":
    main()
