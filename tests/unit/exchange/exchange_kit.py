"""Test kit: ``stalwart exchange`` as a real subprocess on a free loopback port.

The exchange prints its endpoints once it listens; the kit reads them (its
``--alpaca-port 0`` picks a free port, so tests never race for one) and talks to
the ``/_sim/`` controls with the same credentials. A restart reuses the port.
"""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

__all__ = ["KEY", "REPO", "SECRET", "Exchange", "running_exchange", "wait_until"]

REPO = Path(__file__).resolve().parents[3]
KEY, SECRET = "test-key-id-1234", "test-secret-5678"


class Exchange:
    """One exchange process (restartable on the same port and book)."""

    def __init__(
        self,
        state: Path,
        *,
        speed: float = 60.0,
        symbols: str = "AAPL,MSFT",
        seed: int = 7,
        bar_seconds: int = 60,
    ) -> None:
        self.state = state
        self.speed = speed
        self.symbols = symbols
        self.seed = seed
        self.bar_seconds = bar_seconds
        self.port = 0
        self.proc: subprocess.Popen[str] | None = None
        self.log_path = state.with_suffix(".log")
        self._lines: queue.Queue[str] = queue.Queue()

    @property
    def rest_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def stream_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/stream"

    @property
    def data_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/v2/iex"

    def start(self, timeout: float = 20.0) -> list[str]:
        """Start the process; return the endpoint lines it printed."""
        args = [sys.executable, "-m", "runtime.cli", "exchange", "--alpaca-port", str(self.port)]
        args += ["--state", str(self.state), "--speed", str(self.speed), "--seed", str(self.seed)]
        args += ["--symbols", self.symbols, "--bar-seconds", str(self.bar_seconds)]
        env = {**os.environ, "APCA_API_KEY_ID": KEY, "APCA_API_SECRET_KEY": SECRET}
        with self.log_path.open("a") as log:
            self.proc = subprocess.Popen(
                args, cwd=REPO, stdout=subprocess.PIPE, stderr=log, text=True, env=env
            )
        self._lines = queue.Queue()
        threading.Thread(target=self._read, args=(self.proc,), daemon=True).start()
        lines = [self._lines.get(timeout=timeout) for _ in range(3)]
        self.port = int(lines[0].rsplit(":", 1)[1])
        return lines

    def _read(self, proc: subprocess.Popen[str]) -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            self._lines.put(line.strip())
        proc.stdout.close()

    def stop(self, timeout: float = 20.0) -> int:
        """SIGTERM; return the exit code."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=timeout)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=20)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        key: str | None = KEY,
        secret: str | None = SECRET,
    ) -> tuple[int, Any]:
        """Send one HTTP request; return (status, decoded JSON body or None)."""
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.rest_url + path, data=data, method=method)
        if key is not None:
            req.add_header("APCA-API-KEY-ID", key)
        if secret is not None:
            req.add_header("APCA-API-SECRET-KEY", secret)
        req.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(req, timeout=10) as resp:
                raw = resp.read()
                status = resp.status
        except urllib.error.HTTPError as exc:
            raw, status = exc.read(), exc.code
        return status, (json.loads(raw) if raw else None)

    def control(self, method: str, path: str, body: Any = None) -> Any:
        """Call a ``/_sim/`` control; fail the test unless it answers 2xx."""
        status, answer = self.request(method, "/_sim/" + path, body)
        assert 200 <= status < 300, f"/_sim/{path}: {status} {answer}"
        return answer

    def executions(self) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = self.control("GET", "executions")
        return found


@contextmanager
def running_exchange(state: Path, **kwargs: Any) -> Iterator[Exchange]:
    exchange = Exchange(state, **kwargs)
    exchange.start()
    try:
        yield exchange
    finally:
        if exchange.proc is not None and exchange.proc.poll() is None:
            exchange.stop()


def wait_until(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    """Poll an observable condition of another process until true, or fail naming it."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.02)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")
