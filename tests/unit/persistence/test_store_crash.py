"""SIGKILL a process in the middle of committing: every acknowledged fill survives."""

from __future__ import annotations

import asyncio
import random
import signal
import sys
from pathlib import Path

from persistence import open_store
from tests.unit.persistence._store_kit import ACCOUNT

_CHILD = Path(__file__).resolve().parent / "_store_crash_child.py"
_ROUNDS = 5


async def _run_and_kill(path: Path, prefix: str, rng: random.Random) -> set[str]:
    """Start the child, let it acknowledge a random number of commits, SIGKILL it.

    Return every exec id it acknowledged (printed in full) before it died.
    """
    child = await asyncio.create_subprocess_exec(
        sys.executable, str(_CHILD), str(path), prefix, stdout=asyncio.subprocess.PIPE
    )
    assert child.stdout is not None
    acknowledged: set[str] = set()
    try:
        async with asyncio.timeout(30):
            assert await child.stdout.readline() == b"ready\n"
            for _ in range(rng.randint(1, 300)):
                acknowledged.add((await child.stdout.readline()).decode().strip())
            # A random delay on top, so the kill lands anywhere in a commit: before
            # BEGIN, among the inserts, inside COMMIT's fsync, or between commits.
            await asyncio.sleep(rng.uniform(0, 0.01))
    finally:
        child.send_signal(signal.SIGKILL)
        rest = await child.stdout.read()
        await child.wait()
    assert child.returncode == -signal.SIGKILL
    *complete, _partial = rest.decode().split("\n")  # a line cut by the kill is no ack
    return acknowledged | set(complete)


async def test_acknowledged_executions_survive_sigkill(tmp_path: Path) -> None:
    path = tmp_path / "crash.db"
    rng = random.Random(20260105)
    acknowledged: set[str] = set()

    for round_no in range(_ROUNDS):
        acknowledged |= await _run_and_kill(path, f"r{round_no}", rng)

        store = await open_store(path, ACCOUNT)
        try:
            assert store.open_findings == []
            assert await store.integrity_check() == "ok"
            stored = {e.exec_id for e in await store.executions()}
            assert acknowledged - stored == set(), f"round {round_no}: acknowledged but lost"
            snapshots = (await store.load_snapshots()).rows
            assert all(len(s.blob) == 8 * 64 for s in snapshots)
        finally:
            await store.close()

    assert len(acknowledged) > _ROUNDS
