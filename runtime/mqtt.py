"""MQTT bridge: the trader's state, fills, alerts and reports out; operator commands in.

Optional, and trading never depends on it: nothing the trader does waits for the
MQTT broker. What is to be published goes into the bridge (``publish``, ``alert``:
plain method calls, no await) and the bridge's own task sends it whenever the
broker is reachable, reconnecting with backoff when it is not.

* Retained topics (``status``, ``positions/SYMBOL``) keep only their latest
  payload, in memory, and all of them are sent again on every connect: a
  reconnect (or a broker restart without persistence) loses no state.
* Events (``fills``, ``alerts``, ``reports``, ``replies``) wait in a bounded
  queue while the broker is away; past ``queue_size`` the oldest is dropped,
  counted and logged, never the trader's memory grown without bound.
* Alerts are batched: one message a ``publish_interval_s`` with every alert
  raised since, a list in the order raised.
* ``status`` has a last will of ``{"state": "offline"}`` (retained), so a
  trader that dies (SIGKILL, power) is shown offline by the broker itself.
* Commands arrive on ``cmd`` as JSON (``{"id", "command", "symbol"}``), one at a
  time in the order received; each gets one reply on ``replies`` carrying its
  id. A malformed or unknown command gets an error reply and changes nothing.

Topics are under ``{prefix}/{account}/``. Authentication and ACLs are the MQTT
broker's: the username and password come from ``STALWART_MQTT_USERNAME`` and
``STALWART_MQTT_PASSWORD`` in the environment, never from a file.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import os
import re
import ssl
from collections.abc import Awaitable, Callable
from typing import Any

import aiomqtt
import msgspec

from runtime.alerts import Alert

__all__ = [
    "COMMANDS",
    "Command",
    "CommandError",
    "MqttBridge",
    "MqttSettings",
    "decode_command",
]

_log = logging.getLogger(__name__)

COMMANDS = ("pause", "resume", "flatten", "reconcile", "confirm")
_NEEDS_SYMBOL = frozenset({"flatten", "confirm"})
_SYMBOL = re.compile(r"^[A-Z][A-Z0-9.]{0,9}$")
_QOS = 1
_CLOSE_TIMEOUT_S = 2.0


class CommandError(Exception):
    """A command refused: its reply carries the message, and nothing changed."""


class Command(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """One operator command as it arrives on ``cmd``."""

    id: str
    command: str
    symbol: str | None = None


class _Reply(msgspec.Struct, frozen=True, omit_defaults=True):
    id: str | None
    ok: bool
    command: str | None = None
    result: Any = None
    error: str | None = None


class MqttSettings(msgspec.Struct, frozen=True, kw_only=True):
    """What the bridge needs of the ``[mqtt]`` profile section, plus the account."""

    host: str
    port: int
    prefix: str
    account: str
    tls: bool = False
    keepalive_s: int = 30
    reconnect_min_s: float = 1.0
    reconnect_max_s: float = 30.0
    publish_interval_s: float = 1.0
    queue_size: int = 10_000


def decode_command(payload: bytes) -> Command:
    """Decode and check one command; ``CommandError`` saying what is wrong with it."""
    try:
        cmd = msgspec.json.decode(payload, type=Command)
    except msgspec.ValidationError as exc:
        raise CommandError(f"malformed command: {exc}") from exc
    except msgspec.DecodeError as exc:
        raise CommandError(f"malformed command: not JSON ({exc})") from exc
    if not cmd.id or len(cmd.id) > 64:
        raise CommandError("malformed command: id must be 1-64 characters")
    if cmd.command not in COMMANDS:
        raise CommandError(f"unknown command {cmd.command!r}; known: {', '.join(COMMANDS)}")
    if cmd.command in _NEEDS_SYMBOL:
        if cmd.symbol is None or not _SYMBOL.match(cmd.symbol):
            raise CommandError(f"{cmd.command} needs a ticker symbol, got {cmd.symbol!r}")
    elif cmd.symbol is not None:
        raise CommandError(f"{cmd.command} takes no symbol")
    return cmd


def _id_of(payload: bytes) -> str | None:
    """Return the id of a command that did not decode, when it has a usable one."""
    try:
        raw = msgspec.json.decode(payload)
    except msgspec.DecodeError:
        return None
    found = raw.get("id") if isinstance(raw, dict) else None
    return found if isinstance(found, str) and 0 < len(found) <= 64 else None


Handler = Callable[[Command], Awaitable[object]]


class MqttBridge:
    """Publishes what the trader hands it and runs the commands it receives.

    ``run`` is the bridge's task (owned by the app's supervisor); ``close``
    publishes ``offline`` and disconnects cleanly.
    """

    def __init__(self, settings: MqttSettings, handler: Handler) -> None:
        self.settings = settings
        self.base = f"{settings.prefix}/{settings.account}"
        self._handler = handler
        self._retained: dict[str, bytes] = {}
        self._dirty: set[str] = set()  # retained topics changed since last sent
        self._events: collections.deque[tuple[str, bytes]] = collections.deque()
        self._alerts: list[Alert] = []
        self._wake = asyncio.Event()
        self._client: aiomqtt.Client | None = None
        self.dropped = 0  # events dropped from a full queue
        self.connects = 0
        self._up = asyncio.Event()
        self._closing = False
        self._drained = asyncio.Event()  # set by the sender when nothing waits

    # -- what the trader hands the bridge (no await: never waits for MQTT) ----------

    def publish(self, topic: str, payload: object, *, retain: bool = False) -> None:
        """Queue ``payload`` (JSON-encoded) for ``{base}/{topic}``; ignored once closing."""
        if self._closing:
            return
        body = msgspec.json.encode(payload)
        if retain:
            if self._retained.get(topic) != body:
                self._retained[topic] = body
                self._dirty.add(topic)
                self._wake.set()
            return
        if len(self._events) >= self.settings.queue_size:
            self._events.popleft()
            self.dropped += 1
            if self.dropped == 1 or self.dropped % 1000 == 0:
                _log.warning("mqtt: queue full, %d event(s) dropped so far", self.dropped)
        self._events.append((topic, body))
        self._wake.set()

    def alert(self, alert: Alert) -> None:
        """Queue ``alert`` for the next batch on ``alerts``."""
        if self._closing:
            return
        if len(self._alerts) >= self.settings.queue_size:
            del self._alerts[0]
            self.dropped += 1
        self._alerts.append(alert)
        self._wake.set()

    async def wait_connected(self) -> None:
        await self._up.wait()

    # -- the bridge's task ----------------------------------------------------------

    async def run(self) -> None:
        """Connect, send, receive commands; reconnect with backoff, for ever."""
        delay = self.settings.reconnect_min_s
        failing = False
        while True:
            try:
                async with self._connect() as client:
                    self._client = client
                    self.connects += 1
                    if failing:
                        _log.warning("mqtt: connected again to %s", self._where())
                    else:
                        _log.info("mqtt: connected to %s", self._where())
                    failing = False
                    delay = self.settings.reconnect_min_s
                    self._dirty = set(self._retained)  # all of it again, on every connect
                    await client.subscribe(f"{self.base}/cmd", qos=_QOS)
                    self._up.set()
                    async with asyncio.TaskGroup() as group:
                        group.create_task(self._send(client))
                        group.create_task(self._receive(client))
            except* aiomqtt.MqttError as group_error:
                exc = group_error.exceptions[0]
                if not failing:
                    _log.warning("mqtt: %s unreachable (%s); retrying", self._where(), exc)
                failing = True
            finally:
                self._client = None
                self._up.clear()
            await asyncio.sleep(delay)
            delay = min(delay * 2, self.settings.reconnect_max_s)

    @property
    def pending(self) -> int:
        """Return how many events and alerts wait to be sent."""
        return len(self._events) + len(self._alerts)

    async def close(self) -> None:
        """Send what is pending, then ``offline`` as the status (retained).

        Nothing queued afterwards is sent; the task's cancellation then
        disconnects cleanly (so the broker does not publish the will as well).
        Gives up after ``_CLOSE_TIMEOUT_S``, or at once when not connected.
        """
        self._closing = True
        self._retained["status"] = self._offline()
        self._dirty.add("status")
        self._wake.set()
        if self._client is None:
            return
        self._drained.clear()
        try:
            async with asyncio.timeout(_CLOSE_TIMEOUT_S):
                await self._drained.wait()
        except TimeoutError:
            _log.warning("mqtt: not everything was published before the stop")

    def _where(self) -> str:
        return f"{self.settings.host}:{self.settings.port}"

    def _offline(self) -> bytes:
        return msgspec.json.encode({"state": "offline"})

    def _connect(self) -> aiomqtt.Client:
        s = self.settings
        tls = ssl.create_default_context() if s.tls else None
        return aiomqtt.Client(
            s.host,
            s.port,
            username=os.environ.get("STALWART_MQTT_USERNAME") or None,
            password=os.environ.get("STALWART_MQTT_PASSWORD") or None,
            identifier=f"stalwart-{s.account}-{os.getpid()}",
            keepalive=s.keepalive_s,
            tls_context=tls,
            will=aiomqtt.Will(f"{self.base}/status", self._offline(), qos=_QOS, retain=True),
        )

    async def _send(self, client: aiomqtt.Client) -> None:
        """Send what is queued; alerts batched once a ``publish_interval_s``."""
        interval = self.settings.publish_interval_s
        loop = asyncio.get_running_loop()
        next_batch = loop.time()
        while True:
            for topic in sorted(self._dirty):
                body = self._retained[topic]
                await client.publish(f"{self.base}/{topic}", body, qos=_QOS, retain=True)
                if self._retained.get(topic) == body:
                    self._dirty.discard(topic)
            while self._events:
                topic, body = self._events[0]
                await client.publish(f"{self.base}/{topic}", body, qos=_QOS)
                self._events.popleft()  # sent: only then off the queue
            if self._alerts and (loop.time() >= next_batch or self._closing):
                batch = [_alert_dict(a) for a in self._alerts]
                await client.publish(f"{self.base}/alerts", msgspec.json.encode(batch), qos=_QOS)
                del self._alerts[: len(batch)]
                next_batch = loop.time() + interval
            self._wake.clear()
            if self._dirty or self._events:
                continue
            if not self._alerts:
                self._drained.set()
            timeout = max(0.0, next_batch - loop.time()) if self._alerts else None
            try:
                async with asyncio.timeout(timeout):
                    await self._wake.wait()
            except TimeoutError:
                pass

    async def _receive(self, client: aiomqtt.Client) -> None:
        """Run the commands received, one at a time, each with its reply."""
        async for message in client.messages:
            payload = message.payload
            if not isinstance(payload, bytes | bytearray):
                payload = str(payload).encode()
            self.publish("replies", await self._run(bytes(payload)))

    async def _run(self, payload: bytes) -> _Reply:
        try:
            cmd = decode_command(payload)
        except CommandError as exc:
            _log.warning("mqtt: command refused: %s", exc)
            return _Reply(id=_id_of(payload), ok=False, error=str(exc))
        _log.info("mqtt: command %s %s (id %s)", cmd.command, cmd.symbol or "", cmd.id)
        try:
            result = await self._handler(cmd)
        except CommandError as exc:
            _log.warning("mqtt: %s refused: %s", cmd.command, exc)
            return _Reply(id=cmd.id, ok=False, command=cmd.command, error=str(exc))
        except Exception as exc:
            _log.exception("mqtt: %s failed", cmd.command)
            return _Reply(id=cmd.id, ok=False, command=cmd.command, error=f"failed: {exc!r}")
        return _Reply(id=cmd.id, ok=True, command=cmd.command, result=result)


def _alert_dict(alert: Alert) -> dict[str, object]:
    return msgspec.to_builtins(alert)  # type: ignore[no-any-return]
