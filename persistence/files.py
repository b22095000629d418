"""The store's files on disk: owner-only modes, moving a corrupt file aside, backups.

These are blocking system calls; the store runs them through
``asyncio.to_thread``. A store file is created ``0600`` before SQLite opens it,
and SQLite gives its ``-wal`` and ``-shm`` files the mode of the database file,
so no process-wide umask is touched (other threads may be creating files).
"""

from __future__ import annotations

import logging
import os
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

from persistence.protocol import StoreError

__all__ = [
    "SIDECARS",
    "finish_backup",
    "header_problem",
    "move_aside",
    "prepare_file",
    "prune_backups",
    "reserve_backup",
    "secure",
    "sidecar",
    "stamp",
]

_log = logging.getLogger(__name__)

SIDECARS = ("-wal", "-shm", "-journal")
_MODE = 0o600
_DIR_MODE = 0o700
_MAGIC = b"SQLite format 3\x00"
_STAMP = r"\d{8}T\d{6}\.\d{6}Z"


def stamp(ts: datetime) -> str:
    """Return ``ts`` as a file-name timestamp (UTC, microseconds; text order is time order)."""
    return ts.astimezone(UTC).strftime("%Y%m%dT%H%M%S.%fZ")


def sidecar(path: Path, suffix: str) -> Path:
    """Return the path of ``path``'s SQLite sidecar file (``-wal``, ``-shm``, ``-journal``)."""
    return path.with_name(path.name + suffix)


def _create_private(path: Path) -> bool:
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, _MODE)
    except FileExistsError:
        return False
    os.close(fd)
    return True


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def header_problem(path: Path) -> str | None:
    """Return why ``path`` is not an SQLite database by its header, or None.

    Checked before SQLite opens the file: SQLite may delete the ``-wal`` of a
    file it cannot read as a database, and that WAL is evidence.
    """
    with path.open("rb") as f:
        head = f.read(len(_MAGIC))
    if not head or head == _MAGIC:
        return None
    return f"file is not a database (header {head[:16]!r})"


def prepare_file(path: Path) -> None:
    """Create ``path`` (and its directory) owner-only when missing; tighten modes otherwise.

    Raise ``StoreError`` when ``path`` exists and is not a regular file.
    """
    path.parent.mkdir(mode=_DIR_MODE, parents=True, exist_ok=True)
    if path.exists() and not path.is_file():
        raise StoreError(f"store {path} exists and is not a file")
    if _create_private(path):
        _fsync(path.parent)
    secure(path)


def secure(path: Path) -> None:
    """Make ``path`` and its existing sidecars readable and writable by the owner only."""
    for candidate in (path, *(sidecar(path, s) for s in SIDECARS)):
        try:
            mode = candidate.stat().st_mode & 0o777
        except FileNotFoundError:
            continue
        if mode != _MODE:
            os.chmod(candidate, _MODE)
            _log.info("store file %s had mode %o; set to %o", candidate, mode, _MODE)


def move_aside(path: Path, at: datetime) -> Path:
    """Rename ``path`` and its sidecars to ``<name>.corrupt-<UTC timestamp>``; return the new path.

    The sidecars keep their suffix, so SQLite opens the moved file with its WAL.
    """
    while True:
        target = path.with_name(f"{path.name}.corrupt-{stamp(at)}")
        if not any(sidecar(target, s).exists() for s in ("", *SIDECARS)):
            break
        at += timedelta(microseconds=1)
    for suffix in ("", *SIDECARS):
        source = sidecar(path, suffix)
        if source.exists():
            os.rename(source, sidecar(target, suffix))
    _fsync(path.parent)
    return target


def reserve_backup(directory: Path, stem: str, at: datetime) -> tuple[Path, Path]:
    """Return ``(target, partial)`` for a new backup; ``partial`` is created empty, ``0600``.

    The backup is written to ``partial`` and renamed to ``target`` once it is
    complete and on disk, so a file with a backup's name is always whole.
    """
    directory.mkdir(mode=_DIR_MODE, parents=True, exist_ok=True)
    while True:
        target = directory / f"{stem}-{stamp(at)}.db"
        partial = sidecar(target, ".partial")
        if not target.exists() and _create_private(partial):
            return target, partial
        at += timedelta(microseconds=1)


def finish_backup(partial: Path, target: Path) -> None:
    """Flush ``partial`` to disk and rename it to ``target``."""
    _fsync(partial)
    os.rename(partial, target)
    _fsync(target.parent)


def prune_backups(directory: Path, stem: str, keep: int) -> list[Path]:
    """Delete all but the newest ``keep`` backups of ``stem``; return the deleted paths."""
    pattern = re.compile(rf"{re.escape(stem)}-{_STAMP}\.db")
    backups = sorted(p for p in directory.iterdir() if pattern.fullmatch(p.name))
    old = backups[: max(len(backups) - keep, 0)]
    for backup in old:
        backup.unlink(missing_ok=True)
    return old
