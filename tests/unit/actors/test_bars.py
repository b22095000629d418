"""The bar buffer: a fixed-size ring, oldest first, compact, serializable."""

from __future__ import annotations

import gc
import math
import struct
import sys
from datetime import UTC, datetime

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from actors.bars import BarRing
from brokers.base import Bar
from tests.unit.actors._actor_kit import SYMBOL, at, bar, ring_of

HEADER = struct.Struct("<III")
SLOT_BYTES = 6 * 8  # ts, open, high, low, close, volume as doubles


def closes(ring: BarRing) -> list[float]:
    return [b.close for b in ring]


def numbered(count: int, first: int = 0) -> list[Bar]:
    """Bars whose close is their minute, so order is visible in the closes."""
    return [bar(m, float(m + 1)) for m in range(first, first + count)]


def test_a_ring_keeps_its_capacity_and_the_newest_bars_oldest_first() -> None:
    ring = ring_of(numbered(13), capacity=5)

    assert (len(ring), ring.capacity) == (5, 5)
    assert closes(ring) == [9.0, 10.0, 11.0, 12.0, 13.0]
    assert (ring.close(), ring.close(4)) == (13.0, 9.0)
    assert ring.last_time() == at(12)


def test_a_bar_reads_back_as_it_went_in() -> None:
    original = Bar(
        symbol=SYMBOL,
        ts=datetime(2026, 1, 5, 14, 31, 7, 250_001, tzinfo=UTC),
        open=187.25,
        high=188.5,
        low=186.125,
        close=187.75,
        volume=12_345.0,
    )

    assert list(ring_of([original])) == [original]


def test_bars_not_newer_than_the_last_are_ignored() -> None:
    ring = ring_of(numbered(3, first=10))

    assert not ring.append(bar(12, 99.0))  # the same minute again
    assert not ring.append(bar(5, 99.0))  # an older one
    assert ring.append(bar(13, 14.0))
    assert closes(ring) == [11.0, 12.0, 13.0, 14.0]


@pytest.mark.parametrize(
    "changes",
    [
        {"close": math.nan},
        {"open": 0.0},
        {"high": math.inf},
        {"low": -1.0},
        {"high": 1.0, "low": 2.0},
        {"volume": -5.0},
    ],
)
def test_a_bar_that_cannot_be_real_is_not_kept(changes: dict[str, float]) -> None:
    ring = ring_of(numbered(2))

    assert not ring.append(msgspec.structs.replace(bar(5, 10.0), **changes))
    assert closes(ring) == [1.0, 2.0]


def test_a_bar_of_another_symbol_is_a_programming_error() -> None:
    with pytest.raises(ValueError, match="MSFT"):
        BarRing(SYMBOL).append(bar(0, 10.0, symbol="MSFT"))


@pytest.mark.parametrize("capacity", [0, -3])
def test_a_ring_needs_room(capacity: int) -> None:
    with pytest.raises(ValueError, match="positive"):
        BarRing(SYMBOL, capacity)


def test_an_empty_ring_has_no_last_bar() -> None:
    ring = BarRing(SYMBOL, 4)

    assert (len(ring), list(ring), ring.last_time()) == (0, [], None)
    with pytest.raises(IndexError):
        ring.last_ts()
    with pytest.raises(IndexError):
        ring.close()


def test_reading_past_the_oldest_bar_raises() -> None:
    ring = ring_of(numbered(3))

    with pytest.raises(IndexError):
        ring.close(3)
    with pytest.raises(IndexError):
        ring.close(-1)


def test_since_returns_the_bars_from_a_time_on_oldest_first() -> None:
    ring = ring_of(numbered(10), capacity=6)

    assert closes_of(ring.since(at(7))) == [8.0, 9.0, 10.0]
    assert closes_of(ring.since(at(0))) == closes(ring)
    assert ring.since(at(99)) == []


def closes_of(bars: list[Bar]) -> list[float]:
    return [b.close for b in bars]


def test_before_counts_the_bars_preceding_a_time_and_gives_the_close_before_it() -> None:
    ring = ring_of(numbered(7, first=10), capacity=5)  # minutes 12..16 held

    assert ring.before(at(17).timestamp()) == (5, 17.0)  # not held yet
    assert ring.before(at(16).timestamp()) == (4, 16.0)  # held: the close before it
    assert ring.before(at(15).timestamp()) is None  # a newer bar is held: late
    assert BarRing(SYMBOL).before(at(0).timestamp()) is None
    assert ring_of(numbered(1)).before(at(0).timestamp()) is None  # only itself


def test_append_at_is_append_with_the_time_given() -> None:
    given_at, appended = BarRing(SYMBOL, 4), ring_of([], capacity=4)
    bars = [*numbered(6), bar(3, 99.0), bar(7, 1.0, high=0.5)]

    kept = [given_at.append_at(item, item.ts.timestamp()) for item in bars]

    assert kept == [appended.append(item) for item in bars]
    assert given_at.to_bytes() == appended.to_bytes()


def test_dropping_stale_bars_keeps_the_recent_ones_and_the_capacity() -> None:
    ring = ring_of(numbered(10), capacity=6)

    ring.drop_before(at(8))

    assert closes(ring) == [9.0, 10.0]
    assert ring.capacity == 6
    assert ring.append(bar(10, 11.0))
    assert closes(ring) == [9.0, 10.0, 11.0]


@pytest.mark.parametrize("count", [0, 3, 5, 12])
def test_a_ring_survives_bytes(count: int) -> None:
    ring = ring_of(numbered(count), capacity=5)

    back = BarRing.from_bytes(SYMBOL, ring.to_bytes())

    assert (list(back), back.capacity) == (list(ring), 5)
    assert back.append(bar(20, 21.0)) == ring.append(bar(20, 21.0))
    assert list(back) == list(ring)
    assert back.to_bytes() == ring.to_bytes()


@pytest.mark.parametrize(
    ("capacity", "kept"), [(3, [10.0, 11.0, 12.0]), (8, [6.0, 7.0, 8.0, 9.0, 10.0, 11.0, 12.0])]
)
def test_a_ring_is_resized_when_the_capacity_changed(capacity: int, kept: list[float]) -> None:
    blob = ring_of(numbered(12), capacity=7).to_bytes()

    back = BarRing.from_bytes(SYMBOL, blob, capacity)

    assert (back.capacity, closes(back)) == (capacity, kept)
    assert back.append(bar(12, 13.0))
    assert closes(back)[-1] == 13.0


def blob_with(cap: int, count: int, head: int, slots: list[tuple[float, ...]]) -> bytes:
    body = [value for slot in slots for value in slot]
    body += [0.0] * (6 * cap - len(body))
    return HEADER.pack(cap, count, head) + struct.pack(f"<{6 * cap}d", *body)


GOOD_SLOT = (at(0).timestamp(), 10.0, 11.0, 9.0, 10.5, 100.0)
LATER_SLOT = (at(1).timestamp(), 10.0, 11.0, 9.0, 10.5, 100.0)


def test_a_handmade_blob_reads_like_a_ring() -> None:
    ring = BarRing.from_bytes(SYMBOL, blob_with(3, 2, 2, [GOOD_SLOT, LATER_SLOT]))

    assert [b.ts for b in ring] == [at(0), at(1)]


@pytest.mark.parametrize(
    "blob",
    [
        b"",
        b"\x00" * (HEADER.size - 1),
        blob_with(3, 2, 2, [GOOD_SLOT, LATER_SLOT])[:-1],
        blob_with(3, 2, 2, [GOOD_SLOT, LATER_SLOT]) + b"\x00",
        HEADER.pack(0, 0, 0),
        blob_with(3, 4, 2, [GOOD_SLOT, LATER_SLOT]),  # more bars than room
        blob_with(3, 2, 3, [GOOD_SLOT, LATER_SLOT]),  # head past the end
        blob_with(3, 2, 1, [GOOD_SLOT, LATER_SLOT]),  # partly filled, head not after them
        blob_with(3, 2, 2, [LATER_SLOT, GOOD_SLOT]),  # time runs backwards
        blob_with(3, 2, 2, [GOOD_SLOT, GOOD_SLOT]),  # the same bar twice
        blob_with(3, 1, 1, [(math.nan, 10.0, 11.0, 9.0, 10.5, 100.0)]),
        blob_with(3, 1, 1, [(1e300, 10.0, 11.0, 9.0, 10.5, 100.0)]),
        blob_with(3, 1, 1, [(at(0).timestamp(), 10.0, 11.0, 9.0, math.inf, 100.0)]),
        blob_with(3, 1, 1, [(at(0).timestamp(), 10.0, 9.0, 11.0, 10.5, 100.0)]),
    ],
)
def test_a_malformed_blob_is_a_value_error(blob: bytes) -> None:
    with pytest.raises(ValueError, match="bar buffer"):
        BarRing.from_bytes(SYMBOL, blob)


def footprint(root: object) -> tuple[int, int]:
    """Return (objects, bytes) reachable from ``root``, classes aside."""
    seen: dict[int, object] = {}
    stack = [root]
    while stack:
        obj = stack.pop()
        if id(obj) in seen or isinstance(obj, type):
            continue
        seen[id(obj)] = obj
        stack.extend(gc.get_referents(obj))
    return len(seen), sum(sys.getsizeof(obj) for obj in seen.values())


def test_a_ring_is_one_flat_buffer_not_an_object_per_bar() -> None:
    capacity = 240
    empty = BarRing(SYMBOL, capacity)
    full = ring_of([bar(m, 100.0 + m % 7) for m in range(3 * capacity)], capacity)

    objects, size = footprint(full)

    assert len(full) == capacity
    assert objects == footprint(empty)[0]  # as many objects holding 240 bars as holding none
    assert objects < 10
    assert size < SLOT_BYTES * capacity + 1024  # the doubles (11.5 KB) and little else
    assert len(full.to_bytes()) == HEADER.size + SLOT_BYTES * capacity


timestamps = st.lists(
    st.datetimes(
        min_value=datetime(2000, 1, 1),
        max_value=datetime(2100, 1, 1),
        timezones=st.just(UTC),
    ),
    max_size=30,
)


@settings(max_examples=200, deadline=None)
@given(timestamps, st.integers(1, 12), st.integers(1, 12))
def test_any_ring_roundtrips_and_keeps_the_newest_ascending_bars(
    times: list[datetime], capacity: int, resized: int
) -> None:
    bars = [
        Bar(symbol=SYMBOL, ts=ts, open=1.0, high=2.0, low=0.5, close=1.5, volume=float(n))
        for n, ts in enumerate(times)
    ]
    ring = ring_of(bars, capacity)
    accepted: list[Bar] = []
    for item in bars:
        if not accepted or item.ts > accepted[-1].ts:
            accepted.append(item)

    assert list(ring) == accepted[-capacity:]
    assert list(BarRing.from_bytes(SYMBOL, ring.to_bytes())) == accepted[-capacity:]
    assert (
        list(BarRing.from_bytes(SYMBOL, ring.to_bytes(), resized))
        == accepted[-capacity:][-resized:]
    )
