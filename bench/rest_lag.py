"""Loop lag under REST: the longest stall while the Alpaca adapter makes REST calls.

The runtime side: the real ``AlpacaBroker`` (alpaca-py's synchronous
``TradingClient``, every call in the adapter's own pool of SDK threads, the trade-updates
stream up and its events read) on uvloop, against the local exchange
(``stalwart exchange``) on a free loopback port. Each run builds a fresh adapter,
connects it, then times one batch of what a session asks of it: a market entry
per symbol, then rounds of a wave of protective stops submitted at once, a
reconcile sweep (positions, open orders, fill activities, the account check of
``connect``, all at once), the whole wave canceled at once, and another sweep.
A loop-lag monitor (the lateness of a 1 ms periodic sleep) runs throughout and
reports the longest stall.

The baseline, same loop, same run: the idle floor, the same monitor alone (no
adapter) for as long as the batch took.

Why the exchange is a separate process: it stands for the remote venue, and it
saves its whole book (fsynced) on every order; on this loop, or in a thread of
this process, its own work would be charged to the adapter. For the same
reason it gets a core of its own when there are two or more (``rest_loop_lag``):
the trader (this thread and every thread it starts, the SDK's pool included)
keeps the others. On a 2-core machine that leaves the trader one core, where a
real deployment has the venue elsewhere and all its cores. The same batch with
both processes free to share every core is reported beside it
(``rest_loop_lag_shared_cores``, no target): the venue's CPU then competes with
the loop thread and the SDK's threads, which no remote venue does.
One untimed batch warms the SDK (lazy imports, the HTTP connection pool) before
the first run. The exchange's book is left in ``exchange_book(settings.workdir)``.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import statistics
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from bench._core import LagMonitor, Result, Settings, fresh_heap, not_run, run_on_uvloop, summarize
from brokers.alpaca import AlpacaBroker, AlpacaSettings, Credentials
from brokers.base import OrderRequest, OrderType, Side
from runtime.chaos_world import ChaosError, ExchangeProcess

__all__ = ["Batch", "batch_of", "exchange_book", "run"]

NAME = "rest_loop_lag"
_KEY, _SECRET = "bench-key-id", "bench-secret"  # the local exchange's own keys, loopback only
_SYMBOLS = ["AAPL", "MSFT", "NVDA", "AMD", "TSLA"]
_SWEEP = 4  # positions, open orders, fill activities, account


@dataclass(frozen=True)
class Batch:
    """What one run asks of the adapter: ``rounds`` waves of ``stops`` stops, each canceled."""

    rounds: int
    stops: int

    @property
    def entries(self) -> int:
        return len(_SYMBOLS)

    @property
    def calls(self) -> int:
        """Return the adapter calls of one batch.

        The adapter adds a few requests of its own: a look-up per fill of an order
        it did not place (earlier runs' entries), more pages of fill activities,
        the exchange clock it polls every 0.5 s.
        """
        return self.entries + self.rounds * (2 * self.stops + 2 * _SWEEP)


@dataclass(frozen=True)
class _Pair:
    stall: float
    floor: float
    seconds: float


def batch_of(settings: Settings) -> Batch:
    """Return the batch of one run at ``settings``' size."""
    return settings.pick(Batch(rounds=5, stops=50), Batch(rounds=2, stops=10))


def exchange_book(workdir: Path) -> Path:
    """Return where the benchmark's exchange keeps its book under ``workdir``."""
    return workdir / NAME / "exchange.book"


def _stop(tag: str, n: int) -> OrderRequest:
    return OrderRequest(
        client_order_id=f"bench-stop-{tag}-{n}",
        symbol=_SYMBOLS[n % len(_SYMBOLS)],
        side=Side.SELL,
        qty=1,
        type=OrderType.STOP,
        stop_price=1.0,  # far under the market (~100): it rests until canceled
    )


def _entry(tag: str, symbol: str) -> OrderRequest:
    return OrderRequest(
        client_order_id=f"bench-entry-{tag}-{symbol}",
        symbol=symbol,
        side=Side.BUY,
        qty=1,
        type=OrderType.MARKET,
    )


async def _sweep(broker: AlpacaBroker, since: datetime) -> None:
    async with asyncio.TaskGroup() as group:
        group.create_task(broker.positions())
        group.create_task(broker.open_orders())
        group.create_task(broker.executions(since))
        group.create_task(broker.connect())  # a reconnect's account check (the stream is up)


async def _batch(broker: AlpacaBroker, batch: Batch, tag: str, since: datetime) -> None:
    async with asyncio.TaskGroup() as group:
        for symbol in _SYMBOLS:
            group.create_task(broker.submit(_entry(tag, symbol)))
    for r in range(batch.rounds):
        async with asyncio.TaskGroup() as group:
            submits = [
                group.create_task(broker.submit(_stop(f"{tag}-{r}", n))) for n in range(batch.stops)
            ]
        await _sweep(broker, since)
        async with asyncio.TaskGroup() as group:
            for submitted in submits:
                group.create_task(broker.cancel(submitted.result().order_id))
        await _sweep(broker, since)


async def _drain(broker: AlpacaBroker) -> None:
    async for _ in broker.events():
        pass


async def _timed_batch(url: str, batch: Batch, tag: str, since: datetime) -> tuple[float, float]:
    """Return (seconds, longest stall s) of one batch through a fresh, connected adapter."""
    broker = AlpacaBroker(AlpacaSettings(url_override=url), Credentials(_KEY, _SECRET))
    monitor = LagMonitor()
    async with asyncio.TaskGroup() as group:
        group.create_task(_drain(broker))
        try:
            await broker.connect()
            fresh_heap()
            lag = group.create_task(monitor.run())
            await asyncio.sleep(0.01)
            monitor.stall = 0.0
            t0 = time.perf_counter()
            await _batch(broker, batch, tag, since)
            seconds = time.perf_counter() - t0
            stall = monitor.stall
            lag.cancel()
        finally:
            await broker.close()  # ends events(), so the drain ends
    return seconds, stall


async def _pairs(url: str, batch: Batch, runs: int, since: datetime, tag: str) -> list[_Pair]:
    """Return ``runs`` (stall, idle floor, batch seconds), baseline first on even runs.

    ``tag`` makes this measurement's client order ids its own.
    """
    monitor = LagMonitor()
    seconds, _ = await _timed_batch(url, batch, f"{tag}-warmup", since)
    out: list[_Pair] = []
    for k in range(runs):
        if k % 2 == 0:
            fresh_heap()
            floor = await monitor.calibrate(seconds)
            seconds, stall = await _timed_batch(url, batch, f"{tag}-run{k}", since)
        else:
            seconds, stall = await _timed_batch(url, batch, f"{tag}-run{k}", since)
            fresh_heap()
            floor = await monitor.calibrate(seconds)
        out.append(_Pair(stall=stall, floor=floor, seconds=seconds))
    return out


def _market_time(exchange: ExchangeProcess) -> datetime:
    stamp = str(exchange.control("GET", "clock")["timestamp"])
    return datetime.fromisoformat(stamp.replace("Z", "+00:00"))


@contextlib.contextmanager
def _venue_on_its_own_core(exchange: ExchangeProcess) -> Iterator[bool]:
    """Pin the exchange to one CPU and this thread (and those it starts) to the rest.

    Yield False, pinning nothing, with fewer than two CPUs. Restore on exit.
    """
    allowed = os.sched_getaffinity(0)
    if len(allowed) < 2 or exchange.proc is None:
        yield False
        return
    venue_cpu = max(allowed)
    os.sched_setaffinity(exchange.proc.pid, {venue_cpu})
    os.sched_setaffinity(0, allowed - {venue_cpu})
    try:
        yield True
    finally:
        os.sched_setaffinity(0, allowed)
        with contextlib.suppress(ProcessLookupError):
            os.sched_setaffinity(exchange.proc.pid, allowed)


def _summary(
    name: str, metric: str, pairs: list[_Pair], baseline: str, target: str, *, judged: bool
) -> Result:
    stalls = [p.stall * 1e3 for p in pairs]
    floors = [p.floor * 1e3 for p in pairs]
    seconds = statistics.median(p.seconds for p in pairs)
    ratios = [s / f for s, f in zip(stalls, floors, strict=True)]
    return summarize(
        name=name,
        metric=f"{metric} (batch ~{seconds:.1f} s)",
        unit="ms",
        values=stalls,
        baseline=baseline,
        baseline_values=floors,
        ratios=ratios if all(f > 0 for f in floors) else None,
        target=target,
        met=(lambda v, _r: v <= 5.0) if judged else (lambda _v, _r: True),
    )


def run(settings: Settings) -> list[Result]:
    runs = settings.pick(5, 2)
    batch = batch_of(settings)
    metric = (
        f"longest event-loop stall (1 ms sleep lateness) while the Alpaca adapter makes "
        f"{batch.calls} REST calls per run against the local exchange over loopback: "
        f"{batch.entries} market entries, {batch.rounds} rounds of {batch.stops} stops "
        f"submitted at once then canceled at once, each followed by a sweep of positions, "
        f"open orders, fill activities and account"
    )
    baseline = "idle floor: the same monitor alone on the same loop, as long as the batch took"
    target = "<= 5 ms"
    workdir = exchange_book(settings.workdir).parent
    workdir.mkdir(parents=True, exist_ok=True)
    exchange = ExchangeProcess(
        workdir, speed=1.0, seed=7, symbols=_SYMBOLS, key=_KEY, secret=_SECRET
    )
    try:
        exchange.start()
    except ChaosError as exc:
        return [
            not_run(
                name=NAME, metric=metric, unit="ms", baseline=baseline, target=target, why=str(exc)
            )
        ]
    try:
        since = _market_time(exchange) - timedelta(minutes=1)
        measure = functools.partial(_pairs, exchange.url, batch, runs, since)
        with _venue_on_its_own_core(exchange) as pinned:
            own_core = run_on_uvloop(functools.partial(measure, "own"))
        shared = run_on_uvloop(functools.partial(measure, "shared"))
    finally:
        exchange.stop()
    where = (
        "the exchange on a core of its own, the trader on the others"
        if pinned
        else "one CPU: trader and exchange share it"
    )
    return [
        _summary(NAME, f"{metric}; {where}", own_core, baseline, target, judged=True),
        _summary(
            f"{NAME}_shared_cores",
            f"{metric}; trader and exchange free to share every core",
            shared,
            baseline,
            "none (reported: the venue's CPU competes with the trader's, which a remote "
            "venue's does not)",
            judged=False,
        ),
    ]
