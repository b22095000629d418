"""What a write becomes in SQL, and what a stored row becomes again.

Writes are encoded to ``(sql, params)`` on the caller's side of the writer's
queue, so a write that cannot be stored (a naive time, a NaN quantity, an
unknown status) fails its own commit and never the group it would have joined.

Times are stored as fixed-width ISO-8601 UTC text with microseconds
(``2026-01-05T14:30:00.000000+00:00``): readable in the ``sqlite3`` shell, and
text order is time order, so ``WHERE ts >= ?`` and ``ORDER BY ts`` are right.
Rows come back through ``msgspec.convert``, which checks every column's type and
parses times into aware UTC datetimes; a row that does not fit its Struct
raises ``msgspec.ValidationError`` instead of handing back a half-valid object.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from datetime import UTC, date, datetime
from typing import Any, NamedTuple, TypeVar

import msgspec

from brokers.base import Execution
from persistence.protocol import (
    ClosedTradeRow,
    IntentRow,
    PutClosedTrade,
    PutExecution,
    PutIntent,
    PutReport,
    PutSession,
    PutSnapshot,
    ReportRow,
    ResolveIntent,
    SessionRow,
    SnapshotRow,
    Write,
)

__all__ = [
    "INSERT_EXECUTION",
    "INTENT_STATUSES",
    "LIVE_INTENT_STATUSES",
    "EncodedBatch",
    "Op",
    "QuarantinedSnapshotRow",
    "columns",
    "decode_row",
    "encode_batch",
    "encode_time",
    "quarantine_batch",
]

Params = tuple[Any, ...]
Op = tuple[str, Params]

INTENT_STATUSES = frozenset({"pending", "sent", "acked", "filled", "canceled", "rejected"})
LIVE_INTENT_STATUSES = ("pending", "sent", "acked")

_T = TypeVar("_T", bound=msgspec.Struct)

_json = msgspec.json.Decoder()


class QuarantinedSnapshotRow(msgspec.Struct, frozen=True):
    """A snapshot moved aside (undecodable or distrusted), kept as evidence.

    ``taken_at`` is the text as it was stored: it may be what made the row unreadable.
    """

    symbol: str
    blob: bytes
    schema_version: int
    seq: int
    taken_at: str
    reason: str
    quarantined_at: datetime


class EncodedBatch(NamedTuple):
    """One commit's statements, in order, and the execution ids it inserts.

    ``guards``: execution ids that must be new; when one is already stored,
    nothing of the batch is stored (``PutExecution(require_new=True)``).
    """

    ops: tuple[Op, ...]
    exec_ids: tuple[str, ...]
    guards: tuple[str, ...] = ()


def columns(row_type: type[msgspec.Struct]) -> str:
    """Return the column list of ``row_type`` (table columns are named like its fields)."""
    return ", ".join(row_type.__struct_fields__)


def decode_row(row_type: type[_T], row: Iterable[Any]) -> _T:
    """Build ``row_type`` from a row selected with ``columns(row_type)``.

    Raise ``msgspec.ValidationError`` when a column does not fit its field.
    """
    return msgspec.convert(dict(zip(row_type.__struct_fields__, row, strict=True)), row_type)


def encode_time(ts: datetime) -> str:
    """Return ``ts`` as fixed-width ISO-8601 UTC text; raise ``ValueError`` when naive."""
    if ts.tzinfo is None or ts.utcoffset() is None:
        raise ValueError(f"naive datetime {ts.isoformat()} (times must carry a timezone)")
    return ts.astimezone(UTC).isoformat(timespec="microseconds")


def _finite(what: str, value: float) -> float:
    # SQLite stores NaN as NULL: refuse it here rather than store a hole.
    if not math.isfinite(value):
        raise ValueError(f"{what} is {value!r}, not a finite number")
    return value


def _optional_finite(what: str, value: float | None) -> float | None:
    return None if value is None else _finite(what, value)


def _status(client_order_id: str, status: str) -> str:
    if status not in INTENT_STATUSES:
        raise ValueError(
            f"intent {client_order_id}: status {status!r} is not one of {sorted(INTENT_STATUSES)}"
        )
    return status


def _upsert(
    table: str, row_type: type[msgspec.Struct], key: str, *, keep: tuple[str, ...] = ()
) -> str:
    """Return the upsert of ``row_type``; a stored row keeps its ``keep`` columns."""
    fields = row_type.__struct_fields__
    updates = ", ".join(f"{f} = excluded.{f}" for f in fields if f != key and f not in keep)
    marks = ", ".join("?" for _ in fields)
    return (
        f"INSERT INTO {table} ({columns(row_type)}) VALUES ({marks}) "
        f"ON CONFLICT ({key}) DO UPDATE SET {updates}"
    )


# Only a known exec_id is skipped (any other constraint still fails the commit);
# the writer tells a skipped insert by its row count.
INSERT_EXECUTION = (
    f"INSERT INTO executions ({columns(Execution)}) VALUES (?, ?, ?, ?, ?, ?, ?, ?) "
    "ON CONFLICT (exec_id) DO NOTHING"
)
# The columns of ``snapshots``: every field of ``SnapshotRow`` but its bars, which
# are the ``blob`` of ``bar_buffers`` (same symbol).
SNAPSHOT_COLUMNS = "symbol, blob, schema_version, seq, taken_at"
UPSERT_SNAPSHOT = (
    f"INSERT INTO snapshots ({SNAPSHOT_COLUMNS}) VALUES (?, ?, ?, ?, ?) "
    "ON CONFLICT (symbol) DO UPDATE SET blob = excluded.blob, "
    "schema_version = excluded.schema_version, seq = excluded.seq, taken_at = excluded.taken_at"
)
UPSERT_BARS = (
    "INSERT INTO bar_buffers (symbol, blob) VALUES (?, ?) "
    "ON CONFLICT (symbol) DO UPDATE SET blob = excluded.blob"
)
SELECT_SNAPSHOTS = (
    "SELECT s.symbol, s.blob, s.schema_version, s.seq, s.taken_at, b.blob "
    "FROM snapshots AS s LEFT JOIN bar_buffers AS b ON b.symbol = s.symbol ORDER BY s.symbol"
)
# An intent's row is written in two statements: the upsert leaves the status of a
# row it updates alone, and the status is set only where it differs. ``status`` is
# indexed, and SQLite rewrites an index entry whenever its column is assigned,
# equal or not: a stop resized by every fill (qty and price only) would dirty a
# page of ``intents_status`` per fill for nothing (~1 of the 6 pages of a fill).
UPSERT_INTENT = _upsert("intents", IntentRow, "client_order_id", keep=("status",))
SET_INTENT_STATUS = "UPDATE intents SET status = ? WHERE client_order_id = ? AND status IS NOT ?"
RESOLVE_INTENT = (
    "UPDATE intents SET status = ?, order_id = COALESCE(?, order_id) WHERE client_order_id = ?"
)
UPSERT_CLOSED_TRADE = _upsert("closed_trades", ClosedTradeRow, "trade_id")
UPSERT_SESSION = _upsert("sessions", SessionRow, "trading_day")
INSERT_REPORT = f"INSERT INTO reports ({columns(ReportRow)}) VALUES (?, ?, ?)"
QUARANTINE_SNAPSHOT = (
    f"INSERT INTO quarantined_snapshots ({columns(QuarantinedSnapshotRow)}) "
    f"SELECT {SNAPSHOT_COLUMNS}, ?, ? FROM snapshots WHERE symbol = ?"
)
SELECT_QUARANTINED = (
    "SELECT symbol, CAST(blob AS BLOB), schema_version, seq, CAST(taken_at AS TEXT), reason, "
    "quarantined_at FROM quarantined_snapshots ORDER BY id"
)
DELETE_SNAPSHOT = "DELETE FROM snapshots WHERE symbol = ?"
DELETE_BARS = "DELETE FROM bar_buffers WHERE symbol = ?"


def _execution(e: Execution) -> Params:
    if not e.exec_id:
        raise ValueError("execution without exec_id")
    return (
        e.exec_id,
        e.order_id,
        e.client_order_id,
        e.symbol,
        str(e.side),
        _finite(f"execution {e.exec_id} qty", e.qty),
        _finite(f"execution {e.exec_id} price", e.price),
        encode_time(e.ts),
    )


def _snapshot(s: SnapshotRow) -> Params:
    return (s.symbol, bytes(s.blob), s.schema_version, s.seq, encode_time(s.taken_at))


_INTENT_STATUS = IntentRow.__struct_fields__.index("status")


def _intent(i: IntentRow) -> Params:
    what = f"intent {i.client_order_id}"
    return (
        i.client_order_id,
        i.symbol,
        i.kind,
        str(i.side),
        _finite(f"{what} qty", i.qty),
        _optional_finite(f"{what} price", i.price),
        encode_time(i.created_at),
        _status(i.client_order_id, i.status),
        i.order_id,
    )


def _closed_trade(t: ClosedTradeRow) -> Params:
    what = f"closed trade {t.trade_id}"
    return (
        t.trade_id,
        t.symbol,
        str(t.side),
        _finite(f"{what} qty", t.qty),
        None if t.entry_at is None else encode_time(t.entry_at),
        _finite(f"{what} entry_price", t.entry_price),
        encode_time(t.exit_at),
        _optional_finite(f"{what} exit_price", t.exit_price),
        _finite(f"{what} realized_pnl", t.realized_pnl),
        _finite(f"{what} mae", t.mae),
        _finite(f"{what} mfe", t.mfe),
        t.exit_reason,
        t.strategy,
        _day(t.trading_day),
    )


def _day(day: date) -> str:
    if isinstance(day, datetime):
        raise ValueError(f"trading day {day!r} is a datetime, not a date")
    return day.isoformat()


def _report(r: ReportRow) -> Params:
    try:
        _json.decode(r.body)
    except msgspec.DecodeError as exc:
        raise ValueError(f"report body is not JSON: {exc}") from exc
    return (encode_time(r.at), r.mode, r.body)


def encode_batch(writes: Sequence[Write]) -> EncodedBatch:
    """Turn ``writes`` into statements, in order.

    Raise ``ValueError`` when a write holds what the store refuses (a naive
    time, a non-finite number, an unknown intent status, a report that is not
    JSON) and ``TypeError`` when an item is not a ``Write``.
    """
    ops: list[Op] = []
    exec_ids: list[str] = []
    guards: list[str] = []
    for write in writes:
        match write:
            case PutExecution(execution=e, require_new=require_new):
                ops.append((INSERT_EXECUTION, _execution(e)))
                exec_ids.append(e.exec_id)
                if require_new:
                    guards.append(e.exec_id)
            case PutSnapshot(row=s):
                ops.append((UPSERT_SNAPSHOT, _snapshot(s)))
                if s.bars is not None:
                    ops.append((UPSERT_BARS, (s.symbol, bytes(s.bars))))
            case PutIntent(intent=i):
                row = _intent(i)
                status = row[_INTENT_STATUS]
                ops.append((UPSERT_INTENT, row))
                ops.append((SET_INTENT_STATUS, (status, i.client_order_id, status)))
            case ResolveIntent(client_order_id=coid, status=status, order_id=order_id):
                ops.append((RESOLVE_INTENT, (_status(coid, status), order_id, coid)))
            case PutClosedTrade(trade=t):
                ops.append((UPSERT_CLOSED_TRADE, _closed_trade(t)))
            case PutSession(session=s):
                trades = s.trades_today
                pnl = _finite(f"session {s.trading_day} realized_pnl", s.realized_pnl)
                ops.append((UPSERT_SESSION, (_day(s.trading_day), pnl, trades)))
            case PutReport(report=r):
                ops.append((INSERT_REPORT, _report(r)))
            case _:
                raise TypeError(f"not a store write: {write!r}")
    return EncodedBatch(tuple(ops), tuple(exec_ids), tuple(guards))


def quarantine_batch(symbol: str, reason: str, at: datetime) -> EncodedBatch:
    """Return the statements that move ``symbol``'s snapshot to quarantine.

    Its bar buffer goes too (the symbol starts fresh; bars come back from history).
    """
    return EncodedBatch(
        (
            (QUARANTINE_SNAPSHOT, (reason, encode_time(at), symbol)),
            (DELETE_SNAPSHOT, (symbol,)),
            (DELETE_BARS, (symbol,)),
        ),
        (),
    )
