"""Wall time of forward + backward of the reference normalizations against native torch.

For each variant, on one float32 input of shape (N, C, H, W) (default 32x64x32x32):

- batch_norm: training mode, weight/bias of shape (C,), running statistics updated;
- layer_norm: over the last dim W, weight/bias of shape (W,) (the transformer-like case);
- instance_norm: batch statistics, weight/bias of shape (C,);
- group_norm: 8 groups, weight/bias of shape (C,);
- rms_norm: over the last dim W, weight of shape (W,),

it times three implementations of one forward + backward step for a fixed random grad_out:

- numpy_ref: the forward and its ``*_backward`` on NumPy arrays (CPU only);
- torch_ref: the forward, then ``y.backward(grad_out)`` with x, weight, bias requiring grad;
- native: the same through ``torch.nn.functional``.

Each step is run 2 times as warm-up, then ``--repeats`` times with time.perf_counter
(CUDA synchronized); the table gives the median and min in milliseconds and the ratios
numpy_ref/native and torch_ref/native (medians) against the targets (numpy_ref within
1.5x native, torch_ref within 2x). Nothing is asserted: the figures are for reading.

Run from the repository root::

    .venv/bin/python benchmarks/bench_references.py [--repeats 7] [--shape 32,64,32,32]
        [--threads K] [--variants batch_norm,rms_norm] [--device cpu|cuda] [--json PATH]
"""
from __future__ import annotations

import argparse
import json
import statistics
import time
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F

from normspec.reference import numpy_ref, torch_ref

VARIANTS = ("batch_norm", "layer_norm", "instance_norm", "group_norm", "rms_norm")
IMPLEMENTATIONS = ("numpy_ref", "torch_ref", "native")
TARGETS = {"numpy_ref": 1.5, "torch_ref": 2.0}  # max ratio of median time to native's
WARMUP = 2
GROUPS = 8
Arrays = dict[str, np.ndarray | None]  # x, weight, bias, grad_out, running_mean, running_var
Data = dict[str, Any]  # the same as NumPy arrays or torch tensors
Timing = dict[str, float]  # median_ms, min_ms


def make_data(variant: str, shape: tuple[int, ...], seed: int = 0) -> Arrays:
    """The float32 inputs of one variant: random x, grad_out and affine parameters."""
    rng = np.random.default_rng(seed)
    param = (shape[-1],) if variant in ("layer_norm", "rms_norm") else (shape[1],)
    data: Arrays = {
        "x": rng.standard_normal(shape, dtype=np.float32),
        "grad_out": rng.standard_normal(shape, dtype=np.float32),
        "weight": 1 + 0.1 * rng.standard_normal(param, dtype=np.float32),
        "bias": None if variant == "rms_norm" else 0.1 * rng.standard_normal(param, dtype=np.float32),
        "running_mean": None, "running_var": None,
    }
    if variant == "batch_norm":
        data["running_mean"], data["running_var"] = np.zeros(shape[1], np.float32), np.ones(shape[1], np.float32)
    return data


def arguments(variant: str, d: Data) -> tuple[tuple, dict[str, Any]]:
    """Positional and keyword arguments of ``variant`` (torch.nn.functional's signature)."""
    x, affine = d["x"], {"weight": d["weight"], "bias": d["bias"]}
    if variant == "batch_norm":
        return (x, d["running_mean"], d["running_var"]), {**affine, "training": True}
    if variant == "instance_norm":
        return (x,), {**affine, "use_input_stats": True}
    if variant == "group_norm":
        return (x, GROUPS), affine
    if variant == "layer_norm":
        return (x, (x.shape[-1],)), affine
    return (x, (x.shape[-1],)), {"weight": d["weight"]}  # rms_norm


def numpy_step(variant: str, data: Arrays) -> Callable[[], None]:
    """One numpy_ref forward + ``*_backward`` call on copies of ``data``."""
    d = {k: None if v is None else v.copy() for k, v in data.items()}
    forward, backward = getattr(numpy_ref, variant), getattr(numpy_ref, f"{variant}_backward")
    args, kwargs = arguments(variant, d)

    def step() -> None:
        forward(*args, **kwargs)
        backward(d["grad_out"], *args, **kwargs)
    return step


def autograd_step(module: Any, variant: str, data: Arrays,
                  device: str) -> Callable[[], None]:
    """One forward + ``y.backward(grad_out)`` through ``module`` (torch_ref or F) on ``device``."""
    d = {k: None if v is None else torch.from_numpy(v.copy()).to(device) for k, v in data.items()}
    leaves = [d[k].requires_grad_() for k in ("x", "weight", "bias") if d[k] is not None]
    function, (args, kwargs) = getattr(module, variant), arguments(variant, d)

    def step() -> None:
        for leaf in leaves:
            leaf.grad = None
        function(*args, **kwargs).backward(d["grad_out"])
    return step


def measure(step: Callable[[], None], repeats: int, sync: Callable[[], None]) -> Timing:
    """Median and min wall time of ``step`` in ms, after WARMUP untimed runs."""
    for _ in range(WARMUP):
        step()
    sync()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        step()
        sync()
        times.append(time.perf_counter() - start)
    return {"median_ms": 1e3 * statistics.median(times), "min_ms": 1e3 * min(times)}


def bench_variant(variant: str, shape: tuple[int, ...], device: str, repeats: int) -> dict[str, Any]:
    """Timings of every implementation of ``variant`` (None when skipped) and the ratios."""
    data = make_data(variant, shape)
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    steps = {"numpy_ref": numpy_step(variant, data) if device == "cpu" else None,
             "torch_ref": autograd_step(torch_ref, variant, data, device),
             "native": autograd_step(F, variant, data, device)}
    times = {name: None if step is None else measure(step, repeats, sync) for name, step in steps.items()}
    native = times["native"]["median_ms"]
    ratios = {name: None if times[name] is None else times[name]["median_ms"] / native for name in TARGETS}
    return {"times": times, "ratios": ratios}


def header(args: argparse.Namespace, shape: tuple[int, ...]) -> list[str]:
    targets = ", ".join(f"{name} within {limit}x native" for name, limit in TARGETS.items())
    return [f"torch {torch.__version__}, numpy {np.__version__}, torch threads {torch.get_num_threads()}",
            f"input {'x'.join(map(str, shape))} float32 on {args.device}; forward + backward, "
            f"{WARMUP} warm-up runs, {args.repeats} repeats, median (min) ms",
            f"targets (median ratios): {targets}"]


def table_rows(results: dict[str, dict[str, Any]]) -> list[list[str]]:
    rows = []
    for variant, result in results.items():
        times = [("skipped" if t is None else f"{t['median_ms']:.2f} ({t['min_ms']:.2f})")
                 for t in result["times"].values()]
        ratios = [("-" if r is None else f"{r:.2f}x {'ok' if r <= TARGETS[n] else 'OVER'}")
                  for n, r in result["ratios"].items()]
        rows.append([variant, *times, *ratios])
    return rows


COLUMNS = ["variant", *(f"{name} ms" for name in IMPLEMENTATIONS), "numpy_ref/native", "torch_ref/native"]


def print_report(lines: list[str], rows: list[list[str]]) -> None:
    """A rich table when rich is importable, plain aligned text otherwise."""
    try:
        from rich.console import Console
        from rich.table import Table
    except ImportError:
        widths = [max(len(r[i]) for r in [COLUMNS, *rows]) for i in range(len(COLUMNS))]
        print("\n".join(lines))
        for row in [COLUMNS, *rows]:
            print("  ".join(cell.ljust(w) for cell, w in zip(row, widths)))
        return
    console = Console() if Console().is_terminal else Console(width=140)
    table = Table(*COLUMNS)
    for row in rows:
        ratios = (cell.replace(" OVER", " [red]OVER[/]").replace(" ok", " [green]ok[/]") for cell in row[1 + len(IMPLEMENTATIONS):])
        table.add_row(*row[:1 + len(IMPLEMENTATIONS)], *ratios)
    for line in lines:
        console.print(line, highlight=False)
    console.print(table)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7, help="timed runs per measurement (default 7)")
    parser.add_argument("--shape", default="32,64,32,32", help="N,C,*spatial (default 32,64,32,32)")
    parser.add_argument("--threads", type=int, help="torch.set_num_threads (default: torch's own)")
    parser.add_argument("--variants", default=",".join(VARIANTS), help="comma-separated subset")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--json", metavar="PATH", help="also write the figures to PATH")
    args = parser.parse_args()
    args.variants = args.variants.split(",")
    if unknown := set(args.variants) - set(VARIANTS):
        parser.error(f"unknown variants {sorted(unknown)}; choose from {', '.join(VARIANTS)}")
    args.shape = tuple(int(n) for n in args.shape.split(","))
    if len(args.shape) < 3 or args.shape[1] % GROUPS:
        parser.error(f"--shape must be N,C,*spatial (at least 3 dims) with C divisible by {GROUPS}")
    if args.repeats < 1:
        parser.error("--repeats must be >= 1")
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: torch.cuda.is_available() is False")
    return args


def main() -> None:
    args = parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    results = {variant: bench_variant(variant, args.shape, args.device, args.repeats) for variant in args.variants}
    lines = header(args, args.shape)
    if args.device == "cuda":
        lines.append("note: numpy_ref skipped on cuda (NumPy runs on the CPU only)")
    print_report(lines, table_rows(results))
    if args.json:
        meta = {"torch": torch.__version__, "numpy": np.__version__, "threads": torch.get_num_threads(),
                "shape": list(args.shape), "dtype": "float32", "device": args.device, "warmup": WARMUP,
                "repeats": args.repeats, "targets": TARGETS}
        with open(args.json, "w") as file:
            json.dump({**meta, "results": results}, file, indent=2)


if __name__ == "__main__":
    main()
