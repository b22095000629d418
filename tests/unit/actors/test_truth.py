"""The consistent read of the broker's truth (``actors.truth.read_truth``), symbol by symbol.

The broker here is a scripted book standing in for a venue's three read requests
(positions, open orders, executions since): a fill can be made to land before any
given request, which is what the read must survive.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest

from actors.truth import CONSISTENT_READS, read_truth
from brokers.base import (
    BrokerError,
    BrokerPosition,
    Execution,
    Order,
    OrderStatus,
    OrderType,
    Side,
)

T0 = datetime(2026, 12, 1, 15, 0, tzinfo=UTC)


class Book:
    """Positions, resting stops and executions of a venue; ``before[n]`` runs before read n.

    Reads are numbered from 0 in the order made: positions+orders, executions,
    positions+orders, executions, ...
    """

    def __init__(self, held: dict[str, float]) -> None:
        self.held = dict(held)
        self.stops = {s: q for s, q in held.items()}
        self.fills: list[Execution] = []
        self.reads = 0
        self.before: dict[int, Callable[[], None]] = {}
        # Run between the positions request and the orders request of read n (a venue
        # answers them separately, so a fill can land in between).
        self.between: dict[int, Callable[[], None]] = {}

    def sell(self, symbol: str, qty: float) -> None:
        n = len(self.fills) + 1
        self.fills.append(
            Execution(
                f"E{n}",
                f"O{n}",
                f"hand-{n}",
                symbol,
                Side.SELL,
                qty,
                10.0,
                T0 + timedelta(seconds=n),
            )
        )
        self.held[symbol] -= qty
        self.stops[symbol] = self.held[symbol]

    def _tick(self) -> None:
        step = self.before.pop(self.reads, None)
        self.reads += 1
        if step is not None:
            step()

    async def truth(self) -> tuple[list[BrokerPosition], list[Order]]:
        self._tick()
        positions = [BrokerPosition(s, q, 10.0) for s, q in self.held.items() if q]
        step = self.between.pop(self.reads - 1, None)
        if step is not None:
            step()
        orders = [
            Order(
                f"S-{s}",
                f"stop-{s}",
                s,
                Side.SELL,
                q,
                OrderType.STOP,
                OrderStatus.NEW,
                stop_price=9.0,
            )
            for s, q in self.stops.items()
            if q
        ]
        return positions, orders

    async def executions_since(self, since: datetime) -> list[Execution]:
        self._tick()
        return [e for e in self.fills if e.ts >= since]


def held(positions: list[BrokerPosition]) -> dict[str, float]:
    return {p.symbol: p.qty for p in positions}


def stops(orders: list[Order]) -> dict[str, float]:
    return {o.symbol: o.qty for o in orders}


def sold(executions: list[Execution]) -> dict[str, float]:
    out: dict[str, float] = {}
    for e in executions:
        out[e.symbol] = out.get(e.symbol, 0.0) + e.qty
    return out


async def test_a_quiet_book_is_read_once() -> None:
    book = Book({"AAA": 100.0, "BBB": 50.0})
    book.sell("AAA", 10.0)

    positions, orders, executions = await read_truth(book.truth, book.executions_since, T0, ())

    assert book.reads == 3  # positions+orders, executions, positions+orders
    assert held(positions) == {"AAA": 90.0, "BBB": 50.0}
    assert stops(orders) == {"AAA": 90.0, "BBB": 50.0}
    assert sold(executions) == {"AAA": 10.0}


async def test_a_fill_after_the_executions_read_is_read_again_with_its_execution() -> None:
    """AAA sells 10 between the executions read and the second positions read: the
    first round's executions lack it, so AAA is read again (with its execution);
    BBB, unmoved, is taken from the first round."""
    book = Book({"AAA": 100.0, "BBB": 50.0})
    book.before[2] = lambda: book.sell("AAA", 10.0)

    positions, orders, executions = await read_truth(book.truth, book.executions_since, T0, ())

    assert book.reads == 5
    assert held(positions) == {"AAA": 90.0, "BBB": 50.0}
    assert stops(orders) == {"AAA": 90.0, "BBB": 50.0}
    assert sold(executions) == {"AAA": 10.0}, "the execution agrees with the position"


async def test_a_fill_before_the_executions_read_is_read_again_too() -> None:
    """The fill lands between the first positions read and the executions read: the
    executions and the second read agree, but the first read does not; AAA settles
    on the next round, with the same execution once."""
    book = Book({"AAA": 100.0})
    book.before[1] = lambda: book.sell("AAA", 10.0)

    positions, _orders, executions = await read_truth(book.truth, book.executions_since, T0, ())

    assert held(positions) == {"AAA": 90.0}
    assert [e.exec_id for e in executions] == ["E1"]


async def test_a_busy_book_settles_symbol_by_symbol() -> None:
    """A different symbol trades before every positions read: no round sees the whole
    book stand still (the whole-book rule gave up here: 'broker truth kept changing'),
    but every symbol agrees with itself across some round, so the read succeeds, each
    symbol's position matching its own executions."""
    book = Book({"AAA": 100.0, "BBB": 100.0, "CCC": 100.0})
    book.before[2] = lambda: book.sell("AAA", 10.0)
    book.before[4] = lambda: book.sell("BBB", 20.0)
    book.before[6] = lambda: book.sell("CCC", 30.0)

    positions, orders, executions = await read_truth(book.truth, book.executions_since, T0, ())

    # BBB and CCC agreed in the first round, AAA in the second; BBB's sale came after
    # its round (it streams in as any later fill does) and CCC's after the last read.
    assert book.reads == 5
    assert held(positions) == {"AAA": 90.0, "BBB": 100.0, "CCC": 100.0}
    assert stops(orders) == {"AAA": 90.0, "BBB": 100.0, "CCC": 100.0}
    assert sold(executions) == {"AAA": 10.0}
    for symbol, qty in held(positions).items():
        assert qty == 100.0 - sold(executions).get(symbol, 0.0)


async def test_a_symbol_gone_flat_between_reads_settles_flat_with_its_executions() -> None:
    book = Book({"AAA": 100.0, "BBB": 50.0})
    book.before[2] = lambda: book.sell("AAA", 100.0)

    positions, orders, executions = await read_truth(book.truth, book.executions_since, T0, ())

    assert held(positions) == {"BBB": 50.0}
    assert stops(orders) == {"BBB": 50.0}
    assert sold(executions) == {"AAA": 100.0}


async def test_a_symbol_that_never_stands_still_is_named_in_the_error() -> None:
    book = Book({"AAA": 100.0, "BBB": 50.0})
    for n in range(2, 2 + 2 * CONSISTENT_READS, 2):
        book.before[n] = lambda: book.sell("AAA", 1.0)

    with pytest.raises(BrokerError, match=r"truth of AAA kept changing"):
        await read_truth(book.truth, book.executions_since, T0, ())


async def test_a_one_symbol_read_ignores_the_rest_of_the_book() -> None:
    """A read of AAA alone settles in one round while BBB trades on every read."""
    book = Book({"AAA": 100.0, "BBB": 100.0})
    for n in range(0, 8):
        book.before[n] = lambda: book.sell("BBB", 1.0)

    positions, orders, executions = await read_truth(
        book.truth, book.executions_since, T0, ("AAA",)
    )

    assert book.reads == 3
    assert (held(positions), stops(orders), executions) == ({"AAA": 100.0}, {"AAA": 100.0}, [])


async def test_a_symbol_settled_early_takes_no_later_rounds_executions() -> None:
    """BBB agrees in the first round and then sells before the second executions read:
    its first-round position (100) must not be paired with that later sale."""
    book = Book({"AAA": 100.0, "BBB": 100.0})
    book.before[2] = lambda: book.sell("AAA", 10.0)
    book.before[3] = lambda: book.sell("BBB", 20.0)

    positions, _orders, executions = await read_truth(book.truth, book.executions_since, T0, ())

    assert held(positions) == {"AAA": 90.0, "BBB": 100.0}
    assert sold(executions) == {"AAA": 10.0}


async def test_orders_moving_alone_are_read_again() -> None:
    """AAA's stop fills after the second read's positions request and before its orders
    request: the positions agree, the orders do not, so AAA is read again and settles
    flat with the stop's execution (a round later still: the second read's positions
    held the 100 the third read no longer holds)."""
    book = Book({"AAA": 100.0, "BBB": 50.0})
    book.between[2] = lambda: book.sell("AAA", 100.0)

    positions, orders, executions = await read_truth(book.truth, book.executions_since, T0, ())

    assert book.reads == 7
    assert held(positions) == {"BBB": 50.0}
    assert stops(orders) == {"BBB": 50.0}
    assert sold(executions) == {"AAA": 100.0}
