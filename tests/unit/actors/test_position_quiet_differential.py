"""Two actors side by side on random bar streams: one skips quiet bars, one decides on all.

``PositionActor._take_bar`` with ``PivotBreakout`` (quiet bars skipped, marks
folded when read) against the same actor with a strategy that offers no quiet
bars and reads every mark. The streams cross two days and hold out-of-order,
duplicate and late bars; states of every kind are swapped in between (flat,
long, short; levels of today, of an earlier day or none; intents, attempts,
partials); the opening range and warm-up vary. Every bar must give both the
same actions, and every read of the state the same marks and levels. (Found
by a review: the property test of ``quiet`` alone let the actor's own band
check, its cache key and the opening range's last bar go wrong unseen.)
"""

from __future__ import annotations

from datetime import date, datetime, timedelta

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from actors import model
from actors.bars import BarRing
from actors.position import PositionActor
from actors.state import IntentKind, Mode, PartialExit, PositionState, attempt_key
from actors.strategy import Action, PivotBreakout, Session, SetLevels, StrategyParams
from bench._world import ACCOUNT, context
from brokers.base import Bar, Side
from runtime.actor import Lifecycle
from runtime.clock import TradingCalendar
from tests.unit.actors._actor_kit import intents_in_flight

_CALENDAR = TradingCalendar()
_EARLIER, _DAY, _NEXT = date(2026, 1, 5), date(2026, 1, 6), date(2026, 1, 7)
_PRICES = st.sampled_from([97.0, 98.0, 99.0, 99.5, 100.0, 100.5, 101.0, 102.0, 103.0])
_REACH = st.sampled_from([0.0, 0.5, 1.0, 3.0])

# One event of a stream: a bar (day, minute from the open, close, up, down), a read of
# both states, or a state swapped into both actors.
_BarSpec = tuple[date, int, float, float, float]
_Event = tuple[str, PositionState | _BarSpec | None]


class _DecidesOnEveryBar:
    name = "pivot_breakout"

    def __init__(self, inner: PivotBreakout) -> None:
        self.inner = inner

    def decide(
        self, state: PositionState, bars: BarRing, bar: Bar, session: Session
    ) -> list[Action]:
        return self.inner.decide(state, bars, bar, session)


class _NoStore:
    """Stands in for the store: ``_take_bar`` commits nothing (a mock: nothing is stored)."""


class _OpenClock:
    def now(self) -> datetime:
        return _CALENDAR.open_of(_DAY)


@st.composite
def _states(draw: st.DrawFn, day: date) -> PositionState:
    qty = draw(st.sampled_from([0.0, 0.0, 1.0, 100.0, -100.0]))
    kind = draw(st.sampled_from(["today", "earlier", "none"]))
    levels: dict[str, float] = {}
    if kind != "none":
        levels = {"resistance": draw(_PRICES), "support": draw(_PRICES)}
    opened = _CALENDAR.open_of(day)
    kinds = draw(st.lists(st.sampled_from(list(IntentKind)), max_size=1))
    intents = intents_in_flight(kinds, opened, 1.0)
    attempts: dict[str, int] = {}
    spent = draw(st.booleans())
    if levels and spent:
        key = attempt_key(day, levels["resistance"], Side.BUY)
        attempts[key] = draw(st.integers(0, 2))
    return PositionState(
        account=ACCOUNT,
        symbol="SYM",
        trading_day=day,
        qty=qty,
        avg_price=100.0 if qty else 0.0,
        opened_at=opened if qty else None,
        levels=levels,
        levels_day=(day if kind == "today" else _EARLIER) if levels else None,
        attempts=attempts,
        intents=intents,
        targets=tuple(draw(st.lists(_PRICES, max_size=2))),
        partials=(PartialExit(opened, 100.0, 1.0, "target1"),) if draw(st.booleans()) else (),
        mode=Mode.MANAGED,
    )


@st.composite
def _streams(draw: st.DrawFn) -> list[_Event]:
    events: list[_Event] = []
    minute, day = draw(st.integers(-40, 400)), _DAY
    for _ in range(draw(st.integers(5, 120))):
        k = draw(st.integers(0, 30))
        if k == 0:
            events.append(("state", draw(_states(day))))
            continue
        if k in (1, 2):
            events.append(("read", None))
            continue
        if k == 3 and day == _DAY:
            day, minute = _NEXT, draw(st.integers(-40, 30))
        elif k == 4:
            minute -= draw(st.integers(0, 3))  # out of order, or the same bar again
        elif k == 5:  # a late bar of either day
            late = (draw(st.sampled_from([_DAY, _NEXT])), draw(st.integers(-40, 400)))
            events.append(("bar", (*late, draw(_PRICES), draw(_REACH), draw(_REACH))))
            continue
        else:
            minute += draw(st.sampled_from([1, 1, 1, 2, 5, 30]))
        events.append(("bar", (day, minute, draw(_PRICES), draw(_REACH), draw(_REACH))))
    return events


def _bar(day: date, minute: int, close: float, up: float, down: float) -> Bar:
    ts = _CALENDAR.open_of(day) + timedelta(minutes=minute)
    return Bar(
        symbol="SYM", ts=ts, open=close, high=close + up, low=close - down, close=close, volume=1e3
    )


def _seen(state: PositionState) -> tuple[object, ...]:
    return state.last_price, state.trade_high, state.trade_low, state.levels, state.trading_day


@settings(max_examples=600, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    stream=_streams(),
    watchlist=st.booleans(),
    resistance=_PRICES,
    support=_PRICES,
    opening_range=st.sampled_from([3, 15]),
    warmup=st.sampled_from([0, 5, 20]),
)
def test_skipping_quiet_bars_changes_no_action_and_no_mark(
    stream: list[_Event],
    watchlist: bool,
    resistance: float,
    support: float,
    opening_range: int,
    warmup: int,
) -> None:
    params = StrategyParams(
        opening_range_bars=opening_range,
        warmup_bars=warmup,
        resistance=resistance if watchlist else None,
        support=support if watchlist else None,
    )
    ctx = context(_NoStore(), _OpenClock(), params=params)  # type: ignore[arg-type]
    quiet = PositionActor("SYM", ctx, strategy=PivotBreakout(params), today=_DAY)
    every = PositionActor(
        "SYM", ctx, strategy=_DecidesOnEveryBar(PivotBreakout(params)), today=_DAY
    )
    for actor in (quiet, every):
        actor.transition(Lifecycle.RUNNING)
    for kind, payload in stream:
        if kind == "state":
            assert isinstance(payload, PositionState)
            quiet.state = every.state = payload
        elif kind == "read":
            assert _seen(quiet.state) == _seen(every.state)
        else:
            assert isinstance(payload, tuple)
            bar = _bar(*payload)
            actions = quiet._take_bar(bar)
            assert actions == every._take_bar(bar), bar
            for actor in (quiet, every):  # the day's levels, as _act records them
                for action in actions:
                    if isinstance(action, SetLevels):
                        state = actor.state
                        actor._adopt(model.set_levels(state, state.trading_day, action.levels))
    assert _seen(quiet.state) == _seen(every.state)
