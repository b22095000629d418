"""Whole trading days: the reference strategy driving the pure model, fills at once.

``Day`` is a stand-in for the actor shell and the venue (what cannot run in a pure
test): it rolls the day, marks the bar, asks the strategy, turns actions into
intents with the model and fills every order immediately at the bar's close; a
resting stop fills at its price when a bar reaches it.
"""

from __future__ import annotations

from datetime import date, datetime, timedelta

import msgspec
import pytest

from actors import model
from actors.bars import BarRing
from actors.snapshot import decode_snapshot, encode_snapshot
from actors.state import SCHEMA_VERSION, ClosedTrade, IntentKind, StopOrder, attempt_key
from actors.strategy import (
    Action,
    Enter,
    ExitPartial,
    Flatten,
    MoveStop,
    PivotBreakout,
    Session,
    SetLevels,
    StrategyParams,
)
from brokers.base import Bar, OrderType, Side
from tests.unit.actors._actor_kit import (
    CLOSE,
    DAY,
    OPEN,
    SYMBOL,
    at,
    bar,
    execution,
    flat_bars,
    position_state,
)

R, S = 101.0, 90.0
PARAMS = StrategyParams(resistance=R, support=S)
EOD_MINUTE = 384


def session_of(day: date) -> Session:
    return Session(open=at(0, day), close=at(0, day) + (CLOSE - OPEN), bar_seconds=60)


class Day:
    """Plays bars through the strategy and the model (see the module docstring)."""

    def __init__(self, params: StrategyParams = PARAMS, capacity: int = 240) -> None:
        self.params = params
        self.strategy = PivotBreakout(params)
        self.state = position_state()
        self.bars = BarRing(SYMBOL, capacity)
        self.trades: list[ClosedTrade] = []
        self.intents: list[str] = []
        self._fills = 0

    def play(self, bars: list[Bar]) -> list[Action]:
        actions: list[Action] = []
        for item in bars:
            actions.extend(self.feed(item))
        return actions

    def feed(self, item: Bar) -> list[Action]:
        self._trigger_stop(item)
        self.state = model.roll_day(self.state, item.ts.date())
        self.state = model.mark_bar(self.state, item)
        self.bars.append(item)
        actions = self.strategy.decide(self.state, self.bars, item, session_of(item.ts.date()))
        for action in actions:
            self._act(action, item)
        return actions

    def _act(self, action: Action, item: Bar) -> None:
        now = item.ts + timedelta(seconds=60)
        match action:
            case SetLevels(levels=levels):
                self.state = model.set_levels(self.state, self.state.trading_day, levels)
            case Enter():
                self._enter(action, item.close, now)
            case MoveStop(price=price, qty=qty):
                assert self.state.stop is not None
                stop = msgspec.structs.replace(self.state.stop, price=price, qty=qty)
                self.state = model.set_stop(self.state, stop)
            case ExitPartial(qty=qty, reason=reason):
                tag = f"partial{len(self.state.partials) + 1}"
                self._order(IntentKind.PARTIAL, qty, tag, reason, item.close, now)
            case Flatten(reason=reason):
                self._cancel_stop()
                tag = f"exit{len(self.state.exits) + 1}"
                self._order(IntentKind.EXIT, abs(self.state.qty), tag, reason, item.close, now)

    def _enter(self, action: Enter, price: float, now: datetime) -> None:
        state, intent = model.begin_entry(
            self.state,
            day=self.state.trading_day,
            pivot=action.pivot,
            side=action.side,
            qty=action.qty,
            now=now,
            max_attempts=self.params.max_attempts,
        )
        self.intents.append(intent.client_order_id)
        self.state = msgspec.structs.replace(
            state, targets=action.targets, planned_stop=action.stop_price
        )
        self._fill(intent.client_order_id, action.side, action.qty, price, now)
        self.state, stop = model.begin_order(
            self.state,
            kind=IntentKind.STOP,
            side=action.side.opposite,
            qty=action.qty,
            now=now,
            tag=f"stop{self.state.seq}",
            order_type=OrderType.STOP,
            price=action.stop_price,
        )
        self.intents.append(stop.client_order_id)
        self.state = model.set_stop(
            self.state,
            StopOrder(stop.client_order_id, stop.side, action.stop_price, stop.qty, status="live"),
        )

    def _order(
        self, kind: IntentKind, qty: float, tag: str, reason: str, price: float, now: datetime
    ) -> None:
        side = Side.SELL if self.state.qty > 0 else Side.BUY
        self.state, intent = model.begin_order(
            self.state, kind=kind, side=side, qty=qty, now=now, tag=tag, reason=reason
        )
        self.intents.append(intent.client_order_id)
        self._fill(intent.client_order_id, side, qty, price, now)

    def _cancel_stop(self) -> None:
        if self.state.stop is not None:
            cid = self.state.stop.client_order_id
            self.state = model.set_stop(model.resolve_intent(self.state, cid, done=True), None)

    def _trigger_stop(self, item: Bar) -> None:
        stop = self.state.stop
        if stop is None or self.state.is_flat:
            return
        hit = item.low <= stop.price if self.state.qty > 0 else item.high >= stop.price
        if hit:
            self._fill(stop.client_order_id, stop.side, abs(self.state.qty), stop.price, item.ts)

    def _fill(self, cid: str, side: Side, qty: float, price: float, ts: datetime) -> None:
        self._fills += 1
        ex = execution(f"x{self._fills}", side, qty, price, ts=ts, client_order_id=cid)
        applied = model.apply_fill(self.state, ex)
        self.state = applied.state
        self.trades.extend(applied.closed)
        if applied.closed:  # the leftover stop is canceled
            for intent in self.state.intents:
                self.state = model.resolve_intent(self.state, intent.client_order_id, done=True)


def warm(day: date = DAY, first_minute: int = 0) -> list[Bar]:
    return [bar(first_minute + m, 100.0, day=day) for m in range(20)]


def test_a_winning_day_partial_at_target_one_break_even_stop_rest_at_target_two() -> None:
    day = Day()
    day.play(warm())

    entry = day.feed(bar(20, 102.0))
    assert [a for a in entry if isinstance(a, Enter)] == [
        Enter(side=Side.BUY, qty=100.0, pivot=R, stop_price=R, targets=(103.0, 104.0))
    ]
    assert day.state.stop is not None
    assert (day.state.stop.price, day.state.stop.qty) == (R, 100.0)

    assert day.feed(bar(21, 102.5, high=103.2)) == [
        MoveStop(price=102.0, qty=50.0),
        ExitPartial(qty=50.0, reason="target1"),
    ]
    assert day.state.qty == 50.0
    assert day.state.stop is not None
    assert (day.state.stop.price, day.state.stop.qty) == (102.0, 50.0)  # break-even
    assert [p.reason for p in day.state.partials] == ["partial"]

    assert day.feed(bar(22, 104.0, high=104.1)) == [Flatten("target")]

    (trade,) = day.trades
    assert (trade.side, trade.qty, trade.entry_price, trade.exit_reason) == (
        Side.BUY,
        100.0,
        102.0,
        "target",
    )
    assert trade.exit_price == pytest.approx(103.25)
    assert trade.realized_pnl == pytest.approx(50 * 0.5 + 50 * 2.0)
    assert trade.mae == 0.0
    assert trade.mfe == pytest.approx(2.1)
    assert day.state.is_flat
    assert (day.state.trades_today, day.state.intents) == (1, ())
    assert day.state.realized_pnl_today == pytest.approx(125.0)


def test_after_the_partial_the_break_even_stop_closes_the_rest_flat() -> None:
    day = Day()
    day.play([*warm(), bar(20, 102.0), bar(21, 102.5, high=103.2)])

    day.feed(bar(22, 102.2, low=101.8))

    (trade,) = day.trades
    assert trade.exit_reason == "stop"
    assert trade.realized_pnl == pytest.approx(25.0)  # the partial's gain, the rest at cost
    assert trade.mae == 0.0  # the bar's low came after the stop had filled


def stopped_attempt(first: int, day: date = DAY) -> list[Bar]:
    """A break of R at ``first``, stopped out at the pivot on the next bar."""
    return [
        bar(first, 102.0, day=day),
        bar(first + 1, 100.5, day=day),
        bar(first + 2, 100.0, day=day),
    ]


def test_two_stopped_attempts_spend_the_pivot_for_the_day_but_not_the_other_side() -> None:
    day = Day(StrategyParams(resistance=R, support=99.0))
    day.play([*warm(), *stopped_attempt(20), *stopped_attempt(23)])

    third_break = day.feed(bar(26, 102.0))

    assert [a for a in third_break if isinstance(a, Enter)] == []
    assert day.state.attempts == {attempt_key(DAY, R, Side.BUY): 2}
    assert [t.exit_reason for t in day.trades] == ["stop", "stop"]
    assert day.state.realized_pnl_today == pytest.approx(-200.0)
    assert day.state.trades_today == 2
    assert len(set(day.intents)) == len(day.intents)  # no client order id twice

    short = day.play([bar(27, 100.0), bar(28, 98.0)])

    assert [e.side for e in short if isinstance(e, Enter)] == [Side.SELL]


def test_a_new_day_gives_the_pivot_its_attempts_back() -> None:
    day = Day()
    day.play([*warm(), *stopped_attempt(20), *stopped_attempt(23)])
    assert day.state.attempts_for(DAY, R, Side.BUY) == 2

    tomorrow = DAY + timedelta(days=1)
    actions = day.play([*warm(tomorrow), bar(20, 102.0, day=tomorrow)])

    assert [e.pivot for e in actions if isinstance(e, Enter)] == [R]
    assert day.state.attempts == {attempt_key(tomorrow, R, Side.BUY): 1}
    assert (day.state.trades_today, day.state.realized_pnl_today) == (0, 0.0)


def test_a_position_still_open_near_the_close_is_flattened_at_the_end_of_the_day() -> None:
    day = Day()
    day.play(warm(first_minute=350))
    day.feed(bar(370, 102.0))
    assert not day.state.is_flat

    assert day.play([bar(m, 102.2) for m in range(371, EOD_MINUTE)]) == []
    assert day.feed(bar(EOD_MINUTE, 102.3)) == [Flatten("eod")]

    (trade,) = day.trades
    assert trade.exit_reason == "eod"
    assert trade.realized_pnl == pytest.approx(30.0)


def test_no_entry_in_the_last_minutes_of_the_session() -> None:
    day = Day()
    day.play(warm(first_minute=360))

    assert [a for a in day.feed(bar(380, 102.0)) if isinstance(a, Enter)] == []


def test_an_opening_range_day_without_watchlist_pivots() -> None:
    day = Day(StrategyParams())
    opening = [bar(m, 100.0, high=100.5, low=99.5) for m in range(15)]

    actions = day.play([*opening, *flat_bars(5, 100.0, first_minute=15), bar(20, 100.8)])

    assert actions == [
        SetLevels({"resistance": 100.5, "support": 99.5}),
        Enter(side=Side.BUY, qty=100.0, pivot=100.5, stop_price=100.5, targets=(101.1, 101.4)),
    ]


def test_a_restart_before_the_entry_decides_the_same_order_with_the_same_id() -> None:
    day = Day()
    day.play(warm())
    blob = encode_snapshot(day.state, day.bars)
    breakout = bar(20, 102.0)

    day.feed(breakout)
    restarted = Day()
    restarted.state, restarted.bars = decode_snapshot(blob, SCHEMA_VERSION, SYMBOL, 240)
    restarted.feed(breakout)

    assert restarted.intents == day.intents
    assert restarted.state == day.state
