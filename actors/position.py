"""The position actor: one per (account, symbol), the shell around the pure model.

Why it is built this way: the actor processes one message at a time, so the
state needs no locks; every transition is computed by ``actors.model`` first
and becomes ``self.state`` only after it is durable (``_commit``). Orders are
sent only after their intent committed (write-ahead, deterministic client
order ids); a fill is acknowledged only after the transaction holding the
execution row and the new snapshot committed, and only then acted on (stop
placed, stop moved, trade closed). A failed commit suspends the actor and
retries with backoff: nothing is acted on that is not durable.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta

import msgspec

from actors import model
from actors.bars import BarRing
from actors.days import TradingDay, session_start, trading_day_of
from actors.findings import external_kind
from actors.heal import heal_symbol
from actors.messages import (
    Checkpoint,
    Confirm,
    FillAck,
    FlattenNow,
    GetState,
    OnBar,
    OnExecution,
    OnOrderUpdate,
    PositionMsg,
    Reconcile,
    ReconcileOutcome,
    SetMode,
)
from actors.orders import OrderDesk
from actors.snapshot import BarsError, SnapshotError, decode_snapshot, encode_state
from actors.state import SCHEMA_VERSION, IntentKind, Mode, Origin, PositionState
from actors.strategy import (
    Action,
    Cancel,
    Enter,
    ExitPartial,
    Flatten,
    MoveStop,
    Quiet,
    Session,
    SetLevels,
    Strategy,
    StrategyParams,
)
from brokers.base import Bar, Broker, Execution, Order, OrderStatus, OrderType
from persistence.protocol import (
    PutClosedTrade,
    PutExecution,
    PutSnapshot,
    ResolveIntent,
    SnapshotRow,
    Store,
    StoreWriteError,
    Write,
)
from runtime.actor import UNHANDLED, Actor, Continue, Lifecycle, Refusal
from runtime.alerts import Alert, AlertSink, Severity
from runtime.clock import Clock, TradingCalendar, posix
from runtime.failpoint import failpoint

__all__ = ["BadEvent", "PositionActor", "PositionContext"]

_log = logging.getLogger(__name__)


# Bound once for the bar path: an enum member read through its class is a
# metaclass lookup (~0.1 us on 3.11).
_RUNNING = Lifecycle.RUNNING
_MANAGED = Mode.MANAGED


class BadEvent(Refusal):
    """A broker event the model refuses (bad price, other symbol); nothing changed."""


@dataclass(frozen=True, slots=True)
class PositionContext:
    """What every position actor of one account shares."""

    account: str
    store: Store
    broker: Broker
    strategy: Strategy
    params: StrategyParams
    calendar: TradingCalendar
    clock: Clock  # market time
    wall: Clock  # checkpoint ages, retry backoff
    alert: AlertSink
    bar_seconds: int = 60
    bar_capacity: int = 240
    mailbox_size: int = 1024
    read_only: bool = False  # a dry run: never commit, never send
    # Whether an operator confirmed the open position of (symbol, opened_at); used
    # when the broker reports no positions (``Capabilities.reports_positions``).
    confirmed: Callable[[str, datetime], bool] | None = None
    # Called with the symbol when an actor restarted after a crash: its state came
    # back from the checkpoint and must be reconciled with the broker again.
    restarted: Callable[[str], None] | None = None
    orphan_policy: str = "adopt"  # adopt (watch only), manage, flatten
    # Told of every execution once it is committed, with the state it made (the MQTT
    # bridge's ``fills``); must not block.
    filled: Callable[[Execution, PositionState], None] | None = None
    # Whether the app holds every actor suspended (paused by the operator, or
    # degraded): an actor that suspended itself does not resume itself then.
    held_back: Callable[[], bool] | None = None


class _BarPath:
    """What the bar path keeps between bars (one object: the actor's own attributes stay
    few enough for CPython's shared-key instance dicts, ~1.3 KB less per actor).

    ``day``: the trading day of the last bar. ``marks``: the close, high and low of
    the bars taken since the state was last read, folded into it by the next read
    (``PositionActor.state``): most bars change nothing else, and one ``replace``
    for many bars is cheaper than one for each. ``quiet``: what the strategy called
    quiet for a state and session (``Quiet``).
    """

    __slots__ = ("day", "marks", "quiet")

    def __init__(self) -> None:
        self.day: TradingDay | None = None
        self.marks: tuple[float, float, float] | None = None
        self.quiet: tuple[PositionState, Session, Quiet] | None = None


class PositionActor(Actor[PositionMsg]):
    """Holds one symbol's position; see the module docstring."""

    def __init__(
        self,
        symbol: str,
        ctx: PositionContext,
        snapshot: SnapshotRow | None = None,
        strategy: Strategy | None = None,
        *,
        today: date | None = None,
    ) -> None:
        """Build the actor of ``symbol``; it loads ``snapshot`` when first started.

        ``today`` is the trading day of the state it holds until that start
        replaces it (default: the clock's), for a caller building many at once.
        """
        super().__init__(symbol, mailbox_size=ctx.mailbox_size)
        self.symbol = symbol
        self.ctx = ctx
        self.strategy = strategy or ctx.strategy
        self._snapshot = snapshot
        self._first_start = True
        self._bar_path = _BarPath()
        self._state = self._fresh(today)
        self.bars = BarRing(symbol, ctx.bar_capacity)
        self.checkpointed_at: datetime | None = None
        self._loaded_mark: datetime | None = None
        self._verified_open: datetime | None = None  # opened_at of a position known to exist
        self.unverified = False
        self._dirty = False
        self._bars_saved: tuple[BarRing, float] | None = None  # _bars_mark() as stored
        self.desk_activity = float("-inf")  # wall monotonic time of the last order/fill event
        self.desk = OrderDesk(self)

    @property
    def state(self) -> PositionState:
        """Return the position's state, with the marks of every bar taken so far."""
        path = self._bar_path
        marks = path.marks
        if marks is not None:
            path.marks = None
            before = self._state
            after = self._state = model.mark_prices(before, *marks)
            quiet = path.quiet
            if quiet is not None and quiet[0] is before:
                # The marks are not what a strategy's quiet bars depend on (``Quiet``).
                path.quiet = (after, quiet[1], quiet[2])
        return self._state

    @state.setter
    def state(self, state: PositionState) -> None:
        # A state assigned was derived from a read of ``state`` (which folded the
        # marks) or replaces it whole: no mark taken before it belongs to it.
        self._bar_path.marks = None
        self._state = state

    # -- lifecycle -----------------------------------------------------------------

    def _fresh(self, today: date | None = None) -> PositionState:
        if today is None:
            today = self.ctx.calendar.trading_day(self.ctx.clock.now())
        return PositionState(account=self.ctx.account, symbol=self.symbol, trading_day=today)

    async def on_start(self) -> None:
        restart = not self._first_start
        # A restart starts from the stored state: nothing of the run before it carries over.
        self._bar_path.marks = self._bar_path.quiet = None
        row = self._snapshot if self._first_start else await self._reload()
        self._first_start = False
        self._snapshot = None
        loaded: tuple[PositionState, BarRing] | None = None
        bars_stored = False  # the ring loaded is the store's bar row, as it is there
        if row is not None:
            try:
                loaded = decode_snapshot(
                    row.blob, row.schema_version, self.symbol, self.ctx.bar_capacity, row.bars
                )
                bars_stored = row.bars is not None
            except BarsError as exc:
                # The state is sound; only the buffer is lost (history refills it), and
                # the next commit writes a good one over the bad row.
                loaded = exc.state, BarRing(self.symbol, self.ctx.bar_capacity)
                self._alert("store", Severity.WARNING, f"{exc}; dropped, refilled from history")
            except SnapshotError as exc:
                self.state, self.bars = self._fresh(), BarRing(self.symbol, self.ctx.bar_capacity)
                await self.ctx.store.quarantine_snapshot(self.symbol, str(exc))
                self._alert("store", Severity.CRITICAL, f"{exc}; quarantined, starting from broker")
            if loaded is not None:
                self.checkpointed_at = row.taken_at
                self._loaded_mark = _mark(*loaded, self.ctx.calendar)
        # One market time for the whole start: the day the state rolls to and the
        # age of the bars kept are read from it.
        now = self.ctx.clock.now()
        today = self.ctx.calendar.trading_day(now)
        if loaded is not None:
            state, self.bars = loaded
            if bars_stored:
                self._bars_saved = self._bars_mark()  # as stored: no fill rewrites it
        elif row is None:
            state, self.bars = self._fresh(today), BarRing(self.symbol, self.ctx.bar_capacity)
        else:  # quarantined: the fresh state set above
            state = self.state
        self.state = model.roll_day(state, today)
        if len(self.bars):
            span = timedelta(seconds=self.ctx.bar_seconds * self.ctx.bar_capacity)
            self.bars.drop_before(now - span)
        if restart and self.ctx.restarted is not None:
            # Back from a crash with the checkpoint's state: nothing new is sent
            # until this symbol was reconciled with the broker (the callback's job).
            self.suspend()
            self.ctx.restarted(self.symbol)

    def market_mark(self) -> datetime | None:
        """Return a market time whose events this actor's state already reflects.

        Executions before it (minus a margin) need no replay. It comes from the
        checkpoint as loaded (its trading day, last bar, last fill; before any
        day roll) and moves on with the bars and fills seen since. None for an
        actor that has seen nothing.
        """
        mark = self._loaded_mark
        for seen in (self.bars.last_time(), _last_fill_at(self.state)):
            if seen is not None and (mark is None or seen > mark):
                mark = seen
        return mark

    def knows_order(self, client_order_id: str) -> bool:
        """Return whether ``client_order_id`` is an intent or the stop of this actor."""
        stop = self.state.stop
        return self.state.intent(client_order_id) is not None or (
            stop is not None and stop.client_order_id == client_order_id
        )

    def is_confirmed(self, state: PositionState) -> bool:
        """Return whether ``state``'s open position is known to exist at the broker.

        For brokers that report no positions: it was opened by one of our own
        entry fills in this process, or an operator confirmed it
        (``stalwart confirm``).
        """
        opened = state.opened_at
        if opened is None:
            return False
        check = self.ctx.confirmed
        return opened == self._verified_open or (check is not None and check(self.symbol, opened))

    async def _reload(self) -> SnapshotRow | None:
        loaded = await self.ctx.store.load_snapshots()
        return next((r for r in loaded.rows if r.symbol == self.symbol), None)

    async def on_stop(self) -> None:
        if not self.ctx.read_only:
            await self._checkpoint(force=True)

    # -- dispatch ------------------------------------------------------------------

    def receive_now(self, msg: PositionMsg) -> object:
        # The fast path of the commonest message: a bar that needs no action
        # (no order, no commit) is handled without a coroutine.
        if type(msg) is OnBar:
            actions = self._take_bar(msg.bar)
            return Continue(self._act_all(actions)) if actions else None
        return UNHANDLED

    async def receive(self, msg: PositionMsg) -> object:
        match msg:
            case OnBar(bar=bar):
                await self._on_bar(bar)
            case OnExecution(execution=ex, replayed=replayed, act=act):
                return await self._on_execution(ex, replayed=replayed, act=act)
            case OnOrderUpdate(order=order):
                await self._on_order(order)
            case Checkpoint(force=force):
                await self._checkpoint(force)
            case GetState():
                return self.state
            case FlattenNow(reason=reason):
                await self._flatten(reason)
            case SetMode(mode=mode):
                await self._commit(msgspec.structs.replace(self.state, mode=Mode(mode)), [])
            case Confirm():  # an operator vouches for the open position (until restart)
                self._verified_open = self.state.opened_at
                self.unverified = False
            case Reconcile():
                return await self._reconcile(msg)
        return None

    @property
    def trading_allowed(self) -> bool:
        return (
            self.lifecycle is Lifecycle.RUNNING
            and not self.unverified
            and self.state.mode is Mode.MANAGED
        )

    @property
    def may_protect(self) -> bool:
        """Return whether recovery may place or resize this position's stop.

        Like ``trading_allowed`` but also while suspended (reconciliation runs
        while the actors are suspended on reconnect); never for an unverified or
        watched position.
        """
        return (
            self.lifecycle in (Lifecycle.RUNNING, Lifecycle.SUSPENDED)
            and not self.unverified
            and self.state.mode is Mode.MANAGED
        )

    # -- durability ----------------------------------------------------------------

    def _bars_mark(self) -> tuple[BarRing, float]:
        """Return what tells the bar buffer changed: the ring and its last bar's time.

        Bars only append in time order, so every append moves the mark. Old
        bars trimmed at a start (``drop_before``) do not: the stored buffer
        then holds bars the next start trims again, the same buffer once
        loaded, so a restart within the bar does not rewrite every symbol's.
        """
        ring = self.bars
        return ring, ring.last_ts() if len(ring) else 0.0

    async def _commit(self, state: PositionState, writes: Sequence[Write]) -> bool:
        """Make ``state`` (and ``writes``) durable, then adopt it; retry while the disk fails.

        The bar buffer goes with it when it changed since it was last stored
        (a bar arrived), so every commit leaves state and buffer current on
        disk, and a burst of fills between two bars rewrites only the state.
        Return False, adopting nothing, when the store refused the whole commit
        because an execution written with ``require_new`` was already stored.
        """
        mark = self._bars_mark()
        row = SnapshotRow(
            symbol=self.symbol,
            blob=encode_state(state),
            schema_version=SCHEMA_VERSION,
            seq=state.seq,
            taken_at=self.ctx.wall.now(),
            bars=None if mark == self._bars_saved else self.bars.to_bytes(),
        )
        batch = [*writes, PutSnapshot(row)]
        backoff = 0.05
        suspended_here = False
        while True:
            try:
                result = await self.ctx.store.commit(batch)
                break
            except StoreWriteError as exc:
                if not suspended_here:
                    self._alert("store", Severity.CRITICAL, f"commit failed ({exc}); suspended")
                    if self.lifecycle is Lifecycle.RUNNING:
                        self.suspend()
                        suspended_here = True
                await self.ctx.wall.sleep(backoff)
                backoff = min(backoff * 2, 2.0)
        if suspended_here and self.lifecycle is Lifecycle.SUSPENDED:
            held = self.ctx.held_back is not None and self.ctx.held_back()
            if not held:  # else the app resumes it when it lets go
                self.resume()
            self._alert(
                "store",
                Severity.INFO,
                "store writable again; " + ("still held by the app" if held else "resumed"),
            )
        if result.duplicate_exec_ids and any(
            isinstance(w, PutExecution)
            and w.require_new
            and w.execution.exec_id in result.duplicate_exec_ids
            for w in writes
        ):
            return False
        self.state = state
        self.checkpointed_at = row.taken_at
        self._bars_saved = mark
        self._dirty = False
        return True

    async def _checkpoint(self, force: bool) -> None:
        if force or self._dirty:
            await self._commit(self.state, [])

    def _adopt(self, state: PositionState) -> None:
        """Take a state that needs no commit before acting (it will be checkpointed)."""
        if state is not self.state:
            self.state = state
            self._dirty = True

    # -- market data ---------------------------------------------------------------

    async def _on_bar(self, bar: Bar) -> None:
        await self._act_all(self._take_bar(bar))

    async def _act_all(self, actions: list[Action]) -> None:
        for action in actions:
            await self._act(action)

    def _take_bar(self, bar: Bar) -> list[Action]:
        """Record ``bar`` (state, buffer) and return what the strategy decides on it."""
        # Every bar of the session comes through here: its time is converted once,
        # the day is looked up only when the bar leaves the day seen last, its
        # prices are checked once, and its mark waits in ``_BarPath.marks`` until
        # the state is next read (``state``). A bar the strategy called quiet for
        # this state ends here.
        when = bar.ts
        if when.tzinfo is None:
            raise BadEvent(f"bar at naive time {when.isoformat()} (times must carry a timezone)")
        ts = posix(when)
        path = self._bar_path
        day = path.day
        if day is None or not day.start <= ts < day.end:
            day = path.day = trading_day_of(self.ctx.calendar, when, self.ctx.bar_seconds)
        try:
            model.check_bar_of(self.symbol, bar)
        except model.ModelError as exc:
            raise BadEvent(str(exc)) from exc
        high, low, close = bar.high, bar.low, bar.close
        state = self._state
        if day.day > state.trading_day:
            try:
                state = self.state = model.roll_day(self.state, day.day)
            except model.ModelError as exc:
                raise BadEvent(str(exc)) from exc
        marks = path.marks
        if marks is None:
            path.marks = (close, high, low)
        else:
            path.marks = (
                close,
                high if high > marks[1] else marks[1],
                low if low < marks[2] else marks[2],
            )
        self.bars.append_valid(bar, ts)
        self._dirty = True
        if not (
            self._lifecycle is _RUNNING and not self.unverified and state.mode is _MANAGED
        ):  # trading_allowed, without its property and enum lookups
            return []
        quiet = path.quiet
        if quiet is None or quiet[0] is not state or quiet[1] is not day.session:
            quiet = path.quiet = self._quiet_for(state, day.session, ts)
        if quiet is not None:
            since, until, close_lo, close_hi, high_below, low_above = quiet[2]
            if (
                since <= ts < until
                and close_lo <= close <= close_hi
                and high < high_below
                and low > low_above
            ):
                return []
        if getattr(self.strategy, "reads_marks", True) is not False:
            state = self.state  # the marks folded: this strategy reads them
        return self.strategy.decide(state, self.bars, bar, day.session)

    def _quiet_for(
        self, state: PositionState, session: Session, ts: float
    ) -> tuple[PositionState, Session, Quiet] | None:
        quiet_of = getattr(self.strategy, "quiet", None)
        if quiet_of is None:
            return None
        band: Quiet | None = quiet_of(state, session, ts)
        return None if band is None else (state, session, band)

    async def _act(self, action: Action) -> None:
        match action:
            case SetLevels(levels=levels):
                self._adopt(model.set_levels(self.state, self.state.trading_day, levels))
            case Enter():
                await self._enter(action)
            case ExitPartial(qty=qty, reason=reason):
                await self.desk.place(
                    IntentKind.PARTIAL,
                    qty,
                    tag=f"partial{self.state.seq}",
                    reason=reason,
                )
            case MoveStop(price=price, qty=qty):
                await self.desk.move_stop(price, qty)
            case Flatten(reason=reason):
                await self._flatten(reason)
            case Cancel(client_order_id=cid):
                await self.desk.cancel_intent(cid)

    async def _enter(self, action: Enter) -> None:
        try:
            state, intent = model.begin_entry(
                self.state,
                day=self.state.trading_day,
                pivot=action.pivot,
                side=action.side,
                qty=action.qty,
                now=self.ctx.clock.now(),
                max_attempts=self.ctx.params.max_attempts,
            )
        except model.EntryRefused as exc:
            _log.info("entry refused: %s", exc)
            return
        state = msgspec.structs.replace(
            state, targets=action.targets, planned_stop=action.stop_price
        )
        await self.desk.submit_new(state, intent)

    async def _flatten(self, reason: str) -> None:
        if self.state.is_flat or any(i.kind is IntentKind.EXIT for i in self.state.intents):
            return
        if not await self.desk.cancel_stop():
            return  # the stop may have filled: its fill decides, not a second exit
        # seq is durable with the intent, so the same decision after a crash reuses the id
        tag = f"exit{self.state.seq}"
        await self.desk.place(IntentKind.EXIT, abs(self.state.qty), tag=tag, reason=reason)

    # -- fills and orders ----------------------------------------------------------

    async def _on_execution(
        self, ex: Execution, *, replayed: bool = False, act: bool = True
    ) -> FillAck:
        self.desk_activity = self.ctx.wall.monotonic()
        if ex.exec_id in self.state.applied:
            return FillAck(exec_id=ex.exec_id, applied=False)
        before = self.state
        try:
            applied = model.apply_fill(before, ex)
        except model.ModelError as exc:
            _log.error("refused execution %s: %s", ex.exec_id, exc)
            raise BadEvent(str(exc)) from exc
        if replayed and applied.closed and before.intent(ex.client_order_id) is None:
            # Closed by hand while nobody was watching: the zombie recovery names it.
            applied = model.closed_externally(applied)
        state = applied.state
        # An execution stored before (by an earlier run, or by reconciliation as a
        # hand trade) voids this whole commit: the store's key decides, no read first.
        writes: list[Write] = [PutExecution(ex, require_new=True)]
        writes.extend(PutClosedTrade(t) for t in applied.closed)
        intent = before.intent(ex.client_order_id)
        external = external_kind(before, applied, ex)
        if external == "opened":
            # Opened (or, crossing zero, flipped) by an order nobody here sent: what is
            # open now is an orphan, adopted by policy; a closed part is booked above.
            mode = Mode.WATCH if self.ctx.orphan_policy == "adopt" else Mode.MANAGED
            state = model.adopt(state, state.qty, state.avg_price, ex.ts, mode)
        stop_intent = None
        if act and intent is not None and intent.kind is IntentKind.ENTRY and not state.is_flat:
            state, stop_intent, more = self.desk.plan_stop(state)
            writes.extend(more)
        # A fill of the stop held before: the model took it off the stop's open qty
        # (or, the venue having said it filled, off what of its fill is still to
        # come) and dropped the stop once nothing of it was left.
        consumed = before.stop is not None and before.stop.client_order_id == ex.client_order_id
        stop = state.stop
        if (
            stop is not None
            and stop.client_order_id == ex.client_order_id
            and intent is not None
            and state.intent(ex.client_order_id) is None
        ):
            # Our stop's intent is done (its order's total filled): it protects nothing
            # any more.
            state = model.set_stop(state, None)
        # Our own exit or stop that filled past zero (an oversized stop): the remainder
        # is booked in order, as at the venue, and it rests with no stop of its own.
        unprotected = (
            intent is not None
            and intent.kind is not IntentKind.ENTRY
            and not state.is_flat
            and state.stop is None
            and (bool(applied.closed) or consumed)
        )
        resting = None  # the stop as it rests at the broker, when this fill resizes it
        if act and stop_intent is None and self._may_trade(state):
            # Write-ahead in the fill's own transaction: one commit, not two.
            state, resting, more = self.desk.plan_resize(state)
            writes.extend(more)
        if intent is not None and state.intent(ex.client_order_id) is None:
            writes.append(ResolveIntent(ex.client_order_id, "filled", ex.order_id))
        failpoint("after_fill_before_commit")
        if not await self._commit(state, writes):
            return FillAck(exec_id=ex.exec_id, applied=False)
        if self.ctx.filled is not None:
            self.ctx.filled(ex, self.state)
        if external == "opened":
            self._alert(
                "orphan",
                Severity.CRITICAL,
                f"fill {ex.exec_id} of an unknown order opened {state.qty} @ {ex.price}: "
                f"adopted, policy {self.ctx.orphan_policy}",
            )
        elif external == "closed":
            self._alert(
                "zombie",
                Severity.WARNING,
                f"fill {ex.exec_id} of an unknown order closed the position @ {ex.price}",
            )
        elif external in ("reduced", "added"):
            self._alert(
                "drift",
                Severity.WARNING,
                f"fill {ex.exec_id} of an unknown order {external} {ex.side.value} {ex.qty} "
                f"@ {ex.price}: the position is {before.qty} -> {state.qty}",
            )
        if unprotected and not replayed:  # a replay's heal says it for the symbol
            self._alert(
                "unprotected",
                Severity.CRITICAL,
                f"fill {ex.exec_id} of {ex.client_order_id} left {state.qty} @ {ex.price} "
                "with no stop at the broker",
            )
        if intent is not None and intent.kind is IntentKind.ENTRY and before.is_flat:
            self._verified_open = state.opened_at  # our own fill: nothing to verify
        if _log.isEnabledFor(logging.INFO):
            _log.info(
                "fill %s %s %s %s @ %s -> qty %s",
                ex.exec_id,
                ex.symbol,
                ex.side.value,
                ex.qty,
                ex.price,
                state.qty,
            )
        # Durable: now act on it.
        if stop_intent is not None and self.lifecycle is Lifecycle.RUNNING:
            await self.desk.send(stop_intent)
        elif resting is not None:
            await self.desk.send_stop_move(resting)
        if (
            act
            and applied.closed
            and before.stop is not None
            and not before.stop.filled_at_venue
            and (not consumed or state.intent(before.stop.client_order_id) is not None)
        ):
            # The trade closed: a stop left resting (another's, or the part of ours that
            # did not fill) would open a position or add to the one past zero. One the
            # venue said filled rests no more: the rest of its fill is still to come.
            await self.desk.cancel_order_quietly(before.stop)
        if (
            self.ctx.orphan_policy == "flatten"
            and self.state.origin is Origin.RECOVERED
            and not self.state.is_flat
            and act
            and not replayed  # a replay's orphan is the heal's (``heal``), by the same policy
            and self._may_trade(self.state)
        ):
            # Opened by hand while we watch (or added to, or left by an exit that filled
            # only part of it), under a policy that holds nothing it did not open: closed
            # now, as the boot's heal closes an orphan found there. A no-op while an exit
            # is out: its last fill comes back here for whatever it left.
            await self._flatten("flatten")
        return FillAck(exec_id=ex.exec_id, applied=True, external=external)

    def _may_trade(self, state: PositionState) -> bool:
        """Return ``trading_allowed`` as it will be once ``state`` is adopted."""
        return (
            self.lifecycle is Lifecycle.RUNNING
            and not self.unverified
            and state.mode is Mode.MANAGED
        )

    async def _on_order(self, order: Order) -> None:
        self.desk_activity = self.ctx.wall.monotonic()
        state = self.state
        if order.status.is_open:
            self._adopt(model.resolve_intent(state, order.client_order_id, order_id=order.order_id))
            return
        if order.status in (OrderStatus.CANCELED, OrderStatus.REJECTED):
            await self._order_gone(order.client_order_id, order.status.value)
        elif order.status is OrderStatus.FILLED:
            stop = state.stop
            if stop is not None and stop.client_order_id == order.client_order_id:
                # Perhaps before its executions: they settle it, however many they are.
                await self.desk.settle_filled(stop, order.filled_qty)

    async def _order_gone(self, client_order_id: str, status: str) -> None:
        """Drop our order ``client_order_id``, done at the broker unfilled (``status``).

        Its intent is resolved; when it was the protective stop of an open
        position, the position is unprotected and says so.
        """
        state = model.resolve_intent(self.state, client_order_id, done=True)
        stop = state.stop
        if stop is not None and stop.client_order_id == client_order_id:
            state = model.set_stop(state, None)
            if not state.is_flat:
                self._alert(
                    "unprotected",
                    Severity.CRITICAL,
                    f"stop {client_order_id} {status} at the broker; position {state.qty}",
                )
        await self._commit(state, [ResolveIntent(client_order_id, status)])

    async def _reconcile(self, msg: Reconcile) -> ReconcileOutcome:
        failpoint("during_reconcile")
        return await heal_symbol(self, msg)

    def _alert(self, kind: str, severity: Severity, message: str) -> None:
        self.ctx.alert(
            Alert(
                kind=kind,
                severity=severity,
                message=message,
                at=self.ctx.wall.now(),
                symbol=self.symbol,
            )
        )

    def is_stop_order(self, order: Order) -> bool:
        return (
            order.symbol == self.symbol
            and order.type is OrderType.STOP
            and order.status.is_open
            and (self.state.side is None or order.side is self.state.side.opposite)
        )


def _last_fill_at(state: PositionState) -> datetime | None:
    last = None
    for fills in (state.entries, state.exits):
        for fill in fills:
            if last is None or fill.at > last:
                last = fill.at
    return last


def _mark(state: PositionState, bars: BarRing, calendar: TradingCalendar) -> datetime:
    """Return a market time at or before the checkpoint of ``state`` (as loaded)."""
    mark = session_start(calendar, state.trading_day)
    for seen in (bars.last_time(), _last_fill_at(state)):
        if seen is not None and seen > mark:
            mark = seen
    return mark
