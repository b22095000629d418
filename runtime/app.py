"""Wiring: broker, store, actors, supervisor, router, timers. Nothing imports this.

Start order is the recovery order of the design card: connect the broker (with
retries; degraded if it stays down), open the account's store, load snapshots
into actors (each ready before anything is routed to it), subscribe to bars
(they wait in the broker's stream), run boot recovery, then route. Shutdown
reverses it: stop routing, final checkpoint of every actor, close the broker,
back up and close the store.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from pathlib import Path

import msgspec

from actors.bars import BarRing
from actors.checkpoint import CHECKPOINT_WAVE, checkpoint_all
from actors.messages import FlattenNow, OnBar, OnExecution, OnOrderUpdate
from actors.position import PositionActor, PositionContext
from actors.report import RecoveryReport
from actors.state import Origin, PositionState
from actors.strategy import Action, Enter, PivotBreakout, Session, Strategy, StrategyParams
from actors.supervisor import RunRecovery, SupervisorActor
from brokers.base import (
    Bar,
    Broker,
    BrokerError,
    BrokerPosition,
    Connected,
    Disconnected,
    Execution,
    Order,
    OrderUpdate,
)
from persistence import SqliteStore, open_store
from persistence.protocol import (
    PutSession,
    SessionRow,
    SnapshotRow,
    StoreError,
    StoreWriteError,
)
from runtime.actor import ActorStopped, Lifecycle
from runtime.alerts import Alert, AlertSink, Severity, log_alert
from runtime.clock import Clock, FunctionClock, RealClock
from runtime.commands import fill_payload, publish_state, run_command
from runtime.config import Config, OrphanPolicy, WatchItem
from runtime.failpoint import failpoint
from runtime.heap import BootHeap
from runtime.mqtt import CommandError, MqttBridge
from runtime.runstate import RunState, write_run_state
from runtime.status import day_totals
from runtime.supervision import Supervisor
from runtime.venues import calendar_of, make_broker

__all__ = ["App", "Confirmation", "read_confirmations", "strategy_for", "write_confirmation"]

_log = logging.getLogger(__name__)


def params_of(config: Config, item: WatchItem | None = None) -> StrategyParams:
    """Return the strategy parameters of ``config`` (pivots from the watchlist ``item``)."""
    fields = msgspec.structs.asdict(config.strategy)
    del fields["name"]
    if item is not None:
        fields |= {"resistance": item.resistance, "support": item.support}
    return StrategyParams(**fields)


def strategy_for(config: Config, item: WatchItem | None) -> Strategy:
    """Return the strategy of a watchlist symbol; symbols off the list never enter."""
    params = params_of(config, item)
    return PivotBreakout(params) if item is not None else _NoEntries(params)


class _NoEntries(PivotBreakout):
    """Manages exits of a held position but never enters (symbols off the watchlist)."""

    def decide(
        self, state: PositionState, bars: BarRing, bar: Bar, session: Session
    ) -> list[Action]:
        return [a for a in super().decide(state, bars, bar, session) if not isinstance(a, Enter)]


_CONFIRMATIONS = "confirmations.json"


class Confirmation(msgspec.Struct, frozen=True):
    """An operator's word that a position exists at a broker that reports none."""

    symbol: str
    opened_at: datetime
    qty: float
    avg_price: float
    confirmed_at: datetime


_confirmations = msgspec.json.Decoder(dict[str, Confirmation])


def read_confirmations(state_dir: Path) -> dict[str, Confirmation]:
    """Return the confirmations in ``state_dir`` by symbol (none when the file is missing)."""
    try:
        raw = (state_dir / _CONFIRMATIONS).read_bytes()
    except FileNotFoundError:
        return {}
    try:
        return _confirmations.decode(raw)
    except msgspec.DecodeError as exc:
        _log.error("%s: unreadable confirmations, none trusted: %s", state_dir, exc)
        return {}


def write_confirmation(state_dir: Path, confirmation: Confirmation) -> None:
    """Record ``confirmation`` durably (write, fsync, atomic rename), replacing the symbol's."""
    confirmations = read_confirmations(state_dir)
    confirmations[confirmation.symbol] = confirmation
    tmp = state_dir / f".{_CONFIRMATIONS}.tmp"
    with tmp.open("wb") as out:
        out.write(msgspec.json.encode(confirmations))
        out.flush()
        os.fsync(out.fileno())
    os.replace(tmp, state_dir / _CONFIRMATIONS)


@dataclass
class App:
    """One trading session; ``run`` returns the process exit code."""

    config: Config
    state_dir: Path
    speed: float | None = None
    alert_sink: AlertSink = log_alert
    wall: Clock = field(default_factory=RealClock)
    alerts: list[Alert] = field(default_factory=list)
    actors: dict[str, PositionActor] = field(default_factory=dict)
    broker: Broker | None = None  # injected by tests (a SimBroker they also control)
    degraded: bool = False
    read_only: bool = False
    force_account: bool = False  # rebind a store of another account (operator's explicit choice)
    report: RecoveryReport | None = None
    supervisor: SupervisorActor | None = None
    _reconnecting: bool = False
    # symbol -> its events held back while its restarted actor's symbol is reconciled:
    # a fill routed between that run's read of the broker and its heal would be
    # healed over with the stale quantity (a reconnect's run holds all, in the router).
    _held: dict[str, list[Bar | Execution | OrderUpdate]] = field(default_factory=dict)
    _spawn_actor: Callable[[str], Awaitable[PositionActor]] | None = None
    paused: bool = False  # by the operator (``pause``): the strategy acts on nothing
    bridge: MqttBridge | None = None  # the MQTT bridge, when ``[mqtt]`` is enabled
    # Every event, held back while an operator's reconcile runs (as the router holds
    # them during a reconnect's run, by not reading): delivered in order after it.
    _hold_all: list[Bar | Execution | OrderUpdate] | None = None
    _store: SqliteStore | None = None
    _venue_refusal: str | None = None  # the last venue-account refusal alerted
    ready: bool = False  # boot recovery done: operator commands are taken from then on
    # Symbols whose actor restarted and is not reconciled yet (its runs may retry):
    # an operator's resume or flatten waits for their run.
    restarting: set[str] = field(default_factory=set)
    _session_written: SessionRow | None = None  # the sessions row as last committed

    def _confirmed(self, symbol: str, opened_at: datetime) -> bool:
        found = read_confirmations(self.state_dir).get(symbol)
        return found is not None and found.opened_at == opened_at

    def alert(self, alert: Alert) -> None:
        self.alerts.append(alert)
        del self.alerts[:-200]
        self.alert_sink(alert)
        if self.bridge is not None:
            self.bridge.alert(alert)

    def pause(self) -> None:
        """Stop the strategy acting (``pause``); the stops stay at the broker."""
        if not self.paused:
            self.paused = True
            self._suspend_all()
            self.alert(Alert("paused", Severity.WARNING, "paused by the operator", self.wall.now()))

    def resume(self) -> None:
        """Let the strategy act again (``resume``); a degraded trader resumes once reconciled."""
        if self.paused:
            self.paused = False
            if not self.degraded:
                self._resume_all()
                if self.config.recovery.orphan_policy is OrphanPolicy.FLATTEN:
                    # Adopted while paused (a hand trade streamed in): held for nobody.
                    self.sup.spawn(self._flatten_adopted(), name="flatten-adopted")
            self.alert(Alert("paused", Severity.INFO, "resumed by the operator", self.wall.now()))

    async def _flatten_adopted(self) -> None:
        for actor in list(self.actors.values()):
            state = actor.state
            if state.origin is Origin.RECOVERED and not state.is_flat and actor.trading_allowed:
                with contextlib.suppress(ActorStopped):
                    await actor.ask(FlattenNow(reason="flatten"))

    def _suspend_all(self) -> None:
        for actor in self.actors.values():
            if actor.lifecycle is Lifecycle.RUNNING:
                actor.suspend()

    def _resume_all(self) -> None:
        for symbol, actor in self.actors.items():
            # A restarted actor whose symbol is being reconciled resumes after its run.
            if actor.lifecycle is Lifecycle.SUSPENDED and symbol not in self.restarting:
                actor.resume()

    def status_payload(self) -> dict[str, object]:
        """Return the retained MQTT ``status``: what the trader is doing now."""
        state = "degraded" if self.degraded else "paused" if self.paused else "running"
        broker = self.broker
        return {
            "state": state,
            "paused": self.paused,
            "degraded": self.degraded,
            "account": broker.account_id if broker is not None else None,
            "pid": os.getpid(),
            "at": self.wall.now().isoformat(),
            "market_time": broker.now().isoformat() if broker is not None else None,
            "open_positions": sum(1 for a in self.actors.values() if not a.state.is_flat),
        }

    async def reconcile_now(self) -> RecoveryReport:
        """Run a manual recovery while the trader runs (the operator's ``reconcile``).

        Every event is held back while it runs and delivered in order after it,
        so the run's heal is not raced by the stream. Refused (``CommandError``)
        while degraded or before the supervisor exists: the reconnect's run is
        the one that reconciles then.
        """
        supervisor = self.supervisor
        if supervisor is None or self._spawn_actor is None:
            raise CommandError("the trader is not running yet")
        if self.degraded:
            raise CommandError("degraded: the reconnect's run reconciles once the broker is back")
        if self._hold_all is not None:
            raise CommandError("a reconcile is already running")
        self._hold_all = []
        try:
            return await self._recover(supervisor, "manual")
        finally:
            # A symbol whose restart run holds its own events takes these in turn.
            await self._deliver_held(self._hold_all, pass_on=True)
            self._hold_all = None

    def _filled(self, ex: Execution, state: PositionState) -> None:
        if self.bridge is not None:
            self.bridge.publish("fills", fill_payload(ex, state))

    async def reconcile_once(self, *, dry_run: bool) -> RecoveryReport:
        """Run one manual recovery (``stalwart reconcile``) and return its report.

        With ``dry_run`` nothing is written: no store commit, no order, no backup.
        """
        self.read_only = dry_run
        await self.run(asyncio.Event(), once=True)
        assert self.report is not None
        return self.report

    async def run(
        self, stop: asyncio.Event, duration_s: float | None = None, *, once: bool = False
    ) -> int:
        """Trade until ``stop`` is set or ``duration_s`` passed; ``once``: reconcile and return."""
        self.state_dir.mkdir(parents=True, exist_ok=True)
        cfg = self.config
        broker = self.broker or await make_broker(cfg, self.state_dir, speed=self.speed)
        self.broker = broker
        clock: Clock = FunctionClock(broker.now)
        self.calendar = calendar_of(cfg)
        connected = await self._connect(broker)
        store = await open_store(
            self.state_dir / f"{_safe(broker.account_id)}.db",
            broker.account_id,
            force_account=self.force_account,
            before_commit=lambda: failpoint("mid_checkpoint"),
        )
        self._store = store
        if connected:
            try:
                await self._bind_venue(store, broker)
            except StoreError:  # another account's book: touch nothing, say so (exit 2)
                await store.close()
                with contextlib.suppress(Exception):
                    await broker.close()
                raise
        if cfg.mqtt.enabled and not once:
            # Made before boot: its alerts and report wait in the bridge until it connects.
            self.bridge = MqttBridge(
                cfg.mqtt, _safe(broker.account_id), functools.partial(run_command, self)
            )
        for finding in store.open_findings:
            self.alert(Alert("store", Severity.CRITICAL, finding, self.wall.now()))
        if not once:
            self._write_state(broker, "starting")
        watch = {w.symbol: w for w in cfg.watchlist}
        heap = BootHeap()  # the collector, paused while the book loads (see runtime.heap)
        try:
            async with Supervisor(
                clock=self.wall,
                intensity=cfg.runtime.restart_intensity,
                period_s=cfg.runtime.restart_period_s,
                alert=self.alert,
                stop_timeout_s=cfg.runtime.stop_timeout_s,
            ) as sup:
                if self.bridge is not None:
                    sup.spawn(self.bridge.run(), name="mqtt")
                    sup.spawn(self.bridge.commands(), name="mqtt-commands")
                ctx = PositionContext(
                    account=broker.account_id,
                    store=store,
                    broker=broker,
                    strategy=strategy_for(cfg, None),
                    params=params_of(cfg),
                    calendar=self.calendar,
                    clock=clock,
                    wall=self.wall,
                    alert=self.alert,
                    bar_seconds=cfg.broker.sim.bar_seconds,
                    bar_capacity=cfg.runtime.bar_buffer,
                    mailbox_size=cfg.runtime.mailbox_size,
                    read_only=self.read_only,
                    orphan_policy=cfg.recovery.orphan_policy.value,
                    confirmed=self._confirmed,
                    filled=self._filled,
                    held_back=lambda: self.paused or self.degraded,
                    restarted=self._restarted,
                )

                # Strategies are pure (state in, actions out): symbols with the same
                # pivots share one, instead of one per symbol.
                strategies: dict[tuple[bool, float | None, float | None], Strategy] = {}

                def make(
                    symbol: str, row: SnapshotRow | None = None, today: date | None = None
                ) -> PositionActor:
                    item = watch.get(symbol)
                    key = (
                        (False, None, None)
                        if item is None
                        else (True, item.resistance, item.support)
                    )
                    strategy = strategies.get(key)
                    if strategy is None:
                        strategy = strategies[key] = strategy_for(cfg, item)
                    return PositionActor(symbol, ctx, row, strategy=strategy, today=today)

                async def spawn(symbol: str) -> PositionActor:
                    existing = self.actors.get(symbol)
                    if existing is not None:
                        return existing
                    actor = make(symbol)
                    await sup.start(actor)
                    if self.paused or self.degraded:
                        actor.suspend()
                    self.actors[symbol] = actor
                    return actor

                self._spawn_actor = spawn
                heap.pause()
                loaded = await store.load_snapshots()
                rows = {r.symbol: r for r in loaded.rows}
                del loaded  # each actor drops its row once started: no copy of the book stays
                # One market time for the day the book's actors hold until each start
                # replaces their state (the start reads the clock again).
                today = self.calendar.trading_day(clock.now())
                await self._start_actors(
                    sup,
                    [make(s, rows.pop(s, None), today) for s in sorted(set(watch) | set(rows))],
                )

                async def truth() -> tuple[list[BrokerPosition], list[Order]]:
                    return await broker.positions(), await broker.open_orders()

                supervisor = SupervisorActor(
                    store=store,
                    broker_call=truth,
                    executions_since=broker.executions,
                    actors=self.actors,
                    spawn_actor=spawn,
                    clock=clock,
                    wall=self.wall,
                    alert=self.alert,
                    orphan_policy=cfg.recovery.orphan_policy.value,
                    restore_stops=cfg.recovery.unprotected_policy.value == "restore",
                    confirm_runs=cfg.recovery.confirm_runs,
                    margin=timedelta(seconds=cfg.recovery.executions_margin_s),
                    account=broker.account_id,
                    reports_positions=broker.capabilities.reports_positions,
                )
                await sup.start(supervisor)
                self.supervisor = supervisor
                self.sup = sup
                self.watch = sorted(watch)
                if once:
                    self.report = await self._recover(supervisor, "manual", dry_run=self.read_only)
                    await sup.shutdown()
                    return 1 if self.report.critical_issues else 0
                if connected:
                    # Subscribed before the boot recovery refills the buffers: a bar
                    # printed while it runs waits in the stream, routed once running
                    # (a buffer drops what its refill already holds), instead of
                    # being lost between the refill's read and the subscription.
                    await broker.subscribe(sorted(watch))
                    boot = await self._recover(supervisor, "boot")
                    if not boot.broker_reachable:
                        # Not reconciled (a query failed, or the truth kept changing):
                        # trade nothing until a run is. The router runs it, with
                        # retries, before it routes anything, as after a reconnect.
                        why = "; ".join(boot.critical_issues)
                        self._set_degraded(True, f"boot recovery failed: {why}")
                else:
                    self._set_degraded(True, "broker unreachable at boot")
                    self._start_reconnect(broker)
                heap.settle()
                self._write_state(broker, "degraded" if self.degraded else "running")
                sup.spawn(self._route(broker, supervisor), name="router")
                sup.spawn(self._checkpoints(store, clock), name="checkpoints")
                sup.spawn(self._periodic(supervisor, broker), name="periodic-reconcile")
                sup.spawn(self._heartbeat(broker), name="heartbeat")
                if self.bridge is not None:
                    sup.spawn(publish_state(self, self.bridge), name="mqtt-state")
                self.ready = True
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), duration_s)
                _log.info("stopping: final checkpoint of %d actors", len(self.actors))
                if self.bridge is not None:
                    await self.bridge.close()
                stragglers = await sup.shutdown()
                if stragglers:
                    _log.warning("stragglers at shutdown: %s", ", ".join(stragglers))
                if not self.read_only:
                    await self._write_session(store)
        finally:
            heap.release()
            with contextlib.suppress(Exception):
                await broker.close()
            if not self.read_only:
                try:
                    await store.backup("shutdown")
                except Exception as exc:  # a failed backup must not lose the clean close
                    _log.error("backup at shutdown failed: %s", exc)
            await store.close()
            if not once:
                self._write_state(broker, "stopped")
        return 0

    async def _start_actors(self, sup: Supervisor, actors: list[PositionActor]) -> None:
        """Start the loaded actors in waves, each wave concurrently and as one tier.

        One tier per wave: at shutdown a wave stops together, its final
        checkpoints sharing a commit, without the whole book encoding in one
        loop iteration. Raise the first start error (the others are logged).
        """
        for start in range(0, len(actors), CHECKPOINT_WAVE):
            wave = actors[start : start + CHECKPOINT_WAVE]
            try:
                await sup.start_all(wave)
            except ExceptionGroup as group:
                raise group.exceptions[0] from None
            self.actors.update((actor.symbol, actor) for actor in wave)

    async def _connect(self, broker: Broker) -> bool:
        rec = self.config.recovery
        rng = random.Random(os.getpid())
        for attempt in range(1, rec.connect_tries + 1):
            try:
                await broker.connect()
                return True
            except BrokerError as exc:
                _log.warning("connect attempt %d/%d failed: %s", attempt, rec.connect_tries, exc)
                if attempt < rec.connect_tries:
                    delay = rec.connect_backoff_s * 2 ** (attempt - 1)
                    await self.wall.sleep(delay * (0.5 + rng.random()))
        return False

    async def _reconnect_loop(self, broker: Broker) -> None:
        """Reconnect with capped, jittered backoff; the Connected event drives recovery."""
        rng = random.Random(os.getpid())
        delay = self.config.recovery.connect_backoff_s
        try:
            while self.degraded:
                try:
                    await broker.connect()
                    return
                except BrokerError as exc:
                    _log.warning("still degraded: %s; next try in %.1f s", exc, delay)
                await self.wall.sleep(delay * (0.5 + rng.random()))
                delay = min(delay * 2, 30.0)
        finally:
            self._reconnecting = False

    def _start_reconnect(self, broker: Broker) -> None:
        if not self._reconnecting:
            self._reconnecting = True
            self.sup.spawn(self._reconnect_loop(broker), name="reconnect")

    async def _recover(
        self,
        supervisor: SupervisorActor,
        mode: str,
        *,
        dry_run: bool = False,
        symbols: tuple[str, ...] = (),
    ) -> RecoveryReport:
        report = await supervisor.ask(RunRecovery(mode=mode, dry_run=dry_run, symbols=symbols))
        assert isinstance(report, RecoveryReport)
        if self.bridge is not None:
            self.bridge.publish("reports", report)
        return report

    def _set_degraded(self, degraded: bool, why: str) -> None:
        self.degraded = degraded
        if degraded:
            self._suspend_all()
        elif not self.paused:  # a pause outlasts the disconnect
            self._resume_all()
        severity = Severity.CRITICAL if degraded else Severity.INFO
        self.alert(Alert("degraded", severity, why, self.wall.now()))

    async def _route(self, broker: Broker, supervisor: SupervisorActor) -> None:
        """Send each broker event to its owner; connection changes go through recovery."""
        if self.degraded and not self._reconnecting:  # connected, but boot did not reconcile
            await self._reconcile_reconnected(broker, supervisor)
        async for event in broker.events():
            try:
                match event:
                    case Bar() | Execution() | OrderUpdate():
                        held = self._held.get(_symbol_of(event))
                        if self._hold_all is not None:
                            self._hold_all.append(event)  # an operator's reconcile: after it
                        elif held is not None:
                            held.append(event)  # its symbol's restart run: after it
                        else:
                            await self._deliver(event)
                    case Disconnected(reason=reason):
                        if not self.degraded:
                            self._set_degraded(True, f"broker disconnected: {reason}")
                        self._start_reconnect(broker)
                    case Connected():
                        if self.degraded:
                            await self._reconcile_reconnected(broker, supervisor)
            except ActorStopped as exc:
                _log.warning("event %s not delivered: %s", type(event).__name__, exc)

    async def _deliver(self, event: Bar | Execution | OrderUpdate) -> None:
        """Send a market or order event to its symbol's actor (an execution spawns one)."""
        spawn = self._spawn_actor
        assert spawn is not None, "an event before the actors were made"
        match event:
            case Bar(symbol=symbol):
                actor = self.actors.get(symbol)
                if actor is not None:
                    await actor.tell(OnBar(event))
            case Execution(symbol=symbol):
                actor = self.actors.get(symbol) or await spawn(symbol)
                await actor.tell(OnExecution(event))
            case OrderUpdate(order=order):
                actor = self.actors.get(order.symbol)
                if actor is not None:
                    await actor.tell(OnOrderUpdate(order))

    async def _release(self, symbol: str) -> None:
        """Deliver what was held back for ``symbol``, in order, then route it again."""
        await self._deliver_held(self._held.get(symbol, []), pass_on=False)
        self._held.pop(symbol, None)

    async def _deliver_held(
        self, held: list[Bar | Execution | OrderUpdate], *, pass_on: bool
    ) -> None:
        """Deliver ``held`` in order, emptying it; ``pass_on``: an event whose symbol's
        restart run holds its events is appended there instead."""
        while held:  # the router may add while a delivery waits: those come after
            event = held.pop(0)
            restarting = self._held.get(_symbol_of(event)) if pass_on else None
            if restarting is not None:
                restarting.append(event)
                continue
            try:
                await self._deliver(event)
            except ActorStopped as exc:
                _log.warning("event %s not delivered: %s", type(event).__name__, exc)

    def _restarted(self, symbol: str) -> None:
        """A position actor restarted after a crash: reconcile its symbol, then resume it."""
        if self.supervisor is not None:
            self.restarting.add(symbol)
            self.sup.spawn(
                self._recover_restarted(self.supervisor, symbol), name=f"restart-{symbol}"
            )

    async def _recover_restarted(self, supervisor: SupervisorActor, symbol: str) -> None:
        delay = self.config.recovery.connect_backoff_s
        while True:
            if not self.degraded:  # degraded: the reconnect run will cover it
                self._held.setdefault(symbol, [])
                try:
                    report = await self._recover(supervisor, "restart", symbols=(symbol,))
                finally:
                    await self._release(symbol)
                if report.broker_reachable:
                    break
            await self.wall.sleep(delay)
            delay = min(delay * 2, 30.0)
        self.restarting.discard(symbol)
        actor = self.actors.get(symbol)
        if (
            actor is not None
            and actor.lifecycle is Lifecycle.SUSPENDED
            and not (self.degraded or self.paused)
        ):
            actor.resume()

    async def _reconcile_reconnected(self, broker: Broker, supervisor: SupervisorActor) -> None:
        """Reconcile after a reconnect, then resume; retry until the broker answers.

        Runs in the router, so no event is routed while it runs (the run must not
        race the stream). A broker that accepts the connection but fails the
        queries (or drops again) is retried with backoff, reconnecting as needed:
        giving up here would leave the trader degraded for good.
        """
        delay = self.config.recovery.connect_backoff_s
        while True:
            try:
                # Before the run refills the buffers, as at boot: no bar falls between.
                await broker.subscribe(self.watch)
            except BrokerError as exc:
                _log.warning("resubscribe after reconnect failed: %s", exc)
            else:
                # Another account's keys (a boot that could not connect checks here):
                # no run, no trading on this store; degraded and alerted.
                if await self._venue_checked(broker):
                    report = await self._recover(supervisor, "reconnect")
                    if report.broker_reachable:
                        self._set_degraded(False, "broker reconnected and reconciled")
                        return
            _log.warning("still degraded after reconnect; next reconciliation in %.2f s", delay)
            await self.wall.sleep(delay)
            delay = min(delay * 2, 30.0)
            with contextlib.suppress(BrokerError):
                await broker.connect()

    async def _bind_venue(self, store: SqliteStore, broker: Broker) -> None:
        """Bind the store to the venue's account number (``StoreError``: another's)."""
        number = broker.venue_account
        if number is not None:
            await store.bind_venue_account(
                number, force=self.force_account, write=not self.read_only
            )

    async def _venue_checked(self, broker: Broker) -> bool:
        """``_bind_venue`` after a reconnect: False (alerted) when the store is another's."""
        if self._store is None:
            return True
        try:
            await self._bind_venue(self._store, broker)
        except StoreError as exc:
            why = str(exc)
            if why != self._venue_refusal:  # once, not at every retry
                self._venue_refusal = why
                self.alert(Alert("store", Severity.CRITICAL, why, self.wall.now()))
            else:
                _log.warning("still refused: %s", why)
            return False
        self._venue_refusal = None
        return True

    async def _checkpoints(self, store: SqliteStore, clock: Clock) -> None:
        """Checkpoint dirty actors every interval; back the store up once per trading day."""
        interval = self.config.runtime.checkpoint_interval_s
        backed_up: date | None = None
        while True:
            await self.wall.sleep(interval)
            await checkpoint_all(list(self.actors.values()), patience_s=max(interval, 1.0))
            await self._write_session(store)
            day = self.calendar.trading_day(clock.now())
            if day != backed_up:
                try:
                    await store.backup(f"daily {day.isoformat()}")
                    backed_up = day
                except Exception as exc:  # a failed backup is an alert, never a crash
                    self.alert(Alert("backup", Severity.WARNING, str(exc), self.wall.now()))

    async def _write_session(self, store: SqliteStore) -> None:
        """Record the latest trading day's realized P&L and trades (``sessions``) if changed.

        A summary of the actors' states, whose snapshots hold the numbers: a
        commit that fails is logged and tried again at the next checkpoint.
        """
        totals = day_totals(actor.state for actor in self.actors.values())
        if totals is None or totals == self._session_written:
            return
        try:
            await store.commit([PutSession(totals)])
        except StoreWriteError as exc:
            _log.error("sessions row for %s not stored: %s", totals.trading_day, exc)
            return
        self._session_written = totals

    async def _periodic(self, supervisor: SupervisorActor, broker: Broker) -> None:
        while True:
            await self.wall.sleep(self.config.recovery.periodic_s)
            if not self.degraded:
                await self._recover(supervisor, "periodic")

    async def _heartbeat(self, broker: Broker) -> None:
        while True:
            self._write_state(broker, "degraded" if self.degraded else "running")
            await self.wall.sleep(1.0)

    def _write_state(self, broker: Broker, state: str) -> None:
        write_run_state(
            self.state_dir,
            RunState(
                pid=os.getpid(),
                state=state,
                account=broker.account_id,
                updated_at=self.wall.now(),
                market_time=broker.now(),
            ),
        )


def _safe(account: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in account)


def _symbol_of(event: Bar | Execution | OrderUpdate) -> str:
    return event.order.symbol if isinstance(event, OrderUpdate) else event.symbol
