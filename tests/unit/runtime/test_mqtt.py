"""The MQTT bridge's pure parts: command decoding, the bounded queue, the ``[mqtt]`` checks.

The bridge against a real broker is in tests/integration/test_mqtt.py.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import msgspec
import pytest

from runtime.alerts import Alert, Severity
from runtime.config import ConfigError, MqttConfig, load_config
from runtime.mqtt import Command, CommandError, MqttBridge, decode_command


def _bridge(**changes: object) -> MqttBridge:
    settings = msgspec.structs.replace(MqttConfig(enabled=True), **changes)
    return MqttBridge(settings, "acct", _nothing)


async def _nothing(cmd: Command) -> object:
    return None


@pytest.mark.parametrize(
    ("payload", "command", "symbol"),
    [
        (b'{"id": "1", "command": "pause"}', "pause", None),
        (b'{"id": "2", "command": "resume"}', "resume", None),
        (b'{"id": "3", "command": "reconcile"}', "reconcile", None),
        (b'{"id": "4", "command": "flatten", "symbol": "AAPL"}', "flatten", "AAPL"),
        (b'{"id": "5", "command": "confirm", "symbol": "BRK.B"}', "confirm", "BRK.B"),
    ],
)
def test_a_command_decodes(payload: bytes, command: str, symbol: str | None) -> None:
    cmd = decode_command(payload)
    assert (cmd.command, cmd.symbol) == (command, symbol)


@pytest.mark.parametrize(
    ("payload", "said"),
    [
        (b"not json", "not JSON"),
        (b"[1, 2]", "malformed command"),
        (b'{"command": "pause"}', "missing required field `id`"),
        (b'{"id": "", "command": "pause"}', "id must be 1-64"),
        (b'{"id": "1", "command": "buy"}', "unknown command 'buy'"),
        (b'{"id": "1", "command": "pause", "force": true}', "unknown field `force`"),
        (b'{"id": "1", "command": "pause", "symbol": "AAPL"}', "pause takes no symbol"),
        (b'{"id": "1", "command": "flatten"}', "flatten needs a ticker symbol"),
        (b'{"id": "1", "command": "flatten", "symbol": "aapl; rm"}', "needs a ticker symbol"),
        (b'{"id": 7, "command": "pause"}', "Expected `str`"),
    ],
)
def test_a_bad_command_is_refused_saying_why(payload: bytes, said: str) -> None:
    with pytest.raises(CommandError, match=said):
        decode_command(payload)


def test_a_full_queue_drops_the_oldest_events_and_counts_them() -> None:
    bridge = _bridge(queue_size=3)
    for n in range(5):
        bridge.publish("fills", {"n": n})
    assert bridge.pending == 3
    assert bridge.dropped == 2
    assert [msgspec.json.decode(body)["n"] for _, body in bridge._events] == [2, 3, 4]


def test_a_retained_topic_keeps_only_its_latest_payload_and_never_drops() -> None:
    bridge = _bridge(queue_size=1)
    for n in range(5):
        bridge.publish("positions/AAPL", {"qty": n}, retain=True)
        bridge.publish("positions/MSFT", {"qty": n}, retain=True)
    assert bridge.dropped == 0
    assert msgspec.json.decode(bridge._retained["positions/AAPL"]) == {"qty": 4}
    assert bridge._dirty == {"positions/AAPL", "positions/MSFT"}


async def test_nothing_is_queued_once_closing() -> None:
    bridge = _bridge()
    await bridge.close()  # not connected: returns at once, offline kept as the status
    bridge.publish("fills", {"n": 1})
    bridge.alert(Alert("drift", Severity.WARNING, "late", datetime(2026, 1, 5, tzinfo=UTC)))
    assert bridge.pending == 0
    assert msgspec.json.decode(bridge._retained["status"]) == {"state": "offline"}


@pytest.mark.parametrize(
    ("section", "said"),
    [
        ("port = 0", "$.mqtt.port: must be 1-65535"),
        ('prefix = "a/#"', "$.mqtt.prefix: 'a/#' is not a topic prefix"),
        ('prefix = "/lead"', "$.mqtt.prefix"),
        ("publish_interval_s = 0", "$.mqtt.publish_interval_s: must be > 0"),
        ("reconnect_min_s = 5.0\nreconnect_max_s = 1.0", "$.mqtt.reconnect_max_s"),
        ('password = "hunter2"', "$.mqtt: object contains unknown field `password`"),
    ],
)
def test_a_bad_mqtt_section_names_the_field(tmp_path: Path, section: str, said: str) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(f"[mqtt]\nenabled = true\n{section}\n")
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert said in str(caught.value)
