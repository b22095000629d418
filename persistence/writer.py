"""The group-commit writer: the one owner of the store's write connection.

Why it is built this way:

* SQLite has one writer at a time, and with ``synchronous=FULL`` every commit
  costs an fsync (milliseconds). A transaction per fill would cap throughput at
  one fsync per write and queue concurrent actors behind each other's fsyncs.
  So ``submit`` queues a batch with a future, and the writer drains *every*
  pending batch into one transaction, commits once, then answers every waiter:
  N concurrent commits pay for one fsync.
* The writer is a thread of its own holding a plain ``sqlite3`` connection,
  fed by a ``queue.SimpleQueue``: a commit is one hand-off to the thread and
  one ``call_soon_threadsafe`` back per group, nothing else. No task sits in
  between and no statement makes its own round trip: each extra loop turn or
  hop waits for the GIL behind a busy loop, and that wait is the fill's
  latency. The thread blocks in C (queue, fsync) with the GIL released.
* A waiter is answered only after ``COMMIT`` returned: a fill acknowledged is a
  fill on disk. When the transaction fails it is rolled back and every waiter
  in it gets ``StoreWriteError``, so nothing of any of its batches is visible.
* A WAL checkpoint never delays the commit that crosses its threshold.
  SQLite's automatic checkpoint runs inside that ``COMMIT``: its waiters (and
  every fill queued behind them) wait for a copy of ~1,000 pages and an fsync
  of the database file. Here ``wal_autocheckpoint`` is off and the writer
  thread runs a ``PASSIVE`` checkpoint itself once ~1,000 pages were written,
  *after* answering the group and only when nothing is queued; under a load
  that never pauses it runs at ~4,000 pages regardless, so the WAL stays
  bounded. A checkpoint on another connection, beside the writer, was tried:
  it never catches up with a steady writer, so the WAL is never restarted and
  every commit grows the file (and an fsync that extends a file costs more).
* Batches arrive encoded (``codec.encode_batch`` runs in the caller), so a
  malformed write fails its own commit and cannot poison a group.
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
  with ``StoreWriteError``: nobody waits on a writer that is gone (the dead
  thread keeps answering its queue with that error until it is stopped).
* The thread is owned by the store: started by ``open_store``, stopped by
  ``close()`` through a sentinel queued behind what is pending, so close
  drains before it returns.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import sqlite3
import threading
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

from persistence.codec import INSERT_EXECUTION, EncodedBatch, Params
from persistence.protocol import StoreError, StoreWriteError

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
    """Run ``work(connection)`` on the writer thread, in order with the commits."""

    __slots__ = ("future", "work")

    def __init__(self, work: Callable[[sqlite3.Connection], Any], future: asyncio.Future[Any]):
        self.work = work
        self.future = future


_STOP = object()
_Item = _Pending | _Call | object


def _is_bug(exc: BaseException) -> bool:
    """Tell a bug or a vanished connection (stop the writer) from a failed transaction."""
    return not isinstance(exc, sqlite3.Error) or isinstance(
        exc, sqlite3.ProgrammingError | sqlite3.InterfaceError
    )


def _fail(pending: _Pending, message: str, cause: BaseException | None) -> None:
    if pending.future.done():
        return
    error = StoreWriteError(message)  # one instance per waiter: tracebacks must not pile up
    error.__cause__ = cause
    pending.future.set_exception(error)


def _settle(future: asyncio.Future[_T], result: _T) -> None:
    if not future.done():
        future.set_result(result)


def _settle_error(future: asyncio.Future[Any], exc: BaseException) -> None:
    if not future.done():
        future.set_exception(exc)


def _pages(batch: EncodedBatch) -> int:
    """Estimate the WAL pages ``batch`` writes (one per statement, plus its bytes)."""
    size = 0
    for _sql, params in batch.ops:
        size += _PAGE
        for value in params:
            if isinstance(value, bytes | str):
                size += len(value)
    return size // _PAGE


class GroupCommitWriter:
    """Own the store's write connection; commit queued batches in groups.

    ``connect()`` opens the connection (``opening.connect_writer``, with the
    automatic checkpoint off); it is called on the writer thread. Start with
    ``await start()``, stop with ``await stop()``.
    """

    def __init__(
        self,
        connect: Callable[[], sqlite3.Connection],
        *,
        path: Path,
        max_pending: int = 10_000,
        before_commit: Callable[[], None] | None = None,
    ) -> None:
        self._connect = connect
        self._before_commit = before_commit
        self._path = path
        self._inbox: queue.SimpleQueue[_Item] = queue.SimpleQueue()
        self._room = asyncio.Semaphore(max_pending)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._unchecked_pages = 0  # written since the last checkpoint (writer thread only)
        self._checkpoints = 0
        self._checkpoint_failing = 0
        self._done: asyncio.Future[None] | None = None
        self._drained: asyncio.Future[None] | None = None
        self._close_now = threading.Event()
        self._stopping = False
        self._failure: BaseException | None = None
        self._transactions = 0
        self._pending = 0
        self._healthy = True

    @property
    def transactions(self) -> int:
        """Return how many write transactions have committed."""
        return self._transactions

    @property
    def healthy(self) -> bool:
        """Return False after a failed transaction, until one commits again."""
        return self._healthy and self._failure is None

    @property
    def pending(self) -> int:
        """Return how many batches wait for (or are in) the next transaction."""
        return self._pending

    @property
    def checkpoints(self) -> int:
        """Return how many WAL checkpoints the writer has run."""
        return self._checkpoints

    async def start(self) -> None:
        """Open the connection on the writer thread and start it; raise ``StoreError`` if not."""
        if self._thread is not None:
            raise RuntimeError("writer already started")
        loop = asyncio.get_running_loop()
        self._loop = loop
        ready: asyncio.Future[None] = loop.create_future()
        done: asyncio.Future[None] = loop.create_future()
        drained: asyncio.Future[None] = loop.create_future()
        self._done, self._drained = done, drained
        self._thread = threading.Thread(
            target=self._serve,
            args=(ready, drained, done),
            name=f"store-writer {self._path.name}",
            daemon=True,
        )
        self._thread.start()
        await ready

    async def submit(self, batch: EncodedBatch) -> frozenset[str]:
        """Commit ``batch`` with whatever else is pending; return its duplicate exec ids.

        Await while ``max_pending`` batches wait. Raise ``StoreWriteError`` when
        the transaction fails or the writer is gone. Once queued, a batch is
        committed even if the caller is cancelled.
        """
        self._raise_if_gone()
        await self._room.acquire()
        try:
            # The writer may have stopped while we waited for room.
            self._raise_if_gone()
        except BaseException:
            self._room.release()
            raise
        future: asyncio.Future[frozenset[str]] = self._running_loop().create_future()
        self._pending += 1
        self._inbox.put(_Pending(batch, future))
        return await future

    async def call(self, work: Callable[[sqlite3.Connection], _T]) -> _T:
        """Run ``work(connection)`` on the writer thread after what is queued; return its result.

        For what only the write connection may do (tests that play a full disk).
        """
        self._raise_if_gone()
        future: asyncio.Future[_T] = self._running_loop().create_future()
        self._inbox.put(_Call(work, future))
        return await future

    async def stop(self, before_close: Callable[[], Awaitable[None]] | None = None) -> None:
        """Commit everything queued so far, then stop the writer thread and wait for it.

        ``before_close`` runs once everything is committed, before the writer
        closes its connection: the last
        connection to close checkpoints the WAL into the file and removes it,
        and that must be the writer's (the store's reader is read-only).
        """
        if self._thread is None or self._done is None or self._drained is None:
            return
        if not self._stopping:
            self._stopping = True
            self._inbox.put(_STOP)
        try:
            await asyncio.shield(self._drained)
            if before_close is not None:
                await before_close()
        finally:
            self._close_now.set()
            await asyncio.shield(self._done)

    def _running_loop(self) -> asyncio.AbstractEventLoop:
        if self._loop is None:
            raise RuntimeError("writer not started")
        return self._loop

    def _raise_if_gone(self) -> None:
        if self._failure is not None:
            raise StoreWriteError(
                f"store {self._path} writer died ({self._failure!r}); nothing more can be stored"
            ) from self._failure
        if self._stopping or self._thread is None:
            raise StoreWriteError(f"store {self._path} writer has stopped")

    # -- the writer thread ---------------------------------------------------------

    def _post(self, callback: Callable[..., None], *args: Any) -> bool:
        """Hand ``callback(*args)`` to the loop; False when the loop is gone."""
        try:
            self._running_loop().call_soon_threadsafe(callback, *args)
        except RuntimeError:  # loop closed without stopping the store: nobody is waiting
            return False
        return True

    def _serve(
        self, ready: asyncio.Future[None], drained: asyncio.Future[None], done: asyncio.Future[None]
    ) -> None:
        try:
            conn = self._connect()
        except BaseException as exc:
            error = StoreError(f"cannot open store {self._path} for writing: {exc}")
            error.__cause__ = exc
            self._post(_settle_error, ready, error)
            self._post(_settle, drained, None)
            self._post(_settle, done, None)
            return
        self._post(_settle, ready, None)
        dead: BaseException | None = None
        try:
            while True:
                items = [self._inbox.get()]
                while True:
                    try:
                        items.append(self._inbox.get_nowait())
                    except queue.Empty:
                        break
                at = 0
                while at < len(items):
                    item = items[at]
                    if item is _STOP:
                        rest = [p for p in items[at + 1 :] if isinstance(p, _Pending)]
                        if rest:
                            self._post(self._gone, rest, "stopped", dead)
                        if self._post(_settle, drained, None):
                            self._close_now.wait()
                        return
                    if isinstance(item, _Call):
                        at += 1
                        self._run_call(conn, item, dead)
                        continue
                    end = at
                    while end < len(items) and isinstance(items[end], _Pending):
                        end += 1
                    group = [p for p in items[at:end] if isinstance(p, _Pending)]
                    at = end
                    if dead is not None:
                        self._post(self._gone, group, "died", dead)
                        continue
                    dead = self._commit(conn, group)
                    if dead is None:
                        self._maybe_checkpoint(conn, busy=True)
                if dead is None and self._inbox.empty():
                    self._maybe_checkpoint(conn, busy=False)
        finally:
            with contextlib.suppress(sqlite3.Error):
                conn.close()
            self._post(_settle, drained, None)  # already settled unless the thread failed
            self._post(_settle, done, None)

    def _run_call(self, conn: sqlite3.Connection, item: _Call, dead: BaseException | None) -> None:
        if dead is not None:
            self._post(_settle_error, item.future, StoreWriteError(f"writer died ({dead!r})"))
            return
        try:
            result = item.work(conn)
        except BaseException as exc:
            self._post(_settle_error, item.future, exc)
        else:
            self._post(_settle, item.future, result)

    def _commit(self, conn: sqlite3.Connection, group: list[_Pending]) -> BaseException | None:
        """Commit ``group`` in one transaction; return the exception when the writer must die."""
        batches = [pending.batch for pending in group]
        try:
            duplicates = _transact(conn, batches, self._before_commit)
        except BaseException as exc:
            self._post(self._failed, group, exc)
            return exc if _is_bug(exc) else None
        self._post(self._committed, group, duplicates)
        self._unchecked_pages += sum(_pages(b) for b in batches)
        return None

    def _maybe_checkpoint(self, conn: sqlite3.Connection, *, busy: bool) -> None:
        """Checkpoint the WAL after ~1,000 pages when nothing waits, ~4,000 when ``busy``.

        The group that crossed the threshold has been answered already. A failed
        checkpoint (disk full) is logged and tried again after the next commit;
        it loses nothing, the WAL still holds every committed page.
        """
        pages = self._unchecked_pages
        if pages < (_CHECKPOINT_PAGES_BUSY if busy else _CHECKPOINT_PAGES):
            return
        try:
            conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
        except sqlite3.Error as exc:
            if self._checkpoint_failing < 1:  # once per failing streak: do not flood the log
                _log.error("store %s: WAL checkpoint failed: %s", self._path, exc)
            self._checkpoint_failing += 1
            return
        if self._checkpoint_failing:
            _log.warning("store %s: WAL checkpoints succeed again", self._path)
            self._checkpoint_failing = 0
        self._unchecked_pages = 0
        self._checkpoints += 1

    # -- back on the loop ------------------------------------------------------------

    def _settled(self, group: list[_Pending]) -> None:
        self._pending -= len(group)
        for _ in group:
            self._room.release()

    def _committed(self, group: list[_Pending], duplicates: list[frozenset[str]]) -> None:
        self._settled(group)
        self._transactions += 1
        if not self._healthy:
            _log.warning("store %s: commits succeed again, store healthy", self._path)
            self._healthy = True
        for pending, dups in zip(group, duplicates, strict=True):
            _settle(pending.future, dups)

    def _failed(self, group: list[_Pending], exc: BaseException) -> None:
        self._settled(group)
        message = f"store {self._path}: commit of {len(group)} batch(es) failed: {exc}"
        for pending in group:
            _fail(pending, message, exc)
        if _is_bug(exc):
            if self._failure is None:
                self._failure = exc
                _log.critical(
                    "store %s writer died; commits will fail",
                    self._path,
                    exc_info=(type(exc), exc, exc.__traceback__),
                )
            return
        _log.error("%s; nothing of it was stored, store unhealthy", message)
        self._healthy = False

    def _gone(self, group: list[_Pending], how: str, cause: BaseException | None) -> None:
        self._settled(group)
        for pending in group:
            _fail(pending, f"store {self._path} writer {how}", cause)


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
