"""Pure transitions of a position: state in, state out, no I/O.

Each function validates first and raises a typed ``ModelError`` before it
changes anything, so a bad input leaves the caller's state as it was (states
are frozen; a new one is returned). The actor around these functions persists
the new state before it acts on it.

Here: days, levels, bars, entries and orders (write-ahead intents), stops, and
the filled stop's missing fill. The fills themselves are booked at average cost
by ``actors.accounting`` (``apply_fill``, adoption, closings); the errors and
input checks every transition shares are ``actors.rules``. This module
re-exports both, so callers use ``model.apply_fill`` as before.
"""

from __future__ import annotations

import hashlib
import math
from datetime import date, datetime

import msgspec

from actors.accounting import (
    adopt,
    apply_fill,
    close_externally,
    closed_externally,
    override_quantity,
)
from actors.bars import plausible
from actors.rules import (
    ABSENT,
    ABSORBED_KEPT,
    APPLIED_IDS_KEPT,
    EPS,
    RECOVERED_STRATEGY,
    Applied,
    BadInput,
    EntryRefused,
    ModelError,
    WrongSymbol,
    bump,
    check_bar,
    check_order_price,
    check_price,
    check_qty,
)
from actors.state import (
    STOP_FILLED,
    Intent,
    IntentKind,
    Mode,
    PositionState,
    StopOrder,
    attempt_key,
)
from brokers.base import Bar, Execution, Order, OrderType, Side

__all__ = [
    "ABSENT",
    "ABSORBED_KEPT",
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
    "check_bar_of",
    "client_order_id",
    "close_externally",
    "closed_externally",
    "mark_bar",
    "mark_prices",
    "override_quantity",
    "resolve_intent",
    "roll_day",
    "set_levels",
    "set_stop",
    "stop_filled",
    "stop_from_order",
]

_replace = msgspec.structs.replace


def client_order_id(account: str, symbol: str, day: date, attempt: int, kind: str) -> str:
    """Return the deterministic client order id of (account, symbol, day, attempt, kind).

    The same decision after a crash yields the same id, so a resend cannot
    duplicate at the broker (venues refuse a known client order id).
    """
    acct = hashlib.blake2s(account.encode(), digest_size=3).hexdigest()
    return f"sw-{acct}-{symbol}-{day:%y%m%d}-{attempt}-{kind}"


def roll_day(state: PositionState, day: date) -> PositionState:
    """Reset day-scoped fields when ``day`` is a later trading day; keep the position."""
    if day <= state.trading_day:
        return state
    attempts = {k: v for k, v in state.attempts.items() if k >= day.isoformat()}
    return bump(
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
        check_price(value, f"level {name}")
    if levels == state.levels and day == state.levels_day:
        return state
    return bump(state, levels=dict(levels), levels_day=day)


def mark_bar(state: PositionState, bar: Bar) -> PositionState:
    """Track the last price and the trade's extremes (for MAE/MFE) from a bar."""
    check_bar_of(state.symbol, bar)
    return mark_prices(state, bar.close, bar.high, bar.low)


def check_bar_of(symbol: str, bar: Bar) -> None:
    """Raise ``WrongSymbol`` for a bar of another symbol, ``BadInput`` for one that cannot
    be real; a bar that passes is ``plausible`` (the buffer keeps it)."""
    if bar.symbol != symbol:
        raise WrongSymbol(f"bar for {bar.symbol} sent to {symbol}")
    if not plausible(bar.open, bar.high, bar.low, bar.close, bar.volume):
        check_bar(bar)  # names what is wrong; raises for every bar plausible refuses


def mark_prices(state: PositionState, close: float, high: float, low: float) -> PositionState:
    """``mark_bar`` from prices already checked: ``close`` is the last price, ``high``
    and ``low`` the extremes of one bar or of several in a row (the position actor
    folds the bars it has seen since the state was last read in one call).
    """
    # The new state is made by one ``replace``, or none when nothing moved.
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
    check_qty(qty, "entry qty")
    check_price(pivot, "pivot")
    check_order_price(order_type, price, "entry price")
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
    new = bump(
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
    check_qty(qty, f"{kind.value} qty")
    check_order_price(order_type, price, f"{kind.value} price")
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
    return bump(state, intents=(*state.intents, intent)), intent


def resolve_intent(
    state: PositionState, client_order_id: str, *, order_id: str | None = None, done: bool = False
) -> PositionState:
    """Attach the broker's order id to an intent, or drop it when ``done`` (canceled/rejected)."""
    intent = state.intent(client_order_id)
    if intent is None:
        return state
    if done:
        return bump(
            state, intents=tuple(i for i in state.intents if i.client_order_id != client_order_id)
        )
    if order_id is None or intent.order_id == order_id:
        return state
    updated = msgspec.structs.replace(intent, order_id=order_id)
    intents = tuple(updated if i is intent else i for i in state.intents)
    stop = state.stop
    if stop is not None and stop.client_order_id == client_order_id:
        stop = msgspec.structs.replace(stop, order_id=order_id, status="live")
    return bump(state, intents=intents, stop=stop)


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
        check_price(stop.price, "stop price")
        check_qty(stop.qty, "stop qty")
        intent = state.intent(stop.client_order_id)
        if intent is not None and stop.filled_qty != intent.filled_qty:
            stop = msgspec.structs.replace(stop, filled_qty=intent.filled_qty)
    if stop == state.stop:
        return state
    intents = state.intents if stop is None else _follow_stop(state.intents, stop)
    return bump(state, stop=stop, intents=intents)


def _follow_stop(intents: tuple[Intent, ...], stop: StopOrder) -> tuple[Intent, ...]:
    """Return ``intents`` with the one of ``stop`` sized and priced as ``stop``'s order."""
    for index, intent in enumerate(intents):
        if intent.client_order_id != stop.client_order_id:
            continue
        qty = stop.order_qty
        if abs(intent.qty - qty) < EPS and intent.price == stop.price:
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
    total = filled_qty if filled_qty > EPS else stop.order_qty
    to_come = total - applied
    if to_come <= EPS:
        state = resolve_intent(state, cid, done=True)
        held = state.stop
        return set_stop(state, None) if held is not None and held.client_order_id == cid else state
    marked = msgspec.structs.replace(stop, status=STOP_FILLED, qty=to_come, filled_qty=applied)
    return set_stop(state, marked)


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
    if open_qty <= EPS:
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
    check_price(price, "price of a fill that never arrived")
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
        applied, state=bump(new, stop=None, absorbed_fills=absorbed, applied=kept)
    )
