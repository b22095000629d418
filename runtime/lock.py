"""One process per state dir: a ``run`` or ``reconcile`` holds an exclusive lock.

Two traders on one store (or, with the embedded venue, on one venue book)
would each think they own the positions. ``flock`` is released by the kernel
when the holder dies, even by SIGKILL, so a crash never leaves a stale lock.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path

__all__ = ["StateDirBusy", "state_dir_lock"]


class StateDirBusy(Exception):
    """Another stalwart process holds the state dir."""


@contextlib.contextmanager
def state_dir_lock(state_dir: Path) -> Iterator[None]:
    """Hold the state dir's lock; raise ``StateDirBusy`` naming the holder's pid."""
    state_dir.mkdir(parents=True, exist_ok=True)
    path = state_dir / "stalwart.lock"
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
            raise StateDirBusy(
                f"{state_dir} is in use by another stalwart process (pid {holder}); "
                "stop it first, or reconcile through the running session"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        yield
    finally:
        os.close(fd)
