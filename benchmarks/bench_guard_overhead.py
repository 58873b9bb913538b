"""What putting the process state back after every call costs the battery.

Every call of an implementation goes through ``verify.implementations.guard.guarded``, which
captures the process state before the call and restores it after (``ProcessState``). This runs
the default battery (the ci profile) of one built-in implementation on some variants, with the
capture and restore as shipped and with them replaced by a no-op, alternating, and prints the
median time of each, their ratio and the number of guarded calls. Nothing is asserted.

Run from the repository root::

    .venv/bin/python benchmarks/bench_guard_overhead.py [--impl torch_ref] [--variants layer_norm,batch_norm]
        [--rounds 3]
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from normspec.verify.implementations import guard  # noqa: E402
from normspec.verify.implementations.builtin import builtin  # noqa: E402
from normspec.verify.implementations.process_state import ProcessState  # noqa: E402
from normspec.verify.running.battery import run_battery  # noqa: E402


class _Unguarded:
    """A ProcessState that captures and restores nothing."""

    @classmethod
    def capture(cls):
        return cls()

    def restore(self) -> list[str]:
        return []


class _Counting:
    """ProcessState as shipped, counting the captures."""

    calls = 0

    @classmethod
    def capture(cls):
        cls.calls += 1
        return ProcessState.capture()


def _battery_seconds(state_class, impl: str, variants: list[str]) -> float:
    guard.ProcessState = state_class
    try:
        start = time.perf_counter()
        run_battery(builtin(impl), variants=variants)
        return time.perf_counter() - start
    finally:
        guard.ProcessState = ProcessState


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--impl", default="torch_ref")
    parser.add_argument("--variants", default="layer_norm,batch_norm")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    variants = args.variants.split(",")
    _battery_seconds(ProcessState, args.impl, variants[:1])  # warm up imports and caches
    with_state, without = [], []
    for _ in range(args.rounds):
        _Counting.calls = 0
        with_state.append(_battery_seconds(_Counting, args.impl, variants))
        without.append(_battery_seconds(_Unguarded, args.impl, variants))
    a, b = statistics.median(with_state), statistics.median(without)
    print(f"{args.impl} battery on {', '.join(variants)} (ci profile), {args.rounds} rounds, alternating:")
    print(f"  guarded calls per battery: {_Counting.calls}")
    print(f"  with the process state put back: median {a:.2f} s  {[round(s, 2) for s in with_state]}")
    print(f"  without:                         median {b:.2f} s  {[round(s, 2) for s in without]}")
    print(f"  ratio {a / b:.3f} (overhead {100 * (a / b - 1):+.1f}%), "
          f"{1e6 * (a - b) / max(_Counting.calls, 1):.1f} us per call")


if __name__ == "__main__":
    main()
