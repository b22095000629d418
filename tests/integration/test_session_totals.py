"""The ``sessions`` table: each trading day's realized P&L and trades, as the actors hold them.

Written by the session with its periodic checkpoints and once more after the
final one, from the actors' states (``runtime.status.day_totals``, what
``stalwart status`` shows as the day's numbers), so it agrees with them and
with the closed trades of the day.
"""

from __future__ import annotations

import json
import sqlite3
from datetime import date, timedelta
from pathlib import Path

from actors.state import PositionState
from runtime.clock import VirtualClock
from runtime.status import day_totals
from tests.integration.recovery_kit import (
    Trader,
    break_out,
    closed_trades,
    open_venue,
    stop_out,
    store_path,
    warm_up,
    write_profile,
)
from tests.integration.session_kit import stalwart


def _sessions(state_dir: Path) -> list[tuple[str, float, int]]:
    with sqlite3.connect(store_path(state_dir)) as db:
        rows = db.execute("SELECT trading_day, realized_pnl, trades_today FROM sessions")
        return [(str(d), float(p), int(n)) for d, p, n in rows.fetchall()]


async def test_a_session_records_its_days_realized_pnl_and_trades(tmp_path: Path) -> None:
    _, config = write_profile(tmp_path)
    state = tmp_path / "state"
    clock = VirtualClock()
    venue = await open_venue(config, state, clock)
    await warm_up(venue, clock)

    async with Trader(config, state, venue) as trader:
        await break_out(trader, venue, clock)
        await stop_out(venue, clock, state)
        held = trader.actor_state()
    # After the final checkpoint the row holds the day as the actor ended it.
    (trade,) = closed_trades(state)
    assert held.trades_today == 1
    assert held.realized_pnl_today == trade["realized_pnl"] != 0.0
    assert _sessions(state) == [(held.trading_day.isoformat(), held.realized_pnl_today, 1)]
    # ``stalwart history`` shows the day, as JSON and as a table.
    body = json.loads(stalwart("history", "--state-dir", str(state), "--json").stdout)
    assert body["sessions"] == [
        {
            "trading_day": held.trading_day.isoformat(),
            "realized_pnl": held.realized_pnl_today,
            "trades_today": 1,
        }
    ]
    text = stalwart("history", "--state-dir", str(state)).stdout
    assert "trading days" in text
    assert f"{held.realized_pnl_today:.2f}" in text


def test_day_totals_count_only_the_latest_days_states() -> None:
    day = date(2026, 1, 6)
    states = [
        PositionState(
            account="A", symbol="AAPL", trading_day=day, realized_pnl_today=12.5, trades_today=2
        ),
        PositionState(
            account="A", symbol="MSFT", trading_day=day, realized_pnl_today=-2.5, trades_today=1
        ),
        # Not rolled yet (no event today): yesterday's numbers are not today's.
        PositionState(
            account="A",
            symbol="TSLA",
            trading_day=day - timedelta(days=1),
            realized_pnl_today=100.0,
            trades_today=4,
        ),
    ]

    totals = day_totals(states)

    assert totals is not None
    assert (totals.trading_day, totals.realized_pnl, totals.trades_today) == (day, 10.0, 3)
    assert day_totals([]) is None
