"""The exchange's venue: the sim engine's book, its market, and the fan-out of its events.

Why it is built this way: the exchange is the sim venue served over the wire, so
it reuses the sim's parts unchanged (the pure engine, the durable book file, the
market clock and pump) and adds only what a server needs: every change is made
under the book's lock, saved, and only then published to every listener (the
websocket hubs) and answered, so nothing a client was told is missing from the
book after a crash. Unlike ``SimBroker`` there is no client link: connections
are the server's business (``app.py``); the market runs whoever is connected.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from typing import TypeVar

from brokers.base import (
    Bar,
    BrokerError,
    BrokerEvent,
    Execution,
    Order,
    OrderRequest,
    OrderUpdate,
    Side,
)
from brokers.sim import engine
from brokers.sim.bars import BarGenerator
from brokers.sim.book import read_book
from brokers.sim.channel import EventChannel
from brokers.sim.config import SimConfig
from brokers.sim.market import MarketClock, session_floor
from brokers.sim.matching import instrument_of
from brokers.sim.pump import MarketPump
from brokers.sim.store import DurableBook
from runtime.clock import TradingCalendar, utc

__all__ = ["ExchangeVenue", "Listener"]

log = logging.getLogger(__name__)

Listener = Callable[[list[BrokerEvent], frozenset[str]], None]
"""Receives the events of one change and the ids of the orders it replaced (lock held)."""

_T = TypeVar("_T")
_HISTORY_LIMIT = 100_000


class ExchangeVenue:
    """The book, market time and event fan-out of one exchange process.

    Create it with ``await ExchangeVenue.open(config)``, own ``run_market()`` as
    a task, ``save()`` after cancelling it. Requests raise the engine's typed
    errors (``DuplicateClientOrderId``, ``OrderRejected``, ``OrderNotFound``) and
    ``BrokerError`` when the book cannot be saved.
    """

    def __init__(
        self,
        config: SimConfig,
        book: engine.Book,
        *,
        calendar: TradingCalendar,
        monotonic: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        if (book.seed, book.bar_seconds) != (config.seed, config.bar_seconds):
            log.warning(
                "exchange book %s keeps its seed=%d bar_seconds=%d (asked: %d, %d)",
                config.book_path,
                book.seed,
                book.bar_seconds,
                config.seed,
                config.bar_seconds,
            )
        self._config = config
        self._calendar = calendar
        self._generator = BarGenerator(
            seed=book.seed, bar_seconds=book.bar_seconds, calendar=calendar, origin=book.origin
        )
        for symbol in config.symbols:
            engine.add_instrument(book, self._generator, symbol, config.base_price(symbol))
        self._store = DurableBook(config.book_path, book)
        self._clock = MarketClock(
            calendar, book.market_time, speed=config.speed, monotonic=monotonic
        )
        self._listeners: list[Listener] = []
        self._pump = MarketPump(
            store=self._store,
            clock=self._clock,
            generator=self._generator,
            calendar=calendar,
            channel=EventChannel(1),  # never written: listeners never make the market wait
            publish=self._publish,
            max_fill_qty=config.max_fill_qty,
            retain=timedelta(days=config.retain_days),
            monotonic=monotonic,
            sleep=sleep,
        )
        self._latency = timedelta(seconds=config.latency_ms / 1000.0 * config.speed)
        self._max_fill_qty = config.max_fill_qty  # also splits a triggered stop's fill

    @classmethod
    async def open(
        cls, config: SimConfig, *, calendar: TradingCalendar | None = None
    ) -> ExchangeVenue:
        """Load (or create) the book at ``config.book_path`` and save it; the market is stopped.

        Raises ``BookError`` for a corrupt or foreign book, ``OSError`` when it cannot be written.
        """
        calendar = calendar or TradingCalendar()
        book = await asyncio.to_thread(read_book, config.book_path)
        if book is None:
            generator = BarGenerator(
                seed=config.seed,
                bar_seconds=config.bar_seconds,
                calendar=calendar,
                origin=config.start_day,
            )
            start = session_floor(calendar, calendar.open_of(config.start_day))
            book = engine.new_book(
                account_id=config.account_id,
                generator=generator,
                start=start,
                base_prices={s: config.base_price(s) for s in config.symbols},
            )
            log.info("created exchange book %s at %s", config.book_path, start.isoformat())
        venue = cls(config, book, calendar=calendar)
        async with venue._store.lock:
            await venue._store.save(venue.now())
        return venue

    # --- lifecycle ------------------------------------------------------------

    async def run_market(self) -> None:
        """Run the market until cancelled; the caller owns this as a task (it never returns)."""
        await self._pump.run()

    async def save(self) -> None:
        """Save the book with the market time (at shutdown, after the market stopped)."""
        async with self._store.lock:
            await self._store.save(self.now())

    def add_listener(self, listener: Listener) -> None:
        """Publish every later change to ``listener`` (it must not block nor raise)."""
        self._listeners.append(listener)

    # --- reading --------------------------------------------------------------

    @property
    def book(self) -> engine.Book:
        """Return the current book (read it, never keep it: a rollback replaces it)."""
        return self._store.book

    @property
    def speed(self) -> float:
        return self._clock.speed

    @property
    def bar_seconds(self) -> int:
        """Return the length of the bars this exchange prints (its book's, not the option's)."""
        return self._generator.bar_seconds

    @property
    def running(self) -> bool:
        return not self._clock.paused

    @property
    def calendar(self) -> TradingCalendar:
        return self._calendar

    def now(self) -> datetime:
        """Return the exchange's market time."""
        return self._clock.now()

    def order_by_client_id(self, client_order_id: str) -> Order | None:
        order_id = self.book.client_ids.get(client_order_id)
        return None if order_id is None else self.book.orders.get(order_id)

    async def history(self, symbol: str, start: datetime, end: datetime) -> list[Bar]:
        """Return the printed bars of ``symbol`` that open in ``[start, end)``.

        Raises ``OrderRejected`` for a symbol the exchange does not list.
        """
        instrument = instrument_of(self.book, symbol)
        scales = engine.Instrument(
            symbol=symbol, last=0.0, last_raw=1.0, scales=list(instrument.scales)
        )
        stop = min(utc(end), self.book.next_bar)
        return await asyncio.to_thread(
            self._generator.bars_between,
            symbol,
            utc(start),
            stop,
            functools.partial(engine.scale_at, scales),
            limit=_HISTORY_LIMIT,
        )

    # --- requests -------------------------------------------------------------

    async def submit(self, request: OrderRequest) -> Order:
        order: Order = await self._change(
            lambda book, now: engine.submit(
                book, request, now, latency=self._latency, max_fill_qty=self._max_fill_qty
            )
        )
        self._pump.wake()
        return order

    async def cancel(self, order_id: str) -> None:
        await self._change(lambda book, now: (None, engine.cancel(book, order_id, now)))

    async def cancel_all(self) -> list[Order]:
        """Cancel every open order; return them as canceled."""

        def mutate(book: engine.Book, now: datetime) -> tuple[list[Order], list[BrokerEvent]]:
            events: list[BrokerEvent] = []
            for order in engine.open_orders(book):
                events += engine.cancel(book, order.order_id, now)
            return [e.order for e in events if isinstance(e, OrderUpdate)], events

        canceled: list[Order] = await self._change(mutate)
        return canceled

    async def replace(
        self,
        order_id: str,
        *,
        stop_price: float | None = None,
        limit_price: float | None = None,
        qty: float | None = None,
    ) -> Order:
        """Change a resting order's prices or qty (``None`` keeps one); it keeps its ids."""
        order: Order = await self._change(
            lambda book, now: engine.replace_order(
                book,
                order_id,
                now,
                stop_price=stop_price,
                limit_price=limit_price,
                qty=qty,
                max_fill_qty=self._max_fill_qty,
            ),
            replaced=frozenset({order_id}),
        )
        return order

    async def close_position(self, symbol: str) -> Order | None:
        """Flatten ``symbol`` at the last price; return the closing order (``None`` when flat)."""

        def mutate(book: engine.Book, now: datetime) -> tuple[Order | None, list[BrokerEvent]]:
            execution, events = engine.close_position(book, symbol, now)
            return (None if execution is None else book.orders[execution.order_id]), events

        order: Order | None = await self._change(mutate)
        return order

    # --- test and chaos controls (the world outside the trader) -----------------

    async def hand_trade(self, symbol: str, side: Side, qty: float) -> Execution:
        execution: Execution = await self._change(
            lambda book, now: engine.manual_trade(book, symbol, side, qty, now)
        )
        log.info("hand trade %s %s %s @ %s", side, qty, symbol, execution.price)
        return execution

    async def hand_close(self, symbol: str, *, cancel_orders: bool) -> Execution | None:
        execution: Execution | None = await self._change(
            lambda book, now: engine.close_position(book, symbol, now, cancel_orders=cancel_orders)
        )
        log.info("hand close %s -> %s", symbol, execution)
        return execution

    async def set_price(self, symbol: str, price: float) -> list[Execution]:
        def mutate(book: engine.Book, now: datetime) -> tuple[list[Execution], list[BrokerEvent]]:
            events = engine.set_price(book, symbol, price, now, max_fill_qty=self._max_fill_qty)
            return [e for e in events if isinstance(e, Execution)], events

        fills: list[Execution] = await self._change(mutate)
        log.info("set %s to %s (%d fills)", symbol, price, len(fills))
        return fills

    def set_running(self, running: bool) -> None:
        """Freeze (or resume) market time: no bars, no market fills while frozen."""
        if running:
            self._clock.resume()
            self._pump.wake()
        else:
            self._clock.pause()

    # --- internals --------------------------------------------------------------

    async def _change(
        self,
        mutate: Callable[[engine.Book, datetime], tuple[_T, list[BrokerEvent]]],
        *,
        replaced: frozenset[str] = frozenset(),
    ) -> _T:
        """Apply one engine change under the lock: mutate, save, publish, then answer."""
        async with self._store.lock:
            now = self.now()
            try:
                result, events = await self._store.apply(lambda book: mutate(book, now), now)
            except OSError as exc:
                log.error("exchange could not save its book %s: %s", self._store.path, exc)
                raise BrokerError(f"exchange could not save its book: {exc}") from exc
            self._publish(events, replaced)
        return result

    def _publish(self, events: list[BrokerEvent], replaced: frozenset[str] = frozenset()) -> None:
        if not events:
            return
        for listener in self._listeners:
            try:
                listener(events, replaced)
            except Exception:  # a broken listener must not fail the change the book holds
                log.exception("exchange listener %r failed", listener)
