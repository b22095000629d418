"""The venue's outgoing event stream: ordered, one consumer, bounded for the market.

Requests (submit, cancel, replace) push their events without waiting: a request
must never wait for the consumer, because the consumer is often the caller (an
actor that handles a fill by placing a stop). The market pump, which produces
nearly all events, waits for ``writable()`` before each step, so the backlog
stays near ``high_water`` when the consumer falls behind: the market pauses
instead of flooding memory.
"""

from __future__ import annotations

import asyncio
from collections import deque

from brokers.base import BrokerEvent

__all__ = ["EventChannel"]


class EventChannel:
    """Ordered events for one reader; failure and close reach the reader after the backlog."""

    def __init__(self, high_water: int) -> None:
        self._high_water = high_water
        self._items: deque[BrokerEvent] = deque()
        self._readable = asyncio.Event()
        self._writable = asyncio.Event()
        self._writable.set()
        self._error: BaseException | None = None
        self._closed = False

    @property
    def depth(self) -> int:
        """Return the number of events waiting for the reader."""
        return len(self._items)

    def push(self, event: BrokerEvent) -> None:
        """Append ``event``; never blocks."""
        self._items.append(event)
        self._readable.set()
        if len(self._items) >= self._high_water:
            self._writable.clear()

    def clear(self) -> None:
        """Drop every undelivered event (the connection that would carry them is gone)."""
        self._items.clear()
        self._writable.set()

    async def writable(self) -> None:
        """Wait until the backlog is below the high-water mark."""
        await self._writable.wait()

    def fail(self, error: BaseException) -> None:
        """Make the reader raise ``error`` once the backlog is delivered."""
        self._error = error
        self._readable.set()
        self._writable.set()

    def close(self) -> None:
        """End the stream once the backlog is delivered."""
        self._closed = True
        self._readable.set()
        self._writable.set()

    async def get(self) -> BrokerEvent | None:
        """Return the next event, ``None`` at the end; raise the failure, if any."""
        while True:
            if self._items:
                event = self._items.popleft()
                if len(self._items) < self._high_water:
                    self._writable.set()
                return event
            if self._error is not None:
                raise self._error
            if self._closed:
                return None
            self._readable.clear()
            await self._readable.wait()
