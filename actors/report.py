"""The report of one recovery run: what it found per symbol and what it did.

Written to the store, logged, published, printed by ``stalwart recover``; its
shape is read by tools, so fields are added with defaults, never renamed.
"""

from __future__ import annotations

from datetime import datetime

import msgspec

from actors.messages import ReconcileOutcome

__all__ = ["ActionRecord", "Drift", "RecoveryReport", "build_report"]


class Drift(msgspec.Struct, frozen=True):
    symbol: str
    local_qty: float
    broker_qty: float
    local_avg: float
    broker_avg: float


class ActionRecord(msgspec.Struct, frozen=True):
    symbol: str
    action: str
    detail: str


class RecoveryReport(msgspec.Struct, frozen=True, kw_only=True):
    mode: str
    dry_run: bool
    started_at: datetime
    duration_s: float
    zombies: list[str]
    orphans: list[str]
    drifts: list[Drift]
    unprotected: list[str]
    # Symbols whose stop the broker filled while some of its executions never came:
    # the position was taken from the broker and the trade booked as the stop's.
    missing_fills: list[str] = []
    replayed_fills: int
    actions: list[ActionRecord]
    critical_issues: list[str]
    broker_reachable: bool


def build_report(
    mode: str,
    dry_run: bool,
    started: datetime,
    outcomes: list[ReconcileOutcome],
    replayed: int,
    critical: list[str],
    reachable: bool,
    *,
    duration_s: float,
    fill_waits: set[str],
) -> RecoveryReport:
    """Return the report of one run from its symbols' outcomes.

    ``fill_waits``: the symbols whose confirmed finding waits only for a
    filled stop's executions (what the broker holds meanwhile is reported).
    """
    actions = [
        ActionRecord(symbol=o.symbol, action=a.split(" ")[0], detail=a)
        for o in outcomes
        for a in o.actions
    ]
    # A periodic finding not yet confirmed is reported as pending, not as found.
    found = [o for o in outcomes if not o.pending]
    orphans = [o.symbol for o in found if o.finding == "orphan"]
    critical = [*critical, *(f"orphan {s}" for s in orphans)]
    critical += [
        f"unprotected {o.symbol}"
        for o in found
        if o.unprotected and not any(a.startswith("stop restored") for a in o.actions)
    ]
    # Confirmed but held back while a filled stop's executions may still come: what
    # the broker holds meanwhile has no stop, and waiting must not hide that.
    waiting = [o for o in outcomes if o.pending and o.unprotected and o.symbol in fill_waits]
    critical += [
        f"unprotected {o.symbol}: {o.broker_qty} at the broker with no stop, "
        "while its filled stop's executions are awaited"
        for o in waiting
    ]
    critical += [f"unverified {o.symbol}" for o in found if o.unverified]
    return RecoveryReport(
        mode=mode,
        dry_run=dry_run,
        started_at=started,
        duration_s=duration_s,
        zombies=[o.symbol for o in found if o.finding == "zombie"],
        orphans=orphans,
        drifts=[
            Drift(o.symbol, o.local_qty, o.broker_qty, o.local_avg, o.broker_avg)
            for o in found
            if o.finding == "drift"
        ],
        unprotected=[
            o.symbol
            for o in outcomes
            if o.unprotected and (not o.pending or o.symbol in fill_waits)
        ],
        missing_fills=[o.symbol for o in found if o.missing_fill],
        replayed_fills=replayed,
        actions=actions,
        critical_issues=critical,
        broker_reachable=reachable,
    )
