"""The venue's book file: round trip, atomic replacement, clear errors for bad files."""

from __future__ import annotations

import os
from pathlib import Path

import msgspec
import pytest

from brokers.base import Side
from brokers.sim import BookError, SimConfig, engine, read_book
from brokers.sim.book import decode_book, encode_book, write_book
from runtime.clock import VirtualClock
from tests.unit.brokers._sim_kit import OPEN, open_sim, pure_book, sim_config


def test_round_trip_keeps_everything(tmp_path: Path) -> None:
    book, _ = pure_book()
    engine.manual_trade(book, "AAPL", Side.BUY, 10, OPEN)
    path = tmp_path / "sim.book"

    write_book(path, encode_book(book))

    assert read_book(path) == book


def test_missing_file_reads_as_none(tmp_path: Path) -> None:
    assert read_book(tmp_path / "nothing.book") is None


def test_write_replaces_atomically_and_leaves_no_temp_files(tmp_path: Path) -> None:
    book, _ = pure_book()
    path = tmp_path / "sim.book"
    write_book(path, encode_book(book))
    inode = path.stat().st_ino
    engine.manual_trade(book, "AAPL", Side.BUY, 1, OPEN)

    write_book(path, encode_book(book))

    assert path.stat().st_ino != inode  # a new file renamed over the old one
    assert os.listdir(tmp_path) == ["sim.book"]
    assert read_book(path) == book


def test_book_saved_before_stop_limits_reads_and_keeps_its_orders() -> None:
    book, _ = pure_book()
    engine.manual_trade(book, "AAPL", Side.BUY, 10, OPEN)
    image = encode_book(book)
    header = len(b"STALWART-SIM-BOOK\n") + 2
    fields = msgspec.msgpack.decode(image[header:])
    del fields["stop_triggered"]  # the book as a build without stop-limit orders saved it
    old = image[:header] + msgspec.msgpack.encode(fields)

    decoded = decode_book(old)

    assert decoded.stop_triggered == {}
    assert decoded == book


@pytest.mark.parametrize(
    ("content", "match"),
    [
        (b"", "not a stalwart sim venue book"),
        (b"SQLite format 3\x00" + b"\x00" * 100, "not a stalwart sim venue book"),
        (b"\x82\xa1a\x01\xa1b\x02", "not a stalwart sim venue book"),
    ],
)
def test_foreign_file_is_refused_clearly(tmp_path: Path, content: bytes, match: str) -> None:
    path = tmp_path / "sim.book"
    path.write_bytes(content)
    with pytest.raises(BookError, match=match) as caught:
        read_book(path)
    assert str(path) in str(caught.value)


def test_truncated_book_is_corrupt(tmp_path: Path) -> None:
    book, _ = pure_book()
    data = encode_book(book)
    path = tmp_path / "sim.book"
    path.write_bytes(data[: len(data) - 20])
    with pytest.raises(BookError, match="corrupt sim venue book"):
        read_book(path)


def test_other_format_version_is_refused() -> None:
    book, _ = pure_book()
    data = bytearray(encode_book(book))
    data[len(b"STALWART-SIM-BOOK\n") + 1] = 99
    with pytest.raises(BookError, match="format 99 is not supported"):
        decode_book(bytes(data))


async def test_opening_a_corrupt_book_fails_clearly_and_keeps_the_file(tmp_path: Path) -> None:
    config = sim_config(tmp_path)
    config.book_path.write_bytes(b"garbage, not a book")

    with pytest.raises(BookError, match="not a stalwart sim venue book"):
        await open_sim(config, VirtualClock())

    assert config.book_path.read_bytes() == b"garbage, not a book"


async def test_opening_another_accounts_book_is_refused(tmp_path: Path) -> None:
    config = sim_config(tmp_path)
    sim = await open_sim(config, VirtualClock())
    await sim.close()
    other = SimConfig(symbols=config.symbols, book_path=config.book_path, account_id="SIM-OTHER")

    with pytest.raises(BookError, match="book of account 'SIM-PAPER'"):
        await open_sim(other, VirtualClock())


async def test_open_creates_the_book_on_disk(tmp_path: Path) -> None:
    config = sim_config(tmp_path)
    sim = await open_sim(config, VirtualClock())
    book = read_book(config.book_path)
    assert book is not None
    assert book.market_time == OPEN
    assert set(book.instruments) == set(config.symbols)
    await sim.close()
