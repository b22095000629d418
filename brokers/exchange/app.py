"""The exchange process: one aiohttp server on one port for REST, streams and controls.

Start order: load (or create) the book, build the routes, listen, print one line
per endpoint (the real port when 0 was asked), then run the market until
SIGTERM/SIGINT. Shutdown drops every websocket, stops the market, closes the
server and saves the book, so a restarted exchange meets the same orders,
positions, executions and market time.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
from typing import TextIO

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from brokers.base import BrokerError, DuplicateClientOrderId, OrderNotFound, OrderRejected
from brokers.exchange import wire
from brokers.exchange.controls import Controls
from brokers.exchange.data import DataHub
from brokers.exchange.gate import Gate
from brokers.exchange.settings import ExchangeSettings
from brokers.exchange.streams import TradeHub
from brokers.exchange.trading import Refusal, TradingApi
from brokers.exchange.venue import ExchangeVenue

__all__ = ["build_app", "serve"]

log = logging.getLogger(__name__)

_STREAM_PATHS = frozenset({"/stream", "/v2/iex"})


def build_app(venue: ExchangeVenue, gate: Gate, settings: ExchangeSettings) -> web.Application:
    """Return the aiohttp application serving ``venue`` behind ``gate``."""
    trade_hub = TradeHub(venue, gate)
    data_hub = DataHub(venue, gate)
    app = web.Application(middlewares=[_guard(gate)])
    app.add_routes(TradingApi(venue, start_cash=settings.start_cash).routes())
    app.add_routes(Controls(venue, gate).routes())
    app.add_routes(
        [
            web.get("/stream", trade_hub.handle),
            web.get("/v2/iex", data_hub.handle),
            web.get("/v2/stocks/bars", data_hub.history),
        ]
    )
    return app


def _error(status: int, code: int, message: str) -> web.Response:
    return web.json_response(wire.error_json(code, message), status=status)


def _guard(gate: Gate) -> Middleware:
    """Outage, credentials, and engine refusals as Alpaca's status codes."""

    @web.middleware
    async def guard(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path not in _STREAM_PATHS:
            if not request.path.startswith("/_sim/") and gate.outage_left() > 0:
                return _error(503, 50300000, "service unavailable (exchange outage)")
            key = request.headers.get("APCA-API-KEY-ID")
            secret = request.headers.get("APCA-API-SECRET-KEY")
            if key is None or secret is None:
                return _error(401, 40110000, "request is not authorized")
            if not gate.authorized(key, secret):
                log.warning("refused %s %s: wrong credentials", request.method, request.path)
                return _error(403, 40310000, "forbidden")
        try:
            return await handler(request)
        except Refusal as exc:
            return _error(exc.status, exc.code, str(exc))
        except DuplicateClientOrderId:
            return _error(422, 40010001, "client_order_id must be unique")
        except OrderNotFound as exc:
            return _error(404, 40410000, str(exc))
        except OrderRejected as exc:
            return _error(422, 42210000, str(exc))
        except BrokerError as exc:
            return _error(500, 50010000, str(exc))

    return guard


async def serve(settings: ExchangeSettings, *, out: TextIO = sys.stdout) -> int:
    """Run the exchange until SIGTERM/SIGINT; return the exit code (1 when the market failed)."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):  # before the endpoints are announced
        loop.add_signal_handler(sig, stop.set)
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    venue = await ExchangeVenue.open(settings.venue_config())
    gate = Gate(settings.key, settings.secret)
    runner = web.AppRunner(build_app(venue, gate, settings), handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, settings.host, settings.port)
    await site.start()
    port = runner.addresses[0][1]
    base = f"{settings.host}:{port}"
    out.write(f"alpaca-rest http://{base}\n")
    out.write(f"trade-stream ws://{base}/stream\n")
    out.write(f"data-stream ws://{base}/v2/iex\n")
    out.flush()
    log.info(
        "exchange on %s, book %s, market at %s, %d-second bars",
        base,
        settings.state,
        venue.now(),
        venue.bar_seconds,
    )
    code = 0
    try:
        async with asyncio.TaskGroup() as group:
            market = group.create_task(venue.run_market(), name="exchange-market")
            await stop.wait()
            market.cancel()
    except* Exception as failures:
        for failure in failures.exceptions:
            log.critical("exchange market failed: %r", failure, exc_info=failure)
        code = 1
    finally:
        await gate.drop_all("exchange shutting down")
        await runner.cleanup()
        await venue.save()
        log.info("exchange stopped, book saved at %s", venue.now())
    return code
