"""``AlpacaBroker`` against the local exchange: the real SDK, the real wire, a real process.

Every test owns a fresh exchange (a fresh book) and an adapter whose reconnect
backoff is short; events are collected by a reader task and waited for by
condition, never by a guessed sleep.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import random
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from brokers.alpaca import AlpacaBroker, AlpacaSettings, Credentials, MissingCredentials, orders
from brokers.alpaca.orders import SdkThreads
from brokers.base import (
    Bar,
    BrokerEvent,
    BrokerUnavailable,
    Connected,
    Disconnected,
    DuplicateClientOrderId,
    Execution,
    OrderNotFound,
    OrderRequest,
    OrderStatus,
    OrderType,
    OrderUpdate,
    Side,
)
from tests.unit.exchange.exchange_kit import KEY, SECRET, Exchange, running_exchange


@pytest.fixture
def exchange(tmp_path: Path) -> Iterator[Exchange]:
    with running_exchange(tmp_path / "exchange.book", speed=60.0) as running:
        yield running


class Recorder:
    """Reads a broker's events into a list; ``until`` waits for a condition on them."""

    def __init__(self) -> None:
        self.events: list[BrokerEvent] = []
        self._changed = asyncio.Condition()

    async def read(self, broker: AlpacaBroker) -> None:
        async for event in broker.events():
            async with self._changed:
                self.events.append(event)
                self._changed.notify_all()

    async def until(
        self, predicate: Callable[[list[BrokerEvent]], bool], what: str, within: float = 10
    ) -> None:
        async with self._changed:
            try:
                await asyncio.wait_for(
                    self._changed.wait_for(lambda: predicate(self.events)), within
                )
            except TimeoutError:
                raise AssertionError(f"timed out waiting for {what}: {self.events}") from None

    def of(self, kind: type[Any]) -> list[Any]:
        return [e for e in self.events if isinstance(e, kind)]


@pytest.fixture
async def trader(exchange: Exchange) -> AsyncIterator[tuple[AlpacaBroker, Recorder]]:
    settings = AlpacaSettings(
        url_override=exchange.rest_url, reconnect_min_s=0.05, reconnect_max_s=0.4
    )
    broker = AlpacaBroker(settings, Credentials(KEY, SECRET), rng=random.Random(1))
    recorder = Recorder()
    reader = asyncio.create_task(recorder.read(broker))
    await broker.connect()
    try:
        yield broker, recorder
    finally:
        await broker.close()
        await asyncio.wait_for(reader, 5)


def _market(cid: str, symbol: str = "AAPL", qty: float = 10, side: Side = Side.BUY) -> OrderRequest:
    return OrderRequest(
        client_order_id=cid, symbol=symbol, side=side, qty=qty, type=OrderType.MARKET
    )


def _stop(cid: str, price: float, symbol: str = "AAPL", qty: float = 10) -> OrderRequest:
    return OrderRequest(
        client_order_id=cid,
        symbol=symbol,
        side=Side.SELL,
        qty=qty,
        type=OrderType.STOP,
        stop_price=price,
    )


def _exec_ids(recorder: Recorder) -> list[str]:
    return [e.exec_id for e in recorder.of(Execution)]


async def _truth(exchange: Exchange) -> list[str]:
    return [e["exec_id"] for e in await asyncio.to_thread(exchange.executions)]


async def test_connect_reports_account_and_the_exchange_clock(
    trader: tuple[AlpacaBroker, Recorder], exchange: Exchange
) -> None:
    broker, recorder = trader
    await recorder.until(lambda ev: bool(ev), "the first event")

    venue = await asyncio.to_thread(exchange.control, "GET", "clock")

    assert recorder.events[0] == Connected(data_lost=False)
    assert broker.account_id == "alpaca-paper"
    assert broker.venue_account == "SIM-PAPER", "the number the keys trade, for the store"
    assert broker.now().isoformat() >= "2026-01-05T14:30"
    drift = abs((broker.now() - _parse(venue["timestamp"])).total_seconds())
    assert drift < 60.0  # one real second of market time at speed 60


def _parse(stamp: str) -> Any:
    from datetime import datetime

    return datetime.fromisoformat(stamp.replace("Z", "+00:00"))


async def test_submit_fill_positions_and_executions(
    trader: tuple[AlpacaBroker, Recorder], exchange: Exchange
) -> None:
    broker, recorder = trader
    since = broker.now() - timedelta(minutes=1)

    order = await broker.submit(_market("sw-entry-1"))
    await recorder.until(lambda ev: bool(_fills(ev)), "the fill")
    positions = await broker.positions()
    executions = await broker.executions(since)
    by_client = await broker.order_by_client_id("sw-entry-1")

    fill = _fills(recorder.events)[0]
    assert order.status is OrderStatus.NEW
    assert order.client_order_id == "sw-entry-1"
    assert (fill.order_id, fill.client_order_id, fill.qty) == (order.order_id, "sw-entry-1", 10)
    assert [(p.symbol, p.qty) for p in positions] == [("AAPL", 10)]
    assert executions == [fill]
    assert by_client is not None
    assert by_client.status is OrderStatus.FILLED
    assert _exec_ids(recorder) == await _truth(exchange)
    assert await broker.open_orders() == []


async def test_open_orders_are_read_page_by_page_to_the_oldest(
    trader: tuple[AlpacaBroker, Recorder], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Alpaca answers 500 orders a call at most; a book past that is read in pages,
    newest first, to the oldest (the stops placed first). Here a page is 4 orders and
    the book holds 11 stops, some sharing a submission time."""
    broker, _ = trader
    monkeypatch.setattr(orders, "_OPEN_PAGE", 4)
    placed = [
        (await broker.submit(_stop(f"sw-stop-{n}", 90.0 + n / 10))).client_order_id
        for n in range(11)
    ]

    resting = await broker.open_orders()

    assert sorted(o.client_order_id for o in resting) == sorted(placed)
    assert len({o.order_id for o in resting}) == 11


def _fills(events: list[BrokerEvent]) -> list[Execution]:
    return [e for e in events if isinstance(e, Execution)]


async def test_resend_meets_duplicate_client_order_id(
    trader: tuple[AlpacaBroker, Recorder],
) -> None:
    broker, _ = trader
    first = await broker.submit(_stop("sw-stop-1", 1.0))

    with pytest.raises(DuplicateClientOrderId):
        await broker.submit(_stop("sw-stop-1", 1.0))
    found = await broker.order_by_client_id("sw-stop-1")

    assert found is not None
    assert found.order_id == first.order_id
    assert await broker.order_by_client_id("never-sent") is None


async def test_replace_and_cancel_a_stop(trader: tuple[AlpacaBroker, Recorder]) -> None:
    broker, recorder = trader
    stop = await broker.submit(_stop("sw-stop-2", 1.0))

    moved = await broker.replace(stop.order_id, stop_price=2.0)
    await broker.cancel(moved.order_id)
    await recorder.until(
        lambda ev: any(
            isinstance(e, OrderUpdate) and e.order.status is OrderStatus.CANCELED for e in ev
        ),
        "the cancel",
    )

    assert moved.stop_price == 2.0
    assert moved.client_order_id == "sw-stop-2"
    assert await broker.open_orders() == []
    with pytest.raises(OrderNotFound):
        await broker.cancel("5e1a0000-0000-4000-8000-000000999999")


async def test_a_stop_limit_is_sent_at_ticks_and_listed_back(
    trader: tuple[AlpacaBroker, Recorder],
) -> None:
    broker, _ = trader
    request = OrderRequest(
        client_order_id="sw-stop-limit-1",
        symbol="AAPL",
        side=Side.SELL,
        qty=10,
        type=OrderType.STOP_LIMIT,
        stop_price=1.004,
        limit_price=0.98996,
    )

    placed = await broker.submit(request)
    (listed,) = await broker.open_orders()

    assert (placed.type, placed.stop_price, placed.limit_price) == (OrderType.STOP_LIMIT, 1.0, 0.99)
    assert listed == placed


async def test_disconnect_then_backfill_loses_and_doubles_nothing(
    trader: tuple[AlpacaBroker, Recorder], exchange: Exchange
) -> None:
    broker, recorder = trader
    await broker.submit(_market("sw-entry-2"))
    await recorder.until(lambda ev: len(_fills(ev)) == 1, "the entry fill")
    await exchange_control(exchange, "POST", "market", {"running": False})
    fill = _fills(recorder.events)[0]
    await broker.submit(_stop("sw-stop-3", round(fill.price - 1, 2)))

    await exchange_control(exchange, "POST", "disconnect")
    await recorder.until(lambda ev: bool(recorder.of(Disconnected)), "Disconnected")
    # While the trader is away: its stop fills, a human trades by hand.
    await exchange_control(exchange, "POST", "price", {"symbol": "AAPL", "price": fill.price - 2})
    await exchange_control(
        exchange, "POST", "hand_trade", {"symbol": "MSFT", "side": "buy", "qty": 4}
    )
    await recorder.until(lambda ev: len(recorder.of(Connected)) == 2, "Connected again")

    kinds = [type(e).__name__ for e in recorder.events if not isinstance(e, OrderUpdate | Bar)]
    assert kinds == [
        "Connected",
        "Execution",
        "Disconnected",
        "Execution",
        "Execution",
        "Connected",
    ]
    assert recorder.of(Connected)[-1] == Connected(data_lost=True)
    assert sorted(_exec_ids(recorder)) == sorted(await _truth(exchange))
    assert {p.symbol: p.qty for p in await broker.positions()} == {"MSFT": 4}


async def test_outage_suspends_rest_and_stream_then_recovers(
    trader: tuple[AlpacaBroker, Recorder], exchange: Exchange
) -> None:
    broker, recorder = trader
    await exchange_control(exchange, "POST", "outage", {"seconds": 1.0})
    await recorder.until(lambda ev: bool(recorder.of(Disconnected)), "Disconnected")

    with pytest.raises(BrokerUnavailable):
        await broker.positions()
    await exchange_control(
        exchange, "POST", "hand_trade", {"symbol": "AAPL", "side": "buy", "qty": 2}
    )
    await recorder.until(lambda ev: len(recorder.of(Connected)) == 2, "Connected after the outage")
    await broker.connect()  # what the runtime's reconnect loop does: returns once up

    assert _exec_ids(recorder) == await _truth(exchange)
    assert [(p.symbol, p.qty) for p in await broker.positions()] == [("AAPL", 2)]


async def test_boot_in_an_outage_holds_the_last_market_time_never_the_wall_clock(
    exchange: Exchange,
) -> None:
    """The exchange's market time is another clock: until it answers, the last one seen stands."""
    _, clock = exchange.request("GET", "/_sim/clock")
    market_now = _parse(clock["timestamp"])
    held = market_now - timedelta(minutes=30)
    exchange.control("POST", "outage", {"seconds": 1.5})
    settings = AlpacaSettings(
        url_override=exchange.rest_url, reconnect_min_s=0.05, reconnect_max_s=0.4
    )
    broker = AlpacaBroker(settings, Credentials(KEY, SECRET), last_market_time=held)
    try:
        with pytest.raises(BrokerUnavailable):
            await broker.connect()
        assert broker.now() == held  # frozen, not the wall clock
        deadline = time.monotonic() + 15
        while True:
            try:
                await broker.connect()
                break
            except BrokerUnavailable:
                assert time.monotonic() < deadline, "the exchange never came back"
                await asyncio.sleep(0.2)
        assert broker.now() >= market_now  # the exchange's clock once it answered
        assert abs((broker.now() - market_now).days) < 2
    finally:
        await broker.close()


async def test_exchange_restart_is_a_reconnect(
    trader: tuple[AlpacaBroker, Recorder], exchange: Exchange
) -> None:
    broker, recorder = trader
    await broker.submit(_market("sw-entry-3"))
    await recorder.until(lambda ev: len(_fills(ev)) == 1, "the entry fill")

    assert await asyncio.to_thread(exchange.stop) == 0
    await recorder.until(lambda ev: bool(recorder.of(Disconnected)), "Disconnected")
    await asyncio.to_thread(exchange.start)
    await recorder.until(
        lambda ev: len(recorder.of(Connected)) == 2, "Connected to the new process"
    )
    await exchange_control(
        exchange, "POST", "hand_trade", {"symbol": "AAPL", "side": "sell", "qty": 10}
    )
    await recorder.until(lambda ev: len(_fills(ev)) == 2, "a fill from the restarted exchange")

    assert _exec_ids(recorder) == await _truth(exchange)
    assert await broker.positions() == []


async def exchange_control(exchange: Exchange, method: str, path: str, body: Any = None) -> Any:
    return await asyncio.to_thread(exchange.control, method, path, body)


async def test_bars_stream_and_history(
    trader: tuple[AlpacaBroker, Recorder], exchange: Exchange
) -> None:
    broker, recorder = trader
    await broker.subscribe(["AAPL", "MSFT"])

    await recorder.until(
        lambda ev: {b.symbol for b in recorder.of(Bar)} == {"AAPL", "MSFT"}, "bars of both"
    )
    first = recorder.of(Bar)[0]
    history = await broker.history(first.symbol, first.ts - timedelta(minutes=5), broker.now())

    assert first in history
    assert all(b.ts < broker.now() for b in history)


async def test_bar_gap_is_filled_after_a_data_reconnect(
    trader: tuple[AlpacaBroker, Recorder], exchange: Exchange
) -> None:
    broker, recorder = trader
    await broker.subscribe(["AAPL"])
    await recorder.until(lambda ev: bool(recorder.of(Bar)), "a first bar")

    await exchange_control(exchange, "POST", "outage", {"seconds": 2.5})
    await recorder.until(lambda ev: len(recorder.of(Connected)) == 2, "Connected after the outage")
    await recorder.until(lambda ev: len(recorder.of(Bar)) >= 5, "bars after the outage")

    stamps = [b.ts for b in recorder.of(Bar)]
    assert stamps == sorted(set(stamps))
    assert all(b - a == timedelta(minutes=1) for a, b in itertools.pairwise(stamps))


async def test_a_bar_printed_between_the_boot_refill_and_the_stream_is_filled(
    trader: tuple[AlpacaBroker, Recorder],
) -> None:
    """Found by the suite (a flaky exchange session): boot refills from history, then
    subscribes; a bar printed in between was lost, and with it the opening range."""
    broker, recorder = trader
    await asyncio.sleep(2.5)  # speed 60: a few bars print before the "boot"
    now = broker.now()
    refill = await broker.history("AAPL", now - timedelta(hours=1), now)
    assert refill, "the exchange has printed bars before the test"
    newest = max(b.ts for b in refill)
    await asyncio.sleep(2.5)  # speed 60: two more bars print while nothing listens

    await broker.subscribe(["AAPL"])
    await recorder.until(lambda ev: len(recorder.of(Bar)) >= 3, "bars once the stream is up")

    stamps = [b.ts for b in recorder.of(Bar)]
    assert stamps[0] == newest + timedelta(minutes=1), "the first bar after the refill"
    assert all(b - a == timedelta(minutes=1) for a, b in itertools.pairwise(stamps))


async def test_rest_runs_in_threads_and_the_loop_never_stalls(
    trader: tuple[AlpacaBroker, Recorder],
) -> None:
    broker, _ = trader
    lags: list[float] = []
    stop = asyncio.Event()

    async def ticker() -> None:
        while not stop.is_set():
            start = time.perf_counter()
            await asyncio.sleep(0.001)
            lags.append(time.perf_counter() - start - 0.001)

    tick = asyncio.create_task(ticker())
    calls = []
    for _ in range(30):
        start = time.perf_counter()
        await broker.positions()
        calls.append(time.perf_counter() - start)
    stop.set()
    await tick

    calls.sort()
    logging.getLogger(__name__).info(
        "REST via to_thread: median %.1f ms, p90 %.1f ms; max loop lag %.1f ms",
        calls[len(calls) // 2] * 1000,
        calls[int(len(calls) * 0.9)] * 1000,
        max(lags) * 1000,
    )
    assert max(lags) < 0.05


def test_missing_keys_fail_with_a_clear_message() -> None:
    with pytest.raises(MissingCredentials, match="APCA_API_SECRET_KEY"):
        Credentials.from_env({"APCA_API_KEY_ID": "only-the-id"})


async def test_keys_never_reach_the_log(
    exchange: Exchange, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    settings = AlpacaSettings(url_override=exchange.rest_url, reconnect_min_s=0.05)
    broker = AlpacaBroker(settings, Credentials(KEY, SECRET))
    await broker.connect()
    await broker.submit(_market("sw-log-1"))
    await exchange_control(exchange, "POST", "disconnect")
    await broker.connect()
    await broker.close()

    text = "\n".join(r.getMessage() for r in caplog.records) + repr(Credentials(KEY, SECRET))
    assert "trade stream up" in text
    assert KEY not in text
    assert SECRET not in text


async def test_a_slow_rest_call_runs_off_the_loop_thread_while_the_loop_ticks(
    trader: tuple[AlpacaBroker, Recorder], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A REST call that takes 300 ms (a slow network) does not hold the loop for any of it."""
    broker, _ = trader
    client = broker._trading
    real = client.get_all_positions
    threads: list[int] = []

    def slow_positions() -> Any:
        threads.append(threading.get_ident())
        time.sleep(0.3)  # blocking, as requests blocks on a slow answer
        return real()

    monkeypatch.setattr(client, "get_all_positions", slow_positions)
    ticks = 0
    stop = asyncio.Event()

    async def ticker() -> None:
        nonlocal ticks
        while not stop.is_set():
            await asyncio.sleep(0.005)
            ticks += 1

    tick = asyncio.create_task(ticker())
    await asyncio.sleep(0)
    await broker.positions()
    stop.set()
    await tick

    assert threads
    assert threading.get_ident() not in threads, "the SDK call ran in a worker thread"
    assert ticks >= 20, f"the loop ticked {ticks} times in 300 ms"
    assert sys.getswitchinterval() <= 0.001, "the adapter bounds the loop's GIL waits"


async def test_hung_sdk_calls_never_starve_the_rest_of_the_process(
    trader: tuple[AlpacaBroker, Recorder], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The SDK has its own bounded pool: a venue that hangs holds only those threads."""
    broker, _ = trader
    client = broker._trading
    release = threading.Event()
    names: list[str] = []
    inside = 0
    most = 0
    lock = threading.Lock()

    def hung_positions() -> Any:
        nonlocal inside, most
        with lock:
            inside += 1
            most = max(most, inside)
            names.append(threading.current_thread().name)
        try:
            release.wait(10)  # a venue that does not answer
            return []
        finally:
            with lock:
                inside -= 1

    monkeypatch.setattr(client, "get_all_positions", hung_positions)
    threads = broker._settings.sdk_threads
    calls = [asyncio.create_task(broker.positions()) for _ in range(3 * threads)]
    await asyncio.sleep(0.2)
    try:
        # Everything else that runs in a thread still does, at once.
        assert await asyncio.wait_for(asyncio.to_thread(lambda: "free"), 1.0) == "free"
        assert most == threads, "the SDK runs at most its own threads at once"
        assert all(n.startswith("alpaca-sdk") for n in names)
    finally:
        release.set()
        results = await asyncio.gather(*calls)
    assert results == [[]] * (3 * threads)  # none was lost: they queued for a thread


async def test_closing_never_waits_for_a_hung_call_and_a_reconnect_gets_new_threads() -> None:
    threads = SdkThreads(2, name="test-sdk")
    release = threading.Event()
    hung = asyncio.ensure_future(threads.run(lambda: release.wait(10)))
    await asyncio.sleep(0.05)
    started = time.perf_counter()
    threads.close()
    assert time.perf_counter() - started < 0.5, "close waited for a call in flight"
    try:
        assert await threads.run(threading.current_thread) is not threading.current_thread()
    finally:
        release.set()
        assert await hung is True  # the call in flight still completes


def test_sdk_threads_refuse_an_empty_pool() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        SdkThreads(0)
