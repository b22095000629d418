"""A protective stop that fills in parts, as real venues (Alpaca, IBKR) may fill one.

The trader's expectation: after any partial fill of the stop, and any resize or
recovery after it, the stop resting at the venue covers exactly the open
position, its intent's qty and filled qty are the venue order's total and filled
qty, and nothing is counted twice. ``StopOrder.qty`` is the stop's open qty
(what it still covers); a replace sends the order's new total (filled + open).

The venue is ``bench._world.InstantVenue`` (``fill_resting`` fills part of the
stop; its ``replace`` refuses a total at or below the filled qty, as the sim
venue and the brokers do); the store is a real file.
"""

from __future__ import annotations

from datetime import timedelta

import msgspec
import pytest

from actors import model
from actors.bars import BarRing
from actors.messages import FillAck, OnBar, OnExecution, Reconcile, ReconcileOutcome
from actors.position import PositionActor
from actors.state import PositionState, StopOrder
from actors.strategy import Action, MoveStop, Session
from bench._world import ACCOUNT, DAY, CountingAlerts, InstantVenue, context
from brokers.base import (
    Bar,
    BrokerPosition,
    BrokerUnavailable,
    Execution,
    Order,
    OrderStatus,
    Side,
)
from persistence import SqliteStore
from runtime.clock import TradingCalendar
from runtime.supervision import Supervisor
from tests.unit.actors._actor_kit import snapshot_row

START = TradingCalendar().open_of(DAY) + timedelta(hours=1)
SYMBOL = "AAPL"
ENTRY_PRICE = 100.0
STOP_PRICE = 99.0


def _entry_in_flight() -> PositionState:
    """Return a flat state with a 100-share long entry out, its stop planned at 99."""
    state = PositionState(account=ACCOUNT, symbol=SYMBOL, trading_day=DAY)
    state, _ = model.begin_entry(
        state, day=DAY, pivot=100.0, side=Side.BUY, qty=100.0, now=START, max_attempts=2
    )
    return msgspec.structs.replace(state, targets=(102.0, 104.0), planned_stop=STOP_PRICE)


class MovesStopOnce:
    """A strategy that moves the stop once, to ``price`` for ``qty`` shares, then holds."""

    name = "moves_stop_once"

    def __init__(self, price: float, qty: float) -> None:
        self.move: list[Action] = [MoveStop(price=price, qty=qty)]

    def decide(
        self, state: PositionState, bars: BarRing, bar: Bar, session: Session
    ) -> list[Action]:
        move, self.move = self.move, []
        return move


def _actor(
    store: SqliteStore,
    venue: InstantVenue,
    state: PositionState,
    alerts: CountingAlerts,
    strategy: MovesStopOnce | None = None,
) -> PositionActor:
    venue.market_time = START
    return PositionActor(
        SYMBOL, context(store, venue, alerts=alerts), snapshot_row(state, START), strategy
    )


async def _start_long_100(sup: Supervisor, actor: PositionActor) -> tuple[StopOrder, str]:
    """Start ``actor``, fill its 100-share entry; return its stop and the stop's order id."""
    await sup.start(actor)
    intent = actor.state.intents[0]
    entry = Execution(
        "X-1", "BO-1", intent.client_order_id, SYMBOL, Side.BUY, 100.0, ENTRY_PRICE, START
    )
    ack = await actor.ask(OnExecution(entry))
    assert isinstance(ack, FillAck)
    assert ack.applied
    stop = actor.state.stop
    assert stop is not None
    assert stop.order_id is not None
    assert (stop.qty, stop.status) == (100.0, "live")
    return stop, stop.order_id


def _venue_stop(venue: InstantVenue, stop: StopOrder) -> Order:
    assert stop.order_id is not None
    return venue.orders[stop.order_id]


def _assert_covers(actor: PositionActor, venue: InstantVenue, total: float, filled: float) -> None:
    """Assert the stop at the venue, its intent and the state agree and cover the position."""
    stop = actor.state.stop
    assert stop is not None
    order = _venue_stop(venue, stop)
    held = abs(actor.state.qty)
    assert (order.qty, order.filled_qty) == (total, filled), "the venue's order"
    assert order.qty - order.filled_qty == pytest.approx(held), "the venue's stop covers it"
    intent = actor.state.intent(stop.client_order_id)
    assert intent is not None
    assert (intent.qty, intent.filled_qty) == (total, filled), "the intent is the venue's order"
    assert stop.qty == pytest.approx(held), "the stop's qty is what it still covers"
    assert stop.filled_qty == filled


async def _pending_intent_qty(store: SqliteStore, client_order_id: str) -> float:
    rows = {row.client_order_id: row for row in await store.pending_intents()}
    return rows[client_order_id].qty


async def test_a_partial_stop_fill_leaves_the_rest_of_the_stop_covering_the_position(
    store: SqliteStore,
) -> None:
    venue, alerts = InstantVenue(), CountingAlerts()
    async with Supervisor(name="test") as sup:
        actor = _actor(store, venue, _entry_in_flight(), alerts)
        stop, order_id = await _start_long_100(sup, actor)

        fill = await venue.fill_resting(order_id, 40.0, STOP_PRICE)
        ack = await actor.ask(OnExecution(fill))

        assert isinstance(ack, FillAck)
        assert ack.applied
        assert actor.state.qty == 60.0
        _assert_covers(actor, venue, total=100.0, filled=40.0)
        assert venue.replaced == 0, "the 60 resting already cover the 60 held"
        assert await _pending_intent_qty(store, stop.client_order_id) == 100.0
        assert "unprotected" not in alerts.kinds

        rest = await venue.fill_resting(order_id, 60.0, STOP_PRICE)
        await actor.ask(OnExecution(rest))

        assert actor.state.is_flat
        assert (actor.state.stop, actor.state.intents) == (None, ())
        assert "unprotected" not in alerts.kinds


async def test_a_stop_move_after_a_partial_fill_sends_the_orders_new_total(
    store: SqliteStore,
) -> None:
    """Long 100, 40 of the stop fill, the strategy moves the stop for 40 shares (a
    partial of 20 is to follow): the venue's order becomes 80 total, 40 filled."""
    venue, alerts = InstantVenue(), CountingAlerts()
    async with Supervisor(name="test") as sup:
        strategy = MovesStopOnce(price=ENTRY_PRICE, qty=40.0)
        actor = _actor(store, venue, _entry_in_flight(), alerts, strategy)
        stop, order_id = await _start_long_100(sup, actor)
        await actor.ask(OnExecution(await venue.fill_resting(order_id, 40.0, STOP_PRICE)))

        bar = Bar(SYMBOL, START + timedelta(minutes=1), 100.5, 100.6, 100.4, 100.5, 1e3)
        await actor.ask(OnBar(bar))

        order = _venue_stop(venue, stop)
        assert (order.qty, order.filled_qty, order.stop_price) == (80.0, 40.0, ENTRY_PRICE)
        moved = actor.state.stop
        assert moved is not None
        assert (moved.qty, moved.filled_qty, moved.price, moved.status) == (
            40.0,
            40.0,
            ENTRY_PRICE,
            "live",
        )
        intent = actor.state.intent(stop.client_order_id)
        assert intent is not None
        assert (intent.qty, intent.filled_qty, intent.price) == (80.0, 40.0, ENTRY_PRICE)
        assert await _pending_intent_qty(store, stop.client_order_id) == 80.0


async def test_a_hand_sell_after_a_partial_stop_fill_resizes_the_stop_to_what_is_left(
    store: SqliteStore,
) -> None:
    venue, alerts = InstantVenue(), CountingAlerts()
    async with Supervisor(name="test") as sup:
        actor = _actor(store, venue, _entry_in_flight(), alerts)
        stop, order_id = await _start_long_100(sup, actor)
        await actor.ask(OnExecution(await venue.fill_resting(order_id, 40.0, STOP_PRICE)))

        hand = Execution("H-1", "HO-1", "by-hand", SYMBOL, Side.SELL, 20.0, 100.2, START)
        await actor.ask(OnExecution(hand))

        assert actor.state.qty == 40.0
        _assert_covers(actor, venue, total=80.0, filled=40.0)
        assert await _pending_intent_qty(store, stop.client_order_id) == 80.0
        assert "unprotected" not in alerts.kinds


async def test_a_boot_after_a_partial_stop_fill_and_a_hand_sell_while_down_resizes_to_the_rest(
    store: SqliteStore,
) -> None:
    """Down while 40 of the stop filled and 20 were sold by hand: the boot replays both,
    and the stop's resize sends 80 (40 filled + the 40 held), which the venue takes."""
    venue, alerts = InstantVenue(), CountingAlerts()
    async with Supervisor(name="first") as sup:
        actor = _actor(store, venue, _entry_in_flight(), alerts)
        stop, order_id = await _start_long_100(sup, actor)
    (checkpoint,) = (await store.load_snapshots()).rows
    stop_fill = await venue.fill_resting(order_id, 40.0, STOP_PRICE)
    hand = Execution("H-1", "HO-1", "by-hand", SYMBOL, Side.SELL, 20.0, 100.2, START)

    async with Supervisor(name="second") as sup:
        actor = PositionActor(SYMBOL, context(store, venue, alerts=alerts), checkpoint)
        await sup.start(actor)
        for ex in (stop_fill, hand):
            await actor.ask(OnExecution(ex, replayed=True, act=False))
        outcome = await actor.ask(
            Reconcile(
                position=BrokerPosition(SYMBOL, 40.0, ENTRY_PRICE),
                open_orders=(_venue_stop(venue, stop),),
                heal=True,
                dry_run=False,
                restore_stop=True,
                orphan_mode="adopt",
                mode="boot",
                executions=(stop_fill, hand),
                replay=(stop_fill, hand),
            )
        )

        assert isinstance(outcome, ReconcileOutcome)
        assert actor.state.qty == 40.0
        _assert_covers(actor, venue, total=80.0, filled=40.0)
        assert await _pending_intent_qty(store, stop.client_order_id) == 80.0
        assert "unprotected" not in alerts.kinds


async def test_a_periodic_heal_that_sees_a_stop_fill_before_its_execution_counts_it_once(
    store: SqliteStore,
) -> None:
    """The open orders were read after 40 of the stop filled, the position before: the
    heal keeps the stop as its fills here say, and the fill, when it streams in, is
    counted once."""
    venue, alerts = InstantVenue(), CountingAlerts()
    async with Supervisor(name="test") as sup:
        actor = _actor(store, venue, _entry_in_flight(), alerts)
        stop, order_id = await _start_long_100(sup, actor)
        fill = await venue.fill_resting(order_id, 40.0, STOP_PRICE)

        outcome = await actor.ask(
            Reconcile(
                position=BrokerPosition(SYMBOL, 100.0, ENTRY_PRICE),
                open_orders=(_venue_stop(venue, stop),),
                heal=True,
                dry_run=False,
                restore_stop=True,
                orphan_mode="adopt",
                mode="periodic",
            )
        )
        assert isinstance(outcome, ReconcileOutcome)
        await actor.ask(OnExecution(fill))

        assert actor.state.qty == 60.0
        _assert_covers(actor, venue, total=100.0, filled=40.0)
        assert venue.replaced == 0
        assert await _pending_intent_qty(store, stop.client_order_id) == 100.0


class UnreachableOnReplace(InstantVenue):
    """A venue that cannot be reached for a replace: the stop stays as it rests."""

    async def replace(self, order_id: str, *, stop_price: float, qty: float | None = None) -> Order:
        raise BrokerUnavailable("venue unreachable (test)")


@pytest.mark.parametrize(("filled", "left"), [(50.0, 0.0), (80.0, -30.0)])
async def test_a_stop_fill_that_closes_the_position_cancels_what_of_the_stop_still_rests(
    store: SqliteStore, filled: float, left: float
) -> None:
    """50 held under a 100-share stop whose resize did not get through: the stop fills
    50 (or 80, past zero) and the rest of it, which would open (or add to) a short,
    is canceled."""
    venue, alerts = UnreachableOnReplace(), CountingAlerts()
    async with Supervisor(name="test") as sup:
        actor = _actor(store, venue, _entry_in_flight(), alerts)
        stop, order_id = await _start_long_100(sup, actor)
        hand = Execution("H-1", "HO-1", "by-hand", SYMBOL, Side.SELL, 50.0, 100.2, START)
        await actor.ask(OnExecution(hand))
        held = actor.state.stop
        assert held is not None
        assert (actor.state.qty, held.qty) == (50.0, 100.0), "the resize did not get through"

        fill = await venue.fill_resting(order_id, filled, STOP_PRICE)
        await actor.ask(OnExecution(fill))

        assert actor.state.qty == left
        order = _venue_stop(venue, stop)
        assert (order.status, order.filled_qty) == (OrderStatus.CANCELED, filled)
        assert actor.state.intent(stop.client_order_id) is None
        assert actor.state.stop is None
        assert stop.client_order_id not in {
            r.client_order_id for r in await store.pending_intents()
        }
