"""Intent rows: ``PutIntent`` writes the row as given, in two statements.

The upsert leaves the status of a row it updates alone and the status is set
only where it differs, because SQLite rewrites the ``intents_status`` index
entry whenever the column is assigned: a stop resized by every fill would
otherwise write a page of that index per fill for nothing.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import msgspec

from persistence import PutIntent, SqliteStore
from tests.unit.persistence._store_kit import intent


async def test_put_intent_writes_the_row_as_given_whatever_was_stored(store: SqliteStore) -> None:
    first = intent("coid-1")  # pending
    await store.commit([PutIntent(first)])
    assert await store.pending_intents() == [first]

    acked = msgspec.structs.replace(first, status="acked", order_id="ord-1")
    await store.commit([PutIntent(acked)])
    assert await store.pending_intents() == [acked]

    resized = msgspec.structs.replace(acked, qty=25.0, price=186.5)  # same status
    await store.commit([PutIntent(resized)])
    assert await store.pending_intents() == [resized]

    filled = msgspec.structs.replace(resized, status="filled")
    await store.commit([PutIntent(filled)])
    assert await store.pending_intents() == []
    await store.commit([PutIntent(msgspec.structs.replace(filled, status="sent"))])
    (back,) = await store.pending_intents()
    assert back.status == "sent"  # as given: the store does not judge a status move


async def _wal_growth(store: SqliteStore, row: PutIntent) -> int:
    """Return how many bytes committing ``row`` appended to the WAL (never checkpointed here)."""
    size = await store._writer.call(_wal_size)
    await store.commit([row])
    return await store._writer.call(_wal_size) - size


def _wal_size(conn: sqlite3.Connection) -> int:
    (path,) = [str(f) for _, name, f in conn.execute("PRAGMA database_list") if name == "main"]
    return Path(f"{path}-wal").stat().st_size


async def test_a_rewrite_that_keeps_the_status_writes_no_page_of_the_status_index(
    store: SqliteStore,
) -> None:
    row = msgspec.structs.replace(intent("coid-1"), status="acked", order_id="ord-1")
    await store.commit([PutIntent(row)])
    ((page,),) = await store._writer.call(lambda c: c.execute("PRAGMA page_size").fetchall())

    kept = await _wal_growth(store, PutIntent(msgspec.structs.replace(row, qty=20.0)))
    moved = await _wal_growth(
        store, PutIntent(msgspec.structs.replace(row, qty=30.0, status="filled"))
    )

    assert moved - kept == page + 24  # one WAL frame: the index page the status moved in
