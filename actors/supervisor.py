"""The supervisor actor: hybrid recovery at boot, on reconnect, periodically, on demand.

One procedure for every trigger: fetch broker truth (positions, open orders,
and the executions since the oldest market time the actors' states already
reflect, minus a margin; read until positions and executions agree), replay
the executions of *our* orders the store has not seen through their owning
actors (dedup by execution id), read the truth again the same way (the replay
moves stops; what filled meanwhile is replayed too, until a read brings
nothing new), then ask every actor to reconcile its symbol.
Trades made outside the trader (by hand) are replayed only where they reduce,
close or flip a position held here (outside periodic runs); the others are not:
the broker's quantities say what they did, as an orphan or a drift, and the
heal stores them. The broker's quantities override the checkpoint; everything else
comes from the store. Periodic runs heal a discrepancy only once the same one
was seen on ``confirm_runs`` consecutive runs, no order of the symbol moved in
the last 5 s and no order but the stop is in flight, so a fill racing the
stream is never "healed". A stop the venue said filled whose executions have
not all arrived is in flight too, for 120 s: past that (and at once outside a
periodic run) the heal takes the broker's quantity as holding the rest of its
fill, settles the stop, alerts, and books those executions without applying
them if they ever come. A position whose broker query failed is never
treated as flat: the run aborts with ``broker_reachable = false`` instead.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TypeVar

import msgspec

from actors.findings import (
    EXTERNAL_RANK,
    discrepancy,
    label_external,
    own_prefix,
    replays_hand_trade,
)
from actors.messages import FillAck, OnExecution, Reconcile, ReconcileOutcome
from actors.position import PositionActor
from actors.report import RecoveryReport, build_report
from actors.state import IntentKind
from actors.truth import CONSISTENT_READS, read_truth
from brokers.base import BrokerError, BrokerPosition, Execution, Order
from persistence.protocol import PutReport, ReportRow, Store, StoreWriteError
from runtime.actor import Actor
from runtime.alerts import Alert, AlertSink, Severity
from runtime.clock import Clock

__all__ = ["RunRecovery", "SupervisorActor"]

_log = logging.getLogger(__name__)
_ORDER_QUIET_S = 5.0
_FILL_WAIT_S = 120.0  # how long a periodic run waits for a filled stop's executions
_ASK_WINDOW = 256  # symbols reconciled at once


class RunRecovery(msgspec.Struct, frozen=True, tag=True):
    mode: str  # boot, reconnect, periodic, manual, restart
    dry_run: bool = False
    symbols: tuple[str, ...] = ()  # only these (a restarted actor's); empty: all


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
        account: str = "",
        reports_positions: bool = True,
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
        self.account = account
        self._reports_positions = reports_positions
        self._seen: dict[str, tuple[str, int]] = {}
        # symbol -> ((client order id, qty still to come) of its filled stop, first seen)
        self._awaited: dict[str, tuple[tuple[str, float], float]] = {}
        # Symbols of this run whose confirmed finding waits only for a filled stop's
        # executions (``_should_heal``): what the broker holds meanwhile is reported.
        self._fill_waits: set[str] = set()
        self.last_report: RecoveryReport | None = None
        self._last_failure: tuple[str, ...] | None = None  # of the last run, if it failed

    async def receive(self, msg: RunRecovery) -> object:
        return await self.recover(msg.mode, dry_run=msg.dry_run, symbols=msg.symbols)

    async def recover(
        self, mode: str, *, dry_run: bool = False, symbols: tuple[str, ...] = ()
    ) -> RecoveryReport:
        """Run one recovery (see the module docstring); ``symbols`` limits it to those.

        A run that fails on anything (a query failed, a broker answer that does not
        parse, a bug) reports itself as not reconciled (``broker_reachable`` False,
        the error among the critical issues): its callers retry as for a broker
        that is down, and the tasks that run it (router, periodic, restarts) live on.
        """
        started = self.wall.now()
        t0 = self.wall.monotonic()
        try:
            return await self._run(mode, dry_run, symbols, started, t0)
        except Exception as exc:
            _log.exception("%s recovery failed", mode)
            return await self._failed(mode, dry_run, started, t0, f"recovery failed: {exc!r}")

    async def _failed(
        self, mode: str, dry_run: bool, started: datetime, t0: float, why: str
    ) -> RecoveryReport:
        took = round(self.wall.monotonic() - t0, 6)
        report = build_report(
            mode, dry_run, started, [], 0, [why], False, duration_s=took, fill_waits=set()
        )
        await self._publish(report)
        return report

    async def _run(
        self,
        mode: str,
        dry_run: bool,
        symbols: tuple[str, ...],
        started: datetime,
        t0: float,
    ) -> RecoveryReport:
        critical: list[str] = []
        try:
            since = self._since()  # once: the replay moves the actors' marks on
            read = await self._read(since, symbols)
            if dry_run:
                replay = _Replay(replayed=len(read.mine))
            else:
                replay = await self._replay_all(read, since, symbols, critical, mode)
        except BrokerError as exc:
            return await self._failed(mode, dry_run, started, t0, f"broker unreachable: {exc}")
        verify = self.reports_positions
        positions, orders, executions, unseen = (
            read.positions,
            read.orders,
            read.executions,
            read.unseen,
        )
        ours = [ex for ex in unseen if ex.exec_id in read.mine]
        booked = read.mine | replay.applied
        foreign = [ex for ex in unseen if ex.exec_id not in booked]
        by_symbol = {p.symbol: p for p in positions if p.qty != 0}
        for symbol in sorted(set(by_symbol) - set(self.actors)):
            if dry_run:
                continue
            await self._spawn(symbol)
        # Each symbol's share of the truth, indexed once (not a scan per symbol).
        orders_of = _grouped(orders)
        executions_of = _grouped(executions)
        ours_of = _grouped(ours)
        unseen_of = _grouped(unseen)
        foreign_of = _grouped(foreign)
        asks: list[tuple[PositionActor, Reconcile]] = []
        outcomes: list[ReconcileOutcome] = []
        self._fill_waits.clear()
        wanted = set(symbols) if symbols else set(self.actors) | set(by_symbol)
        for symbol in sorted(wanted):
            actor = self.actors.get(symbol)
            if actor is None:
                if symbol in by_symbol:  # dry run: an orphan without an actor yet
                    outcomes.append(_orphan_outcome(by_symbol[symbol]))
                continue
            resting = tuple(orders_of.get(symbol, ()))
            position = by_symbol.get(symbol)
            overdue = self._fill_overdue(mode, actor)
            heal, signature = self._should_heal(mode, actor, position, resting, verify, overdue)
            request = Reconcile(
                position=position,
                open_orders=resting,
                heal=heal,
                dry_run=dry_run,
                restore_stop=self.restore_stops,
                orphan_mode=self.orphan_policy,
                mode=mode,
                executions=tuple(executions_of.get(symbol, ())),
                # A dry run folds what the real run would replay: ours and hand trades
                # in time order (the fold picks the hand trades as ``_replay`` does).
                replay=tuple(unseen_of.get(symbol, ()) if dry_run else ours_of.get(symbol, ())),
                foreign=tuple(foreign_of.get(symbol, ())),
                signature=signature,
                verify=verify,
                fill_overdue=overdue,
            )
            asks.append((actor, request))
        for (actor, _), answer in zip(asks, await _ask_all(asks), strict=True):
            if isinstance(answer, BaseException):  # the actor crashed (and restarts) or is halted
                _log.error("%s: not reconciled: %r", actor.symbol, answer)
                critical.append(f"{actor.symbol} not reconciled: {answer!r}")
                continue
            assert isinstance(answer, ReconcileOutcome)
            symbol = actor.symbol
            outcomes.append(
                label_external(answer, replay.external.get(symbol), replay.before.get(symbol))
            )
        outcomes.sort(key=lambda o: o.symbol)
        report = build_report(
            mode,
            dry_run,
            started,
            outcomes,
            replay.replayed,
            critical,
            True,
            duration_s=round(self.wall.monotonic() - t0, 6),
            fill_waits=self._fill_waits,
        )
        await self._publish(report)
        return report

    async def _read(self, since: datetime, symbols: tuple[str, ...]) -> _Read:
        """Read the broker's truth of ``symbols`` (all when empty) as ``read_truth`` does.

        Our executions are told from hand trades now, before any is applied.
        """
        positions, orders, executions = await read_truth(
            self._truth, self._executions_since, since, symbols
        )
        unseen = await self._unseen(executions)
        mine = {ex.exec_id for ex in unseen if self._ours(ex)}
        return _Read(positions, orders, executions, unseen, mine)

    async def _replay_all(
        self,
        read: _Read,
        since: datetime,
        symbols: tuple[str, ...],
        critical: list[str],
        mode: str,
    ) -> _Replay:
        """Replay what ``read`` holds unseen, then read again while the replay brought fills.

        A fill that landed while the replay ran is in the positions of the next
        read (as consistent as the first), so it is replayed too: healed over
        instead, it would count twice when its execution streams in. A periodic
        run's replay also moved stops at the broker, which the next read sees.
        ``read`` is left holding the last read, with every execution replayed.
        """
        # A periodic run leaves hand trades to the stream and to its confirmation
        # rule (they may be racing the stream); boot, reconnect and manual book them.
        hands = mode != "periodic"
        replay = await self._replay(read.unseen, read.mine, critical, hands)
        fresh = replay.applied
        for _ in range(CONSISTENT_READS):
            if not fresh:
                return replay
            again = await self._read(since, symbols)
            known = {ex.exec_id for ex in read.unseen}
            more = [ex for ex in again.unseen if ex.exec_id not in known]
            read.positions, read.orders, read.executions = (
                again.positions,
                again.orders,
                again.executions,
            )
            read.mine |= {ex.exec_id for ex in more if ex.exec_id in again.mine}
            read.unseen = sorted(read.unseen + more, key=lambda e: (e.ts, e.exec_id))
            later = await self._replay(more, read.mine, critical, hands)
            replay.merge(later)
            fresh = later.applied
        if fresh:
            # Still landing: the last read holds every fill replayed, so a boot,
            # reconnect or restart heals on it (its replay moved no stop). In a
            # periodic run a symbol with a fill just replayed is not quiet, so it
            # heals nothing this time (``_should_heal``).
            _log.warning("fills kept landing while they were replayed (%s run)", mode)
        return replay

    @property
    def reports_positions(self) -> bool:
        return self._reports_positions

    def _since(self) -> datetime:
        """Return where the executions the store may not hold begin, in market time.

        Every actor knows a market time its state already reflects (``market_mark``,
        from its checkpoint: never the wall clock, which on the sim venue is a
        different clock); executions before the oldest of those, minus the margin,
        were seen. Without any mark (a fresh store) the last day is fetched.
        """
        marks = [m for a in self.actors.values() if (m := a.market_mark()) is not None]
        oldest = min(marks) if marks else self.clock.now() - timedelta(days=1)
        return oldest - self.margin

    async def _unseen(self, executions: list[Execution]) -> list[Execution]:
        """Return the executions the store does not hold, oldest first.

        One read of the store's executions in the window answers for nearly all
        of them; only an id not found there (a broker that stamps an execution
        differently from the stream that delivered it) is looked up by id.
        """
        if not executions:
            return []
        since = min(ex.ts for ex in executions)
        stored = {ex.exec_id for ex in await self.store.executions(since)}
        unseen = [
            ex
            for ex in executions
            if ex.exec_id not in stored and not await self.store.has_execution(ex.exec_id)
        ]
        return sorted(unseen, key=lambda e: (e.ts, e.exec_id))

    def _ours(self, ex: Execution) -> bool:
        """Return whether ``ex`` fills an order this trader sent (not a hand trade)."""
        actor = self.actors.get(ex.symbol)
        if actor is not None and (
            actor.knows_order(ex.client_order_id)
            or ex.client_order_id in actor.state.absorbed_fills
        ):
            return True
        return ex.client_order_id.startswith(own_prefix(self.account, ex.symbol))

    async def _replay(
        self, executions: list[Execution], ours: set[str], critical: list[str], hands: bool
    ) -> _Replay:
        """Apply the executions the store has not seen, oldest first, through their actors.

        Ours always; a hand trade (an order nobody here sent) only where it
        reduces, closes or flips a position held here, in its place among ours: a
        partial hand sell followed by our stop's fill is booked as it happened,
        not as one stop fill and a quantity override. A hand trade in a symbol
        that is flat here is an orphan, and one that adds to the held side a
        drift: both are left to the plan, which stores them with its heal.
        Hand trades are skipped altogether unless ``hands``. ``ours``: the
        execution ids of our orders, told apart before any replay changed the
        actors' intents and stops.
        """
        replay = _Replay()
        for ex in executions:
            own = ex.exec_id in ours
            actor = self.actors.get(ex.symbol)
            if not own and (not hands or actor is None or not replays_hand_trade(actor.state, ex)):
                continue  # a hand trade that opens or adds: the plan's (orphan, drift)
            actor = actor or await self._spawn(ex.symbol)
            held = (actor.state.qty, actor.state.avg_price)
            try:
                # Outside a periodic run the replay only books: the heal acts afterwards
                # on the present (a stop placed for a fill of an hour ago, before the
                # hand close that followed it, would open a position).
                ack = await actor.ask(OnExecution(execution=ex, replayed=True, act=not hands))
            except Exception as exc:  # refused, or the actor crashed or is halted
                _log.error("%s: execution %s not replayed: %r", ex.symbol, ex.exec_id, exc)
                critical.append(f"{ex.symbol} execution {ex.exec_id} not replayed: {exc!r}")
                continue
            if isinstance(ack, FillAck) and ack.applied:
                replay.applied.add(ex.exec_id)
                replay.replayed += own
                if ack.external is not None:
                    replay.note(ex.symbol, ack.external, held)
        return replay

    def _fill_overdue(self, mode: str, actor: PositionActor) -> bool:
        """Return whether the rest of a filled stop's fill waited for long enough.

        A stop the venue said filled, with executions still to come, is waited
        for ``_FILL_WAIT_S`` from the first periodic run that saw it with that
        qty to come (an execution arriving restarts the wait). Outside a
        periodic run nothing is waited for: True.
        """
        symbol = actor.symbol
        stop = actor.state.stop
        if mode != "periodic" or stop is None or not stop.filled_at_venue:
            self._awaited.pop(symbol, None)
            return mode != "periodic"
        now = self.wall.monotonic()
        key = (stop.client_order_id, stop.qty)
        awaited = self._awaited.get(symbol)
        if awaited is None or awaited[0] != key:
            awaited = self._awaited[symbol] = (key, now)
        return now - awaited[1] >= _FILL_WAIT_S

    def _should_heal(
        self,
        mode: str,
        actor: PositionActor,
        position: BrokerPosition | None,
        orders: tuple[Order, ...],
        verify: bool,
        fill_overdue: bool,
    ) -> tuple[bool, str | None]:
        """Decide whether this run may heal ``actor``'s symbol; return (heal, signature).

        Boot, reconnect and manual runs heal at once. A periodic run heals a
        discrepancy only once the same one (``signature``) was seen on
        ``confirm_runs`` consecutive runs, no order of the symbol moved for
        ``_ORDER_QUIET_S`` and no order but the stop is in flight: a fill racing
        the stream changes the picture before it is confirmed. A stop the venue
        said filled counts as in flight while its executions are still to come,
        until ``fill_overdue`` (``_fill_overdue``).
        """
        symbol = actor.symbol
        if mode != "periodic":
            self._seen.pop(symbol, None)
            return True, None
        signature = discrepancy(actor.state, position, orders, verify=verify)
        if signature is None:
            self._seen.pop(symbol, None)
            return True, None
        seen, count = self._seen.get(symbol, ("", 0))
        count = count + 1 if seen == signature else 1
        self._seen[symbol] = (signature, count)
        quiet = self.wall.monotonic() - actor.desk_activity >= _ORDER_QUIET_S
        stop = actor.state.stop
        waits_for_fill = stop is not None and stop.filled_at_venue and not fill_overdue
        ready = count >= self.confirm_runs and quiet
        if any(i.kind is not IntentKind.STOP for i in actor.state.intents):
            return False, signature
        if ready and waits_for_fill:
            self._fill_waits.add(symbol)
        heal = ready and not waits_for_fill
        if heal:
            self._seen.pop(symbol, None)
        return heal, signature

    async def _publish(self, report: RecoveryReport) -> None:
        self.last_report = report
        body = msgspec.json.encode(report).decode()
        level = logging.WARNING if report.critical_issues else logging.INFO
        _log.log(level, "reconciliation %s: %s", report.mode, body)
        # A run that fails as the one before did (retried every 30-60 s while the
        # cause lasts) is logged and stored, but alerted once, not at every retry.
        failure = None if report.broker_reachable else tuple(report.critical_issues)
        repeated = failure is not None and failure == self._last_failure
        self._last_failure = failure
        if report.critical_issues and not repeated:
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
            try:
                await self.store.commit([PutReport(row)])
            except StoreWriteError as exc:
                # History only: the run's heals were committed by their actors, and the
                # report is in the log above. Losing the row must not fail the run.
                _log.error("reconciliation report of %s not stored: %s", report.started_at, exc)
                self.alert(
                    Alert(
                        kind="store",
                        severity=Severity.WARNING,
                        message=f"reconciliation report not stored: {exc}",
                        at=self.wall.now(),
                    )
                )


_T = TypeVar("_T", Order, Execution)


def _grouped(items: list[_T]) -> dict[str, list[_T]]:
    """Return ``items`` by symbol, each symbol's in their original order."""
    out: dict[str, list[_T]] = {}
    for item in items:
        out.setdefault(item.symbol, []).append(item)
    return out


async def _ask_all(
    asks: Sequence[tuple[PositionActor, Reconcile]], window: int = _ASK_WINDOW
) -> list[object]:
    """Ask every actor its question, at most ``window`` at a time; return answers in order.

    Each heal runs in its own actor's turn, so symbols never race each other;
    asking many at once lets their commits share group commits and their
    broker calls overlap, instead of paying one round trip after another. An
    error (the actor crashed or is halted) is returned in its place.
    """
    answers: list[object] = [None] * len(asks)
    todo = iter(enumerate(asks))

    async def worker() -> None:
        for i, (actor, request) in todo:
            try:
                answers[i] = await actor.ask(request)
            except Exception as exc:
                answers[i] = exc

    async with asyncio.TaskGroup() as group:
        for _ in range(min(window, len(asks))):
            group.create_task(worker())
    return answers


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


@dataclass
class _Read:
    """One consistent read of the broker's truth, and which of its executions are new."""

    positions: list[BrokerPosition]
    orders: list[Order]
    executions: list[Execution]
    unseen: list[Execution]  # not in the store, oldest first
    mine: set[str]  # exec ids of the unseen that fill orders of ours (not hand trades)


@dataclass
class _Replay:
    """What a replay did: our fills applied, and hand trades found per symbol."""

    replayed: int = 0
    applied: set[str] = field(default_factory=set)
    external: dict[str, str] = field(default_factory=dict)  # the gravest per symbol
    before: dict[str, tuple[float, float]] = field(default_factory=dict)  # (qty, avg) before

    def note(self, symbol: str, kind: str, held: tuple[float, float]) -> None:
        """Record a hand trade of ``kind`` found in ``symbol``, held ``held`` before it."""
        self.before.setdefault(symbol, held)
        found = self.external.get(symbol)
        if found is None or EXTERNAL_RANK[kind] > EXTERNAL_RANK[found]:
            self.external[symbol] = kind

    def merge(self, later: _Replay) -> None:
        """Add what a later replay of the same run did (its own executions)."""
        self.replayed += later.replayed
        self.applied |= later.applied
        for symbol, kind in later.external.items():
            self.note(symbol, kind, later.before[symbol])
