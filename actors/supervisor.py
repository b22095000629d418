"""The supervisor actor: hybrid recovery at boot, on reconnect, periodically, on demand.

One procedure for every trigger: fetch broker truth (positions, open orders,
executions since the oldest checkpoint minus a margin), replay executions the
store has not seen through their owning actors (dedup by execution id), then
ask every actor to reconcile its symbol. The broker's quantities override the
checkpoint; everything else comes from the store. Periodic runs heal a
discrepancy only once it was seen on ``confirm_runs`` consecutive runs and no
order of the symbol moved in the last 5 s, so a fill racing the stream is never
"healed". A position whose broker query failed is never treated as flat: the
run aborts with ``broker_reachable = false`` instead.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta

import msgspec

from actors.messages import FillAck, OnExecution, Reconcile, ReconcileOutcome
from actors.position import PositionActor
from brokers.base import BrokerError, BrokerPosition, Execution, Order
from persistence.protocol import PutReport, ReportRow, Store
from runtime.actor import Actor
from runtime.alerts import Alert, AlertSink, Severity
from runtime.clock import Clock

__all__ = [
    "ActionRecord",
    "Drift",
    "RecoveryReport",
    "RunRecovery",
    "SupervisorActor",
]

_log = logging.getLogger(__name__)
_ORDER_QUIET_S = 5.0


class RunRecovery(msgspec.Struct, frozen=True, tag=True):
    mode: str  # boot, reconnect, periodic, manual
    dry_run: bool = False


class Drift(msgspec.Struct, frozen=True):
    symbol: str
    local_qty: float
    broker_qty: float
    local_avg: float
    broker_avg: float


class ActionRecord(msgspec.Struct, frozen=True):
    symbol: str
    action: str
    detail: str


class RecoveryReport(msgspec.Struct, frozen=True, kw_only=True):
    mode: str
    dry_run: bool
    started_at: datetime
    duration_s: float
    zombies: list[str]
    orphans: list[str]
    drifts: list[Drift]
    unprotected: list[str]
    replayed_fills: int
    actions: list[ActionRecord]
    critical_issues: list[str]
    broker_reachable: bool


ActorFactory = Callable[[str], Awaitable[PositionActor]]


class SupervisorActor(Actor[RunRecovery]):
    """Owns recovery; the router sends market events straight to position actors."""

    def __init__(
        self,
        *,
        store: Store,
        broker_call: Callable[[], Awaitable[tuple[list[BrokerPosition], list[Order]]]],
        executions_since: Callable[[datetime], Awaitable[list[Execution]]],
        actors: dict[str, PositionActor],
        spawn_actor: ActorFactory,
        clock: Clock,
        wall: Clock,
        alert: AlertSink,
        orphan_policy: str,
        restore_stops: bool,
        confirm_runs: int,
        margin: timedelta,
    ) -> None:
        super().__init__("supervisor", mailbox_size=16)
        self.store = store
        self._truth = broker_call
        self._executions_since = executions_since
        self.actors = actors
        self._spawn = spawn_actor
        self.clock = clock
        self.wall = wall
        self.alert = alert
        self.orphan_policy = orphan_policy
        self.restore_stops = restore_stops
        self.confirm_runs = confirm_runs
        self.margin = margin
        self._seen: dict[str, int] = {}
        self.last_report: RecoveryReport | None = None

    async def receive(self, msg: RunRecovery) -> object:
        return await self.recover(msg.mode, dry_run=msg.dry_run)

    async def recover(self, mode: str, *, dry_run: bool = False) -> RecoveryReport:
        started = self.wall.now()
        t0 = self.wall.monotonic()
        critical: list[str] = []
        try:
            positions, orders = await self._truth()
            since = self._since()
            executions = await self._executions_since(since)
        except BrokerError as exc:
            critical.append(f"broker unreachable: {exc}")
            report = self._report(mode, dry_run, started, t0, [], 0, critical, reachable=False)
            await self._publish(report)
            return report
        replayed, external = (0, {}) if dry_run else await self._replay(executions)
        by_symbol = {p.symbol: p for p in positions if p.qty != 0}
        last_exit = _last_prices(executions)
        for symbol in sorted(set(by_symbol) - set(self.actors)):
            if dry_run:
                continue
            await self._spawn(symbol)
        outcomes: list[ReconcileOutcome] = []
        symbols = sorted(set(self.actors) | set(by_symbol))
        for symbol in symbols:
            actor = self.actors.get(symbol)
            if actor is None:  # dry run: an orphan without an actor yet
                outcomes.append(_orphan_outcome(by_symbol[symbol]))
                continue
            heal = self._should_heal(mode, actor, symbol, by_symbol.get(symbol))
            outcome = await actor.ask(
                Reconcile(
                    position=by_symbol.get(symbol),
                    open_orders=tuple(o for o in orders if o.symbol == symbol),
                    last_exit_price=last_exit.get(symbol),
                    heal=heal,
                    dry_run=dry_run,
                    restore_stop=self.restore_stops,
                    orphan_mode=self.orphan_policy,
                )
            )
            assert isinstance(outcome, ReconcileOutcome)
            outcomes.append(outcome)
        outcomes = [_with_external(o, external.get(o.symbol)) for o in outcomes]
        report = self._report(mode, dry_run, started, t0, outcomes, replayed, critical, True)
        await self._publish(report)
        return report

    def _since(self) -> datetime:
        ages = [a.checkpointed_at for a in self.actors.values() if a.checkpointed_at is not None]
        oldest = min(ages) if ages else self.clock.now() - timedelta(days=3)
        market_now = self.clock.now()
        # checkpoint times are wall time; on the sim venue market time runs faster
        return min(oldest, market_now - timedelta(days=1)) - self.margin

    async def _replay(self, executions: list[Execution]) -> tuple[int, dict[str, str]]:
        """Replay unseen executions; return the count and symbols opened/closed externally."""
        replayed = 0
        external: dict[str, str] = {}
        for ex in sorted(executions, key=lambda e: e.ts):
            if await self.store.has_execution(ex.exec_id):
                continue
            actor = self.actors.get(ex.symbol) or await self._spawn(ex.symbol)
            ack = await actor.ask(OnExecution(execution=ex, replayed=True))
            if isinstance(ack, FillAck) and ack.applied:
                replayed += 1
                if ack.external is not None:
                    external[ex.symbol] = ack.external
        return replayed, external

    def _should_heal(
        self, mode: str, actor: PositionActor, symbol: str, position: BrokerPosition | None
    ) -> bool:
        if mode != "periodic":
            self._seen.pop(symbol, None)
            return True
        qty = position.qty if position is not None else 0.0
        differs = abs(actor.state.qty - qty) > 1e-9
        if not differs:
            self._seen.pop(symbol, None)
            return True
        self._seen[symbol] = self._seen.get(symbol, 0) + 1
        quiet = self.wall.monotonic() - actor.desk_activity >= _ORDER_QUIET_S
        in_flight = bool(actor.state.intents) and any(
            i.kind.value != "stop" for i in actor.state.intents
        )
        return self._seen[symbol] >= self.confirm_runs and quiet and not in_flight

    def _report(
        self,
        mode: str,
        dry_run: bool,
        started: datetime,
        t0: float,
        outcomes: list[ReconcileOutcome],
        replayed: int,
        critical: list[str],
        reachable: bool,
    ) -> RecoveryReport:
        actions = [
            ActionRecord(symbol=o.symbol, action=a.split(" ")[0], detail=a)
            for o in outcomes
            for a in o.actions
        ]
        orphans = [o.symbol for o in outcomes if o.finding == "orphan"]
        unprotected = [o.symbol for o in outcomes if o.unprotected]
        critical = [*critical, *(f"orphan {s}" for s in orphans)]
        critical += [
            f"unprotected {o.symbol}"
            for o in outcomes
            if o.unprotected and not any(a.startswith("stop restored") for a in o.actions)
        ]
        return RecoveryReport(
            mode=mode,
            dry_run=dry_run,
            started_at=started,
            duration_s=round(self.wall.monotonic() - t0, 6),
            zombies=[o.symbol for o in outcomes if o.finding == "zombie"],
            orphans=orphans,
            drifts=[
                Drift(o.symbol, o.local_qty, o.broker_qty, o.local_avg, o.broker_avg)
                for o in outcomes
                if o.finding == "drift"
            ],
            unprotected=unprotected,
            replayed_fills=replayed,
            actions=actions,
            critical_issues=critical,
            broker_reachable=reachable,
        )

    async def _publish(self, report: RecoveryReport) -> None:
        self.last_report = report
        body = msgspec.json.encode(report).decode()
        level = logging.WARNING if report.critical_issues else logging.INFO
        _log.log(level, "reconciliation %s: %s", report.mode, body)
        if report.critical_issues:
            self.alert(
                Alert(
                    kind="reconciliation",
                    severity=Severity.CRITICAL,
                    message="; ".join(report.critical_issues),
                    at=self.wall.now(),
                )
            )
        if not report.dry_run:
            row = ReportRow(at=report.started_at, mode=report.mode, body=body)
            await self.store.commit([PutReport(row)])


def _last_prices(executions: list[Execution]) -> dict[str, float]:
    last: dict[str, tuple[datetime, float]] = {}
    for ex in executions:
        seen = last.get(ex.symbol)
        if seen is None or ex.ts >= seen[0]:
            last[ex.symbol] = (ex.ts, ex.price)
    return {s: p for s, (_, p) in last.items()}


def _orphan_outcome(position: BrokerPosition) -> ReconcileOutcome:
    return ReconcileOutcome(
        symbol=position.symbol,
        finding="orphan",
        local_qty=0.0,
        broker_qty=position.qty,
        local_avg=0.0,
        broker_avg=position.avg_price,
        unprotected=True,
    )


def _with_external(outcome: ReconcileOutcome, external: str | None) -> ReconcileOutcome:
    """Report a replayed fill of an order nobody here sent as the orphan or zombie it was."""
    if external is None or outcome.finding != "ok":
        return outcome
    finding = "orphan" if external == "opened" else "zombie"
    action = f"replayed external fill ({external})"
    return msgspec.structs.replace(outcome, finding=finding, actions=(*outcome.actions, action))
