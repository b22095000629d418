"""A fixed-size ring of recent bars, compact in memory.

Bars are stored column-wise in one ``array('d')`` (ts, open, high, low, close,
volume per slot), so a 240-bar buffer is one 11.5 KB buffer rather than 1,440
Python floats. It serializes to bytes for snapshots without a per-bar object.
An empty ring holds no buffer until its first bar: an actor's placeholder ring,
replaced by the one its snapshot holds, costs no 11.5 KB of zeros.
"""

from __future__ import annotations

import bisect
import functools
import math
import operator
import struct
import sys
from array import array
from collections.abc import Iterator
from datetime import UTC, datetime

from brokers.base import Bar

__all__ = ["BarRing", "plausible"]

_FIELDS = 6  # ts, open, high, low, close, volume
_INF = math.inf
_HEADER = struct.Struct("<III")  # capacity, count, head
# One slot as the array holds it (native doubles): one C call writes a bar.
_SLOT = struct.Struct(f"={_FIELDS}d")
_SLOT_BYTES = _SLOT.size
_pack_slot = _SLOT.pack_into


class BarRing:
    """The last ``capacity`` bars of one symbol, oldest first when iterated."""

    __slots__ = ("_count", "_data", "_head", "capacity", "symbol")

    def __init__(self, symbol: str, capacity: int = 240) -> None:
        if capacity <= 0:
            raise ValueError(f"bar buffer capacity must be positive, not {capacity}")
        self.symbol = symbol
        self.capacity = capacity
        self._data = array("d")  # allocated by the first append (see the module docstring)
        self._count = 0
        self._head = 0  # next slot to write

    def __len__(self) -> int:
        return self._count

    def append(self, bar: Bar) -> bool:
        """Add ``bar``; return whether it was kept.

        A bar not newer than the last one (replays, overlaps) or one that cannot
        be real (a price not positive and finite, high below low, negative
        volume) is ignored. Raises ``ValueError`` for a bar of another symbol.
        """
        return self.append_at(bar, bar.ts.timestamp())

    def append_at(self, bar: Bar, ts: float) -> bool:
        """``append`` for a caller that holds ``bar.ts`` as POSIX seconds (``ts``) already."""
        if bar.symbol != self.symbol:
            raise ValueError(f"bar of {bar.symbol} appended to the buffer of {self.symbol}")
        if not plausible(bar.open, bar.high, bar.low, bar.close, bar.volume):
            return False
        return self.append_valid(bar, ts)

    def append_valid(self, bar: Bar, ts: float) -> bool:
        """``append_at`` for a caller that checked ``bar`` with ``plausible`` already."""
        if bar.symbol != self.symbol:
            raise ValueError(f"bar of {bar.symbol} appended to the buffer of {self.symbol}")
        d = self._data
        head, count = self._head, self._count
        if count:
            if ts <= d[((head - 1) % self.capacity) * _FIELDS]:
                return False
        elif not d:
            d = self._data = array("d", bytes(_SLOT_BYTES * self.capacity))
        _pack_slot(d, head * _SLOT_BYTES, ts, bar.open, bar.high, bar.low, bar.close, bar.volume)
        self._head = (head + 1) % self.capacity
        if count < self.capacity:
            self._count = count + 1
        return True

    def _slot(self, age: int) -> int:
        """Index of the bar ``age`` steps back (0 = newest)."""
        return ((self._head - 1 - age) % self.capacity) * _FIELDS

    def last_ts(self) -> float:
        if not self._count:
            raise IndexError("empty bar buffer")
        return self._data[self._slot(0)]

    def before(self, ts: float) -> tuple[int, float] | None:
        """Return (how many held bars open before ``ts``, the close of the newest of them).

        The bar opening at ``ts`` may or may not be held already. None when no
        bar precedes it or when a newer bar is held (``ts`` is late).
        """
        count = self._count
        if not count:
            return None
        d, cap, head = self._data, self.capacity, self._head
        i = ((head - 1) % cap) * _FIELDS
        newest = d[i]
        if newest < ts:
            return count, d[i + 4]
        if newest > ts or count < 2:
            return None
        return count - 1, d[((head - 2) % cap) * _FIELDS + 4]

    def close(self, age: int = 0) -> float:
        """Return the close ``age`` bars back (0 = newest); raise ``IndexError`` past the start."""
        if not 0 <= age < self._count:
            raise IndexError(f"no bar {age} back in a buffer of {self._count}")
        return self._data[self._slot(age) + 4]

    def last_time(self) -> datetime | None:
        return datetime.fromtimestamp(self.last_ts(), UTC) if self._count else None

    def __iter__(self) -> Iterator[Bar]:
        for age in range(self._count - 1, -1, -1):
            yield self._bar(age)

    def since(self, ts: datetime) -> list[Bar]:
        """Return the bars opening at or after ``ts``, oldest first."""
        cutoff = ts.timestamp()
        out: list[Bar] = []
        for age in range(self._count):
            if self._data[self._slot(age)] < cutoff:
                break
            out.append(self._bar(age))
        out.reverse()
        return out

    def _bar(self, age: int) -> Bar:
        i = self._slot(age)
        d = self._data
        return Bar(
            symbol=self.symbol,
            ts=datetime.fromtimestamp(d[i], UTC),
            open=d[i + 1],
            high=d[i + 2],
            low=d[i + 3],
            close=d[i + 4],
            volume=d[i + 5],
        )

    def drop_before(self, ts: datetime) -> None:
        """Forget bars older than ``ts`` (stale after a long downtime)."""
        if not self._count:
            return
        cutoff = ts.timestamp()
        if self._data[self._slot(self._count - 1)] >= cutoff:
            return  # the oldest bar is recent enough: nothing is stale
        stale = bisect.bisect_left(self._column(0), cutoff)
        # The bars kept are valid and ascending already: move them, don't re-append.
        count, head, width, data = self._count, self._head, _FIELDS, self._data
        if count < self.capacity or not head:  # oldest first from slot 0
            kept = data[stale * width : count * width]
        else:  # full and wrapped: oldest first from slot ``head``
            kept = (data[head * width :] + data[: head * width])[stale * width :]
        keep = count - stale
        kept.frombytes(bytes(_SLOT_BYTES * (self.capacity - keep)))
        self._data, self._count, self._head = kept, keep, keep % self.capacity

    def _check(self) -> None:
        """Raise ``ValueError`` unless the held bars are plausible and strictly ascending."""
        # Column by column, not bar by bar: a boot checks every bar of every
        # symbol. The rules are ``plausible``'s; the sign-and-exponent bytes
        # vouch for "finite, prices > 0, volumes >= 0" of a usual buffer at C
        # speed, and anything they cannot vouch for is checked value by value.
        # Once they vouch, the order checks compare bit patterns (see _lanes_above).
        count = self._count
        if not count:
            return
        ts = self._column(0)
        if self._signs_plausible():
            held = self._data if count == self.capacity else self._data[: count * _FIELDS]
            ordered = _lanes_ascend(ts.tobytes()) and _lanes_above(
                held[2::_FIELDS].tobytes(), held[3::_FIELDS].tobytes()
            )
        elif self._values_plausible():
            high, low = self._column(2), self._column(3)
            ordered = all(map(operator.lt, ts, ts[1:])) and all(map(operator.ge, high, low))
        else:
            raise ValueError("malformed bar buffer blob: implausible bar")
        if not ordered:
            raise ValueError("malformed bar buffer blob: implausible or unordered bar")
        try:
            datetime.fromtimestamp(ts[-1], UTC)
        except (OverflowError, OSError, ValueError) as exc:
            raise ValueError(f"malformed bar buffer blob: time {ts[-1]!r}") from exc

    def _signs_plausible(self) -> bool:
        """Return True when every held value is surely finite and non-negative, prices > 0.

        False means "not sure", never "implausible". Looks only at each double's
        top byte (sign and high exponent bits): 0x01..0x7e is a positive finite
        number, 0x00 also allows zero.
        """
        if sys.byteorder != "little":
            return False
        held = self._count * _FIELDS
        tops = self._data.tobytes()[7 : held * 8 : 8]
        if not tops.isascii() or 0x7F in tops:  # a top byte outside 0x00..0x7e
            return False
        # prices (open, high, low, close) must be > 0: a zero top byte is not sure to be
        return not (
            0 in tops[1::_FIELDS]
            or 0 in tops[2::_FIELDS]
            or 0 in tops[3::_FIELDS]
            or 0 in tops[4::_FIELDS]
        )

    def _values_plausible(self) -> bool:
        """Return whether every held value is finite, every price > 0, every volume >= 0."""
        ts, open_, high, low, close, volume = (self._column(k) for k in range(_FIELDS))
        prices = open_ + high + low + close
        return (
            all(map(math.isfinite, ts))
            and all(map(math.isfinite, prices))
            and min(prices) > 0
            and all(map(math.isfinite, volume))
            and min(volume) >= 0
        )

    def _column(self, field: int) -> array[float]:
        """Return one field of the held bars, oldest first."""
        column = self._data[field::_FIELDS]
        if self._count < self.capacity:
            return column[: self._count]
        if not self._head:
            return column
        return column[self._head :] + column[: self._head]

    def to_bytes(self) -> bytes:
        header = _HEADER.pack(self.capacity, self._count, self._head)
        if not self._data:  # never held a bar: the buffer would be all zeros
            return header + bytes(_SLOT_BYTES * self.capacity)
        return header + self._data.tobytes()

    @classmethod
    def from_bytes(
        cls, symbol: str, blob: bytes | memoryview, capacity: int | None = None
    ) -> BarRing:
        """Rebuild a ring from ``to_bytes()``'s bytes; raise ``ValueError`` on a malformed blob."""
        if len(blob) < _HEADER.size:
            raise ValueError("bar buffer blob too short")
        cap, count, head = _HEADER.unpack_from(blob)
        if cap <= 0 or count > cap or head >= cap or len(blob) - _HEADER.size != _SLOT_BYTES * cap:
            raise ValueError("malformed bar buffer blob")
        if count < cap and head != count:
            raise ValueError("malformed bar buffer blob: a partly filled ring starts at slot 0")
        ring = cls.__new__(cls)  # not __init__: its zeroed buffer would be thrown away
        ring.symbol = symbol
        ring.capacity = cap
        ring._data = array("d")
        ring._data.frombytes(memoryview(blob)[_HEADER.size :])
        ring._count = count
        ring._head = head
        ring._check()
        if capacity is not None and capacity != cap:
            resized = cls(symbol, capacity)
            for bar in ring:
                resized.append(bar)
            return resized
        return ring


def _lanes_ascend(lanes: bytes) -> bool:
    """Return whether each 8-byte lane of ``lanes`` is above the one before it.

    See ``_lanes_above``: here the lower lanes are the same number shifted by one lane.
    """
    n = len(lanes) // 8 - 1
    if n <= 0:
        return True
    bits = int.from_bytes(lanes, "little")
    guard, ones, every = _lanes(n)
    return ((bits >> 64 | guard) - (bits & every) - ones) & guard == guard


def _lanes_above(upper: bytes, lower: bytes) -> bool:
    """Return whether each 8-byte lane of ``upper`` is at least the same lane of ``lower``.

    Lanes are little-endian doubles, each finite and >= +0.0 (``_signs_plausible``
    vouched for them). For those, numeric order is the order of their bit
    patterns read as unsigned integers, and the top bit is clear. So one
    big-integer subtraction compares every pair at once: with the top bit of
    each lane of ``upper`` set (``guard``), ``(upper | guard) - lower`` keeps a
    lane's guard bit, and borrows nothing from the next lane, exactly where that
    lane of ``upper`` is >= the one of ``lower`` (subtract one more per lane: >).
    """
    n = len(upper) // 8
    if not n:
        return True
    guard, _, _ = _lanes(n)
    return (
        (int.from_bytes(upper, "little") | guard) - int.from_bytes(lower, "little")
    ) & guard == guard


@functools.lru_cache(maxsize=64)
def _lanes(n: int) -> tuple[int, int, int]:
    """Return, for ``n`` 64-bit lanes: the top bit of each, a one in each, every bit."""
    return (
        int.from_bytes(b"\x00\x00\x00\x00\x00\x00\x00\x80" * n, "little"),
        int.from_bytes(b"\x01\x00\x00\x00\x00\x00\x00\x00" * n, "little"),
        (1 << 64 * n) - 1,
    )


def plausible(open_: float, high: float, low: float, close: float, volume: float) -> bool:
    """Return whether a bar's values could be real: prices finite and > 0, high >= low,
    volume finite and >= 0. One chained comparison (NaN compares false): every bar
    of every symbol is checked with it.
    """
    return (
        0.0 < low <= high < _INF
        and 0.0 < open_ < _INF
        and 0.0 < close < _INF
        and 0.0 <= volume < _INF
    )
