"""``stalwart status`` and ``stalwart history``: read the store, never a broker."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import date, datetime
from pathlib import Path
from typing import Any

import msgspec

from actors.bars import BarRing
from actors.snapshot import BarsError, SnapshotError, decode_snapshot
from actors.state import PositionState
from persistence.protocol import SessionRow, Store
from runtime.clock import Clock
from runtime.runstate import read_run_state, session_state

__all__ = ["day_totals", "find_store", "history_dict", "position_view", "status_dict"]


def find_store(state_dir: Path) -> tuple[Path, str] | None:
    """Return (path, account) of the state dir's store, from the run state or the only .db."""
    run = read_run_state(state_dir)
    if run is not None:
        path = (
            state_dir / f"{''.join(c if c.isalnum() or c in '-_' else '_' for c in run.account)}.db"
        )
        if path.exists():
            return path, run.account
    dbs = sorted(p for p in state_dir.glob("*.db"))
    if len(dbs) == 1:
        return dbs[0], dbs[0].stem
    return None


def _iso(ts: datetime | None) -> str | None:
    return ts.isoformat() if ts is not None else None


def _attempts(state: PositionState) -> dict[str, int]:
    day = state.trading_day.isoformat()
    out = {"long": 0, "short": 0}
    for key, count in state.attempts.items():
        kday, _, side = key.split("|")
        if kday == day:
            out["long" if side == "buy" else "short"] += count
    return out


def _position(state: PositionState, bars: int, taken_at: datetime, now: datetime) -> dict[str, Any]:
    return {
        **position_view(state),
        "bars": bars,
        "checkpoint_age_s": round(max(0.0, (now - taken_at).total_seconds()), 3),
    }


def position_view(state: PositionState) -> dict[str, Any]:
    """Return an open position as ``status --json`` (and MQTT's ``positions``) show it."""
    stop = state.stop
    return {
        "symbol": state.symbol,
        "side": "long" if state.qty > 0 else "short",
        "qty": abs(state.qty),
        "avg_entry_price": state.avg_price,
        "origin": state.origin.value,
        "strategy": state.strategy,
        "stop": None
        if stop is None
        else {
            "order_id": stop.order_id or "",
            "client_order_id": stop.client_order_id,
            "price": stop.price,
            "qty": stop.qty,  # open qty; for a stop the venue said filled, what is to come
            "status": stop.status,
        },
        "partials": [
            {"at": p.at.isoformat(), "price": p.price, "qty": p.qty, "reason": p.reason}
            for p in state.partials
        ],
        "attempts": _attempts(state),
    }


async def status_dict(store: Store, state_dir: Path, wall: Clock) -> dict[str, Any]:
    """Build the stable ``status --json`` object."""
    now = wall.now()
    loaded = await store.load_snapshots()
    positions: list[dict[str, Any]] = []
    states: list[PositionState] = []
    unreadable: list[str] = []
    for row in loaded.rows:
        try:
            state, ring = decode_snapshot(
                row.blob, row.schema_version, row.symbol, 1_000_000, row.bars
            )
        except BarsError as exc:  # the state is sound; only its buffer is lost
            state, ring = exc.state, BarRing(row.symbol)
        except SnapshotError:
            unreadable.append(row.symbol)
            continue
        states.append(state)
        if not state.is_flat:
            positions.append(_position(state, len(ring), row.taken_at, now))
    totals = day_totals(states)
    out: dict[str, Any] = {
        "account": store.account_id,
        "as_of": now.isoformat(),
        "state": session_state(state_dir),
        "positions": positions,
        "session": {
            "trading_day": totals.trading_day.isoformat() if totals else None,
            "realized_pnl": round(totals.realized_pnl, 6) if totals else 0.0,
            "trades_today": totals.trades_today if totals else 0,
        },
    }
    if unreadable:
        out["unreadable_snapshots"] = unreadable
    return out


def day_totals(states: Iterable[PositionState]) -> SessionRow | None:
    """Return the latest trading day among ``states`` with its realized P&L and trades.

    Only the states of that day count: one still holding an earlier day has
    traded nothing on this one (it rolls on its first event of the day). None
    when there are no states.
    """
    held = list(states)
    if not held:
        return None
    day = max(s.trading_day for s in held)
    today = [s for s in held if s.trading_day == day]
    return SessionRow(
        trading_day=day,
        realized_pnl=sum(s.realized_pnl_today for s in today),
        trades_today=sum(s.trades_today for s in today),
    )


async def history_dict(store: Store, since: date | None) -> dict[str, Any]:
    trades = await store.closed_trades(since)
    days = await store.sessions(since)
    reports = await store.reports(limit=50)
    return {
        "account": store.account_id,
        "sessions": [msgspec.to_builtins(d) for d in days],
        "closed_trades": [msgspec.to_builtins(t) for t in trades],
        "reconciliation_reports": [
            {"at": _iso(r.at), "mode": r.mode, "report": msgspec.json.decode(r.body)}
            for r in reports
            if since is None or r.at.date() >= since
        ],
    }
