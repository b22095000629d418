"""The market pump: moves the venue's book along with market time.

It prints one bar per listed symbol per completed bar slot (fills first, then
the bar), catching up missed slots a few at a time so that a lagging loop
neither floods the event stream nor holds the book's lock for long, and fills
market orders once their latency has passed. Between steps it sleeps, with the
injected sleep, until the monotonic deadline at which the next slot completes
or the next market order is due, or until a request wakes it.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta

from brokers.base import BrokerEvent
from brokers.sim import engine
from brokers.sim.bars import BarGenerator
from brokers.sim.channel import EventChannel
from brokers.sim.market import MarketClock, local_day
from brokers.sim.store import DurableBook
from runtime.clock import TradingCalendar

__all__ = ["MarketPump"]

log = logging.getLogger(__name__)

_CATCH_UP_SLOTS = 16


class MarketPump:
    """Runs the venue's market for a ``SimBroker``; ``run()`` until cancelled."""

    def __init__(
        self,
        *,
        store: DurableBook,
        clock: MarketClock,
        generator: BarGenerator,
        calendar: TradingCalendar,
        channel: EventChannel,
        publish: Callable[[list[BrokerEvent]], None],
        max_fill_qty: float | None,
        retain: timedelta,
        monotonic: Callable[[], float],
        sleep: Callable[[float], Awaitable[None]],
    ) -> None:
        self._store = store
        self._clock = clock
        self._generator = generator
        self._calendar = calendar
        self._channel = channel
        self._publish = publish
        self._max_fill_qty = max_fill_qty
        self._retain = retain
        self._monotonic = monotonic
        self._sleep = sleep
        self._wake = asyncio.Event()

    def wake(self) -> None:
        """Make the pump look at the book now (a market order arrived, the market resumed)."""
        self._wake.set()

    async def run(self) -> None:
        """Step the market whenever work is due; never returns."""
        while True:
            self._wake.clear()
            await self._channel.writable()
            async with self._store.lock:
                now = self._clock.now()
                if self._due(now):
                    _, events = await self._store.apply(functools.partial(self._step, now=now), now)
                    self._publish(events)
                    continue
                deadline = self._next_deadline()
            await self._nap(deadline)

    def _bar_end(self, book: engine.Book) -> datetime:
        return book.next_bar + timedelta(seconds=book.bar_seconds)

    def _due(self, now: datetime) -> bool:
        book = self._store.book
        market_due = engine.next_market_due(book)
        return self._bar_end(book) <= now or (market_due is not None and market_due <= now)

    def _step(self, book: engine.Book, *, now: datetime) -> tuple[None, list[BrokerEvent]]:
        """Print up to a few completed bars or, when bars are current, fill due market orders."""
        events: list[BrokerEvent] = []
        slots = 0
        while slots < _CATCH_UP_SLOTS and self._bar_end(book) <= now:
            day = local_day(self._calendar, book.next_bar)
            events += engine.advance_bar(book, self._generator, max_fill_qty=self._max_fill_qty)
            slots += 1
            if local_day(self._calendar, book.next_bar) != day:
                engine.prune(book, book.next_bar - self._retain)
        if slots:
            log.debug("printed %d bar slot(s), market at %s", slots, now.isoformat())
            return None, events
        return None, engine.fill_due_market_orders(book, now, max_fill_qty=self._max_fill_qty)

    def _next_deadline(self) -> float | None:
        """Return the monotonic reading at which work is due again (``None``: paused)."""
        book = self._store.book
        due = self._bar_end(book)
        market_due = engine.next_market_due(book)
        if market_due is not None:
            due = min(due, market_due)
        return self._clock.deadline(due)

    async def _nap(self, deadline: float | None) -> None:
        """Sleep until the monotonic ``deadline`` (forever when ``None``) or a wake-up."""
        waiters: set[asyncio.Future[object]] = {asyncio.ensure_future(self._wake.wait())}
        if deadline is not None:
            waiters.add(asyncio.ensure_future(self._sleep_until(deadline)))
        try:
            await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in waiters:
                waiter.cancel()
            await asyncio.gather(*waiters, return_exceptions=True)

    async def _sleep_until(self, deadline: float) -> None:
        # The remaining time is read when the sleep starts, not when it was planned:
        # a clock that jumped in between must not make the pump oversleep.
        await self._sleep(max(0.0, deadline - self._monotonic()))
