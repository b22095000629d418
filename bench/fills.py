"""Fill durability: fill arrival -> durable ``FillAck`` through real actors and store.

The runtime side: 100 position actors (full 240-bar buffers) on a real
``SqliteStore``, each with a large entry order in flight that fills in pieces.
A burst of fills arrives at 1,000 per second, round-robin over the symbols;
each is asked (``OnExecution``) as the router would deliver it, and its latency
runs from delivery to the ``FillAck``, which the actor sends only after the
transaction holding the execution and the new snapshot committed (and after
acting on it: the first fill places the protective stop, later ones resize it,
which is itself a write-ahead commit). Orders go to ``InstantVenue``.

The baseline, on the same disk in the same run: one raw ``sqlite3`` commit of
one row, WAL, ``synchronous=FULL``, timed one commit at a time.
"""

from __future__ import annotations

import asyncio
import functools
import os
import sqlite3
import time
from datetime import datetime, timedelta
from pathlib import Path

import msgspec

from actors import model
from actors.messages import FillAck, OnExecution
from actors.position import PositionActor
from actors.snapshot import encode_state
from actors.state import SCHEMA_VERSION, PositionState
from bench._core import Result, Settings, fresh_heap, percentile, run_on_uvloop, summarize
from bench._world import (
    ACCOUNT,
    DAY,
    InstantVenue,
    context,
    full_ring,
    symbols,
)
from brokers.base import Execution, Side
from persistence import SnapshotRow, open_store
from runtime.clock import TradingCalendar
from runtime.supervision import Supervisor

__all__ = ["run"]

NAME = "fill_durability"
_SYMBOLS = 100
_RATE = 1000.0  # fills per second within a burst
_PIECE = 10.0  # shares per fill


def _raw_commits(path: Path, n: int) -> list[float]:
    """Return the latency of ``n`` one-row commits (WAL, synchronous=FULL), one at a time."""
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA synchronous = FULL")
        conn.execute("CREATE TABLE fills (exec_id TEXT PRIMARY KEY, symbol TEXT, body BLOB)")
        body = os.urandom(200)
        out: list[float] = []
        clock = time.perf_counter
        for k in range(n):
            t0 = clock()
            conn.execute("BEGIN IMMEDIATE")
            conn.execute("INSERT INTO fills VALUES (?, ?, ?)", (f"X-{k}", "S00000", body))
            conn.execute("COMMIT")
            out.append(clock() - t0)
        return out
    finally:
        conn.close()


def _entry_in_flight(symbol: str, qty: float, at: datetime) -> PositionState:
    """Return a flat state whose entry order (``qty`` shares) is in flight."""
    state = PositionState(account=ACCOUNT, symbol=symbol, trading_day=DAY)
    state = model.set_levels(state, DAY, {"resistance": 100.0, "support": 97.0})
    state, _ = model.begin_entry(
        state, day=DAY, pivot=100.0, side=Side.BUY, qty=qty, now=at, max_attempts=2
    )
    return msgspec.structs.replace(state, targets=(101.0, 102.0), planned_stop=99.5)


async def _burst(workdir: Path, fills: int, seed: int) -> list[float]:
    """Run one burst through fresh actors and a fresh store; return the ack latencies."""
    calendar = TradingCalendar()
    venue = InstantVenue()
    start = calendar.open_of(DAY) + timedelta(hours=2)
    venue.market_time = start
    names = symbols(_SYMBOLS)
    per_symbol = -(-fills // _SYMBOLS)
    store = await open_store(workdir / f"fills-{seed}.db", ACCOUNT)
    latencies: list[float] = []
    try:
        ctx = context(store, venue)
        actors: list[PositionActor] = []
        for i, symbol in enumerate(names):
            ring = full_ring(symbol, start - timedelta(minutes=1), seed * 1000 + i)
            state = _entry_in_flight(symbol, _PIECE * per_symbol, start)
            # As the store hands it over: the state, and the buffer from its own row.
            row = SnapshotRow(
                symbol, encode_state(state), SCHEMA_VERSION, state.seq, start, ring.to_bytes()
            )
            actors.append(PositionActor(symbol, ctx, row))
        async with Supervisor(name="bench-fills") as sup:
            await sup.start_all(actors)
            entry_ids = [a.state.intents[0].client_order_id for a in actors]
            executions = [
                Execution(
                    exec_id=f"F{seed}-{k:06d}",
                    order_id=f"BO-{k % _SYMBOLS}",
                    client_order_id=entry_ids[k % _SYMBOLS],
                    symbol=names[k % _SYMBOLS],
                    side=Side.BUY,
                    qty=_PIECE,
                    price=100.0 + 0.01 * (k // _SYMBOLS),
                    ts=start + timedelta(milliseconds=k),
                )
                for k in range(fills)
            ]

            async def deliver(actor: PositionActor, ex: Execution, t0: float) -> None:
                ack = await actor.ask(OnExecution(ex))
                latencies.append(time.perf_counter() - t0)
                if not (isinstance(ack, FillAck) and ack.applied):
                    raise RuntimeError(f"fill {ex.exec_id} not applied: {ack!r}")

            fresh_heap()
            loop = asyncio.get_running_loop()
            t_start = loop.time()
            async with asyncio.TaskGroup() as group:
                sent = 0
                while sent < fills:
                    due = min(fills, int((loop.time() - t_start) * _RATE) + 1)
                    while sent < due:
                        ex = executions[sent]
                        group.create_task(deliver(actors[sent % _SYMBOLS], ex, time.perf_counter()))
                        sent += 1
                    await asyncio.sleep(1.0 / _RATE)
    finally:
        await store.close()
    return latencies


def run(settings: Settings) -> list[Result]:
    runs = settings.pick(5, 3)
    fills = settings.pick(1000, 300)
    raw_n = settings.pick(1000, 300)
    p50: list[float] = []
    p99: list[float] = []
    base50: list[float] = []
    base99: list[float] = []
    for i in range(runs):
        order = ("raw", "actors") if i % 2 == 0 else ("actors", "raw")
        for side in order:
            fresh_heap()
            if side == "raw":
                raw = _raw_commits(settings.workdir / f"raw-{i}.db", raw_n)
                base50.append(percentile(raw, 50) * 1e3)
                base99.append(percentile(raw, 99) * 1e3)
            else:
                lat = run_on_uvloop(functools.partial(_burst, settings.workdir, fills, i))
                p50.append(percentile(lat, 50) * 1e3)
                p99.append(percentile(lat, 99) * 1e3)
    workload = (
        f"{fills:,} fills in {fills / _RATE:g} s bursts over {_SYMBOLS} actors "
        "(partial fills of entry orders; stop placed/resized after each commit)"
    )
    baseline = "raw sqlite3 one-row commit, WAL, synchronous=FULL, same disk"
    return [
        summarize(
            name=f"{NAME}_p50",
            metric=f"p50 fill arrival -> durable FillAck; {workload}",
            unit="ms",
            values=p50,
            baseline=f"{baseline} (p50)",
            baseline_values=base50,
            ratios=[a / b for a, b in zip(p50, base50, strict=True)],
            target="none (reported; the target is on p99)",
            met=lambda _v, _r: True,
        ),
        summarize(
            name=f"{NAME}_p99",
            metric=f"p99 fill arrival -> durable FillAck; {workload}",
            unit="ms",
            values=p99,
            baseline=f"{baseline} (p99)",
            baseline_values=base99,
            ratios=[a / b for a, b in zip(p99, base99, strict=True)],
            target="p99 <= 2.0x baseline p99",
            met=lambda _v, r: r is not None and r <= 2.0,
        ),
    ]
