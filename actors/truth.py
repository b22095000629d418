"""Reading the broker's truth so that its parts agree with each other.

Positions, open orders and executions are separate requests; a fill landing
between them would make the executions say one thing and the positions
another, and a boot heals at once on what they say.

Agreement is decided symbol by symbol: a fill of one symbol changes only that
symbol's position and orders, so a symbol whose positions and orders read the
same before and after the executions read is consistent with those executions,
whatever the rest of the book did meanwhile. Only the symbols that moved are
read again. (Demanding the whole book stand still for one round would, in a
busy book of hundreds of active symbols, rarely succeed.)
"""

from __future__ import annotations

import operator
from collections import defaultdict
from collections.abc import Awaitable, Callable, Collection, Iterable
from datetime import datetime
from typing import TypeVar

import msgspec

from brokers.base import BrokerError, BrokerPosition, Execution, Order

__all__ = ["CONSISTENT_READS", "only", "read_truth"]

CONSISTENT_READS = 3  # reads of a symbol whose truth keeps changing before giving up

_S = TypeVar("_S", BrokerPosition, Order, Execution)


async def read_truth(
    truth: Callable[[], Awaitable[tuple[list[BrokerPosition], list[Order]]]],
    executions_since: Callable[[datetime], Awaitable[list[Execution]]],
    since: datetime,
    symbols: tuple[str, ...],
) -> tuple[list[BrokerPosition], list[Order], list[Execution]]:
    """Fetch positions, open orders and the executions since ``since`` that agree.

    Positions and orders are read again after the executions; a symbol whose
    two reads agree takes its positions, orders and executions from that round,
    and the symbols that moved are read again, up to ``CONSISTENT_READS``
    rounds; ``BrokerError`` (naming them) when some never settle. Only the
    truth of ``symbols`` is returned (all of it when empty).
    """
    positions, orders = await _read(truth, symbols)
    pending: set[str] | None = None  # None: every symbol, before the first round
    settled = _Settled()
    for _ in range(CONSISTENT_READS):
        executions = only(await executions_since(since), symbols)
        again, orders_again = await _read(truth, symbols)
        if pending is None and _same(positions, again) and _same(orders, orders_again):
            return again, orders_again, executions  # the common case: nothing moved
        moved = _moved(positions, again, pending) | _moved(orders, orders_again, pending)
        settled.take(again, orders_again, executions, pending, moved)
        if not moved:
            return settled.positions, settled.orders, settled.executions
        pending = moved
        positions, orders = again, orders_again
    names = ", ".join(sorted(pending or ()))
    raise BrokerError(f"broker truth of {names} kept changing while it was read")


class _Settled:
    """The truth of the symbols settled so far, each from the round it agreed in."""

    def __init__(self) -> None:
        self.positions: list[BrokerPosition] = []
        self.orders: list[Order] = []
        self.executions: list[Execution] = []

    def take(
        self,
        positions: list[BrokerPosition],
        orders: list[Order],
        executions: list[Execution],
        among: Collection[str] | None,
        moved: Collection[str],
    ) -> None:
        """Keep the items of the symbols of ``among`` (all when None) not in ``moved``."""
        self.positions += _agreed(positions, among, moved)
        self.orders += _agreed(orders, among, moved)
        # Each symbol's executions come from one round, in the venue's order.
        self.executions += _agreed(executions, among, moved)


def _agreed(items: Iterable[_S], among: Collection[str] | None, moved: Collection[str]) -> list[_S]:
    return [i for i in items if (among is None or i.symbol in among) and i.symbol not in moved]


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


def _moved(
    a: list[BrokerPosition] | list[Order],
    b: list[BrokerPosition] | list[Order],
    among: Collection[str] | None,
) -> set[str]:
    """Return the symbols (of ``among``; all when None) whose items differ between reads."""
    key = msgspec.json.encode
    before: defaultdict[str, list[bytes]] = defaultdict(list)
    after: defaultdict[str, list[bytes]] = defaultdict(list)
    for read, into in ((a, before), (b, after)):
        for item in read:
            if among is None or item.symbol in among:
                into[item.symbol].append(key(item))
    return {s for s in before.keys() | after.keys() if sorted(before[s]) != sorted(after[s])}
