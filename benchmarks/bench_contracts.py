"""How far each built-in precision contract is from the float64 truth, per dtype, and how wide
its emulation's interval is: the figures behind ``--contract`` (``normspec.derive.contracts``).

For every contract, output dtype (float16, bfloat16) and weight dtype (x's own, float32), on
``--cases`` layer_norm and rms_norm cases of ``--rows`` rows of ``--hidden`` elements (standard
normal x, weight 1 + 0.5 N(0, 1), bias N(0, 1), eps 1e-5, seeds 0..cases-1), it prints:

- the contract's own error: the median and max distance of its nominal output (exact arithmetic
  between its rounding points) from the float64 truth, in ulps of the output dtype at the
  quantity's scale, max(|y|, |gamma xhat| + |beta|) (``dtypes.spacing``; as the tolerance reports);
- the emulation's width: the median and max width of the interval of values a kernel keeping the
  contract may return (float32 noise, each rounding point both ways), in output ulps.

Nothing is asserted: the figures are for reading (the closing note of issue 12 quotes them).

    python benchmarks/bench_contracts.py [--cases 4] [--rows 64] [--hidden 1024]
"""
from __future__ import annotations

import argparse
import time

import numpy as np

from normspec.derive import contracts, dtypes
from normspec.verify.cases.case import Case
from normspec.verify.checks.base import Context
from normspec.verify.truth.contracts import emulate


def measure(contract: contracts.Contract, variant: str, dtype: str, weight_dtype: str | None, *,
            cases: int, rows: int, hidden: int) -> tuple[np.ndarray, np.ndarray]:
    """(own error, interval width) in output ulps, over every element of every case."""
    errors, widths = [], []
    for seed in range(cases):
        case = Case(variant, (rows, hidden), dtype, eps=1e-5, seed=seed, parameter_dtype=weight_dtype)
        ctx = Context.of(case)
        emulated = emulate(contract, case, ctx.arrays, work=ctx.view.work, param=ctx.view.param)
        # ulps at the quantity's scale, |gamma xhat| + |beta| (as the tolerance policy reports them): an
        # output near zero by cancellation is measured against the terms it cancelled
        scale = np.abs(ctx.gamma() * ctx.xhat()) + np.abs(ctx.view.param(ctx.arrays["bias"], 0.0))
        unit = dtypes.spacing(dtype, np.maximum(np.abs(ctx.truth.y), scale))
        errors.append(np.abs(emulated.nominal - ctx.truth.y) / unit)
        widths.append((emulated.y.hi - emulated.y.lo) / unit)
    return np.concatenate([e.ravel() for e in errors]), np.concatenate([w.ravel() for w in widths])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=4)
    parser.add_argument("--rows", type=int, default=64)
    parser.add_argument("--hidden", type=int, default=1024)
    args = parser.parse_args()
    start = time.perf_counter()
    print(f"{'contract':<13}{'variant':<11}{'x':<10}{'weight':<10}{'own error (ulp) median / max':>30}"
          f"{'interval width (ulp) median / max':>36}")
    for contract in contracts.CONTRACTS.values():
        for variant in ("layer_norm", "rms_norm"):
            for dtype in dtypes.LOW_PRECISION:
                for weight_dtype in (None, "float32"):
                    error, width = measure(contract, variant, dtype, weight_dtype, cases=args.cases,
                                           rows=args.rows, hidden=args.hidden)
                    print(f"{contract.name:<13}{variant:<11}{dtype:<10}{weight_dtype or dtype:<10}"
                          f"{np.median(error):>15.3g} / {np.max(error):<12.3g}"
                          f"{np.median(width):>19.3g} / {np.max(width):<12.3g}")
    print(f"{args.cases} cases of {args.rows} x {args.hidden} per row; {time.perf_counter() - start:.1f} s")


if __name__ == "__main__":
    main()
