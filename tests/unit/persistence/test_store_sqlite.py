"""SqliteStore against real files: every write type, duplicates, quarantine, files, backups."""

from __future__ import annotations

import asyncio
import os
import re
import sqlite3
import stat
from datetime import UTC, date, datetime, timedelta, timezone
from pathlib import Path

import msgspec
import pytest

from persistence import (
    CommitResult,
    PutClosedTrade,
    PutExecution,
    PutIntent,
    PutReport,
    PutSession,
    PutSnapshot,
    ReportRow,
    ResolveIntent,
    SqliteStore,
    Store,
    StoreError,
    StoreWriteError,
    Write,
    open_store,
)
from tests.unit.persistence._store_kit import (
    ACCOUNT,
    DAY,
    T0,
    closed_trade,
    execution,
    intent,
    report,
    session,
    snapshot,
)


def test_sqlite_store_satisfies_the_store_protocol(store: SqliteStore) -> None:
    as_protocol: Store = store  # checked by mypy

    assert as_protocol.account_id == ACCOUNT


async def test_store_file_is_wal_with_full_sync(store: SqliteStore, store_path: Path) -> None:
    ((mode,),) = await store._writer.call(lambda c: c.execute("PRAGMA journal_mode").fetchall())
    ((sync,),) = await store._writer.call(lambda c: c.execute("PRAGMA synchronous").fetchall())
    ((auto,),) = await store._writer.call(
        lambda c: c.execute("PRAGMA wal_autocheckpoint").fetchall()
    )

    assert (mode, sync) == ("wal", 2)  # 2 is FULL
    assert auto == 0  # checkpoints are the checkpointer thread's, never a commit's


async def test_every_write_type_roundtrips(store: SqliteStore, store_path: Path) -> None:
    new_york = timezone(timedelta(hours=-5))
    fill = execution("e-1", ts=datetime(2026, 1, 5, 9, 31, 2, 123456, tzinfo=new_york))
    writes: list[Write] = [
        PutExecution(fill),
        PutSnapshot(snapshot("AAPL", seq=7)),
        PutIntent(intent("coid-1")),
        PutClosedTrade(closed_trade("t-1")),
        PutSession(session()),
        PutReport(report()),
    ]

    result = await store.commit(writes)

    assert result == CommitResult()
    await store.close()
    reopened = await open_store(store_path, ACCOUNT)
    try:
        (stored_fill,) = await reopened.executions()
        assert stored_fill == fill
        assert stored_fill.ts.tzinfo is UTC
        assert stored_fill.ts == datetime(2026, 1, 5, 14, 31, 2, 123456, tzinfo=UTC)
        assert await reopened.has_execution("e-1")
        assert not await reopened.has_execution("e-2")
        assert (await reopened.load_snapshots()).rows == [snapshot("AAPL", seq=7)]
        assert await reopened.pending_intents() == [intent("coid-1")]
        assert await reopened.closed_trades() == [closed_trade("t-1")]
        assert await reopened.session() == session()
        assert await reopened.reports() == [report()]
    finally:
        await reopened.close()


async def test_resolve_intent_updates_status_and_keeps_order_id(store: SqliteStore) -> None:
    await store.commit([PutIntent(intent("coid-1")), PutIntent(intent("coid-2"))])

    await store.commit([ResolveIntent("coid-1", "acked", order_id="ord-9")])
    await store.commit([ResolveIntent("coid-1", "sent")])  # no order id: the known one stays
    await store.commit([ResolveIntent("coid-2", "canceled")])

    (live,) = await store.pending_intents()
    assert live.client_order_id == "coid-1"
    assert (live.status, live.order_id) == ("sent", "ord-9")


async def test_resolve_to_filled_leaves_nothing_pending(store: SqliteStore) -> None:
    await store.commit([PutIntent(intent("coid-1")), ResolveIntent("coid-1", "filled", "ord-1")])

    assert await store.pending_intents() == []


async def test_duplicate_exec_id_is_skipped_and_reported(store: SqliteStore) -> None:
    first = execution("e-1", price=100.0)
    await store.commit([PutExecution(first)])

    result = await store.commit(
        [
            PutExecution(execution("e-1", price=999.0)),
            PutExecution(execution("e-2")),
            PutExecution(execution("e-2")),
        ]
    )

    assert result.duplicate_exec_ids == {"e-1", "e-2"}
    stored = await store.executions()
    assert [e.exec_id for e in stored] == ["e-1", "e-2"]
    assert stored[0].price == 100.0  # the first one stays


async def test_duplicate_across_concurrent_commits_goes_to_the_later_one(
    store: SqliteStore,
) -> None:
    first, second = await asyncio.gather(
        store.commit([PutExecution(execution("e-1"))]),
        store.commit([PutExecution(execution("e-1"))]),
    )

    assert first.duplicate_exec_ids == frozenset()
    assert second.duplicate_exec_ids == {"e-1"}


async def test_executions_since_filters_and_orders_by_time(store: SqliteStore) -> None:
    fills = [execution(f"e-{i}", ts=T0 + timedelta(seconds=s)) for i, s in enumerate([5, 1, 3])]
    await store.commit([PutExecution(e) for e in fills])

    since = await store.executions(since=T0 + timedelta(seconds=2))

    assert [e.exec_id for e in since] == ["e-2", "e-0"]


async def test_snapshot_is_latest_per_symbol(store: SqliteStore) -> None:
    await store.commit([PutSnapshot(snapshot("AAPL", seq=1)), PutSnapshot(snapshot("MSFT"))])
    await store.commit([PutSnapshot(snapshot("AAPL", seq=2, blob=b"new"))])

    rows = (await store.load_snapshots()).rows

    assert [(r.symbol, r.seq, r.blob) for r in rows] == [
        ("AAPL", 2, b"new"),
        ("MSFT", 1, snapshot().blob),
    ]


async def test_session_is_one_row_per_day_and_latest_wins(store: SqliteStore) -> None:
    next_day = DAY + timedelta(days=1)
    await store.commit([PutSession(session(DAY, pnl=10.0, trades=1))])
    await store.commit([PutSession(session(DAY, pnl=25.0, trades=2))])
    await store.commit([PutSession(session(next_day, pnl=0.0, trades=0))])

    assert await store.session() == session(next_day, pnl=0.0, trades=0)
    assert await store.sessions() == [
        session(DAY, pnl=25.0, trades=2),
        session(next_day, pnl=0.0, trades=0),
    ]
    assert await store.sessions(since=next_day) == [session(next_day, pnl=0.0, trades=0)]


async def test_empty_store_reads_are_empty(store: SqliteStore) -> None:
    assert await store.session() is None
    assert await store.sessions() == []
    assert await store.executions() == []
    assert (await store.load_snapshots()).rows == []
    assert await store.reports() == []
    assert await store.integrity_check() == "ok"


async def test_closed_trades_since_a_trading_day(store: SqliteStore) -> None:
    days = [date(2026, 1, 2), date(2026, 1, 5), date(2026, 1, 6)]
    await store.commit([PutClosedTrade(closed_trade(f"t-{d.day}", day=d)) for d in days])

    trades = await store.closed_trades(since=date(2026, 1, 5))

    assert [t.trade_id for t in trades] == ["t-5", "t-6"]


async def test_reports_are_newest_first_and_limited(store: SqliteStore) -> None:
    ats = [T0 + timedelta(minutes=m) for m in (0, 2, 1)]
    await store.commit([PutReport(report(at, mode=f"m{i}")) for i, at in enumerate(ats)])

    latest = await store.reports(limit=2)

    assert [r.mode for r in latest] == ["m1", "m2"]


@pytest.mark.parametrize(
    "bad_write",
    [
        PutExecution(execution("e-bad", ts=datetime(2026, 1, 5, 14, 30))),
        PutExecution(execution("e-bad", qty=float("nan"))),
        PutIntent(intent("coid-bad", price=float("inf"))),
        ResolveIntent("coid-1", "exploded"),
        PutReport(ReportRow(at=T0, mode="boot", body="{not json")),
        PutClosedTrade(msgspec.structs.replace(closed_trade(), mae=float("nan"))),
        "not a write",
    ],
    ids=["naive-time", "nan-qty", "inf-price", "unknown-status", "not-json", "nan-mae", "junk"],
)
async def test_a_write_the_store_refuses_fails_its_batch_alone(
    store: SqliteStore, bad_write: Write
) -> None:
    good = store.commit([PutExecution(execution("e-good"))])
    with pytest.raises(StoreWriteError):
        await store.commit([PutExecution(execution("e-same-batch")), bad_write])

    assert (await good).duplicate_exec_ids == frozenset()
    assert [e.exec_id for e in await store.executions()] == ["e-good"]
    assert store.healthy


async def test_quarantine_moves_the_snapshot_aside_and_the_symbol_starts_fresh(
    store: SqliteStore,
) -> None:
    await store.commit(
        [PutSnapshot(snapshot("AAPL", seq=41, blob=b"garbage")), PutSnapshot(snapshot("MSFT"))]
    )

    await store.quarantine_snapshot("AAPL", "blob does not decode as PositionState v3")

    assert [r.symbol for r in (await store.load_snapshots()).rows] == ["MSFT"]
    (kept,) = await store.quarantined_snapshots()
    assert (kept.symbol, kept.seq, kept.blob) == ("AAPL", 41, b"garbage")
    assert kept.reason == "blob does not decode as PositionState v3"
    assert kept.quarantined_at.tzinfo is UTC
    await store.commit([PutSnapshot(snapshot("AAPL", seq=1, blob=b"fresh"))])
    assert [r.seq for r in (await store.load_snapshots()).rows] == [1, 1]


async def test_a_snapshot_without_bars_leaves_the_stored_bar_buffer_as_it_is(
    store: SqliteStore, store_path: Path
) -> None:
    with_bars = msgspec.structs.replace(snapshot("AAPL", seq=1), bars=b"bars-1")
    await store.commit([PutSnapshot(with_bars), PutSnapshot(snapshot("MSFT"))])

    await store.commit([PutSnapshot(snapshot("AAPL", seq=2, blob=b"state-2"))])

    rows = {r.symbol: r for r in (await store.load_snapshots()).rows}
    assert (rows["AAPL"].seq, rows["AAPL"].blob, rows["AAPL"].bars) == (2, b"state-2", b"bars-1")
    assert rows["MSFT"].bars is None, "no buffer was ever stored for it"
    await store.commit([PutSnapshot(msgspec.structs.replace(snapshot("AAPL"), bars=b"bars-3"))])
    assert [r.bars for r in (await store.load_snapshots()).rows] == [b"bars-3", None]
    with sqlite3.connect(store_path) as raw:  # one row per symbol, not one per write
        assert raw.execute("SELECT symbol FROM bar_buffers").fetchall() == [("AAPL",)]


async def test_quarantine_takes_the_bar_buffer_with_the_snapshot(store: SqliteStore) -> None:
    await store.commit([PutSnapshot(msgspec.structs.replace(snapshot("AAPL"), bars=b"old"))])

    await store.quarantine_snapshot("AAPL", "distrusted")
    await store.commit([PutSnapshot(snapshot("AAPL", seq=2, blob=b"fresh"))])

    (row,) = (await store.load_snapshots()).rows
    assert (row.blob, row.bars) == (b"fresh", None), "the fresh start has no old bars"


async def test_quarantine_and_writes_in_one_group_keep_their_order(store: SqliteStore) -> None:
    await store.commit([PutSnapshot(snapshot("AAPL", seq=1, blob=b"old"))])

    await asyncio.gather(
        store.quarantine_snapshot("AAPL", "distrusted"),
        store.commit([PutSnapshot(snapshot("AAPL", seq=2, blob=b"fresh"))]),
    )

    assert [r.blob for r in (await store.load_snapshots()).rows] == [b"fresh"]
    assert [q.blob for q in await store.quarantined_snapshots()] == [b"old"]


async def test_unreadable_snapshot_row_is_quarantined_at_load(
    store: SqliteStore, store_path: Path
) -> None:
    await store.commit([PutSnapshot(snapshot("AAPL")), PutSnapshot(snapshot("MSFT"))])
    with sqlite3.connect(store_path) as raw:
        raw.execute("UPDATE snapshots SET taken_at = 'yesterday-ish' WHERE symbol = 'MSFT'")
    raw.close()

    rows = (await store.load_snapshots()).rows

    assert [r.symbol for r in rows] == ["AAPL"]
    (kept,) = await store.quarantined_snapshots()
    assert kept.symbol == "MSFT"
    assert "unreadable snapshot row" in kept.reason


async def test_files_are_owner_only(store: SqliteStore, store_path: Path) -> None:
    await store.commit([PutExecution(execution("e-1"))])

    for suffix in ("", "-wal", "-shm"):
        sidecar = store_path.with_name(store_path.name + suffix)
        assert stat.S_IMODE(os.stat(sidecar).st_mode) == 0o600, sidecar


async def test_existing_file_with_loose_mode_is_tightened(store_path: Path) -> None:
    first = await open_store(store_path, ACCOUNT)
    await first.close()
    os.chmod(store_path, 0o644)

    second = await open_store(store_path, ACCOUNT)
    await second.close()

    assert stat.S_IMODE(os.stat(store_path).st_mode) == 0o600


async def test_backup_keeps_the_newest_and_opens_clean(
    store: SqliteStore, store_path: Path
) -> None:
    await store.commit([PutExecution(execution("e-1")), PutSnapshot(snapshot())])

    made = [await store.backup(reason=f"test {i}") for i in range(5)]

    backups_dir = store_path.parent / "backups"
    assert sorted(backups_dir.iterdir()) == made[-3:]  # backups_keep=3 in the fixture
    assert all(re.fullmatch(r"paper-20260105T1430\d\d\.000000Z\.db", p.name) for p in made)
    newest = made[-1]
    assert stat.S_IMODE(os.stat(newest).st_mode) == 0o600
    copy = await open_store(newest, ACCOUNT)
    try:
        assert copy.open_findings == []
        assert await copy.integrity_check() == "ok"
        assert await copy.has_execution("e-1")
        assert [r.symbol for r in (await copy.load_snapshots()).rows] == ["AAPL"]
    finally:
        await copy.close()


async def test_backups_with_the_same_timestamp_get_distinct_names(store_path: Path) -> None:
    frozen = await open_store(store_path, ACCOUNT, now=lambda: T0)
    try:
        first = await frozen.backup("a")
        second = await frozen.backup("b")
    finally:
        await frozen.close()

    assert first != second
    assert sorted([first, second]) == [first, second]


async def test_commit_and_reads_after_close_raise_store_error(store: SqliteStore) -> None:
    await store.close()

    with pytest.raises(StoreError, match="closed"):
        await store.commit([PutExecution(execution("e-1"))])
    with pytest.raises(StoreError, match="closed"):
        await store.executions()
    await store.close()  # idempotent


async def test_empty_commit_is_a_no_op(store: SqliteStore) -> None:
    assert await store.commit([]) == CommitResult()
    assert store.transactions == 0


@pytest.mark.parametrize(("account", "keep"), [("", 5), (ACCOUNT, 0)])
async def test_open_refuses_bad_arguments(store_path: Path, account: str, keep: int) -> None:
    with pytest.raises(ValueError, match=r"account_id|backups_keep"):
        await open_store(store_path, account, backups_keep=keep)


async def test_clock_stamps_are_used_for_quarantine(store_path: Path) -> None:
    opened = await open_store(store_path, ACCOUNT, now=lambda: T0 + timedelta(days=1))
    try:
        await opened.commit([PutSnapshot(snapshot())])
        await opened.quarantine_snapshot("AAPL", "test")
        (kept,) = await opened.quarantined_snapshots()
    finally:
        await opened.close()

    assert kept.quarantined_at == T0 + timedelta(days=1)


async def test_a_large_batch_is_stored_whole_or_refused_whole(store: SqliteStore) -> None:
    writes: list[Write] = [PutSnapshot(snapshot(f"S{i:04d}", seq=i)) for i in range(1000)]

    with pytest.raises(StoreWriteError, match="naive"):
        await store.commit([*writes, PutSnapshot(snapshot(ts=datetime(2026, 1, 5)))])
    assert (await store.load_snapshots()).rows == []

    await store.commit(writes)
    assert len((await store.load_snapshots()).rows) == 1000
