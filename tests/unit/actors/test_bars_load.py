"""Loading a bar buffer: the bulk checks of ``BarRing.from_bytes`` and ``drop_before``.

Both run for every symbol at boot, so they work column by column (the order
checks on the bit patterns of whole columns at once); these tests hold them to
the bar-by-bar rules they replace.
"""

from __future__ import annotations

import itertools
import math
import struct
from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from actors.bars import BarRing, _lanes_above, _lanes_ascend
from tests.unit.actors._actor_kit import SYMBOL, at, bar, ring_of

HEADER = struct.Struct("<III")

values = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([0.0, -0.0, 5e-324, 1e-310, 1e300, 2.0**1009, -1.0, 10.0, 11.0, 9.0]),
)


def _plausible_bar_by_bar(slots: list[tuple[float, ...]]) -> bool:
    """The rules as the ring states them, one bar at a time (oldest first)."""
    previous = -math.inf
    for ts, open_, high, low, close, volume in slots:
        prices = (open_, high, low, close)
        if not (
            math.isfinite(ts)
            and ts > previous
            and all(math.isfinite(p) and p > 0 for p in prices)
            and high >= low
            and math.isfinite(volume)
            and volume >= 0
        ):
            return False
        previous = ts
    if slots:
        try:
            datetime.fromtimestamp(previous, UTC)
        except (OverflowError, OSError, ValueError):
            return False
    return True


def _blob(capacity: int, slots: list[tuple[float, ...]], head: int) -> bytes:
    """Return a blob holding ``slots`` oldest first, the ring's newest bar before ``head``."""
    count = len(slots)
    body = [0.0] * (6 * capacity)
    for age, slot in enumerate(reversed(slots)):
        i = ((head - 1 - age) % capacity) * 6
        body[i : i + 6] = slot
    return HEADER.pack(capacity, count, head) + struct.pack(f"<{6 * capacity}d", *body)


@settings(max_examples=400, deadline=None)
@given(
    st.lists(st.tuples(values, values, values, values, values, values), min_size=1, max_size=6),
    st.integers(0, 5),
    st.booleans(),
)
def test_a_blob_is_accepted_exactly_when_every_bar_is_plausible(
    slots: list[tuple[float, ...]], extra: int, full: bool
) -> None:
    capacity = len(slots) if full else len(slots) + extra
    head = (extra % capacity) if full else len(slots) % capacity
    blob = _blob(capacity, slots, head)
    try:
        ring = BarRing.from_bytes(SYMBOL, blob)
    except ValueError:
        accepted = False
    else:
        accepted = True
        assert len(ring) == len(slots)
    assert accepted == _plausible_bar_by_bar(slots)


@settings(max_examples=300, deadline=None)
@given(st.integers(1, 12), st.integers(0, 30), st.integers(-2, 32), st.booleans())
def test_dropping_stale_bars_is_rebuilding_from_the_recent_ones(
    capacity: int, count: int, cut_minute: int, half: bool
) -> None:
    ring = ring_of([bar(m, 10.0 + m % 5) for m in range(count)], capacity)
    cutoff = at(cut_minute) + timedelta(seconds=30 if half else 0)
    rebuilt = ring_of(ring.since(cutoff), capacity)

    ring.drop_before(cutoff)

    assert list(ring) == list(rebuilt)
    assert list(BarRing.from_bytes(SYMBOL, ring.to_bytes())) == list(rebuilt)
    later = bar(100, 12.0)
    assert ring.append(later) == rebuilt.append(later)
    assert list(ring) == list(rebuilt)


non_negative = st.one_of(
    st.floats(min_value=0.0, allow_nan=False, allow_infinity=False).map(abs),  # abs: no -0.0
    st.sampled_from([0.0, 5e-324, 2.2250738585072014e-308, 1.0, 1.0000000000000002, 1.79e308]),
)


@settings(max_examples=400, deadline=None)
@given(st.lists(st.tuples(non_negative, non_negative), max_size=40))
def test_the_lane_comparisons_are_the_value_comparisons(pairs: list[tuple[float, float]]) -> None:
    upper = struct.pack(f"<{len(pairs)}d", *(u for u, _ in pairs))
    lower = struct.pack(f"<{len(pairs)}d", *(lo for _, lo in pairs))
    values = [u for u, _ in pairs] + [lo for _, lo in pairs]
    lanes = struct.pack(f"<{len(values)}d", *values)

    assert _lanes_above(upper, lower) == all(u >= lo for u, lo in pairs)
    assert _lanes_ascend(lanes) == all(a < b for a, b in itertools.pairwise(values))


def test_an_empty_ring_holds_no_buffer_yet_reads_and_writes_like_a_zeroed_one() -> None:
    ring = BarRing(SYMBOL, 4)

    assert ring.to_bytes() == HEADER.pack(4, 0, 0) + bytes(8 * 6 * 4)
    assert len(BarRing.from_bytes(SYMBOL, ring.to_bytes())) == 0
    assert ring.since(at(0)) == []
    ring.drop_before(at(5))
    assert ring.append(bar(1, 10.0))
    assert [b.close for b in ring] == [10.0]
    assert ring.to_bytes() == ring_of([bar(1, 10.0)], 4).to_bytes()


positive = st.sampled_from([5e-324, 1e-300, 0.5, 1.0, 1.0000000000000002, 2.0, 9.0, 11.0, 1e300])
times = st.sampled_from([0.0, 1.0, 60.0, 61.0, 1.7e9, 1.7e9 + 60.0, 1.7e9 + 120.0])


@settings(max_examples=600, deadline=None)
@given(
    st.lists(
        st.tuples(times, positive, positive, positive, positive, positive | st.just(0.0)),
        min_size=1,
        max_size=8,
    ),
    st.integers(0, 7),
    st.booleans(),
)
def test_a_blob_of_positive_values_is_accepted_exactly_when_every_bar_is_plausible(
    slots: list[tuple[float, ...]], extra: int, full: bool
) -> None:
    # The fast path: every value finite and not negative, so only order and high/low decide.
    capacity = len(slots) if full else len(slots) + extra
    head = (extra % capacity) if full else len(slots) % capacity
    try:
        BarRing.from_bytes(SYMBOL, _blob(capacity, slots, head))
    except ValueError:
        accepted = False
    else:
        accepted = True
    assert accepted == _plausible_bar_by_bar(slots)
