"""Healing one symbol (``actors.heal``) on a real SQLite store: only a change is written.

The venue is ``bench._world.InstantVenue``, an in-process broker that answers at
once (its own book is not what is tested); the store is a real file.
"""

from __future__ import annotations

from datetime import timedelta

import msgspec

from actors.messages import FillAck, OnBar, OnExecution, Reconcile, ReconcileOutcome
from actors.position import PositionActor
from actors.snapshot import decode_snapshot, encode_snapshot
from actors.state import SCHEMA_VERSION
from bench._world import (
    DAY,
    CountingAlerts,
    InstantVenue,
    Member,
    context,
    population,
    ring_of,
)
from brokers.base import Bar, BrokerPosition, Execution, OrderStatus, Side
from persistence import PutIntent, SnapshotRow, SqliteStore
from runtime.clock import TradingCalendar
from runtime.supervision import Supervisor

LAST_OPEN = TradingCalendar().open_of(DAY) + timedelta(hours=2)


def _venue_holding(member: Member) -> InstantVenue:
    venue = InstantVenue()
    venue.market_time = LAST_OPEN + timedelta(minutes=1)
    stop = member.held.stop
    venue.orders[stop.order_id] = stop
    venue.by_client[stop.client_order_id] = stop.order_id
    return venue


def _actor(
    store: SqliteStore,
    venue: InstantVenue,
    member: Member,
    alerts: CountingAlerts | None = None,
) -> PositionActor:
    state = member.held.state
    blob = encode_snapshot(state, ring_of(member))
    row = SnapshotRow(member.symbol, blob, SCHEMA_VERSION, state.seq, LAST_OPEN)
    return PositionActor(member.symbol, context(store, venue, alerts=alerts), row)


def _boot_request(member: Member, position: BrokerPosition) -> Reconcile:
    return Reconcile(
        position=position,
        open_orders=(member.held.stop,),
        heal=True,
        dry_run=False,
        restore_stop=True,
        orphan_mode="adopt",
        mode="boot",
        executions=(member.held.entry,),
    )


async def test_a_symbol_that_agrees_with_the_broker_writes_nothing(store: SqliteStore) -> None:
    (member,) = population(1, LAST_OPEN, templates=1)
    venue = _venue_holding(member)
    async with Supervisor(name="test") as sup:
        actor = _actor(store, venue, member)
        await sup.start(actor)
        before, transactions = actor.state, store.transactions

        outcome = await actor.ask(_boot_request(member, member.held.position))

        assert isinstance(outcome, ReconcileOutcome)
        assert (outcome.finding, outcome.actions, outcome.unprotected) == ("ok", (), False)
        assert actor.state == before
        assert store.transactions == transactions
        assert (await store.load_snapshots()).rows == []


async def test_a_drift_is_written_before_the_stop_follows_it(store: SqliteStore) -> None:
    (member,) = population(1, LAST_OPEN, templates=1)
    venue = _venue_holding(member)
    smaller = msgspec.structs.replace(member.held.position, qty=60.0)
    async with Supervisor(name="test") as sup:
        actor = _actor(store, venue, member)
        await sup.start(actor)
        transactions = store.transactions

        outcome = await actor.ask(_boot_request(member, smaller))

        assert isinstance(outcome, ReconcileOutcome)
        assert outcome.finding == "drift"
        assert actor.state.qty == 60.0
        assert store.transactions > transactions
        (row,) = (await store.load_snapshots()).rows
        stored, _ = decode_snapshot(row.blob, row.schema_version, member.symbol, 240)
        assert stored.qty == 60.0, "the broker's quantity is durable"


async def test_a_stop_resized_to_a_drift_takes_its_intent_along(store: SqliteStore) -> None:
    """Recovery's resize writes the stop's intent with it; the stop's fill then settles it.

    A stale 100-share intent for the 60-share stop outlived the stop's whole fill,
    pending here and in the store with the position flat.
    """
    (member,) = population(1, LAST_OPEN, templates=1)
    venue = _venue_holding(member)
    await store.commit([PutIntent(row) for row in member.held.intents])
    smaller = msgspec.structs.replace(member.held.position, qty=60.0)
    stop = member.held.stop
    async with Supervisor(name="test") as sup:
        actor = _actor(store, venue, member)
        await sup.start(actor)

        await actor.ask(_boot_request(member, smaller))

        assert venue.orders[stop.order_id].qty == 60.0
        intent = actor.state.intent(stop.client_order_id)
        assert intent is not None
        assert intent.qty == 60.0
        (row,) = await store.pending_intents()
        assert (row.client_order_id, row.qty) == (stop.client_order_id, 60.0)

        ack = await actor.ask(
            OnExecution(
                Execution(
                    exec_id="S-1",
                    order_id=stop.order_id,
                    client_order_id=stop.client_order_id,
                    symbol=member.symbol,
                    side=Side.SELL,
                    qty=60.0,
                    price=stop.stop_price or 0.0,
                    ts=venue.market_time,
                )
            )
        )

        assert isinstance(ack, FillAck)
        assert ack.applied
        assert actor.state.is_flat
        assert actor.state.intents == ()
        assert await store.pending_intents() == []


async def test_a_drift_to_the_other_side_drops_the_old_sides_plan_and_stop(
    store: SqliteStore,
) -> None:
    """The broker holds the other side: the long's targets, stop and stop price are void.

    Kept, the long's targets read for the short were reached at once (a "target"
    exit on the next bar), its stop price was restored as the short's stop (a buy
    stop under the market, filling at once), and its sell stop, resized, would add
    to the short. Now the short rests unprotected, alerted, and the sell stop goes.
    """
    (member,) = population(1, LAST_OPEN, templates=1)
    venue, alerts = _venue_holding(member), CountingAlerts()
    await store.commit([PutIntent(row) for row in member.held.intents])
    held = member.held
    assert held.state.targets, "the long has its targets"
    short = msgspec.structs.replace(held.position, qty=-40.0)
    stop = held.stop
    async with Supervisor(name="test") as sup:
        actor = _actor(store, venue, member, alerts)
        await sup.start(actor)

        outcome = await actor.ask(_boot_request(member, short))

        assert isinstance(outcome, ReconcileOutcome)
        assert outcome.finding == "drift"
        state = actor.state
        assert state.qty == -40.0
        assert (state.targets, state.planned_stop, state.stop) == ((), None, None)
        assert venue.orders[stop.order_id].status is OrderStatus.CANCELED
        assert venue.submitted == 0, "no stop placed at the long's stop price"
        assert state.intents == ()
        assert await store.pending_intents() == []
        assert alerts.kinds.get("unprotected") == 1
        last = ring_of(member).close(0)
        bar = Bar(
            symbol=member.symbol,
            ts=LAST_OPEN + timedelta(minutes=1),
            open=last,
            high=last * 1.001,
            low=last * 0.999,
            close=last,
            volume=1e3,
        )
        await actor.ask(OnBar(bar))
        assert venue.submitted == 0, "no exit on the long's targets"
        assert actor.state.intents == ()
