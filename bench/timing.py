"""Timing and table helpers shared by the benchmarks (standard library only:
bench_redis_worker.py also runs in the peer's virtual environment)."""

from __future__ import annotations

import gc
import math
import statistics
import sys
import time
from collections.abc import Callable


def best_ns(run: Callable[[], object], repeats: int) -> int:
    """Best wall time of ``run`` over ``repeats`` runs, GC off while timing."""
    best = sys.maxsize
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        for _ in range(repeats):
            start = time.perf_counter_ns()
            run()
            best = min(best, time.perf_counter_ns() - start)
    finally:
        if gc_was_enabled:
            gc.enable()
    return best


def print_table(header: list[str], rows: list[list[str]]) -> None:
    """A markdown table: label column left-aligned, numbers right-aligned."""
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]
    print("| " + " | ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)) + " |")
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for label, *cells in rows:
        padded = [label.ljust(widths[0])] + [
            c.rjust(w) for c, w in zip(cells, widths[1:], strict=True)
        ]
        print("| " + " | ".join(padded) + " |")


def call_loop(method: Callable[..., object], arg: object | None, n: int) -> Callable[[], None]:
    """A loop of ``n`` direct calls of ``method`` (no wrapper per call)."""

    def run_no_arg() -> None:
        for _ in range(n):
            method()

    def run_with_arg() -> None:
        for _ in range(n):
            method(arg)

    return run_no_arg if arg is None else run_with_arg


def print_targets(misses: list[str]) -> None:
    """The closing line: every target met, or the misses."""
    if misses:
        print("targets: missed:")
        for miss in misses:
            print(f"- {miss}")
    else:
        print("targets: met")


def median_interval(values: list[float]) -> tuple[float, float, float]:
    """Median and its 95% confidence interval (distribution-free: the order
    statistics around n/2 +- 1.96 sqrt(n)/2)."""
    ordered = sorted(values)
    n = len(ordered)
    half = 1.96 * math.sqrt(n) / 2
    low = max(0, math.floor(n / 2 - half))
    high = min(n - 1, math.ceil(n / 2 + half))
    return statistics.median(ordered), ordered[low], ordered[high]
