"""A corrupt store at boot: moved aside, critical alert, recovery from broker truth alone."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from brokers.sim import read_book
from tests.integration.session_kit import Session, status, wait_for


def _holding(state_dir: Path) -> bool:
    if not (state_dir / "SIM-PAPER.db").exists():
        return False
    try:
        body = status(state_dir)
    except AssertionError:
        return False
    return any(p["stop"] and p["stop"]["order_id"] for p in body["positions"])


def test_corrupt_store_is_moved_aside_and_positions_come_from_the_broker(
    session_factory: Any, tmp_path: Path
) -> None:
    state = tmp_path / "state"
    first: Session = session_factory("--speed", "300", state_dir=state)
    wait_for(lambda: _holding(state), 90, "a position with a live stop")
    assert first.terminate() == 0

    db = state / "SIM-PAPER.db"
    raw = bytearray(db.read_bytes())
    raw[0:100] = b"\xff" * 100  # the header is gone: not a database any more
    db.write_bytes(bytes(raw))

    second: Session = session_factory("--speed", "0.001", "--duration", "4", state_dir=state)
    assert second.proc.wait(timeout=60) == 0, second.output()
    second.log.close()
    log = second.output()

    aside = list(state.glob("SIM-PAPER.db.corrupt-*"))
    assert len(aside) == 1, list(state.iterdir())
    assert "CRITICAL" in log
    assert "ALERT critical store" in log
    book = read_book(state / "sim-venue.book")
    assert book is not None
    venue = {s: p.qty for s, p in book.positions.items() if p.qty}
    assert venue, "the venue still holds positions"
    body = status(state)
    recovered = {p["symbol"]: p for p in body["positions"]}
    assert set(recovered) == set(venue)
    for symbol, p in recovered.items():
        assert (p["qty"] if p["side"] == "long" else -p["qty"]) == venue[symbol]
        assert p["origin"] == "recovered"
        assert p["stop"] is not None, f"{symbol}: the venue's resting stop was attached"
