"""``stalwart status``: the stop as the state holds it, with its status."""

from __future__ import annotations

from datetime import UTC, date, datetime
from pathlib import Path

from actors.snapshot import encode_state
from actors.state import SCHEMA_VERSION, PositionState, StopOrder
from brokers.base import Side
from persistence import PutSnapshot, SnapshotRow, open_store
from runtime.clock import FunctionClock
from runtime.status import status_dict
from runtime.view import _stop_cell

NOW = datetime(2026, 1, 6, 15, 0, tzinfo=UTC)


async def test_status_shows_a_stop_the_venue_said_filled_as_filled(tmp_path: Path) -> None:
    stop = StopOrder(
        client_order_id="C-STOP",
        side=Side.SELL,
        price=95.0,
        qty=40.0,
        order_id="O-1",
        status="filled",
        filled_qty=60.0,
    )
    state = PositionState(
        account="A",
        symbol="AAPL",
        trading_day=date(2026, 1, 6),
        qty=40.0,
        avg_price=100.0,
        stop=stop,
    )
    store = await open_store(tmp_path / "A.db", "A")
    try:
        row = SnapshotRow("AAPL", encode_state(state), SCHEMA_VERSION, 1, NOW)
        await store.commit([PutSnapshot(row)])
        body = await status_dict(store, tmp_path, FunctionClock(lambda: NOW))
    finally:
        await store.close()

    (held,) = body["positions"]
    assert held["stop"] == {
        "order_id": "O-1",
        "client_order_id": "C-STOP",
        "price": 95.0,
        "qty": 40.0,
        "status": "filled",
    }
    assert _stop_cell(held["stop"]) == "95.00 x 40 (filled)"
    assert _stop_cell({**held["stop"], "status": "live"}) == "95.00 x 40"
    assert _stop_cell(None) == "NONE"
