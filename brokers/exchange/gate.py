"""Who may reach the exchange now: credentials, outages and the open websockets.

One ``Gate`` per server. Credentials are compared in constant time. An outage
is timed on the monotonic clock (real time, whatever the market does); while it
lasts REST answers 503 and websocket upgrades are refused. Every open websocket
registers here so that a chaos control (or an outage) can drop them all at once.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import time
from collections.abc import Callable

from aiohttp import WSCloseCode, web

__all__ = ["Gate"]

log = logging.getLogger(__name__)


class Gate:
    """Credentials, outage window and websocket registry of one exchange server."""

    def __init__(
        self, key: str, secret: str, *, monotonic: Callable[[], float] = time.monotonic
    ) -> None:
        self._key = key.encode()
        self._secret = secret.encode()
        self._monotonic = monotonic
        self._outage_until = 0.0
        self._sockets: set[web.WebSocketResponse] = set()

    def authorized(self, key: str | None, secret: str | None) -> bool:
        """Return whether ``key`` and ``secret`` are the exchange's credentials."""
        if key is None or secret is None:
            return False
        key_ok = hmac.compare_digest(key.encode(), self._key)
        secret_ok = hmac.compare_digest(secret.encode(), self._secret)
        return key_ok and secret_ok

    def outage_left(self) -> float:
        """Return the seconds the current outage still lasts (0 when there is none)."""
        return max(0.0, self._outage_until - self._monotonic())

    async def start_outage(self, seconds: float) -> None:
        """Refuse REST and websockets for ``seconds``; drop every open websocket now."""
        self._outage_until = self._monotonic() + seconds
        log.warning("outage for %.1f s", seconds)
        await self.drop_all("outage")

    def track(self, socket: web.WebSocketResponse) -> None:
        self._sockets.add(socket)

    def untrack(self, socket: web.WebSocketResponse) -> None:
        self._sockets.discard(socket)

    @property
    def open_sockets(self) -> int:
        return len(self._sockets)

    async def drop_all(self, reason: str) -> int:
        """Close every open websocket (the clients see the connection go); return how many."""
        sockets = list(self._sockets)
        self._sockets.clear()
        await asyncio.gather(
            *(s.close(code=WSCloseCode.GOING_AWAY, message=reason.encode()) for s in sockets),
            return_exceptions=True,
        )
        if sockets:
            log.warning("dropped %d websocket(s): %s", len(sockets), reason)
        return len(sockets)
