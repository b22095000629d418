"""The chaos campaign's invariants: the trader's store against the exchange's ground truth.

Pure functions over two read-only views, so every check is unit-tested on its
own and can fail: :class:`Truth` (what ``GET /_sim/executions``, positions and
open orders say) and :class:`Books` (what the trader's SQLite store holds,
read with ``mode=ro`` while it runs). :class:`Ledger` carries what one check
must remember for the next (attempt counts never decrease within a day).
"""

from __future__ import annotations

import re
import sqlite3
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from actors.snapshot import SnapshotError, decode_state
from actors.state import PositionState

__all__ = [
    "VIOLATIONS",
    "Books",
    "Check",
    "Ledger",
    "Truth",
    "check",
    "read_books",
    "realized_by_symbol",
]

# Every count a campaign must keep at zero (the result object's names).
VIOLATIONS = (
    "lost_fills",
    "duplicate_fills",
    "duplicate_entries",
    "attempt_regressions",
    "silent_unprotected",
    "qty_mismatches",
    "partial_mismatches",
    "integrity_failures",
    "pnl_mismatches",
)

_EPS = 1e-6
_ENTRY = re.compile(r"^sw-[0-9a-f]+-(?P<symbol>.+)-(?P<day>\d{6})-(?P<n>\d+)-entry$")


@dataclass(frozen=True)
class Truth:
    """The exchange's ground truth at one moment (market frozen)."""

    executions: list[dict[str, Any]]  # /_sim/executions, in the order they happened
    positions: dict[str, float]  # symbol -> signed qty
    open_orders: list[dict[str, Any]]  # /v2/orders?status=open


@dataclass(frozen=True)
class Books:
    """What the trader's store holds."""

    exec_ids: list[str]
    states: dict[str, PositionState]
    closed_pnl: dict[str, float]
    entry_intents: set[str]
    integrity: str
    undecodable: list[str] = field(default_factory=list)


@dataclass
class Ledger:
    """What a campaign remembers between checks."""

    attempts: dict[tuple[str, str], int] = field(default_factory=dict)


@dataclass
class Check:
    """The violations one check found: counts by name, and one line per finding."""

    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(VIOLATIONS, 0))
    findings: list[str] = field(default_factory=list)
    items: list[tuple[str, str, int]] = field(default_factory=list)  # (name, what, count)

    def add(self, name: str, what: str, n: int = 1) -> None:
        self.counts[name] += n
        self.findings.append(f"{name}: {what}")
        self.items.append((name, what, n))

    @property
    def ok(self) -> bool:
        return not any(self.counts.values())


def read_books(db: Path) -> Books:
    """Read the trader's store read-only (safe while the trader runs: WAL)."""
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)
    try:
        integrity = str(con.execute("PRAGMA integrity_check").fetchone()[0])
        exec_ids = [str(r[0]) for r in con.execute("SELECT exec_id FROM executions")]
        states: dict[str, PositionState] = {}
        undecodable: list[str] = []
        for symbol, blob, version in con.execute(
            "SELECT symbol, blob, schema_version FROM snapshots"
        ):
            try:
                states[symbol] = decode_state(blob, version, symbol)
            except SnapshotError:
                undecodable.append(str(symbol))
        closed: dict[str, float] = defaultdict(float)
        for symbol, pnl in con.execute("SELECT symbol, realized_pnl FROM closed_trades"):
            closed[str(symbol)] += float(pnl)
        entries = {
            str(r[0]) for r in con.execute("SELECT client_order_id FROM intents WHERE kind='entry'")
        }
    finally:
        con.close()
    return Books(exec_ids, states, dict(closed), entries, integrity, undecodable)


def realized_by_symbol(executions: list[dict[str, Any]]) -> dict[str, float]:
    """Realized P&L per symbol from executions in order, average-cost (as broker and trader)."""
    qty: dict[str, float] = defaultdict(float)
    avg: dict[str, float] = defaultdict(float)
    realized: dict[str, float] = defaultdict(float)
    for ex in executions:
        symbol, q, p = str(ex["symbol"]), float(ex["qty"]), float(ex["price"])
        delta = q if ex["side"] == "buy" else -q
        old = qty[symbol]
        if abs(old) < _EPS or (old > 0) == (delta > 0):
            avg[symbol] = (abs(old) * avg[symbol] + q * p) / abs(old + delta)
            qty[symbol] = old + delta
            continue
        closing = min(abs(old), q)
        realized[symbol] += (p - avg[symbol]) * closing * (1.0 if old > 0 else -1.0)
        new = old + delta
        if abs(new) < _EPS:
            qty[symbol], avg[symbol] = 0.0, 0.0
        else:
            qty[symbol] = new
            if (old > 0) != (new > 0):
                avg[symbol] = p
    return dict(realized)


def _reductions_since_open(executions: list[dict[str, Any]], symbol: str) -> int:
    """Executions that reduced the exchange's position of ``symbol`` since it last opened."""
    qty, reductions = 0.0, 0
    for ex in executions:
        if ex["symbol"] != symbol:
            continue
        delta = float(ex["qty"]) * (1.0 if ex["side"] == "buy" else -1.0)
        new = qty + delta
        if abs(qty) < _EPS or (qty > 0) == (delta > 0):
            pass
        elif abs(new) < _EPS or (qty > 0) != (new > 0):
            reductions = 0  # closed (and perhaps reopened on the other side)
        else:
            reductions += 1
        qty = 0.0 if abs(new) < _EPS else new
    return reductions


def _is_covered(orders: list[dict[str, Any]], symbol: str, qty: float) -> bool:
    """Return whether ``qty`` of ``symbol`` is on its way out at the exchange.

    A stop on the closing side; or, with none, market exits of the trader's own
    working for all of it: a market exit that fills in parts rests with no stop
    beside it (the stop was canceled for it; both would oversell). A limit exit
    waits for its price: it protects nothing.
    """
    side = "sell" if qty > 0 else "buy"
    closing = [o for o in orders if o["symbol"] == symbol and o["side"] == side]
    if any(o["type"] == "stop" for o in closing):
        return True
    working = sum(
        float(o["qty"]) - float(o.get("filled_qty") or 0.0)
        for o in closing
        if o["type"] == "market"
        and str(o.get("client_order_id", "")).startswith("sw-")
        and not _ENTRY.match(str(o["client_order_id"]))
    )
    return working >= abs(qty) - _EPS


def check(
    truth: Truth,
    books: Books,
    ledger: Ledger,
    *,
    max_attempts: int,
    unprotected_alerts: set[str],
) -> Check:
    """Return every invariant violation of ``books`` against ``truth``; update ``ledger``.

    ``unprotected_alerts``: the symbols the current trader raised an
    ``unprotected`` alert for (an open position without a live stop must have one).
    """
    out = Check()
    if books.integrity != "ok":
        out.add("integrity_failures", f"integrity_check: {books.integrity}")
    for symbol in books.undecodable:
        out.add("integrity_failures", f"snapshot of {symbol} cannot be decoded")

    truth_ids = [str(ex["exec_id"]) for ex in truth.executions]
    stored = set(books.exec_ids)
    for ex_id in truth_ids:
        if ex_id not in stored:
            out.add("lost_fills", f"execution {ex_id} is not in the store")
    known = set(truth_ids)
    for ex_id in books.exec_ids:
        if ex_id not in known:
            out.add("duplicate_fills", f"stored execution {ex_id} never happened at the exchange")
    for symbol, state in books.states.items():
        applied = [a for a in state.applied if a]
        if len(applied) != len(set(applied)):
            out.add("duplicate_fills", f"{symbol} applied an execution twice")

    ours = {s: st.qty for s, st in books.states.items() if abs(st.qty) > _EPS}
    for symbol in sorted(set(ours) | set(truth.positions)):
        here, there = ours.get(symbol, 0.0), truth.positions.get(symbol, 0.0)
        if abs(here - there) > _EPS:
            out.add("qty_mismatches", f"{symbol}: trader {here}, exchange {there}")

    for symbol, qty in sorted(ours.items()):
        if not _is_covered(truth.open_orders, symbol, qty) and symbol not in unprotected_alerts:
            out.add("silent_unprotected", f"{symbol}: {qty} open, no stop, no unprotected alert")
        held = books.states[symbol]
        expected = _reductions_since_open(truth.executions, symbol)
        if len(held.partials) != expected:
            out.add(
                "partial_mismatches",
                f"{symbol}: {len(held.partials)} partial exits recorded, "
                f"{expected} reducing executions at the exchange",
            )

    _check_entries(truth, books, ledger, out, max_attempts)

    theirs = realized_by_symbol(truth.executions)
    for symbol in sorted(set(theirs) | set(books.closed_pnl)):
        current = books.states.get(symbol)
        mine = books.closed_pnl.get(symbol, 0.0) + (current.trade_realized if current else 0.0)
        there = theirs.get(symbol, 0.0)
        if abs(mine - there) > 0.01 + 1e-9 * abs(there):
            out.add("pnl_mismatches", f"{symbol}: trader {mine:.4f}, exchange {there:.4f}")
    return out


def _check_entries(
    truth: Truth, books: Books, ledger: Ledger, out: Check, max_attempts: int
) -> None:
    """Entries within the attempt limit, each counted, none while a position is open.

    The trader counts an attempt per (day, pivot, side) when it writes the
    entry's intent, before sending it. So entries stay within the limit when
    (1) every entry the exchange filled has a stored intent, (2) no stored count
    exceeds the limit and (3) no count ever decreases within a day; (4) is the
    behaviour itself: a new entry order while that side is already held.
    """
    for symbol, state in books.states.items():
        today = state.trading_day.isoformat()
        for key, count in state.attempts.items():
            seen = ledger.attempts.get((symbol, key), 0)
            if count < seen:
                out.add("attempt_regressions", f"{symbol} {key}: {seen} -> {count}")
            if count > max_attempts:
                out.add("duplicate_entries", f"{symbol} {key}: {count} > {max_attempts} attempts")
            ledger.attempts[(symbol, key)] = max(seen, count)
        for (sym, key), seen in ledger.attempts.items():
            if sym == symbol and key.startswith(today) and key not in state.attempts and seen:
                out.add("attempt_regressions", f"{symbol} {key}: {seen} -> gone on the same day")

    held: dict[str, float] = defaultdict(float)
    entry_orders: set[str] = set()
    for ex in truth.executions:
        symbol = str(ex["symbol"])
        delta = float(ex["qty"]) * (1.0 if ex["side"] == "buy" else -1.0)
        cid = str(ex.get("client_order_id", ""))
        order = str(ex.get("order_id", cid))
        if _ENTRY.match(cid) and order not in entry_orders:  # an entry order's first fill
            entry_orders.add(order)
            if cid not in books.entry_intents:
                out.add("duplicate_entries", f"{cid} filled without a stored intent")
            if abs(held[symbol]) > _EPS and (held[symbol] > 0) == (delta > 0):
                out.add("duplicate_entries", f"{cid} entered while {held[symbol]} was held")
        held[symbol] += delta
