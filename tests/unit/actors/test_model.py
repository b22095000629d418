"""Fills in the pure position model: quantities, P&L, closed trades, bad input."""

from __future__ import annotations

import math

import msgspec
import pytest

from actors import model
from actors.state import (
    ClosedTrade,
    ExitReason,
    IntentKind,
    PartialExit,
    StopOrder,
)
from brokers.base import Execution, OrderType, Side
from tests.unit.actors._actor_kit import (
    DAY,
    OPEN,
    SYMBOL,
    apply_all,
    at,
    bar,
    buy,
    enter,
    execution,
    long_position,
    only_trade,
    position_state,
    sell,
    short_position,
)

# -- fills ------------------------------------------------------------------------------


def test_a_buy_from_flat_opens_a_long_at_the_fill_price() -> None:
    state = position_state()

    new = model.apply_fill(state, buy("e1", 100, 50.0, ts=at(3))).state

    assert (new.qty, new.avg_price, new.opened_at) == (100, 50.0, at(3))
    assert new.side is Side.BUY
    assert [f.exec_id for f in new.entries] == ["e1"]
    assert (new.trade_high, new.trade_low) == (50.0, 50.0)
    assert new.applied == ("e1",)
    assert new.seq == state.seq + 1


def test_adding_to_a_position_averages_its_price_by_volume() -> None:
    state = long_position(100, 10.0)

    new = model.apply_fill(state, buy("e2", 300, 14.0)).state

    assert new.qty == 400
    assert new.avg_price == pytest.approx(13.0)
    assert new.opened_at == state.opened_at


def test_the_same_exec_id_twice_changes_nothing_not_even_seq() -> None:
    state = long_position(100, 10.0)

    again = model.apply_fill(state, buy("e-open", 100, 10.0))

    assert again.duplicate
    assert again.state is state
    assert (again.closed, again.partial) == ((), None)


def test_a_known_exec_id_is_ignored_whatever_it_carries() -> None:
    state = apply_all(long_position(100, 10.0), [sell("e2", 40, 12.0)])

    again = model.apply_fill(state, sell("e2", 60, 99.0))

    assert again.duplicate
    assert again.state is state


def test_a_partial_reduction_realizes_pnl_and_keeps_the_average() -> None:
    state = long_position(100, 10.0)

    applied = model.apply_fill(state, sell("e2", 40, 12.5, ts=at(9)))

    new = applied.state
    assert (new.qty, new.avg_price) == (60, 10.0)
    assert new.trade_realized == pytest.approx(100.0)
    assert new.realized_pnl_today == pytest.approx(100.0)
    assert applied.partial == PartialExit(at=at(9), price=12.5, qty=40, reason="manual")
    assert new.partials == (applied.partial,)
    assert applied.closed == ()


def test_a_short_realizes_the_fall_of_the_price() -> None:
    state = short_position(100, 20.0)

    new = model.apply_fill(state, buy("e2", 100, 18.0)).state

    assert new.is_flat
    assert new.realized_pnl_today == pytest.approx(200.0)


def test_closing_writes_the_closed_trade_record() -> None:
    state = long_position(100, 10.0)
    state = model.mark_bar(state, bar(5, 10.5, high=11.0, low=9.25))
    state = model.apply_fill(state, sell("e2", 50, 12.0, ts=at(10))).state
    state = model.mark_bar(state, bar(11, 11.5, high=12.5, low=11.0))

    applied = model.apply_fill(state, sell("e3", 50, 11.0, ts=at(20)))

    assert only_trade(applied) == ClosedTrade(
        trade_id=f"{SYMBOL}-e-open",
        symbol=SYMBOL,
        side=Side.BUY,
        qty=100,
        entry_at=OPEN,
        entry_price=10.0,
        exit_at=at(20),
        exit_price=11.5,
        realized_pnl=150.0,
        mae=0.75,
        mfe=2.5,
        exit_reason=ExitReason.MANUAL.value,
        strategy="pivot_breakout",
        trading_day=DAY,
    )


def test_closing_resets_the_trade_and_counts_it_today() -> None:
    stop = StopOrder(client_order_id="sw-stop", side=Side.SELL, price=9.0, qty=100)
    state = model.set_stop(long_position(100, 10.0), stop)
    state = msgspec.structs.replace(state, targets=(11.0, 12.0), planned_stop=9.0)

    new = model.apply_fill(state, sell("e2", 100, 11.0)).state

    assert new.is_flat
    assert (new.avg_price, new.opened_at, new.stop, new.targets, new.planned_stop) == (
        0.0,
        None,
        None,
        (),
        None,
    )
    assert (new.entries, new.exits, new.partials) == ((), (), ())
    assert (new.trade_high, new.trade_low, new.trade_realized) == (None, None, 0.0)
    assert new.trades_today == 1
    assert new.realized_pnl_today == pytest.approx(100.0)


@pytest.mark.parametrize(
    ("side", "bars", "mae", "mfe"),
    [
        (Side.BUY, [(104.0, 97.0), (106.0, 99.0)], 3.0, 6.0),
        (Side.SELL, [(104.0, 97.0), (106.0, 99.0)], 6.0, 3.0),
    ],
)
def test_mae_and_mfe_come_from_the_extremes_seen_while_open(
    side: Side, bars: list[tuple[float, float]], mae: float, mfe: float
) -> None:
    state = apply_all(position_state(), [execution("e1", side, 10, 100.0)])
    for minute, (high, low) in enumerate(bars, start=1):
        state = model.mark_bar(state, bar(minute, 100.0, high=high, low=low))

    trade = only_trade(model.apply_fill(state, execution("e2", side.opposite, 10, 100.0)))

    assert (trade.mae, trade.mfe) == (mae, mfe)


def test_bars_while_flat_do_not_count_towards_the_next_trades_extremes() -> None:
    state = model.mark_bar(position_state(), bar(0, 100.0, high=150.0, low=50.0))
    state = apply_all(state, [buy("e1", 10, 100.0)])

    trade = only_trade(model.apply_fill(state, sell("e2", 10, 100.0)))

    assert (trade.mae, trade.mfe) == (0.0, 0.0)


@pytest.mark.parametrize(
    ("side", "exit_price", "mae", "mfe"),
    [(Side.BUY, 95.0, 5.0, 0.0), (Side.BUY, 103.0, 0.0, 3.0), (Side.SELL, 104.0, 4.0, 0.0)],
)
def test_the_exit_fill_price_counts_as_an_extreme(
    side: Side, exit_price: float, mae: float, mfe: float
) -> None:
    # A stop that fills through a gap (no bar between entry and exit) still went there.
    state = apply_all(position_state(), [execution("e1", side, 10, 100.0)])

    trade = only_trade(model.apply_fill(state, execution("e2", side.opposite, 10, exit_price)))

    assert (trade.mae, trade.mfe) == (mae, mfe)


def test_a_fill_crossing_zero_closes_then_opens_the_remainder() -> None:
    state = long_position(100, 10.0)

    applied = model.apply_fill(state, sell("e2", 150, 11.0, ts=at(30)))

    trade = only_trade(applied)
    assert (trade.side, trade.qty, trade.exit_price) == (Side.BUY, 100, 11.0)
    assert trade.realized_pnl == pytest.approx(100.0)
    new = applied.state
    assert (new.qty, new.avg_price, new.opened_at) == (-50, 11.0, at(30))
    assert [(f.exec_id, f.side, f.qty) for f in new.entries] == [("e2", Side.SELL, 50)]
    assert (new.exits, new.partials, new.trade_realized) == ((), (), 0.0)
    assert (new.trade_high, new.trade_low) == (11.0, 11.0)
    assert new.trades_today == 1
    assert new.realized_pnl_today == pytest.approx(100.0)


def test_a_crossing_fill_is_the_same_as_a_close_and_an_open() -> None:
    state = model.mark_bar(long_position(100, 10.0), bar(1, 10.0, high=10.5, low=9.5))

    crossed = model.apply_fill(state, sell("x", 130, 12.0, ts=at(7)))
    closed = model.apply_fill(state, sell("x", 100, 12.0, ts=at(7)))
    opened = model.apply_fill(closed.state, sell("x2", 30, 12.0, ts=at(7))).state

    assert crossed.closed == closed.closed
    for name in ("qty", "avg_price", "opened_at", "realized_pnl_today", "trades_today"):
        assert getattr(crossed.state, name) == getattr(opened, name), name


def test_a_fill_of_an_intent_tracks_it_until_it_is_filled() -> None:
    state, intent = enter(position_state(), qty=100)
    cid = intent.client_order_id

    half = model.apply_fill(state, buy("e1", 60, 101.5, client_order_id=cid, order_id="B1"))

    tracked = half.state.intent(cid)
    assert tracked is not None
    assert (tracked.filled_qty, tracked.order_id) == (60, "B1")
    rest = model.apply_fill(half.state, buy("e2", 40, 101.5, client_order_id=cid, order_id="B1"))
    assert rest.state.intent(cid) is None
    assert rest.state.qty == 100


@pytest.mark.parametrize(
    ("kind", "reason", "recorded"),
    [
        (IntentKind.STOP, "stop", ExitReason.STOP),
        (IntentKind.EXIT, "target", ExitReason.TARGET),
        (IntentKind.EXIT, "eod", ExitReason.EOD),
        (IntentKind.EXIT, "flatten", ExitReason.FLATTEN),
        (IntentKind.EXIT, "manual", ExitReason.MANUAL),
        (IntentKind.EXIT, "operator asked", ExitReason.FLATTEN),
        (IntentKind.PARTIAL, "target1", ExitReason.PARTIAL),
    ],
)
def test_the_exit_reason_comes_from_the_intent_that_filled(
    kind: IntentKind, reason: str, recorded: ExitReason
) -> None:
    order_type, price = (
        (OrderType.STOP, 95.0) if kind is IntentKind.STOP else (OrderType.MARKET, None)
    )
    state, intent = model.begin_order(
        long_position(100, 100.0),
        kind=kind,
        side=Side.SELL,
        qty=100,
        now=OPEN,
        tag="t1",
        order_type=order_type,
        price=price,
        reason=reason,
    )

    applied = model.apply_fill(state, sell("e2", 100, 96.0, client_order_id=intent.client_order_id))

    assert only_trade(applied).exit_reason == recorded.value


def test_a_fill_of_no_intent_of_ours_is_a_manual_exit() -> None:
    applied = model.apply_fill(long_position(), sell("e2", 100, 99.0, client_order_id="app"))

    assert only_trade(applied).exit_reason == ExitReason.MANUAL.value


def test_a_partial_exit_then_the_rest_records_both_in_the_trade() -> None:
    state, partial = model.begin_order(
        long_position(100, 100.0),
        kind=IntentKind.PARTIAL,
        side=Side.SELL,
        qty=50,
        now=OPEN,
        tag="partial1",
        reason="target1",
    )
    state = apply_all(state, [sell("e2", 50, 104.0, client_order_id=partial.client_order_id)])
    state, exit_ = model.begin_order(
        state, kind=IntentKind.EXIT, side=Side.SELL, qty=50, now=OPEN, tag="exit1", reason="target"
    )

    applied = model.apply_fill(state, sell("e3", 50, 108.0, client_order_id=exit_.client_order_id))

    assert [p.reason for p in state.partials] == [ExitReason.PARTIAL.value]
    trade = only_trade(applied)
    assert (trade.qty, trade.exit_price, trade.exit_reason) == (100, 106.0, "target")
    assert trade.realized_pnl == pytest.approx(600.0)


BAD_NUMBERS = [math.nan, math.inf, -math.inf, 0.0, -1.0]


@pytest.mark.parametrize("price", BAD_NUMBERS)
def test_a_fill_at_an_impossible_price_is_refused_and_changes_nothing(price: float) -> None:
    state = long_position()
    before = msgspec.msgpack.encode(state)

    with pytest.raises(model.BadInput):
        model.apply_fill(state, sell("e2", 10, price))

    assert msgspec.msgpack.encode(state) == before


@pytest.mark.parametrize("qty", BAD_NUMBERS)
def test_a_fill_of_an_impossible_quantity_is_refused(qty: float) -> None:
    with pytest.raises(model.BadInput):
        model.apply_fill(position_state(), buy("e1", qty, 100.0))


def test_a_fill_without_an_exec_id_is_refused() -> None:
    with pytest.raises(model.BadInput):
        model.apply_fill(position_state(), buy("", 10, 100.0))


def test_a_fill_for_another_symbol_is_refused() -> None:
    with pytest.raises(model.WrongSymbol):
        model.apply_fill(position_state(), execution("e1", symbol="MSFT"))


def test_the_model_errors_are_typed_value_errors() -> None:
    for error in (model.BadInput, model.WrongSymbol, model.EntryRefused):
        assert issubclass(error, model.ModelError)
    assert issubclass(model.ModelError, ValueError)


def test_only_the_latest_exec_ids_are_kept_for_dedup() -> None:
    fills: list[Execution] = []
    for n in range(model.APPLIED_IDS_KEPT + 2):
        side = Side.BUY if n % 2 == 0 else Side.SELL
        fills.append(execution(f"e{n}", side, 1, 100.0))

    state = apply_all(position_state(), fills)

    assert len(state.applied) == model.APPLIED_IDS_KEPT
    assert state.applied[-1] == fills[-1].exec_id
