"""Pure reconciliation of one symbol: local state against broker truth."""

from __future__ import annotations

import math

import pytest

from actors import model
from actors.reconcile import Finding, plan_symbol
from actors.state import PositionState, StopOrder
from brokers.base import BrokerPosition, Order, OrderStatus, OrderType, Side
from tests.unit.actors._actor_kit import (
    DAY,
    OPEN,
    broker_position,
    long_position,
    order,
    position_state,
    short_position,
)


@pytest.mark.parametrize(
    ("state", "position", "finding"),
    [
        (position_state(), None, Finding.OK),
        (position_state(), broker_position(0.0, 0.0), Finding.OK),
        (long_position(100, 100.0), broker_position(100, 100.0), Finding.OK),
        (long_position(100, 100.0), None, Finding.ZOMBIE),
        (long_position(100, 100.0), broker_position(0.0, 0.0), Finding.ZOMBIE),
        (position_state(), broker_position(-50, 80.0), Finding.ORPHAN),
        (long_position(100, 100.0), broker_position(60, 100.0), Finding.DRIFT),
        (long_position(100, 100.0), broker_position(100, 100.01), Finding.DRIFT),
        (long_position(100, 100.0), broker_position(-100, 100.0), Finding.DRIFT),
        (short_position(100, 100.0), broker_position(-100, 100.0), Finding.OK),
    ],
)
def test_the_finding_compares_quantity_and_average_price(
    state: PositionState, position: BrokerPosition | None, finding: Finding
) -> None:
    plan = plan_symbol(state, position, [])

    assert plan.finding is finding
    assert (plan.local_qty, plan.local_avg) == (state.qty, state.avg_price)
    expected = (0.0, 0.0) if position is None else (position.qty, position.avg_price)
    assert (plan.broker_qty, plan.broker_avg) == expected


def test_a_resting_stop_on_the_other_side_protects_the_position() -> None:
    stop = order("ours", side=Side.SELL)

    plan = plan_symbol(long_position(), broker_position(100), [stop])

    assert plan.broker_stop == stop
    assert not plan.unprotected
    assert plan.unknown_orders == ()  # the stop attaches even when we did not know it


@pytest.mark.parametrize(
    "not_a_stop",
    [
        order("same-side", side=Side.BUY),
        order("done", status=OrderStatus.FILLED),
        order("canceled", status=OrderStatus.CANCELED),
        order("limit", type_=OrderType.LIMIT),
        order("elsewhere", symbol="MSFT"),
    ],
)
def test_only_an_open_opposite_stop_of_the_symbol_protects(not_a_stop: Order) -> None:
    plan = plan_symbol(long_position(), broker_position(100), [not_a_stop])

    assert plan.broker_stop is None
    assert plan.unprotected


def test_a_short_is_protected_by_a_buy_stop() -> None:
    stop = order("ours", side=Side.BUY, stop_price=105.0)

    plan = plan_symbol(short_position(), broker_position(-100), [stop])

    assert (plan.broker_stop, plan.unprotected) == (stop, False)


def test_a_flat_broker_position_needs_no_stop() -> None:
    assert not plan_symbol(long_position(), None, []).unprotected
    assert not plan_symbol(position_state(), None, []).unprotected


def test_open_orders_we_never_sent_are_reported_as_unknown() -> None:
    state, entry = model.begin_entry(
        position_state(), day=DAY, pivot=101.0, side=Side.BUY, qty=100, now=OPEN, max_attempts=2
    )
    state = model.set_stop(
        state, StopOrder(client_order_id="our-stop", side=Side.SELL, price=99.0, qty=100)
    )
    ours = order(entry.client_order_id, side=Side.BUY, type_=OrderType.MARKET)
    our_stop = order("our-stop", type_=OrderType.LIMIT)
    foreign = order("by-hand", side=Side.BUY, type_=OrderType.LIMIT)
    filled = order("by-hand-done", type_=OrderType.LIMIT, status=OrderStatus.FILLED)
    other_symbol = order("msft", type_=OrderType.LIMIT, symbol="MSFT")

    plan = plan_symbol(state, None, [ours, our_stop, foreign, filled, other_symbol])

    assert plan.unknown_orders == (foreign,)


def test_a_position_of_another_symbol_is_refused() -> None:
    with pytest.raises(model.WrongSymbol):
        plan_symbol(long_position(), broker_position(100, symbol="MSFT"), [])


@pytest.mark.parametrize(("qty", "avg"), [(math.nan, 100.0), (math.inf, 100.0), (100.0, math.nan)])
def test_broker_numbers_that_cannot_be_real_are_refused_not_read_as_flat(
    qty: float, avg: float
) -> None:
    with pytest.raises(model.BadInput):
        plan_symbol(long_position(), broker_position(qty, avg), [])


def test_planning_changes_nothing() -> None:
    state = long_position()

    plan_symbol(state, broker_position(50), [order("x")])

    assert state == long_position()
