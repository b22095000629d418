"""A stop a bar triggers is a market order from then on: with ``max_fill_qty`` it fills in chunks.

The first chunk fills at the trigger price, one more at the open of each
following bar; meanwhile it can be canceled but not moved, and no price touches
it again. This is what lets the runtime's handling of partially filled stops
run end to end against the sim venue.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta

import pytest

from brokers.base import Bar, Execution, OrderRejected, OrderStatus, Side
from brokers.sim import BarGenerator, Book, engine
from brokers.sim.book import decode_book, encode_book
from tests.unit.brokers._sim_kit import OPEN, pure_book, stop

NOW = OPEN
NO_LATENCY = timedelta(0)


def fills(events: Sequence[object]) -> list[Execution]:
    return [e for e in events if isinstance(e, Execution)]


def _stop_the_next_bar_triggers(book: Book, gen: BarGenerator, qty: float) -> tuple[str, float]:
    """Rest a sell stop of ``qty`` that the next bar trades through; return (order id, stop)."""
    upcoming = gen.bar("AAPL", book.next_bar, 100.0)
    trigger = round((upcoming.open + upcoming.low) / 2, 2)
    assert upcoming.low <= trigger < upcoming.open
    order, events = engine.submit(
        book, stop("AAPL", Side.SELL, qty, trigger), NOW, latency=NO_LATENCY
    )
    assert fills(events) == []
    return order.order_id, trigger


def test_a_triggered_stop_fills_its_first_chunk_at_the_trigger_then_one_per_bar_at_the_open() -> (
    None
):
    book, gen = pure_book()
    order_id, trigger = _stop_the_next_bar_triggers(book, gen, 25)

    first = fills(engine.advance_bar(book, gen, max_fill_qty=10))
    assert [(e.qty, e.price) for e in first] == [(10, trigger)]
    held = book.orders[order_id]
    assert (held.status, held.filled_qty) == (OrderStatus.PARTIALLY_FILLED, 10)
    assert order_id in book.stop_triggered

    # A price crossing it again (set_price) does not fill the rest: it is a market order.
    assert fills(engine.set_price(book, "AAPL", trigger - 1.0, NOW)) == []
    for expected in (10, 5):
        events = engine.advance_bar(book, gen, max_fill_qty=10)
        (execution,) = fills(events)
        (bar,) = [e for e in events if isinstance(e, Bar) and e.symbol == "AAPL"]
        assert (execution.order_id, execution.qty, execution.price) == (
            order_id,
            expected,
            bar.open,
        )
    done = book.orders[order_id]
    assert (done.status, done.filled_qty) == (OrderStatus.FILLED, 25)
    assert book.stop_triggered == {}
    assert book.positions["AAPL"].qty == -25


def test_without_a_chunk_size_a_triggered_stop_fills_whole() -> None:
    book, gen = pure_book()
    order_id, trigger = _stop_the_next_bar_triggers(book, gen, 25)

    (execution,) = fills(engine.advance_bar(book, gen, max_fill_qty=None))

    assert (execution.qty, execution.price) == (25, trigger)
    assert book.orders[order_id].status is OrderStatus.FILLED
    assert book.stop_triggered == {}


def test_a_triggered_stop_cannot_be_moved_but_its_rest_can_be_canceled() -> None:
    book, gen = pure_book()
    order_id, trigger = _stop_the_next_bar_triggers(book, gen, 25)
    engine.advance_bar(book, gen, max_fill_qty=10)
    before = book.orders[order_id]

    with pytest.raises(OrderRejected, match="has triggered"):
        engine.replace_stop(book, order_id, NOW, stop_price=trigger - 5.0, qty=25)
    assert book.orders[order_id] == before

    engine.cancel(book, order_id, NOW)
    canceled = book.orders[order_id]
    assert (canceled.status, canceled.filled_qty) == (OrderStatus.CANCELED, 10)
    assert book.stop_triggered == {}
    assert fills(engine.advance_bar(book, gen, max_fill_qty=10)) == []
    assert book.positions["AAPL"].qty == -10


def test_a_stop_filling_in_chunks_survives_the_venue_saving_its_book() -> None:
    book, gen = pure_book()
    order_id, _ = _stop_the_next_bar_triggers(book, gen, 25)
    engine.advance_bar(book, gen, max_fill_qty=10)

    reloaded = decode_book(encode_book(book))  # the venue saves its book on every change
    assert order_id in reloaded.stop_triggered
    (execution,) = fills(engine.advance_bar(reloaded, gen, max_fill_qty=10))
    assert (execution.order_id, execution.qty) == (order_id, 10)


def test_a_chunk_is_never_stamped_before_an_execution_recorded_ahead_of_it() -> None:
    """A chunk is stamped with its bar's end; a trade recorded after that end but before
    the venue printed the bar (a hand trade, a stop a price move triggered) goes first:
    the chunk is stamped no earlier, so the executions' times run in the order they
    happened (a replay orders them by time: a buy booked before the sell that preceded
    it changes the average cost)."""
    book, gen = pure_book()
    order_id, _ = _stop_the_next_bar_triggers(book, gen, 25)
    fills(engine.advance_bar(book, gen, max_fill_qty=10))
    later = book.next_bar + timedelta(seconds=gen.bar_seconds + 1)
    hand, _ = engine.manual_trade(book, "AAPL", Side.BUY, 5, later)

    (chunk,) = fills(engine.advance_bar(book, gen, max_fill_qty=10))

    assert chunk.order_id == order_id
    assert chunk.ts == hand.ts == later
    times = [e.ts for e in book.executions]
    assert times == sorted(times)
