"""What the benchmarks share: percentiles, PASS/MISS, and the error that means 'broken'."""

from __future__ import annotations

import statistics
import sys


class BenchError(RuntimeError):
    """Something is broken (not merely slow): the run exits non-zero."""


def median(values: list[float]) -> float:
    return statistics.median(values)


def p95(values: list[float]) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[94]


def verdict(ok: bool) -> str:
    return "PASS" if ok else "MISS"


def log(step: str) -> None:
    print(f"... {step}", file=sys.stderr, flush=True)
