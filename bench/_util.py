"""Timing helpers shared by every benchmark section: samples → ops/s, p50, p99, tables."""

from __future__ import annotations

import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass


@dataclass
class Result:
    name: str
    ops: int
    seconds: float
    p50_us: float
    p99_us: float

    @property
    def ops_per_s(self) -> float:
        return self.ops / self.seconds if self.seconds else float("inf")


def measure(name: str, fn: Callable[[int], object], n: int, warmup: int = 50) -> Result:
    """Call fn(i) n times (after a warm-up) and time each call."""
    for i in range(warmup):
        fn(i)
    samples = []
    start = time.perf_counter()
    for i in range(n):
        t0 = time.perf_counter()
        fn(warmup + i)
        samples.append(time.perf_counter() - t0)
    total = time.perf_counter() - start
    return summarize(name, samples, total)


def compare(
    a: tuple[str, Callable[[int], object]], b: tuple[str, Callable[[int], object]], n: int
) -> tuple[Result, Result]:
    """Time two operations in alternation, so machine noise hits both alike."""
    for i in range(50):
        a[1](i)
        b[1](i)
    samples: tuple[list[float], list[float]] = ([], [])
    for i in range(n):
        for side, (_, fn) in enumerate((a, b)):
            t0 = time.perf_counter()
            fn(50 + i)
            samples[side].append(time.perf_counter() - t0)
    return (
        summarize(a[0], samples[0], sum(samples[0])),
        summarize(b[0], samples[1], sum(samples[1])),
    )


def summarize(name: str, samples: list[float], total: float) -> Result:
    """Build a Result from per-call durations in seconds."""
    ordered = sorted(samples)
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    return Result(name, len(samples), total, statistics.median(ordered) * 1e6, p99 * 1e6)


def table(title: str, rows: Sequence[tuple[Result, Result | None, str]]) -> None:
    """Print rows of (result, baseline or None, note) with the p50 ratio to the baseline."""
    out = sys.stdout
    out.write(f"\n## {title}\n\n")
    out.write(
        "| operation | ops/s | p50 µs | p99 µs | baseline | base p50 µs | ratio (p50) | note |\n"
    )
    out.write("|---|---:|---:|---:|---|---:|---:|---|\n")
    for res, base, note in rows:
        if base is None:
            base_cols = "| – | – | – "
        else:
            base_cols = f"| {base.name} | {base.p50_us:.0f} | {res.p50_us / base.p50_us:.2f}× "
        out.write(
            f"| {res.name} | {res.ops_per_s:,.0f} | {res.p50_us:.0f} | {res.p99_us:.0f} "
            f"{base_cols}| {note} |\n"
        )
    out.flush()


def say(text: str) -> None:
    """Print a progress line on stderr."""
    sys.stderr.write(text + "\n")
    sys.stderr.flush()
