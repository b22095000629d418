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
* The writer is a drain that runs on the connection's own thread and holds it
  while the store is open: it takes every pending batch, runs the group's
  whole transaction (BEGIN IMMEDIATE, every statement, COMMIT), posts the
  answers to the loop in one callback and goes straight on to the next group.
  The event loop is on the path only to hand a batch over (a thread-safe
  queue) and to hear the answer. (Before, a writer task on the loop took the
  groups and sent each transaction to the thread: on a busy loop the next
  group waited for that task's turn after every commit, and the answer waited
  for two turns, the task's and then the waiter's.) What the drain changes
  that the loop reads (health, counts, a death) is set before the answers
  are posted.
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
* The writer is owned by the store: started by ``open_store`` (a task on the
  loop that holds the connection's thread for the drain), stopped by
  ``close()`` through a stop item queued behind what is pending, so close
  drains before it returns and the thread is free for the connection's close.
  The backlog is bounded (``max_pending``): a commit beyond it waits for room.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import sqlite3
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar, cast

import aiosqlite

from persistence.codec import INSERT_EXECUTION, SET_INTENT_STATUS, EncodedBatch, Params
from persistence.protocol import StoreWriteError

__all__ = ["GroupCommitWriter"]

_log = logging.getLogger(__name__)

_T = TypeVar("_T")


_PAGE = 4096
_CHECKPOINT_PAGES = 1_000  # SQLite's own automatic-checkpoint threshold, when idle
_CHECKPOINT_PAGES_BUSY = 4_000  # ... and when commits never stop coming


class _Pending:
    __slots__ = ("batch", "future", "posted")

    def __init__(self, batch: EncodedBatch, future: asyncio.Future[frozenset[str]]) -> None:
        self.batch = batch
        self.future = future
        self.posted = False  # its answer is on its way to the loop


class _Call:
    """Run ``work(connection)`` on the connection's thread, in order with the commits."""

    __slots__ = ("future", "posted", "work")

    def __init__(
        self, work: Callable[[sqlite3.Connection], object], future: asyncio.Future[object]
    ) -> None:
        self.work = work
        self.future = future
        self.posted = False


_Item = _Pending | _Call | None  # None: stop after what came before


def _pages(batch: EncodedBatch) -> int:
    """Estimate the WAL pages ``batch`` writes (one per statement, plus its bytes)."""
    size = 0
    for sql, params in batch.ops:
        if sql == SET_INTENT_STATUS:
            continue  # writes only when the status moves: a few times in an intent's life
        size += _PAGE
        for value in params:
            if isinstance(value, bytes | str):
                size += len(value)
    return size // _PAGE


def _settle(future: asyncio.Future[Any], result: object, error: BaseException | None) -> None:
    """Answer ``future`` on the loop (its waiter may have been cancelled meanwhile)."""
    if future.done():
        return
    if error is None:
        future.set_result(result)
    else:
        future.set_exception(error)


def _write_error(message: str, cause: BaseException | None) -> StoreWriteError:
    error = StoreWriteError(message)  # one instance per waiter: tracebacks must not pile up
    error.__cause__ = cause
    return error


class GroupCommitWriter:
    """Own ``conn``; commit queued batches in groups, one transaction per group.

    ``conn`` must be in autocommit mode (``isolation_level=None``); the writer
    issues ``BEGIN IMMEDIATE`` / ``COMMIT`` itself. Nothing else may use it
    while the writer runs: the writer's drain holds the connection's thread.
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
        self._inbox: queue.SimpleQueue[_Item] = queue.SimpleQueue()
        self._room = asyncio.Semaphore(max_pending)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task[None] | None = None
        self._stop_sent = False
        self._stopped = False  # nothing reads the inbox any more (loop side)
        self._failure: BaseException | None = None
        # Written by the drain (the connection's thread), read on the loop.
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
        return self._inbox.qsize()

    def start(self) -> None:
        """Start the writer; the caller owns it through ``stop()``."""
        if self._task is not None:
            raise RuntimeError("writer already started")
        self._loop = asyncio.get_running_loop()
        self._task = asyncio.create_task(self._own(), name=f"store-writer {self._path.name}")

    async def submit(self, batch: EncodedBatch) -> frozenset[str]:
        """Commit ``batch`` with whatever else is pending; return its duplicate exec ids.

        Await while ``max_pending`` batches wait. Raise ``StoreWriteError``
        when the transaction fails or the writer is gone. Once queued, a batch
        is committed even if the caller is cancelled.
        """
        future: asyncio.Future[frozenset[str]] = await self._enqueue()
        self._inbox.put(_Pending(batch, future))
        return await future

    async def call(self, work: Callable[[sqlite3.Connection], _T]) -> _T:
        """Run ``work(connection)`` on the write connection after what is queued; return it.

        For what only the write connection may do (tests that play a full disk).
        """
        future: asyncio.Future[object] = await self._enqueue()
        self._inbox.put(_Call(work, future))
        return cast(_T, await future)

    async def _enqueue(self) -> asyncio.Future[Any]:
        """Wait for room; return the future of an item the caller queues at once.

        Nothing awaits between the last check and the caller's ``put``: the
        owner marks the writer stopped (and fails what the inbox still holds)
        on the loop, so an item is either drained or failed, never stranded.
        """
        self._raise_if_gone()
        await self._room.acquire()
        try:
            self._raise_if_gone()
        except BaseException:
            self._room.release()
            raise
        return asyncio.get_running_loop().create_future()

    async def stop(self) -> None:
        """Commit everything queued so far, then stop the writer and wait for it."""
        if self._task is None:
            return
        if not self._stop_sent:
            self._stop_sent = True
            self._inbox.put(None)
        # Not ``await self._task``: a writer cancelled under the store (a loop shutting
        # down) must not make close() look cancelled; its failure is recorded.
        await asyncio.wait([self._task])

    def _raise_if_gone(self) -> None:
        if self._failure is not None:
            raise StoreWriteError(
                f"store {self._path} writer died ({self._failure!r}); nothing more can be stored"
            ) from self._failure
        if self._stopped or self._stop_sent:
            raise StoreWriteError(f"store {self._path} writer has stopped")

    # -- the loop side: the owner task -------------------------------------------

    async def _own(self) -> None:
        """Hold the connection's thread for the drain until it stops; then fail leftovers."""
        try:
            await _on_connection_thread(self._conn, self._drain)
        except asyncio.CancelledError:
            self._failure = asyncio.CancelledError("store writer cancelled")
            self._stopped = True
            self._fail_leftovers()
            self._inbox.put(None)  # the drain still runs: it stops after what it took
            raise
        except Exception as exc:
            if self._failure is None:  # not the drain's own death, which it reported
                self._failure = exc
                _log.critical("store %s writer died; commits will fail", self._path, exc_info=exc)
        self._stopped = True
        self._fail_leftovers()

    def _fail_leftovers(self) -> None:
        while True:
            try:
                item = self._inbox.get_nowait()
            except queue.Empty:
                return
            if item is not None:
                self._room.release()
                message = f"store {self._path} writer stopped"
                _settle(item.future, None, _write_error(message, self._failure))

    def _post(self, group: Sequence[_Pending | _Call], results: Sequence[object]) -> None:
        """From the drain: answer ``group`` (a result or a ``_Raised`` each) in one callback."""
        for item in group:
            item.posted = True
        loop = self._loop
        assert loop is not None
        with contextlib.suppress(RuntimeError):  # the loop is gone: nobody waits any more
            loop.call_soon_threadsafe(self._answer, group, results)

    def _answer(self, group: Sequence[_Pending | _Call], results: Sequence[object]) -> None:
        """On the loop: settle each waiter of ``group`` and give its room back."""
        for item, result in zip(group, results, strict=True):
            self._room.release()
            if isinstance(result, _Raised):
                _settle(item.future, None, result.error)
            else:
                _settle(item.future, result, None)

    # -- the connection's thread: the drain ----------------------------------------

    def _drain(self, conn: sqlite3.Connection) -> None:
        """Commit what arrives, group by group, until the stop item; checkpoint between."""
        inbox = self._inbox
        while True:
            taken: list[_Pending | _Call] = []
            item = inbox.get()
            while item is not None:
                taken.append(item)
                try:
                    item = inbox.get_nowait()
                except queue.Empty:
                    break
            try:
                self._work_through(conn, taken)
            except BaseException as exc:
                # A bug, not I/O: the writer is gone. Said before anyone hears of it.
                self._failure = exc
                _log.critical("store %s writer died; commits will fail", self._path, exc_info=exc)
                left = [t for t in taken if not t.posted]
                message = f"store {self._path} writer died: {exc!r}"
                self._post(left, [_Raised(_write_error(message, exc)) for _ in left])
                raise
            if item is None:
                return
            self._maybe_checkpoint(conn, busy=not inbox.empty())

    def _work_through(self, conn: sqlite3.Connection, taken: list[_Pending | _Call]) -> None:
        """Run ``taken`` in order: consecutive commits as one group, calls between groups."""
        group: list[_Pending] = []
        for item in taken:
            if isinstance(item, _Call):
                if group:
                    self._commit(conn, group)
                    self._maybe_checkpoint(conn, busy=True)
                    group = []
                self._call(conn, item)
            else:
                group.append(item)
        if group:
            self._commit(conn, group)

    def _call(self, conn: sqlite3.Connection, item: _Call) -> None:
        try:
            result: object = item.work(conn)
        except Exception as exc:
            result = _Raised(exc)
        self._post([item], [result])

    def _commit(self, conn: sqlite3.Connection, group: list[_Pending]) -> None:
        """Commit ``group`` in one transaction and post the answers.

        A failed transaction (``sqlite3.Error``) fails its waiters and marks
        the store unhealthy; anything else is raised to the drain, which fails
        them and stops the writer.
        """
        batches = [pending.batch for pending in group]
        try:
            duplicates = _transact(conn, batches, self._before_commit)
        except sqlite3.Error as exc:  # rolled back: nothing of it was stored
            message = f"store {self._path}: commit of {len(group)} batch(es) failed: {exc}"
            self._healthy = False  # before the waiters hear of it
            _log.error("%s; nothing of it was stored, store unhealthy", message)
            self._post(group, [_Raised(_write_error(message, exc)) for _ in group])
            return
        self._transactions += 1
        self._unchecked_pages += sum(_pages(b) for b in batches)
        if not self._healthy:
            _log.warning("store %s: commits succeed again, store healthy", self._path)
            self._healthy = True
        self._post(group, duplicates)

    def _maybe_checkpoint(self, conn: sqlite3.Connection, *, busy: bool) -> None:
        """Checkpoint the WAL after ~1,000 pages when nothing waits, ~4,000 when ``busy``.

        Runs after the group's answers were posted. A failed checkpoint (disk
        full) is logged once per failing streak and tried again after the next
        commit; it loses nothing: the WAL still holds every committed page.
        """
        if self._unchecked_pages < (_CHECKPOINT_PAGES_BUSY if busy else _CHECKPOINT_PAGES):
            return
        try:
            _checkpoint(conn)
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


class _Raised:
    """An exception to be raised in the waiter rather than returned to it."""

    __slots__ = ("error",)

    def __init__(self, error: BaseException) -> None:
        self.error = error


async def _on_connection_thread(
    conn: aiosqlite.Connection, work: Callable[[sqlite3.Connection], _T]
) -> _T:
    """Run ``work(connection)`` on ``conn``'s own thread (the writer's drain, for its life).

    aiosqlite's public methods each make one round trip to its thread per
    statement; the drain runs every transaction there itself. ``_execute`` is
    how those methods reach the thread; it is not public API, hence this one
    place.
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
