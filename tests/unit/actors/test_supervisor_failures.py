"""A recovery run that fails, or whose report cannot be stored, fails as a report.

The run's callers (the router, the periodic reconciliation, a restart's run) treat a
report that did not reconcile as a broker that is down and retry; an exception from
the run instead would end the task that ran it for the rest of the session.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta

from actors.position import PositionActor
from actors.supervisor import SupervisorActor
from brokers.base import BrokerPosition, Execution, Order
from persistence import SqliteStore
from persistence.protocol import CommitResult, PutReport, StoreWriteError, Write
from runtime.alerts import Alert, Severity
from runtime.clock import RealClock
from runtime.supervision import Supervisor


class _ReportsOnAFullDisk:
    """The real store, except that a report's commit fails as on a full disk (the
    disk-full path itself is shown in tests/integration/test_store_disk_full.py)."""

    def __init__(self, store: SqliteStore) -> None:
        self._store = store

    def __getattr__(self, name: str) -> object:
        return getattr(self._store, name)

    async def commit(self, writes: Sequence[Write]) -> CommitResult:
        if any(isinstance(w, PutReport) for w in writes):
            raise StoreWriteError("database or disk is full")
        return await self._store.commit(writes)


async def _nothing_held() -> tuple[list[BrokerPosition], list[Order]]:
    return [], []


async def _garbled() -> tuple[list[BrokerPosition], list[Order]]:
    raise KeyError("qty")  # an answer missing a field, as a parser would raise


async def _no_executions(since: datetime) -> list[Execution]:
    return []


async def _no_spawn(symbol: str) -> PositionActor:
    raise AssertionError(f"nothing to adopt, asked for {symbol}")


def _supervisor(store: object, truth: object, alerts: list[Alert]) -> SupervisorActor:
    return SupervisorActor(
        store=store,  # type: ignore[arg-type]
        broker_call=truth,  # type: ignore[arg-type]
        executions_since=_no_executions,
        actors={},
        spawn_actor=_no_spawn,
        clock=RealClock(),
        wall=RealClock(),
        alert=alerts.append,
        orphan_policy="adopt",
        restore_stops=True,
        confirm_runs=2,
        margin=timedelta(seconds=60),
    )


async def test_a_report_that_cannot_be_stored_does_not_fail_the_run(store: SqliteStore) -> None:
    alerts: list[Alert] = []
    async with Supervisor(name="test") as sup:
        supervisor = _supervisor(_ReportsOnAFullDisk(store), _nothing_held, alerts)
        await sup.start(supervisor)

        first = await supervisor.recover("periodic")
        second = await supervisor.recover("periodic")

    assert first.broker_reachable
    assert second.broker_reachable
    assert first.critical_issues == []
    assert [(a.kind, a.severity) for a in alerts] == [("store", Severity.WARNING)] * 2
    assert "not stored" in alerts[0].message
    assert await store.reports() == []


async def test_a_run_that_raises_reports_itself_not_reconciled(store: SqliteStore) -> None:
    alerts: list[Alert] = []
    async with Supervisor(name="test") as sup:
        supervisor = _supervisor(store, _garbled, alerts)
        await sup.start(supervisor)

        report = await supervisor.recover("reconnect")

    assert not report.broker_reachable
    assert report.critical_issues == ["recovery failed: KeyError('qty')"]
    assert [(a.kind, a.severity) for a in alerts] == [("reconciliation", Severity.CRITICAL)]
    (row,) = await store.reports()
    assert row.mode == "reconnect"


async def test_a_failure_that_repeats_is_alerted_once_until_a_run_succeeds(
    store: SqliteStore,
) -> None:
    alerts: list[Alert] = []
    garbled = [True]

    async def truth() -> tuple[list[BrokerPosition], list[Order]]:
        return await (_garbled() if garbled[0] else _nothing_held())

    async with Supervisor(name="test") as sup:
        supervisor = _supervisor(store, truth, alerts)
        await sup.start(supervisor)
        runs = []
        for bad in (True, True, False, True):
            garbled[0] = bad
            runs.append(await supervisor.recover("periodic"))

    assert [r.broker_reachable for r in runs] == [False, False, True, False]
    assert [a.kind for a in alerts] == ["reconciliation", "reconciliation"], "1st and 4th"
    assert len(await store.reports()) == 4, "every run stored"
