"""The trade-updates websocket (``/stream``) and what every exchange websocket shares.

Why it is built this way: the venue publishes under the book's lock and must
never wait for a client, so each connection has a bounded outbox that the venue
fills without awaiting and a sender task (owned by the connection's handler)
drains. A client whose outbox overflows is too slow to be told the truth: it is
dropped, as a real venue drops it, and catches up over REST after reconnecting.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator
from typing import Any

from aiohttp import WSMsgType, web

from brokers.base import BrokerEvent
from brokers.exchange import wire
from brokers.exchange.gate import Gate
from brokers.exchange.venue import ExchangeVenue

__all__ = ["Outbox", "TradeHub", "open_socket"]

log = logging.getLogger(__name__)

_OUTBOX = 4096
_AUTH_TIMEOUT_S = 10.0


class Outbox:
    """The bounded queue of frames for one websocket client."""

    def __init__(self) -> None:
        self._queue: asyncio.Queue[str | bytes] = asyncio.Queue(_OUTBOX)
        self.overflowed = asyncio.Event()

    def put(self, frame: str | bytes) -> None:
        """Queue ``frame`` without waiting; on overflow mark the client for dropping."""
        try:
            self._queue.put_nowait(frame)
        except asyncio.QueueFull:
            self.overflowed.set()

    async def send_all(self, socket: web.WebSocketResponse) -> None:
        """Send queued frames until cancelled or the client overflows (then close it)."""
        while not self.overflowed.is_set():
            frame = await self._queue.get()
            if isinstance(frame, bytes):
                await socket.send_bytes(frame)
            else:
                await socket.send_str(frame)
        log.warning("websocket client too slow: dropped")
        await socket.close(message=b"too slow")


@contextlib.asynccontextmanager
async def open_socket(
    request: web.Request, gate: Gate, outbox: Outbox
) -> AsyncIterator[web.WebSocketResponse]:
    """Accept a websocket (refused during an outage) with its sender task; close both at exit."""
    if gate.outage_left() > 0:
        raise web.HTTPServiceUnavailable(text="exchange outage")
    socket = web.WebSocketResponse(timeout=2.0)
    await socket.prepare(request)
    gate.track(socket)
    sender = asyncio.create_task(outbox.send_all(socket), name="ws-sender")
    try:
        yield socket
    finally:
        sender.cancel()
        await asyncio.gather(sender, return_exceptions=True)
        gate.untrack(socket)
        await socket.close()


async def first_message(socket: web.WebSocketResponse) -> Any:
    """Return the client's first message decoded (``None`` on timeout, close or garbage)."""
    try:
        msg = await socket.receive(timeout=_AUTH_TIMEOUT_S)
    except TimeoutError:
        return None
    return decode(msg.type, msg.data)


def decode(kind: WSMsgType, data: Any) -> Any:
    """Decode a JSON text or binary frame; ``None`` for anything else."""
    if kind not in (WSMsgType.TEXT, WSMsgType.BINARY):
        return None
    try:
        return json.loads(data)
    except ValueError:
        return None


class TradeHub:
    """``/stream``: authenticate, listen to ``trade_updates``, receive every order change."""

    def __init__(self, venue: ExchangeVenue, gate: Gate) -> None:
        self._venue = venue
        self._gate = gate
        self._listening: set[Outbox] = set()
        venue.add_listener(self.on_events)

    def on_events(self, events: list[BrokerEvent], replaced: frozenset[str]) -> None:
        """Venue listener: send the trade updates of one change to every listening client."""
        if not self._listening:
            return
        updates = wire.trade_updates(events, self._venue.book, replaced=replaced)
        for update in updates:
            frame = json.dumps({"stream": "trade_updates", "data": update})
            for outbox in self._listening:
                outbox.put(frame)

    async def handle(self, request: web.Request) -> web.StreamResponse:
        outbox = Outbox()
        async with open_socket(request, self._gate, outbox) as socket:
            if not await self._authenticate(await first_message(socket), socket):
                return socket
            try:
                async for msg in socket:
                    body = decode(msg.type, msg.data)
                    if isinstance(body, dict) and body.get("action") == "listen":
                        self._listen(body, outbox)
            finally:
                self._listening.discard(outbox)
            return socket

    async def _authenticate(self, body: Any, socket: web.WebSocketResponse) -> bool:
        data = body.get("data") if isinstance(body, dict) else None
        ok = (
            isinstance(body, dict)
            and body.get("action") in ("authenticate", "auth")
            and isinstance(data, dict)
            and self._gate.authorized(data.get("key_id"), data.get("secret_key"))
        )
        status = "authorized" if ok else "unauthorized"
        await socket.send_str(
            json.dumps(
                {"stream": "authorization", "data": {"action": "authenticate", "status": status}}
            )
        )
        if not ok:
            log.warning("trade stream: authentication refused")
        return ok

    def _listen(self, body: dict[str, Any], outbox: Outbox) -> None:
        data = body.get("data")
        streams = data.get("streams") if isinstance(data, dict) else None
        wanted = [s for s in streams or [] if s == "trade_updates"]
        outbox.put(json.dumps({"stream": "listening", "data": {"streams": wanted}}))
        if wanted:
            self._listening.add(outbox)
        else:
            self._listening.discard(outbox)
