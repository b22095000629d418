"""The client's connection to the sim venue, as the venue sees it.

One guard per kind of request: ``check_usable`` for test/ops controls (they
model the world outside the trader and need no connection), ``check_reachable``
for the ``Broker`` requests. Refusal is timed by the injected monotonic (real)
clock, independent of market time.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Callable

from brokers.base import BrokerError, BrokerUnavailable, Connected

__all__ = ["Link", "LinkState"]


class LinkState(enum.Enum):
    IDLE = "idle"
    CONNECTED = "connected"
    DROPPED = "dropped"
    FAILED = "failed"
    CLOSED = "closed"


class Link:
    """Connection state of a ``SimBroker``: idle -> connected <-> dropped, then failed/closed."""

    def __init__(self, monotonic: Callable[[], float]) -> None:
        self._monotonic = monotonic
        self.state = LinkState.IDLE
        self.error: BaseException | None = None
        self._refuse_until = -math.inf
        self._connected_before = False

    @property
    def connected(self) -> bool:
        return self.state is LinkState.CONNECTED

    def check_usable(self) -> None:
        """Raise ``BrokerError`` when the venue has failed or is closed."""
        if self.state is LinkState.FAILED:
            raise BrokerError(f"sim venue failed: {self.error!r}") from self.error
        if self.state is LinkState.CLOSED:
            raise BrokerError("sim venue is closed")

    def check_not_refused(self) -> None:
        """Raise ``BrokerUnavailable`` while connections are refused."""
        remaining = self._refuse_until - self._monotonic()
        if remaining > 0:
            raise BrokerUnavailable(f"sim venue refuses connections for another {remaining:.1f} s")

    def check_reachable(self) -> None:
        """Raise unless a request may reach the venue now."""
        self.check_usable()
        self.check_not_refused()
        if self.state is not LinkState.CONNECTED:
            raise BrokerUnavailable(f"sim venue not connected ({self.state.value})")

    def refuse(self, seconds: float) -> None:
        """Refuse connections and requests for ``seconds`` of monotonic time."""
        self._refuse_until = self._monotonic() + seconds

    def connect(self) -> Connected | None:
        """Become connected; return the event to emit (``None`` when already connected)."""
        self.check_usable()
        self.check_not_refused()
        if self.state is LinkState.CONNECTED:
            return None
        self.state = LinkState.CONNECTED
        event = Connected(data_lost=self._connected_before)
        self._connected_before = True
        return event

    def drop(self) -> bool:
        """Lose the connection; return whether there was one."""
        if self.state is not LinkState.CONNECTED:
            return False
        self.state = LinkState.DROPPED
        return True

    def fail(self, error: BaseException) -> None:
        self.error = error
        self.state = LinkState.FAILED

    def close(self) -> None:
        self.state = LinkState.CLOSED
