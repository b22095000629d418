"""The world the benchmarks run in: symbols, bars, realistic position states, a venue.

Position states are built with the model's own transitions (levels, an entry
fill, a protective stop acknowledged by the venue), so what is encoded,
stored and recovered is exactly what a session writes: no hand-made blobs.

``InstantVenue`` is a broker that answers at once and does no I/O. It stands in
for a remote venue where the venue is not what is measured (bar throughput,
fill durability): a real venue's latency is spent waiting, not on the trader's
event loop, whereas the embedded sim venue saves its whole book to disk on
every order, which would put the venue's own cost on the trader's loop.
Market orders fill at once at the last price the venue saw; stops rest and
never trigger by themselves (a test fills them, all or part, with
``fill_resting``). Where it refuses a request (a cancel or a replace of an order
that is done, a replace at or below the filled qty) it refuses as the sim
venue does, with the same exceptions. Recovery uses the real in-process sim
venue.
"""

from __future__ import annotations

import asyncio
import random
import struct
from array import array
from collections.abc import AsyncIterator
from datetime import date, datetime, timedelta

import msgspec

from actors import model
from actors.bars import BarRing
from actors.position import PositionContext
from actors.state import IntentKind, PositionState, StopOrder
from actors.strategy import PivotBreakout, StrategyParams
from brokers.base import (
    Bar,
    BrokerEvent,
    BrokerPosition,
    Capabilities,
    DuplicateClientOrderId,
    Execution,
    Order,
    OrderNotFound,
    OrderRejected,
    OrderRequest,
    OrderStatus,
    OrderType,
    Side,
    signed,
)
from brokers.sim.matching import positive
from persistence.protocol import IntentRow, Store
from runtime.alerts import Alert
from runtime.clock import Clock, FunctionClock, RealClock, TradingCalendar

__all__ = [
    "ACCOUNT",
    "BAR_SECONDS",
    "DAY",
    "CountingAlerts",
    "Held",
    "InstantVenue",
    "Member",
    "context",
    "full_ring",
    "held_position",
    "population",
    "ring_of",
    "symbols",
]

ACCOUNT = "BENCH-PAPER"
DAY = date(2026, 1, 6)  # a Tuesday
BAR_SECONDS = 60
CAPACITY = 240
_FIELDS = 6
_EPS = 1e-9  # the sim venue's quantity tolerance


def symbols(n: int) -> list[str]:
    """Return ``n`` distinct ticker-like symbols (valid watchlist symbols)."""
    return [f"S{i:05d}" for i in range(n)]


class CountingAlerts:
    """An alert sink that counts by kind (the benchmarks expect none that matter)."""

    def __init__(self) -> None:
        self.kinds: dict[str, int] = {}

    def __call__(self, alert: Alert) -> None:
        self.kinds[alert.kind] = self.kinds.get(alert.kind, 0) + 1


def context(
    store: Store,
    broker: InstantVenue,
    *,
    clock: Clock | None = None,
    alerts: CountingAlerts | None = None,
    params: StrategyParams | None = None,
) -> PositionContext:
    """Return the shared context of position actors, as ``runtime.app`` builds it."""
    params = params or StrategyParams()
    return PositionContext(
        account=ACCOUNT,
        store=store,
        broker=broker,
        strategy=PivotBreakout(params),
        params=params,
        calendar=TradingCalendar(),
        clock=clock or FunctionClock(broker.now),
        wall=RealClock(),
        alert=alerts or CountingAlerts(),
        bar_seconds=BAR_SECONDS,
        bar_capacity=CAPACITY,
    )


def full_ring(symbol: str, last_open: datetime, seed: int, base: float = 100.0) -> BarRing:
    """Return a full 240-bar buffer whose newest bar opens at ``last_open`` (a random walk)."""
    rng = random.Random(seed)
    first = last_open.timestamp() - BAR_SECONDS * (CAPACITY - 1)
    data = array("d")
    price = base
    for k in range(CAPACITY):
        step = rng.gauss(0.0, 0.001) * price
        open_, close = price, max(0.01, price + step)
        high = max(open_, close) * (1 + abs(rng.gauss(0.0, 0.0005)))
        low = min(open_, close) * (1 - abs(rng.gauss(0.0, 0.0005)))
        data.extend(
            (first + k * BAR_SECONDS, open_, high, low, close, float(rng.randint(500, 5000)))
        )
        price = close
    header = struct.pack("<III", CAPACITY, CAPACITY, 0)  # capacity, count, head (BarRing's)
    return BarRing.from_bytes(symbol, header + data.tobytes())


class Held(msgspec.Struct, frozen=True):
    """An open position as both sides know it: the trader's state and the venue's view."""

    state: PositionState
    entry: Execution
    stop: Order
    position: BrokerPosition
    intents: tuple[IntentRow, ...]


def held_position(symbol: str, ring: BarRing, opened_at: datetime, index: int) -> Held:
    """Return a long position with its protective stop live at the venue.

    Built with the model's transitions: the day's levels, an entry fill at a
    break of the resistance, the stop intent acknowledged by the venue, then
    the bars since the entry marked (extremes for MAE/MFE).
    """
    last_close = ring.close(0)
    resistance = round(last_close * 0.995, 2)
    support = round(last_close * 0.98, 2)
    price = round(last_close * 0.998, 2)
    state = PositionState(account=ACCOUNT, symbol=symbol, trading_day=DAY)
    state = model.set_levels(state, DAY, {"resistance": resistance, "support": support})
    state, entry_intent = model.begin_entry(
        state,
        day=DAY,
        pivot=resistance,
        side=Side.BUY,
        qty=100.0,
        now=opened_at,
        max_attempts=2,
    )
    risk = max(price - resistance, price * 0.002)
    state = msgspec.structs.replace(
        state,
        targets=(round(price + risk, 2), round(price + 2 * risk, 2)),
        planned_stop=resistance,
    )
    entry = Execution(
        exec_id=f"E-{index:06d}",
        order_id=f"BO-{index:06d}",
        client_order_id=entry_intent.client_order_id,
        symbol=symbol,
        side=Side.BUY,
        qty=100.0,
        price=price,
        ts=opened_at,
    )
    state = model.apply_fill(state, entry).state
    state, stop_intent = model.begin_order(
        state,
        kind=IntentKind.STOP,
        side=Side.SELL,
        qty=100.0,
        now=opened_at,
        tag=f"stop{state.seq}",
        order_type=OrderType.STOP,
        price=resistance,
        reason="stop",
    )
    state = model.set_stop(
        state,
        StopOrder(
            client_order_id=stop_intent.client_order_id,
            side=Side.SELL,
            price=resistance,
            qty=100.0,
        ),
    )
    stop_order_id = f"SO-{index:06d}"
    state = model.resolve_intent(state, stop_intent.client_order_id, order_id=stop_order_id)
    for bar in ring.since(opened_at):
        state = model.mark_bar(state, bar)
    stop = Order(
        order_id=stop_order_id,
        client_order_id=stop_intent.client_order_id,
        symbol=symbol,
        side=Side.SELL,
        qty=100.0,
        type=OrderType.STOP,
        status=OrderStatus.NEW,
        stop_price=resistance,
        created_at=opened_at,
        updated_at=opened_at,
    )
    intents = tuple(
        IntentRow(
            client_order_id=i.client_order_id,
            symbol=symbol,
            kind=i.kind.value,
            side=i.side,
            qty=i.qty,
            price=i.price,
            created_at=i.created_at,
            status="acked",
            order_id=i.order_id,
        )
        for i in state.intents
    )
    return Held(
        state=state,
        entry=entry,
        stop=stop,
        position=BrokerPosition(symbol=symbol, qty=100.0, avg_price=price),
        intents=intents,
    )


class InstantVenue:
    """A broker that answers at once and does no I/O (see the module docstring).

    ``now()`` is the market time the feeder sets (``market_time``); ``last``
    holds the last price seen per symbol (the feeder sets it from its bars).
    Implements ``brokers.base.Broker``.
    """

    def __init__(self, *, fill_market_orders: bool = True) -> None:
        self.market_time = TradingCalendar().open_of(DAY)
        self.last: dict[str, float] = {}
        self.fill_market_orders = fill_market_orders
        self.orders: dict[str, Order] = {}
        self.by_client: dict[str, str] = {}
        self.positions_by_symbol: dict[str, float] = {}
        self.submitted = 0
        self.replaced = 0
        self._events: asyncio.Queue[BrokerEvent | None] = asyncio.Queue()
        self._seq = 0

    @property
    def capabilities(self) -> Capabilities:
        return Capabilities(history=False)

    @property
    def account_id(self) -> str:
        return ACCOUNT

    @property
    def venue_account(self) -> str | None:
        return None

    def now(self) -> datetime:
        return self.market_time

    async def connect(self) -> None:
        return None

    async def close(self) -> None:
        self._events.put_nowait(None)

    async def events(self) -> AsyncIterator[BrokerEvent]:
        while (event := await self._events.get()) is not None:
            yield event

    async def subscribe(self, symbols: list[str]) -> None:
        return None

    async def positions(self) -> list[BrokerPosition]:
        return []

    async def open_orders(self) -> list[Order]:
        return [o for o in self.orders.values() if o.status.is_open]

    async def executions(self, since: datetime) -> list[Execution]:
        return []

    async def submit(self, request: OrderRequest) -> Order:
        if request.client_order_id in self.by_client:
            raise DuplicateClientOrderId(request.client_order_id)
        self._seq += 1
        self.submitted += 1
        now = self.market_time
        order = Order(
            order_id=f"IV-{self._seq}",
            client_order_id=request.client_order_id,
            symbol=request.symbol,
            side=request.side,
            qty=request.qty,
            type=request.type,
            status=OrderStatus.NEW,
            limit_price=request.limit_price,
            stop_price=request.stop_price,
            created_at=now,
            updated_at=now,
        )
        price = self.last.get(request.symbol)
        if request.type is OrderType.MARKET and self.fill_market_orders and price is not None:
            order = msgspec.structs.replace(
                order, status=OrderStatus.FILLED, filled_qty=request.qty, avg_fill_price=price
            )
            held = self.positions_by_symbol.get(request.symbol, 0.0)
            self.positions_by_symbol[request.symbol] = held + signed(request.side, request.qty)
            self._events.put_nowait(
                Execution(
                    exec_id=f"IVX-{self._seq}",
                    order_id=order.order_id,
                    client_order_id=order.client_order_id,
                    symbol=order.symbol,
                    side=order.side,
                    qty=order.qty,
                    price=price,
                    ts=now,
                )
            )
        self.orders[order.order_id] = order
        self.by_client[order.client_order_id] = order.order_id
        return order

    async def order_by_client_id(self, client_order_id: str) -> Order | None:
        order_id = self.by_client.get(client_order_id)
        return None if order_id is None else self.orders[order_id]

    async def cancel(self, order_id: str) -> None:
        """Cancel an open order, as the sim venue does: canceling a canceled order does nothing.

        Raises ``OrderNotFound`` for an unknown id and ``OrderRejected`` for an
        order that is done otherwise (filled).
        """
        order = self.orders.get(order_id)
        if order is None:
            raise OrderNotFound(order_id)
        if order.status is OrderStatus.CANCELED:
            return
        if not order.status.is_open:
            raise OrderRejected(f"order {order_id} is {order.status}, it cannot be canceled")
        self.orders[order_id] = msgspec.structs.replace(order, status=OrderStatus.CANCELED)

    async def replace(self, order_id: str, *, stop_price: float, qty: float | None = None) -> Order:
        """Move a resting stop and set its total qty (``None`` keeps it), as the sim venue does.

        ``qty`` is the order's new total, what already filled included. Raises
        ``OrderNotFound`` for an unknown id and ``OrderRejected`` for an order that
        is not an open stop (filled, canceled, another type), a stop price that is
        not a positive number, or a qty at or below the filled qty.
        """
        order = self.orders.get(order_id)
        if order is None:
            raise OrderNotFound(order_id)
        if order.type is not OrderType.STOP or not order.status.is_open:
            raise OrderRejected(
                f"order {order_id} is not a resting stop ({order.type}, {order.status})"
            )
        if not positive(stop_price):
            raise OrderRejected(f"stop_price {stop_price!r} is not a positive number")
        total = order.qty if qty is None else float(qty)
        if not positive(total) or total <= order.filled_qty + _EPS:
            raise OrderRejected(
                f"qty {qty!r} must be a number above the filled qty {order.filled_qty}"
            )
        self.replaced += 1
        order = msgspec.structs.replace(
            order, stop_price=stop_price, qty=total, updated_at=self.market_time
        )
        self.orders[order_id] = order
        return order

    async def fill_resting(self, order_id: str, qty: float, price: float) -> Execution:
        """Test control: fill ``qty`` of a resting order at ``price`` (the market reached it).

        A real venue may fill a stop in parts; this fills what it is told, all
        or part of what rests. The position moves, the order's filled qty and
        status follow, and the execution is returned (and queued as an event).
        Raises ``OrderNotFound`` for an unknown id and ``OrderRejected`` for an
        order that is done or a qty that is not positive or above what rests.
        """
        order = self.orders.get(order_id)
        if order is None:
            raise OrderNotFound(order_id)
        if not order.status.is_open:
            raise OrderRejected(f"order {order_id} is {order.status}, it cannot fill")
        resting = order.qty - order.filled_qty
        if not positive(qty) or qty > resting + _EPS:
            raise OrderRejected(
                f"fill of {qty!r}: {resting} of order {order_id} rest, so a fill is above 0 "
                f"and at most {resting}"
            )
        if not positive(price):
            raise OrderRejected(f"price {price!r} is not a positive number")
        filled = order.filled_qty + qty
        done = filled >= order.qty - _EPS
        avg = ((order.avg_fill_price or 0.0) * order.filled_qty + price * qty) / filled
        self.orders[order_id] = msgspec.structs.replace(
            order,
            filled_qty=order.qty if done else filled,
            avg_fill_price=avg,
            status=OrderStatus.FILLED if done else OrderStatus.PARTIALLY_FILLED,
            updated_at=self.market_time,
        )
        held = self.positions_by_symbol.get(order.symbol, 0.0)
        self.positions_by_symbol[order.symbol] = held + signed(order.side, qty)
        self._seq += 1
        execution = Execution(
            exec_id=f"IVX-{self._seq}",
            order_id=order_id,
            client_order_id=order.client_order_id,
            symbol=order.symbol,
            side=order.side,
            qty=qty,
            price=price,
            ts=self.market_time,
        )
        self._events.put_nowait(execution)
        return execution

    async def history(self, symbol: str, start: datetime, end: datetime) -> list[Bar]:
        return []


class Member(msgspec.Struct, frozen=True):
    """One symbol of a population: its full bar buffer (as bytes) and its open position."""

    symbol: str
    ring: bytes
    held: Held


def population(n: int, last_open: datetime, *, templates: int = 64) -> list[Member]:
    """Return ``n`` symbols, each with a full 240-bar buffer ending at ``last_open`` and a
    long position opened between 30 and 90 minutes before it (protective stop live).

    Buffers repeat over ``templates`` random walks (renamed per symbol): what is
    measured (encoding, storing, decoding) does not depend on the prices.
    """
    walks = [full_ring("TMPL", last_open, seed).to_bytes() for seed in range(templates)]
    members: list[Member] = []
    for i, symbol in enumerate(symbols(n)):
        ring = BarRing.from_bytes(symbol, walks[i % templates])
        opened_at = last_open - timedelta(minutes=30 + i % 60)
        members.append(Member(symbol, ring.to_bytes(), held_position(symbol, ring, opened_at, i)))
    return members


def ring_of(member: Member) -> BarRing:
    """Return the member's bar buffer as the actor holds it."""
    return BarRing.from_bytes(member.symbol, member.ring)
