"""Reading the broker's truth so that its parts agree with each other.

Positions, open orders and executions are separate requests; a fill landing
between them would make the executions say one thing and the positions
another, and a boot heals at once on what they say.
"""

from __future__ import annotations

import operator
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import TypeVar

import msgspec

from brokers.base import BrokerError, BrokerPosition, Execution, Order

__all__ = ["CONSISTENT_READS", "only", "read_truth"]

CONSISTENT_READS = 3  # reads of a truth that keeps changing before giving up

_S = TypeVar("_S", BrokerPosition, Order, Execution)


async def read_truth(
    truth: Callable[[], Awaitable[tuple[list[BrokerPosition], list[Order]]]],
    executions_since: Callable[[datetime], Awaitable[list[Execution]]],
    since: datetime,
    symbols: tuple[str, ...],
) -> tuple[list[BrokerPosition], list[Order], list[Execution]]:
    """Fetch positions, open orders and the executions since ``since`` that agree.

    Positions and orders are read again after the executions, and the whole
    read is repeated until the two reads agree; ``BrokerError`` when they never
    do. Only the truth of ``symbols`` is returned (all of it when empty).
    """
    positions, orders = await _read(truth, symbols)
    for _ in range(CONSISTENT_READS):
        executions = await executions_since(since)
        again, orders_again = await _read(truth, symbols)
        if _same(positions, again) and _same(orders, orders_again):
            return again, orders_again, only(executions, symbols)
        positions, orders = again, orders_again
    raise BrokerError("broker truth kept changing while it was read")


async def _read(
    truth: Callable[[], Awaitable[tuple[list[BrokerPosition], list[Order]]]],
    symbols: tuple[str, ...],
) -> tuple[list[BrokerPosition], list[Order]]:
    """Read positions and orders, only those of ``symbols``: others may move meanwhile."""
    positions, orders = await truth()
    return only(positions, symbols), only(orders, symbols)


def only(items: list[_S], symbols: tuple[str, ...]) -> list[_S]:
    """Return the items of ``symbols`` (all of them when ``symbols`` is empty)."""
    return [item for item in items if item.symbol in symbols] if symbols else items


def _same(a: list[BrokerPosition] | list[Order], b: list[BrokerPosition] | list[Order]) -> bool:
    """Return whether two reads hold the same items, in any order."""
    if len(a) == len(b) and all(map(operator.is_, a, b)):
        return True  # the very same objects (a venue that hands out what it holds)
    key = msgspec.json.encode
    return sorted(map(key, a)) == sorted(map(key, b))
