"""The order desk (``actors.orders``) when the venue refuses a stop move because it filled.

The venue is ``bench._world.InstantVenue`` with ``replace`` made to lose the
race a boot heal can meet: the stop fills at the venue as the resize reaches
it, so the replace is refused and the stop's fill arrives after. The store is
a real file.
"""

from __future__ import annotations

from datetime import timedelta

import msgspec

from actors import model
from actors.messages import FillAck, FlattenNow, OnExecution, Reconcile, ReconcileOutcome
from actors.orders import intent_row
from actors.position import PositionActor
from actors.state import IntentKind, PositionState, StopOrder
from bench._world import ACCOUNT, DAY, CountingAlerts, InstantVenue, context
from brokers.base import (
    BrokerPosition,
    Execution,
    Order,
    OrderRejected,
    OrderStatus,
    OrderType,
    Side,
)
from persistence import PutIntent, SqliteStore
from runtime.clock import TradingCalendar
from runtime.supervision import Supervisor
from tests.unit.actors._actor_kit import snapshot_row

START = TradingCalendar().open_of(DAY) + timedelta(hours=1)
SYMBOL = "MSFT"
STOP_PRICE = 95.0


class FillingVenue(InstantVenue):
    """A venue whose resting stop fills just as a replace of it arrives."""

    def __init__(self) -> None:
        super().__init__()
        self.cancels: list[str] = []

    async def replace(self, order_id: str, *, stop_price: float, qty: float | None = None) -> Order:
        order = self.orders[order_id]
        self.orders[order_id] = msgspec.structs.replace(
            order, status=OrderStatus.FILLED, filled_qty=order.qty, avg_fill_price=STOP_PRICE
        )
        raise OrderRejected(f"order {order_id} is filled, it cannot be replaced")

    async def cancel(self, order_id: str) -> None:
        self.cancels.append(order_id)
        await super().cancel(order_id)  # refuses a filled order, as the sim venue does


def _held_with_oversized_stop() -> tuple[PositionState, Order]:
    """Return 50 shares long whose 100-share stop was not resized yet (a kill did it)."""
    state = PositionState(account=ACCOUNT, symbol=SYMBOL, trading_day=DAY)
    state, entry = model.begin_entry(
        state, day=DAY, pivot=100.0, side=Side.BUY, qty=100.0, now=START, max_attempts=2
    )
    state = model.apply_fill(
        state,
        Execution("E-1", "BO-1", entry.client_order_id, SYMBOL, Side.BUY, 100.0, 100.0, START),
    ).state
    state, stop_intent = model.begin_order(
        state,
        kind=IntentKind.STOP,
        side=Side.SELL,
        qty=100.0,
        now=START,
        tag="stop1",
        order_type=OrderType.STOP,
        price=STOP_PRICE,
    )
    cid = stop_intent.client_order_id
    state = model.resolve_intent(state, cid, order_id="SO-1")
    state = model.set_stop(state, StopOrder(cid, Side.SELL, STOP_PRICE, 100.0, "SO-1", "live"))
    state = model.apply_fill(
        state, Execution("P-1", "PO-1", "sw-partial", SYMBOL, Side.SELL, 50.0, 101.0, START)
    ).state
    resting = Order(
        order_id="SO-1",
        client_order_id=cid,
        symbol=SYMBOL,
        side=Side.SELL,
        qty=100.0,
        type=OrderType.STOP,
        status=OrderStatus.NEW,
        stop_price=STOP_PRICE,
    )
    return state, resting


def _stop_fill(stop: Order) -> Execution:
    """Return the whole fill of ``stop`` (100 shares at its price)."""
    return Execution(
        "S-1", stop.order_id, stop.client_order_id, SYMBOL, Side.SELL, 100.0, STOP_PRICE, START
    )


def _boot(resting: Order) -> Reconcile:
    """Return the boot heal of the 50 shares held with ``resting`` (the stop) at the venue."""
    return Reconcile(
        position=BrokerPosition(SYMBOL, 50.0, 100.0),
        open_orders=(resting,),
        heal=True,
        dry_run=False,
        restore_stop=True,
        orphan_mode="adopt",
        mode="boot",
    )


async def test_a_replace_refused_because_the_stop_filled_leaves_no_live_stop_behind(
    store: SqliteStore,
) -> None:
    venue, alerts = FillingVenue(), CountingAlerts()
    venue.market_time = START
    state, resting = _held_with_oversized_stop()
    venue.orders[resting.order_id] = resting
    venue.by_client[resting.client_order_id] = resting.order_id
    row = snapshot_row(state, START)
    async with Supervisor(name="test") as sup:
        actor = PositionActor(SYMBOL, context(store, venue, alerts=alerts), row)
        await sup.start(actor)

        outcome = await actor.ask(_boot(resting))
        assert isinstance(outcome, ReconcileOutcome)
        stop = actor.state.stop
        assert stop is None or stop.status != "live", "a filled stop is not resurrected as live"

        stop_fill = _stop_fill(resting)
        ack = await actor.ask(OnExecution(stop_fill))
        again = await actor.ask(OnExecution(stop_fill))

        assert isinstance(ack, FillAck)
        assert ack.applied
        assert isinstance(again, FillAck)
        assert not again.applied, "the stop's fill is applied once"
        assert actor.state.qty == -50.0
        stop = actor.state.stop
        protected = stop is not None and stop.side is Side.BUY and stop.qty == 50.0
        assert protected or alerts.kinds.get("unprotected", 0) >= 1, (
            "the flipped remainder is protected or flagged unprotected"
        )

        venue.cancels.clear()
        for _ in range(3):
            await actor.ask(FlattenNow("eod"))
        assert "SO-1" not in venue.cancels, "a filled stop is never canceled again"
        assert actor.state.intent(resting.client_order_id) is None


async def test_a_stop_the_venue_reports_filled_is_not_canceled_again_before_its_fill(
    store: SqliteStore,
) -> None:
    venue, alerts = FillingVenue(), CountingAlerts()
    venue.market_time = START
    state, resting = _held_with_oversized_stop()
    venue.orders[resting.order_id] = msgspec.structs.replace(
        resting, status=OrderStatus.FILLED, filled_qty=100.0, avg_fill_price=STOP_PRICE
    )
    venue.by_client[resting.client_order_id] = resting.order_id
    row = snapshot_row(state, START)
    async with Supervisor(name="test") as sup:
        actor = PositionActor(SYMBOL, context(store, venue, alerts=alerts), row)
        await sup.start(actor)

        for _ in range(3):
            await actor.ask(FlattenNow("eod"))

        assert venue.cancels == ["SO-1"], "refused once as filled: never asked again"
        assert venue.submitted == 0, "its fill decides, not a second exit"
        stop_fill = _stop_fill(resting)
        await actor.ask(OnExecution(stop_fill))
        assert actor.state.qty == -50.0
        assert actor.state.stop is None
        assert actor.state.intent(resting.client_order_id) is None
        assert alerts.kinds.get("unprotected", 0) >= 1


class RefusingVenue(InstantVenue):
    """A venue that refuses to move a stop it still holds open."""

    async def replace(self, order_id: str, *, stop_price: float, qty: float | None = None) -> Order:
        raise OrderRejected(f"order {order_id} cannot be replaced now")


async def test_a_refused_resize_puts_the_stop_and_its_intent_back_as_they_rest(
    store: SqliteStore,
) -> None:
    venue = RefusingVenue()
    venue.market_time = START
    state, resting = _held_with_oversized_stop()
    venue.orders[resting.order_id] = resting
    venue.by_client[resting.client_order_id] = resting.order_id
    stop_intent = state.intent(resting.client_order_id)
    assert stop_intent is not None
    await store.commit([PutIntent(intent_row(SYMBOL, stop_intent))])
    async with Supervisor(name="test") as sup:
        actor = PositionActor(SYMBOL, context(store, venue), snapshot_row(state, START))
        await sup.start(actor)

        await actor.ask(_boot(resting))

        stop = actor.state.stop
        assert stop is not None
        assert (stop.qty, stop.status) == (100.0, "live"), "the venue still holds 100"
        intent = actor.state.intent(resting.client_order_id)
        assert intent is not None
        assert intent.qty == 100.0
        (row,) = await store.pending_intents()
        assert (row.client_order_id, row.qty) == (resting.client_order_id, 100.0)
