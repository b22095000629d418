"""``SimBroker``: the embedded simulated venue, an asyncio shell over the matching engine.

Why it is built this way: the sim venue is a broker, not part of the trader. It
keeps its own book in its own file, so a restarted trading session meets the
same positions, resting stops, executions and market time, exactly as it would
meet a real broker. Three rules keep it honest:

* **Durable before told.** Every change goes through ``_change()``: under the
  book's lock the pure engine mutates the book, the whole book is saved (in a
  thread, ``store.py``), and only then are the events published or the call
  answered. A failed change leaves the last saved book in memory.
* **One owner per task.** The market pump (``pump.py``) is started by
  ``connect()`` and cancelled and awaited by ``close()``. If it dies, its error
  is re-raised to the reader of ``events()`` and every later call fails; it
  never vanishes into a log.
* **Injected time.** Market time comes from a ``MarketClock`` over an injected
  monotonic function and the pump waits with an injected ``sleep``, so tests
  drive the venue with a virtual clock instead of sleeping for a guess.

The venue keeps running while a client is disconnected (``drop_connection()``):
stops still trigger, but the events are lost, as they are on a real venue, and
the client catches up with ``executions()``, ``positions()`` and ``history()``.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import AsyncGenerator, Awaitable, Callable
from datetime import datetime, timedelta
from typing import TypeVar

from brokers.base import (
    Bar,
    BrokerError,
    BrokerEvent,
    BrokerPosition,
    Capabilities,
    Disconnected,
    Execution,
    Order,
    OrderRequest,
    Side,
)
from brokers.sim import engine
from brokers.sim.bars import BarGenerator
from brokers.sim.book import BookError, read_book
from brokers.sim.channel import EventChannel
from brokers.sim.config import SimConfig
from brokers.sim.connection import Link, LinkState
from brokers.sim.market import MarketClock, session_floor
from brokers.sim.pump import MarketPump
from brokers.sim.store import DurableBook
from runtime.clock import TradingCalendar, utc

__all__ = ["SimBroker"]

log = logging.getLogger(__name__)
_CAPABILITIES = Capabilities()  # all of them (frozen: one instance serves every call)

_HISTORY_LIMIT = 100_000

Sleep = Callable[[float], Awaitable[None]]
_T = TypeVar("_T")


class SimBroker:
    """The embedded sim venue; implements ``brokers.base.Broker``.

    Create it with ``await SimBroker.open(config)``, which loads the book at
    ``config.book_path`` or creates a fresh one. Opening a second ``SimBroker``
    on the same book is how tests model a restart; only one of them may change
    the book at a time (close the first), since nothing locks the file.

    Requests need a connection: before ``connect()``, after a drop and while
    connections are refused they raise ``BrokerUnavailable``. The test/ops
    controls model the world outside the trader and work without one:
    ``hand_trade``, ``hand_close``, ``hand_cancel``, ``set_price``,
    ``refuse_connections``, ``drop_connection``, ``pause_market``, ``resume_market``.
    """

    def __init__(
        self,
        config: SimConfig,
        book: engine.Book,
        *,
        calendar: TradingCalendar | None = None,
        monotonic: Callable[[], float] = time.monotonic,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        """Wrap a loaded ``book``; prefer ``SimBroker.open()``, which loads and saves it.

        Raises ``BookError`` when the book belongs to another account.
        """
        if book.account_id != config.account_id:
            raise BookError(
                f"{config.book_path}: book of account {book.account_id!r}, "
                f"configured account is {config.account_id!r}"
            )
        if (book.seed, book.bar_seconds) != (config.seed, config.bar_seconds):
            log.warning(
                "sim venue book %s keeps its seed=%d bar_seconds=%d (configured: %d, %d)",
                config.book_path,
                book.seed,
                book.bar_seconds,
                config.seed,
                config.bar_seconds,
            )
        self._config = config
        self._calendar = calendar or TradingCalendar()
        self._generator = BarGenerator(
            seed=book.seed,
            bar_seconds=book.bar_seconds,
            calendar=self._calendar,
            origin=book.origin,
        )
        for symbol in config.symbols:
            engine.add_instrument(book, self._generator, symbol, config.base_price(symbol))
        self._store = DurableBook(config.book_path, book)
        self._clock = MarketClock(
            self._calendar, book.market_time, speed=config.speed, monotonic=monotonic
        )
        self._channel = EventChannel(config.event_buffer)
        self._pump = MarketPump(
            store=self._store,
            clock=self._clock,
            generator=self._generator,
            calendar=self._calendar,
            channel=self._channel,
            publish=self._publish,
            max_fill_qty=config.max_fill_qty,
            retain=timedelta(days=config.retain_days),
            monotonic=monotonic,
            sleep=sleep,
        )
        self._latency = timedelta(seconds=config.latency_ms / 1000.0 * config.speed)
        self._max_fill_qty = config.max_fill_qty  # also splits a triggered stop's fill
        self._link = Link(monotonic)
        self._pump_task: asyncio.Task[None] | None = None
        self._subscribed: set[str] = set()

    @classmethod
    async def open(
        cls,
        config: SimConfig,
        *,
        calendar: TradingCalendar | None = None,
        monotonic: Callable[[], float] = time.monotonic,
        sleep: Sleep = asyncio.sleep,
    ) -> SimBroker:
        """Load (or create) the book at ``config.book_path``; return the venue, not connected.

        A fresh book starts at the regular open of ``config.start_day`` (or the next
        trading day). Raises ``BookError`` when the file is corrupt, foreign or of
        another account, ``OSError`` when it cannot be written.
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
            log.info("created sim venue book %s at %s", config.book_path, start.isoformat())
        broker = cls(config, book, calendar=calendar, monotonic=monotonic, sleep=sleep)
        async with broker._store.lock:
            await broker._store.save(broker.now())
        return broker

    # --- Broker protocol ----------------------------------------------------

    @property
    def capabilities(self) -> Capabilities:
        return _CAPABILITIES

    @property
    def account_id(self) -> str:
        return self._config.account_id

    @property
    def venue_account(self) -> str | None:
        return None  # the venue is named by its account id alone

    @property
    def book_path(self) -> str:
        """Return the path of the venue's book file."""
        return str(self._config.book_path)

    @property
    def event_backlog(self) -> int:
        """Return the number of events not yet read from ``events()``."""
        return self._channel.depth

    def now(self) -> datetime:
        """Return the venue's market time (aware UTC); it never runs backwards."""
        return self._clock.now()

    async def connect(self) -> None:
        """Connect and start the market; emit ``Connected`` (``data_lost`` after a drop).

        Raises ``BrokerUnavailable`` while connections are refused and
        ``BrokerError`` when the venue is closed or has failed.
        """
        async with self._store.lock:
            connected = self._link.connect()
            if connected is None:
                return
            self._channel.push(connected)
        if self._pump_task is None:
            self._pump_task = asyncio.create_task(self._pump.run(), name="sim-venue-pump")
            self._pump_task.add_done_callback(self._pump_done)
        log.info("sim venue %s connected at %s", self.account_id, self.now().isoformat())

    async def close(self) -> None:
        """Stop the market, save the book with the market time, end ``events()``."""
        if self._link.state is LinkState.CLOSED:
            return
        task, self._pump_task = self._pump_task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        if self._link.state is LinkState.FAILED:
            await self._store.drain()
        else:
            async with self._store.lock:
                await self._store.save(self.now())
        self._link.close()
        self._channel.close()
        log.info("sim venue %s closed at %s", self.account_id, self.now().isoformat())

    async def events(self) -> AsyncGenerator[BrokerEvent, None]:
        """Yield the venue's events in order until ``close()``; re-raise a pump failure.

        One reader at a time. While the backlog is at ``config.event_buffer`` the
        market waits for the reader.
        """
        while (event := await self._channel.get()) is not None:
            yield event

    async def subscribe(self, symbols: list[str]) -> None:
        """Ask for bars of ``symbols``; raise ``BrokerError`` for a symbol not listed."""
        self._link.check_reachable()
        unknown = sorted(set(symbols) - set(self._store.book.instruments))
        if unknown:
            raise BrokerError(f"unknown symbols {unknown}")
        self._subscribed.update(symbols)

    async def positions(self) -> list[BrokerPosition]:
        """Return the non-zero positions, by symbol."""
        self._link.check_reachable()
        positions = self._store.book.positions
        return [positions[s] for s in sorted(positions)]

    async def open_orders(self) -> list[Order]:
        """Return the open orders in the order they arrived."""
        self._link.check_reachable()
        return engine.open_orders(self._store.book)

    async def executions(self, since: datetime) -> list[Execution]:
        """Return every execution with ``ts >= since`` still in the book (see ``retain_days``)."""
        self._link.check_reachable()
        return engine.executions_since(self._store.book, utc(since))

    async def submit(self, request: OrderRequest) -> Order:
        """Accept an order and return it; a market order fills after the venue's latency.

        Raises ``DuplicateClientOrderId``, ``OrderRejected`` for bad input and
        ``BrokerUnavailable`` when not connected.
        """
        order: Order = await self._change(
            lambda book, now: engine.submit(
                book, request, now, latency=self._latency, max_fill_qty=self._max_fill_qty
            )
        )
        self._pump.wake()
        return order

    async def order_by_client_id(self, client_order_id: str) -> Order | None:
        """Return the order with ``client_order_id`` (open or not), ``None`` when unknown."""
        self._link.check_reachable()
        book = self._store.book
        order_id = book.client_ids.get(client_order_id)
        return None if order_id is None else book.orders[order_id]

    async def cancel(self, order_id: str) -> None:
        """Cancel an open order; raise ``OrderNotFound`` (unknown) or ``OrderRejected`` (filled)."""
        await self._change(lambda book, now: (None, engine.cancel(book, order_id, now)))

    async def replace(self, order_id: str, *, stop_price: float, qty: float | None = None) -> Order:
        """Move a resting stop, keeping its ids; return it as it now rests (or filled).

        Raises ``OrderNotFound`` for an unknown id and ``OrderRejected`` when the
        order is not an open stop or the values are bad.
        """
        order: Order = await self._change(
            lambda book, now: engine.replace_stop(
                book,
                order_id,
                now,
                stop_price=stop_price,
                qty=qty,
                max_fill_qty=self._max_fill_qty,
            )
        )
        return order

    async def history(self, symbol: str, start: datetime, end: datetime) -> list[Bar]:
        """Regenerate the bars of ``symbol`` the venue has printed that open in ``[start, end)``.

        Raises ``BrokerError`` for a symbol the venue does not list.
        """
        self._link.check_reachable()
        instrument = self._store.book.instruments.get(symbol)
        if instrument is None:
            raise BrokerError(f"unknown symbol {symbol!r}")
        scales = engine.Instrument(
            symbol=symbol, last=0.0, last_raw=1.0, scales=list(instrument.scales)
        )
        stop = min(utc(end), self._store.book.next_bar)
        return await asyncio.to_thread(
            self._generator.bars_between,
            symbol,
            utc(start),
            stop,
            functools.partial(engine.scale_at, scales),
            limit=_HISTORY_LIMIT,
        )

    # --- test / ops controls -----------------------------------------------

    async def hand_trade(self, symbol: str, side: Side, qty: float) -> Execution:
        """Test/ops control: trade by hand in the broker's app, at the current price.

        The order's client order id is ``manual-<n>``. Raises ``OrderRejected``
        for an unknown symbol or a bad qty.
        """
        execution: Execution = await self._change(
            lambda book, now: engine.manual_trade(book, symbol, side, qty, now), control=True
        )
        log.info("sim venue: hand trade %s %s %s @ %s", side, qty, symbol, execution.price)
        return execution

    async def hand_close(self, symbol: str, *, cancel_orders: bool = False) -> Execution | None:
        """Test/ops control: close ``symbol``'s position by hand; ``None`` when flat.

        Its resting orders stay unless ``cancel_orders``.
        """
        execution: Execution | None = await self._change(
            lambda book, now: engine.close_position(book, symbol, now, cancel_orders=cancel_orders),
            control=True,
        )
        log.info("sim venue: hand close %s -> %s", symbol, execution)
        return execution

    async def hand_cancel(self, order_id: str) -> None:
        """Test/ops control: cancel an order by hand (e.g. remove a protective stop)."""
        await self._change(
            lambda book, now: (None, engine.cancel(book, order_id, now)), control=True
        )

    async def set_price(self, symbol: str, price: float) -> list[Execution]:
        """Test/ops control: move ``symbol`` to ``price``; crossed resting orders fill at it.

        Later bars continue from the new price. Returns the fills it caused.
        """
        fills: list[Execution] = await self._change(
            lambda book, now: _with_fills(
                engine.set_price(book, symbol, price, now, max_fill_qty=self._max_fill_qty)
            ),
            control=True,
        )
        log.info("sim venue: set %s to %s (%d fills)", symbol, price, len(fills))
        return fills

    def refuse_connections(self, seconds: float) -> None:
        """Test/ops control: ``connect()`` and every request raise ``BrokerUnavailable``.

        Lasts ``seconds`` of the injected monotonic (real) time, whatever the market
        does. An open stream is not dropped; combine with ``drop_connection()``.
        """
        self._link.refuse(seconds)
        log.info("sim venue: refusing connections for %.1f s", seconds)

    async def drop_connection(self, reason: str = "connection dropped (test control)") -> None:
        """Test/ops control: lose the connection; undelivered events are lost.

        Emits ``Disconnected``; requests raise ``BrokerUnavailable`` until ``connect()``,
        which emits ``Connected(data_lost=True)``. The market keeps running.
        """
        async with self._store.lock:
            if not self._link.drop():
                return
            self._channel.clear()
            self._channel.push(Disconnected(reason=reason))
        log.info("sim venue: %s", reason)

    def pause_market(self) -> None:
        """Test/ops control: freeze market time (no bars, no market fills) until resumed."""
        self._clock.pause()

    def resume_market(self) -> None:
        """Test/ops control: let market time run again from where it stopped."""
        self._clock.resume()
        self._pump.wake()

    # --- internals ------------------------------------------------------------

    async def _change(
        self,
        mutate: Callable[[engine.Book, datetime], tuple[_T, list[BrokerEvent]]],
        *,
        control: bool = False,
    ) -> _T:
        """Apply one engine change: mutate and save under the lock, then publish.

        A book that cannot be saved fails the request with ``BrokerError`` (as a
        venue's internal error would) and leaves the last saved book in place.
        """
        check = self._link.check_usable if control else self._link.check_reachable
        check()
        async with self._store.lock:
            check()
            now = self.now()
            try:
                result, events = await self._store.apply(lambda book: mutate(book, now), now)
            except OSError as exc:
                log.error("sim venue could not save its book %s: %s", self.book_path, exc)
                raise BrokerError(f"sim venue could not save its book: {exc}") from exc
            self._publish(events)
        return result

    def _publish(self, events: list[BrokerEvent]) -> None:
        """Hand events to the connected client (lock held); without a connection they are lost."""
        if not self._link.connected:
            return
        for event in events:
            if isinstance(event, Bar) and event.symbol not in self._subscribed:
                continue
            self._channel.push(event)

    def _pump_done(self, task: asyncio.Task[None]) -> None:
        if task.cancelled():
            return
        error = task.exception() or BrokerError("sim venue market pump stopped")
        log.critical("sim venue market pump failed: %r", error, exc_info=error)
        self._link.fail(error)
        self._channel.fail(error)


def _with_fills(events: list[BrokerEvent]) -> tuple[list[Execution], list[BrokerEvent]]:
    return [e for e in events if isinstance(e, Execution)], events
