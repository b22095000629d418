"""DurableBook: a change is in memory only if it is on disk."""

from __future__ import annotations

from pathlib import Path

import pytest

from brokers.base import BrokerError, BrokerEvent, OrderRejected, Side
from brokers.sim import Book, engine, read_book
from brokers.sim.store import DurableBook
from tests.unit.brokers._sim_kit import (
    OPEN,
    market,
    on_disk,
    pure_book,
    sim_config,
    start_venue,
    stop_venue,
)


def _trade(book: Book) -> tuple[None, list[BrokerEvent]]:
    _, events = engine.manual_trade(book, "AAPL", Side.BUY, 5, OPEN)
    return None, events


async def test_apply_saves_before_returning(tmp_path: Path) -> None:
    book, _ = pure_book()
    store = DurableBook(tmp_path / "sim.book", book)
    async with store.lock:
        _, events = await store.apply(_trade, OPEN)
    assert events
    assert read_book(tmp_path / "sim.book") == store.book


async def test_a_refused_change_leaves_the_saved_book(tmp_path: Path) -> None:
    book, _ = pure_book()
    store = DurableBook(tmp_path / "sim.book", book)
    async with store.lock:
        await store.save(OPEN)

        def half_done(book: Book) -> tuple[None, list[BrokerEvent]]:
            book.order_seq += 1
            raise OrderRejected("refused after a partial change")

        with pytest.raises(OrderRejected):
            await store.apply(half_done, OPEN)
    assert store.book.order_seq == 0


async def test_a_failed_write_rolls_the_book_back(tmp_path: Path) -> None:
    book, _ = pure_book()
    folder = tmp_path / "venue"
    folder.mkdir()
    store = DurableBook(folder / "sim.book", book)
    async with store.lock:
        await store.save(OPEN)
        (folder / "sim.book").unlink()
        folder.rmdir()
        with pytest.raises(FileNotFoundError):
            await store.apply(_trade, OPEN)
    assert store.book.positions == {}
    assert store.book.executions == []


async def test_a_request_that_cannot_be_saved_fails_and_leaves_no_phantom_order(
    tmp_path: Path,
) -> None:
    venue = await start_venue(sim_config(tmp_path))
    folder = venue.config.book_path.parent
    before = on_disk(venue.config)
    venue.config.book_path.unlink()
    folder.rmdir()

    with pytest.raises(BrokerError, match="could not save"):
        await venue.sim.submit(market("AAPL", Side.BUY, 1, cid="lost"))

    folder.mkdir()
    assert await venue.sim.order_by_client_id("lost") is None
    await venue.sim.submit(market("AAPL", Side.BUY, 1, cid="lost"))  # the id is still free
    assert on_disk(venue.config).order_seq == before.order_seq + 1
    await stop_venue(venue)
