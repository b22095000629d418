"""Opening a store file: integrity check, corrupt file moved aside, WAL, schema, account.

The order matters. ``quick_check`` runs first, before anything writes. A file
that is not a database, or fails the check, is renamed (with its WAL) and a
fresh store is created in its place: recovery then proceeds from the broker
alone, and the finding goes back to the caller as a critical message. A
"database is locked" or "cannot open" error is *not* corruption and never
moves a file. A foreign SQLite file is refused before WAL mode is set, so
someone else's database is left exactly as it was.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

import aiosqlite

from persistence import files, schema
from persistence.protocol import StoreError

__all__ = ["open_reader", "open_writer"]

_log = logging.getLogger(__name__)

_BUSY_TIMEOUT_MS = 5_000
_WAL_SIZE_LIMIT = 64 * 1024 * 1024
_CORRUPTION = frozenset({sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB})


class _Corrupt(Exception):
    """``quick_check`` found damage."""


def _is_corruption(exc: BaseException) -> bool:
    if isinstance(exc, _Corrupt):
        return True
    code = getattr(exc, "sqlite_errorcode", None)
    return (
        isinstance(exc, sqlite3.DatabaseError)
        and isinstance(code, int)
        and (code & 0xFF) in _CORRUPTION
    )


async def close_quietly(conn: aiosqlite.Connection) -> None:
    """Close ``conn``, logging instead of raising (used on paths already failing)."""
    try:
        await conn.close()
    except Exception:
        _log.warning("closing a store connection failed", exc_info=True)


async def _connect(database: str | Path, *, uri: bool = False) -> aiosqlite.Connection:
    try:
        conn = await aiosqlite.connect(database, uri=uri, isolation_level=None)
    except sqlite3.Error as exc:
        raise StoreError(f"cannot open store {database}: {exc}") from exc
    try:
        await conn.execute_fetchall(f"PRAGMA busy_timeout = {_BUSY_TIMEOUT_MS}")
    except BaseException:
        await close_quietly(conn)
        raise
    return conn


async def _quick_check(conn: aiosqlite.Connection) -> None:
    found = [str(row[0]) for row in await conn.execute_fetchall("PRAGMA quick_check(20)")]
    if found != ["ok"]:
        raise _Corrupt("; ".join(found))


async def _use_wal(conn: aiosqlite.Connection, path: Path) -> None:
    rows = list(await conn.execute_fetchall("PRAGMA journal_mode = WAL"))
    mode = str(rows[0][0]).lower() if rows else "?"
    if mode != "wal":
        raise StoreError(f"store {path}: cannot switch to WAL (journal_mode is {mode})")
    await conn.execute("PRAGMA synchronous = FULL")
    # The writer checkpoints between commits, never inside one (writer.py).
    await conn.execute_fetchall("PRAGMA wal_autocheckpoint = 0")
    # After a burst (a 10,000-actor checkpoint) the WAL is truncated back to this size.
    await conn.execute_fetchall(f"PRAGMA journal_size_limit = {_WAL_SIZE_LIMIT}")


async def _open_once(
    path: Path, *, account_id: str, force_account: bool, now: Callable[[], datetime]
) -> aiosqlite.Connection:
    await asyncio.to_thread(files.prepare_file, path)
    problem = await asyncio.to_thread(files.header_problem, path)
    if problem is not None:
        raise _Corrupt(problem)
    conn = await _connect(path)
    try:
        await _quick_check(conn)
        await schema.refuse_foreign(conn, path=path)
        await _use_wal(conn, path)
        await schema.prepare(
            conn, path=path, account_id=account_id, force_account=force_account, now=now
        )
    except BaseException:
        await close_quietly(conn)
        raise
    await asyncio.to_thread(files.secure, path)
    return conn


async def open_writer(
    path: Path,
    *,
    account_id: str,
    force_account: bool,
    now: Callable[[], datetime],
    findings: list[str],
) -> aiosqlite.Connection:
    """Open, check and prepare ``path``; return the write connection (autocommit mode).

    A corrupt file is moved aside and replaced by a fresh store; the finding
    is appended to ``findings`` and logged CRITICAL. Raise ``StoreError`` when
    the file cannot be opened, is foreign, newer, or another account's.
    """
    try:
        return await _open_once(path, account_id=account_id, force_account=force_account, now=now)
    except BaseException as exc:
        if not _is_corruption(exc):
            if isinstance(exc, sqlite3.Error | OSError):
                raise StoreError(f"cannot open store {path}: {exc}") from exc
            raise
        damage = " ".join(str(exc).split())  # quick_check reports span lines
    try:
        moved = await asyncio.to_thread(files.move_aside, path, now())
    except OSError as exc:
        raise StoreError(
            f"store {path} is corrupt ({damage}) and cannot be moved aside: {exc}"
        ) from exc
    finding = (
        f"store {path} is corrupt ({_shorten(damage)}); moved it aside to {moved} and started "
        "an empty store: positions recover from the broker alone, local metadata is lost"
    )
    _log.critical("%s. Damage found: %s", finding, damage)
    findings.append(finding)
    try:
        return await _open_once(path, account_id=account_id, force_account=force_account, now=now)
    except (sqlite3.Error, OSError, _Corrupt) as exc:
        raise StoreError(f"cannot create a fresh store {path}: {exc}") from exc


def _shorten(text: str, limit: int = 300) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


async def open_reader(path: Path) -> aiosqlite.Connection:
    """Open a read-only connection to the (already prepared) store at absolute ``path``.

    Raise ``StoreError`` when it cannot be opened.
    """
    return await _connect(f"{path.as_uri()}?mode=ro", uri=True)
