"""What boot recovery finds after the broker moved while the trader was down.

Each test trades a first session on the sim venue (an entry with its stop),
stops the trader, changes the venue's book by hand as a human in the broker's
app would (close, trade, cancel), and starts a new trader on the same files.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import msgspec
import pytest

from actors.findings import own_prefix
from actors.state import ExitReason, Mode, Origin
from brokers.base import (
    BrokerError,
    BrokerUnavailable,
    DuplicateClientOrderId,
    Order,
    OrderRejected,
    OrderRequest,
    OrderStatus,
    OrderType,
    Side,
)
from brokers.sim import SimBroker, read_book
from runtime.alerts import Severity
from runtime.app import App
from runtime.clock import VirtualClock
from runtime.config import Config
from tests.integration.recovery_kit import (
    ABOVE,
    OTHER,
    STOP_HIT,
    SYMBOL,
    GatedVenue,
    Trader,
    closed_trades,
    crash_in,
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


async def _dry_run(config: Config, state: Path) -> dict[str, Any]:
    """Run ``stalwart reconcile --dry-run`` in process; return its report as plain data."""
    venue = await open_venue(config, state, VirtualClock())
    report = await App(config=config, state_dir=state, broker=venue).reconcile_once(dry_run=True)
    found: dict[str, Any] = msgspec.to_builtins(report)
    return found


def _findings(report: dict[str, Any]) -> tuple[Any, ...]:
    drifts = [(d["symbol"], d["local_qty"], d["broker_qty"]) for d in report["drifts"]]
    return (report["zombies"], report["orphans"], drifts, report["replayed_fills"])


async def test_zombie_closed_by_hand_while_down_is_closed_externally(tmp_path: Path) -> None:
    _, config = write_profile(tmp_path)
    state = tmp_path / "state"
    entry = await holding(config, state)
    async with outside(config, state) as venue:
        close = await venue.hand_close(SYMBOL)  # resting orders stay, as in most broker apps
    assert close is not None

    venue = await open_venue(config, state, VirtualClock())
    async with Trader(config, state, venue) as trader:
        leftover = await venue.open_orders()
        assert await position(venue) == 0.0

    (trade,) = closed_trades(state)
    assert trade["exit_reason"] == ExitReason.CLOSED_EXTERNALLY.value
    assert trade["exit_price"] == close.price, "the last known execution"
    assert trade["realized_pnl"] == pytest.approx((close.price - entry.price) * 100.0)
    assert stored(state).is_flat
    assert leftover == [], "our stop, left resting at the venue, is canceled"
    assert [a.symbol for a in trader.alerts if a.kind == "zombie"] == [SYMBOL]
    boot = reports(state)[-1]
    assert boot["zombies"] == [SYMBOL]
    assert boot["replayed_fills"] == 0, "a hand trade is not one of our fills"
    assert close.exec_id in executions(state), "every execution of the account is stored"


@pytest.mark.parametrize("policy", ["adopt", "manage", "flatten"])
async def test_orphan_traded_by_hand_while_down_is_adopted_by_policy(
    tmp_path: Path, policy: str
) -> None:
    _, config = write_profile(tmp_path, orphan_policy=policy)
    state = tmp_path / "state"
    await holding(config, state)
    async with outside(config, state) as venue:
        hand = await venue.hand_trade(OTHER, Side.BUY, 30.0)

    venue = await open_venue(config, state, VirtualClock())
    async with Trader(config, state, venue) as trader:
        if policy == "flatten":
            await until(lambda: stored(state, OTHER).is_flat, "the orphan flattened")
        held = await position(venue, OTHER)
        orders = [o for o in await venue.open_orders() if o.symbol == OTHER]
    after = stored(state, OTHER)

    boot = reports(state)[-1]
    assert boot["orphans"] == [OTHER]
    assert f"orphan {OTHER}" in boot["critical_issues"]
    orphan_alerts = [a for a in trader.alerts if a.kind == "orphan"]
    assert [(a.symbol, a.severity) for a in orphan_alerts] == [(OTHER, Severity.CRITICAL)]
    assert hand.exec_id in executions(state)
    assert orders == [], "no stop is invented for a position we know nothing about"
    if policy == "flatten":
        assert held == 0.0
        (trade,) = [t for t in closed_trades(state) if t["symbol"] == OTHER]
        assert trade["exit_reason"] == ExitReason.FLATTEN.value
        assert trade["qty"] == 30.0
        assert any(a["action"] == "flatten" for a in boot["actions"])
    else:
        assert held == after.qty == 30.0
        assert after.avg_price == hand.price
        assert after.origin is Origin.RECOVERED
        assert after.mode is (Mode.WATCH if policy == "adopt" else Mode.MANAGED)
        assert boot["unprotected"] == [OTHER]
    assert stored(state).qty == 100.0, "the other position is untouched"


async def test_drift_from_a_partial_hand_sell_lets_the_broker_quantity_win(
    tmp_path: Path,
) -> None:
    _, config = write_profile(tmp_path)
    state = tmp_path / "state"
    entry = await holding(config, state)
    async with outside(config, state) as venue:
        await venue.hand_trade(SYMBOL, Side.SELL, 40.0)

    venue = await open_venue(config, state, VirtualClock())
    async with Trader(config, state, venue) as trader:
        resting = await stops(venue)
    after = stored(state)

    boot = reports(state)[-1]
    assert boot["drifts"] == [
        {
            "symbol": SYMBOL,
            "local_qty": 100.0,
            "broker_qty": 60.0,
            "local_avg": entry.price,
            "broker_avg": entry.price,
        }
    ]
    assert after.qty == 60.0
    assert after.avg_price == entry.price
    assert [a.symbol for a in trader.alerts if a.kind == "drift"] == [SYMBOL]
    assert [o.qty for o in resting] == [60.0], "the stop covers what is held"
    assert after.stop is not None
    assert after.stop.qty == 60.0


async def test_unprotected_stop_is_restored_once_not_twice_across_two_restarts(
    tmp_path: Path,
) -> None:
    profile, config = write_profile(tmp_path)
    state = tmp_path / "state"
    await holding(config, state)
    async with outside(config, state) as venue:
        (stop,) = await stops(venue)
        await venue.hand_cancel(stop.order_id)
    stop_price = stop.stop_price

    # First restart: restores the stop, then dies by SIGKILL before anything else.
    await crash_in("boot", state, profile)
    first = reports(state)[-1]
    assert first["unprotected"] == [SYMBOL]
    assert any(a["action"] == "stop" and "restored" in a["detail"] for a in first["actions"])
    assert first["critical_issues"] == [], "restored: nothing left for the operator"

    venue = await open_venue(config, state, VirtualClock())
    async with Trader(config, state, venue) as trader:
        resting = await stops(venue)
    second = reports(state)[-1]

    assert second["unprotected"] == []
    assert second["actions"] == []
    assert not [a for a in trader.alerts if a.kind == "unprotected"]
    assert len(resting) == 1
    assert resting[0].stop_price == stop_price
    assert resting[0].qty == 100.0
    book = read_book(state / "sim-venue.book")
    assert book is not None
    placed = [o for o in book.orders.values() if o.symbol == SYMBOL and o.type.value == "stop"]
    assert len(placed) == 2, "the original stop and one restore"
    after = stored(state)
    assert after.stop is not None
    assert after.stop.order_id == resting[0].order_id


class _StopsRefused(SimBroker):
    """The sim venue refusing stop orders with ``refusal`` (a hand sell limit holding the
    shares: Alpaca's 403 'insufficient qty available'), failing to take them, or (for
    ``DuplicateClientOrderId``) knowing the id as an order canceled long ago."""

    refusal: type[BrokerError] | None = None
    _dead: dict[str, Order] = {}

    async def submit(self, request: OrderRequest) -> Order:
        if self.refusal is not None and request.type is OrderType.STOP:
            if self.refusal is DuplicateClientOrderId:
                self._dead = {
                    request.client_order_id: Order(
                        "old-1",
                        request.client_order_id,
                        request.symbol,
                        request.side,
                        request.qty,
                        OrderType.STOP,
                        OrderStatus.CANCELED,
                        stop_price=request.stop_price,
                    )
                }
            raise self.refusal(
                "insufficient qty available for order (requested: 100, available: 0)"
            )
        return await super().submit(request)

    async def order_by_client_id(self, client_order_id: str) -> Order | None:
        dead = self._dead.get(client_order_id)
        return dead if dead is not None else await super().order_by_client_id(client_order_id)


@pytest.mark.parametrize("refusal", [OrderRejected, BrokerUnavailable, DuplicateClientOrderId])
async def test_a_stop_restore_the_broker_does_not_take_is_reported_unprotected_not_restored(
    tmp_path: Path, refusal: type[BrokerError]
) -> None:
    """The stop was canceled by hand while the trader was down, and the broker refuses
    (or the network loses) the restore: the position has no stop, so the report says
    unprotected as a critical issue with a CRITICAL alert, not 'stop restored'. Once
    the broker takes stops again, the next boot restores it."""
    _, config = write_profile(tmp_path)
    state = tmp_path / "state"
    await holding(config, state)
    async with outside(config, state) as venue:
        (stop,) = await stops(venue)
        await venue.hand_cancel(stop.order_id)

    refusing = await open_venue_as(_StopsRefused, config, state, VirtualClock())
    refusing.refusal = refusal
    async with Trader(config, state, refusing) as trader:
        resting = await stops(refusing)
    report = reports(state)[-1]

    assert resting == []
    assert report["unprotected"] == [SYMBOL]
    assert f"unprotected {SYMBOL}" in report["critical_issues"]
    details = [a["detail"] for a in report["actions"] if a["action"] == "stop"]
    assert len(details) == 1
    assert "restore failed" in details[0]
    assert not any("restored" in d for d in details)
    assert [a.severity for a in trader.alerts if a.kind == "unprotected"] == [Severity.CRITICAL]

    venue = await open_venue(config, state, VirtualClock())
    async with Trader(config, state, venue):
        (restored,) = await stops(venue)
    again = reports(state)[-1]
    assert restored.qty == 100.0
    assert restored.stop_price == stop.stop_price
    assert again["critical_issues"] == []
    assert any("stop restored" in a["detail"] for a in again["actions"])


async def test_hand_sell_then_our_stop_while_down_are_booked_in_the_order_they_happened(
    tmp_path: Path,
) -> None:
    """Found by ``stalwart chaos``: a partial hand sell, then our (too large) stop fills.

    The stop still covers 100 after the hand sold 40, so the venue ends short 40.
    Replaying only our stop's fill would book the trade at the stop price for all
    100 and adopt the short as an orphan; the exchange's P&L says otherwise.
    """
    _, config = write_profile(tmp_path)
    state = tmp_path / "state"
    entry = await holding(config, state)
    async with outside(config, state) as venue:
        hand = await venue.hand_trade(SYMBOL, Side.SELL, 40.0)
        (stop_fill,) = await venue.set_price(SYMBOL, STOP_HIT)
    dry = await _dry_run(config, state)

    venue = await open_venue(config, state, VirtualClock())
    async with Trader(config, state, venue):
        held = await position(venue)
    after = stored(state)
    (trade,) = closed_trades(state)

    assert held == -40.0
    assert after.qty == -40.0, "the stop's overfill opened the short, as at the venue"
    assert after.avg_price == stop_fill.price
    expected = (hand.price - entry.price) * 40.0 + (stop_fill.price - entry.price) * 60.0
    assert trade["realized_pnl"] == pytest.approx(expected)
    assert trade["qty"] == 100.0
    boot = reports(state)[-1]
    assert boot["replayed_fills"] == 1, "our stop; the hand sell is not ours"
    assert {hand.exec_id, stop_fill.exec_id} <= set(executions(state))
    assert not boot["orphans"], "the short came from our own stop, in order"
    assert _findings(dry) == _findings(boot), "the dry run said what the boot did"


async def test_a_hand_buy_on_a_held_position_is_a_drift_not_absorbed(tmp_path: Path) -> None:
    """Found in review: only hand trades against the held side are replayed as fills."""
    _, config = write_profile(tmp_path)
    state = tmp_path / "state"
    await holding(config, state)
    async with outside(config, state) as venue:
        added = await venue.hand_trade(SYMBOL, Side.BUY, 40.0)

    venue = await open_venue(config, state, VirtualClock())
    async with Trader(config, state, venue) as trader:
        held = await position(venue)
        resting = await stops(venue)
    boot = reports(state)[-1]

    assert held == 140.0
    assert stored(state).qty == 140.0
    assert [(d["local_qty"], d["broker_qty"]) for d in boot["drifts"]] == [(100.0, 140.0)]
    assert boot["replayed_fills"] == 0
    assert [a.symbol for a in trader.alerts if a.kind == "drift"] == [SYMBOL]
    assert [o.qty for o in resting] == [140.0], "the stop covers the whole position"
    assert added.exec_id in executions(state), "stored once, with the heal"


async def test_a_hand_sell_through_zero_closes_ours_and_adopts_the_rest_as_an_orphan(
    tmp_path: Path,
) -> None:
    """Found in review: the short a hand trade opened is nobody's strategy position."""
    _, config = write_profile(tmp_path)
    state = tmp_path / "state"
    entry = await holding(config, state)
    async with outside(config, state) as venue:
        flip = await venue.hand_trade(SYMBOL, Side.SELL, 150.0)
    dry = await _dry_run(config, state)

    venue = await open_venue(config, state, VirtualClock())
    async with Trader(config, state, venue) as trader:
        held = await position(venue)
    after = stored(state)
    (trade,) = closed_trades(state)
    boot = reports(state)[-1]

    assert held == after.qty == -50.0
    assert after.origin is Origin.RECOVERED
    assert after.mode is Mode.WATCH, "policy adopt: tracked, no automated orders"
    assert trade["exit_reason"] == ExitReason.CLOSED_EXTERNALLY.value
    assert trade["realized_pnl"] == pytest.approx((flip.price - entry.price) * 100.0)
    assert boot["orphans"] == [SYMBOL]
    assert [a.symbol for a in trader.alerts if a.kind == "orphan"] == [SYMBOL]
    assert flip.exec_id in executions(state)
    assert _findings(dry) == _findings(boot)


async def test_a_hand_close_cancels_an_exit_of_ours_left_resting(tmp_path: Path) -> None:
    """Flat on both sides after the replayed hand close: our resting sell would open a short."""
    _, config = write_profile(tmp_path)
    state = tmp_path / "state"
    await holding(config, state)
    account = stored(state).account
    exit_id = f"{own_prefix(account, SYMBOL)}260105-1-partial1"
    async with outside(config, state) as venue:
        resting = await venue.submit(
            OrderRequest(exit_id, SYMBOL, Side.SELL, 50.0, OrderType.LIMIT, limit_price=150.0)
        )
        close = await venue.hand_close(SYMBOL)
    assert close is not None

    venue = await open_venue(config, state, VirtualClock())
    async with Trader(config, state, venue):
        left = await venue.open_orders()
    boot = reports(state)[-1]

    assert left == [], "our stop and our exit are both canceled"
    assert stored(state).is_flat
    assert boot["zombies"] == [SYMBOL]
    actions = [a["detail"] for a in boot["actions"] if a["symbol"] == SYMBOL]
    assert f"canceled leftover {resting.client_order_id}" in actions


async def test_a_missed_entry_then_a_hand_close_leaves_nothing_at_the_venue(
    tmp_path: Path,
) -> None:
    """Found by ``stalwart chaos --kills 1000`` (seed 1000, round 72).

    The trader never saw its entry's fill; while it was down a human closed the
    position and the price fell through the stop the entry had planned. The boot
    replay books the entry and the hand close in order, and only then acts: it
    must not place the entry's stop for history (it would fill at once and open
    a short nobody wants).
    """
    _, config = write_profile(tmp_path)
    state = tmp_path / "state"
    clock = VirtualClock()
    venue = await open_venue_as(GatedVenue, config, state, clock)
    await warm_up(venue, clock)
    async with Trader(config, state, venue) as trader:
        venue.gate.clear()  # the entry's fill stays on its way
        await venue.set_price(SYMBOL, ABOVE)
        await print_bars(venue, clock, 1)

        async def filled() -> bool:
            return await position(venue) > 0

        await until(filled, "the entry filled at the venue")
        planned = trader.actor_state().planned_stop
        assert trader.actor_state().is_flat, "the trader has not seen its fill"
    assert planned is not None
    async with outside(config, state) as outside_venue:
        close = await outside_venue.hand_close(SYMBOL)
        await outside_venue.set_price(SYMBOL, planned - 1.0)
    assert close is not None

    again = await open_venue(config, state, VirtualClock())
    async with Trader(config, state, again):
        held = await position(again)
        left = await again.open_orders()
        fills = await again.executions(again.now() - timedelta(days=1))
    boot = reports(state)[-1]
    (trade,) = closed_trades(state)

    assert held == 0.0, "no stop was placed for the replayed entry"
    assert left == []
    assert [e.exec_id for e in fills if e.symbol == SYMBOL][-1] == close.exec_id
    assert stored(state).is_flat
    assert trade["exit_reason"] == ExitReason.CLOSED_EXTERNALLY.value
    assert boot["replayed_fills"] == 1
    assert boot["zombies"] == [SYMBOL]
    assert not boot["orphans"]


@pytest.mark.parametrize("policy", ["adopt", "flatten"])
async def test_a_hand_flip_while_down_leaves_no_stop_that_would_add_to_it(
    tmp_path: Path, policy: str
) -> None:
    """Long 100 under our sell stop; while the trader is down, 150 are sold by hand: the
    broker is short 50 with that sell stop still resting. Boot replays the flip: the
    stop, on the side now held, would add to the short when it triggers, so it is
    canceled; the short is an orphan (reported unprotected), and under ``flatten`` it
    is bought back. (A review found the stop left resting and, under ``flatten``, the
    short kept.)"""
    _, config = write_profile(tmp_path, orphan_policy=policy)
    state = tmp_path / "state"
    await holding(config, state)
    async with outside(config, state) as venue:
        await venue.hand_trade(SYMBOL, Side.SELL, 150.0)
        assert [o.side for o in await stops(venue)] == [Side.SELL]

    venue = await open_venue(config, state, VirtualClock())
    async with Trader(config, state, venue) as trader:
        resting = await venue.open_orders()
        held = await position(venue)
        after = trader.actor_state()
    boot = reports(state)[-1]

    assert not [o for o in resting if o.type is OrderType.STOP and o.side is Side.SELL]
    assert boot["orphans"] == [SYMBOL]
    assert after.stop is None or after.stop.side is Side.BUY
    if policy == "flatten":
        assert any(a["action"] == "flatten" for a in boot["actions"])
        exits = [o for o in resting if o.side is Side.BUY and o.type is OrderType.MARKET]
        assert exits or held == 0.0, "bought back, or on its way"
    else:
        assert held == -50.0
        assert SYMBOL in boot["unprotected"]
