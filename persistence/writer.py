"""The group-commit writer: the one owner of the store's write connection.

Why it is built this way:

* SQLite has one writer at a time, and with ``synchronous=FULL`` every commit
  costs an fsync (milliseconds). A transaction per fill would cap throughput at
  one fsync per write and queue concurrent actors behind each other's fsyncs.
  So ``submit`` queues a batch with a future, and the writer drains *every*
  pending batch into one transaction, commits once, then answers every waiter:
  N concurrent commits pay for one fsync.
* A waiter is answered only after ``COMMIT`` returned: a fill acknowledged is a
  fill on disk. When the transaction fails it is rolled back and every waiter
  in it gets ``StoreWriteError``, so nothing of any of its batches is visible.
* Batches arrive encoded (``codec.encode_batch`` runs in the caller), so a
  malformed write fails its own commit and cannot poison a group.
* A group's whole transaction (BEGIN IMMEDIATE, every statement, COMMIT) runs
  as one call on the connection's thread: one hop instead of one per
  statement, each of which would wait for the GIL behind a busy loop.
* A WAL checkpoint never delays the commit that crosses its threshold.
  SQLite's automatic checkpoint runs inside that ``COMMIT``: its waiters (and
  every fill queued behind them) wait for a copy of ~1,000 pages and an fsync
  of the database file, 3-5 ms here. So ``wal_autocheckpoint`` is off on the
  write connection (``opening``) and the writer runs a ``PASSIVE`` checkpoint
  itself once ~1,000 pages were written, *after* answering the group and only
  when nothing is queued; under a load that never pauses it runs one at ~4,000
  pages regardless, so the WAL stays bounded. (A checkpoint on a connection of
  its own, beside the writer, was tried: it never catches up with a steady
  writer, so the WAL never restarts and every commit extends the file, which
  made each fsync dearer than the stalls it saved.)
* Statements run in the order the commits were made; only consecutive runs of
  the same statement are sent together (``executemany``). A quarantine followed
  by a fresh snapshot of the same symbol means what it says. Duplicate
  executions are told by the insert's row count (``ON CONFLICT DO NOTHING``),
  not by a read first; a batch whose guarded execution is a duplicate is rolled
  back to its savepoint, the rest of the group stands.
* A failed transaction (disk full, I/O error) does not stop the writer: the
  next group tries again, so the store heals when space returns (``healthy``
  says which way the last commit went). Anything else (a bug, a closed
  connection) stops it, and then every pending and every later commit fails
  with ``StoreWriteError``: nobody waits on a writer that is gone.
* The writer is a task owned by the store: started by ``open_store``, stopped
  by ``close()`` through a sentinel queued behind what is pending, so close
  drains before it returns.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import TypeVar, cast

import aiosqlite

from persistence.codec import INSERT_EXECUTION, EncodedBatch, Params
from persistence.protocol import StoreWriteError

__all__ = ["GroupCommitWriter"]

_log = logging.getLogger(__name__)

_T = TypeVar("_T")


_PAGE = 4096
_CHECKPOINT_PAGES = 1_000  # SQLite's own automatic-checkpoint threshold, when idle
_CHECKPOINT_PAGES_BUSY = 4_000  # ... and when commits never stop coming


class _Pending:
    __slots__ = ("batch", "future")

    def __init__(self, batch: EncodedBatch, future: asyncio.Future[frozenset[str]]) -> None:
        self.batch = batch
        self.future = future


class _Call:
    """Run ``work(connection)`` on the connection's thread, in order with the commits."""

    __slots__ = ("future", "work")

    def __init__(
        self, work: Callable[[sqlite3.Connection], object], future: asyncio.Future[object]
    ) -> None:
        self.work = work
        self.future = future


def _pages(batch: EncodedBatch) -> int:
    """Estimate the WAL pages ``batch`` writes (one per statement, plus its bytes)."""
    size = 0
    for _sql, params in batch.ops:
        size += _PAGE
        for value in params:
            if isinstance(value, bytes | str):
                size += len(value)
    return size // _PAGE


def _fail(pending: _Pending, message: str, cause: BaseException | None) -> None:
    if pending.future.done():
        return
    error = StoreWriteError(message)  # one instance per waiter: tracebacks must not pile up
    error.__cause__ = cause
    pending.future.set_exception(error)


class GroupCommitWriter:
    """Own ``conn``; commit queued batches in groups, one transaction per group.

    ``conn`` must be in autocommit mode (``isolation_level=None``); the writer
    issues ``BEGIN IMMEDIATE`` / ``COMMIT`` itself. Nothing else may use it
    while the writer runs.
    """

    def __init__(
        self,
        conn: aiosqlite.Connection,
        *,
        path: Path,
        max_pending: int = 10_000,
        before_commit: Callable[[], None] | None = None,
    ) -> None:
        self._conn = conn
        self._before_commit = before_commit
        self._path = path
        self._queue: asyncio.Queue[_Pending | _Call | None] = asyncio.Queue(max_pending)
        self._task: asyncio.Task[None] | None = None
        self._stopped = False
        self._failure: BaseException | None = None
        self._transactions = 0
        self._healthy = True
        self._unchecked_pages = 0  # written since the last WAL checkpoint
        self._checkpoints = 0
        self._checkpoint_failing = False

    @property
    def transactions(self) -> int:
        """Return how many write transactions have committed."""
        return self._transactions

    @property
    def healthy(self) -> bool:
        """Return False after a failed transaction, until one commits again."""
        return self._healthy and self._failure is None

    @property
    def checkpoints(self) -> int:
        """Return how many WAL checkpoints the writer has run."""
        return self._checkpoints

    @property
    def pending(self) -> int:
        """Return how many batches wait for the next transaction."""
        return self._queue.qsize()

    def start(self) -> None:
        """Start the writer task; the caller owns it through ``stop()``."""
        if self._task is not None:
            raise RuntimeError("writer already started")
        self._task = asyncio.create_task(self._run(), name=f"store-writer {self._path.name}")

    async def submit(self, batch: EncodedBatch) -> frozenset[str]:
        """Commit ``batch`` with whatever else is pending; return its duplicate exec ids.

        Await while the queue is full. Raise ``StoreWriteError`` when the
        transaction fails or the writer is gone. Once queued, a batch is
        committed even if the caller is cancelled.
        """
        self._raise_if_gone()
        future: asyncio.Future[frozenset[str]] = asyncio.get_running_loop().create_future()
        await self._queue.put(_Pending(batch, future))
        # The writer may have stopped while we waited for room; then nobody reads the queue.
        self._raise_if_gone()
        return await future

    async def call(self, work: Callable[[sqlite3.Connection], _T]) -> _T:
        """Run ``work(connection)`` on the write connection after what is queued; return it.

        For what only the write connection may do (tests that play a full disk).
        """
        self._raise_if_gone()
        future: asyncio.Future[object] = asyncio.get_running_loop().create_future()
        await self._queue.put(_Call(work, future))
        self._raise_if_gone()
        return cast(_T, await future)

    async def stop(self) -> None:
        """Commit everything queued so far, then stop the writer task and wait for it."""
        if self._task is None:
            return
        if not self._stopped:
            await self._queue.put(None)
        await self._task

    def _raise_if_gone(self) -> None:
        if self._failure is not None:
            raise StoreWriteError(
                f"store {self._path} writer died ({self._failure!r}); nothing more can be stored"
            ) from self._failure
        if self._stopped:
            raise StoreWriteError(f"store {self._path} writer has stopped")

    async def _run(self) -> None:
        try:
            stopping = False
            while not stopping:
                group: list[_Pending] = []
                item = await self._queue.get()
                while True:
                    if item is None:
                        stopping = True
                        break
                    if isinstance(item, _Call):
                        if group:
                            await self._commit(group)
                            await self._maybe_checkpoint(busy=True)
                            group = []
                        await self._call(item)
                    else:
                        group.append(item)
                    try:
                        item = self._queue.get_nowait()
                    except asyncio.QueueEmpty:
                        break
                if group:
                    await self._commit(group)
                await self._maybe_checkpoint(busy=not self._queue.empty())
        except asyncio.CancelledError:
            self._failure = asyncio.CancelledError("store writer cancelled")
            raise
        except Exception as exc:
            self._failure = exc
            _log.critical("store %s writer died; commits will fail", self._path, exc_info=True)
        finally:
            self._stopped = True
            while not self._queue.empty():
                pending = self._queue.get_nowait()
                if isinstance(pending, _Pending):
                    _fail(pending, f"store {self._path} writer stopped", self._failure)
                elif isinstance(pending, _Call) and not pending.future.done():
                    pending.future.set_exception(
                        StoreWriteError(f"store {self._path} writer stopped")
                    )

    async def _call(self, item: _Call) -> None:
        try:
            result = await _on_connection_thread(self._conn, item.work)
        except Exception as exc:
            if not item.future.done():
                item.future.set_exception(exc)
        else:
            if not item.future.done():
                item.future.set_result(result)

    async def _maybe_checkpoint(self, *, busy: bool) -> None:
        """Checkpoint the WAL after ~1,000 pages when nothing waits, ~4,000 when ``busy``.

        Runs after the groups were answered. A failed checkpoint (disk full) is
        logged once per failing streak and tried again after the next commit;
        it loses nothing: the WAL still holds every committed page.
        """
        if self._unchecked_pages < (_CHECKPOINT_PAGES_BUSY if busy else _CHECKPOINT_PAGES):
            return
        try:
            await _on_connection_thread(self._conn, _checkpoint)
        except sqlite3.Error as exc:
            if not self._checkpoint_failing:
                _log.error("store %s: WAL checkpoint failed: %s", self._path, exc)
                self._checkpoint_failing = True
            return
        if self._checkpoint_failing:
            _log.warning("store %s: WAL checkpoints succeed again", self._path)
            self._checkpoint_failing = False
        self._unchecked_pages = 0
        self._checkpoints += 1

    async def _commit(self, group: list[_Pending]) -> None:
        batches = [pending.batch for pending in group]
        before_commit = self._before_commit
        try:
            duplicates = await _on_connection_thread(
                self._conn, lambda conn: _transact(conn, batches, before_commit)
            )
        except BaseException as exc:
            message = f"store {self._path}: commit of {len(group)} batch(es) failed: {exc}"
            for pending in group:
                _fail(pending, message, exc)
            if not isinstance(exc, sqlite3.Error):
                raise
            _log.error("%s; nothing of it was stored, store unhealthy", message)
            self._healthy = False
            return
        self._transactions += 1
        self._unchecked_pages += sum(_pages(b) for b in batches)
        if not self._healthy:
            _log.warning("store %s: commits succeed again, store healthy", self._path)
            self._healthy = True
        for pending, dups in zip(group, duplicates, strict=True):
            if not pending.future.done():
                pending.future.set_result(dups)


async def _on_connection_thread(
    conn: aiosqlite.Connection, work: Callable[[sqlite3.Connection], _T]
) -> _T:
    """Run ``work(connection)`` on ``conn``'s own thread: a whole transaction in one hop.

    aiosqlite's public methods each make one round trip to its thread (one
    statement each); a group transaction would make one per statement, and on
    a busy loop every hop waits for the GIL. ``_execute`` is how those methods
    reach the thread; it is not public API, hence this one place.
    """
    execute = cast(Callable[[Callable[[], _T]], Awaitable[_T]], conn._execute)
    return await execute(lambda: work(conn._conn))


def _checkpoint(conn: sqlite3.Connection) -> None:
    conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()


def _transact(
    conn: sqlite3.Connection,
    batches: Sequence[EncodedBatch],
    before_commit: Callable[[], None] | None,
) -> list[frozenset[str]]:
    """Store ``batches`` in one transaction (on the connection's thread); return duplicates.

    Per batch: the exec ids already stored or inserted earlier in the group.
    A batch with a guard among them is rolled back to its savepoint: nothing
    of it is stored. On any error the transaction is rolled back and the error
    raised.
    """
    conn.execute("BEGIN IMMEDIATE")
    try:
        result: list[frozenset[str]] = []
        run_sql: str | None = None
        run_rows: list[Params] = []
        for batch in batches:
            if batch.guards:
                if run_sql is not None:
                    conn.executemany(run_sql, run_rows)
                    run_sql, run_rows = None, []
                result.append(_guarded(conn, batch))
                continue
            dups: set[str] | None = None
            for sql, params in batch.ops:
                if sql == INSERT_EXECUTION:
                    if run_sql is not None:
                        conn.executemany(run_sql, run_rows)
                        run_sql, run_rows = None, []
                    if conn.execute(sql, params).rowcount == 0:
                        dups = dups or set()
                        dups.add(str(params[0]))
                elif sql == run_sql:
                    run_rows.append(params)
                else:
                    if run_sql is not None:
                        conn.executemany(run_sql, run_rows)
                    run_sql, run_rows = sql, [params]
            result.append(_NONE if dups is None else frozenset(dups))
        if run_sql is not None:
            conn.executemany(run_sql, run_rows)
        if before_commit is not None:
            before_commit()
        conn.execute("COMMIT")
    except BaseException:
        # SQLite may already have rolled back (SQLITE_FULL, SQLITE_IOERR); then
        # ROLLBACK fails with "no transaction is active", which is what we want.
        with contextlib.suppress(sqlite3.Error):
            conn.execute("ROLLBACK")
        raise
    return result


def _guarded(conn: sqlite3.Connection, batch: EncodedBatch) -> frozenset[str]:
    """Store ``batch`` unless one of its guards is a known execution; return its duplicates."""
    conn.execute("SAVEPOINT guarded")
    dups: set[str] = set()
    guards = frozenset(batch.guards)
    voided = False
    for sql, params in batch.ops:
        cursor = conn.execute(sql, params)
        if sql == INSERT_EXECUTION and cursor.rowcount == 0:
            exec_id = str(params[0])
            dups.add(exec_id)
            if exec_id in guards:
                voided = True
                break
    if voided:
        conn.execute("ROLLBACK TO guarded")
    conn.execute("RELEASE guarded")
    return frozenset(dups)


_NONE: frozenset[str] = frozenset()
