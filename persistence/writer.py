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
* Statements run in the order the commits were made; only consecutive runs of
  the same statement are sent together (``executemany``). A quarantine followed
  by a fresh snapshot of the same symbol means what it says.
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
from collections.abc import Callable, Sequence
from pathlib import Path

import aiosqlite

from persistence.codec import EncodedBatch, Params
from persistence.protocol import StoreWriteError

__all__ = ["GroupCommitWriter"]

_log = logging.getLogger(__name__)

_IN_CHUNK = 500  # well under SQLite's host-parameter limit


class _Pending:
    __slots__ = ("batch", "future")

    def __init__(self, batch: EncodedBatch, future: asyncio.Future[frozenset[str]]) -> None:
        self.batch = batch
        self.future = future


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
        self._queue: asyncio.Queue[_Pending | None] = asyncio.Queue(max_pending)
        self._task: asyncio.Task[None] | None = None
        self._stopped = False
        self._failure: BaseException | None = None
        self._transactions = 0
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
                    group.append(item)
                    try:
                        item = self._queue.get_nowait()
                    except asyncio.QueueEmpty:
                        break
                if group:
                    await self._commit(group)
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
                if pending is not None:
                    _fail(pending, f"store {self._path} writer stopped", self._failure)

    async def _commit(self, group: list[_Pending]) -> None:
        try:
            await self._conn.execute("BEGIN IMMEDIATE")
            duplicates = await self._duplicates(group)
            for sql, rows in _runs(group):
                await self._conn.executemany(sql, rows)
            if self._before_commit is not None:
                self._before_commit()
            await self._conn.execute("COMMIT")
        except BaseException as exc:
            await self._rollback()
            message = f"store {self._path}: commit of {len(group)} batch(es) failed: {exc}"
            for pending in group:
                _fail(pending, message, exc)
            if not isinstance(exc, sqlite3.Error):
                raise
            _log.error("%s; nothing of it was stored, store unhealthy", message)
            self._healthy = False
            return
        self._transactions += 1
        if not self._healthy:
            _log.warning("store %s: commits succeed again, store healthy", self._path)
            self._healthy = True
        for pending, dups in zip(group, duplicates, strict=True):
            if not pending.future.done():
                pending.future.set_result(dups)

    async def _rollback(self) -> None:
        # SQLite may already have rolled back (SQLITE_FULL, SQLITE_IOERR); then
        # ROLLBACK fails with "no transaction is active", which is what we want.
        with contextlib.suppress(sqlite3.Error, ValueError):
            await self._conn.execute("ROLLBACK")

    async def _duplicates(self, group: Sequence[_Pending]) -> list[frozenset[str]]:
        """Return per batch the exec ids already stored or inserted earlier in the group."""
        wanted = list(dict.fromkeys(e for p in group for e in p.batch.exec_ids))
        if not wanted:
            return [frozenset()] * len(group)
        seen: set[str] = set()
        for start in range(0, len(wanted), _IN_CHUNK):
            chunk = wanted[start : start + _IN_CHUNK]
            marks = ", ".join("?" for _ in chunk)
            rows = await self._conn.execute_fetchall(
                f"SELECT exec_id FROM executions WHERE exec_id IN ({marks})", chunk
            )
            seen.update(str(row[0]) for row in rows)
        result: list[frozenset[str]] = []
        for pending in group:
            dups: set[str] = set()
            for exec_id in pending.batch.exec_ids:
                if exec_id in seen:
                    dups.add(exec_id)
                else:
                    seen.add(exec_id)
            result.append(frozenset(dups))
        return result


def _runs(group: Sequence[_Pending]) -> list[tuple[str, list[Params]]]:
    runs: list[tuple[str, list[Params]]] = []
    for pending in group:
        for sql, params in pending.batch.ops:
            if runs and runs[-1][0] == sql:
                runs[-1][1].append(params)
            else:
                runs.append((sql, [params]))
    return runs
