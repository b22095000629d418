"""Tables, forward migrations and the metadata that binds a file to its account.

``stalwart_meta`` (one row) records the account the file belongs to and the
schema version it is at. ``MIGRATIONS`` is the list of steps from version 0 (an
empty file) upward; ``prepare`` runs the missing ones at open. Everything
``prepare`` does happens in one ``BEGIN IMMEDIATE`` transaction: two processes
opening the same new file cannot both migrate it, and a failed step leaves the
file at the version it had.

To change the schema, append a ``Migration`` (never edit a released one).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path
from typing import NamedTuple

import aiosqlite

from persistence import files
from persistence.codec import encode_time
from persistence.protocol import StoreError

__all__ = [
    "META_TABLE",
    "MIGRATIONS",
    "SCHEMA_VERSION",
    "Migration",
    "copy_into_backups",
    "prepare",
    "refuse_foreign",
]

_log = logging.getLogger(__name__)

META_TABLE = "stalwart_meta"

_CREATE_META = f"""
CREATE TABLE {META_TABLE} (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    account_id TEXT NOT NULL,
    schema_version INTEGER NOT NULL,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
)"""


class Migration(NamedTuple):
    """One forward step: the statements that take a file to ``version``."""

    version: int
    summary: str
    statements: tuple[str, ...]


_V1 = Migration(
    1,
    "snapshots, executions, intents, closed trades, sessions, reports, quarantine",
    (
        """CREATE TABLE snapshots (
            symbol TEXT PRIMARY KEY NOT NULL,
            blob BLOB NOT NULL,
            schema_version INTEGER NOT NULL,
            seq INTEGER NOT NULL,
            taken_at TEXT NOT NULL
        )""",
        """CREATE TABLE executions (
            exec_id TEXT PRIMARY KEY NOT NULL,
            order_id TEXT NOT NULL,
            client_order_id TEXT NOT NULL,
            symbol TEXT NOT NULL,
            side TEXT NOT NULL CHECK (side IN ('buy', 'sell')),
            qty REAL NOT NULL,
            price REAL NOT NULL,
            ts TEXT NOT NULL
        )""",
        "CREATE INDEX executions_ts ON executions (ts)",
        """CREATE TABLE intents (
            client_order_id TEXT PRIMARY KEY NOT NULL,
            symbol TEXT NOT NULL,
            kind TEXT NOT NULL,
            side TEXT NOT NULL CHECK (side IN ('buy', 'sell')),
            qty REAL NOT NULL,
            price REAL,
            created_at TEXT NOT NULL,
            status TEXT NOT NULL CHECK (
                status IN ('pending', 'sent', 'acked', 'filled', 'canceled', 'rejected')
            ),
            order_id TEXT
        )""",
        "CREATE INDEX intents_status ON intents (status)",
        """CREATE TABLE closed_trades (
            trade_id TEXT PRIMARY KEY NOT NULL,
            symbol TEXT NOT NULL,
            side TEXT NOT NULL CHECK (side IN ('buy', 'sell')),
            qty REAL NOT NULL,
            entry_at TEXT,
            entry_price REAL NOT NULL,
            exit_at TEXT NOT NULL,
            exit_price REAL,
            realized_pnl REAL NOT NULL,
            mae REAL NOT NULL,
            mfe REAL NOT NULL,
            exit_reason TEXT NOT NULL,
            strategy TEXT NOT NULL,
            trading_day TEXT NOT NULL
        )""",
        "CREATE INDEX closed_trades_day ON closed_trades (trading_day)",
        """CREATE TABLE sessions (
            trading_day TEXT PRIMARY KEY NOT NULL,
            realized_pnl REAL NOT NULL,
            trades_today INTEGER NOT NULL
        )""",
        """CREATE TABLE reports (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            at TEXT NOT NULL,
            mode TEXT NOT NULL,
            body TEXT NOT NULL
        )""",
        "CREATE INDEX reports_at ON reports (at)",
        """CREATE TABLE quarantined_snapshots (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            symbol TEXT NOT NULL,
            blob BLOB NOT NULL,
            schema_version INTEGER NOT NULL,
            seq INTEGER NOT NULL,
            taken_at TEXT NOT NULL,
            reason TEXT NOT NULL,
            quarantined_at TEXT NOT NULL
        )""",
    ),
)

_V2 = Migration(
    2,
    "bar buffers in a table of their own (a fill's commit no longer rewrites them)",
    (
        """CREATE TABLE bar_buffers (
            symbol TEXT PRIMARY KEY NOT NULL,
            blob BLOB NOT NULL
        )""",
    ),
)

_V3 = Migration(
    3,
    "the venue's own account number, bound at the first connect (a label may be shared)",
    (f"ALTER TABLE {META_TABLE} ADD COLUMN venue_account TEXT",),
)

MIGRATIONS: tuple[Migration, ...] = (_V1, _V2, _V3)
SCHEMA_VERSION = MIGRATIONS[-1].version


async def _fetchall(
    conn: aiosqlite.Connection, sql: str, params: Sequence[object] = ()
) -> list[tuple[object, ...]]:
    return [tuple(row) for row in await conn.execute_fetchall(sql, params)]


async def prepare(
    conn: aiosqlite.Connection,
    *,
    path: Path,
    account_id: str,
    force_account: bool,
    now: Callable[[], datetime],
    migrations: Sequence[Migration] = MIGRATIONS,
) -> int:
    """Bind a new file to ``account_id``, check an existing one, run missing migrations.

    Return the schema version the file is at afterwards. Raise ``StoreError``
    when the file is someone else's SQLite database, when its schema is newer
    than ``migrations`` know, or when it belongs to another account and
    ``force_account`` is false. ``conn`` must be in autocommit mode.
    """
    _check_steps(migrations)
    known = migrations[-1].version if migrations else 0
    await _backup_before_migrating(conn, path=path, known=known, now=now)
    await conn.execute("BEGIN IMMEDIATE")
    try:
        version = await _bind(conn, path=path, account_id=account_id, now=now)
        if version > known:
            raise StoreError(
                f"store {path} has schema version {version}, newer than this code knows "
                f"({known}); upgrade stalwart to open it"
            )
        await _check_account(conn, path=path, account_id=account_id, force=force_account, now=now)
        for step in migrations:
            if step.version <= version:
                continue
            for statement in step.statements:
                await conn.execute(statement)
            await conn.execute(
                f"UPDATE {META_TABLE} SET schema_version = ?, updated_at = ?",
                (step.version, encode_time(now())),
            )
            _log.info("store %s migrated to schema %d: %s", path, step.version, step.summary)
            version = step.version
        await conn.execute("COMMIT")
    except BaseException:
        with contextlib.suppress(sqlite3.Error):
            await conn.execute("ROLLBACK")
        raise
    return version


async def copy_into_backups(
    conn: aiosqlite.Connection, directory: Path, stem: str, at: datetime
) -> Path:
    """Copy ``conn``'s database to ``directory/<stem>-<stamp>.db``; return the copy's path.

    The copy is a consistent snapshot (``VACUUM INTO``), written to a ``0600``
    partial file and renamed into place once flushed: a file with a backup's
    name is always whole. Raise what SQLite or the file system raised (nothing
    partial is left behind).
    """
    target, partial = await asyncio.to_thread(files.reserve_backup, directory, stem, at)
    try:
        await conn.execute_fetchall("VACUUM INTO ?", (str(partial),))
        await asyncio.to_thread(files.finish_backup, partial, target)
    except BaseException:
        await asyncio.to_thread(partial.unlink, missing_ok=True)
        raise
    return target


async def _backup_before_migrating(
    conn: aiosqlite.Connection, *, path: Path, known: int, now: Callable[[], datetime]
) -> Path | None:
    """Copy a store that is about to migrate to ``backups/<stem>-schema<N>-<stamp>.db``.

    A migration is one transaction, so a failed one changes nothing; the copy is
    for going back to a build that knows only schema ``N`` (a build refuses a
    newer schema). Only a store with a schema older than ``known`` is copied; the
    copy is not pruned with the periodic backups (its name differs). Raise
    ``StoreError`` when it cannot be made: nothing migrates without it.
    """
    rows = await _fetchall(
        conn, "SELECT name FROM sqlite_master WHERE type = 'table' AND name = ?", (META_TABLE,)
    )
    if not rows:
        return None  # a new file: nothing to keep
    rows = await _fetchall(conn, f"SELECT schema_version FROM {META_TABLE} WHERE id = 1")
    if not rows or not isinstance(rows[0][0], int) or not 0 < rows[0][0] < known:
        return None  # up to date, empty, newer or unreadable: prepare() says which
    version = rows[0][0]
    try:
        target = await copy_into_backups(
            conn, path.parent / "backups", f"{path.stem}-schema{version}", now()
        )
    except (sqlite3.Error, OSError) as exc:
        raise StoreError(
            f"store {path}: cannot back it up before migrating it from schema {version} "
            f"to {known} ({exc}); nothing was changed"
        ) from exc
    _log.warning(
        "store %s is at schema %d and will be migrated to %d; copy kept at %s "
        "(for going back to an older build)",
        path,
        version,
        known,
        target,
    )
    return target


def _check_steps(migrations: Sequence[Migration]) -> None:
    versions = [step.version for step in migrations]
    if versions != list(range(1, len(versions) + 1)):
        raise ValueError(f"migration versions must be 1..n in order, got {versions}")


async def refuse_foreign(conn: aiosqlite.Connection, *, path: Path) -> bool:
    """Return whether ``path`` is a stalwart store (False: an empty database).

    Raise ``StoreError`` when it holds tables but no ``stalwart_meta``: someone
    else's database, which must not be touched (not even its journal mode).
    """
    tables = {
        str(name)
        for (name,) in await _fetchall(
            conn, "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"
        )
    }
    if META_TABLE in tables:
        return True
    if tables:
        raise StoreError(
            f"{path} is an SQLite database but not a stalwart store "
            f"(tables: {', '.join(sorted(tables))}); refusing to touch it"
        )
    return False


async def _bind(
    conn: aiosqlite.Connection, *, path: Path, account_id: str, now: Callable[[], datetime]
) -> int:
    if not await refuse_foreign(conn, path=path):
        at = encode_time(now())
        await conn.execute(_CREATE_META)
        await conn.execute(
            f"INSERT INTO {META_TABLE} (id, account_id, schema_version, created_at, updated_at) "
            "VALUES (1, ?, 0, ?, ?)",
            (account_id, at, at),
        )
        _log.info("store %s created for account %s", path, account_id)
    rows = await _fetchall(conn, f"SELECT schema_version FROM {META_TABLE} WHERE id = 1")
    if not rows or not isinstance(rows[0][0], int):
        raise StoreError(f"store {path} has no readable schema version in {META_TABLE}")
    return rows[0][0]


async def _check_account(
    conn: aiosqlite.Connection,
    *,
    path: Path,
    account_id: str,
    force: bool,
    now: Callable[[], datetime],
) -> None:
    ((bound,),) = await _fetchall(conn, f"SELECT account_id FROM {META_TABLE} WHERE id = 1")
    if bound == account_id:
        return
    if not force:
        raise StoreError(
            f"store {path} belongs to account {bound}, not {account_id}; "
            "pass force_account to rebind"
        )
    await conn.execute(
        f"UPDATE {META_TABLE} SET account_id = ?, updated_at = ?",
        (account_id, encode_time(now())),
    )
    _log.warning("store %s rebound from account %s to %s (forced)", path, bound, account_id)
