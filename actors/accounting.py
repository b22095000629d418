"""Average-cost accounting of a position's fills: entries, exits, closings, adoptions.

Entries raise the position at a volume-weighted price; exits realize
``(price - avg) * closed_qty`` (sign-adjusted) and leave the average unchanged.
A fill that crosses zero closes the trade and opens the remainder on the other
side, recorded as two steps. Each function validates first (``rules``) and
returns a new state; nothing here does I/O. ``model`` re-exports them.
"""

from __future__ import annotations

import math
from datetime import datetime

import msgspec

from actors.rules import (
    APPLIED_IDS_KEPT,
    EPS,
    RECOVERED_STRATEGY,
    Applied,
    BadInput,
    WrongSymbol,
    bump,
    check_price,
)
from actors.state import (
    ClosedTrade,
    ExitReason,
    Fill,
    Intent,
    IntentKind,
    Mode,
    Origin,
    PartialExit,
    PositionState,
    StopOrder,
)
from brokers.base import Execution, Side, signed

__all__ = [
    "adopt",
    "apply_fill",
    "close_externally",
    "closed_externally",
    "override_quantity",
]


def _fill_stop(stop: StopOrder | None, ex: Execution) -> StopOrder | None:
    """Return ``stop`` after ``ex`` (None once nothing of it is open); others unchanged."""
    if stop is None or stop.client_order_id != ex.client_order_id:
        return stop
    open_qty = stop.qty - ex.qty
    if open_qty <= EPS:
        return None
    return msgspec.structs.replace(stop, qty=open_qty, filled_qty=stop.filled_qty + ex.qty)


def _vwap(fills: tuple[Fill, ...]) -> float | None:
    total = sum(f.qty for f in fills)
    if total <= 0:
        return None
    return sum(f.qty * f.price for f in fills) / total


def _widen(state: PositionState, price: float) -> dict[str, object]:
    """Return the trade's extremes widened to include ``price`` (a fill is a traded price)."""
    high = price if state.trade_high is None else max(state.trade_high, price)
    low = price if state.trade_low is None else min(state.trade_low, price)
    return {"trade_high": high, "trade_low": low}


def _extremes(state: PositionState, avg: float) -> tuple[float, float]:
    """Return (MAE, MFE) per share from the trade's extremes."""
    high = state.trade_high if state.trade_high is not None else avg
    low = state.trade_low if state.trade_low is not None else avg
    if state.qty > 0:
        return max(0.0, avg - low), max(0.0, high - avg)
    return max(0.0, high - avg), max(0.0, avg - low)


_EXIT_REASONS = frozenset(r.value for r in ExitReason)
# What a position is traded by; planned for one side, void on the other.
_NO_PLAN: dict[str, object] = {"targets": (), "planned_stop": None}


def _exit_reason(intent: Intent | None) -> str:
    """Name why quantity left the position; always one of ``ExitReason``."""
    if intent is None or intent.kind is IntentKind.ENTRY:
        return ExitReason.MANUAL.value  # not an exit we sent
    if intent.kind is IntentKind.STOP:
        return ExitReason.STOP.value
    if intent.kind is IntentKind.PARTIAL:
        return ExitReason.PARTIAL.value
    return intent.reason if intent.reason in _EXIT_REASONS else ExitReason.FLATTEN.value


def _closed_trade(
    state: PositionState, exits: tuple[Fill, ...], at: datetime, realized: float, reason: str
) -> ClosedTrade:
    """Return the round trip of ``state`` (its last step not applied yet) closed at ``at``.

    ``qty`` is what went out over the trade (earlier exits plus what is open now),
    which is what went in for a fully recorded trade and stays right for adopted
    positions, whose entries are not known.
    """
    mae, mfe = _extremes(state, state.avg_price)
    first = state.entries[0].exec_id if state.entries else f"{at.timestamp():.0f}"
    return ClosedTrade(
        trade_id=f"{state.symbol}-{first}",
        symbol=state.symbol,
        side=Side.BUY if state.qty > 0 else Side.SELL,
        qty=sum(f.qty for f in state.exits) + abs(state.qty),
        entry_at=state.opened_at,
        entry_price=state.avg_price,
        exit_at=at,
        exit_price=_vwap(exits),
        realized_pnl=realized,
        mae=mae,
        mfe=mfe,
        exit_reason=reason,
        strategy=RECOVERED_STRATEGY if state.origin is Origin.RECOVERED else state.strategy,
        trading_day=state.trading_day,
    )


def _flat(state: PositionState) -> dict[str, object]:
    return {
        "qty": 0.0,
        "avg_price": 0.0,
        "opened_at": None,
        "entries": (),
        "exits": (),
        "partials": (),
        "stop": None,
        "targets": (),
        "planned_stop": None,
        "trade_high": None,
        "trade_low": None,
        "trade_realized": 0.0,
        "origin": Origin.STRATEGY,
        "mode": state.mode if state.origin is Origin.STRATEGY else Mode.MANAGED,
    }


def _track_intent(intents: tuple[Intent, ...], ex: Execution) -> tuple[Intent, ...]:
    out: list[Intent] = []
    for intent in intents:
        if intent.client_order_id == ex.client_order_id:
            filled = intent.filled_qty + ex.qty
            if filled + EPS >= intent.qty:
                continue
            intent = msgspec.structs.replace(intent, filled_qty=filled, order_id=ex.order_id)
        out.append(intent)
    return tuple(out)


def apply_fill(state: PositionState, ex: Execution) -> Applied:
    """Apply one execution; a known ``exec_id`` changes nothing.

    A fill of the protective stop moves its shares from the stop's open qty to
    its filled qty (the stop is gone once nothing of it is open), as the
    intent's filled qty moves: what is left of the stop still covers what is
    left of the position, with no resize. A stop the venue said filled stays
    until its fill is all applied, also past a close: the rest of its fill is
    still to come, and booked as the stop's. One of an order whose fill a heal
    took from the broker (``absorb_fill_rest``) is booked without moving the
    position. Raises ``WrongSymbol`` or ``BadInput`` (state unchanged).
    """
    if ex.symbol != state.symbol:
        raise WrongSymbol(f"execution {ex.exec_id} for {ex.symbol} sent to {state.symbol}")
    try:
        ex.validate()
    except ValueError as exc:
        raise BadInput(str(exc)) from exc
    if ex.exec_id in state.applied:
        return Applied(state=state, duplicate=True)
    absorbed = state.absorbed_fills.get(ex.client_order_id)
    if absorbed is not None:
        return _apply_absorbed(state, ex, absorbed)

    intent = state.intent(ex.client_order_id)
    fill = Fill(exec_id=ex.exec_id, at=ex.ts, side=ex.side, qty=ex.qty, price=ex.price)
    applied = (*state.applied, ex.exec_id)[-APPLIED_IDS_KEPT:]
    intents = _track_intent(state.intents, ex)
    stop = _fill_stop(state.stop, ex)
    delta = signed(ex.side, ex.qty)
    closed: list[ClosedTrade] = []
    partial: PartialExit | None = None

    if state.is_flat:
        new = bump(
            state,
            qty=delta,
            avg_price=ex.price,
            opened_at=ex.ts,
            entries=(fill,),
            exits=(),
            partials=(),
            trade_realized=0.0,
            trade_high=ex.price,
            trade_low=ex.price,
            applied=applied,
            intents=intents,
            stop=stop,
        )
        return Applied(state=new)

    if (state.qty > 0) == (delta > 0):
        new_qty = state.qty + delta
        avg = (abs(state.qty) * state.avg_price + ex.qty * ex.price) / abs(new_qty)
        new = bump(
            state,
            qty=new_qty,
            avg_price=avg,
            entries=(*state.entries, fill),
            applied=applied,
            intents=intents,
            stop=stop,
            **_widen(state, ex.price),
        )
        return Applied(state=new)

    # Reducing (and perhaps crossing zero).
    closing = min(abs(state.qty), ex.qty)
    direction = 1.0 if state.qty > 0 else -1.0
    realized = (ex.price - state.avg_price) * closing * direction
    trade_realized = state.trade_realized + realized
    closing_fill = msgspec.structs.replace(fill, qty=closing)
    exits = (*state.exits, closing_fill)
    remainder = ex.qty - closing
    new_qty = state.qty + direction * -closing
    reason = _exit_reason(intent)
    common: dict[str, object] = {
        "applied": applied,
        "intents": intents,
        "realized_pnl_today": state.realized_pnl_today + realized,
    }
    widened = _widen(state, ex.price)

    if abs(new_qty) > EPS:
        partial = PartialExit(at=ex.ts, price=ex.price, qty=closing, reason=reason)
        new = bump(
            state,
            qty=new_qty,
            exits=exits,
            partials=(*state.partials, partial),
            trade_realized=trade_realized,
            stop=stop,
            **widened,
            **common,
        )
        return Applied(state=new, partial=partial)

    trade = _closed_trade(
        msgspec.structs.replace(state, **widened), exits, ex.ts, trade_realized, reason
    )
    closed.append(trade)
    fields = _flat(state) | common
    fields["trades_today"] = state.trades_today + 1
    if stop is not None and stop.filled_at_venue:
        fields["stop"] = stop
    if remainder > EPS:
        fields |= {
            "qty": signed(ex.side, remainder),
            "avg_price": ex.price,
            "opened_at": ex.ts,
            "entries": (msgspec.structs.replace(fill, qty=remainder),),
            "trade_high": ex.price,
            "trade_low": ex.price,
        }
    new = bump(state, **fields)
    return Applied(state=new, closed=tuple(closed))


def closed_externally(applied: Applied) -> Applied:
    """Return ``applied`` with its closed trades' reason ``CLOSED_EXTERNALLY``.

    For a fill of an order nobody here sent, found by recovery: the position
    was closed outside the trader while it was away.
    """
    reason = ExitReason.CLOSED_EXTERNALLY.value
    closed = tuple(msgspec.structs.replace(t, exit_reason=reason) for t in applied.closed)
    return msgspec.structs.replace(applied, closed=closed)


def override_quantity(state: PositionState, qty: float, avg_price: float) -> PositionState:
    """Let the broker's open quantity and average price override ours (reconciliation).

    When the broker holds the other side, the targets, planned stop and stop of
    the side held here are dropped: they protect and take profit for a position
    that is gone, and read for the new side they would trade it at once.
    Raises ``BadInput`` for a non-finite or zero ``qty`` (a position the broker
    no longer holds is closed with ``close_externally``, which records the
    trade) or an impossible ``avg_price``.
    """
    if not math.isfinite(qty) or qty == 0:
        raise BadInput(f"broker qty {qty!r} must be non-zero and finite")
    check_price(avg_price, "broker avg price")
    if abs(state.qty - qty) < EPS and abs(state.avg_price - avg_price) < 1e-6:
        return state
    if state.qty * qty < 0:
        return bump(state, qty=qty, avg_price=avg_price, stop=None, **_NO_PLAN)
    return bump(state, qty=qty, avg_price=avg_price)


def close_externally(
    state: PositionState,
    at: datetime,
    exit_price: float | None,
    *,
    reason: str = ExitReason.CLOSED_EXTERNALLY.value,
) -> tuple[PositionState, ClosedTrade | None]:
    """Close a zombie (open here, flat at the broker) as ``CLOSED_EXTERNALLY``.

    With ``exit_price`` None the open remainder's P&L is unknown: the trade
    records the P&L of its earlier partial exits only and no exit price.
    ``reason`` is another exit reason when it is known what closed it (our
    stop, whose last executions never arrived). Raises ``BadInput`` for an
    impossible ``exit_price``.
    """
    if exit_price is not None:
        check_price(exit_price, "exit price")
    if state.is_flat:
        return state, None
    realized = state.trade_realized
    exits: tuple[Fill, ...] = ()
    closing = state
    if exit_price is not None:
        direction = 1.0 if state.qty > 0 else -1.0
        realized += (exit_price - state.avg_price) * abs(state.qty) * direction
        side = Side.SELL if state.qty > 0 else Side.BUY
        out = Fill(exec_id="external", at=at, side=side, qty=abs(state.qty), price=exit_price)
        exits = (*state.exits, out)
        closing = msgspec.structs.replace(state, **_widen(state, exit_price))
    trade = _closed_trade(closing, exits, at, realized, reason)
    fields = _flat(state)
    fields["trades_today"] = state.trades_today + 1
    fields["realized_pnl_today"] = state.realized_pnl_today + (realized - state.trade_realized)
    fields["intents"] = ()
    return bump(state, **fields), trade


def adopt(
    state: PositionState, qty: float, avg_price: float, at: datetime, mode: Mode
) -> PositionState:
    """Adopt an orphan (open at the broker, unknown here) with origin ``recovered``.

    The targets and planned stop recorded with an entry still in flight stay
    only when the orphan is on that entry's side; otherwise they were planned
    for another position and are dropped. Raises ``BadInput`` for an
    impossible ``qty`` or ``avg_price``.
    """
    check_price(avg_price, "orphan avg price")
    if not math.isfinite(qty) or qty == 0:
        raise BadInput(f"orphan qty {qty!r} must be non-zero and finite")
    entry_sides = [i.side for i in state.intents if i.kind is IntentKind.ENTRY]
    plan = {} if any(side.sign * qty > 0 for side in entry_sides) else _NO_PLAN
    return bump(
        state,
        qty=qty,
        avg_price=avg_price,
        opened_at=at,
        origin=Origin.RECOVERED,
        mode=mode,
        trade_high=avg_price,
        trade_low=avg_price,
        **plan,
    )


def _apply_absorbed(state: PositionState, ex: Execution, absorbed: float) -> Applied:
    """Book ``ex``, of an order whose fill ``absorbed`` (qty) is already in the position.

    What of it is past ``absorbed`` (more than the heal took in) is applied as a fill.
    """
    rest = dict(state.absorbed_fills)
    del rest[ex.client_order_id]
    left = absorbed - ex.qty
    if left > EPS:
        rest[ex.client_order_id] = left
    if left >= -EPS:
        applied = (*state.applied, ex.exec_id)[-APPLIED_IDS_KEPT:]
        new = bump(state, applied=applied, absorbed_fills=rest)
        return Applied(state=new, absorbed=ex.qty)
    excess = msgspec.structs.replace(ex, qty=-left)
    applied_excess = apply_fill(bump(state, absorbed_fills=rest), excess)
    return msgspec.structs.replace(applied_excess, absorbed=absorbed)
