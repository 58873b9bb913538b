"""Wall time of forward + backward of the reference normalizations against native torch.

For each variant, on one float32 input of shape (N, C, H, W) (default 32x64x32x32):

- batch_norm: training mode, weight/bias of shape (C,), running statistics updated;
- layer_norm: over the last dim W, weight/bias of shape (W,) (the transformer-like case);
- instance_norm: batch statistics, weight/bias of shape (C,), running statistics updated;
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

With ``--compare-kernels DIR`` it also times numpy_ref and torch_ref with the generated
kernel modules saved in DIR (``numpy_kernels.py``, ``torch_kernels.py``: an older
generation) against the current ones, in the same process: the glue's kernel modules are
swapped (``numpy_ref._BACKEND.kernels`` and the ``numpy_kernels`` / ``torch_kernels``
globals of numpy_ref and torch_ref) and old and new run in alternating blocks of timed
runs (3 rounds), so that drift of the machine affects both alike. It prints the medians and
the ratio new/old per variant and implementation against the limit (new within 1.25x old).

The kernels allocate arrays of the input's size, so their time includes glibc's handling of
freed memory: depending on the heap's history it returns memory to the OS, and the page
faults of fresh memory (microseconds per page in a VM) can dominate a step and change
between runs of the same code. ``--steady-malloc`` pins glibc's thresholds first (mallopt),
so that the figures measure the kernels; run with and without it to see both.

Run from the repository root::

    .venv/bin/python benchmarks/bench_references.py [--repeats 7] [--shape 32,64,32,32]
        [--threads K] [--variants batch_norm,rms_norm] [--device cpu|cuda] [--json PATH]
        [--compare-kernels /tmp/old_kernels] [--steady-malloc]
"""
from __future__ import annotations

import argparse
import contextlib
import ctypes
import ctypes.util
import importlib.util
import json
import statistics
import time
from pathlib import Path
from types import ModuleType
from typing import Any, Callable, Iterator

import numpy as np
import torch
import torch.nn.functional as F

from normspec.derive import variants
from normspec.reference import numpy_ref, torch_ref
from normspec.verify.cases.case import Case

VARIANTS = variants.NAMES
IMPLEMENTATIONS = ("numpy_ref", "torch_ref", "native")
TARGETS = {"numpy_ref": 1.5, "torch_ref": 2.0}  # max ratio of median time to native's
KERNEL_LIMIT = 1.25  # --compare-kernels: max ratio of the current kernels' median to the old ones'
ROUNDS = 3  # --compare-kernels: blocks of timed runs per kernel module
WARMUP = 2
GROUPS = 8
Arrays = dict[str, np.ndarray | None]  # x, weight, bias, grad_out, running_mean, running_var
Data = dict[str, Any]  # the same as NumPy arrays or torch tensors
Timing = dict[str, float]  # median_ms, min_ms


def case_of(variant: str, shape: tuple[int, ...]) -> Case:
    """The benchmarked call: normalized over the last dim, GROUPS groups, batch statistics, running
    statistics updated where the variant has them (the registry's settings, not per-variant code)."""
    record = variants.get(variant)
    return Case(variant, shape, "float32", normalized_ndim=1, num_groups=GROUPS, training=True,
                running=record.running is not None)


def make_data(variant: str, shape: tuple[int, ...], seed: int = 0) -> Arrays:
    """The float32 inputs of one variant: random x, grad_out and affine parameters."""
    rng = np.random.default_rng(seed)
    case = case_of(variant, shape)
    param = case.layout.weight_shape
    channels = case.layout.param_shape[1] if case.record.running else 0
    return {
        "x": rng.standard_normal(shape, dtype=np.float32),
        "grad_out": rng.standard_normal(shape, dtype=np.float32),
        "weight": 1 + 0.1 * rng.standard_normal(param, dtype=np.float32),
        "bias": 0.1 * rng.standard_normal(param, dtype=np.float32) if case.record.has_bias else None,
        "running_mean": np.zeros(channels, np.float32) if case.running else None,
        "running_var": np.ones(channels, np.float32) if case.running else None,
    }


def arguments(variant: str, d: Data) -> tuple[tuple, dict[str, Any]]:
    """Positional and keyword arguments of ``variant`` (torch.nn.functional's signature)."""
    case = case_of(variant, tuple(d["x"].shape))
    return tuple(case.arguments(d).values()), {}


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


# --- --compare-kernels: the current generated kernels against an older generation ---------

Kernels = dict[str, ModuleType]  # "numpy_ref" / "torch_ref" -> a generated kernel module


def load_kernels(folder: Path) -> Kernels:
    """The kernel modules saved in ``folder`` (numpy_kernels.py, torch_kernels.py), imported
    under names of their own (they are self-contained: stdlib, numpy, torch)."""
    modules = {}
    for implementation, stem in (("numpy_ref", "numpy_kernels"), ("torch_ref", "torch_kernels")):
        path = folder / f"{stem}.py"
        spec = importlib.util.spec_from_file_location(f"_compared_{stem}", path)
        if spec is None or not path.is_file():
            raise SystemExit(f"--compare-kernels: no {path}")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        modules[implementation] = module
    return modules


def current_kernels() -> Kernels:
    return {"numpy_ref": numpy_ref.numpy_kernels, "torch_ref": torch_ref.torch_kernels}


@contextlib.contextmanager
def kernels_in_use(implementation: str, module: ModuleType) -> Iterator[None]:
    """Run ``implementation``'s glue on the kernel ``module`` (restored on exit).

    numpy_ref calls its kernels through the ``numpy_kernels`` global (forward) and
    ``_BACKEND.kernels`` (backward); torch_ref through its ``torch_kernels`` global
    (the autograd.Function) and ``_BACKEND.kernels`` (``*_backward``)."""
    glue, name = ((numpy_ref, "numpy_kernels") if implementation == "numpy_ref" else (torch_ref, "torch_kernels"))
    saved = getattr(glue, name), glue._BACKEND.__dict__.get("kernels")
    setattr(glue, name, module)
    glue._BACKEND.kernels = module
    try:
        yield
    finally:
        setattr(glue, name, saved[0])
        if saved[1] is None:
            del glue._BACKEND.kernels  # back to the class attribute
        else:
            glue._BACKEND.kernels = saved[1]


def measure_alternating(step: Callable[[], None], implementation: str, modules: dict[str, ModuleType],
                        repeats: int, sync: Callable[[], None]) -> dict[str, Timing]:
    """Median and min wall time of ``step`` with each kernel module: ROUNDS rounds, each running
    every module's WARMUP untimed and then its share of the ``repeats`` timed runs in a block
    (so that each settles the heap into its own pattern, and drift affects all alike)."""
    times: dict[str, list[float]] = {label: [] for label in modules}
    rounds = min(ROUNDS, repeats)
    for index in range(rounds):
        for label, module in modules.items():
            with kernels_in_use(implementation, module):
                for _ in range(WARMUP):
                    step()
                sync()
                for _ in range(repeats // rounds + (index < repeats % rounds)):
                    start = time.perf_counter()
                    step()
                    sync()
                    times[label].append(time.perf_counter() - start)
    return {label: {"median_ms": 1e3 * statistics.median(t), "min_ms": 1e3 * min(t)} for label, t in times.items()}


def steady_malloc() -> str:
    """Pin glibc malloc's thresholds so that freed memory stays in the heap (mallopt: no trimming,
    no mmap below 32 MiB). By default glibc returns memory to the OS depending on the heap's
    history, and in a VM the page faults of fresh memory (microseconds per page) can dominate a
    step and vary 2x between runs of the same code. Returns what was done, for the header."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c"))
        m_trim_threshold, m_top_pad, m_mmap_threshold = -1, -2, -3
        ok = all(libc.mallopt(option, value) == 1 for option, value in (
            (m_mmap_threshold, 32 << 20), (m_trim_threshold, 1 << 30), (m_top_pad, 64 << 20)))
    except (OSError, AttributeError, TypeError):
        ok = False
    return ("malloc pinned (mallopt: mmap threshold 32 MiB, trim threshold 1 GiB, top pad 64 MiB)" if ok
            else "--steady-malloc: mallopt unavailable (not glibc); malloc left as is")


def compare_variant(variant: str, shape: tuple[int, ...], device: str, repeats: int,
                    old: Kernels) -> dict[str, Any]:
    """Old and current kernels' timings of numpy_ref and torch_ref on ``variant``, and new/old."""
    data = make_data(variant, shape)
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    new = current_kernels()
    steps = {"numpy_ref": numpy_step(variant, data) if device == "cpu" else None,
             "torch_ref": autograd_step(torch_ref, variant, data, device)}
    result = {}
    for implementation, step in steps.items():
        if step is None:
            continue
        times = measure_alternating(step, implementation, {"old": old[implementation], "new": new[implementation]},
                                    repeats, sync)
        result[implementation] = {**times, "ratio": times["new"]["median_ms"] / times["old"]["median_ms"]}
    return result


COMPARE_COLUMNS = ["variant", "implementation", "old kernels ms", "new kernels ms", "new/old"]


def compare_rows(comparison: dict[str, dict[str, Any]]) -> list[list[str]]:
    rows = []
    for variant, result in comparison.items():
        for implementation, r in result.items():
            rows.append([variant, implementation,
                         *(f"{r[k]['median_ms']:.2f} ({r[k]['min_ms']:.2f})" for k in ("old", "new")),
                         f"{r['ratio']:.2f}x {'ok' if r['ratio'] <= KERNEL_LIMIT else 'OVER'}"])
    return rows


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


def print_report(lines: list[str], rows: list[list[str]], columns: list[str] = COLUMNS,
                 ratio_columns: int = len(TARGETS)) -> None:
    """A rich table when rich is importable, plain aligned text otherwise (the last
    ``ratio_columns`` columns are ratios marked ok / OVER)."""
    try:
        from rich.console import Console
        from rich.table import Table
    except ImportError:
        widths = [max(len(r[i]) for r in [columns, *rows]) for i in range(len(columns))]
        print("\n".join(lines))
        for row in [columns, *rows]:
            print("  ".join(cell.ljust(w) for cell, w in zip(row, widths)))
        return
    console = Console() if Console().is_terminal else Console(width=140)
    table = Table(*columns)
    plain = len(columns) - ratio_columns
    for row in rows:
        ratios = (cell.replace(" OVER", " [red]OVER[/]").replace(" ok", " [green]ok[/]") for cell in row[plain:])
        table.add_row(*row[:plain], *ratios)
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
    parser.add_argument("--steady-malloc", action="store_true",
                        help="pin glibc malloc's thresholds first (no trimming), so that page faults of "
                             "fresh memory do not depend on the heap's history")
    parser.add_argument("--compare-kernels", metavar="DIR", type=Path,
                        help="also time numpy_ref and torch_ref with the kernel modules saved in DIR "
                             "(numpy_kernels.py, torch_kernels.py) against the current ones")
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
    malloc = steady_malloc() if args.steady_malloc else "malloc as is"
    if args.threads:
        torch.set_num_threads(args.threads)
    results = {variant: bench_variant(variant, args.shape, args.device, args.repeats) for variant in args.variants}
    lines = header(args, args.shape)
    lines[0] += f"; {malloc}"
    if args.device == "cuda":
        lines.append("note: numpy_ref skipped on cuda (NumPy runs on the CPU only)")
    print_report(lines, table_rows(results))
    comparison = None
    if args.compare_kernels:
        old = load_kernels(args.compare_kernels)
        comparison = {variant: compare_variant(variant, args.shape, args.device, args.repeats, old)
                      for variant in args.variants}
        print()
        print_report([f"kernels of {args.compare_kernels} (old) against the current ones (new), "
                      f"{args.repeats} timed runs each in {min(ROUNDS, args.repeats)} alternating blocks, "
                      f"median (min) ms; limit: new within {KERNEL_LIMIT}x old"],
                     compare_rows(comparison), COMPARE_COLUMNS, ratio_columns=1)
    if args.json:
        meta = {"torch": torch.__version__, "numpy": np.__version__, "threads": torch.get_num_threads(),
                "shape": list(args.shape), "dtype": "float32", "device": args.device, "warmup": WARMUP,
                "repeats": args.repeats, "targets": TARGETS, "malloc": malloc}
        extra = {} if comparison is None else {"kernel_limit": KERNEL_LIMIT, "compare_kernels":
                                               str(args.compare_kernels), "kernel_comparison": comparison}
        with open(args.json, "w") as file:
            json.dump({**meta, "results": results, **extra}, file, indent=2)


if __name__ == "__main__":
    main()
