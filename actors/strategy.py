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
from typing import Protocol

import msgspec

from actors.bars import BarRing
from actors.state import IntentKind, Mode, PositionState
from brokers.base import Bar, Side

__all__ = [
    "Action",
    "Cancel",
    "Enter",
    "ExitPartial",
    "Flatten",
    "MoveStop",
    "PivotBreakout",
    "Session",
    "SetLevels",
    "Strategy",
    "StrategyParams",
]


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
        if state.mode is not Mode.MANAGED:
            return []
        cut = self._cut(session)
        ts = bar.ts.timestamp()
        bar_end = ts + session.bar_seconds
        actions: list[Action] = []
        levels = self._levels(state, bars, bar, ts, cut)
        if levels is not None and levels is not state.levels and levels != state.levels:
            actions.append(SetLevels(dict(levels)))
        if not state.is_flat:
            actions.extend(self._manage(state, bar, bar_end, cut))
            return actions
        if levels is None or (
            state.intents and any(i.kind is IntentKind.ENTRY for i in state.intents)
        ):
            return actions
        if bar_end > cut.no_entry:
            return actions
        before = _before(bars, ts)
        if before is None or before[0] < self.params.warmup_bars:
            return actions
        entry = self._breakout(state, before[1], bar, levels)
        if entry is not None:
            actions.append(entry)
        return actions

    def _levels(
        self, state: PositionState, bars: BarRing, bar: Bar, ts: float, cut: _Cutoffs
    ) -> dict[str, float] | None:
        """Return the day's levels (read only: ``state.levels`` itself when they are set)."""
        if self._fixed is not None:
            return self._fixed
        if state.levels and state.levels_day == state.trading_day:
            return state.levels
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
        breaks = (
            (Side.BUY, resistance, resistance is not None and prev_close <= resistance < bar.close),
            (Side.SELL, support, support is not None and prev_close >= support > bar.close),
        )
        for side, pivot, crossed in breaks:
            if (
                crossed
                and pivot is not None
                and state.attempts_for(state.trading_day, pivot, side) < self.params.max_attempts
            ):
                return self._entry(side, pivot, bar.close)
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
        if state.intents and any(
            i.kind is IntentKind.EXIT or i.kind is IntentKind.PARTIAL for i in state.intents
        ):
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


def _before(bars: BarRing, ts: float) -> tuple[int, float] | None:
    """Return (how many bars precede the bar opening at ``ts``, the close before it).

    ``bars`` may or may not hold that bar already. None when nothing precedes it
    or when the buffer holds a newer bar: a late bar is never traded on.
    """
    if not len(bars):
        return None
    newest = bars.last_ts()
    if newest > ts:
        return None
    if newest < ts:
        return len(bars), bars.close(0)
    if len(bars) < 2:
        return None
    return len(bars) - 1, bars.close(1)
