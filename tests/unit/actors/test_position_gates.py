"""No entry while the actor is suspended or halted (issue 3), on a real store.

The same breakout bar is fed to a running, a suspended and a halted actor: the
running one writes the entry intent (attempt counted) and sends the order; the
suspended one records the bar and nothing else; the halted one refuses the bar
with a typed error. The venue is ``bench._world.InstantVenue`` (answers at once,
no I/O), the store a real SQLite file.
"""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest

from actors import model
from actors.bars import BarRing
from actors.messages import GetState, OnBar
from actors.position import PositionActor
from actors.snapshot import encode_snapshot
from actors.state import SCHEMA_VERSION, IntentKind, PositionState
from bench._world import ACCOUNT, BAR_SECONDS, DAY, CountingAlerts, InstantVenue, context
from brokers.base import Bar
from persistence import SnapshotRow, SqliteStore
from runtime.actor import ActorHalted, Lifecycle
from runtime.clock import TradingCalendar
from runtime.supervision import Supervisor

SYMBOL = "AAPL"
OPEN = TradingCalendar().open_of(DAY)
RESISTANCE = 100.0
WARM = 30  # bars before the breakout (the strategy wants 20)


def _bar(minute: int, close: float) -> Bar:
    ts = OPEN + timedelta(seconds=BAR_SECONDS * minute)
    return Bar(symbol=SYMBOL, ts=ts, open=close, high=close, low=close, close=close, volume=1e3)


def _breakout() -> Bar:
    return _bar(WARM, RESISTANCE + 0.5)


def _row() -> SnapshotRow:
    """A flat actor on DAY with its pivots set and 30 quiet bars below resistance."""
    state = PositionState(account=ACCOUNT, symbol=SYMBOL, trading_day=DAY)
    state = model.set_levels(state, DAY, {"resistance": RESISTANCE, "support": 95.0})
    ring = BarRing(SYMBOL, 240)
    for minute in range(WARM):
        assert ring.append(_bar(minute, RESISTANCE - 0.5))
    blob = encode_snapshot(state, ring)
    return SnapshotRow(SYMBOL, blob, SCHEMA_VERSION, state.seq, _bar(WARM - 1, 1.0).ts)


async def _started(
    sup: Supervisor, store: SqliteStore, venue: InstantVenue, at: datetime
) -> PositionActor:
    venue.market_time = at
    actor = PositionActor(SYMBOL, context(store, venue, alerts=CountingAlerts()), _row())
    await sup.start(actor)
    return actor


async def test_a_running_actor_enters_on_the_breakout(store: SqliteStore) -> None:
    """The control: the same bar does trade when nothing holds the actor back."""
    venue = InstantVenue()
    async with Supervisor(name="test") as sup:
        actor = await _started(sup, store, venue, _breakout().ts)
        await actor.tell(OnBar(_breakout()))
        await actor.ask(GetState())

        assert venue.submitted == 1
        assert list(actor.state.attempts.values()) == [1], "the attempt was counted"
        # No router here: the fill never comes back, so the entry stays in flight.
        assert [i.kind for i in actor.state.intents] == [IntentKind.ENTRY]


async def test_a_suspended_actor_records_the_bar_but_enters_nothing(store: SqliteStore) -> None:
    venue = InstantVenue()
    async with Supervisor(name="test") as sup:
        actor = await _started(sup, store, venue, _breakout().ts)
        actor.suspend()
        before = store.transactions

        await actor.tell(OnBar(_breakout()))
        await actor.ask(GetState())

        assert actor.lifecycle is Lifecycle.SUSPENDED
        assert venue.submitted == 0
        assert actor.state.is_flat
        assert actor.state.intents == ()
        assert not actor.state.attempts, "no attempt is spent while suspended"
        assert store.transactions == before, "nothing written ahead either"
        assert actor.bars.last_ts() == _breakout().ts.timestamp(), "the bar itself is kept"

        actor.resume()  # and once resumed, the next breakout trades
        await actor.tell(OnBar(_bar(WARM + 1, RESISTANCE - 0.5)))
        await actor.tell(OnBar(_bar(WARM + 2, RESISTANCE + 0.5)))
        await actor.ask(GetState())
        assert venue.submitted == 1


async def test_a_halted_actor_refuses_the_bar_and_enters_nothing(store: SqliteStore) -> None:
    venue = InstantVenue()
    async with Supervisor(name="test") as sup:
        actor = await _started(sup, store, venue, _breakout().ts)
        actor.transition(Lifecycle.HALTED)
        before = store.transactions

        with pytest.raises(ActorHalted):
            await actor.tell(OnBar(_breakout()))

        assert venue.submitted == 0
        assert actor.state.is_flat
        assert actor.state.intents == ()
        assert store.transactions == before
