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
from runtime.config import MqttConfig

__all__ = [
    "COMMANDS",
    "Command",
    "CommandError",
    "MqttBridge",
    "decode_command",
]

_log = logging.getLogger(__name__)

COMMANDS = ("pause", "resume", "flatten", "reconcile", "confirm")
_NEEDS_SYMBOL = frozenset({"flatten", "confirm"})
_SYMBOL = re.compile(r"^[A-Z][A-Z0-9.]{0,9}$")
_QOS = 1
_CLOSE_TIMEOUT_S = 2.0
_MQTT_TIMEOUT_S = 2.0  # for each MQTT operation (connect, publish, disconnect)
_INBOX = 100  # commands waiting to run, and MQTT messages queued by the client
_IDS_KEPT = 1000  # ids of the commands taken, remembered to refuse a second delivery


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


def decode_command(payload: bytes) -> Command:
    """Decode and check one command; ``CommandError`` saying what is wrong with it."""
    try:
        cmd = msgspec.json.decode(payload, type=Command)
    except msgspec.ValidationError as exc:
        raise CommandError(f"malformed command: {exc}") from exc
    except msgspec.DecodeError as exc:
        raise CommandError(f"malformed command: not JSON ({exc})") from exc
    except RecursionError as exc:
        raise CommandError("malformed command: nested too deep") from exc
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
    except Exception:  # not JSON, or JSON msgspec will not take (nested too deep)
        return None
    found = raw.get("id") if isinstance(raw, dict) else None
    return found if isinstance(found, str) and 0 < len(found) <= 64 else None


Handler = Callable[[Command], Awaitable[object]]


class MqttBridge:
    """Publishes what the trader hands it and runs the commands it receives.

    ``run`` is the bridge's task (owned by the app's supervisor); ``close``
    publishes ``offline`` and disconnects cleanly.
    """

    def __init__(self, settings: MqttConfig, account: str, handler: Handler) -> None:
        self.settings = settings
        self.account = account
        self.base = f"{settings.prefix}/{account}"
        self._handler = handler
        self._retained: dict[str, bytes] = {}
        self._dirty: set[str] = set()  # retained topics changed since last sent
        self._events: collections.deque[tuple[str, bytes]] = collections.deque()
        self._alerts: list[Alert] = []
        self._wake = asyncio.Event()
        self._client: aiomqtt.Client | None = None
        self.dropped = 0  # events dropped from a full queue, or that would not encode
        self.connects = 0
        self._up = asyncio.Event()
        self._closing = False
        self._drained = asyncio.Event()  # set by the sender when nothing waits
        # Commands received, run by ``commands()`` (a task of its own: a dropped
        # connection does not cancel a command half done, and its reply waits in
        # the queue for the next connection).
        self._inbox: asyncio.Queue[bytes] = asyncio.Queue(_INBOX)
        self._done_ids: collections.OrderedDict[str, None] = collections.OrderedDict()
        self._tls = ssl.create_default_context() if settings.tls else None  # once: it blocks

    # -- what the trader hands the bridge (no await: never waits for MQTT) ----------

    def publish(self, topic: str, payload: object, *, retain: bool = False) -> None:
        """Queue ``payload`` (JSON-encoded) for ``{base}/{topic}``; ignored once closing.

        Never raises into the caller (a trading path): a payload that does not
        encode is logged and counted as dropped.
        """
        if self._closing:
            return
        try:
            body = msgspec.json.encode(payload)
        except (TypeError, ValueError) as exc:  # UnicodeEncodeError is a ValueError
            self.dropped += 1
            _log.error("mqtt: %s not published, it does not encode: %s", topic, exc)
            return
        if retain:
            if self._retained.get(topic) != body:
                self._retained[topic] = body
                self._dirty.add(topic)
                self._wake.set()
            return
        if len(self._events) >= self.settings.queue_size:
            self._events.popleft()  # the oldest not yet sent (the one sending is off the queue)
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

    @property
    def pending(self) -> int:
        """Return how many events and alerts wait to be sent."""
        return len(self._events) + len(self._alerts)

    # -- the bridge's tasks ------------------------------------------------------------

    async def run(self) -> None:
        """Connect, send, receive commands; reconnect with backoff, for ever.

        Any failure of a connection (the broker gone, or a bug) ends that
        connection only: the bridge logs it and connects again.
        """
        delay = self.settings.reconnect_min_s
        failing = False
        while True:
            cancelled = False  # a stop must not be taken for a failed connection
            try:
                async with self._connect() as client:
                    self._client = client
                    self.connects += 1
                    _log.log(
                        logging.WARNING if failing else logging.INFO,
                        "mqtt: connected%s to %s",
                        " again" if failing else "",
                        self._where(),
                    )
                    failing = False
                    delay = self.settings.reconnect_min_s
                    self._dirty = set(self._retained)  # all of it again, on every connect
                    await client.subscribe(f"{self.base}/cmd", qos=_QOS)
                    self._up.set()
                    try:
                        await self._serve(client)
                    except asyncio.CancelledError:
                        cancelled = True
                        raise
            except Exception as exc:  # the connection failed (or a bug in it)
                if cancelled:  # the disconnect failed while stopping: still a stop
                    raise asyncio.CancelledError from exc
                if not isinstance(exc, aiomqtt.MqttError):
                    _log.error("mqtt: the bridge failed (%r); connecting again", exc)
                elif not failing:
                    _log.warning("mqtt: %s unreachable (%s); retrying", self._where(), exc)
                else:
                    _log.debug("mqtt: %s still unreachable (%s)", self._where(), exc)
                failing = True
            finally:
                self._client = None
                self._up.clear()
            await asyncio.sleep(delay)
            delay = min(delay * 2, self.settings.reconnect_max_s)

    async def _serve(self, client: aiomqtt.Client) -> None:
        """Send and receive on ``client`` until either fails; raise what failed."""
        # Not a TaskGroup: on Python 3.11 one leaves the task's cancel count raised
        # after a child's error, so a stop could not be told from a failure.
        tasks = [
            asyncio.create_task(self._send(client), name="mqtt-send"),
            asyncio.create_task(self._receive(client), name="mqtt-receive"),
        ]
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        for task in done:
            task.result()  # the error that ended the connection
        raise aiomqtt.MqttError("the connection's tasks ended")

    async def commands(self) -> None:
        """Run the commands received, one at a time in order, each with one reply."""
        while True:
            payload = await self._inbox.get()
            reply = await self._run(payload)
            self.publish("replies", reply)

    async def close(self) -> None:
        """Send what is pending, then ``offline`` as the status (retained).

        Nothing queued afterwards is sent, and no command is taken; the task's
        cancellation then disconnects cleanly (so the broker does not publish
        the will as well). Gives up after ``_CLOSE_TIMEOUT_S``, or at once when
        not connected.
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
        return aiomqtt.Client(
            s.host,
            s.port,
            username=os.environ.get("STALWART_MQTT_USERNAME") or None,
            password=os.environ.get("STALWART_MQTT_PASSWORD") or None,
            identifier=f"stalwart-{self.account}-{os.getpid()}",
            keepalive=s.keepalive_s,
            tls_context=self._tls,
            will=aiomqtt.Will(f"{self.base}/status", self._offline(), qos=_QOS, retain=True),
            max_queued_incoming_messages=_INBOX,
            # Its own default is 10 s, which a dead connection's DISCONNECT waits out
            # before the next connect may start.
            timeout=_MQTT_TIMEOUT_S,
        )

    async def _send(self, client: aiomqtt.Client) -> None:
        """Send what is queued; alerts batched once a ``publish_interval_s``.

        An event or a batch leaves the queue when taken and goes back to its
        front when its send fails, so nothing unsent is lost to a reconnect and
        a full queue drops the oldest unsent, never the one in flight.
        """
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
                topic, body = self._events.popleft()
                try:
                    await client.publish(f"{self.base}/{topic}", body, qos=_QOS)
                except BaseException:
                    self._events.appendleft((topic, body))
                    raise
            if self._alerts and (loop.time() >= next_batch or self._closing):
                alerts, self._alerts = self._alerts, []
                batch = msgspec.json.encode([_alert_dict(a) for a in alerts])
                try:
                    await client.publish(f"{self.base}/alerts", batch, qos=_QOS)
                except BaseException:
                    self._alerts[:0] = alerts
                    raise
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
        """Hand each command received to ``commands()``; refuse what cannot be taken."""
        async for message in client.messages:
            payload = message.payload
            raw = (
                bytes(payload) if isinstance(payload, bytes | bytearray) else str(payload).encode()
            )
            if self._closing:
                self.publish("replies", _refused(raw, "the trader is stopping"))
            elif message.retain:
                # Retained, it would run again at every connect (a flatten at every boot).
                self.publish("replies", _refused(raw, "retained commands are refused"))
            else:
                try:
                    self._inbox.put_nowait(raw)
                except asyncio.QueueFull:
                    self.publish("replies", _refused(raw, "busy: too many commands waiting"))

    async def _run(self, payload: bytes) -> _Reply:
        try:
            cmd = decode_command(payload)
        except CommandError as exc:
            _log.warning("mqtt: command refused: %s", exc)
            return _refused(payload, str(exc))
        if cmd.id in self._done_ids:  # a QoS 1 redelivery, or an id sent twice
            return _Reply(
                id=cmd.id, ok=False, command=cmd.command, error=f"id {cmd.id!r} was taken already"
            )
        self._done_ids[cmd.id] = None
        while len(self._done_ids) > _IDS_KEPT:
            self._done_ids.popitem(last=False)
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


def _refused(payload: bytes, why: str) -> _Reply:
    return _Reply(id=_id_of(payload), ok=False, error=why)


def _alert_dict(alert: Alert) -> dict[str, object]:
    return msgspec.to_builtins(alert)  # type: ignore[no-any-return]
