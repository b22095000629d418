"""Bar throughput: bars per second through 1,000 position actors running the strategy.

The runtime side: 1,000 ``PositionActor`` s under a ``Supervisor`` on uvloop,
pinned with their store threads to one core, each running the reference
``PivotBreakout`` (opening-range pivots, default parameters) on a real
``SqliteStore``. The bars are the sim venue's seeded session (a generator with
trend bursts, so prices leave their opening ranges as they do in a session),
delivered bar by bar to every symbol the way the router does
(``tell(OnBar(bar))``). Entries are real: the intent is committed, the order goes
to ``InstantVenue``, which fills market orders at once; the fill comes back on
the venue's event stream through a router task, is committed, and the stop is
placed; partials, stop moves and end-of-day exits follow. Stops never trigger.

Baseline (a), the ceiling: the same bars through 1,000 bare ``asyncio.Queue`` s
(bounded like mailboxes) whose consumer only counts. Baseline (b): NautilusTrader
(``bench.nautilus``), when it is installed.
"""

from __future__ import annotations

import asyncio
import functools
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path

from actors.messages import GetState, OnBar, OnExecution, OnOrderUpdate
from actors.position import PositionActor
from bench import nautilus
from bench._core import Result, Settings, fresh_heap, run_on_uvloop, summarize
from bench._world import ACCOUNT, BAR_SECONDS, DAY, CountingAlerts, InstantVenue, context, symbols
from brokers.base import Bar, Execution, OrderUpdate
from brokers.sim import BarGenerator
from persistence import open_store
from runtime.clock import TradingCalendar
from runtime.supervision import Supervisor

__all__ = ["BarTape", "make_tape", "run"]

NAME = "bar_throughput"
_MAILBOX = 1024


class BarTape:
    """The bars of one session for every symbol, slot by slot (``slots[t][j]``)."""

    def __init__(self, names: list[str], slots: list[list[Bar]]) -> None:
        self.names = names
        self.slots = slots

    @property
    def count(self) -> int:
        return sum(len(s) for s in self.slots)


def make_tape(n_symbols: int, n_slots: int) -> BarTape:
    """Return ``n_slots`` bars (from the regular open) of ``n_symbols`` from the sim generator."""
    calendar = TradingCalendar()
    gen = BarGenerator(seed=7, bar_seconds=BAR_SECONDS, calendar=calendar, origin=DAY)
    names = symbols(n_symbols)
    times = [gen.slot_ts(DAY, k) for k in range(n_slots)]
    by_symbol = [[gen.bar(s, ts, 100.0) for ts in times] for s in names]
    return BarTape(names, [[col[k] for col in by_symbol] for k in range(n_slots)])


@contextmanager
def one_core() -> Iterator[int]:
    """Pin this process (and the threads it starts) to one CPU; restore afterwards."""
    allowed = os.sched_getaffinity(0)
    cpu = max(allowed)
    os.sched_setaffinity(0, {cpu})
    try:
        yield cpu
    finally:
        os.sched_setaffinity(0, allowed)


async def _queues(tape: BarTape) -> float:
    """Return bars/s through bare bounded queues whose consumers only count."""
    n = len(tape.names)
    queues: list[asyncio.Queue[Bar | None]] = [asyncio.Queue(_MAILBOX) for _ in range(n)]
    counts = [0] * n

    async def consume(j: int) -> None:
        q = queues[j]
        while await q.get() is not None:
            counts[j] += 1

    fresh_heap()
    async with asyncio.TaskGroup() as group:
        for j in range(n):
            group.create_task(consume(j))
        await asyncio.sleep(0)
        t0 = time.perf_counter()
        for row in tape.slots:
            for j, bar in enumerate(row):
                await queues[j].put(bar)
        for q in queues:
            await q.put(None)
    elapsed = time.perf_counter() - t0
    if sum(counts) != tape.count:
        raise RuntimeError(f"queues counted {sum(counts)} of {tape.count} bars")
    return tape.count / elapsed


class _Tally:
    def __init__(self) -> None:
        self.fills = 0
        self.bars_s = 0.0


async def _actors(tape: BarTape, workdir: Path, run: int, tally: _Tally) -> float:
    """Return bars/s through position actors running the reference strategy."""
    venue = InstantVenue()
    alerts = CountingAlerts()
    store = await open_store(workdir / f"bars-{run}.db", ACCOUNT)
    try:
        ctx = context(store, venue, alerts=alerts)
        actors = [PositionActor(s, ctx) for s in tape.names]
        by_symbol = {a.symbol: a for a in actors}

        async def route() -> None:
            async for event in venue.events():
                match event:
                    case Execution(symbol=symbol):
                        tally.fills += 1
                        await by_symbol[symbol].tell(OnExecution(event))
                    case OrderUpdate(order=order):
                        await by_symbol[order.symbol].tell(OnOrderUpdate(order))
                    case _:
                        pass

        bar_span = timedelta(seconds=BAR_SECONDS)
        async with Supervisor(name="bench-bars") as sup:
            await sup.start_all(actors)
            sup.spawn(route(), name="router")
            fresh_heap()
            t0 = time.perf_counter()
            last = venue.last
            for row in tape.slots:
                venue.market_time = row[0].ts + bar_span
                for j, bar in enumerate(row):
                    last[bar.symbol] = bar.close
                    await actors[j].tell(OnBar(bar))
            for actor in actors:
                await actor.ask(GetState())
            elapsed = time.perf_counter() - t0
            await venue.close()
    finally:
        await store.close()
    return tape.count / elapsed


def run(settings: Settings) -> list[Result]:
    runs = settings.pick(3, 2)
    n_symbols = 1000
    n_slots = settings.pick(390, 45)
    tape = make_tape(n_symbols, n_slots)
    peer = nautilus.Peer.find()
    data = peer.prepare(tape, settings.workdir) if peer.ready else None
    stalwart: list[float] = []
    ceiling: list[float] = []
    peer_rates: list[float] = []
    fills: list[int] = []
    with one_core() as cpu:
        for i in range(runs):
            order = ("queues", "actors") if i % 2 == 0 else ("actors", "queues")
            for side in order:
                fresh_heap()
                if side == "queues":
                    ceiling.append(run_on_uvloop(functools.partial(_queues, tape)))
                else:
                    tally = _Tally()
                    stalwart.append(
                        run_on_uvloop(functools.partial(_actors, tape, settings.workdir, i, tally))
                    )
                    fills.append(tally.fills)
            if data is not None:
                peer_rates.append(peer.measure(data, cpu))
    what = (
        f"bars/s through {n_symbols:,} PositionActors running PivotBreakout "
        f"({tape.count:,} bars = {n_slots} slots x {n_symbols:,}; orders to InstantVenue, "
        f"~{sum(fills) // max(1, len(fills)):,} fills/run), uvloop, 1 core"
    )
    results = [
        summarize(
            name=f"{NAME}_vs_queues",
            metric=what,
            unit="bars/s",
            values=stalwart,
            baseline=f"the same bars through {n_symbols:,} bare asyncio.Queues, counting handler",
            baseline_values=ceiling,
            ratios=[a / b for a, b in zip(stalwart, ceiling, strict=True)],
            target=">= 0.4x the bare-queue ceiling",
            met=lambda _v, r: r is not None and r >= 0.4,
            digits=0,
        )
    ]
    results.append(nautilus.result(peer, what, stalwart, peer_rates, n_symbols))
    return results
