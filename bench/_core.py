"""What every benchmark shares: the result record, statistics, the loop-lag monitor.

Why it is built this way: the machine is shared and noisy, so no absolute number
means much on its own. Every benchmark measures its baseline in the same run,
interleaved with the runtime (run i of the runtime, then run i of the baseline),
and a ratio is computed for each such pair; the reported ratio is the median of
those pair ratios, never a ratio of two medians taken minutes apart.
"""

from __future__ import annotations

import asyncio
import gc
import os
import statistics
import tempfile
import time
from collections.abc import Callable, Coroutine, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import msgspec
import uvloop

__all__ = [
    "LagMonitor",
    "Result",
    "Settings",
    "fresh_heap",
    "not_run",
    "percentile",
    "rss_bytes",
    "run_on_uvloop",
    "summarize",
    "workdir",
]

_T = TypeVar("_T")


class Result(msgspec.Struct, frozen=True):
    """One line of ``bench/results/latest.json`` (the issue's shape, field for field).

    ``value``, ``min`` and ``max`` are the median, minimum and maximum over
    ``runs`` runs; ``ratio`` is the median of the per-run ratios against the
    baseline measured in the same run. ``runs == 0`` means the benchmark did not
    run; ``target`` then says why.
    """

    name: str
    metric: str
    unit: str
    value: float
    baseline: str
    baseline_value: float | None
    ratio: float | None
    target: str
    met: bool
    runs: int
    min: float
    max: float


@dataclass(frozen=True)
class Settings:
    """How big and how long: the full run or ``--quick``."""

    quick: bool
    workdir: Path

    def pick(self, full: _T, quick: _T) -> _T:
        return quick if self.quick else full


def percentile(values: Sequence[float], q: float) -> float:
    """Return the ``q`` percentile (0..100) of ``values``, nearest-rank on the sorted data."""
    if not values:
        raise ValueError("percentile of nothing")
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(q / 100.0 * len(ordered) + 0.5)))
    return ordered[rank - 1]


def summarize(
    *,
    name: str,
    metric: str,
    unit: str,
    values: Sequence[float],
    baseline: str,
    baseline_values: Sequence[float] | None,
    ratios: Sequence[float] | None,
    target: str,
    met: Callable[[float, float | None], bool],
    digits: int = 4,
) -> Result:
    """Build a ``Result`` from per-run values (and per-run baseline values and ratios).

    ``met(value, ratio)`` decides the target on the medians.
    """
    value = statistics.median(values)
    base = statistics.median(baseline_values) if baseline_values else None
    ratio = statistics.median(ratios) if ratios else None
    return Result(
        name=name,
        metric=metric,
        unit=unit,
        value=round(value, digits),
        baseline=baseline,
        baseline_value=None if base is None else round(base, digits),
        ratio=None if ratio is None else round(ratio, 4),
        target=target,
        met=bool(met(value, ratio)),
        runs=len(values),
        min=round(min(values), digits),
        max=round(max(values), digits),
    )


def not_run(*, name: str, metric: str, unit: str, baseline: str, target: str, why: str) -> Result:
    """Return the record of a benchmark that could not run here (kept, never dropped)."""
    return Result(
        name=name,
        metric=metric,
        unit=unit,
        value=0.0,
        baseline=baseline,
        baseline_value=None,
        ratio=None,
        target=f"{target}; NOT RUN: {why}",
        met=False,
        runs=0,
        min=0.0,
        max=0.0,
    )


def run_on_uvloop(main: Callable[[], Coroutine[Any, Any, _T]]) -> _T:
    """Run ``main()`` on a fresh uvloop event loop (what ``stalwart run`` uses)."""
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(main())


class LagMonitor:
    """Measure event-loop stalls: the lateness of a 1 ms periodic sleep.

    ``floor`` is the lateness seen on an idle loop (timer granularity; uvloop
    keeps timers in whole milliseconds), measured by ``calibrate()``; ``stall``
    is the longest lateness seen while running, in seconds.
    """

    def __init__(self, period_s: float = 0.001) -> None:
        self.period_s = period_s
        self.stall = 0.0
        self.samples = 0

    async def run(self) -> None:
        """Sample until cancelled."""
        clock = time.perf_counter
        period = self.period_s
        while True:
            t0 = clock()
            await asyncio.sleep(period)
            late = clock() - t0 - period
            self.samples += 1
            if late > self.stall:
                self.stall = late

    async def calibrate(self, seconds: float = 0.2) -> float:
        """Return the longest lateness on an otherwise idle loop over ``seconds``."""
        probe = LagMonitor(self.period_s)
        async with asyncio.TaskGroup() as group:
            task = group.create_task(probe.run())
            await asyncio.sleep(seconds)
            task.cancel()
        return probe.stall


def rss_bytes() -> int:
    """Return this process's resident set size (Linux ``/proc/self/statm``)."""
    with open("/proc/self/statm") as f:
        pages = int(f.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE")


def fresh_heap() -> None:
    """Collect garbage before a timed section, so no side pays for what the other left.

    The cyclic collector stays enabled while timing: a real session runs with it.
    """
    gc.collect()


@contextmanager
def workdir(parent: Path | None) -> Iterator[Path]:
    """Yield a fresh directory (removed afterwards); runtime and baselines share its disk."""
    with tempfile.TemporaryDirectory(prefix="stalwart-bench-", dir=parent) as name:
        yield Path(name)
