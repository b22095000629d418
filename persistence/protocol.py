"""What the runtime writes and reads: the ``Store`` protocol and its rows.

Actors depend on this protocol, never on SQLite. Snapshots are opaque blobs
(the actors own their encoding and schema version), so the store never imports
actor types. Every write goes through ``commit``: a batch of writes that becomes
durable together, in one transaction, before ``commit`` returns.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date, datetime
from typing import Protocol

import msgspec

from brokers.base import Execution, Side

__all__ = [
    "ClosedTradeRow",
    "CommitResult",
    "IntentRow",
    "LoadedSnapshots",
    "PutClosedTrade",
    "PutExecution",
    "PutIntent",
    "PutReport",
    "PutSession",
    "PutSnapshot",
    "ReportRow",
    "ResolveIntent",
    "SessionRow",
    "SnapshotRow",
    "Store",
    "StoreError",
    "StoreWriteError",
    "Write",
]


class StoreError(Exception):
    """The store cannot be opened or used as asked (wrong account, newer schema, ...)."""


class StoreWriteError(StoreError):
    """A commit failed (disk full, I/O error); nothing of the batch was stored."""


class SnapshotRow(msgspec.Struct, frozen=True):
    """A symbol's latest snapshot: the actor's opaque ``blob`` and, apart, its bar buffer.

    ``bars`` lives in a row of its own (``bar_buffers``): the buffer (~12 KB)
    changes once a bar, the state on every fill, and a fill's commit should not
    rewrite 12 KB that did not change. Written: ``None`` leaves the stored
    buffer as it is, bytes replace it, in the same transaction as the state.
    Loaded: the stored buffer, ``None`` when there is none.
    """

    symbol: str
    blob: bytes
    schema_version: int
    seq: int
    taken_at: datetime
    bars: bytes | None = None


class IntentRow(msgspec.Struct, frozen=True):
    client_order_id: str
    symbol: str
    kind: str
    side: Side
    qty: float
    price: float | None
    created_at: datetime
    status: str = "pending"
    order_id: str | None = None


class ClosedTradeRow(msgspec.Struct, frozen=True):
    trade_id: str
    symbol: str
    side: Side
    qty: float
    entry_at: datetime | None
    entry_price: float
    exit_at: datetime
    exit_price: float | None
    realized_pnl: float
    mae: float
    mfe: float
    exit_reason: str
    strategy: str
    trading_day: date


class SessionRow(msgspec.Struct, frozen=True):
    trading_day: date
    realized_pnl: float
    trades_today: int


class ReportRow(msgspec.Struct, frozen=True):
    at: datetime
    mode: str
    body: str  # the report as JSON text


class PutSnapshot(msgspec.Struct, frozen=True, tag=True):
    row: SnapshotRow


class PutExecution(msgspec.Struct, frozen=True, tag=True):
    """Store an execution (once: a known ``exec_id`` is skipped and reported).

    ``require_new``: when the execution is already stored, nothing of the whole
    commit is stored (a fill applied to a state must not be stored twice).
    """

    execution: Execution
    require_new: bool = False


class PutIntent(msgspec.Struct, frozen=True, tag=True):
    intent: IntentRow


class ResolveIntent(msgspec.Struct, frozen=True, tag=True):
    client_order_id: str
    status: str
    order_id: str | None = None


class PutClosedTrade(msgspec.Struct, frozen=True, tag=True):
    trade: ClosedTradeRow


class PutSession(msgspec.Struct, frozen=True, tag=True):
    session: SessionRow


class PutReport(msgspec.Struct, frozen=True, tag=True):
    report: ReportRow


Write = (
    PutSnapshot | PutExecution | PutIntent | ResolveIntent | PutClosedTrade | PutSession | PutReport
)


class CommitResult(msgspec.Struct, frozen=True):
    """What a commit did; ``duplicate_exec_ids`` were already stored and were skipped.

    A commit with a ``PutExecution(require_new=True)`` whose id is among them
    stored nothing at all.
    """

    duplicate_exec_ids: frozenset[str] = frozenset()


class LoadedSnapshots(msgspec.Struct, frozen=True):
    rows: list[SnapshotRow]


class Store(Protocol):
    """The durable store of one account."""

    @property
    def account_id(self) -> str: ...

    async def commit(self, writes: Sequence[Write]) -> CommitResult:
        """Make ``writes`` durable together; raise ``StoreWriteError`` when that fails.

        Returns only after the transaction holding the writes has committed.
        """
        ...

    async def load_snapshots(self) -> LoadedSnapshots: ...

    async def quarantine_snapshot(self, symbol: str, reason: str) -> None:
        """Move an undecodable snapshot aside so the symbol starts from broker truth."""
        ...

    async def has_execution(self, exec_id: str) -> bool: ...

    async def executions(self, since: datetime | None = None) -> list[Execution]: ...

    async def pending_intents(self) -> list[IntentRow]: ...

    async def closed_trades(self, since: date | None = None) -> list[ClosedTradeRow]: ...

    async def session(self) -> SessionRow | None: ...

    async def sessions(self, since: date | None = None) -> list[SessionRow]: ...

    async def reports(self, limit: int = 50) -> list[ReportRow]: ...

    async def close(self) -> None: ...
