"""The bar buffer's own row: a fill's commit rewrites the state, the buffer only when it changed.

On a real store. Every commit leaves state and buffer current on disk; a burst
of fills between two bars writes the ~12 KB buffer not once. Stores of schema 1
(the buffer inside the snapshot blob) are read as they are, and the first
commit moves the buffer to its row. A buffer row that cannot be read costs the
buffer, not the state.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path

import aiosqlite
import msgspec
import pytest

from actors import model
from actors.bars import BarRing
from actors.messages import Checkpoint, FillAck, GetState, OnBar, OnExecution
from actors.position import PositionActor
from actors.snapshot import decode_snapshot, encode_snapshot, encode_state
from actors.state import SCHEMA_VERSION, PositionState
from bench._world import ACCOUNT, BAR_SECONDS, DAY, CountingAlerts, InstantVenue, context
from brokers.base import Bar, Execution, Side
from persistence import (
    CommitResult,
    PutSnapshot,
    SnapshotRow,
    SqliteStore,
    Write,
    open_store,
    schema,
)
from runtime.clock import TradingCalendar
from runtime.supervision import Supervisor
from tests.unit.persistence._store_kit import StepClock

SYMBOL = "AAPL"
OPEN = TradingCalendar().open_of(DAY)
NOW = OPEN + timedelta(seconds=BAR_SECONDS * 40)


def _bar(minute: int) -> Bar:
    ts = OPEN + timedelta(seconds=BAR_SECONDS * minute)
    close = 99.0 + minute % 3 * 0.1  # below the pivot: no entry of the strategy's own
    return Bar(
        symbol=SYMBOL, ts=ts, open=close, high=close + 0.2, low=close - 0.2, close=close, volume=1e3
    )


def _ring(minutes: range) -> BarRing:
    ring = BarRing(SYMBOL, 240)
    for minute in minutes:
        assert ring.append(_bar(minute))
    return ring


def _entry_in_flight() -> PositionState:
    state = PositionState(account=ACCOUNT, symbol=SYMBOL, trading_day=DAY)
    state = model.set_levels(state, DAY, {"resistance": 100.0, "support": 97.0})
    state, _ = model.begin_entry(
        state, day=DAY, pivot=100.0, side=Side.BUY, qty=30.0, now=NOW, max_attempts=2
    )
    return msgspec.structs.replace(state, targets=(101.0, 102.0), planned_stop=98.0)


def _fill(actor: PositionActor, exec_id: str) -> Execution:
    return Execution(
        exec_id=exec_id,
        order_id="BO-1",
        client_order_id=actor.state.intents[0].client_order_id,
        symbol=SYMBOL,
        side=Side.BUY,
        qty=10.0,
        price=100.0,
        ts=NOW,
    )


class _Recording:
    """``store.commit`` wrapped: the bar buffers each commit carried (None: not rewritten)."""

    def __init__(self, store: SqliteStore) -> None:
        self.inner = store.commit
        self.bars: list[bytes | None] = []

    async def __call__(self, writes: Sequence[Write]) -> CommitResult:
        self.bars.extend(w.row.bars for w in writes if isinstance(w, PutSnapshot))
        return await self.inner(writes)


async def _stored(store: SqliteStore) -> SnapshotRow:
    (row,) = (await store.load_snapshots()).rows
    return row


async def _recording_after(
    store: SqliteStore, monkeypatch: pytest.MonkeyPatch, ring: BarRing
) -> _Recording:
    """Store a flat state of SYMBOL with ``ring`` as its buffer; then record what commits carry."""
    state = PositionState(account=ACCOUNT, symbol=SYMBOL, trading_day=DAY)
    row = SnapshotRow(SYMBOL, encode_state(state), SCHEMA_VERSION, 0, NOW, ring.to_bytes())
    await store.commit([PutSnapshot(row)])
    recording = _Recording(store)
    monkeypatch.setattr(store, "commit", recording)
    return recording


async def _start(store: SqliteStore, alerts: CountingAlerts | None = None) -> PositionActor:
    """Start an actor from what ``store`` holds for SYMBOL (as a boot hands it over)."""
    venue = InstantVenue()
    venue.market_time = NOW
    return PositionActor(SYMBOL, context(store, venue, alerts=alerts), await _stored(store))


async def test_fills_between_bars_do_not_rewrite_the_buffer_and_a_bar_makes_the_next_commit_do(
    store: SqliteStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    ring = _ring(range(30))
    state = _entry_in_flight()
    row = SnapshotRow(SYMBOL, encode_state(state), SCHEMA_VERSION, state.seq, NOW, ring.to_bytes())
    await store.commit([PutSnapshot(row)])
    recording = _Recording(store)
    monkeypatch.setattr(store, "commit", recording)

    async with Supervisor(name="test") as sup:
        actor = await _start(store)
        await sup.start(actor)
        for k in range(2):
            ack = await actor.ask(OnExecution(_fill(actor, f"X-{k}")))
            assert isinstance(ack, FillAck)
            assert ack.applied
        assert recording.bars == [None, None], "two fills, and the buffer written by neither"
        stored = await _stored(store)
        assert stored.bars == ring.to_bytes()
        assert decode_snapshot(stored.blob, SCHEMA_VERSION, SYMBOL, 240, stored.bars)[0].qty == 20

        await actor.tell(OnBar(_bar(30)))
        ack = await actor.ask(OnExecution(_fill(actor, "X-2")))
        assert isinstance(ack, FillAck)
        assert ack.applied
        await actor.ask(Checkpoint(force=True))  # nothing changed since: state only

        assert recording.bars[2:] == [actor.bars.to_bytes(), None]
        stored = await _stored(store)
        loaded, bars = decode_snapshot(stored.blob, SCHEMA_VERSION, SYMBOL, 240, stored.bars)
        assert loaded == await actor.ask(GetState())
        assert [b.ts for b in bars] == [_bar(m).ts for m in range(31)]


async def test_a_checkpoint_after_a_bar_writes_the_buffer_and_one_without_does_not(
    store: SqliteStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    recording = await _recording_after(store, monkeypatch, _ring(range(30)))

    async with Supervisor(name="test") as sup:
        actor = await _start(store)
        await sup.start(actor)
        await actor.ask(Checkpoint(force=True))
        await actor.tell(OnBar(_bar(30)))
        await actor.ask(Checkpoint())
        await actor.ask(Checkpoint())  # clean: nothing is written at all

    assert recording.bars[:2] == [None, _ring(range(31)).to_bytes()]
    assert len(recording.bars) == 3, "the last write is the stop's final checkpoint"
    assert recording.bars[2] is None


async def test_old_bars_trimmed_at_a_start_do_not_rewrite_the_buffer(
    store: SqliteStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A restart trims the bars older than the window; the stored row still holds
    # them, and every start trims them again, so the buffer as loaded is the same:
    # no symbol rewrites its ~12 KB buffer for that (10,000 symbols: ~115 MB).
    ring = _ring(range(-205, 30))  # the 5 oldest are more than 240 bars before NOW
    recording = await _recording_after(store, monkeypatch, ring)

    async with Supervisor(name="test") as sup:
        actor = await _start(store)
        await sup.start(actor)
        held = [b.ts for b in actor.bars]
        assert held == [_bar(m).ts for m in range(-200, 30)]
        await actor.ask(Checkpoint(force=True))
    assert recording.bars == [None, None], "the trimmed buffer was not rewritten"
    assert (await _stored(store)).bars == ring.to_bytes()

    async with Supervisor(name="test") as sup:
        again = await _start(store)
        await sup.start(again)
        assert [b.ts for b in again.bars] == held  # the same buffer, once loaded
        await again.tell(OnBar(_bar(30)))
        await again.ask(Checkpoint())
    assert recording.bars[2] == again.bars.to_bytes(), "a new bar writes the buffer"
    stored = await _stored(store)
    _, bars = decode_snapshot(stored.blob, SCHEMA_VERSION, SYMBOL, 240, stored.bars)
    assert [b.ts for b in bars] == [*held, _bar(30).ts]


async def test_a_schema_1_store_with_bars_inside_the_blob_is_read_and_moved_to_the_row(
    tmp_path: Path,
) -> None:
    path = tmp_path / "old.db"
    state = PositionState(account=ACCOUNT, symbol=SYMBOL, trading_day=DAY)
    ring = _ring(range(30))
    async with aiosqlite.connect(path, isolation_level=None) as conn:
        await conn.execute("PRAGMA journal_mode = WAL")
        version = await schema.prepare(
            conn,
            path=path,
            account_id=ACCOUNT,
            force_account=False,
            now=StepClock(),
            migrations=schema.MIGRATIONS[:1],
        )
        assert version == 1
        await conn.execute(
            "INSERT INTO snapshots VALUES (?, ?, ?, ?, ?)",
            (SYMBOL, encode_snapshot(state, ring), 1, 0, NOW.isoformat(timespec="microseconds")),
        )

    store = await open_store(path, ACCOUNT)  # migrates the file to the current schema
    try:
        old = await _stored(store)
        assert old.bars is None
        async with Supervisor(name="test") as sup:
            actor = await _start(store)
            await sup.start(actor)
            assert [b.ts for b in actor.bars] == [b.ts for b in ring]
            await actor.ask(Checkpoint(force=True))
        moved = await _stored(store)
    finally:
        await store.close()

    assert moved.bars == ring.to_bytes()
    # The blob is the state alone now: read without the row, it has no bars.
    state_only, no_bars = decode_snapshot(moved.blob, SCHEMA_VERSION, SYMBOL, 240)
    assert (state_only, len(no_bars)) == (state, 0)
    with sqlite3.connect(path) as raw:
        assert raw.execute("SELECT schema_version FROM stalwart_meta").fetchall() == [
            (schema.SCHEMA_VERSION,)
        ]


async def test_an_unreadable_bar_row_costs_the_buffer_not_the_state(store: SqliteStore) -> None:
    state = model.set_levels(
        PositionState(account=ACCOUNT, symbol=SYMBOL, trading_day=DAY),
        DAY,
        {"resistance": 100.0, "support": 97.0},
    )
    row = SnapshotRow(SYMBOL, encode_state(state), SCHEMA_VERSION, 0, NOW, b"not a buffer")
    await store.commit([PutSnapshot(row)])
    alerts = CountingAlerts()

    async with Supervisor(name="test") as sup:
        actor = await _start(store, alerts)
        await sup.start(actor)
        assert actor.state == state
        assert len(actor.bars) == 0
        assert alerts.kinds == {"store": 1}
        await actor.ask(Checkpoint(force=True))  # the bad row is written over

    assert await store.quarantined_snapshots() == []
    stored = await _stored(store)
    assert stored.bars == BarRing(SYMBOL, 240).to_bytes()
    assert decode_snapshot(stored.blob, SCHEMA_VERSION, SYMBOL, 240, stored.bars)[0] == state
