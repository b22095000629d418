"""The chaos campaign's world: ``stalwart exchange`` and ``stalwart run`` as real processes.

Both run as separate processes on loopback, exactly as an operator starts them;
the harness talks to the exchange over HTTP (its ``/_sim/`` controls and the
Alpaca REST endpoints, with the campaign's own keys) and reads the trader's
files. Nothing here runs on an event loop: the harness is a plain program that
waits on other processes.
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
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

from runtime.runstate import read_run_state

__all__ = ["ChaosError", "ExchangeProcess", "TraderProcess", "trader_profile", "wait_for"]

STALWART = [sys.executable, "-m", "runtime.cli"]


class ChaosError(RuntimeError):
    """The world could not be set up or did not answer (not an invariant violation)."""


def wait_for(predicate: Callable[[], bool], timeout: float, poll: float = 0.1) -> bool:
    """Poll ``predicate`` until true (True) or ``timeout`` passes (False)."""
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(poll)


class ExchangeProcess:
    """``stalwart exchange`` on a free loopback port; restartable on the same book."""

    def __init__(
        self,
        workdir: Path,
        *,
        speed: float,
        seed: int,
        symbols: list[str],
        key: str,
        secret: str,
        max_fill_qty: float | None = None,
    ) -> None:
        self.book = workdir / "exchange.book"
        self.log_path = workdir / "exchange.log"
        self.speed, self.seed, self.symbols = speed, seed, symbols
        self.max_fill_qty = max_fill_qty
        self.key, self.secret = key, secret
        self.port = 0
        self.proc: subprocess.Popen[str] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 30.0) -> None:
        args = [*STALWART, "exchange", "--alpaca-port", str(self.port), "--state", str(self.book)]
        args += ["--speed", str(self.speed), "--seed", str(self.seed)]
        args += ["--symbols", ",".join(self.symbols)]
        if self.max_fill_qty is not None:
            args += ["--max-fill-qty", str(self.max_fill_qty)]
        env = {**os.environ, "APCA_API_KEY_ID": self.key, "APCA_API_SECRET_KEY": self.secret}
        with self.log_path.open("a") as log:
            self.proc = subprocess.Popen(
                args, stdout=subprocess.PIPE, stderr=log, text=True, env=env
            )
        lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=_pump, args=(self.proc.stdout, lines), daemon=True).start()
        try:
            first = lines.get(timeout=timeout)
        except queue.Empty:
            self.kill()
            raise ChaosError(
                f"the exchange did not start in {timeout}s; see {self.log_path}"
            ) from None
        if not first.startswith("alpaca-rest "):
            self.kill()
            raise ChaosError(f"the exchange said {first!r}; see {self.log_path}")
        self.port = int(first.rsplit(":", 1)[1])

    def stop(self, timeout: float = 20.0) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.kill()

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=20)

    def request(self, method: str, path: str, body: Any = None) -> Any:
        """One authenticated request; return the decoded JSON; raise ``ChaosError`` unless 2xx."""
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.url + path, data=data, method=method)
        req.add_header("APCA-API-KEY-ID", self.key)
        req.add_header("APCA-API-SECRET-KEY", self.secret)
        req.add_header("Content-Type", "application/json")
        for attempt in range(5):
            try:
                with urllib.request.urlopen(req, timeout=15) as resp:
                    raw = resp.read()
                return json.loads(raw) if raw else None
            except urllib.error.HTTPError as exc:
                # An outage answers 503 on the trading API; the controls stay up.
                if exc.code == 503 and attempt < 4:
                    time.sleep(1.0)
                    continue
                raise ChaosError(f"{method} {path}: {exc.code} {exc.read()[:200]!r}") from exc
            except OSError as exc:
                raise ChaosError(f"{method} {path}: {exc}") from exc
        raise ChaosError(f"{method} {path}: still unavailable")

    def control(self, method: str, name: str, body: Any = None) -> Any:
        return self.request(method, "/_sim/" + name, body)

    def executions(self) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = self.control("GET", "executions")
        return found

    def positions(self) -> dict[str, float]:
        rows: list[dict[str, Any]] = self.request("GET", "/v2/positions")
        return {str(p["symbol"]): _signed(p) for p in rows}

    def open_orders(self) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = self.request("GET", "/v2/orders?status=open&limit=500")
        return rows

    def set_market(self, running: bool) -> None:
        self.control("POST", "market", {"running": running})


def _signed(position: dict[str, Any]) -> float:
    qty = float(position["qty"])
    return -abs(qty) if qty < 0 or position.get("side") == "short" else qty


def _pump(stream: IO[str] | None, lines: queue.Queue[str]) -> None:
    if stream is None:
        return
    for line in stream:
        lines.put(line.strip())
    stream.close()


class TraderProcess:
    """``stalwart run`` against the exchange; one log file per start."""

    def __init__(self, workdir: Path, profile: Path, key: str, secret: str) -> None:
        self.workdir = workdir
        self.state_dir = workdir / "state"
        self.profile = profile
        self.key, self.secret = key, secret
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path: Path | None = None
        self.starts = 0

    def start(self, extra_env: dict[str, str]) -> None:
        self.starts += 1
        self.log_path = self.workdir / f"trader-{self.starts:04d}.log"
        args = [*STALWART, "run", "--config", str(self.profile), "--state-dir", str(self.state_dir)]
        env = {**os.environ, **extra_env}
        env |= {"APCA_API_KEY_ID": self.key, "APCA_API_SECRET_KEY": self.secret}
        with self.log_path.open("wb") as log:
            self.proc = subprocess.Popen(
                [*args, "--no-live"], stdout=log, stderr=subprocess.STDOUT, env=env
            )

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        if self.proc is not None:
            self.proc.wait(timeout=30)

    def terminate(self, timeout: float = 30.0) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            return None

    def output(self) -> str:
        if self.log_path is None or not self.log_path.exists():
            return ""
        return self.log_path.read_text(errors="replace")

    def reconciled(self) -> bool:
        """True once this start's boot recovery is done (it writes ``running``)."""
        run = read_run_state(self.state_dir)
        return (
            self.proc is not None
            and run is not None
            and run.pid == self.proc.pid
            and run.state == "running"
        )

    def fired(self) -> str | None:
        """Return the failpoint that killed this start, if one did."""
        marker = "failpoint "
        for line in self.output().splitlines():
            at = line.find(marker)
            if at >= 0 and "fired" in line:
                return line[at + len(marker) :].split()[0]
        return None


def trader_profile(
    exchange: ExchangeProcess, watchlist: list[str], *, checkpoint_s: float, max_attempts: int
) -> str:
    """Return the trader's TOML profile for ``exchange`` (fast reconnects, frequent checkpoints)."""
    watch = "".join(f'\n[[watchlist]]\nsymbol = "{s}"\n' for s in watchlist)
    return f"""# Written by `stalwart chaos` for one campaign.
[broker]
kind = "alpaca"

[broker.alpaca]
paper = true
url_override = "{exchange.url}"
reconnect_min_s = 0.1
reconnect_max_s = 1.0

[runtime]
state_dir = "state"
checkpoint_interval_s = {checkpoint_s}
mailbox_size = 1024
bar_buffer = 240

[strategy]
name = "pivot_breakout"
qty = 100
max_attempts = {max_attempts}
warmup_bars = 20
opening_range_bars = 5

[recovery]
orphan_policy = "adopt"
unprotected_policy = "restore"
periodic_s = 30.0
confirm_runs = 2
connect_tries = 2
connect_backoff_s = 0.2
{watch}"""
