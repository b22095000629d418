"""SimBroker, the asyncio shell: events, durability, the market pump, restarts."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import date, datetime, timedelta
from pathlib import Path

import pytest

from brokers.base import (
    Bar,
    Broker,
    BrokerError,
    BrokerEvent,
    BrokerUnavailable,
    Capabilities,
    Connected,
    Disconnected,
    DuplicateClientOrderId,
    Execution,
    OrderNotFound,
    OrderRejected,
    OrderStatus,
    OrderUpdate,
    Side,
)
from runtime.clock import VirtualClock
from tests.unit.brokers._sim_kit import (
    OPEN,
    Venue,
    limit,
    market,
    on_disk,
    open_sim,
    sim_config,
    start_venue,
    stop,
    stop_venue,
)


@pytest.fixture
async def venue(tmp_path: Path) -> AsyncIterator[Venue]:
    started = await start_venue(sim_config(tmp_path))
    yield started
    await stop_venue(started)


async def test_is_a_broker_that_can_do_everything(venue: Venue) -> None:
    assert isinstance(venue.sim, Broker)
    assert venue.sim.capabilities == Capabilities(
        reports_positions=True, reports_executions=True, history=True, replace=True
    )
    assert venue.sim.account_id == "SIM-PAPER"
    assert venue.sim.now() == OPEN


async def test_requests_need_a_connection(tmp_path: Path) -> None:
    sim = await open_sim(sim_config(tmp_path), VirtualClock())
    with pytest.raises(BrokerUnavailable, match="not connected"):
        await sim.positions()
    with pytest.raises(BrokerUnavailable):
        await sim.submit(market("AAPL", Side.BUY, 1))
    await sim.close()
    with pytest.raises(BrokerError, match="closed"):
        await sim.connect()


async def test_market_order_fills_through_events(venue: Venue) -> None:
    sim = venue.sim
    await sim.set_price("AAPL", 100.0)

    order = await sim.submit(market("AAPL", Side.BUY, 10, cid="buy-1"))
    events = await venue.until(
        lambda e: isinstance(e, OrderUpdate) and e.order.status.value == "filled"
    )

    assert order.status is OrderStatus.NEW
    assert [type(e).__name__ for e in events] == ["OrderUpdate", "Execution", "OrderUpdate"]
    first = events[1]
    assert isinstance(first, Execution)
    assert (first.client_order_id, first.qty, first.price, first.ts) == ("buy-1", 10, 100.0, OPEN)

    await sim.set_price("AAPL", 110.0)
    await sim.submit(market("AAPL", Side.BUY, 10, cid="buy-2"))
    second = await venue.next(Execution)

    assert second.exec_id != first.exec_id
    (position,) = await sim.positions()
    assert (position.symbol, position.qty, position.avg_price) == ("AAPL", 20, 105.0)
    known = await sim.order_by_client_id("buy-1")
    assert known is not None
    assert (known.order_id, known.status) == (order.order_id, OrderStatus.FILLED)
    assert await sim.order_by_client_id("nope") is None
    assert [e.exec_id for e in await sim.executions(OPEN)] == [first.exec_id, second.exec_id]


async def test_every_change_is_on_disk_before_its_event(venue: Venue) -> None:
    sim, config = venue.sim, venue.config
    await sim.submit(stop("AAPL", Side.BUY, 5, 500.0, cid="far-stop"))
    accepted = await venue.next(OrderUpdate)
    assert accepted.order.order_id in on_disk(config).orders

    await sim.submit(market("MSFT", Side.SELL, 3))
    execution = await venue.next(Execution)
    book = on_disk(config)
    assert execution in book.executions
    assert book.positions["MSFT"].qty == -3

    await venue.clock.advance(venue.bar_real_s)
    bar = await venue.next(Bar)
    assert on_disk(config).next_bar > bar.ts
    assert on_disk(config).market_time >= bar.ts + timedelta(seconds=60)


async def test_market_order_waits_for_the_latency(tmp_path: Path) -> None:
    venue = await start_venue(sim_config(tmp_path, latency_ms=250.0))  # 15 s of market time
    order = await venue.sim.submit(market("AAPL", Side.BUY, 1))
    await venue.clock.advance(0.25)
    execution = await venue.next(Execution)
    assert order.created_at is not None
    assert execution.ts == order.created_at + timedelta(seconds=15)
    await stop_venue(venue)


async def test_large_market_order_fills_in_chunks_across_bars(tmp_path: Path) -> None:
    venue = await start_venue(sim_config(tmp_path, max_fill_qty=100.0), subscribe=["AAPL"])
    order = await venue.sim.submit(market("AAPL", Side.BUY, 250))
    events = await venue.until(lambda e: isinstance(e, OrderUpdate) and e.order.filled_qty > 0)
    update = events[-1]
    assert isinstance(update, OrderUpdate)
    assert update.order.status is OrderStatus.PARTIALLY_FILLED

    events = await venue.bars(3)

    kinds = [type(e).__name__ for e in events]
    assert kinds == ["Execution", "OrderUpdate", "Bar", "Execution", "OrderUpdate", "Bar", "Bar"]
    chunks = [e for e in events if isinstance(e, Execution)]
    bars = [e for e in events if isinstance(e, Bar)]
    assert [c.qty for c in chunks] == [100, 50]
    assert [c.price for c in chunks] == [bars[0].open, bars[1].open]
    done = await venue.sim.order_by_client_id(order.client_order_id)
    assert done is not None
    assert (done.status, done.filled_qty) == (OrderStatus.FILLED, 250)
    assert (await venue.sim.positions())[0].qty == 250
    await stop_venue(venue)


async def test_resting_stop_triggers_on_a_bar_and_its_fill_comes_first(venue: Venue) -> None:
    sim = venue.sim
    await sim.set_price("AAPL", 100.0)
    await sim.submit(stop("AAPL", Side.BUY, 10, 100.15))
    await venue.next(OrderUpdate)

    seen: list[BrokerEvent] = []
    for _ in range(200):
        seen = await venue.bars(1)
        if any(isinstance(e, Execution) for e in seen):
            break

    execution = next(e for e in seen if isinstance(e, Execution))
    trigger_bar = next(e for e in seen if isinstance(e, Bar) and e.symbol == "AAPL")
    assert seen.index(execution) < seen.index(trigger_bar)
    assert trigger_bar.high >= 100.15
    assert execution.price == max(100.15, trigger_bar.open)
    assert execution.ts == trigger_bar.ts + timedelta(seconds=60)
    assert (await sim.positions())[0].qty == 10
    assert await sim.open_orders() == []


async def test_limit_order_rests_then_fills(venue: Venue) -> None:
    await venue.sim.set_price("MSFT", 50.0)
    order = await venue.sim.submit(limit("MSFT", Side.BUY, 4, 49.0))
    assert [o.order_id for o in await venue.sim.open_orders()] == [order.order_id]
    (fill,) = await venue.sim.set_price("MSFT", 48.5)
    assert (fill.order_id, fill.price) == (order.order_id, 48.5)
    assert (await venue.next(Execution)) == fill


async def test_bars_catch_up_in_order_after_a_lag(venue: Venue) -> None:
    await venue.clock.advance(40 * venue.bar_real_s)
    events = await venue.until(
        lambda e: isinstance(e, Bar) and e.symbol == "MSFT" and e.ts == OPEN + timedelta(minutes=39)
    )
    for symbol in ("AAPL", "MSFT"):
        stamps = [e.ts for e in events if isinstance(e, Bar) and e.symbol == symbol]
        assert stamps == [OPEN + timedelta(minutes=i) for i in range(40)]


async def test_market_time_skips_nights_and_weekends(tmp_path: Path) -> None:
    friday = date(2026, 1, 9)
    config = sim_config(tmp_path, bar_seconds=1800, speed=1800.0, start_day=friday)
    venue = await start_venue(config, subscribe=["AAPL"])
    assert venue.sim.now() == OPEN + timedelta(days=4)

    events = await venue.bars(14)

    stamps = [e.ts for e in events if isinstance(e, Bar)]
    monday_open = OPEN + timedelta(days=7)
    assert stamps[12] == OPEN + timedelta(days=4, hours=6)  # Friday 15:30 New York
    assert stamps[13] == monday_open
    assert venue.sim.now() == monday_open + timedelta(minutes=30)
    await stop_venue(venue)


async def test_history_regenerates_the_printed_bars(venue: Venue) -> None:
    events = await venue.bars(5)
    await venue.sim.set_price("AAPL", 200.0)
    events += await venue.bars(5)
    printed = [e for e in events if isinstance(e, Bar) and e.symbol == "AAPL"]

    history = await venue.sim.history("AAPL", OPEN, OPEN + timedelta(days=3))
    before = await venue.sim.history("AAPL", OPEN - timedelta(days=3), OPEN)

    assert history == printed  # nothing the venue has not printed yet
    assert len(before) == 390  # Friday's session: the venue has history before its first day
    assert before[-1].ts == OPEN - timedelta(days=3, minutes=-389)
    assert printed[5].open == 200.0
    assert (
        await venue.sim.history("AAPL", OPEN + timedelta(minutes=2), OPEN + timedelta(minutes=4))
        == printed[2:4]
    )
    with pytest.raises(BrokerError, match="unknown symbol"):
        await venue.sim.history("ZZZZ", OPEN, OPEN + timedelta(hours=1))


async def test_cancel_and_replace(venue: Venue) -> None:
    sim = venue.sim
    await sim.set_price("AAPL", 100.0)
    resting = await sim.submit(stop("AAPL", Side.SELL, 10, 95.0))
    await venue.next(OrderUpdate)

    moved = await sim.replace(resting.order_id, stop_price=97.0)
    update = await venue.next(OrderUpdate)
    assert update.order == moved
    assert (moved.order_id, moved.client_order_id, moved.stop_price) == (
        resting.order_id,
        resting.client_order_id,
        97.0,
    )
    assert on_disk(venue.config).orders[resting.order_id].stop_price == 97.0

    await sim.cancel(resting.order_id)
    canceled = await venue.next(OrderUpdate)
    assert canceled.order.status is OrderStatus.CANCELED
    assert await sim.open_orders() == []
    with pytest.raises(OrderNotFound):
        await sim.cancel("SIM-O9999999")
    with pytest.raises(OrderRejected, match="not a resting stop"):
        await sim.replace(resting.order_id, stop_price=96.0)


async def test_duplicate_and_bad_orders_raise_and_change_nothing(venue: Venue) -> None:
    sim = venue.sim
    await sim.submit(market("AAPL", Side.BUY, 1, cid="once"))
    before = on_disk(venue.config)

    with pytest.raises(DuplicateClientOrderId):
        await sim.submit(market("AAPL", Side.BUY, 1, cid="once"))
    with pytest.raises(OrderRejected, match="qty"):
        await sim.submit(market("AAPL", Side.BUY, -1, cid="neg"))
    with pytest.raises(OrderRejected, match="unknown symbol"):
        await sim.submit(market("ZZZZ", Side.BUY, 1, cid="zz"))
    with pytest.raises(OrderRejected, match="stop_price"):
        await sim.submit(stop("AAPL", Side.SELL, 1, float("nan"), cid="nan"))

    after = on_disk(venue.config)
    assert after.orders.keys() == before.orders.keys()
    assert await sim.order_by_client_id("neg") is None


async def test_restart_meets_the_same_venue(tmp_path: Path) -> None:
    config = sim_config(tmp_path)
    first = await start_venue(config)
    await first.sim.submit(market("AAPL", Side.BUY, 100, cid="entry"))
    await first.next(Execution)
    protective = await first.sim.submit(stop("AAPL", Side.SELL, 100, 50.0, cid="entry-stop"))
    await first.bars(30)
    await first.sim.hand_trade("MSFT", Side.SELL, 7)
    positions = await first.sim.positions()
    orders = await first.sim.open_orders()
    executions = await first.sim.executions(OPEN)
    left_at = first.sim.now()
    await stop_venue(first)

    second = await start_venue(config, VirtualClock())  # a new process: its clock starts at 0

    assert second.sim.now() >= left_at
    assert await second.sim.positions() == positions
    assert await second.sim.open_orders() == orders
    assert [o.order_id for o in orders] == [protective.order_id]
    assert await second.sim.executions(OPEN) == executions
    bar = (await second.bars(1))[0]
    assert isinstance(bar, Bar)
    assert bar.ts == OPEN + timedelta(minutes=30)
    await stop_venue(second)


async def test_restart_after_a_crash_resumes_from_the_last_saved_change(tmp_path: Path) -> None:
    config = sim_config(tmp_path)
    crashed = await start_venue(config)
    await crashed.bars(10)
    await crashed.sim.submit(market("AAPL", Side.BUY, 5))
    execution = await crashed.next(Execution)
    crashed.sim.pause_market()  # it writes nothing more: as if killed here

    restarted = await start_venue(config, VirtualClock())

    assert restarted.sim.now() >= execution.ts
    assert restarted.sim.now() >= OPEN + timedelta(minutes=10)
    assert await restarted.sim.executions(OPEN) == [execution]
    await stop_venue(restarted)
    await stop_venue(crashed)


async def test_hand_trade_and_hand_close(venue: Venue) -> None:
    sim = venue.sim
    await sim.set_price("AAPL", 80.0)
    bought = await sim.hand_trade("AAPL", Side.BUY, 30)
    assert bought.client_order_id.startswith("manual-")
    assert bought.price == 80.0
    assert await venue.next(Execution) == bought
    resting = await sim.submit(stop("AAPL", Side.SELL, 30, 70.0))

    closed = await sim.hand_close("AAPL")

    assert closed is not None
    assert (closed.side, closed.qty, closed.price) == (Side.SELL, 30, 80.0)
    assert await sim.positions() == []
    assert [o.order_id for o in await sim.open_orders()] == [resting.order_id]
    assert await sim.hand_close("AAPL", cancel_orders=True) is None
    assert await sim.open_orders() == []


async def test_set_price_fills_a_resting_stop(venue: Venue) -> None:
    sim = venue.sim
    await sim.set_price("MSFT", 100.0)
    await sim.hand_trade("MSFT", Side.BUY, 10)
    resting = await sim.submit(stop("MSFT", Side.SELL, 10, 95.0))

    (fill,) = await sim.set_price("MSFT", 93.0)

    assert (fill.order_id, fill.price) == (resting.order_id, 93.0)
    assert fill in on_disk(venue.config).executions
    assert await sim.positions() == []


async def test_controls_work_without_a_connection_and_their_events_are_lost(tmp_path: Path) -> None:
    config = sim_config(tmp_path)
    ops = await open_sim(config, VirtualClock())
    await ops.hand_trade("AAPL", Side.BUY, 3)
    await ops.close()

    venue = await start_venue(config)

    assert venue.sim.event_backlog == 0
    assert [p.qty for p in await venue.sim.positions()] == [3]
    assert [e.client_order_id for e in await venue.sim.executions(OPEN)] == ["manual-1"]
    await stop_venue(venue)


async def test_refuse_connections_for_a_while(venue: Venue) -> None:
    sim = venue.sim
    sim.refuse_connections(5.0)

    with pytest.raises(BrokerUnavailable, match="refuses"):
        await sim.positions()
    with pytest.raises(BrokerUnavailable, match="refuses"):
        await sim.submit(market("AAPL", Side.BUY, 1))
    with pytest.raises(BrokerUnavailable, match="refuses"):
        await sim.connect()

    await venue.clock.advance(5.0)

    assert await sim.positions() == []
    await sim.submit(market("AAPL", Side.BUY, 1))
    await venue.next(Execution)


async def test_drop_connection_loses_events_until_reconnect(venue: Venue) -> None:
    sim = venue.sim
    await sim.set_price("AAPL", 100.0)
    await sim.hand_trade("AAPL", Side.BUY, 10)
    resting = await sim.submit(stop("AAPL", Side.SELL, 10, 95.0))

    await sim.drop_connection("cable pulled")

    assert await venue.next(Disconnected) == Disconnected(reason="cable pulled")
    assert sim.event_backlog == 0
    with pytest.raises(BrokerUnavailable, match="not connected"):
        await sim.open_orders()
    (fill,) = await sim.set_price("AAPL", 90.0)  # the stop fills while we are away
    assert fill.order_id == resting.order_id
    assert sim.event_backlog == 0

    await sim.connect()

    assert await venue.next(Connected) == Connected(data_lost=True)
    assert fill in await sim.executions(OPEN)
    assert await sim.positions() == []


async def test_pump_failure_surfaces_from_events(tmp_path: Path) -> None:
    venue = await start_venue(sim_config(tmp_path))
    venue.config.book_path.unlink()
    venue.config.book_path.parent.rmdir()  # the next save cannot write

    await venue.clock.advance(venue.bar_real_s)

    with pytest.raises(FileNotFoundError):
        await venue.until(lambda e: False)
    with pytest.raises(BrokerError, match="failed"):
        await venue.sim.positions()
    await stop_venue(venue)


async def test_backlog_is_bounded_and_the_market_waits_for_the_reader(tmp_path: Path) -> None:
    venue = await start_venue(sim_config(tmp_path, event_buffer=8))
    await venue.clock.advance(100 * venue.bar_real_s)
    await venue.until(lambda e: isinstance(e, Bar))  # the pump is printing

    deepest = 0
    stamps: list[datetime] = []
    async with asyncio.timeout(10):
        async for event in venue.stream:
            deepest = max(deepest, venue.sim.event_backlog)
            if isinstance(event, Bar) and event.symbol == "MSFT":
                stamps.append(event.ts)
                if event.ts == OPEN + timedelta(minutes=99):
                    break

    assert deepest <= 8 + 16 * 2
    assert stamps[-1] == OPEN + timedelta(minutes=99)
    assert stamps == sorted(stamps)
    await stop_venue(venue)


async def test_pause_freezes_market_time(venue: Venue) -> None:
    venue.sim.pause_market()
    await venue.clock.advance(10.0)
    assert venue.sim.now() == OPEN
    venue.sim.resume_market()
    await venue.clock.advance(venue.bar_real_s)
    bar = await venue.next(Bar)
    assert bar.ts == OPEN


async def test_close_saves_the_market_time_and_ends_the_stream(tmp_path: Path) -> None:
    config = sim_config(tmp_path)
    venue = await start_venue(config)
    await venue.clock.advance(2.5)
    now = venue.sim.now()
    await venue.sim.close()
    assert on_disk(config).market_time == now
    assert [e async for e in venue.stream if not isinstance(e, Bar)] == []
