"""Sending orders for a position actor: write-ahead intents, then the broker.

Every order starts as an intent committed with the actor's snapshot; only then
is it sent, with its deterministic client order id. A resend after a crash that
meets "duplicate client order id" is a no-op: the order is fetched by its id.
A broker that is unreachable leaves the intent pending for reconciliation,
which asks the broker by client order id and resends or drops it.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import msgspec

from actors import model
from actors.state import Intent, IntentKind, PositionState, StopOrder
from brokers.base import (
    BrokerError,
    DuplicateClientOrderId,
    Order,
    OrderNotFound,
    OrderRejected,
    OrderRequest,
    OrderStatus,
    OrderType,
)
from persistence.protocol import IntentRow, PutIntent, ResolveIntent, Write
from runtime.alerts import Severity
from runtime.failpoint import failpoint

if TYPE_CHECKING:
    from actors.position import PositionActor

__all__ = ["OrderDesk", "intent_row", "stop_intent_writes"]

_log = logging.getLogger(__name__)


def intent_row(symbol: str, intent: Intent) -> IntentRow:
    return IntentRow(
        client_order_id=intent.client_order_id,
        symbol=symbol,
        kind=intent.kind.value,
        side=intent.side,
        qty=intent.qty,
        price=intent.price,
        created_at=intent.created_at,
        order_id=intent.order_id,
    )


def stop_intent_writes(symbol: str, before: PositionState, after: PositionState) -> list[Write]:
    """Return the write of the stop's intent when ``after`` resized or moved it from ``before``.

    ``model.set_stop`` keeps the intent in step with the stop; this keeps the
    store's intents table in step with the intent, in the same commit.
    """
    stop = after.stop
    if stop is None:
        return []
    intent = after.intent(stop.client_order_id)
    if intent is None or intent == before.intent(stop.client_order_id):
        return []
    return [PutIntent(intent_row(symbol, intent))]


def _request(symbol: str, intent: Intent) -> OrderRequest:
    return OrderRequest(
        client_order_id=intent.client_order_id,
        symbol=symbol,
        side=intent.side,
        qty=intent.qty,
        type=intent.order_type,
        limit_price=intent.price if intent.order_type is OrderType.LIMIT else None,
        stop_price=intent.price if intent.order_type is OrderType.STOP else None,
    )


class OrderDesk:
    """The order path of one position actor (runs inside the actor's turn)."""

    def __init__(self, actor: PositionActor) -> None:
        self.actor = actor

    async def submit_new(self, state: PositionState, intent: Intent) -> Order | None:
        """Commit ``state`` holding ``intent``, then send it."""
        await self.actor._commit(state, [PutIntent(intent_row(self.actor.symbol, intent))])
        failpoint("after_intent_commit")
        return await self.send(intent)

    async def place(
        self,
        kind: IntentKind,
        qty: float,
        *,
        tag: str,
        reason: str,
        order_type: OrderType = OrderType.MARKET,
        price: float | None = None,
    ) -> Order | None:
        state = self.actor.state
        side = state.side
        if side is None:
            return None
        try:
            state, intent = model.begin_order(
                state,
                kind=kind,
                side=side.opposite,
                qty=qty,
                now=self.actor.ctx.clock.now(),
                tag=tag,
                order_type=order_type,
                price=price,
                reason=reason,
            )
        except model.ModelError as exc:
            _log.warning("%s: %s not placed: %s", self.actor.symbol, kind.value, exc)
            return None
        return await self.submit_new(state, intent)

    async def send(self, intent: Intent) -> Order | None:
        """Send a committed intent; return the order as the broker holds it, or None."""
        actor = self.actor
        broker = actor.ctx.broker
        request = _request(actor.symbol, intent)
        actor.desk_activity = actor.ctx.wall.monotonic()
        try:
            order = await broker.submit(request)
        except DuplicateClientOrderId:
            order_or_none = await broker.order_by_client_id(intent.client_order_id)
            if order_or_none is None:
                return None
            order = order_or_none
        except OrderRejected as exc:
            actor._alert("order", Severity.WARNING, f"{intent.kind.value} rejected: {exc}")
            state = model.resolve_intent(actor.state, intent.client_order_id, done=True)
            if state.stop is not None and state.stop.client_order_id == intent.client_order_id:
                state = model.set_stop(state, None)
            await actor._commit(state, [ResolveIntent(intent.client_order_id, "rejected")])
            return None
        except BrokerError as exc:
            _log.warning(
                "%s: %s not sent (%s); pending for reconciliation",
                actor.symbol,
                intent.client_order_id,
                exc,
            )
            return None
        failpoint("after_submit_before_ack")
        actor._adopt(
            model.resolve_intent(actor.state, intent.client_order_id, order_id=order.order_id)
        )
        return order

    def plan_stop(self, state: PositionState) -> tuple[PositionState, Intent | None, list[Write]]:
        """After an entry fill: record the protective stop intent (sent once durable)."""
        if state.stop is not None or state.side is None:
            return state, None, []
        price = state.planned_stop
        if price is None:
            return state, None, []
        state, intent = model.begin_order(
            state,
            kind=IntentKind.STOP,
            side=state.side.opposite,
            qty=abs(state.qty),
            now=self.actor.ctx.clock.now(),
            tag=f"stop{state.seq}",
            order_type=OrderType.STOP,
            price=price,
            reason="stop",
        )
        stop = StopOrder(
            client_order_id=intent.client_order_id, side=intent.side, price=price, qty=intent.qty
        )
        state = model.set_stop(state, stop)
        return state, intent, [PutIntent(intent_row(self.actor.symbol, intent))]

    async def resize_stop(self, *, recovering: bool = False) -> None:
        """Keep the stop's open quantity (what of it has not filled) equal to the position's.

        ``recovering``: reconciliation resizes also while the actor is suspended
        (a reconnect), since a stop larger than the position would open one.
        """
        stop = self.actor.state.stop
        qty = abs(self.actor.state.qty)
        if stop is None or stop.order_id is None or abs(stop.qty - qty) < 1e-9:
            return
        await self.move_stop(stop.price, qty, recovering=recovering)

    async def move_stop(self, price: float, qty: float, *, recovering: bool = False) -> None:
        """Move the stop to ``price``, covering ``qty`` (its open qty, as ``StopOrder.qty``).

        Written ahead as "replacing", then sent: the venue is asked for the
        order's new total, what of it already filled plus ``qty``.
        """
        actor = self.actor
        stop = actor.state.stop
        allowed = actor.may_protect if recovering else actor.trading_allowed
        if stop is None or stop.order_id is None or stop.filled_at_venue or not allowed:
            return
        planned = msgspec.structs.replace(stop, price=price, qty=qty, status="replacing")
        await self._commit_stop(planned)
        await self._replace(stop, planned)

    async def _commit_stop(self, stop: StopOrder) -> None:
        """Commit ``stop`` as the actor's stop, its intent (and the intent's row) with it."""
        actor = self.actor
        state = model.set_stop(actor.state, stop)
        await actor._commit(state, stop_intent_writes(actor.symbol, actor.state, state))

    def plan_resize(
        self, state: PositionState
    ) -> tuple[PositionState, StopOrder | None, list[Write]]:
        """After a fill: the stop resized to the position, recorded as "replacing".

        Return ``state`` with the planned stop, the stop as it rests at the
        broker now and the write of its resized intent (None, ``state``
        unchanged and no write when nothing needs to move). The caller commits
        the plan and the write, then calls ``send_stop_move``.
        """
        stop = state.stop
        qty = abs(state.qty)
        if (
            stop is None
            or stop.order_id is None
            or stop.filled_at_venue
            or state.is_flat
            or abs(stop.qty - qty) < 1e-9
        ):
            return state, None, []
        planned = msgspec.structs.replace(stop, qty=qty, status="replacing")
        resized = model.set_stop(state, planned)
        return resized, stop, stop_intent_writes(self.actor.symbol, state, resized)

    async def send_stop_move(self, resting: StopOrder) -> None:
        """Send the committed stop move of ``plan_resize``; ``resting`` is the stop it replaces.

        When trading stopped while the plan was committed, nothing is sent and
        the resting stop is kept, committed with its intent as it was (a crash
        before that leaves "replacing" on disk, which reconciliation settles
        from the broker's order).
        """
        actor = self.actor
        planned = actor.state.stop
        if planned is None or planned.status != "replacing":
            return
        if not actor.trading_allowed:
            await self._commit_stop(resting)
            return
        await self._replace(resting, planned)

    async def _replace(self, resting: StopOrder, planned: StopOrder) -> None:
        actor = self.actor
        if resting.order_id is None:
            return
        try:
            # The broker's qty is the order's new total: what of it filled stays filled.
            order = await actor.ctx.broker.replace(
                resting.order_id, stop_price=planned.price, qty=planned.order_qty
            )
        except BrokerError as exc:
            _log.warning("%s: stop move to %s failed: %s", actor.symbol, planned.price, exc)
            # Refused: the stop may have filled or gone meanwhile. Only one the venue
            # still holds open (or cannot tell about) is put back as resting.
            if not await self._settle_gone(resting):
                await self._commit_stop(resting)
            return
        live = msgspec.structs.replace(planned, order_id=order.order_id, status="live")
        actor._adopt(model.set_stop(actor.state, live))

    async def cancel_stop(self) -> bool:
        """Cancel the resting stop before an exit; False when it may have filled."""
        actor = self.actor
        stop = actor.state.stop
        if stop is None:
            return True
        if stop.filled_at_venue:
            return False  # filled at the venue: its fill, not an exit, settles the position
        order_id = stop.order_id
        if order_id is None:
            try:
                found = await actor.ctx.broker.order_by_client_id(stop.client_order_id)
            except BrokerError:
                return False
            if found is None:
                order_id = None
            elif not found.status.is_open:
                return False
            else:
                order_id = found.order_id
        if order_id is not None:
            try:
                await actor.ctx.broker.cancel(order_id)
            except (OrderNotFound, OrderRejected) as exc:
                _log.warning("%s: stop cancel refused: %s", actor.symbol, exc)
                # Filled there: its fill decides, and it is not canceled again. Gone: no stop.
                return await self._settle_gone(stop) and actor.state.stop is None
            except BrokerError as exc:
                _log.warning("%s: stop cancel failed: %s", actor.symbol, exc)
                return False
        state = model.resolve_intent(actor.state, stop.client_order_id, done=True)
        await actor._commit(
            model.set_stop(state, None), [ResolveIntent(stop.client_order_id, "canceled")]
        )
        return True

    async def _settle_gone(self, stop: StopOrder) -> bool:
        """Record ``stop`` as the venue holds it after it refused a request on it.

        Filled: see ``settle_filled``, with the venue's filled qty. Canceled,
        rejected or unknown there: dropped with its intent. Return False,
        changing nothing, when it is still open or the venue cannot tell.
        """
        actor = self.actor
        try:
            order = await actor.ctx.broker.order_by_client_id(stop.client_order_id)
        except BrokerError:
            return False
        if order is not None and order.status.is_open:
            return False
        if order is not None and order.status is OrderStatus.FILLED:
            await self.settle_filled(stop, order.filled_qty)
            return True
        status = "canceled" if order is None else order.status.value
        await actor._order_gone(stop.client_order_id, status)
        return True

    async def settle_filled(self, stop: StopOrder, filled_qty: float) -> None:
        """Record that the venue says the order of ``stop`` filled, ``filled_qty`` in all.

        ``filled_qty`` 0: the venue did not say how much (the order's total is
        expected). The stop is kept, marked filled (never moved or canceled
        again: no exit is sent on top of its fill), until the executions
        applied account for the fill, which may arrive in parts and later
        (``model.stop_filled``). When they already do, it is dropped with its
        intent, and a position still open is unprotected.
        """
        actor = self.actor
        before = actor.state
        try:
            state = model.stop_filled(before, stop, filled_qty)
        except model.BadInput as exc:
            _log.warning("%s: %s; the order's total is expected", actor.symbol, exc)
            state = model.stop_filled(before, stop)
        if state is before:
            return
        cid = stop.client_order_id
        done = before.intent(cid) is not None and state.intent(cid) is None
        writes = (
            [ResolveIntent(cid, "filled", stop.order_id)]
            if done
            else stop_intent_writes(actor.symbol, before, state)
        )
        await actor._commit(state, writes)
        held = before.stop
        dropped = held is not None and held.client_order_id == cid and state.stop is None
        if dropped and not state.is_flat:
            actor._alert(
                "unprotected",
                Severity.CRITICAL,
                f"stop {cid} filled at the broker; position {state.qty}",
            )

    async def cancel_order_quietly(self, stop: StopOrder) -> None:
        """Cancel a leftover order after the position closed; absence is fine."""
        if stop.order_id is None:
            return
        try:
            await self.actor.ctx.broker.cancel(stop.order_id)
        except BrokerError as exc:
            _log.info(
                "%s: leftover %s not canceled: %s", self.actor.symbol, stop.client_order_id, exc
            )
        state = model.resolve_intent(self.actor.state, stop.client_order_id, done=True)
        await self.actor._commit(state, [ResolveIntent(stop.client_order_id, "canceled")])

    async def cancel_intent(self, client_order_id: str) -> None:
        intent = self.actor.state.intent(client_order_id)
        if intent is None or intent.order_id is None:
            return
        try:
            await self.actor.ctx.broker.cancel(intent.order_id)
        except BrokerError as exc:
            _log.info("%s: cancel %s: %s", self.actor.symbol, client_order_id, exc)
