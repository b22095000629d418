"""The pure position transitions of ``actors.model``, rule by rule."""

from __future__ import annotations

import math
from datetime import date, timedelta

import msgspec
import pytest
from _actor_kit import (
    ACCOUNT,
    DAY,
    MAX_ATTEMPTS,
    OPEN,
    SYMBOL,
    apply_all,
    at,
    bar,
    buy,
    execution,
    long_position,
    position_state,
    sell,
    short_position,
)

from actors import model
from actors.state import (
    ClosedTrade,
    ExitReason,
    Intent,
    IntentKind,
    Mode,
    Origin,
    PartialExit,
    PositionState,
    StopOrder,
    attempt_key,
)
from brokers.base import Execution, OrderType, Side

NEXT_DAY = DAY + timedelta(days=1)
PIVOT = 101.0


def enter(
    state: PositionState,
    *,
    pivot: float = PIVOT,
    side: Side = Side.BUY,
    qty: float = 100.0,
    day: date | None = None,
) -> tuple[PositionState, Intent]:
    return model.begin_entry(
        state,
        day=state.trading_day if day is None else day,
        pivot=pivot,
        side=side,
        qty=qty,
        now=OPEN,
        max_attempts=MAX_ATTEMPTS,
    )


def only_trade(applied: model.Applied) -> ClosedTrade:
    assert len(applied.closed) == 1
    return applied.closed[0]


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


# -- client order ids and intents ---------------------------------------------------------


def test_client_order_ids_are_deterministic_and_name_their_parts() -> None:
    cid = model.client_order_id(ACCOUNT, SYMBOL, DAY, 2, "entry")

    assert cid == model.client_order_id(ACCOUNT, SYMBOL, DAY, 2, "entry")
    assert cid.startswith("sw-")
    assert cid.endswith(f"-{SYMBOL}-260105-2-entry")
    assert ACCOUNT not in cid  # the account is hashed, not printed


@pytest.mark.parametrize(
    "other",
    [
        ("PA-OTHER", SYMBOL, DAY, 1, "entry"),
        (ACCOUNT, "MSFT", DAY, 1, "entry"),
        (ACCOUNT, SYMBOL, NEXT_DAY, 1, "entry"),
        (ACCOUNT, SYMBOL, DAY, 2, "entry"),
        (ACCOUNT, SYMBOL, DAY, 1, "exit1"),
    ],
)
def test_client_order_ids_differ_in_every_part(other: tuple[str, str, date, int, str]) -> None:
    assert model.client_order_id(*other) != model.client_order_id(ACCOUNT, SYMBOL, DAY, 1, "entry")


def test_an_entry_records_its_intent_and_counts_the_attempt() -> None:
    state = position_state()

    new, intent = enter(state, pivot=PIVOT, side=Side.BUY, qty=50)

    assert intent.client_order_id == model.client_order_id(ACCOUNT, SYMBOL, DAY, 1, "entry")
    assert (intent.kind, intent.side, intent.qty, intent.order_type) == (
        IntentKind.ENTRY,
        Side.BUY,
        50,
        OrderType.MARKET,
    )
    assert new.intents == (intent,)
    assert new.attempts == {attempt_key(DAY, PIVOT, Side.BUY): 1}
    assert (new.entries_today, new.pivot, new.seq) == (1, PIVOT, state.seq + 1)


def test_the_same_decision_after_a_crash_gives_the_same_client_order_id() -> None:
    state = position_state()
    stored = msgspec.msgpack.decode(msgspec.msgpack.encode(state), type=PositionState)

    first = enter(state)
    after_crash = enter(stored)

    assert first == after_crash


def test_no_entry_while_a_position_is_open() -> None:
    with pytest.raises(model.EntryRefused, match="already open"):
        enter(long_position())
    with pytest.raises(model.EntryRefused, match="already open"):
        enter(short_position())


def test_no_entry_while_an_entry_is_in_flight() -> None:
    state, _ = enter(position_state(), side=Side.BUY)

    with pytest.raises(model.EntryRefused, match="in flight"):
        enter(state, side=Side.SELL, pivot=99.0)


def test_no_automated_entry_in_watch_mode() -> None:
    with pytest.raises(model.EntryRefused, match="watch"):
        enter(position_state(mode=Mode.WATCH))


def test_attempts_count_at_intent_time_and_survive_rejections() -> None:
    state = position_state()
    for number in range(1, MAX_ATTEMPTS + 1):
        state, intent = enter(state)
        assert state.attempts_for(DAY, PIVOT, Side.BUY) == number
        state = model.resolve_intent(state, intent.client_order_id, done=True)  # rejected
        assert state.attempts_for(DAY, PIVOT, Side.BUY) == number

    with pytest.raises(model.EntryRefused, match="attempts"):
        enter(state)


def test_attempts_are_counted_per_pivot_and_side() -> None:
    state = position_state(
        attempts={attempt_key(DAY, PIVOT, Side.BUY): MAX_ATTEMPTS},
    )

    other_side, _ = enter(state, side=Side.SELL)
    other_pivot, _ = enter(state, pivot=PIVOT + 1)

    assert other_side.attempts_for(DAY, PIVOT, Side.SELL) == 1
    assert other_pivot.attempts_for(DAY, PIVOT + 1, Side.BUY) == 1
    with pytest.raises(model.EntryRefused):
        enter(state)


def test_every_entry_of_a_day_gets_its_own_client_order_id() -> None:
    state, first = enter(position_state(), pivot=PIVOT)
    state = model.resolve_intent(state, first.client_order_id, done=True)

    _, second = enter(state, pivot=99.0, side=Side.SELL)

    assert first.client_order_id != second.client_order_id
    assert second.client_order_id.endswith("-2-entry")


def test_an_entry_on_a_new_trading_day_rolls_the_day_first() -> None:
    state = position_state(attempts={attempt_key(DAY, PIVOT, Side.BUY): MAX_ATTEMPTS})

    new, intent = enter(state, day=NEXT_DAY)

    assert new.trading_day == NEXT_DAY
    assert new.attempts == {attempt_key(NEXT_DAY, PIVOT, Side.BUY): 1}
    assert intent.client_order_id == model.client_order_id(ACCOUNT, SYMBOL, NEXT_DAY, 1, "entry")


def test_an_entry_for_a_past_trading_day_is_refused() -> None:
    with pytest.raises(model.BadInput, match="before the trading day"):
        enter(position_state(trading_day=NEXT_DAY), day=DAY)


@pytest.mark.parametrize(
    ("qty", "pivot", "order_type", "price"),
    [
        (math.nan, PIVOT, OrderType.MARKET, None),
        (0.0, PIVOT, OrderType.MARKET, None),
        (10.0, -1.0, OrderType.MARKET, None),
        (10.0, math.inf, OrderType.MARKET, None),
        (10.0, PIVOT, OrderType.LIMIT, None),
        (10.0, PIVOT, OrderType.LIMIT, math.nan),
    ],
)
def test_an_entry_with_impossible_numbers_is_refused(
    qty: float, pivot: float, order_type: OrderType, price: float | None
) -> None:
    with pytest.raises(model.BadInput):
        model.begin_entry(
            position_state(),
            day=DAY,
            pivot=pivot,
            side=Side.BUY,
            qty=qty,
            now=OPEN,
            max_attempts=MAX_ATTEMPTS,
            order_type=order_type,
            price=price,
        )


def test_an_order_intent_gets_a_deterministic_id_from_its_tag() -> None:
    state = long_position()

    new, intent = model.begin_order(
        state, kind=IntentKind.EXIT, side=Side.SELL, qty=100, now=OPEN, tag="exit1", reason="eod"
    )

    assert intent.client_order_id == model.client_order_id(ACCOUNT, SYMBOL, DAY, 0, "exit1")
    assert (intent.kind, intent.reason) == (IntentKind.EXIT, "eod")
    assert new.intents == (intent,)
    assert new.seq == state.seq + 1


def test_an_order_with_the_id_of_one_in_flight_is_refused() -> None:
    state, _ = model.begin_order(
        long_position(), kind=IntentKind.EXIT, side=Side.SELL, qty=100, now=OPEN, tag="exit1"
    )

    with pytest.raises(model.EntryRefused, match="already exists"):
        model.begin_order(
            state, kind=IntentKind.EXIT, side=Side.SELL, qty=100, now=OPEN, tag="exit1"
        )


@pytest.mark.parametrize(
    ("kind", "qty", "order_type", "price"),
    [
        (IntentKind.ENTRY, 10.0, OrderType.MARKET, None),
        (IntentKind.EXIT, math.inf, OrderType.MARKET, None),
        (IntentKind.EXIT, -5.0, OrderType.MARKET, None),
        (IntentKind.STOP, 10.0, OrderType.STOP, None),
        (IntentKind.STOP, 10.0, OrderType.STOP, 0.0),
    ],
)
def test_an_order_with_impossible_inputs_is_refused(
    kind: IntentKind, qty: float, order_type: OrderType, price: float | None
) -> None:
    with pytest.raises(model.BadInput):
        model.begin_order(
            long_position(),
            kind=kind,
            side=Side.SELL,
            qty=qty,
            now=OPEN,
            tag="x",
            order_type=order_type,
            price=price,
        )


def test_resolving_an_intent_attaches_the_broker_order_id_and_arms_its_stop() -> None:
    state, intent = model.begin_order(
        long_position(),
        kind=IntentKind.STOP,
        side=Side.SELL,
        qty=100,
        now=OPEN,
        tag="stop1",
        order_type=OrderType.STOP,
        price=95.0,
    )
    stop = StopOrder(client_order_id=intent.client_order_id, side=Side.SELL, price=95.0, qty=100)
    state = model.set_stop(state, stop)

    new = model.resolve_intent(state, intent.client_order_id, order_id="B7")

    resolved = new.intent(intent.client_order_id)
    assert resolved is not None
    assert resolved.order_id == "B7"
    assert new.stop == msgspec.structs.replace(stop, order_id="B7", status="live")
    assert model.resolve_intent(new, intent.client_order_id, order_id="B7") is new


def test_resolving_an_intent_as_done_drops_it() -> None:
    state, intent = enter(position_state())

    new = model.resolve_intent(state, intent.client_order_id, done=True)

    assert new.intents == ()
    assert new.seq == state.seq + 1


def test_resolving_an_unknown_intent_changes_nothing() -> None:
    state = position_state()

    assert model.resolve_intent(state, "nope", done=True) is state
    assert model.resolve_intent(state, "nope", order_id="B1") is state


def test_set_stop_records_valid_stops_only() -> None:
    state = long_position()
    stop = StopOrder(client_order_id="s", side=Side.SELL, price=95.0, qty=100)

    new = model.set_stop(state, stop)

    assert new.stop == stop
    assert new.seq == state.seq + 1
    assert model.set_stop(new, stop) is new
    assert model.set_stop(new, None).stop is None
    for bad in (
        msgspec.structs.replace(stop, price=math.nan),
        msgspec.structs.replace(stop, qty=0.0),
    ):
        with pytest.raises(model.BadInput):
            model.set_stop(state, bad)


# -- day rollover ---------------------------------------------------------------------------


def test_a_new_trading_day_resets_the_day_but_never_the_position() -> None:
    state, intent = enter(position_state())
    state = apply_all(state, [buy("e1", 100, 102.0, client_order_id=intent.client_order_id)])
    state = apply_all(state, [sell("e2", 40, 104.0)])
    state = msgspec.structs.replace(
        state,
        trades_today=3,
        attempts={**state.attempts, attempt_key(NEXT_DAY, 99.0, Side.SELL): 1},
    )

    new = model.roll_day(state, NEXT_DAY)

    assert new.trading_day == NEXT_DAY
    assert new.attempts == {attempt_key(NEXT_DAY, 99.0, Side.SELL): 1}
    assert (new.realized_pnl_today, new.trades_today, new.entries_today) == (0.0, 0, 0)
    kept = ("qty", "avg_price", "opened_at", "entries", "exits", "partials", "trade_realized")
    for name in kept:
        assert getattr(new, name) == getattr(state, name), name
    assert new.seq == state.seq + 1


@pytest.mark.parametrize("day", [DAY, DAY - timedelta(days=1)])
def test_the_same_or_an_earlier_day_changes_nothing(day: date) -> None:
    state = position_state(attempts={attempt_key(DAY, PIVOT, Side.BUY): 1})

    assert model.roll_day(state, day) is state


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
