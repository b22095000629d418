"""Disk full under a running position actor: suspend, alert, retry, store the fill once.

A real SQLite file whose ``max_page_count`` is pinned to its current size plays
the full disk (filling a real disk is not something a test can do here).
"""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest

from actors.messages import FillAck, GetState, OnExecution
from actors.position import PositionActor, PositionContext
from actors.state import PositionState
from actors.strategy import PivotBreakout, StrategyParams
from brokers.base import Execution, Side
from brokers.sim import SimBroker, SimConfig
from persistence import SqliteStore, open_store
from runtime.actor import Lifecycle
from runtime.alerts import Alert, Severity
from runtime.clock import FunctionClock, RealClock, TradingCalendar
from runtime.supervision import Supervisor


def _lifecycle(actor: PositionActor) -> Lifecycle:
    return actor.lifecycle  # read through a call: mypy must not narrow a changing property


def _stored(path: Path, exec_id: str) -> int:
    with sqlite3.connect(path) as db:
        (count,) = db.execute(
            "SELECT count(*) FROM executions WHERE exec_id = ?", (exec_id,)
        ).fetchone()
    return int(count)


async def _set_max_pages(store: SqliteStore, pages: int | None) -> None:
    # The test plays the disk; the store has no "fill the disk" API.
    writer = store._writer
    if pages is None:
        ((pages,),) = await writer.call(lambda c: c.execute("PRAGMA page_count").fetchall())
    await writer.call(lambda c: c.execute(f"PRAGMA max_page_count = {pages}").fetchall())


@pytest.mark.parametrize("held", [False, True], ids=["app-lets-go", "app-holds"])
async def test_disk_full_suspends_alerts_and_stores_the_fill_once_space_returns(
    tmp_path: Path, held: bool
) -> None:
    """When space returns the actor resumes itself, unless the app holds it.

    ``held``: the app is paused or degraded (``held_back``) while the store heals;
    the actor must then stay suspended (no new orders) until the app lets go,
    although its fill is stored and acknowledged.
    """
    store = await open_store(tmp_path / "SIM-PAPER.db", "SIM-PAPER")
    broker = await SimBroker.open(SimConfig(symbols=["AAPL"], book_path=tmp_path / "venue.book"))
    alerts: list[Alert] = []
    store_alarm = asyncio.Event()

    def alert(a: Alert) -> None:
        alerts.append(a)
        if a.kind == "store" and a.severity is Severity.CRITICAL:
            store_alarm.set()

    ctx = PositionContext(
        account="SIM-PAPER",
        store=store,
        broker=broker,
        strategy=PivotBreakout(StrategyParams()),
        params=StrategyParams(),
        calendar=TradingCalendar(),
        clock=FunctionClock(broker.now),
        wall=RealClock(),
        alert=alert,
        held_back=lambda: held,
    )
    try:
        async with Supervisor() as sup:
            actor = PositionActor("AAPL", ctx)
            await sup.start(actor)
            await _set_max_pages(store, None)  # the disk is full from now on
            fill = Execution(
                exec_id="X-1",
                order_id="O-1",
                client_order_id="manual-1",
                symbol="AAPL",
                side=Side.BUY,
                qty=10,
                price=100.0,
                ts=broker.now(),
            )
            async with asyncio.TaskGroup() as group:
                ack_task = group.create_task(actor.ask(OnExecution(fill)))
                await asyncio.wait_for(store_alarm.wait(), 10)
                # Not acknowledged, not stored, suspended (no new orders), not crashed.
                assert not ack_task.done()
                assert _lifecycle(actor) is Lifecycle.SUSPENDED
                assert _stored(store.path, "X-1") == 0
                assert not store.healthy

                await _set_max_pages(store, 1_073_741_823)  # space returns
                ack = await asyncio.wait_for(ack_task, 10)
            assert isinstance(ack, FillAck)
            assert ack.applied
            healed = [
                a.message for a in alerts if a.kind == "store" and a.severity is Severity.INFO
            ]
            if held:
                assert _lifecycle(actor) is Lifecycle.SUSPENDED
                assert healed == ["store writable again; still held by the app"]
                actor.resume()  # what the app does when it lets go
            else:
                assert healed == ["store writable again; resumed"]
            assert _lifecycle(actor) is Lifecycle.RUNNING
            assert _stored(store.path, "X-1") == 1
            state = await actor.ask(GetState())
            assert isinstance(state, PositionState)
            assert state.qty == 10
            # A second delivery of the same fill is a no-op.
            again = await actor.ask(OnExecution(fill))
            assert isinstance(again, FillAck)
            assert not again.applied
            assert _stored(store.path, "X-1") == 1
            assert sup.restarts(actor) == 0
    finally:
        await broker.close()
        await store.close()
