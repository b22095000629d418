"""Messages of the position actor: frozen, tagged Structs dispatched with ``match``."""

from __future__ import annotations

import msgspec

from brokers.base import Bar, BrokerPosition, Execution, Order

__all__ = [
    "Checkpoint",
    "Confirm",
    "FillAck",
    "FlattenNow",
    "GetState",
    "OnBar",
    "OnExecution",
    "OnOrderUpdate",
    "PositionMsg",
    "Reconcile",
    "ReconcileOutcome",
    "SetMode",
]


class OnBar(msgspec.Struct, frozen=True, tag=True, gc=False):
    """A bar for the actor; untracked by the cyclic GC (it holds no container)."""

    bar: Bar


class OnExecution(msgspec.Struct, frozen=True, tag=True):
    """Apply a fill; the reply (``FillAck``) comes only after its commit."""

    execution: Execution
    replayed: bool = False  # by recovery, from the broker's executions
    # False: book the fill, place nothing at the broker (a boot or reconnect replay:
    # the state it is applied to is history; the heal that follows acts on the present).
    act: bool = True


class FillAck(msgspec.Struct, frozen=True):
    exec_id: str
    applied: bool  # False: a duplicate, nothing changed
    external: str | None = None  # "opened" / "closed": a fill of an order nobody here sent


class OnOrderUpdate(msgspec.Struct, frozen=True, tag=True):
    order: Order


class Checkpoint(msgspec.Struct, frozen=True, tag=True):
    """Persist the snapshot when dirty (``force``: even when clean)."""

    force: bool = False


class GetState(msgspec.Struct, frozen=True, tag=True):
    pass


class FlattenNow(msgspec.Struct, frozen=True, tag=True):
    reason: str = "flatten"


class SetMode(msgspec.Struct, frozen=True, tag=True):
    mode: str  # managed | watch


class Confirm(msgspec.Struct, frozen=True, tag=True):
    """An operator confirms an unverified position (brokers without position reports)."""


class Reconcile(msgspec.Struct, frozen=True, tag=True):
    """Broker truth for this symbol; the actor heals what ``heal`` allows.

    ``executions`` are the broker's executions of the symbol in the recovery
    window. Of those the store did not hold when the run began, ``replay`` are
    fills of our orders (already applied through the actor, except in a dry
    run, which folds them into a copy) and ``foreign`` are trades made outside
    the trader (by hand): they are not applied, the broker's quantities say
    what they did, and they are stored with the heal. A periodic run heals only
    the discrepancy it confirmed: ``signature`` is what the supervisor saw on
    ``confirm_runs`` consecutive runs. A stop the venue said filled whose
    executions have not all arrived is left to them, except outside a periodic
    run and when ``fill_overdue`` (the supervisor waited long enough): the heal
    then books the rest as the stop's fill, priced from the broker's record of
    the order where it can tell (``model.absorb_fill_rest``).
    """

    position: BrokerPosition | None
    open_orders: tuple[Order, ...]
    heal: bool
    dry_run: bool
    restore_stop: bool
    orphan_mode: str  # adopt | manage | flatten
    mode: str = "manual"  # boot | reconnect | periodic | manual
    executions: tuple[Execution, ...] = ()
    replay: tuple[Execution, ...] = ()
    foreign: tuple[Execution, ...] = ()
    signature: str | None = None
    verify: bool = True  # False: the broker reports no positions (``unverified``)
    fill_overdue: bool = False


class ReconcileOutcome(msgspec.Struct, frozen=True):
    symbol: str
    finding: str  # ok, zombie, orphan, drift (what is left once a missing fill is booked)
    local_qty: float
    broker_qty: float
    local_avg: float
    broker_avg: float
    actions: tuple[str, ...] = ()
    unprotected: bool = False
    pending: bool = False  # a periodic run saw it, not yet confirmed: nothing was healed
    unverified: bool = False  # the broker cannot confirm the position: it trades nothing
    missing_fill: bool = False  # a stop filled at the broker, its executions not all here


PositionMsg = (
    OnBar
    | OnExecution
    | OnOrderUpdate
    | Checkpoint
    | GetState
    | FlattenNow
    | SetMode
    | Confirm
    | Reconcile
)
