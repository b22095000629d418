"""Commit executions until killed; print each exec id once its commit has returned.

Run by test_store_crash.py as ``python _store_crash_child.py STORE_PATH PREFIX``.
Eight workers commit concurrently, so kills land in group commits too. A line
on stdout is an acknowledgement: the id must survive a SIGKILL.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

_HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(_HERE.parents[2])]

from persistence import PutExecution, PutSnapshot, SqliteStore, open_store  # noqa: E402
from tests.unit.persistence._store_kit import ACCOUNT, execution, snapshot  # noqa: E402

WORKERS = 8


async def _worker(store: SqliteStore, prefix: str, worker: int) -> None:
    seq = 0
    while True:
        exec_id = f"{prefix}-{worker}-{seq}"
        await store.commit(
            [
                PutExecution(execution(exec_id, symbol=f"SYM{worker}")),
                PutSnapshot(snapshot(f"SYM{worker}", seq=seq, blob=seq.to_bytes(8) * 64)),
            ]
        )
        sys.stdout.write(exec_id + "\n")
        sys.stdout.flush()
        seq += 1


async def main(path: Path, prefix: str) -> None:
    store = await open_store(path, ACCOUNT)
    try:
        sys.stdout.write("ready\n")
        sys.stdout.flush()
        async with asyncio.TaskGroup() as workers:
            for worker in range(WORKERS):
                workers.create_task(_worker(store, prefix, worker))
    finally:
        await store.close()


if __name__ == "__main__":
    asyncio.run(main(Path(sys.argv[1]), sys.argv[2]))
