"""Recovery of a stop the venue said filled whose executions never all arrive.

Long under our stop; the venue fills it as 60 + 40 and says the order filled,
but only the 60 reaches us: the stream and the broker's executions both lack
the 40 (a late or lost execution). The trader's expectation: a periodic run
waits for the rest (a bounded time) instead of healing the position under it;
past the wait, or at once on a boot, reconnect or manual run, the position is
the broker's, the stop is settled as filled with an alert that says what is
missing, a flatten is no longer blocked, and the 40, if it ever comes (streamed
or replayed), is booked once and moves nothing.

The venue is ``bench._world.InstantVenue`` taught to report positions and
executions (withholding those a test names); the store is a real file; the
supervisor is the real ``SupervisorActor`` on a virtual wall clock.
"""

from __future__ import annotations

import dataclasses
from datetime import datetime, timedelta

import msgspec
import pytest

from actors.messages import FillAck, FlattenNow, OnExecution, OnOrderUpdate
from actors.orders import intent_row
from actors.position import PositionActor
from actors.report import RecoveryReport
from actors.state import PositionState
from actors.supervisor import _FILL_WAIT_S, SupervisorActor
from bench._world import ACCOUNT, InstantVenue, context
from brokers.base import BrokerError, BrokerPosition, Execution, Order, OrderType, Side
from persistence import PutIntent, SqliteStore
from runtime.alerts import Alert
from runtime.clock import FunctionClock, VirtualClock
from runtime.supervision import Supervisor
from tests.unit.actors._actor_kit import snapshot_row
from tests.unit.actors._filled_stop_kit import (
    ENTRY_PRICE,
    START,
    STOP_ID,
    STOP_PRICE,
    SYMBOL,
    held_under_stop,
)

QUIET = 10.0  # wall seconds between runs: more than the supervisor's order quiet time
HAND_TRADE_ALERTS = frozenset({"zombie", "drift", "orphan"})


class TruthVenue(InstantVenue):
    """An ``InstantVenue`` that reports its positions and the executions of its resting
    orders' fills, less those in ``withheld`` (the broker has not reported them yet)."""

    def __init__(self) -> None:
        super().__init__()
        self.fills: list[Execution] = []
        self.withheld: set[str] = set()

    async def positions(self) -> list[BrokerPosition]:
        held = self.positions_by_symbol.items()
        return [BrokerPosition(s, q, ENTRY_PRICE) for s, q in held if q != 0]

    async def executions(self, since: datetime) -> list[Execution]:
        return [e for e in self.fills if e.ts >= since and e.exec_id not in self.withheld]

    async def fill_resting(self, order_id: str, qty: float, price: float) -> Execution:
        execution = await super().fill_resting(order_id, qty, price)
        self.fills.append(execution)
        return execution


class World:
    """The venue, the store, the wall clock, the alerts and the actor under a supervisor."""

    def __init__(self, store: SqliteStore, venue: TruthVenue, state: PositionState) -> None:
        self.venue = venue
        self.wall = VirtualClock()
        self.alerts: list[Alert] = []
        ctx = dataclasses.replace(context(store, venue), wall=self.wall, alert=self.alerts.append)
        self.actor = actor = PositionActor(SYMBOL, ctx, snapshot_row(state, START))
        self.supervisor = SupervisorActor(
            store=store,
            broker_call=self._truth,
            executions_since=venue.executions,
            actors={SYMBOL: actor},
            spawn_actor=self._spawn,
            clock=FunctionClock(venue.now),
            wall=self.wall,
            alert=self.alerts.append,
            orphan_policy="adopt",
            restore_stops=True,
            confirm_runs=2,
            margin=timedelta(minutes=5),
            account=ACCOUNT,
        )

    async def _truth(self) -> tuple[list[BrokerPosition], list[Order]]:
        return await self.venue.positions(), await self.venue.open_orders()

    async def _spawn(self, symbol: str) -> PositionActor:
        raise AssertionError(f"no orphan expected, {symbol} spawned")

    async def run(self, mode: str) -> RecoveryReport:
        """Let the orders be quiet, then run one recovery of ``mode``."""
        await self.wall.advance(QUIET)
        return await self.supervisor.recover(mode)

    async def heal(self, mode: str) -> RecoveryReport:
        """Run recoveries of ``mode`` until one heals: a periodic one waits for the rest."""
        if mode == "periodic":
            for _ in range(2):  # confirmed on the second, and still waiting
                assert _actions(await self.run(mode)) == ["pending"]
            await self.wall.advance(_FILL_WAIT_S)
        return await self.run(mode)

    def kinds(self, since: int = 0) -> list[str]:
        return [a.kind for a in self.alerts[since:]]


async def _under_live_stop(
    store: SqliteStore,
    sup: Supervisor,
    held: float,
    venue: TruthVenue | None = None,
    world_of: type[World] = World,
) -> World:
    """Hold ``held`` long under our live 100-share stop, here and at the venue (which
    holds ``held`` too), and start the actor. Return the world (a ``world_of``)."""
    state, resting = held_under_stop(held, 100.0)
    intent = state.intent(resting.client_order_id)
    assert intent is not None
    await store.commit([PutIntent(intent_row(SYMBOL, intent))])
    venue = venue or TruthVenue()
    venue.market_time = START
    venue.orders[STOP_ID] = resting
    venue.by_client[resting.client_order_id] = STOP_ID
    venue.positions_by_symbol[SYMBOL] = held
    venue.last[SYMBOL] = STOP_PRICE
    world = world_of(store, venue, state)
    await sup.start(world.actor)
    return world


async def _stopped_with_the_rest_missing(
    store: SqliteStore, sup: Supervisor, held: float, venue: TruthVenue | None = None
) -> tuple[World, Execution]:
    """Hold ``held`` under a 100-share stop that fills 60 + 40 at the venue; the actor hears
    "filled" and the 60. Return the world and the 40, which nobody has reported."""
    world = await _under_live_stop(store, sup, held, venue)
    venue, actor = world.venue, world.actor
    first = await venue.fill_resting(STOP_ID, 60.0, STOP_PRICE)
    rest = await venue.fill_resting(STOP_ID, 40.0, STOP_PRICE - 0.1)
    venue.withheld.add(rest.exec_id)
    await actor.ask(OnOrderUpdate(venue.orders[STOP_ID]))
    ack = await actor.ask(OnExecution(first))
    assert isinstance(ack, FillAck)
    assert ack.applied
    stop = actor.state.stop
    assert stop is not None
    assert (stop.status, stop.qty, actor.state.qty) == ("filled", 40.0, held - 60.0)
    return world, rest


def _actions(report: RecoveryReport) -> list[str]:
    return [a.action for a in report.actions]


async def test_a_periodic_run_waits_for_the_rest_of_a_filled_stops_fill(
    store: SqliteStore,
) -> None:
    """Long 100: the zombie (40 here, flat at the broker) is seen on three quiet periodic
    runs, more than ``confirm_runs``, all within the wait: none heals it. The 40 then
    streams in and closes the trade as the stop's, once."""
    async with Supervisor(name="test") as sup:
        world, rest = await _stopped_with_the_rest_missing(store, sup, 100.0)
        actor = world.actor

        for _ in range(3):
            report = await world.run("periodic")

            assert _actions(report) == ["pending"]
            assert report.zombies == []
            assert actor.state.qty == 40.0, "not healed under the fill still to come"
            stop = actor.state.stop
            assert stop is not None
            assert (stop.status, stop.qty) == ("filled", 40.0)

        ack = await actor.ask(OnExecution(rest))

        assert isinstance(ack, FillAck)
        assert (ack.applied, ack.external) == (True, None)
        assert actor.state.is_flat
        assert actor.state.stop is None
        (trade,) = await store.closed_trades()
        assert (trade.exit_reason, trade.qty) == ("stop", 100.0)
        report = await world.run("periodic")
        assert report.actions == []
        assert report.critical_issues == []
        assert world.kinds() == []


async def test_what_the_broker_holds_unprotected_while_the_rest_is_awaited_is_reported(
    store: SqliteStore,
) -> None:
    """Long 120 under a 100-share stop: after the 60, 20 are left at the broker with no
    stop while the heal waits for the 40. Once the finding is confirmed (second run) each
    waiting run says so, critically; the first, unconfirmed, run does not (a fill racing
    the stream looks the same). After the wait the heal restores a stop on the 20."""
    async with Supervisor(name="test") as sup:
        world, _ = await _stopped_with_the_rest_missing(store, sup, 120.0)

        first = await world.run("periodic")
        waiting = [await world.run("periodic") for _ in range(2)]

        assert _actions(first) == ["pending"]
        assert (first.unprotected, first.critical_issues) == ([], [])
        for report in waiting:
            assert _actions(report) == ["pending"]
            assert report.unprotected == [SYMBOL]
            (issue,) = report.critical_issues
            assert issue.startswith(f"unprotected {SYMBOL}: 20.0 at the broker with no stop")
        assert world.actor.state.qty == 60.0, "still waiting: nothing healed"

        await world.wall.advance(_FILL_WAIT_S)
        healed = await world.run("periodic")

        assert world.actor.state.qty == 20.0
        assert "stop" in _actions(healed)
        stop = world.actor.state.stop
        assert stop is not None
        assert (stop.qty, stop.status) == (20.0, "live")
        assert [o.qty for o in await world.venue.open_orders()] == [20.0]


async def test_a_wait_with_the_broker_flat_reports_nothing_unprotected(
    store: SqliteStore,
) -> None:
    """Long 100, the stop's 40 awaited, flat at the broker: nothing is exposed meanwhile."""
    async with Supervisor(name="test") as sup:
        world, _ = await _stopped_with_the_rest_missing(store, sup, 100.0)

        reports = [await world.run("periodic") for _ in range(3)]

        for report in reports:
            assert _actions(report) == ["pending"]
            assert (report.unprotected, report.critical_issues) == ([], [])


@pytest.mark.parametrize("mode", ["periodic", "boot", "reconnect", "manual"])
async def test_the_heal_takes_the_brokers_qty_and_settles_the_filled_stop_with_an_alert(
    store: SqliteStore, mode: str
) -> None:
    """Long 120 under a 100-share stop (a resize that never got through): 60 here after
    the 60, 20 at the broker. Past the wait (periodic) or at once, the heal books the
    missing 40 as the stop's partial exit at the price the broker's record of the order
    gives (so no drift is left to report), settles the stop as filled and says the 40
    never arrived; a flatten then sends its exit instead of waiting on the stop's fill."""
    async with Supervisor(name="test") as sup:
        world, rest = await _stopped_with_the_rest_missing(store, sup, 120.0)
        actor = world.actor
        cid = world.venue.orders[STOP_ID].client_order_id

        report = await world.heal(mode)

        assert report.drifts == []
        assert actor.state.qty == 20.0
        assert [(f.qty, f.price) for f in actor.state.exits] == [
            (60.0, STOP_PRICE),
            (40.0, pytest.approx(rest.price)),
        ]
        assert actor.state.trade_realized == pytest.approx(
            (STOP_PRICE - ENTRY_PRICE) * 60.0 + (rest.price - ENTRY_PRICE) * 40.0
        )
        stop = actor.state.stop
        assert stop is None or stop.client_order_id != cid, "the filled stop is settled"
        assert actor.state.intent(cid) is None
        assert cid not in {r.client_order_id for r in await store.pending_intents()}
        assert actor.state.absorbed_fills == {cid: 40.0}
        assert "settled" in _actions(report)
        missing = [a for a in world.alerts if a.kind == "missing_fill"]
        assert len(missing) == 1
        assert "40.0 of its 100.0 never arrived" in missing[0].message
        assert missing[0].symbol == SYMBOL
        assert (report.zombies, report.missing_fills) == ([], [SYMBOL])

        await actor.ask(FlattenNow("flatten"))

        exits = [o for o in world.venue.orders.values() if o.type is OrderType.MARKET]
        assert [(o.side, o.qty) for o in exits] == [(Side.SELL, 20.0)]
        assert world.venue.positions_by_symbol[SYMBOL] == 0.0


@pytest.mark.parametrize("path", ["streamed", "replayed"])
@pytest.mark.parametrize(("held", "left"), [(100.0, 0.0), (120.0, 20.0)], ids=["zombie", "drift"])
@pytest.mark.parametrize("mode", ["periodic", "boot"])
async def test_the_missing_execution_arriving_after_the_heal_is_not_counted_twice(
    store: SqliteStore, mode: str, held: float, left: float, path: str
) -> None:
    """After the heal took the broker's quantity, the 40 arrives at last: streamed, or in
    the broker's executions, replayed by the next run. It is stored, once, and the
    position stays the broker's: no short opened, no drift, no orphan."""
    async with Supervisor(name="test") as sup:
        world, rest = await _stopped_with_the_rest_missing(store, sup, held)
        actor = world.actor
        await world.heal(mode)
        assert actor.state.qty == left
        healed = len(world.alerts)
        trades = await store.closed_trades()

        if path == "streamed":
            ack = await actor.ask(OnExecution(rest))
            assert isinstance(ack, FillAck)
            assert (ack.applied, ack.external) == (True, None)
        else:
            world.venue.withheld.clear()
            report = await world.run("periodic")
            assert report.replayed_fills == 1

        assert actor.state.qty == left == world.venue.positions_by_symbol[SYMBOL]
        assert actor.state.absorbed_fills == {}
        assert [e.exec_id for e in await store.executions()].count(rest.exec_id) == 1
        assert await store.closed_trades() == trades
        again = await actor.ask(OnExecution(rest))
        assert isinstance(again, FillAck)
        assert not again.applied
        report = await world.run("periodic")
        assert (report.drifts, report.zombies, report.orphans) == ([], [], [])
        assert report.actions == []
        assert not HAND_TRADE_ALERTS & set(world.kinds(healed))
        assert actor.state.qty == left


@pytest.mark.parametrize("mode", ["periodic", "boot"])
async def test_flat_at_the_broker_after_its_stop_filled_books_the_stops_trade(
    store: SqliteStore, mode: str
) -> None:
    """Long 100, the stop filled 60 + 40 at the venue, the 40 never reported: flat at the
    broker because our stop closed it. The trade is the stop's (not CLOSED_EXTERNALLY, no
    zombie alarm, not listed as a zombie), its missing 40 priced from the broker's record
    of the order: its average fill price over the 100, less the 60 that came."""
    async with Supervisor(name="test") as sup:
        world, rest = await _stopped_with_the_rest_missing(store, sup, 100.0)
        healed = len(world.alerts)

        report = await world.heal(mode)

        assert world.actor.state.is_flat
        (trade,) = await store.closed_trades()
        assert (trade.exit_reason, trade.qty) == ("stop", 100.0)
        exit_price = (60.0 * STOP_PRICE + 40.0 * rest.price) / 100.0
        assert rest.price != STOP_PRICE
        assert trade.exit_price == pytest.approx(exit_price)
        assert trade.realized_pnl == pytest.approx((exit_price - ENTRY_PRICE) * 100.0)
        (settled,) = [a.detail for a in report.actions if a.action == "settled"]
        assert f"booked at {rest.price} (from the broker's average fill price)" in settled
        assert (report.zombies, report.missing_fills) == ([], [SYMBOL])
        kinds = world.kinds(healed)
        assert "zombie" not in kinds
        assert kinds.count("missing_fill") == 1


class _SilentOrder(TruthVenue):
    """A venue whose record of an order lacks its average fill price, or cannot be read."""

    def __init__(self, how: str) -> None:
        super().__init__()
        self.how = how

    async def order_by_client_id(self, client_order_id: str) -> Order | None:
        if self.how == "unreachable":
            raise BrokerError("connection reset")
        order = await super().order_by_client_id(client_order_id)
        if self.how == "no_average" and order is not None:
            return msgspec.structs.replace(order, avg_fill_price=None)
        if self.how == "short_total" and order is not None:
            return msgspec.structs.replace(order, filled_qty=60.0)
        return order


@pytest.mark.parametrize("how", ["unreachable", "no_average", "short_total"])
async def test_where_the_broker_cannot_price_the_missing_fill_it_is_estimated_and_said(
    store: SqliteStore, how: str
) -> None:
    """The broker's order cannot be read, has no average, or its total does not cover
    what came and what is missing: the 40 is priced as the last execution that came
    (the 60 at the stop's price), and the action says it is an estimate."""
    async with Supervisor(name="test") as sup:
        world, _ = await _stopped_with_the_rest_missing(store, sup, 100.0, _SilentOrder(how))

        report = await world.heal("boot")

        assert world.actor.state.is_flat
        (trade,) = await store.closed_trades()
        assert (trade.exit_reason, trade.qty, trade.exit_price) == ("stop", 100.0, STOP_PRICE)
        (settled,) = [a.detail for a in report.actions if a.action == "settled"]
        assert f"booked at {STOP_PRICE} (estimated)" in settled
        assert report.missing_fills == [SYMBOL]


class _FillsDuringTheReplay(World):
    """A world whose stop fills its last part while the boot replay runs: after the first
    (consistent) read of the broker's truth, before the reads that follow the replay."""

    def __init__(self, store: SqliteStore, venue: TruthVenue, state: PositionState) -> None:
        super().__init__(store, venue, state)
        self.reads = 0
        self.late: list[Execution] = []

    async def _truth(self) -> tuple[list[BrokerPosition], list[Order]]:
        self.reads += 1
        if self.reads == 3:  # two reads agreed; the replay ran; this is the re-read
            self.late.append(await self.venue.fill_resting(STOP_ID, 60.0, STOP_PRICE - 0.2))
        return await super()._truth()


@pytest.mark.parametrize("mode", ["boot", "reconnect"])
async def test_a_fill_landing_while_the_replay_runs_is_replayed_not_healed_and_counted_again(
    store: SqliteStore, mode: str
) -> None:
    """Killed long 100 under a 100-share stop; while down the stop filled 40. The run
    replays the 40 (60 left); while it does, the stop fills its last 60 and the broker
    goes flat, that execution still in the stream (routed after the run). The run's
    re-read of the broker (the replay moved the stop) sees it: it is replayed too, so
    the heal finds nothing to override, the trade is the stop's, and the execution,
    streamed afterwards, is a duplicate. Before, the re-read's flat position was healed
    as a zombie (CLOSED_EXTERNALLY at the 40's price) and the streamed 60 then opened
    an orphan short of 60 that the broker never held."""
    async with Supervisor(name="test") as sup:
        world = await _under_live_stop(store, sup, 100.0, world_of=_FillsDuringTheReplay)
        assert isinstance(world, _FillsDuringTheReplay)
        venue, actor = world.venue, world.actor
        first = await venue.fill_resting(STOP_ID, 40.0, STOP_PRICE)

        report = await world.run(mode)

        (late,) = world.late
        assert venue.positions_by_symbol[SYMBOL] == 0.0
        assert actor.state.is_flat
        assert report.replayed_fills == 2
        assert (report.zombies, report.orphans, report.drifts) == ([], [], [])
        (trade,) = await store.closed_trades()
        assert (trade.exit_reason, trade.qty) == ("stop", 100.0)
        assert trade.exit_price == pytest.approx((40.0 * first.price + 60.0 * late.price) / 100)
        stored = [e.exec_id for e in await store.executions()]
        assert (stored.count(first.exec_id), stored.count(late.exec_id)) == (1, 1)

        streamed = await actor.ask(OnExecution(late))

        assert isinstance(streamed, FillAck)
        assert not streamed.applied
        assert actor.state.is_flat
        assert not HAND_TRADE_ALERTS & set(world.kinds())
        assert (await world.run("periodic")).actions == []


class _SoldByHandOnEveryRead(World):
    """A world where 10 more are sold by hand before every other read of the broker's
    truth from the third on: each read after the replay brings one more fill."""

    def __init__(self, store: SqliteStore, venue: TruthVenue, state: PositionState) -> None:
        super().__init__(store, venue, state)
        self.reads = 0
        self.sales = 0
        self.busy = True

    def sell_by_hand(self, qty: float) -> None:
        self.sales += 1
        venue = self.venue
        n = self.sales
        at = venue.market_time + timedelta(seconds=n)
        venue.fills.append(
            Execution(f"H-{n}", f"HO-{n}", f"hand-{n}", SYMBOL, Side.SELL, qty, ENTRY_PRICE, at)
        )
        venue.positions_by_symbol[SYMBOL] -= qty

    async def _truth(self) -> tuple[list[BrokerPosition], list[Order]]:
        self.reads += 1
        if self.busy and self.reads >= 3 and self.reads % 2 == 1:
            self.sell_by_hand(10.0)
        return await super()._truth()


async def test_a_boot_while_fills_keep_landing_heals_on_its_last_read(store: SqliteStore) -> None:
    """Long 100 under a 100-share stop; 30 sold by hand while the trader was down, and
    10 more land on every read after the replay. The run stops reading after a few
    rounds but still heals on its last read, which holds every fill it replayed: the
    stop is resized to what is held. (It used to give up as 'broker unreachable', the
    fills booked but the stop left at 100 on 40: triggered, 60 short.)"""
    async with Supervisor(name="test") as sup:
        world = await _under_live_stop(store, sup, 100.0, world_of=_SoldByHandOnEveryRead)
        assert isinstance(world, _SoldByHandOnEveryRead)
        venue = world.venue
        world.sell_by_hand(30.0)

        report = await world.run("boot")

        assert report.broker_reachable
        held = venue.positions_by_symbol[SYMBOL]
        assert held < 70.0, "fills landed during the run"
        assert world.actor.state.qty == held
        assert [o.qty for o in await venue.open_orders()] == [held]
        world.busy = False
        assert (await world.run("boot")).drifts == []
