"""A long position under our live stop, as the filled-stop tests start from.

Shared by the actor's tests (``test_position_filled_stop``) and the
supervisor's (``test_supervisor_filled_stop``): one entry filled, one stop
placed and acknowledged, the same stop resting at the venue.
"""

from __future__ import annotations

from datetime import timedelta

from actors import model
from actors.state import IntentKind, PositionState, StopOrder
from bench._world import ACCOUNT, DAY
from brokers.base import Execution, Order, OrderStatus, OrderType, Side
from runtime.clock import TradingCalendar

START = TradingCalendar().open_of(DAY) + timedelta(hours=1)
SYMBOL = "NVDA"
ENTRY_PRICE = 100.0
STOP_PRICE = 95.0
STOP_ID = "SO-1"


def held_under_stop(qty: float, stop_qty: float) -> tuple[PositionState, Order]:
    """Return ``qty`` long under our live stop of ``stop_qty`` at 95, and that stop at the venue."""
    state = PositionState(account=ACCOUNT, symbol=SYMBOL, trading_day=DAY)
    state, entry = model.begin_entry(
        state, day=DAY, pivot=ENTRY_PRICE, side=Side.BUY, qty=qty, now=START, max_attempts=2
    )
    entry_fill = Execution(
        "E-1", "BO-1", entry.client_order_id, SYMBOL, Side.BUY, qty, ENTRY_PRICE, START
    )
    state = model.apply_fill(state, entry_fill).state
    state, stop_intent = model.begin_order(
        state,
        kind=IntentKind.STOP,
        side=Side.SELL,
        qty=stop_qty,
        now=START,
        tag="stop1",
        order_type=OrderType.STOP,
        price=STOP_PRICE,
        reason="stop",
    )
    cid = stop_intent.client_order_id
    state = model.resolve_intent(state, cid, order_id=STOP_ID)
    state = model.set_stop(state, StopOrder(cid, Side.SELL, STOP_PRICE, stop_qty, STOP_ID, "live"))
    resting = Order(
        order_id=STOP_ID,
        client_order_id=cid,
        symbol=SYMBOL,
        side=Side.SELL,
        qty=stop_qty,
        type=OrderType.STOP,
        status=OrderStatus.NEW,
        stop_price=STOP_PRICE,
    )
    return state, resting
