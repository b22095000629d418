"""Where the benchmarks ran: machine, Python, SQLite and package versions."""

from __future__ import annotations

import importlib.metadata
import os
import platform
import sqlite3
import sys
from pathlib import Path

from bench.nautilus import Peer

__all__ = ["machine", "versions"]

_PACKAGES = ("stalwart", "uvloop", "aiosqlite", "msgspec", "rich")


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _memory_total() -> str:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    kib = int(line.split()[1])
                    return f"{kib / 1024 / 1024:.1f} GiB"
    except OSError:
        pass
    return "unknown"


def _filesystem(path: Path) -> str:
    """Return the file system type and device holding ``path`` (Linux), best effort."""
    best = ("", "unknown")
    try:
        with open("/proc/mounts") as f:
            for line in f:
                device, mount, kind = line.split()[:3]
                if str(path.resolve()).startswith(mount) and len(mount) >= len(best[0]):
                    best = (mount, f"{kind} on {device}")
    except OSError:
        pass
    return best[1]


def machine(workdir: Path) -> dict[str, str | int]:
    """Return what the results depend on: CPU, cores, memory, OS, the disk under test."""
    return {
        "platform": platform.platform(),
        "cpu": _cpu_model(),
        "cores": os.cpu_count() or 0,
        "memory": _memory_total(),
        "disk": _filesystem(workdir),
        "event_loop": f"uvloop {importlib.metadata.version('uvloop')}",
    }


def versions() -> dict[str, str]:
    """Return Python, SQLite and the versions of the packages measured or compared."""
    out = {
        "python": sys.version.split()[0],
        "python_implementation": platform.python_implementation(),
        "sqlite": sqlite3.sqlite_version,
    }
    for name in _PACKAGES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = "not installed"
    peer = Peer.find()
    out["nautilus_trader"] = peer.version or "not installed"
    return out
