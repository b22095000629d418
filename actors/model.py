"""Pure transitions of a position: state in, state out, no I/O.

Each function validates first and raises a typed ``ModelError`` before it
changes anything, so a bad input leaves the caller's state as it was (states
are frozen; a new one is returned). The actor around these functions persists
the new state before it acts on it.

Accounting is average cost: entries raise the position at a volume-weighted
price; exits realize ``(price - avg) * closed_qty`` (sign-adjusted) and leave
the average unchanged. A fill that crosses zero closes the trade and opens the
remainder on the other side, recorded as two steps.
"""

from __future__ import annotations

import hashlib
import math
from datetime import date, datetime

import msgspec

from actors.bars import plausible
from actors.state import (
    STOP_FILLED,
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
    attempt_key,
)
from brokers.base import Bar, Execution, Order, OrderType, Side, signed

__all__ = [
    "APPLIED_IDS_KEPT",
    "RECOVERED_STRATEGY",
    "Applied",
    "BadInput",
    "EntryRefused",
    "ModelError",
    "WrongSymbol",
    "absorb_fill_rest",
    "adopt",
    "apply_fill",
    "begin_entry",
    "begin_order",
    "client_order_id",
    "close_externally",
    "mark_bar",
    "override_quantity",
    "resolve_intent",
    "roll_day",
    "set_levels",
    "set_stop",
    "stop_filled",
    "stop_from_order",
]

APPLIED_IDS_KEPT = 4096
ABSENT = "absent"  # exec id suffix of a fill booked for executions that never came
ABSORBED_KEPT = 16  # orders whose missing executions are remembered (``absorb_fill_rest``)
RECOVERED_STRATEGY = "recovered"  # the strategy a closed trade of an adopted position records
_EPS = 1e-9
_replace = msgspec.structs.replace


class ModelError(ValueError):
    """An input the model refuses; the state is unchanged."""


class BadInput(ModelError):
    """A price or quantity that cannot be real (NaN, infinite, zero, negative)."""


class WrongSymbol(ModelError):
    """An event for another symbol."""


class EntryRefused(ModelError):
    """An entry the rules forbid (position open, entry in flight, attempts exhausted, ...)."""


class Applied(msgspec.Struct, frozen=True):
    """What a fill did. ``duplicate`` means nothing changed; ``absorbed`` is what of it
    was already in the position (``absorb_fill_rest``): booked, not applied again."""

    state: PositionState
    closed: tuple[ClosedTrade, ...] = ()
    partial: PartialExit | None = None
    duplicate: bool = False
    absorbed: float = 0.0


def _check_price(value: float | None, what: str) -> None:
    if value is None or not math.isfinite(value) or value <= 0:
        raise BadInput(f"{what} {value!r} is not a positive finite price")


def _check_qty(value: float, what: str) -> None:
    if not math.isfinite(value) or value <= 0:
        raise BadInput(f"{what} {value!r} is not a positive finite quantity")


def _check_bar(bar: Bar) -> None:
    # The buffer's rule passes the common, valid bar; the checks below only
    # name what is wrong.
    if plausible(bar.open, bar.high, bar.low, bar.close, bar.volume):
        return
    for name, value in (
        ("open", bar.open),
        ("high", bar.high),
        ("low", bar.low),
        ("close", bar.close),
    ):
        _check_price(value, f"bar {name}")
    if bar.high < bar.low:
        raise BadInput(f"bar high {bar.high} below its low {bar.low}")
    if not math.isfinite(bar.volume) or bar.volume < 0:
        raise BadInput(f"bar volume {bar.volume!r} is not a finite non-negative number")


def _check_order_price(order_type: OrderType, price: float | None, what: str) -> None:
    if price is not None:
        _check_price(price, what)
    elif order_type is not OrderType.MARKET:
        raise BadInput(f"{what}: a {order_type.value} order needs a price")


def client_order_id(account: str, symbol: str, day: date, attempt: int, kind: str) -> str:
    """Return the deterministic client order id of (account, symbol, day, attempt, kind).

    The same decision after a crash yields the same id, so a resend cannot
    duplicate at the broker (venues refuse a known client order id).
    """
    acct = hashlib.blake2s(account.encode(), digest_size=3).hexdigest()
    return f"sw-{acct}-{symbol}-{day:%y%m%d}-{attempt}-{kind}"


def _bump(state: PositionState, **changes: object) -> PositionState:
    return msgspec.structs.replace(state, seq=state.seq + 1, **changes)


def roll_day(state: PositionState, day: date) -> PositionState:
    """Reset day-scoped fields when ``day`` is a later trading day; keep the position."""
    if day <= state.trading_day:
        return state
    attempts = {k: v for k, v in state.attempts.items() if k >= day.isoformat()}
    return _bump(
        state,
        trading_day=day,
        attempts=attempts,
        entries_today=0,
        realized_pnl_today=0.0,
        trades_today=0,
    )


def set_levels(state: PositionState, day: date, levels: dict[str, float]) -> PositionState:
    """Record the day's pivots (``resistance``/``support``)."""
    for name, value in levels.items():
        _check_price(value, f"level {name}")
    if levels == state.levels and day == state.levels_day:
        return state
    return _bump(state, levels=dict(levels), levels_day=day)


def mark_bar(state: PositionState, bar: Bar) -> PositionState:
    """Track the last price and the trade's extremes (for MAE/MFE) from a bar."""
    # Every bar of every symbol comes through here: the new state is made by
    # one ``replace``.
    if bar.symbol != state.symbol:
        raise WrongSymbol(f"bar for {bar.symbol} sent to {state.symbol}")
    close, high, low = bar.close, bar.high, bar.low
    if not plausible(bar.open, high, low, close, bar.volume):
        _check_bar(bar)
    if state.qty == 0:
        if state.last_price == close:
            return state
        return _replace(state, seq=state.seq + 1, last_price=close)
    # max() and min() as they pick (ties keep the state's), without their calls
    trade_high, trade_low = state.trade_high, state.trade_low
    if trade_high is not None and not high > trade_high:
        high = trade_high
    if trade_low is not None and not low < trade_low:
        low = trade_low
    if (close, high, low) == (state.last_price, trade_high, trade_low):
        return state
    return _replace(state, seq=state.seq + 1, last_price=close, trade_high=high, trade_low=low)


def begin_entry(
    state: PositionState,
    *,
    day: date,
    pivot: float,
    side: Side,
    qty: float,
    now: datetime,
    max_attempts: int,
    order_type: OrderType = OrderType.MARKET,
    price: float | None = None,
) -> tuple[PositionState, Intent]:
    """Count the attempt and record the entry intent.

    Raises ``EntryRefused`` when the rules forbid it (not managed, position open,
    entry in flight, attempts exhausted) and ``BadInput`` for an impossible
    quantity, pivot or price, or a ``day`` before the state's trading day.
    """
    _check_qty(qty, "entry qty")
    _check_price(pivot, "pivot")
    _check_order_price(order_type, price, "entry price")
    if day < state.trading_day:
        raise BadInput(f"entry for {day}, before the trading day {state.trading_day}")
    if state.mode is not Mode.MANAGED:
        raise EntryRefused(f"{state.symbol}: mode {state.mode.value}, no automated orders")
    if not state.is_flat:
        raise EntryRefused(f"{state.symbol}: position of {state.qty} already open")
    if any(i.kind is IntentKind.ENTRY for i in state.intents):
        raise EntryRefused(f"{state.symbol}: an entry is already in flight")
    state = roll_day(state, day)
    key = attempt_key(day, pivot, side)
    used = state.attempts.get(key, 0)
    if used >= max_attempts:
        raise EntryRefused(
            f"{state.symbol}: {used} of {max_attempts} attempts used at pivot {pivot} {side.value}"
        )
    number = state.entries_today + 1
    intent = Intent(
        client_order_id=client_order_id(state.account, state.symbol, day, number, "entry"),
        kind=IntentKind.ENTRY,
        side=side,
        qty=qty,
        order_type=order_type,
        created_at=now,
        price=price,
        reason="entry",
    )
    attempts = dict(state.attempts)
    attempts[key] = used + 1
    new = _bump(
        state,
        attempts=attempts,
        entries_today=number,
        intents=(*state.intents, intent),
        pivot=pivot,
    )
    return new, intent


def begin_order(
    state: PositionState,
    *,
    kind: IntentKind,
    side: Side,
    qty: float,
    now: datetime,
    tag: str,
    order_type: OrderType = OrderType.MARKET,
    price: float | None = None,
    reason: str = "",
) -> tuple[PositionState, Intent]:
    """Record a non-entry intent (stop, partial, exit); ``tag`` makes its id unique.

    Raises ``BadInput`` for an impossible quantity or price and ``EntryRefused``
    when an intent with the same id is already in flight.
    """
    if kind is IntentKind.ENTRY:
        raise BadInput("entries go through begin_entry (attempts are counted there)")
    _check_qty(qty, f"{kind.value} qty")
    _check_order_price(order_type, price, f"{kind.value} price")
    cid = client_order_id(state.account, state.symbol, state.trading_day, state.entries_today, tag)
    if state.intent(cid) is not None:
        raise EntryRefused(f"{state.symbol}: intent {cid} already exists")
    intent = Intent(
        client_order_id=cid,
        kind=kind,
        side=side,
        qty=qty,
        order_type=order_type,
        created_at=now,
        price=price,
        reason=reason or kind.value,
    )
    return _bump(state, intents=(*state.intents, intent)), intent


def resolve_intent(
    state: PositionState, client_order_id: str, *, order_id: str | None = None, done: bool = False
) -> PositionState:
    """Attach the broker's order id to an intent, or drop it when ``done`` (canceled/rejected)."""
    intent = state.intent(client_order_id)
    if intent is None:
        return state
    if done:
        return _bump(
            state, intents=tuple(i for i in state.intents if i.client_order_id != client_order_id)
        )
    if order_id is None or intent.order_id == order_id:
        return state
    updated = msgspec.structs.replace(intent, order_id=order_id)
    intents = tuple(updated if i is intent else i for i in state.intents)
    stop = state.stop
    if stop is not None and stop.client_order_id == client_order_id:
        stop = msgspec.structs.replace(stop, order_id=order_id, status="live")
    return _bump(state, intents=intents, stop=stop)


def set_stop(state: PositionState, stop: StopOrder | None) -> PositionState:
    """Record the protective stop as it is (or is about to be) at the broker.

    ``stop.qty`` is what it is to cover (its open qty, see ``StopOrder``). The
    stop's intent, when it has one, is the order's record: the stop takes its
    filled qty from it, and the intent takes the stop's price and, as its qty,
    the order's total (filled plus open), so what reads the intent (a fill's
    bookkeeping, the store's intents, a resend) sees the order as it rests.
    Raises ``BadInput`` for an impossible price or qty.
    """
    if stop is not None:
        _check_price(stop.price, "stop price")
        _check_qty(stop.qty, "stop qty")
        intent = state.intent(stop.client_order_id)
        if intent is not None and stop.filled_qty != intent.filled_qty:
            stop = msgspec.structs.replace(stop, filled_qty=intent.filled_qty)
    if stop == state.stop:
        return state
    intents = state.intents if stop is None else _follow_stop(state.intents, stop)
    return _bump(state, stop=stop, intents=intents)


def _follow_stop(intents: tuple[Intent, ...], stop: StopOrder) -> tuple[Intent, ...]:
    """Return ``intents`` with the one of ``stop`` sized and priced as ``stop``'s order."""
    for index, intent in enumerate(intents):
        if intent.client_order_id != stop.client_order_id:
            continue
        qty = stop.order_qty
        if abs(intent.qty - qty) < _EPS and intent.price == stop.price:
            return intents
        moved = msgspec.structs.replace(intent, qty=qty, price=stop.price)
        return (*intents[:index], moved, *intents[index + 1 :])
    return intents


def stop_filled(state: PositionState, stop: StopOrder, filled_qty: float = 0.0) -> PositionState:
    """Record that the venue says the order of ``stop`` filled, ``filled_qty`` of it in all.

    A venue may deliver one fill as several executions and say the order
    filled before them. ``stop`` is kept, marked filled (``StopOrder``), until
    the executions applied here account for the fill: its qty becomes what of
    the fill is still to come, ``filled_qty`` (the order's total,
    ``stop.order_qty``, when the venue did not say: 0) less the fills applied
    here, and its intent's qty the fill's total, so the last execution
    settles both. When nothing is to come, the stop and its intent are
    dropped. Raises ``BadInput`` for a negative or non-finite ``filled_qty``.
    """
    if not math.isfinite(filled_qty) or filled_qty < 0:
        raise BadInput(f"filled qty {filled_qty!r} is not a finite quantity")
    cid = stop.client_order_id
    intent = state.intent(cid)
    applied = intent.filled_qty if intent is not None else stop.filled_qty
    total = filled_qty if filled_qty > _EPS else stop.order_qty
    to_come = total - applied
    if to_come <= _EPS:
        state = resolve_intent(state, cid, done=True)
        held = state.stop
        return set_stop(state, None) if held is not None and held.client_order_id == cid else state
    marked = msgspec.structs.replace(stop, status=STOP_FILLED, qty=to_come, filled_qty=applied)
    return set_stop(state, marked)


def absorb_fill_rest(state: PositionState, price: float, at: datetime) -> Applied:
    """Book what of a filled stop's fill never arrived as executions, at ``price``.

    For a heal that found the broker's quantity holding the venue's whole fill
    of the stop (``StopOrder.filled_at_venue``) while its executions had not all
    arrived: the rest (the stop's qty still to come) is applied as one fill of
    the stop at ``price`` (from the broker's record of the order, or an
    estimate) at ``at``, so the trade's record holds it and the stop and its
    intent settle as filled, as if it had arrived. It is remembered in
    ``absorbed_fills``, so those executions, if they come, are booked without
    moving the position a second time (``apply_fill``). Without such a stop,
    ``state`` is returned unchanged. Raises ``BadInput`` for an impossible price.
    """
    stop = state.stop
    if stop is None or not stop.filled_at_venue:
        return Applied(state=state)
    _check_price(price, "price of a fill that never arrived")
    cid = stop.client_order_id
    rest = Execution(
        exec_id=f"{cid}:{ABSENT}",
        order_id=stop.order_id or "",
        client_order_id=cid,
        symbol=state.symbol,
        side=stop.side,
        qty=stop.qty,
        price=price,
        ts=at,
    )
    applied = apply_fill(state, rest)
    new = resolve_intent(applied.state, cid, done=True)
    absorbed = dict(new.absorbed_fills)
    absorbed[cid] = absorbed.pop(cid, 0.0) + stop.qty
    while len(absorbed) > ABSORBED_KEPT:
        del absorbed[next(iter(absorbed))]  # the oldest: its executions are long overdue
    # Not the broker's execution: its id is no exec id the venue may send.
    kept = tuple(i for i in new.applied if i != rest.exec_id)
    return msgspec.structs.replace(
        applied, state=_bump(new, stop=None, absorbed_fills=absorbed, applied=kept)
    )


def _apply_absorbed(state: PositionState, ex: Execution, absorbed: float) -> Applied:
    """Book ``ex``, of an order whose fill ``absorbed`` (qty) is already in the position.

    What of it is past ``absorbed`` (more than the heal took in) is applied as a fill.
    """
    rest = dict(state.absorbed_fills)
    del rest[ex.client_order_id]
    left = absorbed - ex.qty
    if left > _EPS:
        rest[ex.client_order_id] = left
    if left >= -_EPS:
        applied = (*state.applied, ex.exec_id)[-APPLIED_IDS_KEPT:]
        new = _bump(state, applied=applied, absorbed_fills=rest)
        return Applied(state=new, absorbed=ex.qty)
    excess = msgspec.structs.replace(ex, qty=-left)
    applied_excess = apply_fill(_bump(state, absorbed_fills=rest), excess)
    return msgspec.structs.replace(applied_excess, absorbed=absorbed)


def stop_from_order(state: PositionState, order: Order) -> StopOrder:
    """Return the stop that ``order`` (a stop resting at the broker) is, for ``state``.

    The order's total less the fills applied here (those of its intent, or of
    the stop already held for it) is what it covers: a fill the venue counts
    on the order before its execution reached us is still in the position
    here, so it is still open here too, and its execution moves it when it
    arrives. When the venue's total is not above that count (a venue that
    counts the order otherwise), what it says is open is taken.
    """
    intent = state.intent(order.client_order_id)
    held = state.stop
    if intent is not None:
        filled = intent.filled_qty
    elif held is not None and held.client_order_id == order.client_order_id:
        filled = held.filled_qty
    else:
        filled = order.filled_qty
    open_qty = order.qty - filled
    if open_qty <= _EPS:
        open_qty = order.qty - order.filled_qty
    return StopOrder(
        client_order_id=order.client_order_id,
        side=order.side,
        price=order.stop_price or 0.0,
        qty=open_qty,
        order_id=order.order_id,
        status="live",
        filled_qty=filled,
    )


def _fill_stop(stop: StopOrder | None, ex: Execution) -> StopOrder | None:
    """Return ``stop`` after ``ex`` (None once nothing of it is open); others unchanged."""
    if stop is None or stop.client_order_id != ex.client_order_id:
        return stop
    open_qty = stop.qty - ex.qty
    if open_qty <= _EPS:
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
            if filled + _EPS >= intent.qty:
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
        new = _bump(
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
        new = _bump(
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

    if abs(new_qty) > _EPS:
        partial = PartialExit(at=ex.ts, price=ex.price, qty=closing, reason=reason)
        new = _bump(
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
    if remainder > _EPS:
        fields |= {
            "qty": signed(ex.side, remainder),
            "avg_price": ex.price,
            "opened_at": ex.ts,
            "entries": (msgspec.structs.replace(fill, qty=remainder),),
            "trade_high": ex.price,
            "trade_low": ex.price,
        }
    new = _bump(state, **fields)
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
    _check_price(avg_price, "broker avg price")
    if abs(state.qty - qty) < _EPS and abs(state.avg_price - avg_price) < 1e-6:
        return state
    if state.qty * qty < 0:
        return _bump(state, qty=qty, avg_price=avg_price, stop=None, **_NO_PLAN)
    return _bump(state, qty=qty, avg_price=avg_price)


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
        _check_price(exit_price, "exit price")
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
    return _bump(state, **fields), trade


def adopt(
    state: PositionState, qty: float, avg_price: float, at: datetime, mode: Mode
) -> PositionState:
    """Adopt an orphan (open at the broker, unknown here) with origin ``recovered``.

    The targets and planned stop recorded with an entry still in flight stay
    only when the orphan is on that entry's side; otherwise they were planned
    for another position and are dropped. Raises ``BadInput`` for an
    impossible ``qty`` or ``avg_price``.
    """
    _check_price(avg_price, "orphan avg price")
    if not math.isfinite(qty) or qty == 0:
        raise BadInput(f"orphan qty {qty!r} must be non-zero and finite")
    entry_sides = [i.side for i in state.intents if i.kind is IntentKind.ENTRY]
    plan = {} if any(side.sign * qty > 0 for side in entry_sides) else _NO_PLAN
    return _bump(
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
