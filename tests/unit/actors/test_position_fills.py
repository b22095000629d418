"""The position actor's fill path on a real SQLite store: one commit per fill, no read first.

The venue is ``bench._world.InstantVenue``, an in-process broker that answers at
once (the benchmarks' stand-in for a remote venue); the store is a real file.
"""

from __future__ import annotations

import asyncio
import dataclasses
import sqlite3
from datetime import timedelta
from pathlib import Path

import msgspec
import pytest

from actors import model
from actors.bars import BarRing
from actors.messages import FillAck, OnBar, OnExecution
from actors.position import PositionActor
from actors.snapshot import decode_snapshot, encode_snapshot
from actors.state import SCHEMA_VERSION, IntentKind, PositionState
from bench._world import ACCOUNT, DAY, CountingAlerts, InstantVenue, context
from brokers.base import Bar, Execution, Side
from persistence import PutExecution, SnapshotRow, SqliteStore, open_store
from runtime.alerts import Alert, Severity
from runtime.clock import TradingCalendar
from runtime.supervision import Supervisor

START = TradingCalendar().open_of(DAY) + timedelta(hours=1)
SYMBOL = "AAPL"


def _entry_in_flight(qty: float) -> PositionState:
    state = PositionState(account=ACCOUNT, symbol=SYMBOL, trading_day=DAY)
    state = model.set_levels(state, DAY, {"resistance": 100.0, "support": 97.0})
    state, _ = model.begin_entry(
        state, day=DAY, pivot=100.0, side=Side.BUY, qty=qty, now=START, max_attempts=2
    )
    return msgspec.structs.replace(state, targets=(101.0, 102.0), planned_stop=99.5)


def _fill(actor: PositionActor, exec_id: str, qty: float) -> Execution:
    return Execution(
        exec_id=exec_id,
        order_id="BO-1",
        client_order_id=actor.state.intents[0].client_order_id,
        symbol=SYMBOL,
        side=Side.BUY,
        qty=qty,
        price=100.0,
        ts=START,
    )


def _loaded(store: SqliteStore, venue: InstantVenue, alerts: CountingAlerts) -> PositionActor:
    """Return an actor whose checkpoint holds a flat state with a 30-share entry out."""
    venue.market_time = START
    state = _entry_in_flight(30.0)
    blob = encode_snapshot(state, BarRing(SYMBOL, 240))
    row = SnapshotRow(SYMBOL, blob, SCHEMA_VERSION, state.seq, START)
    return PositionActor(SYMBOL, context(store, venue, alerts=alerts), row)


async def test_a_fill_that_resizes_the_stop_is_one_commit_written_ahead(
    store: SqliteStore,
) -> None:
    venue, alerts = InstantVenue(), CountingAlerts()
    async with Supervisor(name="test") as sup:
        actor = _loaded(store, venue, alerts)
        await sup.start(actor)
        ack = await actor.ask(OnExecution(_fill(actor, "X-1", 10.0)))
        assert isinstance(ack, FillAck)
        assert ack.applied
        stop = actor.state.stop
        assert stop is not None
        assert stop.status == "live"
        assert stop.qty == 10.0
        before = store.transactions

        ack = await actor.ask(OnExecution(_fill(actor, "X-2", 10.0)))

        assert isinstance(ack, FillAck)
        assert ack.applied
        assert store.transactions == before + 1
        assert stop.order_id is not None
        assert venue.orders[stop.order_id].qty == 20.0
        live = actor.state.stop
        assert live is not None
        assert live.status == "live"
        assert live.qty == 20.0
        # What is on disk is the write-ahead plan: the move, before the broker took it.
        (row,) = (await store.load_snapshots()).rows
        stored, _ = decode_snapshot(row.blob, row.schema_version, SYMBOL, 240)
        assert stored.qty == 20.0
        assert stored.stop is not None
        assert stored.stop.status == "replacing"
        assert stored.stop.qty == 20.0


async def test_an_execution_already_stored_is_not_applied_and_stores_nothing(
    store: SqliteStore,
) -> None:
    venue, alerts = InstantVenue(), CountingAlerts()
    async with Supervisor(name="test") as sup:
        actor = _loaded(store, venue, alerts)
        await sup.start(actor)
        hand_trade = Execution(
            exec_id="H-1",
            order_id="HO-1",
            client_order_id="by-hand",
            symbol=SYMBOL,
            side=Side.BUY,
            qty=5.0,
            price=100.0,
            ts=START,
        )
        await store.commit([PutExecution(hand_trade)])  # as reconciliation stores a hand trade
        before, transactions = actor.state, store.transactions

        ack = await actor.ask(OnExecution(hand_trade))

        assert isinstance(ack, FillAck)
        assert not ack.applied
        assert actor.state == before
        assert actor.state.is_flat
        assert len(actor.state.intents) == 1
        assert store.transactions == transactions + 1  # committed, and rolled back inside
        assert (await store.load_snapshots()).rows == []
        assert alerts.kinds == {}


def _stop_fill(actor: PositionActor, exec_id: str, qty: float, price: float) -> Execution:
    stop = actor.state.stop
    assert stop is not None
    return Execution(
        exec_id=exec_id,
        order_id=stop.order_id or "BS-1",
        client_order_id=stop.client_order_id,
        symbol=SYMBOL,
        side=Side.SELL,
        qty=qty,
        price=price,
        ts=START + timedelta(minutes=5),
    )


async def test_the_closing_fill_its_trade_and_the_day_totals_are_one_transaction(
    store: SqliteStore,
) -> None:
    venue, alerts = InstantVenue(), CountingAlerts()
    async with Supervisor(name="test") as sup:
        actor = _loaded(store, venue, alerts)
        await sup.start(actor)
        await actor.ask(OnExecution(_fill(actor, "X-1", 30.0)))  # entry, stop placed
        before = store.transactions

        ack = await actor.ask(OnExecution(_stop_fill(actor, "S-1", 30.0, 99.0)))

        assert isinstance(ack, FillAck)
        assert ack.applied
        assert store.transactions == before + 1, "execution, trade, snapshot: one commit"
        (trade,) = await store.closed_trades()
        assert trade.exit_reason == "stop"
        assert trade.realized_pnl == pytest.approx(-30.0)
        (row,) = (await store.load_snapshots()).rows
        stored, _ = decode_snapshot(row.blob, row.schema_version, SYMBOL, 240)
        assert stored.is_flat
        assert stored.trades_today == 1
        assert stored.realized_pnl_today == pytest.approx(-30.0)
        assert "S-1" in {ex.exec_id for ex in await store.executions()}


async def test_a_closing_fill_whose_commit_fails_stores_neither_fill_nor_trade(
    tmp_path: Path,
) -> None:
    """The commit dies inside its transaction: nothing of the close is on disk."""
    fail = {"armed": False}

    def before_commit() -> None:
        if fail["armed"]:
            raise sqlite3.OperationalError("database or disk is full (test)")

    store = await open_store(tmp_path / "fills.db", ACCOUNT, before_commit=before_commit)
    venue, alerts = InstantVenue(), CountingAlerts()
    try:
        async with Supervisor(name="test") as sup:
            actor = _loaded(store, venue, alerts)
            await sup.start(actor)
            await actor.ask(OnExecution(_fill(actor, "X-1", 30.0)))
            fail["armed"] = True
            pending = asyncio.ensure_future(
                actor.ask(OnExecution(_stop_fill(actor, "S-1", 30.0, 99.0)))
            )
            await asyncio.sleep(0.3)  # the actor retries with backoff, suspended
            assert not pending.done(), "no acknowledgement before the commit"
            assert await store.closed_trades() == []
            assert "S-1" not in {ex.exec_id for ex in await store.executions()}
            fail["armed"] = False
            ack = await asyncio.wait_for(pending, 10)
            assert isinstance(ack, FillAck)
            assert ack.applied
            assert len(await store.closed_trades()) == 1
    finally:
        await store.close()


async def test_a_stop_an_entry_fill_resizes_takes_its_intent_along_written_ahead(
    store: SqliteStore,
) -> None:
    """The stop's intent is the order as the venue holds it: a resize changes its qty too.

    A stale intent (10 shares for a 20-share stop) read as done after the first 10
    filled: the stop was dropped here while 10 shares of it still rested there.
    """
    venue, alerts = InstantVenue(), CountingAlerts()
    async with Supervisor(name="test") as sup:
        actor = _loaded(store, venue, alerts)
        await sup.start(actor)
        await actor.ask(OnExecution(_fill(actor, "X-1", 10.0)))  # the stop: 10 shares
        stop = actor.state.stop
        assert stop is not None
        before = store.transactions

        await actor.ask(OnExecution(_fill(actor, "X-2", 10.0)))  # resized to 20

        assert store.transactions == before + 1, "the intent goes with the resize's commit"
        intent = actor.state.intent(stop.client_order_id)
        assert intent is not None
        assert intent.qty == 20.0
        rows = {row.client_order_id: row for row in await store.pending_intents()}
        assert rows[stop.client_order_id].qty == 20.0
        assert rows[stop.client_order_id].price == stop.price

        await actor.ask(OnExecution(_stop_fill(actor, "S-1", 10.0, 99.4)))

        assert actor.state.qty == 10.0
        left = actor.state.stop
        assert left is not None, "10 of the 20-share stop still rest at the venue"
        assert left.client_order_id == stop.client_order_id
        tracked = actor.state.intent(stop.client_order_id)
        assert tracked is not None
        assert (tracked.qty, tracked.filled_qty) == (20.0, 10.0)
        assert "unprotected" not in alerts.kinds


def _bar(minutes: int, low: float, high: float) -> Bar:
    """Return the one-minute bar ``minutes`` after START, trading from ``low`` to ``high``."""
    ts = START + timedelta(minutes=minutes)
    return Bar(symbol=SYMBOL, ts=ts, open=high, high=high, low=low, close=low, volume=1e3)


async def test_a_stop_fill_past_zero_leaves_the_short_out_of_the_longs_targets(
    store: SqliteStore,
) -> None:
    """The remainder rests unprotected (alerted), not traded against the long's targets.

    The long's targets (101, 102) read for a short are reached at once (any low
    under 102): a target exit would buy the short back on the next bar.
    """
    venue, alerts = InstantVenue(), CountingAlerts()
    async with Supervisor(name="test") as sup:
        actor = _loaded(store, venue, alerts)
        await sup.start(actor)
        await actor.ask(OnExecution(_fill(actor, "X-1", 30.0)))  # long 30, stop placed

        await actor.ask(OnExecution(_stop_fill(actor, "S-1", 45.0, 99.4)))

        state = actor.state
        assert state.qty == -15.0
        assert (state.targets, state.planned_stop, state.stop) == ((), None, None)
        assert alerts.kinds.get("unprotected") == 1
        submitted = venue.submitted
        venue.last[SYMBOL] = 99.0
        await actor.ask(OnBar(_bar(6, 98.9, 99.2)))
        assert venue.submitted == submitted, "no order on the long's targets"
        assert actor.state.intents == ()


async def test_an_orphan_opened_against_the_entry_in_flight_takes_none_of_its_targets(
    store: SqliteStore,
) -> None:
    """A hand sell while our long entry is in flight opens a short, adopted to be managed:
    the entry's long targets are not its own, so it is not bought back as "target"."""
    venue, alerts = InstantVenue(fill_market_orders=False), CountingAlerts()
    venue.market_time = START
    state = _entry_in_flight(30.0)
    row = SnapshotRow(
        SYMBOL, encode_snapshot(state, BarRing(SYMBOL, 240)), SCHEMA_VERSION, state.seq, START
    )
    ctx = dataclasses.replace(context(store, venue, alerts=alerts), orphan_policy="manage")
    hand_sell = Execution("H-1", "HO-1", "by-hand", SYMBOL, Side.SELL, 50.0, 99.5, START)
    async with Supervisor(name="test") as sup:
        actor = PositionActor(SYMBOL, ctx, row)
        await sup.start(actor)

        ack = await actor.ask(OnExecution(hand_sell))

        assert isinstance(ack, FillAck)
        assert ack.external == "opened"
        assert actor.state.qty == -50.0
        assert (actor.state.targets, actor.state.planned_stop) == ((), None)
        await actor.ask(OnBar(_bar(1, 99.0, 99.6)))
        exits = [i for i in actor.state.intents if i.kind is not IntentKind.ENTRY]
        assert exits == [], "no exit on the long entry's targets"
        assert venue.submitted == 0


@pytest.mark.parametrize("policy", ["flatten", "adopt", "manage"])
async def test_a_position_opened_by_hand_while_running_follows_the_orphan_policy(
    store: SqliteStore, policy: str
) -> None:
    """A hand buy of 30 streams in while the trader runs, flat here: an orphan. Under
    ``flatten`` it is closed at once with a market exit (the boot's heal does the same
    for one found at boot); ``adopt`` watches it and ``manage`` keeps it, sending
    nothing. (``flatten`` used to be ignored here: the 30 sat until end of day.)"""
    venue, alerts = InstantVenue(fill_market_orders=False), CountingAlerts()
    venue.market_time = START
    ctx = dataclasses.replace(context(store, venue, alerts=alerts), orphan_policy=policy)
    hand_buy = Execution("H-1", "HO-1", "by-hand", SYMBOL, Side.BUY, 30.0, 100.0, START)
    async with Supervisor(name="test") as sup:
        actor = PositionActor(SYMBOL, ctx)
        await sup.start(actor)

        ack = await actor.ask(OnExecution(hand_buy))

        assert isinstance(ack, FillAck)
        assert ack.external == "opened"
        assert actor.state.qty == 30.0
        exits = [i for i in actor.state.intents if i.kind is IntentKind.EXIT]
        if policy == "flatten":
            (exit_,) = exits
            assert (exit_.side, exit_.qty, exit_.reason) == (Side.SELL, 30.0, "flatten")
            assert venue.submitted == 1
        else:
            assert exits == []
            assert venue.submitted == 0
        assert "orphan" in alerts.kinds


async def test_a_hand_buy_adding_to_our_long_is_a_drift_alert_not_silent(
    store: SqliteStore,
) -> None:
    """Long 30 from our entry (its stop placed); a hand buy of 50 streams in: the stop
    grows to cover the 80 held, and a drift alert names the fill and both quantities
    (it used to be absorbed without a word, the strategy trading the hand's shares)."""
    venue = InstantVenue()
    venue.market_time = START
    said: list[Alert] = []
    state = _entry_in_flight(30.0)
    row = SnapshotRow(
        SYMBOL, encode_snapshot(state, BarRing(SYMBOL, 240)), SCHEMA_VERSION, state.seq, START
    )
    ctx = dataclasses.replace(context(store, venue), alert=said.append)
    async with Supervisor(name="test") as sup:
        actor = PositionActor(SYMBOL, ctx, row)
        await sup.start(actor)
        await actor.ask(OnExecution(_fill(actor, "X-1", 30.0)))
        assert actor.state.stop is not None
        before = len(said)

        hand = Execution("H-1", "HO-1", "by-hand", SYMBOL, Side.BUY, 50.0, 100.5, START)
        ack = await actor.ask(OnExecution(hand))

        assert isinstance(ack, FillAck)
        assert ack.external == "added"
        assert actor.state.qty == 80.0
        assert actor.state.stop is not None
        assert actor.state.stop.qty == 80.0
        (drift,) = said[before:]
        assert (drift.kind, drift.severity) == ("drift", Severity.WARNING)
        assert "H-1" in drift.message
        assert "30.0 -> 80.0" in drift.message


async def test_a_hand_order_filling_in_parts_under_flatten_is_flattened_whole(
    store: SqliteStore,
) -> None:
    """A hand buy fills 30, then 30 more while the flatten's exit of the first 30 is
    out: when that exit fills, the 30 it left get an exit of their own (a review found
    the second 30 left open, with no stop)."""
    venue = InstantVenue(fill_market_orders=False)
    venue.market_time = START
    ctx = dataclasses.replace(context(store, venue), orphan_policy="flatten")
    async with Supervisor(name="test") as sup:
        actor = PositionActor(SYMBOL, ctx)
        await sup.start(actor)
        for n, price in ((1, 100.0), (2, 100.1)):
            hand = Execution(f"H-{n}", "HO-1", "by-hand", SYMBOL, Side.BUY, 30.0, price, START)
            await actor.ask(OnExecution(hand))
        (first,) = [i for i in actor.state.intents if i.kind is IntentKind.EXIT]
        assert (actor.state.qty, first.qty) == (60.0, 30.0)

        sold = Execution(
            "X-1", "XO-1", first.client_order_id, SYMBOL, Side.SELL, 30.0, 100.2, START
        )
        await actor.ask(OnExecution(sold))

        (second,) = [i for i in actor.state.intents if i.kind is IntentKind.EXIT]
        assert second.client_order_id != first.client_order_id
        assert (actor.state.qty, second.qty, second.side) == (30.0, 30.0, Side.SELL)
        assert venue.submitted == 2
