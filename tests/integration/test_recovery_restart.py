"""A position actor that crashes mid-session recovers its one symbol like a boot does.

The crash comes from a strategy with a bug (a test double: nothing in the real
outside world can crash an actor on purpose); the kernel restarts the actor
from its checkpoint, and the supervisor reconciles that symbol with the broker
before the actor trades again.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from actors.bars import BarRing
from actors.state import PositionState
from actors.strategy import Action, PivotBreakout, Session
from brokers.base import Bar
from runtime.actor import Lifecycle
from runtime.clock import VirtualClock
from tests.integration.recovery_kit import (
    SYMBOL,
    Trader,
    holding,
    open_venue,
    print_bars,
    reports,
    stops,
    until,
    write_profile,
)


async def test_a_restarted_actor_is_reconciled_before_it_trades_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, config = write_profile(tmp_path)
    state = tmp_path / "state"
    await holding(config, state)
    bugs = {"armed": False}
    decide = PivotBreakout.decide

    def buggy(
        self: PivotBreakout, state: PositionState, bars: BarRing, bar: Bar, session: Session
    ) -> list[Action]:
        if bugs["armed"]:
            bugs["armed"] = False
            raise RuntimeError("strategy bug (test double)")
        return decide(self, state, bars, bar, session)

    monkeypatch.setattr(PivotBreakout, "decide", buggy)

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
