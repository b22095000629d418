"""Checkpoints in waves (``actors.checkpoint``) on a real SQLite store.

The venue is ``bench._world.InstantVenue``, an in-process broker that answers at
once (a checkpoint never reaches the broker); the store is a real file, wrapped
to see how many snapshot commits are in flight at once.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from actors.checkpoint import checkpoint_all
from actors.messages import GetState, OnBar
from actors.position import PositionActor
from actors.snapshot import decode_snapshot, encode_snapshot
from actors.state import SCHEMA_VERSION
from bench._world import (
    ACCOUNT,
    BAR_SECONDS,
    DAY,
    InstantVenue,
    Member,
    context,
    population,
    ring_of,
)
from brokers.base import Bar
from persistence import CommitResult, PutSnapshot, SnapshotRow, SqliteStore, Write, open_store
from runtime.clock import TradingCalendar
from runtime.supervision import Supervisor

LAST_OPEN = TradingCalendar().open_of(DAY) + timedelta(hours=2)


class _WatchedStore(SqliteStore):
    """The real store; counts snapshot commits in flight and can hold one symbol's back."""

    in_flight = 0
    most_in_flight = 0
    held: str | None = None
    release: asyncio.Event | None = None

    async def commit(self, writes: Sequence[Write]) -> CommitResult:
        symbols = {w.row.symbol for w in writes if isinstance(w, PutSnapshot)}
        if not symbols:
            return await super().commit(writes)
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            if self.held in symbols and self.release is not None:
                await self.release.wait()
            return await super().commit(writes)
        finally:
            self.in_flight -= 1


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[_WatchedStore]:
    opened = await open_store(tmp_path / "checkpoint.db", ACCOUNT)
    opened.__class__ = _WatchedStore  # the store open_store made, with commit() watched
    assert isinstance(opened, _WatchedStore)
    try:
        yield opened
    finally:
        await opened.close()


def _loaded(store: SqliteStore, venue: InstantVenue, members: list[Member]) -> list[PositionActor]:
    """Return actors loaded from their checkpoints; the venue holds their stops."""
    ctx = context(store, venue)
    for m in members:
        venue.orders[m.held.stop.order_id] = m.held.stop
        venue.by_client[m.held.stop.client_order_id] = m.held.stop.order_id
    actors = []
    for m in members:
        blob = encode_snapshot(m.held.state, ring_of(m))
        row = SnapshotRow(m.symbol, blob, SCHEMA_VERSION, m.held.state.seq, LAST_OPEN)
        actors.append(PositionActor(m.symbol, ctx, row))
    return actors


def _next_bar(member: Member, ts: datetime) -> Bar:
    close = ring_of(member).close(0)
    return Bar(member.symbol, ts, close, close * 1.001, close * 0.999, close, 500.0)


async def _make_dirty(actors: list[PositionActor], members: list[Member]) -> None:
    ts = LAST_OPEN + timedelta(seconds=BAR_SECONDS)
    for actor, member in zip(actors, members, strict=True):
        await actor.tell(OnBar(_next_bar(member, ts)))
    for actor in actors:
        await actor.ask(GetState())


async def _stored_seqs(store: SqliteStore) -> dict[str, int]:
    rows = (await store.load_snapshots()).rows
    return {r.symbol: decode_snapshot(r.blob, r.schema_version, r.symbol, 240)[0].seq for r in rows}


async def test_every_dirty_actor_is_checkpointed_a_wave_at_a_time(store: _WatchedStore) -> None:
    members = population(23, LAST_OPEN, templates=4)
    venue = InstantVenue()
    venue.market_time = LAST_OPEN + timedelta(seconds=2 * BAR_SECONDS)
    async with Supervisor(name="test") as sup:
        actors = _loaded(store, venue, members)
        await sup.start_all(actors)
        await _make_dirty(actors, members)
        store.most_in_flight = 0

        missed = await checkpoint_all(actors, wave=5)

        assert missed == 0
        assert await _stored_seqs(store) == {a.symbol: a.state.seq for a in actors}
        assert 1 < store.most_in_flight <= 5


async def test_an_actor_that_is_not_dirty_writes_nothing(store: _WatchedStore) -> None:
    members = population(3, LAST_OPEN, templates=1)
    venue = InstantVenue()
    venue.market_time = LAST_OPEN + timedelta(seconds=2 * BAR_SECONDS)
    async with Supervisor(name="test") as sup:
        actors = _loaded(store, venue, members)
        await sup.start_all(actors)
        transactions = store.transactions

        assert await checkpoint_all(actors, wave=2) == 0

        assert store.transactions == transactions
        assert await checkpoint_all(actors, wave=2, force=True) == 0
        assert set(await _stored_seqs(store)) == {a.symbol for a in actors}


async def test_an_actor_that_cannot_commit_does_not_hold_back_the_next_waves(
    store: _WatchedStore,
) -> None:
    members = population(9, LAST_OPEN, templates=2)
    venue = InstantVenue()
    venue.market_time = LAST_OPEN + timedelta(seconds=2 * BAR_SECONDS)
    async with Supervisor(name="test") as sup:
        actors = _loaded(store, venue, members)
        await sup.start_all(actors)
        await _make_dirty(actors, members)
        store.held, store.release = members[1].symbol, asyncio.Event()

        # Patience for a wave of real commits on a loaded machine (0.05 s flaked); only
        # the wave holding the blocked actor waits it out.
        missed = await checkpoint_all(actors, wave=3, patience_s=1.0)

        assert missed == 1
        stored = await _stored_seqs(store)
        assert stored == {a.symbol: a.state.seq for a in actors} | {store.held: stored[store.held]}
        assert stored[store.held] < actors[1].state.seq
        # The held actor still has its Checkpoint and writes once the store lets it.
        store.release.set()
        await actors[1].ask(GetState())
        assert (await _stored_seqs(store))[store.held] == actors[1].state.seq
