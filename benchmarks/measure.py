"""Timing helpers shared by the benchmarks: CPU and wall time of named parts, medians, the machine line.

The machines these run on are shared, so every benchmark reports CPU time (``time.process_time``: this
process, all its threads; waiting for a core does not count) beside wall time, takes the median over rounds in
which the variants it compares alternate, pins torch's thread count and prints the load average.
"""
from __future__ import annotations

import os
import resource
import statistics
import time
from collections import defaultdict
from contextlib import contextmanager
from typing import Dict, Iterator, List, Sequence

import torch


def pin_threads(threads: int) -> int:
    """``torch.set_num_threads(threads)``; returns it (for the machine line)."""
    torch.set_num_threads(threads)
    return torch.get_num_threads()


def load_average() -> str:
    one, five, fifteen = os.getloadavg()
    return f"load average {one:.2f} / {five:.2f} / {fifteen:.2f} (1 / 5 / 15 min)"


def machine_line() -> str:
    return (f"torch {torch.__version__}, {torch.get_num_threads()} torch thread(s) (pinned), {os.cpu_count()} CPUs, "
            f"{load_average()}")


def children_cpu() -> float:
    """CPU seconds of this process's finished children (e.g. DataLoader workers once shut down)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


class Parts:
    """Accumulates CPU and wall seconds per named part within a round; ``rounds`` keeps each round's sums.

    >>> parts = Parts()
    >>> with parts("decode"):
    ...     pass
    >>> parts.end_round()
    >>> sorted(parts.median_cpu())
    ['decode']
    """

    def __init__(self) -> None:
        self.cpu: Dict[str, float] = defaultdict(float)
        self.wall: Dict[str, float] = defaultdict(float)
        self.rounds: List[Dict[str, tuple]] = []

    @contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        c0, w0 = time.process_time(), time.perf_counter()
        try:
            yield
        finally:
            self.cpu[name] += time.process_time() - c0
            self.wall[name] += time.perf_counter() - w0

    def add(self, name: str, cpu: float, wall: float) -> None:
        self.cpu[name] += cpu
        self.wall[name] += wall

    def end_round(self) -> None:
        self.rounds.append({k: (self.cpu[k], self.wall[k]) for k in self.cpu})
        self.cpu.clear()
        self.wall.clear()

    def _median(self, which: int) -> Dict[str, float]:
        names = self.rounds[0].keys() if self.rounds else []
        return {k: statistics.median(r[k][which] for r in self.rounds) for k in names}

    def median_cpu(self) -> Dict[str, float]:
        return self._median(0)

    def median_wall(self) -> Dict[str, float]:
        return self._median(1)

    def median_ratio(self, num: str, den: str, which: int = 0) -> float:
        """Median over rounds of the per-round ratio num / den (CPU: which=0, wall: which=1)."""
        return statistics.median(r[num][which] / r[den][which] for r in self.rounds)


def median(values: Sequence[float]) -> float:
    return statistics.median(values)
