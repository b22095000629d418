"""The strategy's quiet bars (``PivotBreakout.quiet``) against ``decide`` itself (hypothesis).

The position actor skips ``decide`` for a bar that ``quiet`` called quiet, so
the one property that matters is: on every such bar ``decide`` returns nothing.
The states cover flat and open positions (long, short), levels of today, of an
earlier day or none, watchlist levels that agree or not, intents of every kind
in flight, partials taken or not, every mode, and bar times across the whole
session (opening range, entry cutoff, end-of-day window).
"""

from __future__ import annotations

import math
from datetime import timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from actors.state import IntentKind, Mode, PartialExit, PositionState, attempt_key
from actors.strategy import PivotBreakout, StrategyParams
from brokers.base import Bar, Side
from tests.unit.actors._actor_kit import (
    DAY,
    OPEN,
    SESSION,
    bar,
    flat_bars,
    intents_in_flight,
    position_state,
    ring_of,
)

_DAY_BEFORE = DAY - timedelta(days=3)
_MINUTES = st.integers(min_value=-30, max_value=420)  # before the open to after the close
_PRICES = st.floats(min_value=95.0, max_value=105.0, allow_nan=False).map(lambda p: round(p, 2))


@st.composite
def _states(draw: st.DrawFn) -> PositionState:
    qty = draw(st.sampled_from([0.0, 0.0, 1.0, 100.0, -1.0, -100.0]))
    levels_kind = draw(st.sampled_from(["today", "earlier", "none"]))
    levels: dict[str, float] = {}
    if levels_kind != "none":
        levels = {"resistance": draw(_PRICES), "support": draw(_PRICES)}
        if draw(st.booleans()):
            del levels[draw(st.sampled_from(["resistance", "support"]))]
    kinds = draw(st.lists(st.sampled_from(list(IntentKind)), max_size=2, unique=True))
    intents = intents_in_flight(kinds, OPEN, 10.0)
    attempts = {
        attempt_key(DAY, level, side): draw(st.integers(min_value=0, max_value=3))
        for level, side in (
            (levels.get("resistance"), Side.BUY),
            (levels.get("support"), Side.SELL),
        )
        if level is not None and draw(st.booleans())
    }
    targets = tuple(draw(st.lists(_PRICES, max_size=2)))
    partials = (PartialExit(OPEN, 100.0, 1.0, "target1"),) if draw(st.booleans()) else ()
    return position_state(
        qty=qty,
        avg_price=100.0 if qty else 0.0,
        opened_at=OPEN if qty else None,
        levels=levels,
        attempts=attempts,
        levels_day=(DAY if levels_kind == "today" else _DAY_BEFORE) if levels else None,
        intents=intents,
        targets=targets,
        partials=partials,
        mode=draw(st.sampled_from([Mode.MANAGED, Mode.MANAGED, Mode.WATCH])),
    )


@st.composite
def _params(draw: st.DrawFn) -> StrategyParams:
    if draw(st.booleans()):
        return StrategyParams()
    return StrategyParams(resistance=draw(_PRICES), support=draw(_PRICES))


@st.composite
def _bars(draw: st.DrawFn) -> Bar:
    close = draw(_PRICES)
    high = close + draw(st.sampled_from([0.0, 0.01, 0.5, 3.0]))
    low = close - draw(st.sampled_from([0.0, 0.01, 0.5, 3.0]))
    return bar(draw(_MINUTES), close, high=high, low=low, open_=close)


def _is_quiet(strategy: PivotBreakout, state: PositionState, asked_at: float, b: Bar) -> bool:
    band = strategy.quiet(state, SESSION, asked_at)
    if band is None:
        return False
    ts = b.ts.timestamp()
    return (
        band.since <= ts < band.until
        and band.close_lo <= b.close <= band.close_hi
        and b.high < band.high_below
        and b.low > band.low_above
    )


@settings(max_examples=3000, deadline=None)
@given(
    state=_states(),
    params=_params(),
    asked=_MINUTES,
    current=_bars(),
    warm=st.integers(min_value=0, max_value=40),
)
def test_decide_does_nothing_on_a_bar_quiet_called_quiet(
    state: PositionState, params: StrategyParams, asked: int, current: Bar, warm: int
) -> None:
    strategy = PivotBreakout(params)
    asked_at = (OPEN + timedelta(minutes=asked)).timestamp()
    history = [b for b in flat_bars(warm, 100.0, first_minute=-warm + 5) if b.ts < current.ts]
    if _is_quiet(strategy, state, asked_at, current):
        assert strategy.decide(state, ring_of([*history, current]), current, SESSION) == []


@settings(max_examples=1500, deadline=None)
@given(
    resistance=_PRICES,
    support=_PRICES,
    spent=st.tuples(st.integers(0, 3), st.integers(0, 3)),
    prev_close=_PRICES,
    close=_PRICES,
    minute=st.integers(min_value=15, max_value=380),
    watchlist=st.booleans(),
)
def test_a_flat_position_with_its_levels_is_quiet_only_where_decide_cannot_enter(
    resistance: float,
    support: float,
    spent: tuple[int, int],
    prev_close: float,
    close: float,
    minute: int,
    watchlist: bool,
) -> None:
    """The entry rules' own corner: levels, attempts spent per side, the cutoff, warm-up done."""
    fixed = StrategyParams(resistance=resistance, support=support)
    params = fixed if watchlist else StrategyParams()
    levels = {"resistance": resistance, "support": support}
    state = position_state(
        levels=levels,
        levels_day=DAY,
        attempts={
            attempt_key(DAY, resistance, Side.BUY): spent[0],
            attempt_key(DAY, support, Side.SELL): spent[1],
        },
    )
    strategy = PivotBreakout(params)
    current = bar(minute, close)
    history = flat_bars(20, prev_close, first_minute=minute - 20)
    asked_at = (OPEN + timedelta(minutes=minute)).timestamp()
    if _is_quiet(strategy, state, asked_at, current):
        assert strategy.decide(state, ring_of([*history, current]), current, SESSION) == []


def test_most_bars_of_a_flat_position_between_its_levels_are_quiet() -> None:
    """The point of it: a flat position between today's levels skips decide until the cutoff."""
    strategy = PivotBreakout(StrategyParams())
    state = position_state(levels={"resistance": 101.0, "support": 99.0}, levels_day=DAY)
    asked_at = (OPEN + timedelta(minutes=30)).timestamp()

    assert _is_quiet(strategy, state, asked_at, bar(200, 100.0, high=100.9, low=99.1))
    assert not _is_quiet(strategy, state, asked_at, bar(200, 101.5))  # a close above resistance
    assert not _is_quiet(strategy, state, asked_at, bar(375, 200.0))  # after the cutoff ...
    late = (OPEN + timedelta(minutes=380)).timestamp()  # ... it is asked again: all quiet
    assert _is_quiet(strategy, state, late, bar(381, 200.0, high=210.0))
    assert not _is_quiet(strategy, state, late, bar(200, 200.0))  # not before the cutoff
    # The last bar that may enter ends at the cutoff itself: it is not quiet, and it enters.
    last_entry = bar(374, 102.0)
    assert not _is_quiet(strategy, state, late, last_entry)
    assert strategy.decide(state, ring_of([*flat_bars(20, 100.0), last_entry]), last_entry, SESSION)


def test_an_open_long_is_quiet_below_its_next_target_until_the_end_of_day_window() -> None:
    strategy = PivotBreakout(StrategyParams())
    state = position_state(
        qty=100.0,
        avg_price=100.0,
        opened_at=OPEN,
        levels={"resistance": 101.0, "support": 99.0},
        levels_day=DAY,
        targets=(102.0, 104.0),
    )
    asked_at = (OPEN + timedelta(minutes=60)).timestamp()

    assert _is_quiet(strategy, state, asked_at, bar(100, 101.5, high=101.99, low=90.0))
    assert not _is_quiet(strategy, state, asked_at, bar(100, 101.5, high=102.0))  # target 1
    assert not _is_quiet(strategy, state, asked_at, bar(384, 100.0))  # end-of-day window
    band = strategy.quiet(state, SESSION, asked_at)
    assert band is not None
    assert math.isinf(band.close_hi)  # any close: only the high can reach a target of a long
