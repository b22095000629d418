"""What the position model refuses and what a fill did: shared by ``model`` and ``accounting``.

The errors (a ``ModelError`` leaves the caller's state as it was), the checks of
prices, quantities and bars every transition runs first, ``Applied`` (what a
fill did) and the bounds of what a state remembers.
"""

from __future__ import annotations

import math

import msgspec

from actors.bars import plausible
from actors.state import (
    ClosedTrade,
    PartialExit,
    PositionState,
)
from brokers.base import Bar, OrderType

__all__ = [
    "ABSENT",
    "ABSORBED_KEPT",
    "APPLIED_IDS_KEPT",
    "EPS",
    "RECOVERED_STRATEGY",
    "Applied",
    "BadInput",
    "EntryRefused",
    "ModelError",
    "WrongSymbol",
    "bump",
    "check_bar",
    "check_order_price",
    "check_price",
    "check_qty",
]

APPLIED_IDS_KEPT = 4096


ABSENT = "absent"  # exec id suffix of a fill booked for executions that never came


ABSORBED_KEPT = 16  # orders whose missing executions are remembered (``absorb_fill_rest``)


RECOVERED_STRATEGY = "recovered"  # the strategy a closed trade of an adopted position records


EPS = 1e-9


class ModelError(ValueError):
    """An input the model refuses; the state is unchanged."""


class BadInput(ModelError):
    """A price or quantity that cannot be real (NaN, infinite, zero, negative)."""


class WrongSymbol(ModelError):
    """An event for another symbol."""


class EntryRefused(ModelError):
    """An entry the rules forbid (position open, entry in flight, attempts exhausted, ...)."""


class Applied(msgspec.Struct, frozen=True):
    """What a fill did. ``duplicate`` means nothing changed; ``absorbed`` is what of it
    was already in the position (``absorb_fill_rest``): booked, not applied again."""

    state: PositionState
    closed: tuple[ClosedTrade, ...] = ()
    partial: PartialExit | None = None
    duplicate: bool = False
    absorbed: float = 0.0


def check_price(value: float | None, what: str) -> None:
    if value is None or not math.isfinite(value) or value <= 0:
        raise BadInput(f"{what} {value!r} is not a positive finite price")


def check_qty(value: float, what: str) -> None:
    if not math.isfinite(value) or value <= 0:
        raise BadInput(f"{what} {value!r} is not a positive finite quantity")


def check_bar(bar: Bar) -> None:
    # The buffer's rule passes the common, valid bar; the checks below only
    # name what is wrong.
    if plausible(bar.open, bar.high, bar.low, bar.close, bar.volume):
        return
    for name, value in (
        ("open", bar.open),
        ("high", bar.high),
        ("low", bar.low),
        ("close", bar.close),
    ):
        check_price(value, f"bar {name}")
    if bar.high < bar.low:
        raise BadInput(f"bar high {bar.high} below its low {bar.low}")
    if not math.isfinite(bar.volume) or bar.volume < 0:
        raise BadInput(f"bar volume {bar.volume!r} is not a finite non-negative number")


def check_order_price(order_type: OrderType, price: float | None, what: str) -> None:
    if price is not None:
        check_price(price, what)
    elif order_type is not OrderType.MARKET:
        raise BadInput(f"{what}: a {order_type.value} order needs a price")


def bump(state: PositionState, **changes: object) -> PositionState:
    return msgspec.structs.replace(state, seq=state.seq + 1, **changes)
