"""Healing one symbol inside its actor: the shell around ``plan_symbol``.

Runs in the position actor's turn, so nothing races it for the symbol. Order:
plan, decide the new state, commit it if it changed (with closed-trade rows and
the foreign executions it accounts for), and only then act at the broker
(cancel what a zombie left resting, flatten an orphan, resize or restore a
stop). A symbol that agrees with the broker writes nothing. A dry run folds
the fills a real run would replay into a copy of the state, plans, and changes
nothing.

Hand trades (executions of orders the trader did not send) that reduce, close
or flip a held position were replayed as fills by the supervisor, in their
place among ours, before this runs. The others (opening a symbol flat here,
adding to the held side) are not applied as fills: the broker's quantities say
what they did, as an orphan or a drift, and they are stored with the heal that
accounts for them, so every execution of the account ends up in the store
exactly once.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import timedelta
from typing import TYPE_CHECKING

import msgspec

from actors import model
from actors.findings import (
    EXTERNAL_RANK,
    assumed_position,
    external_kind,
    label_external,
    latest_execution,
    own_prefix,
    replays_hand_trade,
)
from actors.findings import signature as finding_signature
from actors.messages import Reconcile, ReconcileOutcome
from actors.missing_fill import absorb_fill_rest
from actors.orders import stop_intent_writes
from actors.reconcile import Finding, plan_symbol
from actors.state import IntentKind, Mode, Origin, PositionState, StopOrder
from brokers.base import BrokerError, Execution, Order, OrderStatus, OrderType
from persistence.protocol import (
    PutClosedTrade,
    PutExecution,
    ResolveIntent,
    Write,
)
from runtime.alerts import Severity

if TYPE_CHECKING:
    from actors.position import PositionActor

__all__ = ["heal_symbol"]

_log = logging.getLogger(__name__)


def _fold(
    actor: PositionActor, state: PositionState, executions: Sequence[Execution]
) -> tuple[PositionState, str | None, tuple[float, float] | None]:
    """Apply what a replay would to a copy of ``state``, purely (a dry run).

    ``executions``: the symbol's unseen ones, oldest first. Ours always; a hand
    trade only against the held side, as the supervisor's replay picks them.
    Return the state, the gravest hand trade met (``EXTERNAL_RANK``) and the
    (qty, avg price) held before the first one.
    """
    external: str | None = None
    held: tuple[float, float] | None = None
    for ex in executions:
        if not _is_ours(actor, ex.client_order_id) and not replays_hand_trade(state, ex):
            continue
        before = state
        try:
            applied = model.apply_fill(state, ex)
        except model.ModelError as exc:
            _log.warning("%s: dry run cannot replay %s: %s", state.symbol, ex.exec_id, exc)
            continue
        state = applied.state
        kind = external_kind(before, applied, ex)
        if kind is not None:
            held = held or (before.qty, before.avg_price)
            if external is None or EXTERNAL_RANK[kind] > EXTERNAL_RANK[external]:
                external = kind
    return state, external, held


def _last_exit(state: PositionState, executions: Sequence[Execution]) -> Execution | None:
    """Return the latest execution that reduced ``state``'s side since it opened."""
    side = state.side
    if side is None:
        return None
    return latest_execution(
        ex
        for ex in executions
        if ex.side is side.opposite and (state.opened_at is None or ex.ts >= state.opened_at)
    )


async def heal_symbol(actor: PositionActor, msg: Reconcile) -> ReconcileOutcome:
    """Reconcile ``actor`` against ``msg``'s broker truth; see the module docstring."""
    state, external, held = (
        _fold(actor, actor.state, msg.replay) if msg.dry_run else (actor.state, None, None)
    )
    # A broker that reports no positions cannot contradict ours: take them as they
    # are (its orders still tell whether the stop rests), but they stay unverified.
    position = msg.position if msg.verify else assumed_position(state)
    plan = plan_symbol(state, position, msg.open_orders)
    unverified = not msg.verify and not state.is_flat and not actor.is_confirmed(state)
    outcome = ReconcileOutcome(
        symbol=actor.symbol,
        finding=plan.finding.value,
        local_qty=plan.local_qty,
        broker_qty=plan.broker_qty,
        local_avg=plan.local_avg,
        broker_avg=plan.broker_avg,
        unprotected=plan.unprotected,
        unverified=unverified,
    )
    if msg.dry_run:
        return label_external(outcome, external, held)
    _set_unverified(actor, unverified)
    signature = finding_signature(plan)
    if not msg.heal or (msg.mode == "periodic" and signature != msg.signature):
        # Seen, not confirmed (or changed since the supervisor looked): heal nothing.
        _log.info("%s: %s; not healed until confirmed", actor.symbol, signature)
        return msgspec.structs.replace(
            outcome, pending=True, actions=(f"pending {signature}: not healed until confirmed",)
        )

    now = actor.ctx.clock.now()
    held_side = state.side
    old_stop_price = _stop_price(state)
    writes: list[Write] = []
    actions: list[str] = []
    leftovers: list[Order] = []
    seen = plan  # what the broker's truth said of the symbol before any of it was healed
    absorbed: StopOrder | None = None  # our stop, filled at the venue, its rest booked
    if msg.verify and (msg.mode != "periodic" or msg.fill_overdue):
        state, absorbed = await absorb_fill_rest(actor, state, msg, writes, actions)
        if absorbed is not None:
            # What the missing part explains is healed: only the rest is a finding.
            plan = plan_symbol(state, position, msg.open_orders)
            outcome = msgspec.structs.replace(outcome, finding=plan.finding.value)
    match plan.finding:
        case Finding.ZOMBIE:
            last = _last_exit(state, msg.executions)
            price = last.price if last is not None else None
            leftovers = [o for o in msg.open_orders if _is_ours(actor, o.client_order_id)]
            writes.extend(ResolveIntent(i.client_order_id, "canceled") for i in state.intents)
            state, trade = model.close_externally(state, last.ts if last else now, price)
            if trade is not None:
                writes.append(PutClosedTrade(trade))
            actions.append(f"closed as CLOSED_EXTERNALLY (exit {price})")
            actor._alert(
                "zombie",
                Severity.WARNING,
                f"open here ({plan.local_qty}), flat at the broker: closed as CLOSED_EXTERNALLY"
                f" at {price}",
            )
        case Finding.ORPHAN:
            mode = Mode.WATCH if msg.orphan_mode == "adopt" else Mode.MANAGED
            state = model.adopt(state, plan.broker_qty, plan.broker_avg, now, mode)
            actions.append(f"adopted ({msg.orphan_mode}) {plan.broker_qty} @ {plan.broker_avg}")
            actor._alert(
                "orphan",
                Severity.CRITICAL,
                f"open at the broker ({plan.broker_qty} @ {plan.broker_avg}), unknown here: "
                f"adopted, policy {msg.orphan_mode}",
            )
        case Finding.DRIFT:
            old_stop = state.stop
            state = model.override_quantity(state, plan.broker_qty, plan.broker_avg)
            if old_stop is not None and state.stop is None:
                # The broker holds the other side: the old side's stop, still resting,
                # would add to it when it triggers. Canceled once this is durable.
                leftovers = [
                    o for o in msg.open_orders if o.client_order_id == old_stop.client_order_id
                ]
                for order in leftovers:
                    state = model.resolve_intent(state, order.client_order_id, done=True)
                    writes.append(ResolveIntent(order.client_order_id, "canceled", order.order_id))
            actions.append(
                f"broker override qty {plan.local_qty}->{plan.broker_qty}"
                f" avg {plan.local_avg}->{plan.broker_avg}"
            )
            actor._alert(
                "drift",
                Severity.WARNING,
                f"local {plan.local_qty} @ {plan.local_avg} vs broker {plan.broker_qty} @ "
                f"{plan.broker_avg}: broker wins",
            )
        case Finding.OK if state.side is not None:
            # A stop of ours resting on the side now held (a hand trade flipped the
            # position past it while we were down, replayed just now): it protects
            # nothing, and triggered it would add to the position.
            leftovers = [o for o in msg.open_orders if _is_wrong_side_stop(actor, state, o)]
            for order in leftovers:
                if state.stop is not None and state.stop.client_order_id == order.client_order_id:
                    state = model.set_stop(state, None)
                if state.intent(order.client_order_id) is not None:
                    state = model.resolve_intent(state, order.client_order_id, done=True)
                writes.append(ResolveIntent(order.client_order_id, "canceled", order.order_id))
        case Finding.OK:
            if state.is_flat and msg.position is None:
                # Flat on both sides (a replayed hand close): an exit or partial of ours
                # still resting would open a position nobody wants. Entries stay.
                leftovers = [o for o in msg.open_orders if _is_exit_of_ours(actor, state, o)]
                for order in leftovers:
                    if state.intent(order.client_order_id) is not None:
                        state = model.resolve_intent(state, order.client_order_id, done=True)
                        writes.append(
                            ResolveIntent(order.client_order_id, "canceled", order.order_id)
                        )
    if state.side is not held_side:
        # Now on another side (an orphan, a drift past zero): the stop price of the side
        # held before protects nothing; only a plan the model kept for this side does.
        old_stop_price = state.planned_stop
    if seen.finding is not Finding.OK or msg.mode != "periodic":
        # Outside a periodic run nothing streams while we heal, so the broker's
        # quantities already hold these trades; in a periodic run only a
        # confirmed finding says so (an unconfirmed one may still be streaming).
        writes.extend(PutExecution(ex) for ex in msg.foreign)

    state, intent_writes = await _settle_intents(actor, state, msg)
    writes.extend(intent_writes)
    if plan.broker_stop is not None and not state.is_flat:
        stop = model.stop_from_order(state, plan.broker_stop)
        if state.stop is None or _as_held(state.stop) != _as_held(stop):
            unattached, state = state, model.set_stop(state, stop)
            writes.extend(stop_intent_writes(actor.symbol, unattached, state))
            actions.append(f"stop attached {stop.client_order_id} @ {stop.price}")
    elif state.stop is not None and state.intent(state.stop.client_order_id) is None:
        state = model.set_stop(state, None)
    for order in plan.unknown_orders:
        if order is not plan.broker_stop:
            actions.append(f"attached unknown order {order.client_order_id} ({order.type.value})")
    if writes or state != actor.state:
        # Only a change is written: a symbol that agrees with the broker costs no commit.
        await actor._commit(state, writes)
    await _refill_bars(actor)

    for order in leftovers:
        actions.append(await _cancel_leftover(actor, order))
    adopted = actor.state.origin is Origin.RECOVERED and not actor.state.is_flat
    if msg.orphan_mode == "flatten" and (plan.finding is Finding.ORPHAN or adopted):
        # Found here, or opened (a flip) by a hand trade the replay booked: the policy
        # holds nothing this trader did not open.
        await actor._flatten("flatten")
        actions.append("flatten sent")
    if actor.state.stop is not None and not actor.state.is_flat:
        # After a drift, or a kill between moving the stop for a partial and the
        # partial's fill: the stop must cover exactly the position, never more or less.
        before = actor.state.stop.qty
        await actor.desk.resize_stop(recovering=True)
        stop = actor.state.stop
        if stop is not None and stop.qty != before and abs(stop.qty - abs(actor.state.qty)) < 1e-9:
            actions.append(f"stop resized {before} -> {stop.qty}")
    if plan.unprotected and abs(actor.state.qty) > 0 and actor.state.stop is None:
        actions.extend(await _protect(actor, msg, old_stop_price))
    if unverified:
        actions.append("unverified: trades nothing until confirmed")
    return msgspec.structs.replace(
        outcome, actions=tuple(actions), missing_fill=absorbed is not None
    )


def _stop_price(state: PositionState) -> float | None:
    """Return the price the stop of ``state``'s position is (or was to be) at, if known.

    The stop held, when it protects the side held: a stop the venue said filled
    whose fill crossed zero is the other side's, still awaiting its executions.
    """
    stop, side = state.stop, state.side
    if stop is not None and side is not None and stop.side is side.opposite:
        return stop.price
    return state.planned_stop


def _as_held(stop: StopOrder) -> tuple[str | None, float, float, float, str]:
    """Return what the broker says about a stop (our client order id stays ours)."""
    return stop.order_id, stop.price, stop.qty, stop.filled_qty, stop.status


def _is_ours(actor: PositionActor, client_order_id: str) -> bool:
    return (
        actor.knows_order(client_order_id)
        or client_order_id in actor.state.absorbed_fills
        or client_order_id.startswith(own_prefix(actor.ctx.account, actor.symbol))
    )


def _is_wrong_side_stop(actor: PositionActor, state: PositionState, order: Order) -> bool:
    """Return whether ``order`` is a stop of ours on the side ``state`` holds (it would add)."""
    if order.type is not OrderType.STOP or order.side is not state.side:
        return False
    if state.stop is not None and state.stop.client_order_id == order.client_order_id:
        return True
    intent = state.intent(order.client_order_id)
    return intent is not None and intent.kind is IntentKind.STOP


def _is_exit_of_ours(actor: PositionActor, state: PositionState, order: Order) -> bool:
    """Return whether ``order`` is ours and would reduce a position (not an entry)."""
    if not _is_ours(actor, order.client_order_id):
        return False
    intent = state.intent(order.client_order_id)
    if intent is not None:
        return intent.kind is not IntentKind.ENTRY
    return not order.client_order_id.endswith(f"-{IntentKind.ENTRY.value}")  # ids end in the kind


async def _cancel_leftover(actor: PositionActor, order: Order) -> str:
    """Cancel an order of ours a closed-by-hand position left resting (a stop would reopen it)."""
    try:
        await actor.ctx.broker.cancel(order.order_id)
    except BrokerError as exc:
        actor._alert(
            "zombie",
            Severity.CRITICAL,
            f"leftover {order.client_order_id} could not be canceled: {exc}",
        )
        return f"leftover {order.client_order_id} not canceled: {exc}"
    return f"canceled leftover {order.client_order_id}"


async def _settle_intents(
    actor: PositionActor, state: PositionState, msg: Reconcile
) -> tuple[PositionState, list[Write]]:
    """Settle intents the broker's open orders do not show; never guess.

    Open at the broker: attach the order id. Canceled, rejected or unknown
    there: drop (the order will never fill). Filled: its execution was just
    replayed, which dropped the intent; one still here was filled outside the
    window, except in a periodic run, where the fill may be racing the stream
    (kept: the fill, replayed or streamed, settles it).
    """
    open_by_cid = {o.client_order_id: o for o in msg.open_orders}
    writes: list[Write] = []
    for intent in state.intents:
        order = open_by_cid.get(intent.client_order_id)
        if order is None:
            try:
                order = await actor.ctx.broker.order_by_client_id(intent.client_order_id)
            except BrokerError:
                continue  # unknown: keep it pending, never guess
        if order is not None and (
            order.status.is_open or (order.status is OrderStatus.FILLED and msg.mode == "periodic")
        ):
            state = model.resolve_intent(state, intent.client_order_id, order_id=order.order_id)
            continue
        status = "canceled" if order is None else order.status.value
        state = model.resolve_intent(state, intent.client_order_id, done=True)
        writes.append(
            ResolveIntent(intent.client_order_id, status, order.order_id if order else None)
        )
        _log.info(
            "%s: intent %s settled as %s",
            actor.symbol,
            intent.client_order_id,
            "lost (never reached the broker)" if order is None else status,
        )
    return state, writes


async def _protect(actor: PositionActor, msg: Reconcile, price: float | None) -> list[str]:
    # An unverified position may be gone at the broker: a stop could open one.
    if (
        not msg.restore_stop
        or actor.state.mode is not Mode.MANAGED
        or price is None
        or actor.unverified
    ):
        actor._alert(
            "unprotected",
            Severity.CRITICAL,
            f"position {actor.state.qty} has no stop at the broker"
            + ("" if price is not None else " and no stop price is known"),
        )
        return ["unprotected: alerted"]
    state = msgspec.structs.replace(actor.state, planned_stop=price)
    state, intent, writes = actor.desk.plan_stop(state)
    if intent is None:
        return []
    await actor._commit(state, writes)
    cid = intent.client_order_id
    order = await actor.desk.send(intent)
    # Taken only if it rests: a resend's duplicate id can name an order long canceled.
    if order is not None and order.status.is_open:
        actor._alert(
            "unprotected",
            Severity.WARNING,
            f"stop was missing at the broker: restored {cid} @ {price}",
        )
        return [f"stop restored @ {price}"]
    # Not at the broker: refused (the desk dropped the intent), or not sent (the
    # intent waits, settled and tried again by the next run). Either way the
    # position has no stop now, and that is not a restore.
    if order is not None:
        why = f"the broker holds it as {order.status.value}"
    elif actor.state.intent(cid) is None:
        why = "the broker refused it"
    else:
        why = "not sent (broker error); tried again by the next reconciliation"
    actor._alert(
        "unprotected",
        Severity.CRITICAL,
        f"position {actor.state.qty} has no stop at the broker: restoring {cid} @ {price} "
        f"failed: {why}",
    )
    return [f"stop restore failed @ {price}: {why}"]


def _set_unverified(actor: PositionActor, unverified: bool) -> None:
    """Block (or free) the actor's trading; alert when a position becomes unverified."""
    if unverified and not actor.unverified:
        state = actor.state
        actor._alert(
            "unverified",
            Severity.CRITICAL,
            f"the broker reports no positions: {state.qty} @ {state.avg_price} is unverified "
            f"and trades nothing until `stalwart confirm {actor.symbol}`",
        )
    elif actor.unverified and not unverified:
        actor._alert("unverified", Severity.INFO, "position confirmed: trading again")
    actor.unverified = unverified


async def _refill_bars(actor: PositionActor) -> None:
    """Fill the gap since the last buffered bar from broker history, so no warm-up is needed."""
    broker = actor.ctx.broker
    if not broker.capabilities.history:
        return
    now = actor.ctx.clock.now()
    bar = timedelta(seconds=actor.ctx.bar_seconds)
    span = bar * actor.ctx.bar_capacity
    last = actor.bars.last_time()
    start = max(last + bar, now - span) if last is not None else now - span
    if now - start < bar:
        return
    try:
        history = await broker.history(actor.symbol, start, now)
    except BrokerError as exc:
        _log.warning("%s: bar refill failed: %s", actor.symbol, exc)
        return
    for item in history:
        if item.ts + bar <= now:
            actor.bars.append(item)
    actor._dirty = True
