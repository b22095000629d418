"""The reference pivot-breakout strategy, one decision at a time."""

from __future__ import annotations

import msgspec
import pytest

from actors import model
from actors.state import IntentKind, Mode, PositionState, attempt_key
from actors.strategy import (
    Action,
    Enter,
    ExitPartial,
    Flatten,
    MoveStop,
    PivotBreakout,
    SetLevels,
    StrategyParams,
)
from brokers.base import Bar, Side
from tests.unit.actors._actor_kit import (
    DAY,
    SESSION,
    bar,
    flat_bars,
    long_position,
    position_state,
    ring_of,
    sell,
    short_position,
)

R, S = 101.0, 99.0
LEVELS = {"resistance": R, "support": S}
WATCHLIST = StrategyParams(resistance=R, support=S)
LAST_ENTRY_MINUTE = 374  # a bar opening then ends 15 minutes before the 390-minute session ends
EOD_MINUTE = 384  # a bar opening then ends 5 minutes before the close


def decide(
    state: PositionState,
    history: list[Bar],
    current: Bar,
    params: StrategyParams = WATCHLIST,
) -> list[Action]:
    """Decide on ``current`` with ``history`` and ``current`` in the buffer, as the actor does."""
    return PivotBreakout(params).decide(state, ring_of([*history, current]), current, SESSION)


def entries(actions: list[Action]) -> list[Enter]:
    return [a for a in actions if isinstance(a, Enter)]


def watched(**changes: object) -> PositionState:
    """A flat state that already holds the watchlist levels of today."""
    return position_state(levels=LEVELS, levels_day=DAY, **changes)


WARM = flat_bars(20, 100.0)  # 20 bars between the pivots: the warm-up, no break yet


# -- entries ----------------------------------------------------------------------------


def test_a_close_above_resistance_after_warm_up_enters_long_with_the_stop_at_the_pivot() -> None:
    actions = decide(watched(), WARM, bar(20, 102.0))

    assert actions == [
        Enter(side=Side.BUY, qty=100.0, pivot=R, stop_price=R, targets=(103.0, 104.0))
    ]


def test_a_close_below_support_enters_short_with_the_stop_at_the_pivot() -> None:
    actions = decide(watched(), WARM, bar(20, 98.0))

    assert actions == [
        Enter(side=Side.SELL, qty=100.0, pivot=S, stop_price=S, targets=(97.0, 96.0))
    ]


def test_a_break_by_a_hair_keeps_the_minimum_risk() -> None:
    (entry,) = entries(decide(watched(), WARM, bar(20, 101.1)))

    risk = 101.1 * WATCHLIST.min_risk_pct
    assert entry.stop_price == pytest.approx(101.1 - risk, abs=1e-4)
    assert entry.targets == pytest.approx((101.1 + risk, 101.1 + 2 * risk), abs=1e-4)
    assert entry.stop_price < R


@pytest.mark.parametrize("warm", [0, 1, 19])
def test_no_entry_during_the_warm_up(warm: int) -> None:
    history = flat_bars(warm, 100.0, first_minute=20 - warm)

    assert entries(decide(watched(), history, bar(20, 102.0))) == []


def test_no_entry_without_a_cross() -> None:
    already_above = [*WARM[:-1], bar(19, 101.5)]

    assert decide(watched(), already_above, bar(20, 102.0)) == []
    assert decide(watched(), WARM, bar(20, R)) == []  # touching is not breaking


def test_a_close_at_the_pivot_then_above_is_a_cross() -> None:
    at_pivot = [*WARM[:-1], bar(19, R)]

    assert len(entries(decide(watched(), at_pivot, bar(20, 102.0)))) == 1


@pytest.mark.parametrize(
    ("minute", "allowed"), [(LAST_ENTRY_MINUTE, True), (LAST_ENTRY_MINUTE + 1, False)]
)
def test_no_entry_near_the_close(minute: int, allowed: bool) -> None:
    history = flat_bars(20, 100.0, first_minute=minute - 20)

    assert bool(entries(decide(watched(), history, bar(minute, 102.0)))) is allowed


@pytest.mark.parametrize(("used", "allowed"), [(0, True), (1, True), (2, False)])
def test_at_most_two_attempts_per_pivot_and_side_per_day(used: int, allowed: bool) -> None:
    state = watched(attempts={attempt_key(DAY, R, Side.BUY): used} if used else {})

    assert bool(entries(decide(state, WARM, bar(20, 102.0)))) is allowed


def test_spent_attempts_of_one_side_leave_the_other_side_free() -> None:
    state = watched(attempts={attempt_key(DAY, R, Side.BUY): 2})

    assert [e.side for e in entries(decide(state, WARM, bar(20, 98.0)))] == [Side.SELL]


def test_no_entry_while_an_entry_is_in_flight() -> None:
    state, _ = model.begin_entry(
        watched(), day=DAY, pivot=S, side=Side.SELL, qty=100, now=SESSION.open, max_attempts=2
    )

    assert decide(state, WARM, bar(20, 102.0)) == []


def test_nothing_at_all_for_a_symbol_in_watch_mode() -> None:
    assert decide(watched(mode=Mode.WATCH), WARM, bar(20, 102.0)) == []
    assert decide(long_position(mode=Mode.WATCH), WARM, bar(EOD_MINUTE, 102.0)) == []


def test_a_late_bar_is_never_traded_on() -> None:
    ring = ring_of([*WARM, bar(20, 100.0), bar(21, 100.0)])

    late = bar(20, 102.0)  # the buffer already holds newer bars

    assert PivotBreakout(WATCHLIST).decide(watched(), ring, late, SESSION) == []


def test_the_decision_is_the_same_whether_or_not_the_buffer_holds_the_bar() -> None:
    current = bar(20, 102.0)
    strategy = PivotBreakout(WATCHLIST)

    held = strategy.decide(watched(), ring_of([*WARM, current]), current, SESSION)
    not_held = strategy.decide(watched(), ring_of(WARM), current, SESSION)

    assert held == not_held != []


def test_an_empty_buffer_is_no_history() -> None:
    current = bar(20, 102.0)

    assert PivotBreakout(WATCHLIST).decide(watched(), ring_of([]), current, SESSION) == []


def test_deciding_changes_neither_the_state_nor_the_buffer() -> None:
    state, ring, current = watched(), ring_of([*WARM, bar(20, 102.0)]), bar(20, 102.0)
    blob, encoded = ring.to_bytes(), msgspec.msgpack.encode(state)

    first = PivotBreakout(WATCHLIST).decide(state, ring, current, SESSION)

    assert first == PivotBreakout(WATCHLIST).decide(state, ring, current, SESSION)
    assert (ring.to_bytes(), msgspec.msgpack.encode(state)) == (blob, encoded)


# -- pivots -------------------------------------------------------------------------------


def test_watchlist_pivots_are_recorded_once() -> None:
    assert decide(position_state(), WARM[:-1], WARM[-1]) == [
        SetLevels({"resistance": R, "support": S})
    ]
    assert decide(watched(), WARM[:-1], WARM[-1]) == []


def test_a_single_watchlist_pivot_is_used_alone() -> None:
    params = StrategyParams(resistance=R)

    actions = decide(position_state(), WARM, bar(20, 98.0), params)

    assert actions == [SetLevels({"resistance": R})]


OPENING = [
    bar(m, 100.0, high=100.5 + (m % 5) / 10, low=99.5 - (m % 3) / 10) for m in range(15)
]  # highs up to 100.9, lows down to 99.3
OPENING_LEVELS = {"resistance": 100.9, "support": 99.3}
NO_PIVOTS = StrategyParams()


def test_without_watchlist_pivots_the_opening_range_sets_them_when_it_ends() -> None:
    assert decide(position_state(), OPENING[:13], OPENING[13], NO_PIVOTS) == []

    actions = decide(position_state(), OPENING[:14], OPENING[14], NO_PIVOTS)

    assert actions == [SetLevels(OPENING_LEVELS)]


def test_an_opening_range_with_a_gap_sets_no_pivots() -> None:
    gapped = [b for b in OPENING if b.ts != OPENING[7].ts]

    assert decide(position_state(), gapped[:-1], gapped[-1], NO_PIVOTS) == []


def test_the_opening_range_break_enters_at_the_range_high() -> None:
    state = model.set_levels(position_state(), DAY, OPENING_LEVELS)
    history = [*OPENING, *flat_bars(5, 100.0, first_minute=15)]

    actions = decide(state, history, bar(20, 101.5), NO_PIVOTS)

    assert [(e.side, e.pivot, e.stop_price) for e in entries(actions)] == [(Side.BUY, 100.9, 100.9)]
    assert not any(isinstance(a, SetLevels) for a in actions)


def test_yesterdays_pivots_are_not_todays() -> None:
    yesterday = position_state(
        levels={"resistance": 50.0, "support": 40.0}, levels_day=DAY.replace(day=2)
    )

    assert decide(yesterday, OPENING[:14], OPENING[14], NO_PIVOTS) == [SetLevels(OPENING_LEVELS)]
    assert decide(yesterday, OPENING[:9], OPENING[9], NO_PIVOTS) == []


# -- managing a position -------------------------------------------------------------------


def with_targets(state: PositionState, t1: float, t2: float) -> PositionState:
    """``state`` as an entry leaves it: today's pivots and the targets recorded."""
    return msgspec.structs.replace(state, targets=(t1, t2), levels=LEVELS, levels_day=DAY)


LONG = with_targets(long_position(100, 102.0), 103.0, 104.0)
SHORT = with_targets(short_position(100, 98.0), 97.0, 96.0)


def test_target_one_moves_the_stop_to_break_even_then_takes_half() -> None:
    actions = decide(LONG, WARM, bar(20, 102.8, high=103.1))

    assert actions == [MoveStop(price=102.0, qty=50.0), ExitPartial(qty=50.0, reason="target1")]


def test_target_one_of_a_short() -> None:
    actions = decide(SHORT, WARM, bar(20, 97.2, low=96.9))

    assert actions == [MoveStop(price=98.0, qty=50.0), ExitPartial(qty=50.0, reason="target1")]


def test_the_partial_is_taken_once() -> None:
    after = model.apply_fill(LONG, sell("p1", 50, 103.0)).state

    assert decide(after, WARM, bar(20, 103.0, high=103.5)) == []


def test_an_odd_size_takes_the_smaller_half_and_one_share_takes_none() -> None:
    odd = with_targets(long_position(5, 102.0), 103.0, 104.0)
    one = with_targets(long_position(1, 102.0), 103.0, 104.0)

    assert decide(odd, WARM, bar(20, 103.0, high=103.1)) == [
        MoveStop(price=102.0, qty=3.0),
        ExitPartial(qty=2.0, reason="target1"),
    ]
    assert decide(one, WARM, bar(20, 103.0, high=103.1)) == []


@pytest.mark.parametrize(
    ("state", "reaching"),
    [(LONG, bar(20, 100.0, high=104.0)), (SHORT, bar(20, 100.0, low=96.0))],
)
def test_target_two_flattens_the_rest(state: PositionState, reaching: Bar) -> None:
    assert decide(state, WARM, reaching) == [Flatten("target")]


def test_the_end_of_the_day_flattens_whatever_the_price() -> None:
    history = flat_bars(20, 102.0, first_minute=EOD_MINUTE - 20)

    assert decide(LONG, history, bar(EOD_MINUTE - 1, 102.0)) == []
    assert decide(LONG, history, bar(EOD_MINUTE, 102.0)) == [Flatten("eod")]


def test_a_recovered_position_without_targets_is_only_closed_at_the_end_of_the_day() -> None:
    adopted = model.adopt(watched(), 100, 102.0, SESSION.open, Mode.MANAGED)

    assert decide(adopted, WARM, bar(20, 150.0, high=200.0)) == []
    assert decide(adopted, WARM, bar(EOD_MINUTE, 102.0)) == [Flatten("eod")]


@pytest.mark.parametrize("kind", [IntentKind.PARTIAL, IntentKind.EXIT])
def test_nothing_new_while_an_exit_is_in_flight(kind: IntentKind) -> None:
    state, _ = model.begin_order(LONG, kind=kind, side=Side.SELL, qty=50, now=SESSION.open, tag="x")

    assert decide(state, WARM, bar(20, 104.0, high=104.5)) == []
    assert decide(state, WARM, bar(EOD_MINUTE, 102.0)) == []
