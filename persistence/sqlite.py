"""``SqliteStore``: the ``Store`` protocol on one SQLite file per account.

Two connections, each on its own aiosqlite thread, so no query ever runs on
the event loop:

* the **write** connection belongs to the group-commit writer (writer.py) and
  nothing else;
* the **read** connection is read-only (``mode=ro``). In WAL mode readers do
  not wait for the writer's fsync and never see a group transaction that is
  still open (which a read slipped in between the writer's statements on the
  same connection would). Every read is one autocommit statement fetched to
  the end, so it sees everything committed before it started and never pins an
  old snapshot that would stop the WAL from being checkpointed. Backups
  (``VACUUM INTO``) and integrity checks run there too, off the write path.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import sqlite3
from collections.abc import Callable, Sequence
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any, TypeVar

import aiosqlite
import msgspec

from brokers.base import Execution
from persistence import files
from persistence.codec import (
    LIVE_INTENT_STATUSES,
    SELECT_QUARANTINED,
    SELECT_SNAPSHOTS,
    QuarantinedSnapshotRow,
    columns,
    decode_row,
    encode_batch,
    encode_time,
    quarantine_batch,
)
from persistence.opening import close_quietly, open_reader, open_writer
from persistence.protocol import (
    ClosedTradeRow,
    CommitResult,
    IntentRow,
    LoadedSnapshots,
    ReportRow,
    SessionRow,
    SnapshotRow,
    StoreError,
    StoreWriteError,
    Write,
)
from persistence.schema import META_TABLE, copy_into_backups
from persistence.writer import GroupCommitWriter

__all__ = ["SqliteStore", "open_store"]

_log = logging.getLogger(__name__)

_T = TypeVar("_T", bound=msgspec.Struct)

_ENCODE_ON_LOOP_MAX = 256


def _wall_clock() -> datetime:
    return datetime.now(UTC)


class _Lifecycle(enum.Enum):
    OPEN = "open"
    CLOSING = "closing"
    CLOSED = "closed"


async def open_store(
    path: Path,
    account_id: str,
    *,
    force_account: bool = False,
    backups_keep: int = 5,
    now: Callable[[], datetime] | None = None,
    before_commit: Callable[[], None] | None = None,
) -> SqliteStore:
    """Open (or create) the store of ``account_id`` at ``path`` and start its writer.

    The file is checked (``PRAGMA quick_check``); a corrupt one is moved aside
    to ``<name>.corrupt-<UTC timestamp>`` and replaced by an empty store, and
    the finding is in ``store.open_findings`` for the caller to alert on.
    ``now`` stamps quarantines and file names (default: the wall clock, UTC).
    ``before_commit`` runs inside every write transaction, after its statements
    and before ``COMMIT`` (the chaos harness's "mid-transaction" failpoint).

    Raise ``StoreError`` when the file cannot be opened, is a foreign SQLite
    database, has a newer schema than this code, or belongs to another account
    (unless ``force_account``, which rebinds it). Raise ``ValueError`` for an
    empty ``account_id`` or ``backups_keep < 1``.
    """
    if not account_id:
        raise ValueError("account_id must not be empty")
    if backups_keep < 1:
        raise ValueError(f"backups_keep must be at least 1, not {backups_keep}")
    clock = now or _wall_clock
    path = await asyncio.to_thread(Path(path).absolute)
    findings: list[str] = []
    writer = await open_writer(
        path, account_id=account_id, force_account=force_account, now=clock, findings=findings
    )
    try:
        reader = await open_reader(path)
    except BaseException:
        await close_quietly(writer)
        raise
    store = SqliteStore(
        path=path,
        account_id=account_id,
        writer=writer,
        reader=reader,
        backups_keep=backups_keep,
        now=clock,
        open_findings=findings,
        before_commit=before_commit,
    )
    store._writer.start()
    return store


class SqliteStore:
    """The durable store of one account in one SQLite file; create it with ``open_store``.

    ``open_findings`` holds critical messages from opening (a corrupt file
    moved aside); raise them as alerts. Close the store with ``close()``: its
    connection threads keep the process alive until then.
    """

    def __init__(
        self,
        *,
        path: Path,
        account_id: str,
        writer: aiosqlite.Connection,
        reader: aiosqlite.Connection,
        backups_keep: int,
        now: Callable[[], datetime],
        open_findings: list[str],
        before_commit: Callable[[], None] | None = None,
    ) -> None:
        self._path = path
        self._account_id = account_id
        self._write_conn = writer
        self._reader = reader
        self._writer = GroupCommitWriter(writer, path=path, before_commit=before_commit)
        self._backups_keep = backups_keep
        self._now = now
        self._state = _Lifecycle.OPEN
        self._closed = asyncio.Event()
        self._backup_lock = asyncio.Lock()
        self.open_findings = open_findings

    @property
    def account_id(self) -> str:
        return self._account_id

    @property
    def path(self) -> Path:
        return self._path

    @property
    def healthy(self) -> bool:
        """Return False after a failed commit (disk full, I/O error) until one succeeds."""
        return self._writer.healthy

    @property
    def transactions(self) -> int:
        """Return how many write transactions have committed since open."""
        return self._writer.transactions

    @property
    def pending_commits(self) -> int:
        """Return how many commits wait for the writer's next transaction."""
        return self._writer.pending

    def _require_open(self) -> None:
        if self._state is not _Lifecycle.OPEN:
            raise StoreError(f"store {self._path} is {self._state.value}")

    # -- writes ------------------------------------------------------------

    async def commit(self, writes: Sequence[Write]) -> CommitResult:
        """Make ``writes`` durable together, in one transaction, before returning.

        Concurrent commits share a transaction (group commit). Return the
        execution ids that were already stored and were skipped. Raise
        ``StoreWriteError`` when a write cannot be stored (naive time, NaN,
        unknown status) or the transaction fails (disk full, I/O error): then
        nothing of the batch is stored. Raise ``StoreError`` after ``close()``.
        """
        self._require_open()
        try:
            if len(writes) <= _ENCODE_ON_LOOP_MAX:
                batch = encode_batch(writes)
            else:  # a checkpoint of thousands of snapshots: ~3 us each, keep it off the loop
                batch = await asyncio.to_thread(encode_batch, tuple(writes))
        except (ValueError, TypeError) as exc:
            raise StoreWriteError(f"store {self._path}: batch refused: {exc}") from exc
        if not batch.ops:
            return CommitResult()
        duplicates = await self._writer.submit(batch)
        return CommitResult(duplicate_exec_ids=duplicates)

    async def quarantine_snapshot(self, symbol: str, reason: str) -> None:
        """Move ``symbol``'s snapshot to ``quarantined_snapshots`` with ``reason``.

        The symbol then starts fresh while the evidence is kept. Do nothing
        when it has no snapshot. Raise ``StoreWriteError`` when the move fails.
        """
        self._require_open()
        await self._writer.submit(quarantine_batch(symbol, reason, self._now()))
        _log.warning("store %s: snapshot of %s quarantined: %s", self._path, symbol, reason)

    async def bind_venue_account(
        self, number: str, *, force: bool = False, write: bool = True
    ) -> None:
        """Bind the store to the venue's own account number, or check it is the bound one.

        The file is named after the broker's account label, which can stand for
        more than one account (``alpaca-paper``: whichever the keys trade). The
        first connect records the number; a later one with another raises
        ``StoreError`` (its positions, history and attempt counts are another
        account's), unless ``force`` rebinds it (the operator's explicit choice).
        ``write=False`` (a dry run) only checks: nothing is bound. A failed write
        raises ``StoreWriteError``.
        """
        self._require_open()
        ((bound,),) = await self._select(f"SELECT venue_account FROM {META_TABLE} WHERE id = 1")
        if bound == number:
            return
        if bound is not None and not force:
            raise StoreError(
                f"store {self._path} belongs to venue account {bound}, but the broker now "
                f"trades account {number}; use another state dir, or force_account to rebind"
            )

        if not write:
            return

        def bind(conn: sqlite3.Connection) -> None:
            conn.execute(f"UPDATE {META_TABLE} SET venue_account = ?", (number,))

        try:
            await self._writer.call(bind)
        except sqlite3.Error as exc:
            raise StoreWriteError(f"store {self._path}: venue account not bound: {exc}") from exc
        if bound is None:
            _log.info("store %s bound to venue account %s", self._path, number)
        else:
            _log.warning(
                "store %s rebound from venue account %s to %s (forced)", self._path, bound, number
            )

    async def backup(self, reason: str) -> Path:
        """Copy the store to ``<dir>/backups/<name>-<UTC timestamp>.db``; return its path.

        The copy is a consistent snapshot (``VACUUM INTO``), flushed to disk and
        renamed into place only when whole; the newest ``backups_keep`` are
        kept. Raise ``StoreError`` when it cannot be made.
        """
        self._require_open()
        directory = self._path.parent / "backups"
        async with self._backup_lock:
            try:
                target = await copy_into_backups(
                    self._reader, directory, self._path.stem, self._now()
                )
                removed = await asyncio.to_thread(
                    files.prune_backups, directory, self._path.stem, self._backups_keep
                )
            except (sqlite3.Error, OSError) as exc:
                raise StoreError(f"store {self._path}: backup failed: {exc}") from exc
        _log.info(
            "store %s backed up to %s (%s); %d old backup(s) removed",
            self._path,
            target,
            reason,
            len(removed),
        )
        return target

    # -- reads -------------------------------------------------------------

    async def _select(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        self._require_open()
        try:
            rows = await self._reader.execute_fetchall(sql, params)
        except sqlite3.Error as exc:
            raise StoreError(f"store {self._path}: read failed: {exc}") from exc
        return [tuple(row) for row in rows]

    def _decode(self, row_type: type[_T], rows: list[tuple[Any, ...]]) -> list[_T]:
        try:
            return [decode_row(row_type, row) for row in rows]
        except msgspec.ValidationError as exc:
            raise StoreError(
                f"store {self._path}: unreadable {row_type.__name__} row: {exc}"
            ) from exc

    async def load_snapshots(self) -> LoadedSnapshots:
        """Return the latest snapshot of every symbol.

        A row that does not fit ``SnapshotRow`` is quarantined (logged CRITICAL)
        and left out. Raise ``StoreError`` when the store cannot be read.
        """
        rows = await self._select(SELECT_SNAPSHOTS)
        loaded: list[SnapshotRow] = []
        for row in rows:
            try:
                loaded.append(decode_row(SnapshotRow, row))
            except msgspec.ValidationError as exc:
                symbol = str(row[0])
                _log.critical(
                    "store %s: snapshot row of %s unreadable: %s", self._path, symbol, exc
                )
                try:
                    await self.quarantine_snapshot(symbol, f"unreadable snapshot row: {exc}")
                except StoreWriteError:
                    _log.exception("store %s: could not quarantine %s; skipped", self._path, symbol)
        return LoadedSnapshots(loaded)

    async def quarantined_snapshots(self) -> list[QuarantinedSnapshotRow]:
        """Return every quarantined snapshot, oldest first."""
        rows = await self._select(SELECT_QUARANTINED)
        return self._decode(QuarantinedSnapshotRow, rows)

    async def has_execution(self, exec_id: str) -> bool:
        """Return whether execution ``exec_id`` is stored."""
        rows = await self._select("SELECT 1 FROM executions WHERE exec_id = ?", (exec_id,))
        return bool(rows)

    async def executions(self, since: datetime | None = None) -> list[Execution]:
        """Return executions at or after ``since`` (all when None), oldest first.

        Raise ``ValueError`` when ``since`` is naive, ``StoreError`` when the
        store cannot be read.
        """
        sql = f"SELECT {columns(Execution)} FROM executions"
        params: tuple[str, ...] = ()
        if since is not None:
            sql += " WHERE ts >= ?"
            params = (encode_time(since),)
        return self._decode(Execution, await self._select(sql + " ORDER BY ts, rowid", params))

    async def pending_intents(self) -> list[IntentRow]:
        """Return intents still in flight (pending, sent, acked), oldest first."""
        marks = ", ".join("?" for _ in LIVE_INTENT_STATUSES)
        rows = await self._select(
            f"SELECT {columns(IntentRow)} FROM intents WHERE status IN ({marks}) "
            "ORDER BY created_at, rowid",
            LIVE_INTENT_STATUSES,
        )
        return self._decode(IntentRow, rows)

    async def closed_trades(self, since: date | None = None) -> list[ClosedTradeRow]:
        """Return closed trades of trading day ``since`` and later (all when None), by exit."""
        return await self._since_day(ClosedTradeRow, "closed_trades", since, "exit_at, rowid")

    async def session(self) -> SessionRow | None:
        """Return the session row of the latest trading day, or None."""
        rows = await self._select(
            f"SELECT {columns(SessionRow)} FROM sessions ORDER BY trading_day DESC LIMIT 1"
        )
        decoded = self._decode(SessionRow, rows)
        return decoded[0] if decoded else None

    async def sessions(self, since: date | None = None) -> list[SessionRow]:
        """Return the session rows of trading day ``since`` and later (all when None), by day."""
        return await self._since_day(SessionRow, "sessions", since, "trading_day")

    async def _since_day(
        self, row_type: type[_T], table: str, since: date | None, order: str
    ) -> list[_T]:
        """Return ``table``'s rows of trading day ``since`` and later (all when None)."""
        sql = f"SELECT {columns(row_type)} FROM {table}"
        params: tuple[str, ...] = ()
        if since is not None:
            sql += " WHERE trading_day >= ?"
            params = (since.isoformat(),)
        return self._decode(row_type, await self._select(f"{sql} ORDER BY {order}", params))

    async def reports(self, limit: int = 50) -> list[ReportRow]:
        """Return the latest ``limit`` reconciliation reports, newest first."""
        rows = await self._select(
            f"SELECT {columns(ReportRow)} FROM reports ORDER BY at DESC, id DESC LIMIT ?",
            (limit,),
        )
        return self._decode(ReportRow, rows)

    async def integrity_check(self) -> str:
        """Run ``PRAGMA integrity_check``; return ``"ok"`` or the problems found, one a line."""
        rows = await self._select("PRAGMA integrity_check")
        return "\n".join(str(row[0]) for row in rows)

    # -- lifecycle ---------------------------------------------------------

    async def close(self) -> None:
        """Commit what is pending, stop the writer, close both connections.

        Idempotent; a second caller waits for the first. Commits made after
        ``close()`` started raise ``StoreError``.
        """
        if self._state is not _Lifecycle.OPEN:
            await self._closed.wait()
            return
        self._state = _Lifecycle.CLOSING
        try:
            await self._writer.stop()
        finally:
            # Reader first: the last connection to close checkpoints and removes the
            # WAL, and only the writer may.
            await close_quietly(self._reader)
            await close_quietly(self._write_conn)
            self._state = _Lifecycle.CLOSED
            self._closed.set()
            _log.info("store %s closed", self._path)
