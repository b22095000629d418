"""The group-commit writer: shared transactions, failed transactions, a dead writer, draining."""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from persistence import (
    PutExecution,
    PutSnapshot,
    SqliteStore,
    StoreError,
    StoreWriteError,
    Write,
    open_store,
)
from tests.unit.persistence._store_kit import ACCOUNT, execution, snapshot


async def _cap_file_at_current_size(store: SqliteStore) -> None:
    """Simulate a full disk: no page may be added to the file.

    Reaches into the write connection: the store has no public size cap, and
    filling a real disk is not something a unit test can do.
    """
    ((pages,),) = await store._writer.call(lambda c: c.execute("PRAGMA page_count").fetchall())
    await store._writer.call(lambda c: c.execute(f"PRAGMA max_page_count = {pages}").fetchall())


async def _free_space(store: SqliteStore) -> None:
    await store._writer.call(lambda c: c.execute("PRAGMA max_page_count = 1073741823").fetchall())


async def test_concurrent_commits_share_transactions(store: SqliteStore) -> None:
    ids = [f"e-{i:03d}" for i in range(100)]

    results = await asyncio.gather(*(store.commit([PutExecution(execution(i))]) for i in ids))

    assert all(r.duplicate_exec_ids == frozenset() for r in results)
    assert 1 <= store.transactions < 100
    assert sorted(e.exec_id for e in await store.executions()) == ids


async def test_sequential_commits_each_take_a_transaction(store: SqliteStore) -> None:
    for i in range(3):
        await store.commit([PutExecution(execution(f"e-{i}"))])

    assert store.transactions == 3


async def test_full_disk_fails_every_waiter_of_the_transaction_and_stores_nothing(
    store: SqliteStore,
) -> None:
    await store.commit([PutExecution(execution("e-before"))])
    await _cap_file_at_current_size(store)
    big: list[Write] = [
        PutSnapshot(snapshot("AAPL", blob=b"x" * 1_000_000)),
        PutExecution(execution("e-big")),
    ]
    small: list[Write] = [PutExecution(execution("e-small"))]

    outcomes = await asyncio.gather(store.commit(big), store.commit(small), return_exceptions=True)

    assert all(isinstance(o, StoreWriteError) for o in outcomes), outcomes
    assert "full" in str(outcomes[0])
    assert not store.healthy
    assert store.transactions == 1
    assert [e.exec_id for e in await store.executions()] == ["e-before"]
    assert (await store.load_snapshots()).rows == []


async def test_after_space_returns_the_retry_is_stored(store: SqliteStore) -> None:
    await _cap_file_at_current_size(store)
    batch: list[Write] = [
        PutSnapshot(snapshot("AAPL", blob=b"x" * 1_000_000)),
        PutExecution(execution("e-1")),
    ]
    with pytest.raises(StoreWriteError):
        await store.commit(batch)

    await _free_space(store)
    result = await store.commit(batch)

    assert result.duplicate_exec_ids == frozenset()
    assert store.healthy
    assert await store.has_execution("e-1")
    assert [len(r.blob) for r in (await store.load_snapshots()).rows] == [1_000_000]
    assert await store.integrity_check() == "ok"


async def test_a_dead_writer_fails_pending_and_later_commits(
    store_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    def bug() -> None:  # inside the transaction: not an I/O error, a bug
        raise RuntimeError("a bug in the writer")

    store = await open_store(store_path, ACCOUNT, before_commit=bug)
    try:
        with caplog.at_level(logging.CRITICAL, logger="persistence.writer"):
            outcomes = await asyncio.gather(
                *(store.commit([PutExecution(execution(f"e-{i}"))]) for i in range(5)),
                return_exceptions=True,
            )

        assert all(isinstance(o, StoreWriteError) for o in outcomes), outcomes
        assert "writer died" in caplog.text
        assert not store.healthy
        with pytest.raises(StoreWriteError, match="writer died"):
            await store.commit([PutExecution(execution("e-later"))])
    finally:
        await asyncio.wait_for(store.close(), 10)  # the connection's thread was given back
    reopened = await open_store(store_path, ACCOUNT)
    try:
        assert await reopened.executions() == []  # nothing of the failed group was stored
    finally:
        await reopened.close()


async def test_commits_queued_while_the_writer_works_share_the_next_transaction(
    store: SqliteStore,
) -> None:
    # The drain takes the next group as soon as a transaction ends, without
    # waiting for the event loop: what queued meanwhile goes in one transaction.
    gate = threading.Event()
    held = asyncio.ensure_future(store._writer.call(lambda _c: gate.wait(10)))
    await asyncio.sleep(0.05)
    before = store.transactions
    queued = [
        asyncio.ensure_future(store.commit([PutExecution(execution(f"e-{i}"))])) for i in range(20)
    ]
    await asyncio.sleep(0.05)
    assert store._writer.pending == 20
    gate.set()
    await asyncio.gather(held, *queued)

    assert store.transactions == before + 1
    assert len(await store.executions()) == 20


async def test_a_writer_cancelled_under_its_store_gives_the_thread_back(store_path: Path) -> None:
    store = await open_store(store_path, ACCOUNT)
    await store.commit([PutExecution(execution("e-1"))])
    task = store._writer._task
    assert task is not None
    task.cancel()  # as at a loop shutdown that cancels every task
    await asyncio.wait([task])

    with pytest.raises(StoreWriteError, match="writer died"):
        await store.commit([PutExecution(execution("e-2"))])
    await asyncio.wait_for(store.close(), 10)  # the drain stopped: close is not stuck behind it
    reopened = await open_store(store_path, ACCOUNT)
    try:
        assert [e.exec_id for e in await reopened.executions()] == ["e-1"]
    finally:
        await reopened.close()


async def test_close_drains_pending_commits(store_path: Path) -> None:
    store = await open_store(store_path, ACCOUNT)
    ids = [f"e-{i}" for i in range(50)]

    *results, _ = await asyncio.gather(
        *(store.commit([PutExecution(execution(i))]) for i in ids), store.close()
    )

    assert len(results) == 50
    reopened = await open_store(store_path, ACCOUNT)
    try:
        assert sorted(e.exec_id for e in await reopened.executions()) == sorted(ids)
    finally:
        await reopened.close()


async def test_commit_racing_close_is_refused(store: SqliteStore) -> None:
    closing = asyncio.ensure_future(store.close())
    await asyncio.sleep(0)  # close() has started: the store is closing

    with pytest.raises(StoreError, match="closing"):
        await store.commit([PutExecution(execution("e-late"))])
    await closing


async def test_a_cancelled_caller_does_not_disturb_its_group(store: SqliteStore) -> None:
    async with asyncio.TaskGroup() as tasks:
        cancelled = tasks.create_task(store.commit([PutExecution(execution("e-1"))]))
        other = tasks.create_task(store.commit([PutExecution(execution("e-2"))]))
        await asyncio.sleep(0)  # both are queued
        cancelled.cancel()

    assert cancelled.cancelled()
    assert other.result().duplicate_exec_ids == frozenset()
    # Once queued, a batch is carried out: the caller just does not hear about it.
    assert await store.has_execution("e-1")
    assert await store.has_execution("e-2")


async def test_a_guarded_duplicate_voids_its_own_batch_and_nothing_else(store: SqliteStore) -> None:
    await store.commit([PutExecution(execution("e-1"))])
    guarded: list[Write] = [
        PutExecution(execution("e-1"), require_new=True),
        PutSnapshot(snapshot("AAPL", seq=7)),
    ]
    other: list[Write] = [PutExecution(execution("e-2")), PutSnapshot(snapshot("MSFT", seq=3))]

    voided, stored = await asyncio.gather(store.commit(guarded), store.commit(other))

    assert voided.duplicate_exec_ids == {"e-1"}
    assert stored.duplicate_exec_ids == frozenset()
    assert [r.symbol for r in (await store.load_snapshots()).rows] == ["MSFT"]
    assert sorted(e.exec_id for e in await store.executions()) == ["e-1", "e-2"]


async def test_a_guarded_execution_that_is_new_is_stored_with_its_batch(store: SqliteStore) -> None:
    result = await store.commit(
        [PutExecution(execution("e-1"), require_new=True), PutSnapshot(snapshot("AAPL"))]
    )

    assert result.duplicate_exec_ids == frozenset()
    assert [r.symbol for r in (await store.load_snapshots()).rows] == ["AAPL"]
    assert await store.has_execution("e-1")


async def test_a_duplicate_inside_one_group_is_reported_to_the_later_batch(
    store: SqliteStore,
) -> None:
    first, second = await asyncio.gather(
        store.commit([PutExecution(execution("e-1"))]),
        store.commit([PutExecution(execution("e-1"), require_new=True), PutSnapshot(snapshot())]),
    )

    assert first.duplicate_exec_ids == frozenset()
    assert second.duplicate_exec_ids == {"e-1"}
    assert (await store.load_snapshots()).rows == []


async def test_a_group_is_one_transaction_whatever_its_statements(store: SqliteStore) -> None:
    writes: list[Write] = [
        PutExecution(execution("e-1")),
        PutSnapshot(snapshot("AAPL")),
        PutExecution(execution("e-2")),
        PutSnapshot(snapshot("MSFT")),
    ]

    result = await store.commit(writes)

    assert result.duplicate_exec_ids == frozenset()
    assert store.transactions == 1
    assert len((await store.load_snapshots()).rows) == 2


def _note_checkpoints(
    store: SqliteStore, seen: list[int], gate: threading.Event | None = None
) -> Callable[[sqlite3.Connection], None]:
    """Return writer-thread work that notes the checkpoint count, then waits for ``gate``."""

    def work(_conn: sqlite3.Connection) -> None:
        seen.append(store._writer.checkpoints)
        if gate is not None and not gate.wait(10):
            raise TimeoutError("gate never opened")

    return work


def _megabyte_snapshots(prefix: str, n: int) -> list[Write]:
    return [PutSnapshot(snapshot(f"{prefix}{i}", blob=bytes(1_000_000))) for i in range(n)]


async def _queued_behind_a_held_writer(
    store: SqliteStore, first: list[Write], second: list[Write]
) -> list[int]:
    """Commit ``first``, note the checkpoint count, commit ``second``: all queued at once.

    The writer thread is held while they queue, so it drains all three together;
    return the checkpoint count seen between the two commits and after both.
    """
    gate, seen = threading.Event(), list[int]()
    held = asyncio.ensure_future(store._writer.call(_note_checkpoints(store, seen, gate)))
    await asyncio.sleep(0.05)  # the writer thread is held: what follows queues up
    queued = [
        asyncio.ensure_future(store.commit(first)),
        asyncio.ensure_future(store._writer.call(_note_checkpoints(store, seen))),
        asyncio.ensure_future(store.commit(second)),
    ]
    await asyncio.sleep(0.05)
    gate.set()
    await asyncio.gather(held, *queued)
    # The checkpoint runs after the commit is answered: wait for the writer to idle.
    for _ in range(200):
        if store._writer.checkpoints:
            break
        await asyncio.sleep(0.01)
    return [*seen[1:], store._writer.checkpoints]


async def test_a_wal_checkpoint_never_delays_the_commits_waiting(store: SqliteStore) -> None:
    # The writer checkpoints between commits, never inside one, and not while
    # commits wait (unless the WAL is large): a fill never waits for a page copy.
    seen = await _queued_behind_a_held_writer(
        store,
        _megabyte_snapshots("A", 5),
        [PutExecution(execution("e-1"))],  # ~1,225 pages
    )

    assert seen == [0, 1]  # past 1,000 pages with a commit queued: after it, not before


async def test_a_writer_that_never_idles_still_checkpoints_a_large_wal(
    store: SqliteStore, store_path: Path
) -> None:
    seen = await _queued_behind_a_held_writer(
        store,
        _megabyte_snapshots("A", 17),
        [PutExecution(execution("e-1"))],  # ~4,160 pages
    )

    assert seen == [1, 1]  # past 4,000 pages: checkpointed though a commit was queued
    assert len((await store.load_snapshots()).rows) == 17


async def test_close_leaves_one_self_contained_file(store_path: Path) -> None:
    store = await open_store(store_path, ACCOUNT)
    await store.commit(_megabyte_snapshots("A", 2))
    await store.close()

    assert not store_path.with_name(store_path.name + "-wal").exists()
    with sqlite3.connect(store_path) as db:
        ((count,),) = db.execute("SELECT count(*) FROM snapshots").fetchall()
    assert count == 2
