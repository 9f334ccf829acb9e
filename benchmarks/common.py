"""Shared pieces of the benchmarks: timing and the result row."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Row:
    name: str
    value: float
    unit: str
    peer: str
    peer_value: float | None

    def markdown(self) -> str:
        ours = f"{self.value:,.1f} {self.unit}"
        if self.peer_value is None:
            return f"| {self.name} | {ours} | {self.peer} | n/a | n/a |"
        ratio = self.value / self.peer_value
        return (f"| {self.name} | {ours} | {self.peer} | {self.peer_value:,.1f} {self.unit} "
                f"| {ratio:.2f}x |")


def median_of(repeat: int, fn: Callable[[], float]) -> float:
    """The median of ``repeat`` calls of ``fn`` (each returns one measurement)."""
    return statistics.median(fn() for _ in range(repeat))


def seconds(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start
