"""Store checks at boot, through the real CLI: undecodable snapshot, wrong account."""

from __future__ import annotations

import contextlib
import sqlite3
from pathlib import Path
from typing import Any

from brokers.sim import read_book
from tests.integration.session_kit import Session, stalwart, status, wait_for


def _holding(state: Path) -> bool:
    if not (state / "SIM-PAPER.db").exists():
        return False
    try:
        return len(status(state)["positions"]) >= 2
    except AssertionError:
        return False


def test_undecodable_snapshot_is_quarantined_and_the_others_load(
    session_factory: Any, tmp_path: Path
) -> None:
    state = tmp_path / "state"
    first: Session = session_factory("--speed", "300", state_dir=state)
    wait_for(lambda: _holding(state), 90, "two open positions")
    assert first.terminate() == 0
    before = {p["symbol"]: p for p in status(state)["positions"]}
    victim, *others = sorted(before)
    with sqlite3.connect(state / "SIM-PAPER.db") as db:
        db.execute("UPDATE snapshots SET blob = ? WHERE symbol = ?", (b"\x93garbage", victim))

    second: Session = session_factory("--speed", "0.001", "--duration", "4", state_dir=state)
    assert second.proc.wait(timeout=60) == 0, second.output()[-3000:]
    second.log.close()
    log = second.output()
    assert f"ALERT critical store {victim}" in log
    with sqlite3.connect(state / "SIM-PAPER.db") as db:
        quarantined = [r[0] for r in db.execute("SELECT symbol FROM quarantined_snapshots")]
    assert quarantined == [victim]
    after = {p["symbol"]: p for p in status(state)["positions"]}
    for symbol in others:
        # Untouched symbols keep their metadata (attempts, stop, origin).
        assert after[symbol]["attempts"] == before[symbol]["attempts"]
        assert after[symbol]["origin"] == "strategy"
    book = read_book(state / "sim-venue.book")
    assert book is not None
    # The quarantined symbol's quantity comes back from the broker.
    qty = after[victim]["qty"] if after[victim]["side"] == "long" else -after[victim]["qty"]
    assert qty == book.positions[victim].qty


def test_store_of_another_account_is_refused_unless_forced(tmp_path: Path) -> None:
    state = tmp_path / "state"
    stalwart("run", "--state-dir", str(state), "--duration", "1", "--no-live")
    db = state / "SIM-PAPER.db"
    with contextlib.closing(sqlite3.connect(db)) as conn, conn:
        tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        meta = next(t for t in tables if "meta" in t)
        columns = [r[1] for r in conn.execute(f"PRAGMA table_info({meta})")]
        if "account_id" in columns:
            conn.execute(f"UPDATE {meta} SET account_id = 'LIVE-123'")
        else:
            conn.execute(f"UPDATE {meta} SET value = 'LIVE-123' WHERE key = 'account_id'")
    with contextlib.closing(sqlite3.connect(db)) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # our edit into the main file
    checksum = db.read_bytes()
    refused = stalwart(
        "run", "--state-dir", str(state), "--duration", "1", "--no-live", check=False
    )
    assert refused.returncode == 2
    assert "LIVE-123" in refused.stderr
    assert "SIM-PAPER" in refused.stderr
    assert db.read_bytes() == checksum, "a refused store is not touched"
    forced = stalwart(
        "run",
        "--state-dir",
        str(state),
        "--duration",
        "1",
        "--no-live",
        "--force-account",
        check=False,
    )
    assert forced.returncode == 0, forced.stderr
