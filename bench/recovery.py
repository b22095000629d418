"""Recovery: boot -> running with 10,000 symbols in the store and at the venue.

The runtime side: a store holding 10,000 snapshots (open position, live stop,
full 240-bar buffer each) with their entry executions and intents, and the
in-process sim venue holding the same 10,000 positions, their resting stops
and executions, as a session leaves them when the process dies. Timed: a real
``runtime.app.App`` from ``run()`` until it declares itself running (store
opened and checked, snapshots loaded into actors, boot recovery against the
venue, bars subscribed). The venue is opened before the clock starts (it is
the outside world, already up); the market is at the slot after the buffers'
last bar, so no bar gap needs a refill.

The baseline, same disk, same run: ``json.load`` of the same state (each
symbol's state and its 240 bars as lists of numbers) from one file, the
common bot approach (which then knows nothing of the broker).
"""

from __future__ import annotations

import asyncio
import functools
import json
import time
from datetime import datetime, timedelta
from pathlib import Path

from actors.snapshot import encode_state
from actors.state import SCHEMA_VERSION
from bench._core import Result, Settings, fresh_heap, run_on_uvloop, summarize
from bench._world import ACCOUNT, BAR_SECONDS, DAY, Member, population, ring_of
from bench.checkpoint import json_state
from brokers.base import Broker
from brokers.sim import SimBroker, SimConfig
from brokers.sim.book import encode_book, write_book
from brokers.sim.engine import Book, Instrument, PriceScale
from persistence import PutExecution, PutIntent, PutSnapshot, SnapshotRow, Write, open_store
from runtime.alerts import Alert
from runtime.app import App
from runtime.clock import TradingCalendar
from runtime.config import (
    BrokerConfig,
    Config,
    RecoveryConfig,
    SimVenueConfig,
    WatchItem,
)

__all__ = ["run"]

NAME = "recovery"
_BOOK = "sim-venue.book"


class _TimedApp(App):
    """``App`` that notes when it declares itself running, then asks to stop."""

    started_at = 0.0
    running_at = 0.0
    stop_event: asyncio.Event | None = None

    def _write_state(self, broker: Broker, state: str) -> None:
        super()._write_state(broker, state)
        if state == "running" and not self.running_at:
            self.running_at = time.perf_counter()
            if self.stop_event is not None:
                self.stop_event.set()


async def _seed_store(path: Path, members: list[Member], taken_at: datetime) -> None:
    store = await open_store(path, ACCOUNT)
    try:
        batch: list[Write] = []
        for m in members:
            state = m.held.state
            blob, bars = encode_state(state), ring_of(m).to_bytes()
            batch.append(
                PutSnapshot(SnapshotRow(m.symbol, blob, SCHEMA_VERSION, state.seq, taken_at, bars))
            )
            batch.append(PutExecution(m.held.entry))
            batch.extend(PutIntent(i) for i in m.held.intents)
            if len(batch) >= 1500:
                await store.commit(batch)
                batch = []
        if batch:
            await store.commit(batch)
    finally:
        await store.close()


def _seed_venue(path: Path, members: list[Member], market_time: datetime) -> None:
    """Write the venue's book: instruments, positions, resting stops, executions."""
    start = market_time - timedelta(hours=3)
    instruments = {
        m.symbol: Instrument(
            symbol=m.symbol,
            last=ring_of(m).close(0),
            last_raw=1.0,
            scales=[PriceScale(since=start, scale=100.0)],
        )
        for m in members
    }
    book = Book(
        account_id=ACCOUNT,
        seed=7,
        bar_seconds=BAR_SECONDS,
        origin=DAY,
        market_time=market_time,
        next_bar=market_time,
        instruments=instruments,
        positions={m.symbol: m.held.position for m in members},
        orders={m.held.stop.order_id: m.held.stop for m in members},
        client_ids={m.held.stop.client_order_id: m.held.stop.order_id for m in members},
        executions=sorted((m.held.entry for m in members), key=lambda e: (e.ts, e.exec_id)),
        order_seq=len(members),
        exec_seq=len(members),
    )
    write_book(path, encode_book(book))


def _config(members: list[Member]) -> Config:
    return Config(
        broker=BrokerConfig(sim=SimVenueConfig(speed=1.0, latency_ms=0.0, book_file=_BOOK)),
        recovery=RecoveryConfig(connect_tries=1),
        watchlist=[WatchItem(symbol=m.symbol) for m in members],
    )


async def _boot(state_dir: Path, config: Config, names: list[str]) -> float:
    """Boot a fresh ``App`` on ``state_dir``; return seconds from ``run()`` to running."""
    broker = await SimBroker.open(
        SimConfig(
            symbols=names,
            book_path=state_dir / _BOOK,
            speed=1.0,
            account_id=ACCOUNT,
            start_day=DAY,
        ),
        calendar=TradingCalendar(),
    )
    alerts: list[Alert] = []
    app = _TimedApp(config=config, state_dir=state_dir, broker=broker, alert_sink=alerts.append)
    stop = asyncio.Event()
    app.stop_event = stop
    fresh_heap()
    t0 = time.perf_counter()
    await app.run(stop)
    if not app.running_at:
        raise RuntimeError(f"the app never ran: {alerts[:3]}")
    critical = [a for a in alerts if a.severity.value == "critical"]
    if critical:
        raise RuntimeError(f"recovery raised critical alerts: {critical[:3]}")
    report = app.supervisor.last_report if app.supervisor is not None else None
    if report is None or report.zombies or report.orphans or report.drifts or report.unprotected:
        raise RuntimeError(f"boot recovery found what the seeding did not plant: {report!r}"[:2000])
    return app.running_at - t0


def _json_load(path: Path) -> float:
    t0 = time.perf_counter()
    with path.open() as f:
        json.load(f)
    return time.perf_counter() - t0


def run(settings: Settings) -> list[Result]:
    runs = settings.pick(3, 2)
    n = settings.pick(10_000, 1_000)
    calendar = TradingCalendar()
    market_time = calendar.open_of(DAY) + timedelta(hours=2)
    last_open = market_time - timedelta(seconds=BAR_SECONDS)
    members = population(n, last_open)
    names = [m.symbol for m in members]
    config = _config(members)
    json_path = settings.workdir / "recovery-state.json"
    with json_path.open("w") as f:
        json.dump(json_state(members), f)
    boots: list[float] = []
    loads: list[float] = []
    for i in range(runs):
        state_dir = settings.workdir / f"recovery-{i}"
        state_dir.mkdir()
        run_on_uvloop(
            functools.partial(_seed_store, state_dir / f"{ACCOUNT}.db", members, market_time)
        )
        _seed_venue(state_dir / _BOOK, members, market_time)
        order = ("json", "app") if i % 2 == 0 else ("app", "json")
        for side in order:
            fresh_heap()
            if side == "json":
                loads.append(_json_load(json_path))
            else:
                boots.append(run_on_uvloop(functools.partial(_boot, state_dir, config, names)))
    return [
        summarize(
            name=f"{NAME}_boot",
            metric=f"boot -> running, {n:,} symbols in the store (position + stop + 240 bars "
            "each) and the same positions and stops at the in-process sim venue",
            unit="s",
            values=boots,
            baseline=f"json.load of the same state ({n:,} states + bars as lists) from one file",
            baseline_values=loads,
            ratios=[a / b for a, b in zip(boots, loads, strict=True)],
            target="< 1.0 s total",
            met=lambda v, _r: v < 1.0,
        )
    ]
