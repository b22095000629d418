"""Alpaca's trading REST for the runtime: every call in a thread, every error typed.

alpaca-py's ``TradingClient`` is synchronous (``requests``), so each call runs
through ``asyncio.to_thread`` with a deadline: the loop never waits for the
network. A call that times out may still have reached Alpaca; for an order that
is what client order ids are for (the caller asks by id before resending).

Errors: no response, 5xx or a timeout -> ``BrokerUnavailable``; 404 ->
``OrderNotFound``; 422 with Alpaca's duplicate code -> ``DuplicateClientOrderId``;
other refusals of an order -> ``OrderRejected``; anything else -> ``BrokerError``.
The messages carry Alpaca's error text, never a credential.

The SDK's threads parse every response (JSON, pydantic models) holding the
GIL, and the loop thread that wants it back waits up to the interpreter's
switch interval each time: 5 ms by default, the whole of the loop-lag budget.
The adapter lowers it to 1 ms for the process (``sys.setswitchinterval``; it
never raises it), which bounds those waits at the cost of more GIL hand-offs.

The calls run in the adapter's own small pool (``SdkThreads``; 4 threads,
``AlpacaSettings.sdk_threads``),
not in the loop's default executor, for two reasons. A forced GIL switch hands
the GIL to *some* waiting thread, not to the loop: with every parse of a
burst of 50 orders in flight at once, the loop waits behind several of them,
and fewer SDK threads mean fewer turns to wait. And a venue that hangs holds
its threads until the SDK's own timeout (a deadline here abandons the call,
it cannot stop the thread): in the shared default executor that would starve
every other ``to_thread`` of the process (store files, backups). Four threads
are far more than Alpaca's rate limit (200 requests a minute) ever needs.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import logging
import sys
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta
from typing import Any, TypeVar, cast

import requests

from brokers.alpaca import translate
from brokers.alpaca.sdk import (
    AlpacaOrder,
    AlpacaOrderRequest,
    APIError,
    GetOrdersRequest,
    LimitOrderRequest,
    MarketOrderRequest,
    Position,
    QueryOrderStatus,
    ReplaceOrderRequest,
    Sort,
    StopLimitOrderRequest,
    StopOrderRequest,
    TimeInForce,
    TradeAccount,
    TradeActivity,
    TradingClient,
    status_code,
)
from brokers.base import (
    BrokerError,
    BrokerPosition,
    BrokerUnavailable,
    DuplicateClientOrderId,
    Execution,
    Order,
    OrderNotFound,
    OrderRejected,
    OrderRequest,
    OrderType,
)

__all__ = ["SdkThreads", "TradingRest", "in_thread"]

log = logging.getLogger(__name__)

_T = TypeVar("_T")
_DUPLICATE_CODE = 40010001
_PAGE = 100
_OPEN_PAGE = 500  # Alpaca's most orders a call
_REPLACED_CHAIN = 10


def _code(error: APIError) -> int | None:
    try:
        return int(error.code)
    except (ValueError, TypeError, KeyError):
        return None


class SdkThreads:
    """The adapter's own bounded thread pool for synchronous SDK calls.

    Created on first use and again after ``close()``, so an adapter that is
    closed and connected again still works. ``close()`` never waits for a
    call in flight (a hung venue must not hang the caller): its thread ends
    when the SDK gives up.
    """

    def __init__(self, workers: int, *, name: str = "alpaca-sdk") -> None:
        if workers < 1:
            raise ValueError(f"SDK threads: need at least 1, got {workers}")
        self._workers = workers
        self._name = name
        self._pool: ThreadPoolExecutor | None = None

    async def run(self, fn: Callable[[], _T]) -> _T:
        """Return ``fn()``, run in one of the pool's threads (with this task's context)."""
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self._workers, thread_name_prefix=self._name)
        context = contextvars.copy_context()
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, functools.partial(context.run, fn))

    def close(self) -> None:
        """Let the threads go once idle; refuse nothing later (a new pool starts)."""
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)


async def in_thread(
    what: str,
    fn: Callable[[], _T],
    *,
    threads: SdkThreads,
    timeout_s: float,
    order: bool = False,
) -> _T:
    """Run the SDK call ``fn`` in one of ``threads`` with a deadline; raise the venue's errors.

    ``order``: the call places or changes an order, so a refusal is ``OrderRejected``.
    """
    try:
        return await asyncio.wait_for(threads.run(fn), timeout_s)
    except TimeoutError as exc:
        raise BrokerUnavailable(f"{what}: no answer within {timeout_s:.0f} s") from exc
    except requests.RequestException as exc:
        raise BrokerUnavailable(f"{what}: {type(exc).__name__}") from exc
    except APIError as exc:
        raise _typed(what, exc, order=order) from exc


def _typed(what: str, error: APIError, *, order: bool) -> BrokerError:
    status = status_code(error)
    text = f"{what}: HTTP {status}: {error}"
    if status is None or status >= 500 or status == 429:
        return BrokerUnavailable(text)
    if status == 404:
        return OrderNotFound(text)
    if order and status in (403, 422):
        return OrderRejected(text)
    return BrokerError(text)


SWITCH_INTERVAL_S = 0.001  # see the module docstring


def shorten_gil_switch() -> None:
    """Lower the interpreter's GIL switch interval to ``SWITCH_INTERVAL_S`` (never raise it)."""
    if sys.getswitchinterval() > SWITCH_INTERVAL_S:
        sys.setswitchinterval(SWITCH_INTERVAL_S)


class TradingRest:
    """The trading REST calls of one Alpaca account, awaited on the loop, run in threads."""

    def __init__(
        self, client: TradingClient, threads: SdkThreads, *, timeout_s: float = 15.0
    ) -> None:
        shorten_gil_switch()
        self._client = client
        self._threads = threads
        self._timeout_s = timeout_s
        self._client_ids: dict[str, str] = {}  # order id -> client order id (never changes)

    async def call(self, what: str, fn: Callable[[], _T], *, order: bool = False) -> _T:
        """Run ``fn`` in a thread; raise the venue model's error for what went wrong."""
        return await in_thread(
            what, fn, threads=self._threads, timeout_s=self._timeout_s, order=order
        )

    # --- account and positions ---------------------------------------------------

    async def account(self) -> TradeAccount:
        return cast(TradeAccount, await self.call("account", self._client.get_account))

    async def positions(self) -> list[BrokerPosition]:
        raw = await self.call("positions", self._client.get_all_positions)
        return [translate.position(p) for p in cast(list[Position], raw)]

    # --- orders ---------------------------------------------------------------------

    async def open_orders(self) -> list[Order]:
        """Return every open order, paged newest first (Alpaca answers 500 at most a call).

        A book past one page would otherwise lose its oldest orders (the stops,
        placed first) from the read, and the heal would place them again.
        """
        found: dict[str, AlpacaOrder] = {}
        until: datetime | None = None
        while True:
            request = GetOrdersRequest(
                status=QueryOrderStatus.OPEN,
                limit=_OPEN_PAGE,
                nested=False,
                direction=Sort.DESC,
                until=until,
            )
            fetch = functools.partial(self._client.get_orders, request)
            page = cast(list[AlpacaOrder], await self.call("open orders", fetch))
            fresh = [o for o in page if str(o.id) not in found]
            found.update((str(o.id), o) for o in fresh)
            if len(page) < _OPEN_PAGE:
                break
            if not fresh:
                raise BrokerError(
                    f"open orders: more than {_OPEN_PAGE} share one submission time; "
                    "they cannot be paged"
                )
            # Up to and including the oldest time seen: orders sharing it that the
            # page cut off come again (known ones are skipped by id). Alpaca sorts
            # and cuts by submission time, which may come after the creation time.
            until = min(o.submitted_at or o.created_at for o in page) + timedelta(microseconds=1)
        orders = []
        for alpaca in found.values():
            try:
                orders.append(self._order(alpaca))
            except ValueError as exc:
                log.warning("open order not modelled, left alone: %s", exc)
        return orders

    async def submit(self, request: OrderRequest) -> Order:
        body = _order_request(request)
        try:
            raw = await self.call(
                f"submit {request.client_order_id}",
                lambda: self._client.submit_order(body),
                order=True,
            )
        except OrderRejected as exc:
            cause = exc.__cause__
            if isinstance(cause, APIError) and (
                _code(cause) == _DUPLICATE_CODE or "client_order_id must be unique" in str(cause)
            ):
                raise DuplicateClientOrderId(request.client_order_id) from cause
            raise
        return self._order(cast(AlpacaOrder, raw))

    async def order_by_client_id(self, client_order_id: str) -> Order | None:
        """Return the order (its latest replacement, if it was replaced); ``None`` when unknown."""
        try:
            raw = await self.call(
                f"order {client_order_id}",
                lambda: self._client.get_order_by_client_id(client_order_id),
            )
        except OrderNotFound:
            return None
        alpaca = cast(AlpacaOrder, raw)
        for _ in range(_REPLACED_CHAIN):
            if alpaca.replaced_by is None:
                break
            newer = str(alpaca.replaced_by)
            alpaca = cast(
                AlpacaOrder,
                await self.call(
                    f"order {newer}", functools.partial(self._client.get_order_by_id, newer)
                ),
            )
        return self._order(alpaca)

    async def cancel(self, order_id: str) -> None:
        await self.call(
            f"cancel {order_id}", lambda: self._client.cancel_order_by_id(order_id), order=True
        )

    async def replace(self, order_id: str, *, stop_price: float, qty: float | None) -> Order:
        client_id = await self._client_id(order_id)
        whole = None if qty is None else round(qty)
        if qty is not None and abs(qty - round(qty)) > 1e-9:
            raise OrderRejected(f"replace {order_id}: Alpaca replaces whole-share quantities only")
        body = ReplaceOrderRequest(
            stop_price=translate.tick(stop_price),
            qty=whole,
            client_order_id=translate.next_replacement_id(client_id),
        )
        raw = await self.call(
            f"replace {order_id}",
            lambda: self._client.replace_order_by_id(order_id, body),
            order=True,
        )
        return self._order(cast(AlpacaOrder, raw))

    # --- executions -----------------------------------------------------------------

    async def executions(self, since: datetime) -> list[Execution]:
        """Return every fill with ``ts >= since``, oldest first (FILL activities, paged)."""
        after = (since - timedelta(microseconds=1)).isoformat()
        activities: list[TradeActivity] = []
        token: str | None = None
        while True:
            params: dict[str, Any] = {"after": after, "direction": "asc", "page_size": _PAGE}
            if token is not None:
                params["page_token"] = token
            raw = await self.call(
                "fill activities",
                functools.partial(self._client.get, "/account/activities/FILL", params),
            )
            page = [TradeActivity(**row) for row in cast(list[dict[str, Any]], raw or [])]
            activities += page
            if len(page) < _PAGE:
                break
            token = page[-1].id
        executions = []
        for activity in activities:
            client_id = await self._client_id(str(activity.order_id))
            executions.append(translate.activity_execution(activity, client_id))
        return executions

    # --- internals -----------------------------------------------------------------------

    def _order(self, alpaca: AlpacaOrder) -> Order:
        self._client_ids[str(alpaca.id)] = alpaca.client_order_id
        return translate.order(alpaca)

    async def _client_id(self, order_id: str) -> str:
        known = self._client_ids.get(order_id)
        if known is not None:
            return known
        raw = await self.call(f"order {order_id}", lambda: self._client.get_order_by_id(order_id))
        alpaca = cast(AlpacaOrder, raw)
        self._client_ids[order_id] = alpaca.client_order_id
        return alpaca.client_order_id


def _order_request(request: OrderRequest) -> AlpacaOrderRequest:
    """Return the SDK request: market orders live for the day, others until canceled.

    Prices are rounded to Alpaca's tick (the runtime computes stops to the
    hundredth of a cent; Alpaca refuses sub-penny prices from $1 up).
    """
    common: dict[str, Any] = {
        "symbol": request.symbol,
        "qty": request.qty,
        "side": translate.alpaca_side(request.side),
        "client_order_id": request.client_order_id,
    }
    match request.type:
        case OrderType.MARKET:
            return MarketOrderRequest(**common, time_in_force=TimeInForce.DAY)
        case OrderType.LIMIT:
            if request.limit_price is None:
                raise OrderRejected(f"{request.client_order_id}: a limit order needs a price")
            return LimitOrderRequest(
                **common,
                time_in_force=TimeInForce.GTC,
                limit_price=translate.tick(request.limit_price),
            )
        case OrderType.STOP:
            if request.stop_price is None:
                raise OrderRejected(f"{request.client_order_id}: a stop order needs a price")
            return StopOrderRequest(
                **common,
                time_in_force=TimeInForce.GTC,
                stop_price=translate.tick(request.stop_price),
            )
        case OrderType.STOP_LIMIT:
            if request.stop_price is None or request.limit_price is None:
                raise OrderRejected(
                    f"{request.client_order_id}: a stop-limit order needs a stop and a limit price"
                )
            return StopLimitOrderRequest(
                **common,
                time_in_force=TimeInForce.GTC,
                stop_price=translate.tick(request.stop_price),
                limit_price=translate.tick(request.limit_price),
            )
