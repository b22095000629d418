"""The MQTT bridge against a real mosquitto on loopback, heard by a real aiomqtt client.

The trader is ``App.run`` on the in-process sim venue (``recovery_kit.Trader``), or a
``stalwart run`` process where a SIGKILL is the point.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import msgspec
import pytest

from brokers.base import Side
from runtime.actor import Lifecycle
from runtime.alerts import Severity
from runtime.app import App, read_confirmations
from runtime.clock import VirtualClock
from runtime.commands import run_command
from runtime.config import Config, MqttConfig
from runtime.mqtt import Command, CommandError
from tests.integration.mqtt_kit import Heard, free_port, listening, mosquitto, send_command
from tests.integration.recovery_kit import (
    OTHER,
    SYMBOL,
    BlindVenue,
    Trader,
    holding,
    open_venue,
    open_venue_as,
    outside,
    position,
    print_bars,
    reports,
    stops,
    until,
    warm_up,
    write_profile,
)

_REPO = Path(__file__).resolve().parents[2]
_RUN = [sys.executable, "-m", "runtime.cli", "run"]


def _with_mqtt(config: Config, port: int) -> Config:
    fast = MqttConfig(
        enabled=True,
        port=port,
        publish_interval_s=0.05,
        reconnect_min_s=0.05,
        reconnect_max_s=0.2,
        keepalive_s=5,
    )
    return msgspec.structs.replace(config, mqtt=fast)


def _latest(heard: list[Heard], topic: str) -> Any:
    bodies = [h.body for h in heard if h.topic == topic]
    return bodies[-1] if bodies else None


def _alerts(heard: list[Heard], base: str) -> list[dict[str, Any]]:
    return [a for h in heard if h.topic == f"{base}/alerts" for a in h.body]


async def test_status_positions_fills_alerts_and_reports_are_published(tmp_path: Path) -> None:
    """Boot restores a stop canceled by hand while the trader was down, then a hand
    sale streams in while it runs: the broker hears the retained status and position
    (the stop resized), the boot report, the fill with the position after it, and the
    alerts in batches; after a clean stop the retained status is offline."""
    _, config = write_profile(tmp_path)
    state = tmp_path / "state"
    await holding(config, state)
    async with outside(config, state) as venue:
        (stop,) = await stops(venue)
        await venue.hand_cancel(stop.order_id)

    with mosquitto(tmp_path / "mqtt") as port:
        venue = await open_venue(config, state, VirtualClock())
        base = f"stalwart/{venue.account_id}"
        async with (
            listening(port, "stalwart/#") as (heard, _client),
            Trader(_with_mqtt(config, port), state, venue) as trader,
        ):
            held = await heard.wait_for(
                "the position with its stop",
                lambda h: (p := _latest(h, f"{base}/positions/{SYMBOL}")) and p["stop"] and p,
            )
            assert (held["side"], held["qty"], held["stop"]["qty"]) == ("long", 100.0, 100.0)
            status = await heard.wait_for("the status", lambda h: _latest(h, f"{base}/status"))
            assert (status["state"], status["open_positions"]) == ("running", 1)
            (boot,) = await heard.wait_for(
                "the boot report", lambda h: [r for r in heard.on(f"{base}/reports")]
            )
            assert (boot["mode"], boot["unprotected"]) == ("boot", [SYMBOL])
            assert boot == reports(state)[-1]

            hand = await venue.hand_trade(SYMBOL, Side.SELL, 40.0)
            (fill,) = await heard.wait_for(
                "the hand sale's fill",
                lambda h: [f for f in heard.on(f"{base}/fills") if f["exec_id"] == hand.exec_id],
            )
            assert (fill["side"], fill["qty"], fill["position_qty"]) == ("sell", 40.0, 60.0)
            await heard.wait_for(
                "the position after it",
                lambda h: (
                    (p := _latest(h, f"{base}/positions/{SYMBOL}"))
                    and p["qty"] == 60.0
                    and p["stop"]["qty"] == 60.0
                ),
            )
            kinds = await heard.wait_for(
                "the alerts",
                lambda h: (
                    {"unprotected", "drift"} <= {a["kind"] for a in _alerts(h, base)}
                    and [a["kind"] for a in _alerts(h, base)]
                ),
            )
            assert kinds == [a.kind for a in trader.app.alerts][: len(kinds)], "in order"
        async with listening(port, f"{base}/status") as (after, _client):
            last = await after.wait_for("the retained status", lambda h: h and h[-1])
    assert last.retain
    assert last.body == {"state": "offline"}


async def test_commands_are_carried_out_and_bad_ones_change_nothing(tmp_path: Path) -> None:
    _, config = write_profile(tmp_path)
    state = tmp_path / "state"
    await holding(config, state)
    with mosquitto(tmp_path / "mqtt") as port:
        clock = VirtualClock()
        venue = await open_venue(config, state, clock)
        base = f"stalwart/{venue.account_id}"
        async with (
            listening(port, f"{base}/#") as (heard, client),
            Trader(_with_mqtt(config, port), state, venue) as trader,
        ):
            app = trader.app
            assert app.bridge is not None
            await app.bridge.wait_connected()

            async def say(payload: bytes | dict[str, Any]) -> Any:
                return await send_command(client, heard, base, payload)

            # Refused: each gets an error reply naming what is wrong; nothing changes.
            bad = await say(b"{not json")
            assert (bad["id"], bad["ok"]) == (None, False)
            assert "malformed" in bad["error"]
            unknown = await say({"id": "u1", "command": "sell_everything"})
            assert (unknown["id"], unknown["ok"]) == ("u1", False)
            assert "unknown command" in unknown["error"]
            assert (
                "takes no symbol"
                in (await say({"id": "p0", "command": "pause", "symbol": SYMBOL}))["error"]
            )
            assert "needs a ticker" in (await say({"id": "f0", "command": "flatten"}))["error"]
            assert (
                "is flat"
                in (await say({"id": "f1", "command": "flatten", "symbol": OTHER}))["error"]
            )
            assert (
                "no position of ZZZ"
                in (await say({"id": "f2", "command": "flatten", "symbol": "ZZZ"}))["error"]
            )
            assert (
                "unknown field" in (await say({"id": "x", "command": "pause", "qty": 1}))["error"]
            )
            assert not app.paused
            assert all(a.lifecycle is Lifecycle.RUNNING for a in app.actors.values())
            assert await position(venue) == 100.0

            paused = await say({"id": "p1", "command": "pause"})
            assert paused == {
                "id": "p1",
                "ok": True,
                "command": "pause",
                "result": {"paused": True},
            }
            assert all(a.lifecycle is Lifecycle.SUSPENDED for a in app.actors.values())
            await heard.wait_for(
                "status paused",
                lambda h: (_latest(h, f"{base}/status") or {}).get("state") == "paused",
            )
            resumed = await say({"id": "r1", "command": "resume"})
            assert resumed["ok"]
            assert all(a.lifecycle is Lifecycle.RUNNING for a in app.actors.values())

            runs = len(reports(state))
            reconciled = await say({"id": "c1", "command": "reconcile"})
            assert reconciled["ok"]
            assert reconciled["result"]["reconciled"] is True
            assert reconciled["result"]["critical_issues"] == []
            assert [r["mode"] for r in reports(state)[runs:]] == ["manual"]

            flat = await say({"id": "x1", "command": "flatten", "symbol": SYMBOL})
            assert flat["ok"]
            assert flat["result"]["exit_sent"] is True
            assert await stops(venue) == [], "the stop canceled before the exit"
            await print_bars(venue, clock, 1)
            await until(lambda: app.actors[SYMBOL].state.is_flat, "the exit to fill")
            assert await position(venue) == 0.0
            again = await say({"id": "x2", "command": "flatten", "symbol": SYMBOL})
            assert "is flat" in again["error"]
            assert [r["id"] for r in heard.on(f"{base}/replies")][-1] == "x2"


async def test_trading_does_not_wait_for_an_mqtt_broker_that_is_not_there(tmp_path: Path) -> None:
    """MQTT enabled, its broker down at boot: the trader boots and trades as ever, and
    once the broker is up the bridge connects and sends what waited (the boot report)."""
    _, config = write_profile(tmp_path)
    state = tmp_path / "state"
    await holding(config, state)
    port = free_port()
    venue = await open_venue(config, state, VirtualClock())
    base = f"stalwart/{venue.account_id}"
    async with Trader(_with_mqtt(config, port), state, venue) as trader:
        assert reports(state)[-1]["mode"] == "boot"
        hand = await venue.hand_trade(SYMBOL, Side.SELL, 10.0)
        await until(lambda: trader.actor_state().qty == 90.0, "the fill, with MQTT down")
        bridge = trader.app.bridge
        assert bridge is not None
        assert bridge.connects == 0
        with mosquitto(tmp_path / "mqtt", port):
            async with listening(port, f"{base}/#") as (heard, _client):
                await bridge.wait_connected()
                await heard.wait_for(
                    "the position", lambda h: _latest(h, f"{base}/positions/{SYMBOL}")
                )
                await trader.app.reconcile_now()  # a report published while connected
                await heard.wait_for("a report", lambda h: heard.on(f"{base}/reports"))
        fills = [f["exec_id"] for f in heard.on(f"{base}/fills")]
    assert fills == [hand.exec_id], "the fill that waited for the broker"


async def test_a_killed_trader_is_shown_offline_by_its_last_will(tmp_path: Path) -> None:
    profile, config = write_profile(tmp_path)
    state = tmp_path / "state"
    await holding(config, state)
    with mosquitto(tmp_path / "mqtt") as port:
        with profile.open("a") as out:
            out.write(f"\n[mqtt]\nenabled = true\nport = {port}\nkeepalive_s = 5\n")
        venue = await open_venue(config, state, VirtualClock())
        base = f"stalwart/{venue.account_id}"
        await venue.close()
        log = (tmp_path / "trader.log").open("wb")
        proc = await asyncio.to_thread(
            subprocess.Popen,
            [*_RUN, "--config", str(profile), "--state-dir", str(state), "--no-live"],
            cwd=_REPO,
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONPATH": str(_REPO)},
        )
        try:
            async with listening(port, f"{base}/status") as (heard, _client):
                await heard.wait_for(
                    "the trader running", lambda h: h and h[-1].body.get("state") == "running"
                )
                os.kill(proc.pid, signal.SIGKILL)
                await asyncio.to_thread(proc.wait, 10)
                last = await heard.wait_for(
                    "the last will", lambda h: h[-1].body == {"state": "offline"} and h[-1]
                )
            assert proc.returncode == -signal.SIGKILL
        finally:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await asyncio.to_thread(proc.wait)
            log.close()
    assert last.topic == f"{base}/status"


async def test_a_pause_outlasts_a_disconnect_and_its_reconciliation(tmp_path: Path) -> None:
    """Paused by the operator, then the broker drops and comes back: the reconnect's
    run reconciles but does not resume a paused trader; only ``resume`` does."""
    _, config = write_profile(tmp_path)
    state = tmp_path / "state"
    await holding(config, state)
    clock = VirtualClock()
    venue = await open_venue(config, state, clock)
    async with Trader(config, state, venue) as trader:
        app = trader.app
        app.pause()
        assert all(a.lifecycle is Lifecycle.SUSPENDED for a in app.actors.values())
        runs = len(reports(state))
        venue.refuse_connections(10.0)
        await venue.drop_connection()
        await until(lambda: app.degraded, "the trader to see the disconnect")
        await clock.advance(10.0)
        await until(lambda: not app.degraded, "reconnect recovery")
        assert [r["mode"] for r in reports(state)[runs:]][-1] == "reconnect"
        assert app.paused
        assert all(a.lifecycle is Lifecycle.SUSPENDED for a in app.actors.values())
        app.resume()
        assert all(a.lifecycle is Lifecycle.RUNNING for a in app.actors.values())
    kinds = [(a.kind, a.severity) for a in trader.alerts if a.kind == "paused"]
    assert kinds == [("paused", Severity.WARNING), ("paused", Severity.INFO)]


async def test_retained_repeated_and_garbled_commands_are_refused(tmp_path: Path) -> None:
    """A retained command (it would run again at every connect), an id taken twice (a
    QoS 1 redelivery), JSON nested past what the decoder takes: each is refused with
    a reply and the bridge goes on taking commands."""
    _, config = write_profile(tmp_path)
    state = tmp_path / "state"
    await holding(config, state)
    with mosquitto(tmp_path / "mqtt") as port:
        venue = await open_venue(config, state, VirtualClock())
        base = f"stalwart/{venue.account_id}"
        async with listening(port, f"{base}/#") as (heard, client):
            # Left retained by some client before the trader connects: delivered
            # (flagged retained) at its subscription, as at every later connect.
            await client.publish(
                f"{base}/cmd", b'{"id": "kept", "command": "pause"}', qos=1, retain=True
            )
            async with Trader(_with_mqtt(config, port), state, venue) as trader:
                app = trader.app
                kept = await heard.wait_for(
                    "the retained command's reply",
                    lambda h: [r for r in heard.on(f"{base}/replies") if r.get("id") == "kept"],
                )
                assert kept == [
                    {"id": "kept", "ok": False, "error": "retained commands are refused"}
                ]
                assert not app.paused

                deep = b'{"id": "d", "x": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
                garbled = await send_command(client, heard, base, deep)
                assert garbled["ok"] is False
                assert "malformed command" in garbled["error"]
                assert garbled["id"] is None, "its id is not read out of it either"

                first = await send_command(client, heard, base, {"id": "p9", "command": "pause"})
                assert first["ok"]
                again = await send_command(client, heard, base, {"id": "p9", "command": "resume"})
                assert "was taken already" in again["error"]
                assert app.paused, "the second p9 did not run"
                resumed = await send_command(client, heard, base, {"id": "r9", "command": "resume"})
                assert resumed["ok"]
                assert not app.paused


async def test_a_broker_restart_gets_the_retained_state_again(tmp_path: Path) -> None:
    """mosquitto restarts (no persistence: its retained messages are gone): the bridge
    connects again and sends the status and every position again, and a reply made
    while it was away is delivered."""
    _, config = write_profile(tmp_path)
    state = tmp_path / "state"
    await holding(config, state)
    port = free_port()
    venue = await open_venue(config, state, VirtualClock())
    base = f"stalwart/{venue.account_id}"
    with mosquitto(tmp_path / "mqtt", port):
        trader = Trader(_with_mqtt(config, port), state, venue)
        await trader.__aenter__()
    try:
        bridge = trader.app.bridge
        assert bridge is not None
        await until(lambda: bridge.connects == 1 and not bridge._up.is_set(), "the drop seen")
        reply = await bridge._run(msgspec.json.encode({"id": "off", "command": "pause"}))
        bridge.publish("replies", reply)  # as commands() does, while the broker is away
        with mosquitto(tmp_path / "mqtt", port):
            async with listening(port, f"{base}/#") as (heard, _client):
                await until(lambda: bridge.connects == 2, "the bridge to connect again")
                position_ = await heard.wait_for(
                    "the position again", lambda h: _latest(h, f"{base}/positions/{SYMBOL}")
                )
                assert position_["qty"] == 100.0
                status = await heard.wait_for("the status", lambda h: _latest(h, f"{base}/status"))
                assert status["state"] == "paused"
                (late,) = await heard.wait_for("the reply", lambda h: heard.on(f"{base}/replies"))
                assert (late["id"], late["ok"]) == ("off", True)
    finally:
        await trader.__aexit__(None, None, None)


async def test_flatten_waits_for_a_position_known_to_be_the_brokers(tmp_path: Path) -> None:
    """The broker reports no positions (a DTC-like venue): the position is unverified,
    so ``flatten`` is refused (the exit could open a short); ``confirm`` vouches for it
    (recorded for restarts too) and then ``flatten`` closes it."""
    _, config = write_profile(tmp_path)
    state = tmp_path / "state"
    await holding(config, state)
    with mosquitto(tmp_path / "mqtt") as port:
        clock = VirtualClock()
        venue = await open_venue_as(BlindVenue, config, state, clock)
        base = f"stalwart/{venue.account_id}"
        async with (
            listening(port, f"{base}/#") as (heard, client),
            Trader(_with_mqtt(config, port), state, venue) as trader,
        ):
            app = trader.app
            assert app.bridge is not None
            await app.bridge.wait_connected()
            assert app.actors[SYMBOL].unverified

            refused = await send_command(
                client, heard, base, {"id": "f1", "command": "flatten", "symbol": SYMBOL}
            )
            assert "unverified: confirm it first" in refused["error"]
            assert len(await stops(venue)) == 1, "nothing canceled"

            confirmed = await send_command(
                client, heard, base, {"id": "c1", "command": "confirm", "symbol": SYMBOL}
            )
            assert confirmed["ok"]
            assert confirmed["result"]["qty"] == 100.0
            assert not app.actors[SYMBOL].unverified
            assert SYMBOL in read_confirmations(state)

            flat = await send_command(
                client, heard, base, {"id": "f2", "command": "flatten", "symbol": SYMBOL}
            )
            assert flat["ok"]
            await print_bars(venue, clock, 1)
            await until(lambda: app.actors[SYMBOL].state.is_flat, "the exit to fill")


async def test_commands_before_the_boot_reconciled_are_refused(tmp_path: Path) -> None:
    _, config = write_profile(tmp_path)
    app = App(config=config, state_dir=tmp_path / "state")
    for command in ("pause", "reconcile"):
        with pytest.raises(CommandError, match="booting"):
            await run_command(app, Command(id="1", command=command))
    assert not app.paused


async def test_under_flatten_a_hand_open_while_paused_is_flattened_on_resume(
    tmp_path: Path,
) -> None:
    """Paused, a hand buy of the other watched symbol streams in: adopted, and held by
    nobody under ``flatten``; the pause keeps the exit back until ``resume`` sends it."""
    _, config = write_profile(tmp_path, orphan_policy="flatten")
    state = tmp_path / "state"
    clock = VirtualClock()
    venue = await open_venue(config, state, clock)
    await warm_up(venue, clock)
    async with Trader(config, state, venue) as trader:
        app = trader.app
        app.pause()
        await venue.hand_trade(OTHER, Side.BUY, 30.0)
        actor = app.actors[OTHER]
        await until(lambda: actor.state.qty == 30.0, "the hand buy booked")
        assert not [i for i in actor.state.intents if i.kind.value == "exit"], "paused"

        app.resume()
        await until(
            lambda: any(i.kind.value == "exit" for i in actor.state.intents) or actor.state.is_flat,
            "the exit sent on resume",
        )
        await print_bars(venue, clock, 1)
        await until(lambda: actor.state.is_flat, "the orphan flattened")
