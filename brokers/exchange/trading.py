"""The trading REST API under ``/v2``: account, clock, positions, orders, fill activities.

Handlers parse Alpaca's requests into the engine's, call the venue, and answer
in Alpaca's shapes (``wire.py``). Refusals raise the engine's typed errors; the
app's error middleware turns them into Alpaca's status codes and bodies.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from brokers.base import (
    Order,
    OrderNotFound,
    OrderRequest,
    OrderType,
    Side,
)
from brokers.exchange import ids, wire
from brokers.exchange.venue import ExchangeVenue

__all__ = ["Refusal", "TradingApi", "bad_request", "parse_time"]

_TIME_IN_FORCE = ("day", "gtc")
_ORDER_TYPES = {kind.value: kind for kind in OrderType}


class Refusal(Exception):
    """A request the exchange answers with an Alpaca error (status, code, message)."""

    def __init__(self, status: int, code: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code


def bad_request(message: str) -> Refusal:
    """Return Alpaca's 422 for a request the exchange cannot take."""
    return Refusal(422, 42210000, message)


def parse_time(text: str | None, name: str) -> datetime | None:
    """Parse an RFC 3339 time (naive means UTC); raise a 422 when it is not one."""
    if not text:
        return None
    try:
        ts = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError as exc:
        raise bad_request(f"{name}: {text!r} is not an RFC 3339 time") from exc
    return ts if ts.tzinfo is not None else ts.replace(tzinfo=UTC)


def _number(body: dict[str, Any], name: str) -> float | None:
    value = body.get(name)
    if value is None:
        return None
    try:
        number = float(value)
    except (TypeError, ValueError) as exc:
        raise bad_request(f"{name}: {value!r} is not a number") from exc
    if not math.isfinite(number):
        raise bad_request(f"{name}: {value!r} is not a number")
    return number


def _priced(body: dict[str, Any], name: str) -> float | None:
    """Return a price field; refuse finer than Alpaca's tick (cents from $1, 1/100 cent below)."""
    price = _number(body, name)
    if price is None:
        return None
    digits = 2 if price >= 1.0 else 4
    if abs(price * 10**digits - round(price * 10**digits)) > 1e-6:
        raise bad_request(f"{name} {price!r}: sub-penny increment does not fulfill minimum pricing")
    return price


def _int(params: Any, name: str, default: int, maximum: int) -> int:
    try:
        value = int(params.get(name) or default)
    except ValueError as exc:
        raise bad_request(f"{name}: not an integer") from exc
    return max(1, min(value, maximum))


class TradingApi:
    """The ``/v2`` trading routes of one exchange."""

    def __init__(self, venue: ExchangeVenue, *, start_cash: float) -> None:
        self._venue = venue
        self._start_cash = start_cash

    def routes(self) -> list[web.RouteDef]:
        return [
            web.get("/v2/account", self.account),
            web.get("/v2/clock", self.clock),
            web.get("/v2/positions", self.positions),
            web.get("/v2/positions/{symbol}", self.position),
            web.delete("/v2/positions/{symbol}", self.close_position),
            web.get("/v2/orders", self.orders),
            web.post("/v2/orders", self.submit),
            web.delete("/v2/orders", self.cancel_all),
            web.get("/v2/orders:by_client_order_id", self.order_by_client_id),
            web.get("/v2/orders/{order_id}", self.order),
            web.patch("/v2/orders/{order_id}", self.replace),
            web.delete("/v2/orders/{order_id}", self.cancel),
            web.get("/v2/account/activities/{activity_type}", self.activities),
        ]

    async def account(self, request: web.Request) -> web.Response:
        return web.json_response(wire.account_json(self._venue.book, self._start_cash))

    async def clock(self, request: web.Request) -> web.Response:
        venue = self._venue
        now = venue.now()
        calendar = venue.calendar
        day = calendar.trading_day(now)
        is_open = venue.running and calendar.is_regular_hours(now)
        next_day = calendar.next_day(day)
        next_open = calendar.open_of(next_day) if now >= calendar.open_of(day) else None
        close = calendar.close_of(day)
        return web.json_response(
            {
                "timestamp": wire.iso(now),
                "is_open": is_open,
                "next_open": wire.iso(next_open or calendar.open_of(day)),
                "next_close": wire.iso(close if now < close else calendar.close_of(next_day)),
            }
        )

    async def positions(self, request: web.Request) -> web.Response:
        book = self._venue.book
        body = [
            wire.position_json(book.positions[s], book.instruments[s].last)
            for s in sorted(book.positions)
        ]
        return web.json_response(body)

    async def position(self, request: web.Request) -> web.Response:
        book = self._venue.book
        symbol = request.match_info["symbol"]
        position = book.positions.get(symbol)
        if position is None:
            raise Refusal(404, 40410000, "position does not exist")
        return web.json_response(wire.position_json(position, book.instruments[symbol].last))

    async def close_position(self, request: web.Request) -> web.Response:
        symbol = request.match_info["symbol"]
        order = await self._venue.close_position(symbol)
        if order is None:
            raise Refusal(404, 40410000, "position does not exist")
        return web.json_response(wire.order_json(order))

    async def orders(self, request: web.Request) -> web.Response:
        params = request.query
        status = params.get("status", "open")
        if status not in ("open", "closed", "all"):
            raise bad_request(f"status: {status!r} is not open, closed or all")
        after = parse_time(params.get("after"), "after")
        until = parse_time(params.get("until"), "until")
        symbols = {s for s in params.get("symbols", "").split(",") if s}
        side = params.get("side")
        limit = _int(params, "limit", 50, 500)
        keep: Callable[[Order], bool] = {
            "open": lambda o: o.status.is_open,
            "closed": lambda o: not o.status.is_open,
            "all": lambda o: True,
        }[status]
        orders = [
            o
            for o in self._venue.book.orders.values()
            if keep(o)
            and (not symbols or o.symbol in symbols)
            and (side is None or o.side.value == side)
            and (after is None or (o.created_at is not None and o.created_at > after))
            and (until is None or (o.created_at is not None and o.created_at < until))
        ]
        orders.sort(key=lambda o: (o.created_at or datetime.min.replace(tzinfo=UTC), o.order_id))
        if params.get("direction", "desc") == "desc":
            orders.reverse()
        return web.json_response([wire.order_json(o) for o in orders[:limit]])

    async def order(self, request: web.Request) -> web.Response:
        return web.json_response(wire.order_json(self._order(request.match_info["order_id"])))

    async def order_by_client_id(self, request: web.Request) -> web.Response:
        client_order_id = request.query.get("client_order_id", "")
        order = self._venue.order_by_client_id(client_order_id)
        if order is None:
            raise OrderNotFound(f"no order with client_order_id {client_order_id!r}")
        return web.json_response(wire.order_json(order))

    async def submit(self, request: web.Request) -> web.Response:
        body = await _json_body(request)
        order = await self._venue.submit(self._order_request(body))
        return web.json_response(wire.order_json(order))

    async def replace(self, request: web.Request) -> web.Response:
        current = self._order(request.match_info["order_id"])
        body = await _json_body(request)
        if body.get("trail") is not None:
            raise bad_request("trail: trailing stops are not supported by the local exchange")
        order = await self._venue.replace(
            current.order_id,
            stop_price=_priced(body, "stop_price"),
            limit_price=_priced(body, "limit_price"),
            qty=_number(body, "qty"),
        )
        return web.json_response(wire.order_json(order))

    async def cancel(self, request: web.Request) -> web.Response:
        await self._venue.cancel(self._order(request.match_info["order_id"]).order_id)
        return web.Response(status=204)

    async def cancel_all(self, request: web.Request) -> web.Response:
        canceled = await self._venue.cancel_all()
        body = [
            {"id": ids.order_uuid(o.order_id), "status": 200, "body": wire.order_json(o)}
            for o in canceled
        ]
        return web.json_response(body, status=207)

    async def activities(self, request: web.Request) -> web.Response:
        if request.match_info["activity_type"] != "FILL":
            return web.json_response([])
        params = request.query
        after = parse_time(params.get("after"), "after")
        until = parse_time(params.get("until"), "until")
        page_size = _int(params, "page_size", 100, 100)
        rows = [
            (execution, body)
            for execution, body in wire.activities(self._venue.book)
            if (after is None or execution.ts > after) and (until is None or execution.ts < until)
        ]
        rows.sort(key=lambda row: (row[0].ts, row[0].exec_id))
        if params.get("direction", "desc") == "desc":
            rows.reverse()
        token = params.get("page_token")
        if token:
            at = next((i for i, (_, body) in enumerate(rows) if body["id"] == token), None)
            if at is None:
                raise bad_request(f"page_token {token!r} is not an activity id")
            rows = rows[at + 1 :]
        return web.json_response([body for _, body in rows[:page_size]])

    def _order(self, order_id: str) -> Order:
        sim_id = ids.sim_order_id(order_id)
        order = None if sim_id is None else self._venue.book.orders.get(sim_id)
        if order is None:
            raise OrderNotFound(f"order {order_id} not found")
        return order

    def _order_request(self, body: dict[str, Any]) -> OrderRequest:
        kind = _ORDER_TYPES.get(str(body.get("type")))
        if kind is None:
            names = ", ".join(_ORDER_TYPES)
            raise bad_request(f"type: {body.get('type')!r} is not one of {names}")
        if body.get("time_in_force") not in _TIME_IN_FORCE:
            raise bad_request(f"time_in_force: {body.get('time_in_force')!r} is not day or gtc")
        if body.get("order_class") not in (None, "simple") or body.get("extended_hours"):
            raise bad_request("only simple regular-hours orders are supported")
        if body.get("notional") is not None:
            raise bad_request("notional orders are not supported: give qty")
        try:
            side = Side(str(body.get("side")))
        except ValueError as exc:
            raise bad_request(f"side: {body.get('side')!r} is not buy or sell") from exc
        qty = _number(body, "qty")
        if qty is None:
            raise bad_request("qty is required")
        client_order_id = body.get("client_order_id") or ids.order_uuid(
            f"SIM-O{self._venue.book.order_seq + 1:07d}"
        )
        if not isinstance(client_order_id, str) or len(client_order_id) > 128:
            raise bad_request("client_order_id must be a string of at most 128 characters")
        return OrderRequest(
            client_order_id=client_order_id,
            symbol=str(body.get("symbol", "")),
            side=side,
            qty=qty,
            type=kind,
            limit_price=_priced(body, "limit_price"),
            stop_price=_priced(body, "stop_price"),
        )


async def _json_body(request: web.Request) -> dict[str, Any]:
    try:
        body = await request.json()
    except ValueError as exc:
        raise bad_request("the body is not JSON") from exc
    if not isinstance(body, dict):
        raise bad_request("the body is not a JSON object")
    return body
