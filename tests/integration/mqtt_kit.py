"""A real mosquitto on a free loopback port, and a real aiomqtt client listening to it."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import aiomqtt
import msgspec

_WAIT_S = 20.0

__all__ = ["Heard", "Listener", "free_port", "listening", "mosquitto", "send_command"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _binary() -> str:
    found = shutil.which("mosquitto") or (
        "/usr/sbin/mosquitto" if Path("/usr/sbin/mosquitto").exists() else None
    )
    if found is None:
        raise RuntimeError("mosquitto is not installed (.ci/test installs it: apt-get)")
    return found


@contextlib.contextmanager
def mosquitto(directory: Path, port: int | None = None) -> Iterator[int]:
    """Run mosquitto on 127.0.0.1 (``port``, else a free one) until the block ends."""
    port = port or free_port()
    directory.mkdir(parents=True, exist_ok=True)
    conf = directory / f"mosquitto-{port}.conf"
    conf.write_text(
        f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\nlog_dest stderr\n"
    )
    log = (directory / f"mosquitto-{port}.log").open("wb")
    proc = subprocess.Popen([_binary(), "-c", str(conf)], stdout=log, stderr=log)
    try:
        deadline = time.monotonic() + 10
        while True:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
                break
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"mosquitto did not start on {port} (see {log.name})")
            time.sleep(0.02)
        yield port
    finally:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


class Heard(msgspec.Struct, frozen=True):
    topic: str
    body: Any
    retain: bool


class Listener:
    """Every message under ``topic`` (``#`` included), decoded from JSON, in arrival order."""

    def __init__(self) -> None:
        self.heard: list[Heard] = []
        self._changed = asyncio.Event()

    def on(self, topic: str) -> list[Any]:
        return [h.body for h in self.heard if h.topic == topic]

    async def wait_for(self, what: str, test: Callable[[list[Heard]], Any]) -> Any:
        """Return ``test(heard)`` once it is truthy; fail after ``_WAIT_S`` seconds."""
        try:
            async with asyncio.timeout(_WAIT_S):
                while not (found := test(self.heard)):
                    self._changed.clear()
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(0.5):
                            await self._changed.wait()
        except TimeoutError:
            raise AssertionError(f"never heard {what} in {_WAIT_S} s") from None
        return found

    def _add(self, message: aiomqtt.Message) -> None:
        payload = message.payload
        raw = payload if isinstance(payload, bytes | bytearray) else str(payload).encode()
        try:
            body: Any = msgspec.json.decode(raw)
        except (msgspec.DecodeError, RecursionError):  # not JSON, or nested too deep
            body = bytes(raw)
        self.heard.append(Heard(message.topic.value, body, bool(message.retain)))
        self._changed.set()


@contextlib.asynccontextmanager
async def listening(port: int, topic: str) -> AsyncIterator[tuple[Listener, aiomqtt.Client]]:
    """Subscribe to ``topic`` on the broker at ``port``; yield the listener and its client."""
    listener = Listener()
    async with aiomqtt.Client("127.0.0.1", port, identifier=f"test-{free_port()}") as client:
        await client.subscribe(topic, qos=1)

        async def read() -> None:
            async for message in client.messages:
                listener._add(message)

        task = asyncio.create_task(read())
        try:
            yield listener, client
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


async def send_command(
    client: aiomqtt.Client, listener: Listener, base: str, payload: bytes | dict[str, Any]
) -> Any:
    """Publish one command on ``{base}/cmd``; return its reply (matched by id when it has one)."""
    body = payload if isinstance(payload, bytes) else msgspec.json.encode(payload)
    wanted = payload.get("id") if isinstance(payload, dict) else None
    before = len(listener.on(f"{base}/replies"))
    await client.publish(f"{base}/cmd", body, qos=1)

    def reply(heard: list[Heard]) -> Any:
        replies = [h.body for h in heard if h.topic == f"{base}/replies"][before:]
        for r in replies:
            if wanted is None or r.get("id") == wanted:
                return r
        return None

    return await listener.wait_for(f"the reply to {body[:80]!r}", reply)
