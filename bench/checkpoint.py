"""Checkpoint of 10,000 dirty actors: total time and the longest event-loop stall.

The runtime side: 10,000 position actors, each holding an open position with
its stop and a full 240-bar buffer, made dirty by one bar each (through the
strategy, as in a session), then checkpointed exactly as ``runtime.app`` does
every interval: ``actors.checkpoint.checkpoint_all`` (``Checkpoint`` to every
actor in waves, each wave's commits awaited before the next). Timed from the
first ``Checkpoint`` until the last snapshot is committed; a loop-lag monitor
(the lateness of a 1 ms periodic sleep) runs throughout and reports the
longest stall. The store
already holds every snapshot (an earlier checkpoint), as in a session.

The baseline, same disk, same run: ``json.dump`` of the same state (each
symbol's state and its 240 bars as lists of numbers) to a temporary file,
flushed and fsynced, then renamed over the state file (atomic, durable).
"""

from __future__ import annotations

import asyncio
import functools
import json
import os
import time
from array import array
from collections.abc import Sequence
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

import msgspec

from actors.checkpoint import checkpoint_all
from actors.messages import GetState, OnBar
from actors.position import PositionActor
from bench._core import LagMonitor, Result, Settings, fresh_heap, run_on_uvloop, summarize
from bench._world import (
    ACCOUNT,
    BAR_SECONDS,
    DAY,
    InstantVenue,
    Member,
    context,
    population,
    ring_of,
)
from brokers.base import Bar, Execution
from persistence import (
    ClosedTradeRow,
    CommitResult,
    IntentRow,
    LoadedSnapshots,
    PutSnapshot,
    ReportRow,
    SessionRow,
    SqliteStore,
    Write,
    open_store,
)
from runtime.clock import TradingCalendar
from runtime.supervision import Supervisor

__all__ = ["json_state", "run"]

NAME = "checkpoint"


class _CountingStore:
    """The real store, counting committed snapshot batches (to know when a checkpoint ended)."""

    def __init__(self, inner: SqliteStore) -> None:
        self.inner = inner
        self.expected = -1
        self.committed = 0
        self.done = asyncio.Event()

    def arm(self, expected: int) -> None:
        self.expected, self.committed = expected, 0
        self.done.clear()

    @property
    def account_id(self) -> str:
        return self.inner.account_id

    async def commit(self, writes: Sequence[Write]) -> CommitResult:
        result = await self.inner.commit(writes)
        if any(isinstance(w, PutSnapshot) for w in writes):
            self.committed += 1
            if self.committed == self.expected:
                self.done.set()
        return result

    async def load_snapshots(self) -> LoadedSnapshots:
        return await self.inner.load_snapshots()

    async def quarantine_snapshot(self, symbol: str, reason: str) -> None:
        await self.inner.quarantine_snapshot(symbol, reason)

    async def has_execution(self, exec_id: str) -> bool:
        return await self.inner.has_execution(exec_id)

    async def executions(self, since: datetime | None = None) -> list[Execution]:
        return await self.inner.executions(since)

    async def pending_intents(self) -> list[IntentRow]:
        return await self.inner.pending_intents()

    async def closed_trades(self, since: date | None = None) -> list[ClosedTradeRow]:
        return await self.inner.closed_trades(since)

    async def session(self) -> SessionRow | None:
        return await self.inner.session()

    async def sessions(self, since: date | None = None) -> list[SessionRow]:
        return await self.inner.sessions(since)

    async def reports(self, limit: int = 50) -> list[ReportRow]:
        return await self.inner.reports(limit)

    async def close(self) -> None:
        await self.inner.close()


def _next_bar(member: Member, ts: datetime) -> Bar:
    ring = ring_of(member)
    close = ring.close(0)
    return Bar(
        symbol=member.symbol,
        ts=ts,
        open=close,
        high=close * 1.0004,
        low=close * 0.9996,
        close=close * 1.0001,
        volume=1000.0,
    )


async def _checkpoints(
    members: list[Member], workdir: Path, runs: int, last_open: datetime
) -> list[tuple[float, float, float, float]]:
    """Return (total s, longest stall s, idle floor s, baseline s) for ``runs`` pairs.

    Each pair: the baseline ``json.dump`` (blocking; nothing else runs), then a
    checkpoint of every actor.
    """
    state = json_state(members)
    json_path = workdir / "state.json"
    venue = InstantVenue()
    venue.market_time = last_open + timedelta(seconds=BAR_SECONDS)
    store = _CountingStore(await open_store(workdir / "checkpoint.db", ACCOUNT))
    out: list[tuple[float, float, float, float]] = []
    try:
        ctx = context(store, venue)
        actors = [PositionActor(m.symbol, ctx) for m in members]
        async with Supervisor(name="bench-checkpoint") as sup:
            await sup.start_all(actors)
            for actor, member in zip(actors, members, strict=True):
                actor.state, actor.bars = member.held.state, ring_of(member)
            # The store holds every snapshot (an earlier checkpoint), as in a session.
            await _checkpoint_all(actors, store, force=True)
            monitor = LagMonitor()
            for k in range(runs):
                bar_ts = last_open + timedelta(seconds=BAR_SECONDS * (k + 1))
                venue.market_time = bar_ts + timedelta(seconds=BAR_SECONDS)
                for actor, member in zip(actors, members, strict=True):
                    await actor.tell(OnBar(_next_bar(member, bar_ts)))
                for actor in actors:
                    await actor.ask(GetState())
                fresh_heap()
                baseline = _json_dump(state, json_path)
                fresh_heap()
                floor = await monitor.calibrate()
                async with asyncio.TaskGroup() as group:
                    lag = group.create_task(monitor.run())
                    await asyncio.sleep(0.01)
                    monitor.stall = 0.0
                    total = await _checkpoint_all(actors, store)
                    stall = monitor.stall
                    lag.cancel()
                out.append((total, stall, floor, baseline))
    finally:
        await store.close()
    return out


async def _checkpoint_all(
    actors: list[PositionActor], store: _CountingStore, *, force: bool = False
) -> float:
    """Checkpoint every actor as ``runtime.app`` does; return the seconds until all committed."""
    store.arm(len(actors))
    t0 = time.perf_counter()
    await checkpoint_all(actors, force=force)
    await store.done.wait()
    return time.perf_counter() - t0


def json_state(members: list[Member]) -> dict[str, Any]:
    """Return the state of every symbol as a bot keeps it: plain dicts and lists."""
    state: dict[str, Any] = {}
    for m in members:
        data = array("d")
        data.frombytes(m.ring[12:])  # the ring's slots: ts, open, high, low, close, volume
        values = data.tolist()
        bars = [values[i : i + 6] for i in range(0, len(values), 6)]
        state[m.symbol] = {"position": msgspec.to_builtins(m.held.state), "bars": bars}
    return state


def _json_dump(state: dict[str, Any], path: Path) -> float:
    """Time ``json.dump`` to a temporary file + fsync + atomic rename (+ directory fsync)."""
    tmp = path.with_name(path.name + ".tmp")
    t0 = time.perf_counter()
    with tmp.open("w") as f:
        json.dump(state, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    return time.perf_counter() - t0


def run(settings: Settings) -> list[Result]:
    runs = settings.pick(3, 2)
    n = settings.pick(10_000, 1_000)
    last_open = TradingCalendar().open_of(DAY) + timedelta(hours=2)
    members = population(n, last_open)
    measured = run_on_uvloop(
        functools.partial(_checkpoints, members, settings.workdir, runs, last_open)
    )
    totals = [m[0] for m in measured]
    stalls = [m[1] * 1e3 for m in measured]
    floor = max(m[2] for m in measured) * 1e3
    baseline = [m[3] for m in measured]
    what = f"checkpoint of {n:,} dirty actors (open position + stop + 240-bar buffer each)"
    return [
        summarize(
            name=f"{NAME}_stall",
            metric=f"{what}: longest event-loop stall (1 ms sleep lateness; idle floor "
            f"{floor:.2f} ms)",
            unit="ms",
            values=stalls,
            baseline="-",
            baseline_values=None,
            ratios=None,
            target="<= 10 ms",
            met=lambda v, _r: v <= 10.0,
        ),
        summarize(
            name=f"{NAME}_cost",
            metric=f"{what}: total time until every snapshot is committed",
            unit="s",
            values=totals,
            baseline=f"json.dump of the same state ({n:,} states + bars as lists) to a temp "
            "file, fsync, atomic rename",
            baseline_values=baseline,
            ratios=[a / b for a, b in zip(totals, baseline, strict=True)],
            target="<= 0.2x the baseline",
            met=lambda _v, r: r is not None and r <= 0.2,
        ),
    ]
