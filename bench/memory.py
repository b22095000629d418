"""Memory: resident-set growth per position actor with a full 240-bar buffer.

Each run is a fresh process (an allocator that already served another
benchmark would hide or inflate growth). It opens a store and a supervisor,
reads its RSS, then starts 10,000 actors one by one from snapshots as a boot
does (open position, live stop, full 240-bar buffer: what a session holds),
each snapshot built just before its actor and dropped right after, collects
garbage, and reads the RSS again. Growth / actors is the cost of one actor:
its state, its buffer, its mailbox, its task.
"""

from __future__ import annotations

import functools
import gc
import json
import os
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

from actors.bars import BarRing
from actors.position import PositionActor
from actors.snapshot import encode_state
from actors.state import SCHEMA_VERSION
from bench._core import Result, Settings, rss_bytes, run_on_uvloop, summarize
from bench._world import (
    ACCOUNT,
    BAR_SECONDS,
    DAY,
    InstantVenue,
    context,
    full_ring,
    held_position,
    symbols,
)
from persistence import SnapshotRow, open_store
from runtime.clock import TradingCalendar
from runtime.supervision import Supervisor

__all__ = ["run"]

NAME = "memory"
_ROOT = Path(__file__).resolve().parents[1]


async def _grow(n: int, workdir: Path) -> tuple[int, int]:
    """Return (RSS before, RSS after) starting ``n`` actors from snapshots."""
    last_open = TradingCalendar().open_of(DAY) + timedelta(hours=2)
    venue = InstantVenue()
    venue.market_time = last_open + timedelta(seconds=BAR_SECONDS)
    walks = [full_ring("TMPL", last_open, seed).to_bytes() for seed in range(64)]
    store = await open_store(workdir / "memory.db", ACCOUNT)
    try:
        ctx = context(store, venue)
        async with Supervisor(name="bench-memory") as sup:
            gc.collect()
            before = rss_bytes()
            for i, symbol in enumerate(symbols(n)):
                ring = BarRing.from_bytes(symbol, walks[i % len(walks)])
                held = held_position(symbol, ring, last_open - timedelta(minutes=30 + i % 60), i)
                blob = encode_state(held.state)
                row = SnapshotRow(
                    symbol, blob, SCHEMA_VERSION, held.state.seq, venue.market_time, ring.to_bytes()
                )
                await sup.start(PositionActor(symbol, ctx, row))
                del ring, held, blob, row
            gc.collect()
            after = rss_bytes()
    finally:
        await store.close()
    return before, after


def _child(n: int, workdir: Path) -> None:
    before, after = run_on_uvloop(functools.partial(_grow, n, workdir))
    print(json.dumps({"actors": n, "rss_before": before, "rss_after": after}))


def _measure(n: int, workdir: Path) -> float:
    """Run one child process; return the RSS growth per actor in KB."""
    out = subprocess.run(
        [sys.executable, "-m", "bench.memory", "--child", str(n), str(workdir)],
        cwd=_ROOT,
        env={**os.environ, "PYTHONPATH": str(_ROOT)},
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    if out.returncode != 0:
        raise RuntimeError(f"memory child failed ({out.returncode}): {out.stderr[-2000:]}")
    report = json.loads(out.stdout.strip().splitlines()[-1])
    growth = int(report["rss_after"]) - int(report["rss_before"])
    return growth / int(report["actors"]) / 1024.0


def run(settings: Settings) -> list[Result]:
    runs = settings.pick(3, 2)
    n = settings.pick(10_000, 2_000)
    per_actor: list[float] = []
    for i in range(runs):
        child_dir = settings.workdir / f"memory-{i}"
        child_dir.mkdir()
        per_actor.append(_measure(n, child_dir))
    return [
        summarize(
            name=f"{NAME}_per_actor",
            metric=f"RSS growth per actor, {n:,} actors started from snapshots (open position "
            "+ stop + full 240-bar buffer), fresh process per run",
            unit="KB/actor",
            values=per_actor,
            baseline="-",
            baseline_values=None,
            ratios=None,
            target="<= 40 KB per actor",
            met=lambda v, _r: v <= 40.0,
            digits=2,
        )
    ]


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--child":
        _child(int(sys.argv[2]), Path(sys.argv[3]))
    else:
        raise SystemExit("usage: python -m bench.memory --child N WORKDIR")
