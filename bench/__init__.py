"""Benchmarks of the runtime, each against a baseline measured in the same run.

``python -m bench`` runs them all (``--quick`` for a short run, ``--only NAME``
for some) and writes ``bench/results/latest.json``; see ``bench/README.md``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path

import msgspec

from bench import bars, checkpoint, fills, memory, recovery, rest_lag
from bench._core import Result, Settings, workdir
from bench._env import machine, versions

__all__ = ["BENCHMARKS", "Report", "Result", "Settings", "collect", "write"]

BENCHMARKS: dict[str, Callable[[Settings], list[Result]]] = {
    fills.NAME: fills.run,
    bars.NAME: bars.run,
    recovery.NAME: recovery.run,
    checkpoint.NAME: checkpoint.run,
    memory.NAME: memory.run,
    rest_lag.NAME: rest_lag.run,
}


class Report(msgspec.Struct, frozen=True):
    """``bench/results/latest.json``: stable, read by tools."""

    when: str
    machine: dict[str, str | int]
    versions: dict[str, str]
    benchmarks: list[Result]


def collect(
    names: Sequence[str],
    *,
    quick: bool,
    parent: Path | None = None,
    progress: Callable[[str], None] | None = None,
) -> Report:
    """Run the benchmarks ``names`` (in registry order) and return the report.

    Raise ``KeyError`` for an unknown name.
    """
    unknown = sorted(set(names) - set(BENCHMARKS))
    if unknown:
        raise KeyError(f"unknown benchmarks: {', '.join(unknown)}")
    when = datetime.now(UTC).isoformat(timespec="seconds")
    results: list[Result] = []
    with workdir(parent) as directory:
        settings = Settings(quick=quick, workdir=directory)
        for name, run in BENCHMARKS.items():
            if name not in names:
                continue
            if progress is not None:
                progress(name)
            results.extend(run(settings))
        where = machine(directory)
    return Report(when=when, machine=where, versions=versions(), benchmarks=results)


def write(report: Report, path: Path) -> None:
    """Write ``report`` as indented JSON to ``path`` (directories created)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(msgspec.json.format(msgspec.json.encode(report), indent=2) + b"\n")
