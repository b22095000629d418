"""Encoding writes and decoding rows: fixed-width UTC times, refused values, checked rows."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import msgspec
import pytest

from brokers.base import Execution, Side
from persistence import PutExecution, PutIntent, PutSnapshot, ResolveIntent
from persistence.codec import (
    INSERT_EXECUTION,
    RESOLVE_INTENT,
    SET_INTENT_STATUS,
    UPSERT_INTENT,
    UPSERT_SNAPSHOT,
    decode_row,
    encode_batch,
    encode_time,
)
from tests.unit.persistence._store_kit import T0, execution, intent, snapshot


def test_times_are_fixed_width_utc_text_whose_order_is_time_order() -> None:
    tokyo = timezone(timedelta(hours=9))
    times = [
        T0,
        T0 + timedelta(microseconds=1),
        (T0 + timedelta(seconds=1)).astimezone(tokyo),
        datetime(2026, 1, 5, 14, 30, 0, 500000, tzinfo=UTC),
    ]

    texts = [encode_time(t) for t in times]

    assert texts[0] == "2026-01-05T14:30:00.000000+00:00"
    assert len(set(map(len, texts))) == 1
    assert sorted(texts) == [encode_time(t) for t in sorted(times)]


def test_naive_time_is_refused() -> None:
    with pytest.raises(ValueError, match="naive"):
        encode_time(datetime(2026, 1, 5, 14, 30))


def test_batch_keeps_the_order_of_its_writes() -> None:
    batch = encode_batch(
        [
            PutIntent(intent("coid-1")),
            PutExecution(execution("e-1")),
            ResolveIntent("coid-1", "filled", "ord-1"),
            PutSnapshot(snapshot()),
            PutExecution(execution("e-2")),
        ]
    )

    statements = [sql for sql, _ in batch.ops]
    assert statements == [
        UPSERT_INTENT,
        SET_INTENT_STATUS,  # the intent's status, in a statement of its own
        INSERT_EXECUTION,
        RESOLVE_INTENT,
        UPSERT_SNAPSHOT,
        INSERT_EXECUTION,
    ]
    assert batch.exec_ids == ("e-1", "e-2")


def test_row_decodes_to_an_aware_utc_struct() -> None:
    row = ("e-1", "o-1", "c-1", "AAPL", "sell", 5, 10.5, "2026-01-05T14:30:00.000000+00:00")

    decoded = decode_row(Execution, row)

    assert decoded == Execution("e-1", "o-1", "c-1", "AAPL", Side.SELL, 5.0, 10.5, T0)
    assert decoded.side is Side.SELL
    assert isinstance(decoded.qty, float)
    assert decoded.ts.tzinfo is UTC


def test_row_of_the_wrong_shape_is_refused() -> None:
    row = ("e-1", "o-1", "c-1", "AAPL", "sideways", 5.0, 10.5, "2026-01-05T14:30:00+00:00")

    with pytest.raises(msgspec.ValidationError, match="side"):
        decode_row(Execution, row)
