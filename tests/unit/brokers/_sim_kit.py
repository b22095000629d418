"""Factories for the sim venue tests: configs, pure books, a venue on a virtual clock.

A module rather than a ``conftest.py``: the test dirs have no ``__init__.py``, so a
second ``conftest`` would be a duplicate top-level module for mypy.

Time: the venue's market clock and its pump run on a ``VirtualClock`` (monotonic +
sleep), so a test moves the market with ``clock.advance()`` and then waits on the
events that must follow; with ``speed == 60`` and 60 s bars one bar is one second
of that clock. ``asyncio.timeout`` only guards against a hang, it times nothing.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

from brokers.base import Bar, BrokerEvent, Connected, OrderRequest, OrderType, Side
from brokers.sim import BarGenerator, Book, SimBroker, SimConfig, engine, read_book
from runtime.clock import TradingCalendar, VirtualClock

CALENDAR = TradingCalendar()
DAY = date(2026, 1, 5)  # a Monday
OPEN = datetime(2026, 1, 5, 14, 30, tzinfo=UTC)  # 09:30 New York
SYMBOLS = ["AAPL", "MSFT"]
GUARD_S = 10.0

E = TypeVar("E")


def sim_config(tmp_path: Path, **changes: Any) -> SimConfig:
    """A venue config with its book in ``tmp_path/venue``."""
    (tmp_path / "venue").mkdir(exist_ok=True)
    values: dict[str, Any] = {
        "symbols": list(SYMBOLS),
        "book_path": tmp_path / "venue" / "sim.book",
    }
    values.update(changes)
    return SimConfig(**values)


def generator(seed: int = 7, bar_seconds: int = 60, origin: date = DAY) -> BarGenerator:
    return BarGenerator(seed=seed, bar_seconds=bar_seconds, calendar=CALENDAR, origin=origin)


def pure_book(
    *, start: datetime = OPEN, prices: dict[str, float] | None = None, seed: int = 7
) -> tuple[Book, BarGenerator]:
    """A fresh book (no disk) whose market stands at bar slot ``start``."""
    gen = generator(seed)
    book = engine.new_book(
        account_id="SIM-TEST",
        generator=gen,
        start=start,
        base_prices=prices or {s: 100.0 for s in SYMBOLS},
    )
    return book, gen


def market(symbol: str, side: Side, qty: float, cid: str = "c-1") -> OrderRequest:
    return OrderRequest(
        client_order_id=cid, symbol=symbol, side=side, qty=qty, type=OrderType.MARKET
    )


def stop(symbol: str, side: Side, qty: float, price: float, cid: str = "s-1") -> OrderRequest:
    return OrderRequest(
        client_order_id=cid,
        symbol=symbol,
        side=side,
        qty=qty,
        type=OrderType.STOP,
        stop_price=price,
    )


def limit(symbol: str, side: Side, qty: float, price: float, cid: str = "l-1") -> OrderRequest:
    return OrderRequest(
        client_order_id=cid,
        symbol=symbol,
        side=side,
        qty=qty,
        type=OrderType.LIMIT,
        limit_price=price,
    )


def stop_limit(
    symbol: str, side: Side, qty: float, stop_price: float, limit_price: float, cid: str = "sl-1"
) -> OrderRequest:
    return OrderRequest(
        client_order_id=cid,
        symbol=symbol,
        side=side,
        qty=qty,
        type=OrderType.STOP_LIMIT,
        stop_price=stop_price,
        limit_price=limit_price,
    )


def first_gap(up: bool) -> tuple[int, float, float]:
    """Find a day whose AAPL open gaps (up or down) past the previous close by > 0.2%.

    Return (ordinal of the day before the gap, its last close, the next day's open).
    """
    gen = generator()
    day = OPEN.date()
    for _ in range(60):
        nxt = gen.calendar.next_day(day)
        close = gen.bar("AAPL", bar_slot(gen.slots - 1, day), 100.0).close
        opening = gen.bar("AAPL", bar_slot(0, nxt), 100.0).open
        if (opening > close * 1.002) if up else (opening < close * 0.998):
            return day.toordinal(), close, opening
        day = nxt
    raise AssertionError("no gap in 60 days")


def on_disk(config: SimConfig) -> Book:
    """Read the venue's book file independently of any venue."""
    book = read_book(config.book_path)
    assert book is not None, f"no book at {config.book_path}"
    return book


@dataclass
class Venue:
    """A connected ``SimBroker`` on a virtual clock, with its event stream."""

    sim: SimBroker
    clock: VirtualClock
    config: SimConfig
    stream: AsyncGenerator[BrokerEvent, None]
    subscribed: list[str] = field(default_factory=list)

    @property
    def bar_real_s(self) -> float:
        """Real (virtual-clock) seconds per bar."""
        return self.config.bar_seconds / self.config.speed

    async def until(self, match: Callable[[BrokerEvent], bool]) -> list[BrokerEvent]:
        """Read events up to and including the first that ``match``es; return them all."""
        seen: list[BrokerEvent] = []
        async with asyncio.timeout(GUARD_S):
            async for event in self.stream:
                seen.append(event)
                if match(event):
                    return seen
        raise AssertionError(f"event stream ended; saw {seen}")

    async def next(self, kind: type[E]) -> E:
        """Read events until one of ``kind``; return it."""
        event = (await self.until(lambda e: isinstance(e, kind)))[-1]
        assert isinstance(event, kind)
        return event

    async def bars(self, count: int) -> list[BrokerEvent]:
        """Let ``count`` bars pass, one at a time; return every event up to the last bar."""
        seen: list[BrokerEvent] = []
        last = self.subscribed[-1]
        for _ in range(count):
            await self.clock.advance(self.bar_real_s)
            seen += await self.until(lambda e: isinstance(e, Bar) and e.symbol == last)
        return seen


async def open_sim(config: SimConfig, clock: VirtualClock) -> SimBroker:
    return await SimBroker.open(config, monotonic=clock.monotonic, sleep=clock.sleep)


async def start_venue(
    config: SimConfig, clock: VirtualClock | None = None, *, subscribe: list[str] | None = None
) -> Venue:
    """Open, connect and subscribe; the caller closes with ``stop_venue``."""
    clock = clock or VirtualClock()
    sim = await open_sim(config, clock)
    await sim.connect()
    symbols = list(config.symbols) if subscribe is None else subscribe
    if symbols:
        await sim.subscribe(symbols)
    venue = Venue(sim=sim, clock=clock, config=config, stream=sim.events(), subscribed=symbols)
    await venue.next(Connected)
    return venue


async def stop_venue(venue: Venue) -> None:
    await venue.sim.close()
    await venue.stream.aclose()


def bar_slot(index: int, day: date = DAY, bar_seconds: int = 60) -> datetime:
    return CALENDAR.open_of(day) + timedelta(seconds=index * bar_seconds)
