"""A stop the venue says filled, whose fill reaches us as several executions.

Real venues often deliver one order's fill in parts (a 100-share stop as 60 +
40), and the order's "filled" (an order update, or the answer to a lookup after
the venue refused to move or cancel the stop) may come before, between or after
them. The trader's expectation: every execution of the stop is booked as the
stop's (exit reason stop), once; the stop and its intent are settled when the
executions applied account for what the venue says filled; a stop that filled
is never moved or canceled again; and a position the fill leaves open is
flagged unprotected after the last execution, not in between. A crash between
the executions recovers the same.

The venue is ``bench._world.InstantVenue`` (``fill_resting`` fills a resting
order in parts; a filled order cannot be replaced or canceled); the store is a
real file.
"""

from __future__ import annotations

from datetime import timedelta

import msgspec
import pytest

from actors.bars import BarRing
from actors.messages import (
    FillAck,
    FlattenNow,
    OnBar,
    OnExecution,
    OnOrderUpdate,
    Reconcile,
    ReconcileOutcome,
)
from actors.orders import intent_row
from actors.position import PositionActor
from actors.state import PositionState
from actors.strategy import Action, MoveStop, Session
from bench._world import CountingAlerts, InstantVenue, context
from brokers.base import Bar, BrokerPosition, Execution, Order, OrderStatus
from persistence import PutIntent, SnapshotRow, SqliteStore
from runtime.supervision import Supervisor
from tests.unit.actors._actor_kit import snapshot_row
from tests.unit.actors._filled_stop_kit import (
    ENTRY_PRICE,
    START,
    STOP_ID,
    STOP_PRICE,
    SYMBOL,
    held_under_stop,
)

# What must not be raised about our own stop's fill: it is neither a hand trade
# (zombie, drift, orphan) nor, while its executions arrive, unprotected.
NOISE = frozenset({"unprotected", "zombie", "drift", "orphan"})


class RecordingVenue(InstantVenue):
    """An ``InstantVenue`` that records every cancel and replace asked of it."""

    def __init__(self) -> None:
        super().__init__()
        self.cancels: list[str] = []
        self.replaces: list[str] = []

    async def cancel(self, order_id: str) -> None:
        self.cancels.append(order_id)
        await super().cancel(order_id)

    async def replace(self, order_id: str, *, stop_price: float, qty: float | None = None) -> Order:
        self.replaces.append(order_id)
        return await super().replace(order_id, stop_price=stop_price, qty=qty)


class MovesStopOnce:
    """A strategy that moves the stop up to break-even on its first bar, then holds."""

    name = "moves_stop_once"

    def __init__(self) -> None:
        self.moved = False

    def decide(
        self, state: PositionState, bars: BarRing, bar: Bar, session: Session
    ) -> list[Action]:
        if self.moved or state.stop is None:
            return []
        self.moved = True
        return [MoveStop(price=ENTRY_PRICE, qty=state.stop.qty)]


async def _world(
    store: SqliteStore, qty: float, stop_qty: float
) -> tuple[RecordingVenue, PositionState, str]:
    """Return the venue resting our stop, the state holding it (its intent stored) and its id."""
    state, resting = held_under_stop(qty, stop_qty)
    venue = RecordingVenue()
    venue.market_time = START
    venue.orders[resting.order_id] = resting
    venue.by_client[resting.client_order_id] = resting.order_id
    intent = state.intent(resting.client_order_id)
    assert intent is not None
    await store.commit([PutIntent(intent_row(SYMBOL, intent))])
    return venue, state, resting.client_order_id


def _actor(
    store: SqliteStore, venue: InstantVenue, row: SnapshotRow, alerts: CountingAlerts
) -> PositionActor:
    return PositionActor(SYMBOL, context(store, venue, alerts=alerts), row, MovesStopOnce())


async def _fill_at_the_venue(venue: InstantVenue, *parts: float) -> list[Execution]:
    """Fill our stop at the venue in ``parts``; return their executions (none delivered yet)."""
    price = STOP_PRICE
    executions = []
    for qty in parts:
        executions.append(await venue.fill_resting(STOP_ID, qty, price))
        price -= 0.1
    return executions


async def _told_filled(actor: PositionActor, venue: InstantVenue, how: str) -> None:
    """Let the actor learn that the stop filled at the venue, the way ``how`` names."""
    order = venue.orders[STOP_ID]
    assert order.status is OrderStatus.FILLED
    if how == "refused move":  # the strategy moves the stop; the venue refuses: filled
        bar = Bar(SYMBOL, START + timedelta(minutes=1), 95.0, 95.2, 94.8, 95.0, 1e3)
        await actor.ask(OnBar(bar))
    elif how == "refused cancel":  # an exit cancels the stop first; the venue refuses
        await actor.ask(FlattenNow("eod"))
    elif how == "order update":
        await actor.ask(OnOrderUpdate(order))
    elif how == "order update without qty":  # a venue that says filled, not how much
        await actor.ask(OnOrderUpdate(msgspec.structs.replace(order, filled_qty=0.0)))
    else:
        raise AssertionError(how)


def _noise(alerts: CountingAlerts) -> dict[str, int]:
    return {kind: n for kind, n in alerts.kinds.items() if kind in NOISE}


async def _assert_booked_as_the_stops(
    actor: PositionActor, store: SqliteStore, cid: str, executions: list[Execution]
) -> None:
    """Assert the position is flat, closed by the stop's executions, each booked once."""
    state = actor.state
    assert state.is_flat
    assert state.stop is None
    assert state.intent(cid) is None
    assert await store.pending_intents() == []
    (trade,) = await store.closed_trades()
    assert trade.exit_reason == "stop"
    assert trade.qty == 100.0
    total = sum(ex.qty * ex.price for ex in executions)
    assert trade.exit_price == pytest.approx(total / sum(ex.qty for ex in executions))
    stored = {ex.exec_id for ex in await store.executions()}
    assert {ex.exec_id for ex in executions} <= stored


@pytest.mark.parametrize(
    "how", ["refused move", "refused cancel", "order update", "order update without qty"]
)
async def test_a_filled_stop_delivered_as_two_executions_is_booked_as_the_stops(
    store: SqliteStore, how: str
) -> None:
    """Long 100 under a 100-share stop that fills as 60 + 40; we hear "filled" first."""
    venue, state, cid = await _world(store, 100.0, 100.0)
    alerts = CountingAlerts()
    async with Supervisor(name="test") as sup:
        actor = _actor(store, venue, snapshot_row(state, START), alerts)
        await sup.start(actor)
        first, second = await _fill_at_the_venue(venue, 60.0, 40.0)

        await _told_filled(actor, venue, how)

        stop = actor.state.stop
        assert stop is not None
        assert (stop.status, stop.qty, stop.filled_qty) == ("filled", 100.0, 0.0)
        assert venue.submitted == 0, "no exit: the stop's fill settles the position"

        ack = await actor.ask(OnExecution(first))

        assert isinstance(ack, FillAck)
        assert (ack.applied, ack.external) == (True, None)
        assert actor.state.qty == 40.0
        assert [p.reason for p in actor.state.partials] == ["stop"]
        stop = actor.state.stop
        assert stop is not None, "40 of the stop's fill are still to come"
        assert (stop.status, stop.qty, stop.filled_qty) == ("filled", 40.0, 60.0)
        intent = actor.state.intent(cid)
        assert intent is not None
        assert (intent.qty, intent.filled_qty) == (100.0, 60.0)
        assert [r.client_order_id for r in await store.pending_intents()] == [cid]
        assert _noise(alerts) == {}

        ack = await actor.ask(OnExecution(second))

        assert isinstance(ack, FillAck)
        assert (ack.applied, ack.external) == (True, None)
        await _assert_booked_as_the_stops(actor, store, cid, [first, second])
        again = await actor.ask(OnExecution(first))
        assert isinstance(again, FillAck)
        assert not again.applied, "each execution is booked once"
        assert _noise(alerts) == {}
        assert len(venue.cancels) + len(venue.replaces) <= 1, "refused once, never asked again"


@pytest.mark.parametrize(
    "order",
    [("update", "first", "second"), ("first", "update", "second"), ("first", "second", "update")],
    ids=["update-first", "update-between", "update-last"],
)
async def test_the_orders_filled_update_and_its_executions_in_any_order(
    store: SqliteStore, order: tuple[str, str, str]
) -> None:
    """Each step, a flatten (the strategy's end of day) may follow: a stop the venue said
    filled is not canceled, and no exit is sent while its executions are still to come."""
    venue, state, cid = await _world(store, 100.0, 100.0)
    alerts = CountingAlerts()
    async with Supervisor(name="test") as sup:
        actor = _actor(store, venue, snapshot_row(state, START), alerts)
        await sup.start(actor)
        first, second = await _fill_at_the_venue(venue, 60.0, 40.0)
        update = OnOrderUpdate(venue.orders[STOP_ID])
        told = False

        for step in order:
            if step == "update":
                await actor.ask(update)
                told = True
                stop = actor.state.stop
                if stop is not None:  # what of the venue's fill is still to come
                    assert (stop.status, stop.order_qty) == ("filled", 100.0)
            else:
                ack = await actor.ask(OnExecution(first if step == "first" else second))
                assert isinstance(ack, FillAck)
                assert (ack.applied, ack.external) == (True, None)
            if told:
                await actor.ask(FlattenNow("eod"))
                assert venue.cancels == [], "a stop the venue said filled is not canceled"
                assert venue.submitted == 0, "nor is an exit sent on top of its fill"
            if not actor.state.is_flat:
                assert _noise(alerts) == {}

        await _assert_booked_as_the_stops(actor, store, cid, [first, second])
        assert _noise(alerts) == {}


@pytest.mark.parametrize(("held", "left"), [(50.0, -50.0), (120.0, 20.0)])
async def test_a_position_the_filled_stop_leaves_open_is_unprotected_after_its_last_execution(
    store: SqliteStore, held: float, left: float
) -> None:
    """The stop (100) did not match the position (a resize that never got through): 50
    held, its fill flips to 50 short; 120 held, 20 stay long. Either way the position is
    unprotected once the whole fill is in, and not before, and the stop's remainder
    is booked in order as the stop's (it is ours, not a hand trade)."""
    venue, state, cid = await _world(store, held, 100.0)
    alerts = CountingAlerts()
    async with Supervisor(name="test") as sup:
        actor = _actor(store, venue, snapshot_row(state, START), alerts)
        await sup.start(actor)
        first, second = await _fill_at_the_venue(venue, 60.0, 40.0)
        await _told_filled(actor, venue, "refused cancel")

        ack = await actor.ask(OnExecution(first))

        assert isinstance(ack, FillAck)
        assert (ack.applied, ack.external) == (True, None)
        assert actor.state.qty == held - 60.0
        assert actor.state.intent(cid) is not None, "40 of the stop are still to come"
        assert _noise(alerts) == {}, "not unprotected while its fill still arrives"
        assert venue.cancels == [STOP_ID], "refused once as filled: never canceled again"

        ack = await actor.ask(OnExecution(second))

        assert isinstance(ack, FillAck)
        assert (ack.applied, ack.external) == (True, None)
        assert actor.state.qty == left
        assert actor.state.stop is None
        assert actor.state.intent(cid) is None
        assert await store.pending_intents() == []
        assert _noise(alerts) == {"unprotected": 1}
        trades = await store.closed_trades()
        assert [t.exit_reason for t in trades] == (["stop"] if left < 0 else [])
        assert venue.cancels == [STOP_ID]


@pytest.mark.parametrize("how", ["order update", "refused cancel"])
async def test_a_crash_between_the_filled_stops_executions_recovers_the_same(
    store: SqliteStore, how: str
) -> None:
    """Killed after the first execution's commit: the boot replays the second, which is
    still the stop's, and the trade closes by the stop, not "externally"."""
    venue, state, cid = await _world(store, 100.0, 100.0)
    alerts = CountingAlerts()
    first, second = await _fill_at_the_venue(venue, 60.0, 40.0)
    async with Supervisor(name="first") as sup:
        actor = _actor(store, venue, snapshot_row(state, START), alerts)
        await sup.start(actor)
        await _told_filled(actor, venue, how)
        await actor.ask(OnExecution(first))
        # What a kill here leaves: the first fill's commit (snapshot and execution).
        (checkpoint,) = (await store.load_snapshots()).rows

    async with Supervisor(name="second") as sup:
        actor = _actor(store, venue, checkpoint, alerts)
        await sup.start(actor)
        ack = await actor.ask(OnExecution(second, replayed=True, act=False))
        outcome = await actor.ask(
            Reconcile(
                position=None,
                open_orders=(),
                heal=True,
                dry_run=False,
                restore_stop=True,
                orphan_mode="adopt",
                mode="boot",
                executions=(first, second),
                replay=(second,),
            )
        )

        assert isinstance(ack, FillAck)
        assert (ack.applied, ack.external) == (True, None)
        assert isinstance(outcome, ReconcileOutcome)
        assert (outcome.finding, outcome.unprotected) == ("ok", False)
        await _assert_booked_as_the_stops(actor, store, cid, [first, second])
        assert _noise(alerts) == {}


async def test_a_boot_that_cannot_replay_the_rest_of_a_filled_stop_past_zero_trusts_the_broker(
    store: SqliteStore,
) -> None:
    """50 held under a 100-share stop that filled 60 + 40 (a flip to 50 short); killed
    after the 60, and the venue's executions no longer hold the 40: the boot books the
    40 at the price the broker's record of the order gives, which makes the broker's 50
    short @ 94.92 (no drift left), settles the stop as filled, and flags the short
    unprotected. It places no stop at the old long stop's price (a buy stop at 95 for a
    short at 95)."""
    venue, state, cid = await _world(store, 50.0, 100.0)
    alerts = CountingAlerts()
    first, _ = await _fill_at_the_venue(venue, 60.0, 40.0)
    async with Supervisor(name="first") as sup:
        actor = _actor(store, venue, snapshot_row(state, START), alerts)
        await sup.start(actor)
        await _told_filled(actor, venue, "order update")
        await actor.ask(OnExecution(first))
        (checkpoint,) = (await store.load_snapshots()).rows
    assert alerts.kinds == {}

    async with Supervisor(name="second") as sup:
        actor = _actor(store, venue, checkpoint, alerts)
        await sup.start(actor)
        submitted = venue.submitted
        outcome = await actor.ask(
            Reconcile(
                position=BrokerPosition(SYMBOL, -50.0, 94.92),
                open_orders=(),
                heal=True,
                dry_run=False,
                restore_stop=True,
                orphan_mode="adopt",
                mode="boot",
                executions=(first,),
            )
        )

        assert isinstance(outcome, ReconcileOutcome)
        assert (outcome.finding, outcome.unprotected, outcome.missing_fill) == ("ok", True, True)
        assert actor.state.qty == -50.0
        assert actor.state.avg_price == pytest.approx(94.92)
        assert actor.state.stop is None
        assert actor.state.intent(cid) is None
        assert await store.pending_intents() == []
        assert venue.submitted == submitted, "no stop at the old side's price"
        assert alerts.kinds.get("unprotected") == 1
