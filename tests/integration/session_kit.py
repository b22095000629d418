"""Helpers for tests that run ``stalwart`` as a real subprocess against real files."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

STALWART = [sys.executable, "-m", "runtime.cli"]
REPO = Path(__file__).resolve().parents[2]


class Session:
    """A ``stalwart run`` subprocess with its state dir."""

    def __init__(self, state_dir: Path, *args: str, env: dict[str, str] | None = None) -> None:
        self.state_dir = state_dir
        self.log = (state_dir.parent / f"{state_dir.name}-run-{time.monotonic_ns()}.log").open("wb")
        self.proc = subprocess.Popen(
            [*STALWART, "run", "--state-dir", str(state_dir), "--no-live", *args],
            cwd=REPO,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})},
        )

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=30)
        self.log.close()

    def terminate(self, timeout: float = 30.0, sig: signal.Signals = signal.SIGTERM) -> int:
        """Stop the session with ``sig`` (SIGTERM, or SIGINT as Ctrl-C sends) and wait."""
        self.proc.send_signal(sig)
        code = self.proc.wait(timeout=timeout)
        self.log.close()
        return code

    def output(self) -> str:
        return Path(self.log.name).read_text(errors="replace")


def stalwart(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run a one-shot ``stalwart`` command and return its result."""
    result = subprocess.run(
        [*STALWART, *args], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    if check and result.returncode != 0:
        raise AssertionError(f"stalwart {args} exited {result.returncode}: {result.stderr}")
    return result


def status(state_dir: Path) -> dict[str, Any]:
    out = stalwart("status", "--state-dir", str(state_dir), "--json").stdout
    body: dict[str, Any] = json.loads(out)
    return body


def wait_for(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    """Poll ``predicate`` (a real process's observable state) until true or fail."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")
