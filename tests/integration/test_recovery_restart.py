"""A position actor that crashes mid-session recovers its one symbol like a boot does.

The crash comes from a strategy with a bug (a test double: nothing in the real
outside world can crash an actor on purpose); the kernel restarts the actor
from its checkpoint, and the supervisor reconciles that symbol with the broker
before the actor trades again.
"""

from __future__ import annotations

import asyncio
import functools
from pathlib import Path

import pytest

from actors.bars import BarRing
from actors.position import PositionActor
from actors.state import PositionState
from actors.strategy import Action, PivotBreakout, Quiet, Session
from brokers.base import Bar, BrokerPosition, Execution, Order, Side
from brokers.sim import SimBroker
from runtime.actor import Lifecycle
from runtime.clock import VirtualClock
from tests.integration.recovery_kit import (
    SYMBOL,
    Trader,
    holding,
    open_venue,
    open_venue_as,
    print_bars,
    reports,
    stops,
    until,
    write_profile,
)


def _crash_once_when_armed(monkeypatch: pytest.MonkeyPatch) -> dict[str, bool]:
    """Give the reference strategy a bug: its next decision after ``armed`` is set raises
    (once). Return the switch."""
    bugs = {"armed": False}
    decide = PivotBreakout.decide

    def buggy(
        self: PivotBreakout, state: PositionState, bars: BarRing, bar: Bar, session: Session
    ) -> list[Action]:
        if bugs["armed"]:
            bugs["armed"] = False
            raise RuntimeError("strategy bug (test double)")
        return decide(self, state, bars, bar, session)

    quiet = PivotBreakout.quiet

    def not_while_armed(
        self: PivotBreakout, state: PositionState, session: Session, ts: float
    ) -> Quiet | None:
        # A bar it would call quiet skips decide: armed, every bar reaches it.
        return None if bugs["armed"] else quiet(self, state, session, ts)

    monkeypatch.setattr(PivotBreakout, "decide", buggy)
    monkeypatch.setattr(PivotBreakout, "quiet", not_while_armed)
    return bugs


async def test_a_restarted_actor_is_reconciled_before_it_trades_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, config = write_profile(tmp_path)
    state = tmp_path / "state"
    await holding(config, state)
    bugs = _crash_once_when_armed(monkeypatch)

    clock = VirtualClock()
    venue = await open_venue(config, state, clock)
    async with Trader(config, state, venue) as trader:
        actor = trader.app.actors[SYMBOL]
        # While it runs, the stop is canceled by hand: the actor sees it and alerts.
        (stop,) = await stops(venue)
        await venue.hand_cancel(stop.order_id)
        await until(lambda: actor.state.stop is None, "the canceled stop seen")
        runs = len(reports(state))

        bugs["armed"] = True
        await print_bars(venue, clock, 1)
        await until(lambda: trader.app.sup.restarts(actor) == 1, "the actor restarted")
        await until(lambda: len(reports(state)) > runs, "the restart's reconciliation")
        await until(lambda: actor.lifecycle is Lifecycle.RUNNING, "the actor resumed")
        restored = await stops(venue)

    restart = reports(state)[-1]
    assert restart["mode"] == "restart"
    assert restart["unprotected"] == [SYMBOL], "healed at once, as at boot"
    assert [a["symbol"] for a in restart["actions"]] == [SYMBOL]
    assert len(restored) == 1
    assert restored[0].stop_price == stop.stop_price
    assert restored[0].qty == 100.0


def _stop_qty(actor: PositionActor) -> float | None:
    stop = actor.state.stop
    return None if stop is None else stop.qty


class _SellsByHandDuringTheRead(SimBroker):
    """The sim venue where, once ``armed``, a hand sale of 50 lands right after the
    second open-orders read: after the restart's (consistent) read of the broker's truth,
    before its heal. Its execution streams to the trader at once."""

    armed = False
    reads = 0
    sold: Execution | None = None

    async def open_orders(self) -> list[Order]:
        orders = await super().open_orders()
        if self.armed:
            self.reads += 1
            if self.reads == 2:
                self.armed = False
                self.sold = await self.hand_trade(SYMBOL, Side.SELL, 50.0)
        return orders


async def test_a_fill_streaming_in_while_a_restarted_actor_is_reconciled_is_not_healed_over(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Long 100 under our stop; the actor crashes and its symbol is reconciled. Right
    after that run read the broker (100), 50 are sold by hand and the execution streams
    in. Routed to the actor before the heal, it would make the heal see 50 here against
    the broker's (stale) 100: a drift, "healed" by overriding to 100 with the stop resized
    to 100 on the 50 the broker holds (triggered, it would sell 50 short). The router
    holds events while the restart's run reconciles, so the sale is booked after it: 50
    held here and at the broker, the stop resized to 50."""
    _, config = write_profile(tmp_path)
    state = tmp_path / "state"
    await holding(config, state)
    bugs = _crash_once_when_armed(monkeypatch)

    clock = VirtualClock()
    venue = await open_venue_as(_SellsByHandDuringTheRead, config, state, clock)
    async with Trader(config, state, venue) as trader:
        actor = trader.app.actors[SYMBOL]
        runs = len(reports(state))
        venue.armed = bugs["armed"] = True
        await print_bars(venue, clock, 1)
        await until(lambda: trader.app.sup.restarts(actor) == 1, "the actor restarted")
        await until(lambda: len(reports(state)) > runs, "the restart's reconciliation")
        await until(lambda: actor.lifecycle is Lifecycle.RUNNING, "the actor resumed")
        sold = venue.sold
        assert sold is not None, "the hand sale landed during the restart's run"
        await until(lambda: sold.exec_id in actor.state.applied, "the hand sale booked")
        await until(lambda: _stop_qty(actor) == 50.0, "the stop resized to the 50 held")
        (position,) = await venue.positions()
        resting = await stops(venue)

    assert (position.qty, actor.state.qty) == (50.0, 50.0)
    assert [o.qty for o in resting] == [50.0]
    restart = reports(state)[-1]
    assert restart["mode"] == "restart"
    assert restart["drifts"] == []


class _ReadHeld(SimBroker):
    """The sim venue whose position query waits on ``gate`` once ``held`` is set (the
    restart's run, held half done while the test pauses or resumes the trader)."""

    held = False

    @functools.cached_property
    def gate(self) -> asyncio.Event:
        return asyncio.Event()

    async def positions(self) -> list[BrokerPosition]:
        if self.held:
            await self.gate.wait()
        return await super().positions()


async def test_an_operators_pause_and_resume_leave_a_restarting_actor_to_its_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The actor crashes and restarts; while its symbol's run is held half done, the
    operator pauses and resumes: the actor stays suspended until its run reconciled
    it. Paused during a second restart's run, it stays suspended after that run too,
    until ``resume``."""
    _, config = write_profile(tmp_path)
    state = tmp_path / "state"
    await holding(config, state)
    bugs = _crash_once_when_armed(monkeypatch)
    clock = VirtualClock()
    venue = await open_venue_as(_ReadHeld, config, state, clock)
    async with Trader(config, state, venue) as trader:
        app, actor = trader.app, trader.app.actors[SYMBOL]

        async def crash_and_hold(restart: int) -> int:
            runs = len(reports(state))
            venue.gate.clear()
            venue.held = bugs["armed"] = True
            await print_bars(venue, clock, 1)
            await until(lambda: app.sup.restarts(actor) == restart, "the actor restarted")
            await until(lambda: SYMBOL in app.restarting, "its restart run begun")
            return runs

        async def release(runs: int) -> None:
            venue.held = False
            venue.gate.set()
            await until(lambda: len(reports(state)) > runs, "the restart's run")
            await until(lambda: SYMBOL not in app.restarting, "its run done")

        runs = await crash_and_hold(1)
        app.pause()
        app.resume()  # the operator's resume, while the run is held
        assert actor.lifecycle is Lifecycle.SUSPENDED, "not before its run"
        await release(runs)
        await until(lambda: actor.lifecycle is Lifecycle.RUNNING, "resumed by its run")

        runs = await crash_and_hold(2)
        app.pause()
        await release(runs)
        assert actor.lifecycle is Lifecycle.SUSPENDED, "a pause outlasts the run"
        app.resume()
        await until(lambda: actor.lifecycle is Lifecycle.RUNNING, "resumed by the operator")
