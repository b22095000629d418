"""`stalwart run` as a real process on the embedded sim venue: kill -9, SIGTERM, restart.

The trader and its in-process venue die together; the venue's book file and
the trader's store are what survive, exactly as a broker and a store would.
"""

from __future__ import annotations

import json
import signal
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from brokers.base import OrderType
from brokers.sim import read_book
from brokers.sim.engine import open_orders
from tests.integration.session_kit import Session, stalwart, status, wait_for


def _store_path(state_dir: Path) -> Path:
    return state_dir / "SIM-PAPER.db"


def _executions(state_dir: Path) -> list[tuple[str, str, str, float]]:
    with sqlite3.connect(_store_path(state_dir)) as db:
        rows = db.execute("SELECT exec_id, symbol, side, qty FROM executions").fetchall()
    return [(str(a), str(b), str(c), float(d)) for a, b, c, d in rows]


def _signed_sums(rows: list[tuple[str, str, str, float]]) -> dict[str, float]:
    out: dict[str, float] = {}
    for _, symbol, side, qty in rows:
        out[symbol] = out.get(symbol, 0.0) + (qty if side == "buy" else -qty)
    return {s: q for s, q in out.items() if abs(q) > 1e-9}


def _has_open_position(state_dir: Path) -> bool:
    if not _store_path(state_dir).exists():
        return False
    try:
        body = status(state_dir)
    except AssertionError:
        return False
    return any(p["stop"] and p["stop"]["order_id"] for p in body["positions"])


def _venue(state_dir: Path) -> tuple[dict[str, float], dict[str, list[Any]]]:
    book = read_book(state_dir / "sim-venue.book")
    assert book is not None
    positions = {s: p.qty for s, p in book.positions.items() if p.qty}
    stops: dict[str, list[Any]] = {}
    for order in open_orders(book):
        if order.type is OrderType.STOP:
            stops.setdefault(order.symbol, []).append(order)
    return positions, stops


def test_kill_9_keeps_positions_stops_and_attempts(session_factory: Any, tmp_path: Path) -> None:
    state = tmp_path / "state"
    first: Session = session_factory("--speed", "300", state_dir=state)
    wait_for(lambda: _has_open_position(state), 90, "a position with a live stop")
    first.kill()

    # What survived: the store alone, read without any broker.
    body = status(state)
    assert body["state"] == "stopped"
    held = {p["symbol"]: p for p in body["positions"]}
    assert held, "the kill happened while holding positions"
    signed = {s: (p["qty"] if p["side"] == "long" else -p["qty"]) for s, p in held.items()}
    # Positions are exactly those of the durable fills.
    assert signed == _signed_sums(_executions(state))
    for p in held.values():
        assert p["attempts"]["long"] + p["attempts"]["short"] >= 1
        assert p["bars"] > 0
    venue_positions, venue_stops = _venue(state)
    for symbol, p in held.items():
        if p["stop"] and p["stop"]["order_id"]:
            live = [o for o in venue_stops.get(symbol, []) if o.order_id == p["stop"]["order_id"]]
            assert live, f"{symbol}: the stop in the store is live at the venue"
    attempts_before = {s: p["attempts"] for s, p in held.items()}
    entries_before = len(_executions(state))

    # Restart with the market nearly frozen: recovery only, no new market moves.
    second: Session = session_factory("--speed", "0.001", "--duration", "6", state_dir=state)
    assert second.proc.wait(timeout=60) == 0, second.output()
    second.log.close()

    after = status(state)
    venue_positions, venue_stops = _venue(state)
    held_after = {p["symbol"]: p for p in after["positions"]}
    for symbol, p in held.items():
        qty = p["qty"] if p["side"] == "long" else -p["qty"]
        # Not re-entered: the venue holds exactly what the trader held.
        assert venue_positions.get(symbol) == qty, symbol
        assert held_after[symbol]["qty"] == p["qty"]
        # Stop not lost: exactly one protective stop rests at the venue, for the whole position.
        stops = venue_stops.get(symbol, [])
        assert len(stops) == 1, f"{symbol}: {stops}"
        assert stops[0].qty - stops[0].filled_qty == p["qty"]
        assert held_after[symbol]["stop"]["order_id"] == stops[0].order_id
        # Attempt counts never go down.
        for side in ("long", "short"):
            assert held_after[symbol]["attempts"][side] >= attempts_before[symbol][side]
    # Only executions the venue had and the trader missed were added (no new entries).
    assert len(_executions(state)) >= entries_before
    assert set(_signed_sums(_executions(state))) == set(venue_positions)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["sigterm", "ctrl-c"])
def test_sigterm_final_checkpoint_and_exit_0(
    session_factory: Any, tmp_path: Path, sig: signal.Signals
) -> None:
    state = tmp_path / "state"
    s: Session = session_factory("--speed", "300", state_dir=state)
    wait_for(lambda: _has_open_position(state), 90, "a position with a live stop")
    assert s.terminate(sig=sig) == 0, s.output()
    body = status(state)
    assert body["state"] == "stopped"
    for p in body["positions"]:
        assert p["checkpoint_age_s"] < 10.0, p
    log = s.output()
    assert "final checkpoint" in log
    assert "stragglers" not in log
    with sqlite3.connect(_store_path(state)) as db:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    # A clean stop leaves a backup (VACUUM INTO) that opens and holds the positions.
    assert "(shutdown)" in log
    backup = max((_store_path(state).parent / "backups").glob("*.db"))
    with sqlite3.connect(backup) as db:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        symbols = {str(r[0]) for r in db.execute("SELECT symbol FROM snapshots")}
    assert {p["symbol"] for p in body["positions"]} <= symbols


def test_status_json_shape(session_factory: Any, tmp_path: Path) -> None:
    state = tmp_path / "state"
    s: Session = session_factory("--speed", "300", state_dir=state)
    wait_for(lambda: _has_open_position(state), 90, "a position with a live stop")
    body = status(state)
    assert body["state"] == "running"
    assert set(body) >= {"account", "as_of", "state", "positions", "session"}
    p = body["positions"][0]
    assert set(p) == {
        "symbol",
        "side",
        "qty",
        "avg_entry_price",
        "origin",
        "strategy",
        "stop",
        "partials",
        "attempts",
        "bars",
        "checkpoint_age_s",
    }
    assert set(body["session"]) == {"trading_day", "realized_pnl", "trades_today"}
    assert s.terminate() == 0


def test_malformed_config_exits_2_naming_the_field(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('[broker]\nkind = "nyse-direct"\n')
    result = stalwart("run", "--config", str(bad), "--state-dir", str(tmp_path / "s"), check=False)
    assert result.returncode == 2
    assert f"{bad}: $.broker.kind: invalid enum value 'nyse-direct'" in result.stderr
    assert "expected one of sim, alpaca, ibkr" in result.stderr
    assert not (tmp_path / "s").exists(), "nothing started"

    unknown = tmp_path / "unknown.toml"
    unknown.write_text("[runtime]\ncheckpoint_interval = 5\n")
    result = stalwart("status", "--config", str(unknown), check=False)
    assert result.returncode == 2
    assert "$.runtime: object contains unknown field `checkpoint_interval`" in result.stderr


def test_status_without_store_is_a_state_error(tmp_path: Path) -> None:
    result = stalwart("status", "--state-dir", str(tmp_path / "empty"), "--json", check=False)
    assert result.returncode == 2
    assert "no store" in result.stderr


def test_asyncio_loop_option(tmp_path: Path) -> None:
    result = stalwart(
        "run",
        "--loop",
        "asyncio",
        "--state-dir",
        str(tmp_path / "s"),
        "--duration",
        "1",
        "--no-live",
        check=False,
    )
    assert result.returncode == 0, result.stderr


def _has_partial(state_dir: Path) -> bool:
    if not _store_path(state_dir).exists():
        return False
    try:
        body = status(state_dir)
    except AssertionError:
        return False
    return any(p["partials"] for p in body["positions"])


def test_partial_at_target1_shows_one_partial_and_break_even_stop(
    session_factory: Any, tmp_path: Path
) -> None:
    state = tmp_path / "state"
    s: Session = session_factory("--speed", "300", state_dir=state)
    wait_for(lambda: _has_partial(state), 120, "a position with a partial exit")
    assert s.terminate() == 0
    body = status(state)
    partial = [p for p in body["positions"] if p["partials"]]
    assert partial, "the partial position was still open at shutdown"
    p = partial[0]
    assert p["qty"] == 50.0
    assert len(p["partials"]) == 1
    assert p["partials"][0]["qty"] == 50.0
    assert p["partials"][0]["reason"] == "partial"
    assert p["stop"]["price"] == p["avg_entry_price"], "stop moved to break-even"
    assert p["stop"]["qty"] == 50.0


def test_history_lists_closed_trades_with_mae_mfe_and_reason(
    session_factory: Any, tmp_path: Path
) -> None:
    state = tmp_path / "state"
    s: Session = session_factory("--speed", "600", "--duration", "20", state_dir=state)
    assert s.proc.wait(timeout=90) == 0, s.output()
    s.log.close()
    body = json.loads(stalwart("history", "--state-dir", str(state), "--json").stdout)
    trades = body["closed_trades"]
    assert trades, "a 20 s session at 600x closes trades"
    for t in trades:
        assert t["exit_reason"] in {"target", "stop", "eod", "partial", "manual", "flatten"}
        assert t["mae"] >= 0
        assert t["mfe"] >= 0
        assert t["entry_price"] > 0
        assert t["exit_price"] > 0
    assert {r["mode"] for r in body["reconciliation_reports"]} >= {"boot"}
    # Realized P&L of the closed trades == average-cost P&L recomputed from the executions,
    # for every symbol that ended flat (an open trade's partials are not closed trades yet).
    with sqlite3.connect(_store_path(state)) as db:
        rows = db.execute("SELECT symbol, side, qty, price FROM executions ORDER BY ts, exec_id")
        realized: dict[str, float] = {}
        position: dict[str, tuple[float, float]] = {}
        for symbol, side, qty, price in rows:
            q, avg = position.get(symbol, (0.0, 0.0))
            d = qty if side == "buy" else -qty
            if q == 0 or (q > 0) == (d > 0):
                position[symbol] = (q + d, (abs(q) * avg + qty * price) / abs(q + d))
                continue
            closing = min(abs(q), qty)
            realized[symbol] = realized.get(symbol, 0.0) + (price - avg) * closing * (
                1 if q > 0 else -1
            )
            rest = q + d
            position[symbol] = (rest, avg if abs(rest) > 1e-9 and (rest > 0) == (q > 0) else price)
    flat = [s for s, (q, _) in position.items() if abs(q) < 1e-9]
    assert flat
    for symbol in flat:
        closed = sum(t["realized_pnl"] for t in trades if t["symbol"] == symbol)
        assert closed == pytest.approx(realized.get(symbol, 0.0), abs=1e-6), symbol
