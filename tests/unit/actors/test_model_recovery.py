"""Bars, levels and broker truth in the pure position model: overrides, zombies, orphans."""

from __future__ import annotations

import math

import msgspec
import pytest

from actors import model
from actors.state import (
    ExitReason,
    IntentKind,
    Mode,
    Origin,
    PositionState,
    StopOrder,
)
from brokers.base import OrderType, Side
from tests.unit.actors._actor_kit import (
    DAY,
    SYMBOL,
    apply_all,
    at,
    bar,
    buy,
    enter,
    long_position,
    only_trade,
    position_state,
    sell,
)

# -- bars, levels, broker overrides ---------------------------------------------------------


def test_bars_track_the_extremes_of_an_open_trade() -> None:
    state = long_position(10, 100.0)

    new = model.mark_bar(state, bar(1, 101.0, high=103.0, low=98.0))

    assert (new.last_price, new.trade_high, new.trade_low) == (101.0, 103.0, 98.0)
    assert new.seq == state.seq + 1
    assert model.mark_bar(new, bar(2, 101.0, high=102.0, low=99.0)) is new


def test_bars_while_flat_keep_the_last_price_only() -> None:
    new = model.mark_bar(position_state(), bar(1, 101.0, high=103.0, low=98.0))

    assert (new.last_price, new.trade_high, new.trade_low) == (101.0, None, None)


@pytest.mark.parametrize(
    "changes",
    [
        {"close": math.nan},
        {"open": 0.0},
        {"high": math.inf},
        {"low": -1.0},
        {"high": 99.0, "low": 101.0},
        {"volume": -1.0},
        {"volume": math.nan},
    ],
)
def test_an_impossible_bar_is_refused(changes: dict[str, float]) -> None:
    bad = msgspec.structs.replace(bar(1, 100.0), **changes)

    with pytest.raises(model.BadInput):
        model.mark_bar(long_position(), bad)


def test_a_bar_of_another_symbol_is_refused() -> None:
    with pytest.raises(model.WrongSymbol):
        model.mark_bar(position_state(), bar(1, 100.0, symbol="MSFT"))


def test_levels_are_recorded_for_their_day_and_validated() -> None:
    levels = {"resistance": 101.0, "support": 99.0}

    new = model.set_levels(position_state(), DAY, levels)

    assert (new.levels, new.levels_day) == (levels, DAY)
    assert model.set_levels(new, DAY, dict(levels)) is new
    with pytest.raises(model.BadInput):
        model.set_levels(new, DAY, {"resistance": math.nan})


def test_the_broker_overrides_quantity_and_average_price() -> None:
    state = long_position(100, 10.0)

    new = model.override_quantity(state, 80, 10.25)

    assert (new.qty, new.avg_price, new.seq) == (80, 10.25, state.seq + 1)
    assert model.override_quantity(new, 80, 10.25) is new


def test_an_override_to_the_other_side_drops_the_old_sides_plan_and_stop() -> None:
    stop = StopOrder(client_order_id="s1", side=Side.SELL, price=9.5, qty=100)
    planned = {"targets": (10.5, 11.0), "planned_stop": 9.5, "stop": stop}
    state = msgspec.structs.replace(long_position(100, 10.0), **planned)

    smaller = model.override_quantity(state, 60, 10.0)
    flipped = model.override_quantity(state, -50, 9.8)

    assert (smaller.targets, smaller.planned_stop, smaller.stop) == ((10.5, 11.0), 9.5, stop)
    assert (flipped.qty, flipped.avg_price) == (-50, 9.8)
    assert (flipped.targets, flipped.planned_stop, flipped.stop) == ((), None, None)


@pytest.mark.parametrize(("qty", "avg"), [(0.0, 10.0), (math.nan, 10.0), (50.0, math.nan)])
def test_an_override_that_cannot_be_real_is_refused(qty: float, avg: float) -> None:
    with pytest.raises(model.BadInput):
        model.override_quantity(long_position(), qty, avg)


# -- zombies and orphans --------------------------------------------------------------------


def test_a_zombie_closes_as_closed_externally_with_its_trade() -> None:
    state = apply_all(long_position(100, 10.0), [sell("e2", 50, 12.0)])

    new, trade = model.close_externally(state, at(60), 9.0)

    assert trade is not None
    assert trade.exit_reason == ExitReason.CLOSED_EXTERNALLY.value
    assert (trade.qty, trade.exit_at, trade.exit_price) == (100, at(60), 10.5)
    assert trade.realized_pnl == pytest.approx(100.0 - 50.0)
    assert (trade.mae, trade.mfe) == (1.0, 2.0)
    assert new.is_flat
    assert new.intents == ()
    assert new.trades_today == 1
    assert new.realized_pnl_today == pytest.approx(50.0)


def test_a_zombie_without_an_exit_price_records_what_is_known() -> None:
    state = apply_all(long_position(100, 10.0), [sell("e2", 50, 12.0)])

    new, trade = model.close_externally(state, at(60), None)

    assert trade is not None
    assert (trade.exit_price, trade.qty) == (None, 100)
    assert trade.realized_pnl == pytest.approx(100.0)
    assert new.realized_pnl_today == pytest.approx(100.0)


def test_closing_a_flat_state_externally_changes_nothing() -> None:
    state = position_state()

    assert model.close_externally(state, at(1), 10.0) == (state, None)


def test_a_zombie_exit_price_that_cannot_be_real_is_refused() -> None:
    with pytest.raises(model.BadInput):
        model.close_externally(long_position(), at(1), math.nan)


def test_an_orphan_is_adopted_as_recovered() -> None:
    state = position_state()

    new = model.adopt(state, -30, 55.0, at(2), Mode.WATCH)

    assert (new.qty, new.avg_price, new.opened_at) == (-30, 55.0, at(2))
    assert (new.origin, new.mode) == (Origin.RECOVERED, Mode.WATCH)
    assert (new.trade_high, new.trade_low) == (55.0, 55.0)


@pytest.mark.parametrize(("qty", "kept"), [(30.0, True), (-30.0, False)])
def test_an_orphan_keeps_the_plan_of_an_entry_in_flight_only_on_its_side(
    qty: float, kept: bool
) -> None:
    state, _ = enter(position_state(), side=Side.BUY)
    state = msgspec.structs.replace(state, targets=(102.0, 103.0), planned_stop=100.0)

    new = model.adopt(state, qty, 101.5, at(2), Mode.MANAGED)

    plan = ((102.0, 103.0), 100.0) if kept else ((), None)
    assert (new.targets, new.planned_stop) == plan


def test_an_orphan_takes_no_plan_left_by_an_entry_no_longer_in_flight() -> None:
    state = msgspec.structs.replace(position_state(), targets=(102.0, 103.0), planned_stop=100.0)

    new = model.adopt(state, 30.0, 101.5, at(2), Mode.MANAGED)

    assert (new.targets, new.planned_stop) == ((), None)


@pytest.mark.parametrize(("qty", "avg"), [(0.0, 10.0), (math.inf, 10.0), (10.0, 0.0)])
def test_an_orphan_that_cannot_be_real_is_refused(qty: float, avg: float) -> None:
    with pytest.raises(model.BadInput):
        model.adopt(position_state(), qty, avg, at(1), Mode.WATCH)


def test_an_adopted_trade_is_recorded_whole_and_hands_the_symbol_back() -> None:
    state = model.adopt(position_state(), 100, 10.0, at(2), Mode.WATCH)
    state = apply_all(state, [sell("e1", 40, 11.0)])

    applied = model.apply_fill(state, sell("e2", 60, 12.0))

    trade = only_trade(applied)
    assert (trade.qty, trade.strategy) == (100, model.RECOVERED_STRATEGY)
    assert trade.realized_pnl == pytest.approx(160.0)
    assert (applied.state.origin, applied.state.mode) == (Origin.STRATEGY, Mode.MANAGED)
    assert applied.state.strategy == "pivot_breakout"
    assert model.apply_fill(applied.state, buy("e3", 1, 12.0)).state.strategy == "pivot_breakout"


def test_a_strategy_position_in_watch_mode_stays_in_watch_mode_when_closed() -> None:
    state = long_position(mode=Mode.WATCH)

    new = model.apply_fill(state, sell("e2", 100, 100.0)).state

    assert new.mode is Mode.WATCH


def test_a_hand_trade_adopted_after_its_fill_keeps_that_fill() -> None:
    # The actor adopts a position that a fill of an unknown order just opened.
    opened = model.apply_fill(position_state(), buy("hand1", 30, 20.0)).state
    state = model.adopt(opened, opened.qty, opened.avg_price, opened.opened_at or at(0), Mode.WATCH)

    trade = only_trade(model.apply_fill(state, sell("hand2", 30, 21.0)))

    assert [f.exec_id for f in state.entries] == ["hand1"]
    assert (trade.trade_id, trade.qty, trade.strategy) == (
        f"{SYMBOL}-hand1",
        30,
        model.RECOVERED_STRATEGY,
    )
    assert trade.realized_pnl == pytest.approx(30.0)


# -- a stop the venue says filled -----------------------------------------------------------


def _long_with_stop(qty: float = 100.0) -> tuple[PositionState, StopOrder]:
    """Return long ``qty`` under a live 100-share stop at 95 (``b-stop``), its intent held."""
    state, intent = model.begin_order(
        long_position(qty),
        kind=IntentKind.STOP,
        side=Side.SELL,
        qty=100,
        now=at(0),
        tag="stop1",
        order_type=OrderType.STOP,
        price=95.0,
    )
    stop = StopOrder(intent.client_order_id, Side.SELL, 95.0, 100, "b-stop", "live")
    state = model.set_stop(state, stop)
    assert state.stop is not None
    return state, state.stop


@pytest.mark.parametrize("said", [100.0, 0.0])  # the venue's filled qty, or none: the total
def test_a_stop_the_venue_says_filled_waits_for_the_rest_of_its_fill(said: float) -> None:
    state, stop = _long_with_stop()
    cid = stop.client_order_id
    part = model.apply_fill(state, sell("s1", 60, 95.0, client_order_id=cid)).state
    assert part.stop is not None

    told = model.stop_filled(part, part.stop, said)

    assert told.stop is not None
    assert told.stop.filled_at_venue
    assert (told.stop.qty, told.stop.filled_qty, told.stop.order_qty) == (40, 60, 100)
    rest = model.apply_fill(told, sell("s2", 40, 94.9, client_order_id=cid))
    assert rest.state.is_flat
    assert (rest.state.stop, rest.state.intents) == (None, ())
    assert [t.exit_reason for t in rest.closed] == [ExitReason.STOP.value]


def test_a_stop_filled_at_the_venue_expects_what_the_venue_says_filled() -> None:
    """The venue's order was 80 (a resize the state never recorded): 80 are to come."""
    state, stop = _long_with_stop()
    cid = stop.client_order_id

    told = model.stop_filled(state, stop, 80.0)

    assert told.stop is not None
    assert (told.stop.qty, told.stop.order_qty) == (80, 80)
    intent = told.intent(cid)
    assert intent is not None
    assert intent.qty == 80
    rest = model.apply_fill(told, sell("s1", 80, 95.0, client_order_id=cid)).state
    assert (rest.qty, rest.stop, rest.intent(cid)) == (20, None, None)


def test_a_stop_filled_at_the_venue_whose_fill_is_all_applied_is_dropped_with_its_intent() -> None:
    state, stop = _long_with_stop()
    cid = stop.client_order_id
    part = model.apply_fill(state, sell("s1", 60, 95.0, client_order_id=cid)).state
    assert part.stop is not None

    told = model.stop_filled(part, part.stop, 60.0)

    assert (told.qty, told.stop, told.intent(cid)) == (40, None, None)


def test_a_filled_stop_whose_fill_crosses_zero_stays_until_the_rest_of_it() -> None:
    """50 held under the 100-share stop: its 60 close the trade and open 10 short, by the
    stop; the 40 to come are the stop's too."""
    state, stop = _long_with_stop(50)
    cid = stop.client_order_id
    told = model.stop_filled(state, stop, 100.0)

    past = model.apply_fill(told, sell("s1", 60, 95.0, client_order_id=cid))

    assert [t.exit_reason for t in past.closed] == [ExitReason.STOP.value]
    assert past.state.qty == -10
    assert past.state.stop is not None, "40 of its fill are still to come"
    assert (past.state.stop.qty, past.state.stop.filled_qty) == (40, 60)
    rest = model.apply_fill(past.state, sell("s2", 40, 94.9, client_order_id=cid)).state
    assert (rest.qty, rest.stop, rest.intent(cid)) == (-50, None, None)
    assert [f.qty for f in rest.entries] == [10, 40]


@pytest.mark.parametrize("said", [-1.0, math.nan, math.inf])
def test_a_filled_qty_that_cannot_be_real_is_refused(said: float) -> None:
    state, stop = _long_with_stop()

    with pytest.raises(model.BadInput):
        model.stop_filled(state, stop, said)


def _rest_absorbed() -> tuple[PositionState, str]:
    """Long 100 under its stop: 60 applied, filled at the venue, then the heal found the
    broker flat and booked the 40 to come at 94.9. Return the state and the stop's id."""
    state, stop = _long_with_stop()
    cid = stop.client_order_id
    part = model.apply_fill(state, sell("s1", 60, 95.0, client_order_id=cid)).state
    assert part.stop is not None
    told = model.stop_filled(part, part.stop, 100.0)
    healed = model.absorb_fill_rest(told, 94.9, at(1))
    assert len(healed.closed) == 1
    return healed.state, cid


def test_booking_a_filled_stops_rest_closes_the_trade_as_its_fill_would() -> None:
    """Long 100, the venue says the stop filled, none of it arrived: the 100 are booked
    at the price given, as the stop's, and remembered as to come."""
    state, stop = _long_with_stop()
    told = model.stop_filled(state, stop, 100.0)

    absorbed = model.absorb_fill_rest(told, 94.5, at(2))

    (trade,) = absorbed.closed
    assert (trade.exit_reason, trade.qty, trade.exit_price) == (ExitReason.STOP.value, 100, 94.5)
    assert trade.exit_at == at(2)
    new = absorbed.state
    assert (new.is_flat, new.stop, new.intents) == (True, None, ())
    assert new.absorbed_fills == {stop.client_order_id: 100}
    assert not any(i.endswith(model.ABSENT) for i in new.applied), "no broker exec id"
    assert model.absorb_fill_rest(state, 94.5, at(2)).state is state, "a live stop: no fill"


def test_booking_the_rest_of_a_stop_smaller_than_the_position_leaves_a_partial_exit() -> None:
    """Long 120 under a 100-share stop: 60 came, the 40 never did. Booked at 94.9, the
    position is 20, with both parts among the trade's exits and its realized P&L."""
    state, stop = _long_with_stop(120)
    cid = stop.client_order_id
    part = model.apply_fill(state, sell("s1", 60, 95.0, client_order_id=cid)).state
    assert part.stop is not None
    told = model.stop_filled(part, part.stop, 100.0)

    absorbed = model.absorb_fill_rest(told, 94.9, at(1))

    new = absorbed.state
    assert absorbed.closed == ()
    assert (new.qty, new.stop, new.intent(cid)) == (20, None, None)
    assert [(f.qty, f.price) for f in new.exits] == [(60, 95.0), (40, 94.9)]
    assert [p.reason for p in new.partials] == [ExitReason.STOP.value] * 2
    entry = state.avg_price
    assert new.trade_realized == pytest.approx((95.0 - entry) * 60 + (94.9 - entry) * 40)
    assert new.absorbed_fills == {cid: 40}


@pytest.mark.parametrize("price", [0.0, -1.0, math.nan, math.inf])
def test_a_price_for_the_missing_rest_that_cannot_be_real_is_refused(price: float) -> None:
    state, stop = _long_with_stop()
    told = model.stop_filled(state, stop, 100.0)

    with pytest.raises(model.BadInput):
        model.absorb_fill_rest(told, price, at(1))


def test_an_absorbed_execution_is_booked_without_moving_the_position() -> None:
    healed, cid = _rest_absorbed()

    late = model.apply_fill(healed, sell("s2", 40, 94.9, client_order_id=cid))

    assert (late.absorbed, late.closed, late.partial) == (40, (), None)
    assert late.state.is_flat
    assert late.state.absorbed_fills == {}
    assert "s2" in late.state.applied
    assert model.apply_fill(late.state, sell("s2", 40, 94.9, client_order_id=cid)).duplicate


def test_what_of_a_late_execution_is_past_what_was_absorbed_is_applied() -> None:
    healed, cid = _rest_absorbed()

    part = model.apply_fill(healed, sell("s2", 30, 94.9, client_order_id=cid)).state
    late = model.apply_fill(part, sell("s3", 15, 94.8, client_order_id=cid))

    assert part.absorbed_fills == {cid: 10}
    assert late.absorbed == 10
    assert late.state.qty == -5
    assert late.state.absorbed_fills == {}
    assert {"s2", "s3"} <= set(late.state.applied)


def test_only_the_latest_absorbed_orders_are_remembered() -> None:
    state = long_position(1000)
    for n in range(model.ABSORBED_KEPT + 2):
        stop = StopOrder(f"cid-{n}", Side.SELL, 95.0, 10, f"b-{n}", "filled")
        state = model.absorb_fill_rest(msgspec.structs.replace(state, stop=stop), 95.0, at(1)).state

    assert list(state.absorbed_fills) == [f"cid-{n}" for n in range(2, model.ABSORBED_KEPT + 2)]
