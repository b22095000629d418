"""Starting a position actor from its snapshot, on a real store.

A snapshot whose bar buffer cannot be trusted (a bar out of order, high below
low, a blob that is not a snapshot) is refused at start, before anything uses
it: the symbol starts from the broker alone, the snapshot is quarantined and a
critical alert names it. A good one is loaded with one market time for the
whole start (the day rolled to, the bars too old for the buffer dropped).
"""

from __future__ import annotations

import struct
from datetime import timedelta

import pytest

from actors import model
from actors.bars import BarRing
from actors.position import PositionActor
from actors.snapshot import encode_snapshot
from actors.state import SCHEMA_VERSION, PositionState
from bench._world import ACCOUNT, BAR_SECONDS, DAY, CountingAlerts, InstantVenue, context
from brokers.base import Bar
from persistence import PutSnapshot, SnapshotRow, SqliteStore
from runtime.clock import TradingCalendar
from runtime.supervision import Supervisor

SYMBOL = "AAPL"
OPEN = TradingCalendar().open_of(DAY)
_HEADER = struct.Struct("<III")


def _bar(minute: int, close: float) -> Bar:
    ts = OPEN + timedelta(seconds=BAR_SECONDS * minute)
    return Bar(
        symbol=SYMBOL, ts=ts, open=close, high=close + 1, low=close - 1, close=close, volume=1e3
    )


def _state() -> PositionState:
    state = PositionState(account=ACCOUNT, symbol=SYMBOL, trading_day=DAY)
    return model.set_levels(state, DAY, {"resistance": 101.0, "support": 95.0})


def _ring(minutes: range) -> BarRing:
    ring = BarRing(SYMBOL, 240)
    for minute in minutes:
        assert ring.append(_bar(minute, 100.0 + minute % 3))
    return ring


def _row(blob: bytes) -> SnapshotRow:
    return SnapshotRow(SYMBOL, blob, SCHEMA_VERSION, 1, OPEN)


def _tampered(ring: BarRing, slot: int, field: int, value: float) -> bytes:
    """Return ``ring``'s bytes with one value of one slot replaced."""
    body = bytearray(ring.to_bytes())
    struct.pack_into("<d", body, _HEADER.size + 8 * (6 * slot + field), value)
    return bytes(body)


def _snapshot_with_bars(bars: bytes) -> bytes:
    """A snapshot blob as ``encode_snapshot`` writes it, holding ``bars`` as they are."""
    good = encode_snapshot(_state(), _ring(range(0)))
    empty = _ring(range(0)).to_bytes()
    assert good.endswith(empty)
    assert len(bars) == len(empty)
    return good[: -len(empty)] + bars


async def _start(
    store: SqliteStore, row: SnapshotRow, minute: int
) -> tuple[PositionActor, CountingAlerts]:
    await store.commit([PutSnapshot(row)])
    venue = InstantVenue()
    venue.market_time = OPEN + timedelta(seconds=BAR_SECONDS * minute)
    alerts = CountingAlerts()
    actor = PositionActor(SYMBOL, context(store, venue, alerts=alerts), row)
    async with Supervisor(name="test") as sup:
        await sup.start(actor)
    return actor, alerts


@pytest.mark.parametrize(
    ("slot", "field", "value"),
    [
        (5, 0, 0.0),  # a bar opening before the one ahead of it
        (5, 0, OPEN.timestamp() + 4 * BAR_SECONDS),  # the same time as the bar before
        (7, 2, 50.0),  # high below low
        (7, 3, -1.0),  # a negative low
        (9, 4, float("nan")),
    ],
)
async def test_a_snapshot_with_an_implausible_bar_is_quarantined_at_start(
    store: SqliteStore, slot: int, field: int, value: float
) -> None:
    blob = _snapshot_with_bars(_tampered(_ring(range(30)), slot, field, value))

    actor, alerts = await _start(store, _row(blob), minute=31)

    assert actor.state == PositionState(account=ACCOUNT, symbol=SYMBOL, trading_day=DAY)
    assert len(actor.bars) == 0, "nothing of the refused buffer is used"
    assert alerts.kinds == {"store": 1}
    (kept,) = await store.quarantined_snapshots()
    assert (kept.symbol, kept.blob) == (SYMBOL, blob), "the refused snapshot is kept as evidence"
    assert "bar buffer" in kept.reason


async def test_a_blob_that_is_no_snapshot_is_quarantined_at_start(store: SqliteStore) -> None:
    actor, alerts = await _start(store, _row(b"\x93garbage"), minute=31)

    assert actor.state.levels == {}
    assert alerts.kinds == {"store": 1}
    assert [q.symbol for q in await store.quarantined_snapshots()] == [SYMBOL]


async def test_a_good_snapshot_loads_and_drops_only_the_bars_older_than_the_buffer(
    store: SqliteStore,
) -> None:
    ring = _ring(range(240))
    span = 240  # minutes of one-minute bars the buffer holds
    now = 245  # the five oldest bars fall out of the buffer's span

    actor, alerts = await _start(store, _row(encode_snapshot(_state(), ring)), minute=now)

    assert actor.state == _state()
    assert [b.ts for b in actor.bars] == [b.ts for b in list(ring)[now - span :]]
    assert alerts.kinds == {}
    assert await store.quarantined_snapshots() == []


async def test_the_day_given_for_the_state_before_start_is_replaced_by_the_start(
    store: SqliteStore,
) -> None:
    venue = InstantVenue()
    venue.market_time = OPEN + timedelta(minutes=5)
    earlier = DAY - timedelta(days=7)
    actor = PositionActor(SYMBOL, context(store, venue), today=earlier)
    assert actor.state.trading_day == earlier

    async with Supervisor(name="test") as sup:
        await sup.start(actor)
        assert actor.state == PositionState(account=ACCOUNT, symbol=SYMBOL, trading_day=DAY)
