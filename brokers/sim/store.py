"""The venue's book in memory and on disk: every change is saved before it is told.

A change runs under ``lock``: the engine mutates the book, the whole book is
encoded on the loop (it is small) and written in a thread, and only then may
the caller publish events or answer. If the mutation raises or the write fails,
the in-memory book is restored from the last saved image, so memory never holds
a change the file does not. A write whose caller was cancelled keeps running in
its thread; the next save waits for it, so two writes never race.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import TypeVar

from brokers.base import BrokerEvent
from brokers.sim.book import decode_book, encode_book, write_book
from brokers.sim.model import Book

__all__ = ["DurableBook"]

_T = TypeVar("_T")


class DurableBook:
    """Owner of the venue's ``Book``; hold ``lock`` for every change and save."""

    def __init__(self, path: Path, book: Book) -> None:
        self.path = path
        self.lock = asyncio.Lock()
        self._book = book
        self._durable: bytes | None = None
        self._pending: asyncio.Future[None] | None = None

    @property
    def book(self) -> Book:
        """Return the current book (replaced on rollback: do not keep a reference)."""
        return self._book

    async def apply(
        self, mutate: Callable[[Book], tuple[_T, list[BrokerEvent]]], now: datetime
    ) -> tuple[_T, list[BrokerEvent]]:
        """Mutate the book and save it (lock held); roll back and re-raise on any error."""
        try:
            result, events = mutate(self._book)
        except BaseException:
            self._rollback()
            raise
        await self.save(now)
        return result, events

    async def save(self, now: datetime) -> None:
        """Save the whole book stamped with market time ``now`` (lock held).

        Raises ``OSError`` when the file cannot be written (the book is rolled back).
        """
        self._book.market_time = max(self._book.market_time, now)
        data = encode_book(self._book)
        await self.drain()
        write = asyncio.ensure_future(asyncio.to_thread(write_book, self.path, data))
        write.add_done_callback(_consume_result)
        self._pending = write
        try:
            await asyncio.shield(write)
        except asyncio.CancelledError:
            raise
        except BaseException:
            self._pending = None
            self._rollback()
            raise
        self._pending = None
        self._durable = data

    async def drain(self) -> None:
        """Wait for a write left running by a cancelled caller."""
        if self._pending is not None:
            await asyncio.wait({self._pending})
            self._pending = None

    def _rollback(self) -> None:
        if self._durable is not None:
            self._book = decode_book(self._durable, str(self.path))


def _consume_result(future: asyncio.Future[None]) -> None:
    """Mark a write's outcome as seen, also when its caller was cancelled."""
    if not future.cancelled():
        future.exception()
