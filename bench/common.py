"""What the benchmarks share: percentiles, PASS/MISS, and the error that means 'broken'."""

from __future__ import annotations

import statistics
import sys
from collections.abc import Callable
from dataclasses import dataclass


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


@dataclass
class Row:
    """One line of a benchmark's table: a figure, its measurement, its target, PASS/MISS."""

    figure: str
    measured: str
    target: str = "-"
    result: str = ""


def print_table(rows: list[Row]) -> None:
    widths = [max(len(getattr(r, f)) for r in rows) for f in ("figure", "measured", "target")]
    header = Row("figure", "measured", "target", "result")
    for row in [header, *rows]:
        print(
            f"{row.figure:<{widths[0]}}  {row.measured:<{widths[1]}}  "
            f"{row.target:<{widths[2]}}  {row.result}".rstrip()
        )


def exit_code(rows: list[Row]) -> int:
    """0 when every target is met, 2 on any MISS (1 is kept for 'broken')."""
    return 2 if any(row.result == "MISS" for row in rows) else 0


def run(main: Callable[[], int]) -> None:
    """Exit with main()'s code; a BenchError (something broken, not slow) exits 1."""
    try:
        sys.exit(main())
    except BenchError as exc:
        print(f"BENCH BROKEN: {exc}", file=sys.stderr)
        sys.exit(1)
