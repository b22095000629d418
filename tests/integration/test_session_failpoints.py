"""Targeted kills at the worst moments, then a restart: nothing lost, nothing doubled.

Each named failpoint SIGKILLs the trader (and its in-process venue) exactly
where durability matters most. After the restart's recovery, the store and
the venue's book must agree execution for execution and share for share.
"""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from brokers.base import OrderType
from brokers.sim import read_book
from brokers.sim.engine import open_orders
from tests.integration.session_kit import Session, status

FAILPOINTS = [
    ("after_intent_commit", "0.5"),
    ("after_submit_before_ack", "0.5"),
    ("after_fill_before_commit", "0.5"),
    ("mid_checkpoint", "0.02"),
]


def _store_executions(state: Path) -> list[str]:
    with sqlite3.connect(state / "SIM-PAPER.db") as db:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        return [str(r[0]) for r in db.execute("SELECT exec_id FROM executions")]


@pytest.mark.parametrize(("name", "probability"), FAILPOINTS)
def test_kill_at_failpoint_then_recover(
    session_factory: Any, tmp_path: Path, name: str, probability: str
) -> None:
    state = tmp_path / "state"
    armed: Session = session_factory(
        "--speed",
        "600",
        "--duration",
        "60",
        state_dir=state,
        env={
            "STALWART_FAILPOINTS": f"{name}={probability}",
            "STALWART_FAILPOINT_SEED": os.environ.get("FP_SEED", "3"),
        },
    )
    code = armed.proc.wait(timeout=90)
    armed.log.close()
    assert code == -9, f"failpoint {name} never fired:\n{armed.output()[-2000:]}"
    assert f"failpoint {name} fired" in armed.output()

    # Restart unarmed with the market nearly frozen: recovery only.
    again: Session = session_factory("--speed", "0.001", "--duration", "5", state_dir=state)
    assert again.proc.wait(timeout=60) == 0, again.output()[-3000:]
    again.log.close()

    book = read_book(state / "sim-venue.book")
    assert book is not None
    venue_execs = sorted(e.exec_id for e in book.executions)
    stored = _store_executions(state)
    assert len(stored) == len(set(stored)), "no execution stored twice"
    assert sorted(stored) == venue_execs, "every venue execution is in the store exactly once"

    venue_qty = {s: p.qty for s, p in book.positions.items() if p.qty}
    body = status(state)
    held = {
        p["symbol"]: (p["qty"] if p["side"] == "long" else -p["qty"]) for p in body["positions"]
    }
    assert held == venue_qty, "trader quantity == venue quantity for every symbol"
    stops: dict[str, float] = {}
    for order in open_orders(book):
        if order.type is OrderType.STOP:
            stops[order.symbol] = stops.get(order.symbol, 0.0) + order.qty - order.filled_qty
    for symbol, qty in venue_qty.items():
        assert stops.get(symbol) == abs(qty), f"{symbol}: one stop for the whole position"
    for symbol in stops:
        assert symbol in venue_qty, f"{symbol}: no stop left resting for a flat symbol"
