"""The venue's book: everything the sim venue knows, as msgspec Structs.

The whole ``Book`` is saved after every change (``book.py``), so it holds only
what a venue must remember: instruments and their prices, positions, orders,
executions, the market time and the counters that make ids unique.
"""

from __future__ import annotations

from datetime import date, datetime

import msgspec

from brokers.base import BrokerPosition, Execution, Order
from brokers.sim.bars import BarGenerator

__all__ = ["Book", "Instrument", "PriceScale", "add_instrument", "new_book", "scale_at"]


class PriceScale(msgspec.Struct, frozen=True):
    """From bar slot ``since`` on, generated prices are multiplied by ``scale``."""

    since: datetime
    scale: float


class Instrument(msgspec.Struct, kw_only=True):
    """A tradable symbol: its last price and how generated bars map to its prices."""

    symbol: str
    last: float
    last_raw: float
    scales: list[PriceScale]


class Book(msgspec.Struct, kw_only=True):
    """Everything the venue knows; saved whole after every change.

    ``stop_triggered`` holds the open stop-limit orders whose stop has traded
    (and when): they rest as limits; and the stops a bar triggered that still
    fill in chunks (``max_fill_qty``), as market orders. Books saved before it
    existed decode with it empty.
    """

    account_id: str
    seed: int
    bar_seconds: int
    origin: date
    market_time: datetime
    next_bar: datetime
    instruments: dict[str, Instrument]
    positions: dict[str, BrokerPosition] = {}
    orders: dict[str, Order] = {}
    client_ids: dict[str, str] = {}
    market_due: dict[str, datetime] = {}
    stop_triggered: dict[str, datetime] = {}
    executions: list[Execution] = []
    order_seq: int = 0
    exec_seq: int = 0
    manual_seq: int = 0


def new_book(
    *,
    account_id: str,
    generator: BarGenerator,
    start: datetime,
    base_prices: dict[str, float],
) -> Book:
    """Create the book of a fresh venue whose market opens at bar slot ``start``."""
    instruments = {}
    for symbol, base in sorted(base_prices.items()):
        instruments[symbol] = _new_instrument(generator, symbol, base, start)
    return Book(
        account_id=account_id,
        seed=generator.seed,
        bar_seconds=generator.bar_seconds,
        origin=generator.origin,
        market_time=start,
        next_bar=start,
        instruments=instruments,
    )


def add_instrument(book: Book, generator: BarGenerator, symbol: str, base: float) -> None:
    """List ``symbol`` at the venue (no-op when it is listed)."""
    if symbol not in book.instruments:
        book.instruments[symbol] = _new_instrument(generator, symbol, base, book.next_bar)


def _new_instrument(
    generator: BarGenerator, symbol: str, base: float, start: datetime
) -> Instrument:
    raw_open = generator.raw(symbol, start).open
    return Instrument(
        symbol=symbol,
        last=generator.bar(symbol, start, base).open,
        last_raw=raw_open,
        scales=[PriceScale(since=start, scale=base)],
    )


def scale_at(instrument: Instrument, ts: datetime) -> float:
    """Return the price scale in effect for the bar slot opening at ``ts``."""
    scale = instrument.scales[0].scale
    for entry in instrument.scales:
        if entry.since > ts:
            break
        scale = entry.scale
    return scale
