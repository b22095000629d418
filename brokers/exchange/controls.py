"""Test and chaos controls under ``/_sim/``: the world outside the trader, same credentials.

They stay reachable during an outage (the harness must be able to end one and
to look at the ground truth) and every one is logged. Hand trades and hand
closes are what a human does in the broker's app; their client order ids are
``manual-<n>``.
"""

from __future__ import annotations

import logging
import math
from typing import Any

from aiohttp import web

from brokers.base import Side
from brokers.exchange import ids, wire
from brokers.exchange.gate import Gate
from brokers.exchange.trading import bad_request
from brokers.exchange.venue import ExchangeVenue

__all__ = ["Controls"]

log = logging.getLogger(__name__)


class Controls:
    """The ``/_sim/`` routes of one exchange."""

    def __init__(self, venue: ExchangeVenue, gate: Gate) -> None:
        self._venue = venue
        self._gate = gate

    def routes(self) -> list[web.RouteDef]:
        return [
            web.post("/_sim/price", self.price),
            web.post("/_sim/market", self.market),
            web.post("/_sim/disconnect", self.disconnect),
            web.post("/_sim/outage", self.outage),
            web.get("/_sim/executions", self.executions),
            web.get("/_sim/clock", self.clock),
            web.post("/_sim/hand_trade", self.hand_trade),
            web.post("/_sim/hand_close", self.hand_close),
            web.post("/_sim/hand_cancel", self.hand_cancel),
        ]

    async def price(self, request: web.Request) -> web.Response:
        body = await _body(request)
        fills = await self._venue.set_price(_symbol(body), _positive(body, "price"))
        return web.json_response({"fills": [wire.execution_json(e) for e in fills]})

    async def market(self, request: web.Request) -> web.Response:
        body = await _body(request)
        running = body.get("running")
        if not isinstance(running, bool):
            raise bad_request("running must be true or false")
        self._venue.set_running(running)
        log.info("market %s", "running" if running else "frozen")
        return await self.clock(request)

    async def disconnect(self, request: web.Request) -> web.Response:
        dropped = await self._gate.drop_all("disconnect (test control)")
        return web.json_response({"dropped": dropped})

    async def outage(self, request: web.Request) -> web.Response:
        body = await _body(request)
        seconds = _positive(body, "seconds", allow_zero=True)
        await self._gate.start_outage(seconds)
        return web.json_response({"seconds": seconds})

    async def executions(self, request: web.Request) -> web.Response:
        return web.json_response([wire.execution_json(e) for e in self._venue.book.executions])

    async def clock(self, request: web.Request) -> web.Response:
        """The market clock a trader here uses: time, speed, whether it runs, bar length."""
        venue = self._venue
        now = venue.now()
        calendar = venue.calendar
        return web.json_response(
            {
                "timestamp": wire.iso(now),
                "speed": venue.speed,
                "running": venue.running,
                "bar_seconds": venue.bar_seconds,
                "next_close": wire.iso(calendar.close_of(calendar.trading_day(now))),
            }
        )

    async def hand_trade(self, request: web.Request) -> web.Response:
        body = await _body(request)
        try:
            side = Side(str(body.get("side")))
        except ValueError as exc:
            raise bad_request(f"side: {body.get('side')!r} is not buy or sell") from exc
        execution = await self._venue.hand_trade(_symbol(body), side, _positive(body, "qty"))
        return web.json_response(wire.execution_json(execution))

    async def hand_close(self, request: web.Request) -> web.Response:
        body = await _body(request)
        execution = await self._venue.hand_close(
            _symbol(body), cancel_orders=bool(body.get("cancel_orders", False))
        )
        return web.json_response(None if execution is None else wire.execution_json(execution))

    async def hand_cancel(self, request: web.Request) -> web.Response:
        body = await _body(request)
        sim_id = ids.sim_order_id(str(body.get("order_id", "")))
        if sim_id is None:
            raise bad_request(f"order_id {body.get('order_id')!r} is not an order of this exchange")
        await self._venue.cancel(sim_id)
        log.info("hand cancel %s", body.get("order_id"))
        return web.json_response({"canceled": body.get("order_id")})


async def _body(request: web.Request) -> dict[str, Any]:
    try:
        body = await request.json() if request.can_read_body else {}
    except ValueError as exc:
        raise bad_request("the body is not JSON") from exc
    if not isinstance(body, dict):
        raise bad_request("the body is not a JSON object")
    return body


def _symbol(body: dict[str, Any]) -> str:
    symbol = body.get("symbol")
    if not isinstance(symbol, str) or not symbol:
        raise bad_request("symbol is required")
    return symbol


def _positive(body: dict[str, Any], name: str, *, allow_zero: bool = False) -> float:
    value = body.get(name)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise bad_request(f"{name} must be a number")
    number = float(value)
    if not math.isfinite(number) or number < 0 or (number == 0 and not allow_zero):
        raise bad_request(f"{name} must be a positive number, got {value!r}")
    return number
