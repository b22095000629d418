"""Opening a store: corrupt files moved aside, foreign files and other accounts refused."""

from __future__ import annotations

import logging
import os
import sqlite3
from collections.abc import Callable
from pathlib import Path

import aiosqlite
import pytest

from persistence import (
    SCHEMA_VERSION,
    PutExecution,
    PutSnapshot,
    StoreError,
    open_store,
    opening,
    schema,
)
from tests.unit.persistence._store_kit import ACCOUNT, T0, StepClock, execution, snapshot


async def _store_with_rows(path: Path, n: int = 2000) -> None:
    store = await open_store(path, ACCOUNT)
    try:
        await store.commit([PutExecution(execution(f"e-{i:05d}")) for i in range(n)])
        await store.commit([PutSnapshot(snapshot())])
    finally:
        await store.close()


def _damage(path: Path, where: Callable[[int], tuple[int, bytes]]) -> bytes:
    """Overwrite part of ``path`` as ``where(size)`` says; return the damaged contents."""
    offset, garbage = where(path.stat().st_size)
    with path.open("r+b") as f:
        f.seek(offset)
        f.write(garbage)
    return path.read_bytes()


def _contents(path: Path) -> bytes:
    return path.read_bytes()


def _write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def _siblings(path: Path) -> list[str]:
    return sorted(p.name for p in path.parent.iterdir() if p.name != "backups")


@pytest.mark.parametrize(
    ("where", "damage"),
    [
        ("header", lambda size: (0, b"this is not sqlite")),
        ("middle-page", lambda size: (size // 2 - (size // 2) % 4096, b"\xa5" * 4096)),
        ("cell-pointers", lambda size: (size // 2 - (size // 2) % 4096 + 8, b"\x00\x01" * 4)),
    ],
)
async def test_corrupt_file_is_moved_aside_and_a_fresh_store_opens(
    store_path: Path,
    caplog: pytest.LogCaptureFixture,
    where: str,
    damage: Callable[[int], tuple[int, bytes]],
) -> None:
    await _store_with_rows(store_path)
    assert _siblings(store_path) == [store_path.name]  # the WAL was checkpointed at close
    damaged = _damage(store_path, damage)

    with caplog.at_level(logging.CRITICAL, logger="persistence.opening"):
        store = await open_store(store_path, ACCOUNT, now=StepClock())
    try:
        (finding,) = store.open_findings
        assert "corrupt" in finding
        assert "moved it aside" in finding
        assert finding in caplog.text
        assert await store.integrity_check() == "ok"
        assert await store.executions() == []
        await store.commit([PutExecution(execution("e-after"))])
        assert await store.has_execution("e-after")
    finally:
        await store.close()
    aside = store_path.with_name("paper.db.corrupt-20260105T143000.000000Z")
    assert _contents(aside) == damaged, where
    assert _siblings(store_path) == [store_path.name, aside.name]


async def test_junk_file_is_moved_aside_with_its_sidecars(store_path: Path) -> None:
    _write(store_path, os.urandom(10_000))
    _write(store_path.with_name("paper.db-wal"), b"stale wal")

    store = await open_store(store_path, ACCOUNT, now=lambda: T0)
    await store.close()

    assert len(store.open_findings) == 1
    assert _contents(store_path.with_name("paper.db.corrupt-20260105T143000.000000Z-wal")) == (
        b"stale wal"
    )


async def test_locked_store_is_refused_not_moved_aside(
    store_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    await _store_with_rows(store_path, n=10)
    monkeypatch.setattr(opening, "_BUSY_TIMEOUT_MS", 50)
    holder = sqlite3.connect(store_path, isolation_level=None)
    try:
        holder.execute("PRAGMA locking_mode = EXCLUSIVE")
        holder.execute("BEGIN EXCLUSIVE")
        holder.execute("DELETE FROM snapshots")
        with pytest.raises(StoreError, match="locked"):
            await open_store(store_path, ACCOUNT)
    finally:
        holder.execute("ROLLBACK")
        holder.close()

    assert _siblings(store_path) == [store_path.name]


async def test_foreign_sqlite_file_is_refused_and_left_untouched(store_path: Path) -> None:
    store_path.parent.mkdir(parents=True)
    with sqlite3.connect(store_path) as foreign:
        foreign.execute("CREATE TABLE orders (id INTEGER PRIMARY KEY, note TEXT)")
        foreign.execute("INSERT INTO orders (note) VALUES ('mine')")
    foreign.close()
    before = _contents(store_path)

    with pytest.raises(StoreError, match="not a stalwart store"):
        await open_store(store_path, ACCOUNT)

    assert _contents(store_path) == before
    assert _siblings(store_path) == [store_path.name]


async def test_newer_schema_is_refused_naming_both_versions(store_path: Path) -> None:
    await _store_with_rows(store_path, n=1)
    with sqlite3.connect(store_path) as raw:
        raw.execute("UPDATE stalwart_meta SET schema_version = 99")
    raw.close()

    with pytest.raises(StoreError, match=rf"schema version 99.*knows \({SCHEMA_VERSION}\)"):
        await open_store(store_path, ACCOUNT)


async def test_another_account_is_refused(store_path: Path) -> None:
    await _store_with_rows(store_path, n=1)

    with pytest.raises(
        StoreError, match=r"belongs to account PA-TEST-1, not LIVE-9; pass force_account"
    ):
        await open_store(store_path, "LIVE-9")


async def test_force_account_rebinds(store_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    await _store_with_rows(store_path, n=1)

    with caplog.at_level(logging.WARNING, logger="persistence.schema"):
        rebound = await open_store(store_path, "LIVE-9", force_account=True)
    await rebound.close()

    assert rebound.account_id == "LIVE-9"
    assert "rebound from account PA-TEST-1 to LIVE-9" in caplog.text
    again = await open_store(store_path, "LIVE-9")
    await again.close()
    with pytest.raises(StoreError, match="belongs to account LIVE-9"):
        await open_store(store_path, ACCOUNT)


def _prepare_args(path: Path) -> dict[str, object]:
    """The arguments of ``schema.prepare`` for ``path``, bound to the test account."""
    return {"path": path, "account_id": ACCOUNT, "force_account": False, "now": StepClock()}


async def test_the_venue_account_is_bound_at_the_first_connect_and_another_refused(
    store_path: Path,
) -> None:
    """A store named after a label (``alpaca-paper``) binds to the number the keys
    trade; keys of another account later are refused, the binding kept, unless forced."""
    store = await open_store(store_path, "alpaca-paper")
    try:
        await store.bind_venue_account("PA-999", write=False)  # a dry run binds nothing
        await store.bind_venue_account("PA-111")
        await store.bind_venue_account("PA-111")  # the same: nothing to say
        with pytest.raises(StoreError, match="venue account PA-111"):
            await store.bind_venue_account("PA-999", write=False)  # but still checks
    finally:
        await store.close()

    reopened = await open_store(store_path, "alpaca-paper")
    try:
        with pytest.raises(StoreError, match=r"venue account PA-111, but the broker now trades"):
            await reopened.bind_venue_account("PA-222")
        await reopened.bind_venue_account("PA-111")  # still bound to the first
        await reopened.bind_venue_account("PA-222", force=True)
        with pytest.raises(StoreError, match="venue account PA-222"):
            await reopened.bind_venue_account("PA-111")
    finally:
        await reopened.close()


async def test_a_version_2_store_migrates_and_binds_its_venue_account(store_path: Path) -> None:
    store_path.parent.mkdir(parents=True)
    async with aiosqlite.connect(store_path, isolation_level=None) as conn:
        kwargs = _prepare_args(store_path)
        v2 = schema.MIGRATIONS[:2]
        assert await schema.prepare(conn, migrations=v2, **kwargs) == 2  # type: ignore[arg-type]
    store = await open_store(store_path, ACCOUNT)
    try:
        await store.bind_venue_account("PA-1")
        with pytest.raises(StoreError):
            await store.bind_venue_account("PA-2")
    finally:
        await store.close()


async def _migrate(conn: aiosqlite.Connection, path: Path, *later: schema.Migration) -> int:
    """Prepare ``path`` with the released migrations and ``later`` ones after them."""
    return await schema.prepare(
        conn,
        path=path,
        account_id=ACCOUNT,
        force_account=False,
        now=StepClock(),
        migrations=(*schema.MIGRATIONS, *later),
    )


def _schema_copies(path: Path) -> list[Path]:
    backups = path.parent / "backups"
    return sorted(backups.glob(f"{path.stem}-schema*.db")) if backups.exists() else []


def _version_and_executions(path: Path) -> tuple[int, int]:
    with sqlite3.connect(path) as db:
        ((version,),) = db.execute("SELECT schema_version FROM stalwart_meta").fetchall()
        ((count,),) = db.execute("SELECT count(*) FROM executions").fetchall()
    return int(version), int(count)


async def test_a_store_is_copied_before_it_migrates_and_only_then(store_path: Path) -> None:
    """The copy is the way back to an older build, which refuses a newer schema."""
    await _store_with_rows(store_path, n=0)  # a new file migrates from 0: nothing to copy
    assert _schema_copies(store_path) == []
    await _store_with_rows(store_path, n=3)  # up to date: nothing to copy
    assert _schema_copies(store_path) == []

    later = SCHEMA_VERSION + 1
    step = schema.Migration(later, "notes", ("CREATE TABLE notes (body TEXT NOT NULL)",))
    async with aiosqlite.connect(store_path, isolation_level=None) as conn:
        assert await _migrate(conn, store_path, step) == later
        assert await _migrate(conn, store_path, step) == later

    (copy,) = _schema_copies(store_path)  # one copy, of the version before
    assert copy.name.startswith(f"{store_path.stem}-schema{SCHEMA_VERSION}-")
    assert _version_and_executions(copy) == (SCHEMA_VERSION, 3)
    assert copy.stat().st_mode & 0o777 == 0o600
    assert not list(copy.parent.glob("*.partial"))


async def test_a_migration_that_cannot_be_backed_up_changes_nothing(store_path: Path) -> None:
    await _store_with_rows(store_path, n=2)
    (store_path.parent / "backups").write_text("in the way")  # no backups directory possible
    later = SCHEMA_VERSION + 1
    step = schema.Migration(later, "notes", ("CREATE TABLE notes (body TEXT NOT NULL)",))
    async with aiosqlite.connect(store_path, isolation_level=None) as conn:
        with pytest.raises(StoreError, match=f"before migrating it from schema {SCHEMA_VERSION}"):
            await _migrate(conn, store_path, step)
    assert _version_and_executions(store_path) == (SCHEMA_VERSION, 2)


async def test_reopen_keeps_data_and_findings_stay_empty(store_path: Path) -> None:
    await _store_with_rows(store_path, n=3)

    store = await open_store(store_path, ACCOUNT)
    try:
        assert store.open_findings == []
        assert len(await store.executions()) == 3
    finally:
        await store.close()


async def test_a_later_migration_step_runs_once_and_moves_the_version(store_path: Path) -> None:
    await _store_with_rows(store_path, n=1)
    later = SCHEMA_VERSION + 1
    step = schema.Migration(later, "notes", ("CREATE TABLE notes (body TEXT NOT NULL)",))

    async with aiosqlite.connect(store_path, isolation_level=None) as conn:
        assert await _migrate(conn, store_path, step) == later
        assert await _migrate(conn, store_path, step) == later
        tables = [r[0] for r in await conn.execute_fetchall("SELECT name FROM sqlite_master")]

    assert "notes" in tables
    with pytest.raises(StoreError, match=f"schema version {later}"):
        await open_store(store_path, ACCOUNT)


async def test_a_failing_migration_leaves_the_file_as_it_was(store_path: Path) -> None:
    await _store_with_rows(store_path, n=1)
    broken = schema.Migration(
        SCHEMA_VERSION + 1, "broken", ("CREATE TABLE notes (x)", "THIS IS NOT SQL")
    )

    async with aiosqlite.connect(store_path, isolation_level=None) as conn:
        with pytest.raises(sqlite3.OperationalError):
            await _migrate(conn, store_path, broken)
        tables = [r[0] for r in await conn.execute_fetchall("SELECT name FROM sqlite_master")]
        ((version,),) = await conn.execute_fetchall("SELECT schema_version FROM stalwart_meta")

    assert "notes" not in tables
    assert version == SCHEMA_VERSION


def test_migration_steps_are_numbered_from_one() -> None:
    assert [m.version for m in schema.MIGRATIONS] == list(range(1, SCHEMA_VERSION + 1))
