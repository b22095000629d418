"""Durable store of one account: snapshots, executions, intents, closed trades, reports."""

from persistence.codec import QuarantinedSnapshotRow
from persistence.protocol import (
    ClosedTradeRow,
    CommitResult,
    IntentRow,
    LoadedSnapshots,
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
    Store,
    StoreError,
    StoreWriteError,
    Write,
)
from persistence.schema import SCHEMA_VERSION
from persistence.sqlite import SqliteStore, open_store

__all__ = [
    "SCHEMA_VERSION",
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
    "QuarantinedSnapshotRow",
    "ReportRow",
    "ResolveIntent",
    "SessionRow",
    "SnapshotRow",
    "SqliteStore",
    "Store",
    "StoreError",
    "StoreWriteError",
    "Write",
    "open_store",
]
