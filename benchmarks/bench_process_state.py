"""Cost of ProcessState.capture() + restore(), the guard the harness puts around every kernel call.

Two cases, each timed with time.perf_counter per capture+restore pair: nothing changed (the
case of almost every call, which must stay well under 50 us) and one change made inside the
window (torch's CPU RNG advanced by one draw, which restore then detects and puts back; the
draw itself is inside the timing). Each case runs ``--rounds`` rounds of ``--repetitions``
pairs after a warm-up; it prints the median of each round and the median over all, in
microseconds. Nothing is asserted: the figures are for reading.

Run from the repository root::

    .venv/bin/python benchmarks/bench_process_state.py [--repetitions 2000] [--rounds 5]
"""
from __future__ import annotations

import argparse
import statistics
import time
from typing import Callable

import torch

from normspec.verify.implementations.process_state import ProcessState


def _nothing() -> None:
    pass


def _one_draw() -> None:
    torch.rand(1)


def _timed_pairs(change: Callable[[], None], repetitions: int) -> list[float]:
    """Microseconds of each capture + change + restore."""
    clock, capture = time.perf_counter, ProcessState.capture
    times = []
    for _ in range(repetitions):
        start = clock()
        state = capture()
        change()
        state.restore()
        times.append((clock() - start) * 1e6)
    return times


def _report(label: str, change: Callable[[], None], repetitions: int, rounds: int) -> None:
    _timed_pairs(change, repetitions // 10 + 1)  # warm-up: first calls fill caches, lazy imports
    medians = [statistics.median(_timed_pairs(change, repetitions)) for _ in range(rounds)]
    per_round = " ".join(f"{m:.2f}" for m in medians)
    print(f"{label:<40} median {statistics.median(medians):7.2f} us   (rounds: {per_round})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repetitions", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    print(f"capture() + restore(), {args.rounds} rounds of {args.repetitions} repetitions")
    _report("nothing changed", _nothing, args.repetitions, args.rounds)
    _report("one change (torch's CPU RNG, one draw)", _one_draw, args.repetitions, args.rounds)
    # For scale: the change alone, without the guard.
    clock = time.perf_counter
    alone = []
    for _ in range(args.repetitions):
        start = clock()
        _one_draw()
        alone.append((clock() - start) * 1e6)
    print(f"{'(the draw alone, no guard)':<40} median {statistics.median(alone):7.2f} us")


if __name__ == "__main__":
    main()
