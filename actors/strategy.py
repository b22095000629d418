"""The strategy protocol and the reference pivot-breakout strategy.

A strategy is a pure function of (state, bars, bar, session) -> actions. It
sends nothing; the position actor turns actions into durable intents and then
into orders. The reference strategy:

* pivots (resistance/support) come from the watchlist where given, else from
  the session's opening range (high/low of its first N bars), so it trades on
  any venue without hand-tuned levels;
* after a warm-up of >= 20 bars, a close that crosses a pivot enters in the
  break's direction with the stop at the pivot;
* at target 1 (1R) half the position is taken and the stop moves to
  break-even; the rest exits at target 2 (2R) or at the end of the day;
* at most ``max_attempts`` entries per pivot and side per day (the model
  enforces it too).
"""

from __future__ import annotations

import math
from datetime import datetime
from typing import NamedTuple, Protocol

import msgspec

from actors.bars import BarRing
from actors.state import IntentKind, Mode, PositionState
from brokers.base import Bar, Side
from runtime.clock import posix

__all__ = [
    "Action",
    "Cancel",
    "Enter",
    "ExitPartial",
    "Flatten",
    "MoveStop",
    "PivotBreakout",
    "Quiet",
    "Session",
    "SetLevels",
    "Strategy",
    "StrategyParams",
]


# Enum members bound once: ``Mode.MANAGED`` costs a metaclass lookup (~0.1 us on
# 3.11) every time, and the checks below run on every bar of every symbol.
_MANAGED = Mode.MANAGED
_ENTRY = IntentKind.ENTRY
_PARTIAL = IntentKind.PARTIAL
_EXIT = IntentKind.EXIT


class Enter(msgspec.Struct, frozen=True, tag=True):
    side: Side
    qty: float
    pivot: float
    stop_price: float
    targets: tuple[float, ...]


class ExitPartial(msgspec.Struct, frozen=True, tag=True):
    qty: float
    reason: str


class MoveStop(msgspec.Struct, frozen=True, tag=True):
    price: float
    qty: float


class Cancel(msgspec.Struct, frozen=True, tag=True):
    client_order_id: str


class Flatten(msgspec.Struct, frozen=True, tag=True):
    reason: str


class SetLevels(msgspec.Struct, frozen=True, tag=True):
    levels: dict[str, float]


Action = Enter | ExitPartial | MoveStop | Cancel | Flatten | SetLevels


class Session(msgspec.Struct, frozen=True):
    """The regular session a bar belongs to."""

    open: datetime
    close: datetime
    bar_seconds: int = 60


class StrategyParams(msgspec.Struct, frozen=True, kw_only=True):
    qty: float = 100.0
    max_attempts: int = 2
    warmup_bars: int = 20
    opening_range_bars: int = 15
    target1_r: float = 1.0
    target2_r: float = 2.0
    min_risk_pct: float = 0.002
    eod_minutes: int = 5
    no_entry_minutes: int = 15
    resistance: float | None = None
    support: float | None = None


class Strategy(Protocol):
    name: str

    def decide(
        self, state: PositionState, bars: BarRing, bar: Bar, session: Session
    ) -> list[Action]: ...


class Quiet(NamedTuple):
    """Bars on which ``decide`` returns nothing for a given state and session.

    A bar opening at ``ts`` (POSIX seconds) is quiet when ``since <= ts < until``,
    ``close_lo <= close <= close_hi``, ``high < high_below`` and
    ``low > low_above``. A strategy may offer ``quiet(state, session, ts)``: the
    position actor then skips ``decide`` for every quiet bar of that state, most
    bars of a session, and calls it for the others. A strategy with
    ``reads_marks = False`` declares that ``decide`` reads neither
    ``last_price`` nor ``trade_high``/``trade_low`` of the state (the actor may
    pass a state whose marks lag the bars; ``bar`` and ``bars`` carry them).
    """

    since: float
    until: float
    close_lo: float
    close_hi: float
    high_below: float
    low_above: float


_INF = math.inf
_ANY_PRICE = (-_INF, _INF, _INF, -_INF)


class _Cutoffs:
    """A session's times as POSIX seconds, computed once per session, not per bar."""

    __slots__ = ("close", "eod", "no_entry", "open", "range_end", "session")

    def __init__(self, session: Session, params: StrategyParams) -> None:
        self.session = session
        self.open = session.open.timestamp()
        self.close = session.close.timestamp()
        self.range_end = self.open + session.bar_seconds * params.opening_range_bars
        self.no_entry = self.close - 60 * params.no_entry_minutes
        self.eod = self.close - 60 * params.eod_minutes


class PivotBreakout:
    """The reference strategy (see the module docstring)."""

    name = "pivot_breakout"
    reads_marks = False

    def __init__(self, params: StrategyParams) -> None:
        self.params = params
        fixed = {"resistance": params.resistance, "support": params.support}
        self._fixed = (
            {k: v for k, v in fixed.items() if v is not None}
            if params.resistance is not None or params.support is not None
            else None
        )
        self._cutoffs: _Cutoffs | None = None

    def _cut(self, session: Session) -> _Cutoffs:
        cut = self._cutoffs
        if cut is None or (cut.session is not session and cut.session != session):
            cut = self._cutoffs = _Cutoffs(session, self.params)
        return cut

    def decide(
        self, state: PositionState, bars: BarRing, bar: Bar, session: Session
    ) -> list[Action]:
        # Every bar of every symbol comes through here, and on most of them
        # nothing happens: the usual ways out come first and build nothing.
        if state.mode is not _MANAGED:
            return []
        cut = self._cutoffs
        if cut is None or (cut.session is not session and cut.session != session):
            cut = self._cut(session)
        ts = posix(bar.ts)
        bar_end = ts + session.bar_seconds
        levels = self._fixed
        if levels is None:
            if state.levels and state.levels_day == state.trading_day:
                levels = state.levels
            else:
                levels = self._opening_levels(bars, bar, ts, cut)
        if levels is None or levels is state.levels or levels == state.levels:
            return self._decide(state, bars, bar, levels, ts, bar_end, cut)
        return [SetLevels(dict(levels)), *self._decide(state, bars, bar, levels, ts, bar_end, cut)]

    def quiet(self, state: PositionState, session: Session, ts: float) -> Quiet | None:
        """Return the bars around ``ts`` on which ``decide`` does nothing, or None.

        Mirrors ``decide`` rule for rule (a property test holds the two
        together): a bar is quiet when it cannot set the day's levels, cross a
        pivot of a flat position, reach a target of an open one or fall in the
        end-of-day window.
        """
        if state.mode is not _MANAGED:
            return Quiet(-_INF, _INF, *_ANY_PRICE)
        cut = self._cut(session)
        bs = session.bar_seconds
        until = _INF
        levels = self._fixed
        if levels is not None:
            if levels is not state.levels and levels != state.levels:
                return None  # the next decide records them
        elif state.levels and state.levels_day == state.trading_day:
            levels = state.levels
        else:
            # The opening range sets them once complete; before that there are none.
            if ts + bs >= cut.range_end:
                return None
            until = cut.range_end - bs
        if state.qty != 0:
            return self._quiet_managing(state, bar_end=ts + bs, until=until, cut=cut)
        if levels is None or any(i.kind is _ENTRY for i in state.intents):
            return Quiet(-_INF, until, *_ANY_PRICE)
        # A bar ending after the entry cutoff enters nothing; one ending at it or before
        # enters on a close beyond a level.
        last_entry = math.nextafter(cut.no_entry - bs, _INF)
        if ts + bs > cut.no_entry:
            return Quiet(last_entry, until, *_ANY_PRICE)
        # A level whose attempts are spent enters no more (``_breakout``).
        limit, day = self.params.max_attempts, state.trading_day
        resistance = levels.get("resistance")
        if resistance is not None and state.attempts_for(day, resistance, Side.BUY) >= limit:
            resistance = None
        support = levels.get("support")
        if support is not None and state.attempts_for(day, support, Side.SELL) >= limit:
            support = None
        return Quiet(
            -_INF,
            min(until, last_entry),
            -_INF if support is None else support,
            _INF if resistance is None else resistance,
            _INF,
            -_INF,
        )

    def _quiet_managing(
        self, state: PositionState, *, bar_end: float, until: float, cut: _Cutoffs
    ) -> Quiet | None:
        for intent in state.intents:
            if intent.kind is _EXIT or intent.kind is _PARTIAL:
                return Quiet(-_INF, until, *_ANY_PRICE)
        if bar_end >= cut.eod:
            return None
        until = min(until, cut.eod - cut.session.bar_seconds)
        if len(state.targets) < 2:
            return Quiet(-_INF, until, *_ANY_PRICE)
        t1, t2 = state.targets[0], state.targets[1]
        partial_due = not state.partials and abs(state.qty) >= 2
        if state.qty > 0:
            below = min(t1, t2) if partial_due else t2
            return Quiet(-_INF, until, -_INF, _INF, below, -_INF)
        above = max(t1, t2) if partial_due else t2
        return Quiet(-_INF, until, -_INF, _INF, _INF, above)

    def _decide(
        self,
        state: PositionState,
        bars: BarRing,
        bar: Bar,
        levels: dict[str, float] | None,
        ts: float,
        bar_end: float,
        cut: _Cutoffs,
    ) -> list[Action]:
        """Return the actions on ``bar`` other than recording the day's levels."""
        if state.qty != 0:
            return self._manage(state, bar, bar_end, cut)
        if levels is None or bar_end > cut.no_entry:
            return []
        for intent in state.intents:
            if intent.kind is _ENTRY:
                return []
        # A close inside the levels breaks nothing, whatever came before it.
        close = bar.close
        resistance = levels.get("resistance")
        support = levels.get("support")
        if not (
            (resistance is not None and resistance < close)
            or (support is not None and support > close)
        ):
            return []
        before = bars.before(ts)
        if before is None or before[0] < self.params.warmup_bars:
            return []
        entry = self._breakout(state, before[1], bar, levels)
        return [] if entry is None else [entry]

    def _opening_levels(
        self, bars: BarRing, bar: Bar, ts: float, cut: _Cutoffs
    ) -> dict[str, float] | None:
        """Return the opening range's pivots once the range is complete, else None."""
        if ts + cut.session.bar_seconds < cut.range_end:
            return None
        day_open = cut.session.open
        opening = [
            b for b in bars.since(day_open) if b.ts.timestamp() < cut.range_end and b.ts != bar.ts
        ]
        if cut.open <= ts < cut.range_end:
            opening.append(bar)
        if len(opening) < self.params.opening_range_bars:
            return None
        return {
            "resistance": max(b.high for b in opening),
            "support": min(b.low for b in opening),
        }

    def _breakout(
        self, state: PositionState, prev_close: float, bar: Bar, levels: dict[str, float]
    ) -> Enter | None:
        resistance = levels.get("resistance")
        support = levels.get("support")
        close = bar.close
        if not (
            (resistance is not None and prev_close <= resistance < close)
            or (support is not None and prev_close >= support > close)
        ):
            return None
        breaks = (
            (Side.BUY, resistance, resistance is not None and prev_close <= resistance < close),
            (Side.SELL, support, support is not None and prev_close >= support > close),
        )
        for side, pivot, crossed in breaks:
            if (
                crossed
                and pivot is not None
                and state.attempts_for(state.trading_day, pivot, side) < self.params.max_attempts
            ):
                return self._entry(side, pivot, close)
        return None

    def _entry(self, side: Side, pivot: float, close: float) -> Enter:
        """Enter at ``close`` with the stop at the pivot (at least the minimum risk away)."""
        p = self.params
        sign = side.sign
        risk = max((close - pivot) * sign, close * p.min_risk_pct)
        return Enter(
            side=side,
            qty=p.qty,
            pivot=pivot,
            stop_price=round(close - sign * risk, 4),
            targets=(
                round(close + sign * risk * p.target1_r, 4),
                round(close + sign * risk * p.target2_r, 4),
            ),
        )

    def _manage(
        self, state: PositionState, bar: Bar, bar_end: float, cut: _Cutoffs
    ) -> list[Action]:
        for intent in state.intents:
            if intent.kind is _EXIT or intent.kind is _PARTIAL:
                return []
        if bar_end >= cut.eod:
            return [Flatten("eod")]
        if len(state.targets) < 2:
            return []
        long = state.qty > 0
        t1, t2 = state.targets[0], state.targets[1]
        reached_t2 = bar.high >= t2 if long else bar.low <= t2
        if reached_t2:
            return [Flatten("target")]
        reached_t1 = bar.high >= t1 if long else bar.low <= t1
        size = abs(state.qty)
        if reached_t1 and not state.partials and size >= 2:
            half = float(math.floor(size / 2))
            return [
                MoveStop(price=state.avg_price, qty=size - half),
                ExitPartial(qty=half, reason="target1"),
            ]
        return []
