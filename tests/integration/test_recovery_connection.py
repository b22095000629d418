"""Recovery when the connection is the problem: down at boot, dropped mid-session, racing.

The venue refuses connections for a span of *its* monotonic time, a virtual
clock the test advances, so "the broker comes back" happens exactly when the
test says so. Periodic runs are timed by the trader's wall clock, here a
virtual clock too, so each run happens when the test advances it.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from actors.messages import GetState
from actors.state import ExitReason
from brokers.base import Side
from brokers.sim import SimBroker
from persistence.protocol import StoreError
from runtime.actor import Lifecycle
from runtime.alerts import Severity
from runtime.app import App
from runtime.clock import VirtualClock
from runtime.runstate import read_run_state
from tests.integration.recovery_kit import (
    OTHER,
    STOP_HIT,
    SYMBOL,
    FlakyVenue,
    GatedVenue,
    TimerClock,
    Trader,
    break_out,
    closed_trades,
    executions,
    holding,
    open_venue,
    open_venue_as,
    outside,
    position,
    print_bars,
    reports,
    stops,
    stored,
    until,
    warm_up,
    write_profile,
)


def _run_state(state: Path) -> str:
    run = read_run_state(state)
    return run.state if run is not None else "none"


async def test_broker_unreachable_at_boot_degrades_then_reconciles_when_it_returns(
    tmp_path: Path,
) -> None:
    _, config = write_profile(tmp_path)
    state = tmp_path / "state"
    entry = await holding(config, state)
    async with outside(config, state) as venue:
        (fill,) = await venue.set_price(SYMBOL, STOP_HIT)  # the stop fills while we are down
    boots = len(reports(state))

    clock = VirtualClock()
    venue = await open_venue(config, state, clock)
    venue.refuse_connections(30.0)
    async with Trader(config, state, venue) as trader:
        # Degraded: actors restored from the store, suspended, nothing reconciled or sent.
        assert trader.app.degraded
        assert _run_state(state) == "degraded"
        degraded = [a for a in trader.alerts if a.kind == "degraded"]
        assert [a.severity for a in degraded] == [Severity.CRITICAL]
        assert trader.actor_state().qty == 100.0
        assert all(a.lifecycle is Lifecycle.SUSPENDED for a in trader.app.actors.values())
        assert len(reports(state)) == boots, "no recovery without the broker"

        await clock.advance(30.0)  # the broker is back
        await until(lambda: not trader.app.degraded, "reconnect recovery")
        assert all(a.lifecycle is Lifecycle.RUNNING for a in trader.app.actors.values())
        assert await position(venue) == 0.0

    reconnect = reports(state)[-1]
    assert reconnect["mode"] == "reconnect"
    assert reconnect["broker_reachable"]
    assert reconnect["replayed_fills"] == 1
    assert reconnect["zombies"] == []
    (trade,) = closed_trades(state)
    assert (trade["exit_reason"], trade["exit_price"]) == (ExitReason.STOP.value, fill.price)
    assert trade["entry_price"] == entry.price
    assert stored(state).is_flat


async def test_disconnect_mid_session_suspends_reconciles_resumes_and_loses_no_fill(
    tmp_path: Path,
) -> None:
    _, config = write_profile(tmp_path)
    state = tmp_path / "state"
    clock = VirtualClock()
    venue = await open_venue(config, state, clock)
    await warm_up(venue, clock)
    async with Trader(config, state, venue) as trader:
        entry = await break_out(trader, venue, clock)
        venue.refuse_connections(10.0)
        await venue.drop_connection()
        await until(lambda: trader.app.degraded, "the trader to see the disconnect")
        assert all(a.lifecycle is Lifecycle.SUSPENDED for a in trader.app.actors.values())

        # While we are cut off the stop fills; its events are lost with the connection.
        (fill,) = await venue.set_price(SYMBOL, STOP_HIT)
        assert stored(state).qty == 100.0

        await clock.advance(10.0)
        await until(lambda: not trader.app.degraded, "reconnect recovery")
        assert all(a.lifecycle is Lifecycle.RUNNING for a in trader.app.actors.values())
        reconnect = reports(state)[-1]
        assert reconnect["mode"] == "reconnect"
        assert reconnect["replayed_fills"] == 1
        assert reconnect["zombies"] == []
        assert fill.exec_id in executions(state), "the fill the stream lost is stored"
        (trade,) = closed_trades(state)
        assert (trade["exit_reason"], trade["exit_price"]) == ("stop", fill.price)
        assert trade["entry_price"] == entry.price

        # Resumed: the next break of the pivot trades (the second attempt of the day).
        await print_bars(venue, clock, 1)
        await break_out(trader, venue, clock)
        assert await position(venue) == 100.0
        assert len(await stops(venue)) == 1
    alerts = [(a.kind, a.severity) for a in trader.alerts if a.kind == "degraded"]
    assert alerts == [("degraded", Severity.CRITICAL), ("degraded", Severity.INFO)]


async def test_a_racing_fill_is_not_healed_by_a_periodic_run(tmp_path: Path) -> None:
    _, config = write_profile(tmp_path, periodic_s=60.0)
    state = tmp_path / "state"
    wall = TimerClock()
    clock = VirtualClock()
    venue = await open_venue_as(GatedVenue, config, state, clock)
    gate = venue.gate
    await warm_up(venue, clock)
    async with Trader(config, state, venue, wall=wall) as trader:
        await break_out(trader, venue, clock)
        runs = len(reports(state))

        async def periodic() -> dict[str, Any]:
            nonlocal runs
            await until(lambda: wall.asleep[60.0] > 0, "the periodic timer armed")
            await wall.advance(60.0)
            await until(lambda: len(reports(state)) > runs, "a periodic run")
            runs = len(reports(state))
            report: dict[str, Any] = reports(state)[-1]
            assert report["mode"] == "periodic"
            return report

        # A hand sell whose events are still on their way when the periodic run looks.
        gate.clear()
        hand = await venue.hand_trade(SYMBOL, Side.SELL, 40.0)
        first = await periodic()
        assert first["drifts"] == []
        assert first["critical_issues"] == []
        assert [(a["symbol"], a["action"]) for a in first["actions"]] == [(SYMBOL, "pending")]
        assert trader.actor_state().qty == 100.0, "not overridden on one sighting"

        gate.set()  # the stream catches up: the fill applies as a fill
        await until(lambda: hand.exec_id in executions(state), "the streamed fill stored")
        second = await periodic()
        assert second["drifts"] == second["actions"] == second["unprotected"] == []
        await trader.app.actors[SYMBOL].ask(GetState())
        assert trader.actor_state().qty == await position(venue) == 60.0, "counted once"
        assert [o.qty for o in await stops(venue)] == [60.0]

        # A discrepancy that stays (its events held up for good) is healed on the second run.
        gate.clear()
        await venue.hand_trade(SYMBOL, Side.SELL, 10.0)
        third = await periodic()
        assert [a["action"] for a in third["actions"]] == ["pending"]
        assert third["drifts"] == []
        fourth = await periodic()
        assert [(d["local_qty"], d["broker_qty"]) for d in fourth["drifts"]] == [(60.0, 50.0)]
        assert trader.actor_state().qty == 50.0
        assert [o.qty for o in await stops(venue)] == [50.0]
        gate.set()


async def test_a_reconnect_whose_queries_fail_is_retried_until_reconciled(tmp_path: Path) -> None:
    _, config = write_profile(tmp_path)
    state = tmp_path / "state"
    await holding(config, state)
    venue = await open_venue_as(FlakyVenue, config, state, VirtualClock())
    async with Trader(config, state, venue) as trader:
        runs = len(reports(state))
        venue.failures = 2  # the broker takes the connection back but its API still fails
        await venue.drop_connection()
        await until(
            lambda: len(reports(state)) >= runs + 3 and not trader.app.degraded,
            "the reconnect to be reconciled at last",
        )
        assert all(a.lifecycle is Lifecycle.RUNNING for a in trader.app.actors.values())
    after = reports(state)[runs:]
    assert [(r["mode"], r["broker_reachable"]) for r in after] == [
        ("reconnect", False),
        ("reconnect", False),
        ("reconnect", True),
    ]
    assert after[-1]["critical_issues"] == []


async def test_a_boot_whose_recovery_fails_trades_nothing_until_a_retry_reconciles(
    tmp_path: Path,
) -> None:
    """Connected at boot, but the broker's position query fails (or its truth keeps
    changing): the boot run does not reconcile. The trader is degraded, its actors
    suspended, and the router retries (as a reconnect's run, before it routes any event)
    until one reconciles; only then does it trade."""
    _, config = write_profile(tmp_path)
    state = tmp_path / "state"
    await holding(config, state)
    runs = len(reports(state))
    venue = await open_venue_as(FlakyVenue, config, state, VirtualClock())
    venue.failures = 2  # the boot run's query, then the first retry's
    async with Trader(config, state, venue) as trader:
        await until(
            lambda: len(reports(state)) >= runs + 3 and not trader.app.degraded,
            "a retry to reconcile at last",
        )
        assert all(a.lifecycle is Lifecycle.RUNNING for a in trader.app.actors.values())
        kinds = [(a.kind, a.severity) for a in trader.app.alerts]
    after = reports(state)[runs:]
    assert [(r["mode"], r["broker_reachable"]) for r in after] == [
        ("boot", False),
        ("reconnect", False),
        ("reconnect", True),
    ]
    assert ("degraded", Severity.CRITICAL) in kinds
    assert kinds.index(("degraded", Severity.CRITICAL)) < kinds.index(("degraded", Severity.INFO))


async def test_a_recovery_that_fails_on_an_unexpected_error_is_retried_not_fatal(
    tmp_path: Path,
) -> None:
    """The broker's position answer does not parse (an error that is not a BrokerError)
    at boot and again in a periodic run. Each run reports itself as not reconciled,
    with the error; boot degrades and the router's retry reconciles; the periodic task
    lives on and its next run reconciles. (Before, the error crashed the task that ran
    the recovery: the router or the periodic reconciliation was gone for the session.)"""
    _, config = write_profile(tmp_path, periodic_s=60.0)
    state = tmp_path / "state"
    await holding(config, state)
    runs = len(reports(state))
    wall = TimerClock()
    venue = await open_venue_as(FlakyVenue, config, state, VirtualClock())
    venue.garbled = 1
    async with Trader(config, state, venue, wall=wall) as trader:
        await until(lambda: not trader.app.degraded, "the router's retry to reconcile")
        booted = reports(state)[runs:]
        assert [(r["mode"], r["broker_reachable"]) for r in booted] == [
            ("boot", False),
            ("reconnect", True),
        ]
        assert "ValueError" in booted[0]["critical_issues"][0]

        async def periodic() -> dict[str, Any]:
            count = len(reports(state))
            await until(lambda: wall.asleep[60.0] > 0, "the periodic timer armed")
            await wall.advance(60.0)
            await until(lambda: len(reports(state)) > count, "a periodic run")
            report: dict[str, Any] = reports(state)[-1]
            assert report["mode"] == "periodic"
            return report

        venue.garbled = 1
        failed = await periodic()
        assert not failed["broker_reachable"]
        assert "recovery failed: ValueError" in failed["critical_issues"][0]
        again = await periodic()
        assert again["broker_reachable"]
        assert again["critical_issues"] == []
        assert not trader.app.degraded
        assert [o.qty for o in await stops(venue)] == [100.0]
        kinds = [(a.kind, a.severity) for a in trader.app.alerts]
    assert ("task", Severity.CRITICAL) not in kinds, "no task died"


class _KeysOf(SimBroker):
    """The sim venue as a broker whose keys trade account ``number`` (Alpaca names its
    store after a label, ``alpaca-paper``, that every paper account shares)."""

    number = "PA-1"

    @property
    def venue_account(self) -> str | None:
        return self.number


async def test_keys_of_another_account_are_refused_and_the_store_left_alone(
    tmp_path: Path,
) -> None:
    """The first boot binds the store to the account its keys trade. A boot with keys of
    another account under the same label is refused (another account's positions would
    be healed as zombies and its orphans adopted here) and changes nothing; a boot that
    could not connect meets the other account at its reconnect and stays degraded."""
    _, config = write_profile(tmp_path)
    state = tmp_path / "state"
    dry = await open_venue_as(_KeysOf, config, state, VirtualClock())
    dry.number = "PA-9"
    await App(config=config, state_dir=state, broker=dry).reconcile_once(dry_run=True)
    venue = await open_venue_as(_KeysOf, config, state, VirtualClock())
    async with Trader(config, state, venue):  # the dry run bound nothing: PA-1 binds
        pass
    runs = len(reports(state))
    before = stored(state, OTHER)

    other = await open_venue_as(_KeysOf, config, state, VirtualClock())
    other.number = "PA-2"
    with pytest.raises(StoreError, match="belongs to venue account PA-1, but the broker now"):
        async with asyncio.timeout(30):  # refused at boot, or it would trade on
            await App(config=config, state_dir=state, broker=other).run(asyncio.Event())
    assert len(reports(state)) == runs, "no recovery ran"
    assert stored(state, OTHER) == before

    clock = VirtualClock()
    down = await open_venue_as(_KeysOf, config, state, clock)
    down.number = "PA-2"
    down.refuse_connections(5.0)
    async with Trader(config, state, down) as trader:
        await clock.advance(10.0)
        await until(
            lambda: any(a.kind == "store" for a in trader.alerts), "the refusal at the reconnect"
        )
        assert trader.app.degraded
        assert all(a.lifecycle is Lifecycle.SUSPENDED for a in trader.app.actors.values())
        await asyncio.sleep(1.0)  # retries (backoff from 0.02 s) meet the same refusal
        refusals = [a for a in trader.alerts if a.kind == "store"]
        assert [a.severity for a in refusals] == [Severity.CRITICAL], "said once"
    assert len(reports(state)) == runs, "no run on another account's store"
    assert stored(state, OTHER) == before
