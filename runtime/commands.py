"""The operator's commands to a running trader, and what it publishes over MQTT.

``run_command`` carries out one decoded ``Command`` (``runtime.mqtt``) on the
app and returns its result (the reply's ``result``), or raises ``CommandError``
having changed nothing:

* ``pause``: the strategy acts on nothing (no entry, no exit; the stops stay at
  the broker) until ``resume``. A pause outlasts a disconnect: the reconnect's
  run does not resume a paused trader.
* ``resume``: the strategy acts again (while degraded, once reconciled).
* ``flatten SYMBOL``: the position is closed now (its stop canceled first, then
  a market exit), as the strategy's end-of-day exit closes it.
* ``reconcile``: a manual hybrid recovery, its report summarized in the reply
  (the whole report goes to ``reports``). The router holds every event while it
  runs, as a reconnect's run does, so the run is not raced by our own stream.
* ``confirm SYMBOL``: as ``stalwart confirm``: the operator vouches for the open
  position a broker without position reports cannot show; it trades again.

``publish_state`` is the bridge's feed: ``status`` and every position whose
state changed, once a ``publish_interval_s``.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from actors.messages import Confirm, FlattenNow
from actors.position import PositionActor
from actors.report import RecoveryReport
from actors.state import IntentKind, PositionState
from brokers.base import Execution
from runtime.mqtt import Command, CommandError, MqttBridge
from runtime.status import position_view

if TYPE_CHECKING:
    from runtime.app import App

__all__ = ["fill_payload", "publish_state", "report_summary", "run_command", "state_payload"]


async def run_command(app: App, cmd: Command) -> object:
    """Carry out ``cmd`` on ``app``; ``CommandError`` when it is refused (nothing changed).

    Nothing is taken before the boot recovery is done: until then the book is the
    checkpoint's, not the broker's.
    """
    if not app.ready:
        raise CommandError("the trader is booting: commands are taken once it has reconciled")
    match cmd.command:
        case "pause":
            app.pause()
            return {"paused": True}
        case "resume":
            app.resume()
            return {"paused": False, "degraded": app.degraded}
        case "flatten":
            actor = _actor(app, cmd)
            _may_flatten(app, actor)
            await actor.ask(FlattenNow(reason="operator"))
            return {"symbol": actor.symbol, "qty": actor.state.qty, "exit_sent": _exiting(actor)}
        case "confirm":
            return await _confirm(app, _actor(app, cmd))
        case "reconcile":
            return report_summary(await app.reconcile_now())
    raise CommandError(f"unknown command {cmd.command!r}")  # decode_command let it through


def _actor(app: App, cmd: Command) -> PositionActor:
    assert cmd.symbol is not None  # decode_command: flatten and confirm carry one
    actor = app.actors.get(cmd.symbol)
    if actor is None:
        raise CommandError(f"no position of {cmd.symbol} here (not traded by this trader)")
    return actor


def _may_flatten(app: App, actor: PositionActor) -> None:
    """Refuse a flatten whose exit would act on a position not known to be the broker's."""
    symbol = actor.symbol
    if actor.state.is_flat:
        raise CommandError(f"{symbol} is flat: nothing to flatten")
    if app.degraded:
        raise CommandError("degraded: no order until the broker is back and reconciled")
    if symbol in app.restarting:
        raise CommandError(f"{symbol} restarted and is being reconciled; try again")
    if actor.unverified:
        # The broker reports no positions: the position may be gone, and an exit
        # would then open one the other way (as a stop would; see ``heal``).
        raise CommandError(f"{symbol}'s position is unverified: confirm it first")


def _exiting(actor: PositionActor) -> bool:
    return any(i.kind is IntentKind.EXIT for i in actor.state.intents)


async def _confirm(app: App, actor: PositionActor) -> dict[str, Any]:
    from runtime.app import Confirmation, write_confirmation

    state = actor.state
    if state.is_flat or state.opened_at is None:
        raise CommandError(f"no open position of {actor.symbol} to confirm")
    confirmation = Confirmation(
        symbol=state.symbol,
        opened_at=state.opened_at,
        qty=state.qty,
        avg_price=state.avg_price,
        confirmed_at=app.wall.now(),
    )
    # Durable first (a restart still trusts it), then the actor trades it again.
    await asyncio.to_thread(write_confirmation, app.state_dir, confirmation)
    await actor.ask(Confirm())
    return {"symbol": state.symbol, "qty": state.qty, "avg_price": state.avg_price}


def report_summary(report: RecoveryReport) -> dict[str, Any]:
    """Return what a reply says of a recovery run (the report itself is on ``reports``)."""
    return {
        "reconciled": report.broker_reachable,
        "critical_issues": report.critical_issues,
        "zombies": report.zombies,
        "orphans": report.orphans,
        "drifts": [d.symbol for d in report.drifts],
        "unprotected": report.unprotected,
        "replayed_fills": report.replayed_fills,
        "actions": len(report.actions),
    }


def state_payload(state: PositionState) -> dict[str, Any]:
    """Return the retained ``positions/SYMBOL`` payload of ``state`` (flat ones too)."""
    view = position_view(state)
    if state.is_flat:
        view.update(side="flat", qty=0.0, avg_entry_price=None, stop=None)
    view.update(
        mode=state.mode.value,
        last_price=state.last_price,
        realized_pnl_today=state.realized_pnl_today,
        trades_today=state.trades_today,
        seq=state.seq,
    )
    return view


def fill_payload(ex: Execution, state: PositionState) -> dict[str, Any]:
    """Return the ``fills`` payload of an execution committed, with the position after it."""
    return {
        "exec_id": ex.exec_id,
        "order_id": ex.order_id,
        "client_order_id": ex.client_order_id,
        "symbol": ex.symbol,
        "side": ex.side.value,
        "qty": ex.qty,
        "price": ex.price,
        "ts": ex.ts.isoformat(),
        "position_qty": state.qty,
    }


async def publish_state(app: App, bridge: MqttBridge) -> None:
    """Publish ``status`` and each changed position, once a ``publish_interval_s``."""
    interval = app.config.mqtt.publish_interval_s
    seen: dict[str, int] = {}
    while True:
        bridge.publish("status", app.status_payload(), retain=True)
        for symbol, actor in list(app.actors.items()):
            state = actor.state
            if seen.get(symbol) != state.seq:
                seen[symbol] = state.seq
                bridge.publish(f"positions/{symbol}", state_payload(state), retain=True)
        await app.wall.sleep(interval)
