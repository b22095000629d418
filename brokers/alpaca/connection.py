"""The adapter's connections to Alpaca's streams, each an owned loop with backoff.

Why it is built this way: alpaca-py's own stream loop (``_run_forever``)
reconnects by itself but tells nobody, and a handler that raises stops its
reading. The runtime must hear "connection lost" (suspend the actors) and
"connection back" (backfill, reconcile), and Alpaca allows one trade stream per
account, so a reconnect storm is a real failure. So each link drives one SDK
stream object per connection attempt through its steps (``sdk.start`` then
``sdk.consume``), waits a capped, jittered, exponential delay after every
failure, and calls back on up and down. Handlers catch everything: nothing
raises into alpaca-py. The streams run with ``raw_data=True`` so that parsing
happens in our handler, where a malformed frame is logged, not fatal.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections import deque
from collections.abc import Awaitable, Callable

from brokers.alpaca import sdk
from brokers.base import BrokerEvent

__all__ = ["Backoff", "DataLink", "EventQueue", "RawHandler", "TradeLink", "cancel_and_wait"]

log = logging.getLogger(__name__)

RawHandler = Callable[[object], Awaitable[None]]
"""Receives one raw frame (``raw_data=True``): a dict, parsed by the handler."""
Sleep = Callable[[float], Awaitable[None]]


class Backoff:
    """Exponential delays from ``min_s`` doubling to ``max_s``, with equal jitter (seeded)."""

    def __init__(self, min_s: float, max_s: float, rng: random.Random) -> None:
        if not 0 < min_s <= max_s:
            raise ValueError(f"backoff needs 0 < min_s <= max_s, got {min_s}, {max_s}")
        self._min_s = min_s
        self._max_s = max_s
        self._rng = rng

    def delay(self, failures: int) -> float:
        """Return the wait after ``failures`` consecutive failures (>= 1): in [cap/2, cap]."""
        capped = min(self._max_s, self._min_s * (1 << max(0, min(failures - 1, 30))))
        return capped / 2 + self._rng.random() * capped / 2


class EventQueue:
    """Ordered events for one reader; ``put`` waits while ``size`` events are unread.

    ``fail`` makes the reader raise once the backlog is delivered; ``close`` ends it.
    """

    def __init__(self, size: int) -> None:
        self._size = size
        self._items: deque[BrokerEvent] = deque()
        self._readable = asyncio.Event()
        self._writable = asyncio.Event()
        self._writable.set()
        self._error: BaseException | None = None
        self._closed = False

    async def put(self, event: BrokerEvent) -> None:
        while len(self._items) >= self._size and not self._closed:
            self._writable.clear()
            await self._writable.wait()
        if self._closed:
            return
        self._items.append(event)
        self._readable.set()

    def fail(self, error: BaseException) -> None:
        self._error = error
        self._readable.set()

    def close(self) -> None:
        self._closed = True
        self._readable.set()
        self._writable.set()

    async def get(self) -> BrokerEvent | None:
        """Return the next event, ``None`` once closed; raise the failure, if any."""
        while True:
            if self._items:
                event = self._items.popleft()
                self._writable.set()
                return event
            if self._error is not None:
                raise self._error
            if self._closed:
                return None
            self._readable.clear()
            await self._readable.wait()


async def _close(stream: sdk.TradingStream | sdk.StockDataStream) -> None:
    with contextlib.suppress(Exception):
        await stream.close()


async def cancel_and_wait(task: asyncio.Task[None]) -> None:
    """Cancel ``task`` until it is done.

    One ``cancel()`` is not enough for an SDK stream: its reader awaits
    ``asyncio.wait_for(ws.recv(), 5)``, and on Python 3.11 ``wait_for`` swallows a
    cancellation that arrives as the frame does (fixed in 3.12), so the reader
    goes on reading. Cancelling again until the task ends is safe and prompt.
    """
    while not task.done():
        task.cancel()
        await asyncio.wait({task}, timeout=0.1)
    if not task.cancelled() and task.exception() is not None:
        log.debug("%s ended with %r", task.get_name(), task.exception())


def _reason(error: BaseException) -> str:
    return f"{type(error).__name__}: {error}" if str(error) else type(error).__name__


def guarded(name: str, handler: RawHandler) -> RawHandler:
    """Wrap ``handler`` so that it never raises into alpaca-py (errors are logged)."""

    async def safe(raw: object) -> None:
        try:
            await handler(raw)
        except Exception:
            log.exception("%s: a frame could not be handled (the stream goes on)", name)

    return safe


class TradeLink:
    """The trade-updates stream: up = connected, listening and caught up (``on_up`` said so)."""

    def __init__(
        self,
        make_stream: Callable[[], sdk.TradingStream],
        *,
        on_update: RawHandler,
        on_up: Callable[[], Awaitable[bool]],
        on_down: Callable[[str], Awaitable[None]],
        backoff: Backoff,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        self._make_stream = make_stream
        self._handler = guarded("trade stream", on_update)
        self._on_up = on_up
        self._on_down = on_down
        self._backoff = backoff
        self._sleep = sleep
        self.up = asyncio.Event()
        self.connections = 0

    async def run(self) -> None:
        """Connect, catch up, read; after a failure wait and do it again. Runs until cancelled."""
        failures = 0
        while True:
            stream = self._make_stream()
            stream.subscribe_trade_updates(self._handler)
            try:
                await sdk.start(stream)
                caught_up = await self._on_up()
            except Exception as exc:  # one failed attempt, whatever the cause
                await _close(stream)
                failures += 1
                delay = self._backoff.delay(failures)
                log.warning(
                    "trade stream: connect failed (%s); retry in %.2f s", _reason(exc), delay
                )
                await self._sleep(delay)
                continue
            if not caught_up:
                await _close(stream)
                failures += 1
                delay = self._backoff.delay(failures)
                log.warning("trade stream: backfill failed; reconnecting in %.2f s", delay)
                await self._sleep(delay)
                continue
            failures = 0
            self.connections += 1
            self.up.set()
            log.info("trade stream up (connection %d)", self.connections)
            try:
                await sdk.consume(stream)
                reason = "stream ended"
            except Exception as exc:  # the connection is gone, whatever the cause
                reason = _reason(exc)
            finally:
                self.up.clear()
                await _close(stream)
            log.warning("trade stream down: %s", reason)
            await self._on_down(reason)
            await self._sleep(self._backoff.delay(1))


class DataLink:
    """The market-data stream: bars of the subscribed symbols; ``on_up`` fills gaps."""

    def __init__(
        self,
        make_stream: Callable[[], sdk.StockDataStream],
        *,
        on_bar: RawHandler,
        on_up: Callable[[], Awaitable[None]],
        backoff: Backoff,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        self._make_stream = make_stream
        self._handler = guarded("data stream", on_bar)
        self._on_up = on_up
        self._backoff = backoff
        self._sleep = sleep
        self._symbols: set[str] = set()
        self._stream: sdk.StockDataStream | None = None
        self.up = asyncio.Event()

    async def subscribe(self, symbols: list[str]) -> None:
        """Add ``symbols``; sent at once when the stream is up, else at the next connection."""
        new = set(symbols) - self._symbols
        self._symbols |= new
        stream = self._stream
        if new and stream is not None and self.up.is_set():
            stream.subscribe_bars(self._handler, *sorted(new))
            try:
                await sdk.send_subscriptions(stream)
            except Exception as exc:  # the stream is failing; its loop reconnects and resends
                log.warning("data stream: subscribe failed (%s)", _reason(exc))

    async def run(self) -> None:
        """Connect, subscribe, fill gaps, read; after a failure wait and do it again."""
        failures = 0
        while True:
            stream = self._make_stream()
            if self._symbols:
                stream.subscribe_bars(self._handler, *sorted(self._symbols))
            try:
                await sdk.start(stream)
                await sdk.send_subscriptions(stream)
            except Exception as exc:  # one failed attempt, whatever the cause
                await _close(stream)
                failures += 1
                delay = self._backoff.delay(failures)
                log.warning(
                    "data stream: connect failed (%s); retry in %.2f s", _reason(exc), delay
                )
                await self._sleep(delay)
                continue
            failures = 0
            self._stream = stream
            self.up.set()
            try:
                await self._on_up()
                await sdk.consume(stream)
                reason = "stream ended"
            except Exception as exc:  # the connection is gone, whatever the cause
                reason = _reason(exc)
            finally:
                self.up.clear()
                self._stream = None
                await _close(stream)
            log.warning("data stream down: %s", reason)
            await self._sleep(self._backoff.delay(1))
