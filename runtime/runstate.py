"""The session's run state file (``runtime.json`` in the state dir).

``stalwart status`` reads the store without any broker; this small file tells
it whether a session is running (its pid is alive and it beat recently).
"""

from __future__ import annotations

import contextlib
import os
from datetime import datetime
from pathlib import Path

import msgspec

__all__ = ["RunState", "read_run_state", "session_state", "write_run_state"]

_FILE = "runtime.json"


class RunState(msgspec.Struct, frozen=True):
    pid: int
    state: str  # starting, running, degraded, stopped
    account: str
    updated_at: datetime
    market_time: datetime | None = None


def write_run_state(state_dir: Path, state: RunState) -> None:
    tmp = state_dir / f".{_FILE}.tmp"
    tmp.write_bytes(msgspec.json.encode(state))
    os.replace(tmp, state_dir / _FILE)


def read_run_state(state_dir: Path) -> RunState | None:
    try:
        return msgspec.json.decode((state_dir / _FILE).read_bytes(), type=RunState)
    except (OSError, msgspec.DecodeError):
        return None


def _alive(pid: int) -> bool:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(pid, 0)
        return True
    return False


def session_state(state_dir: Path) -> str:
    """Return ``running``, ``degraded`` or ``stopped`` (a dead pid is stopped)."""
    run = read_run_state(state_dir)
    if run is None or run.state == "stopped" or not _alive(run.pid):
        return "stopped"
    return "degraded" if run.state == "degraded" else "running"
