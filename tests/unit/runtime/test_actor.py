"""The actor: mailbox order, backpressure, ask/tell, refusals, stop, the lifecycle guard."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import msgspec
import pytest

from runtime.actor import (
    Actor,
    ActorError,
    ActorStopped,
    InvalidTransition,
    Lifecycle,
    Refusal,
)
from runtime.clock import VirtualClock
from runtime.supervision import Supervisor


class Record(msgspec.Struct, frozen=True, tag=True):
    value: int


class Hold(msgspec.Struct, frozen=True, tag=True):
    """Block the handler until the actor's gate opens."""


class Fail(msgspec.Struct, frozen=True, tag=True):
    reason: str = "boom"


class Refuse(msgspec.Struct, frozen=True, tag=True):
    reason: str = "no"


class Leak(msgspec.Struct, frozen=True, tag=True):
    """Let a CancelledError that is not ours escape the handler."""


Msg = Record | Hold | Fail | Refuse | Leak


class NotNow(Refusal):
    pass


class Recorder(Actor[Msg]):
    def __init__(self, name: str = "rec", *, mailbox_size: int = 1024) -> None:
        super().__init__(name, mailbox_size=mailbox_size)
        self.seen: list[int] = []
        self.starts = 0
        self.stops = 0
        self.holding = asyncio.Event()
        self.gate = asyncio.Event()

    async def on_start(self) -> None:
        self.starts += 1

    async def on_stop(self) -> None:
        self.stops += 1

    async def receive(self, msg: Msg) -> object:
        match msg:
            case Record(value=value):
                self.seen.append(value)
                return value * 10
            case Hold():
                self.holding.set()
                await self.gate.wait()
                return "released"
            case Fail(reason=reason):
                raise ValueError(reason)
            case Refuse(reason=reason):
                raise NotNow(reason)
            case Leak():
                raise asyncio.CancelledError()


async def settle() -> None:
    """Let every runnable task run until it blocks (no time passes)."""
    for _ in range(20):
        await asyncio.sleep(0)


def state(actor: Actor[Any]) -> Lifecycle:
    """Read the lifecycle afresh (keeps mypy from narrowing it across awaits)."""
    return actor.lifecycle


async def advance_until(clock: VirtualClock, done: asyncio.Task[object]) -> None:
    for _ in range(100):
        if done.done():
            return
        await clock.advance(1.0)
    raise AssertionError("condition not reached in 100 virtual seconds")


async def test_messages_are_handled_one_at_a_time_in_order() -> None:
    async with Supervisor() as sup:
        actor = Recorder()
        await sup.start(actor)
        for value in range(500):
            await actor.tell(Record(value))

        assert await actor.ask(Record(500)) == 5000
        assert actor.seen == list(range(501))


async def test_messages_told_before_start_wait_for_it() -> None:
    actor = Recorder()
    await actor.tell(Record(1))
    assert actor.mailbox_depth == 1
    async with Supervisor() as sup:
        await sup.start(actor)
        assert await actor.ask(Record(2)) == 20
    assert actor.seen == [1, 2]


async def test_tell_blocks_while_the_mailbox_is_full() -> None:
    async with Supervisor() as sup:
        actor = Recorder(mailbox_size=2)
        await sup.start(actor)
        await actor.tell(Hold())
        await actor.holding.wait()  # the handler holds Hold; the mailbox is empty
        await actor.tell(Record(1))
        await actor.tell(Record(2))
        assert actor.mailbox_depth == actor.mailbox_size == 2

        blocked = asyncio.create_task(actor.tell(Record(3)))
        await settle()
        assert not blocked.done()
        assert actor.mailbox_depth == 2

        actor.gate.set()  # Hold returns, Record(1) is taken: room for one
        await blocked
        assert await actor.ask(Record(4)) == 40
        assert actor.seen == [1, 2, 3, 4]


async def test_blocked_tell_fails_when_the_actor_stops() -> None:
    clock = VirtualClock()
    async with Supervisor(clock=clock, stop_timeout_s=1.0) as sup:
        actor = Recorder(mailbox_size=1)
        await sup.start(actor)
        await actor.tell(Hold())
        await actor.holding.wait()
        await actor.tell(Record(1))
        blocked = asyncio.create_task(actor.tell(Record(2)))
        await settle()

        stopping = asyncio.create_task(sup.stop(actor))
        with pytest.raises(ActorStopped):
            await blocked
        actor.gate.set()
        await stopping
    assert actor.seen == []  # a stop does not drain the mailbox


async def test_ask_returns_the_reply() -> None:
    async with Supervisor() as sup:
        actor = Recorder()
        await sup.start(actor)

        assert await actor.ask(Record(7)) == 70


async def test_ask_reraises_the_handler_error_and_the_actor_restarts() -> None:
    async with Supervisor() as sup:
        actor = Recorder()
        await sup.start(actor)

        with pytest.raises(ValueError, match="bad fill"):
            await actor.ask(Fail("bad fill"))

        assert await actor.ask(Record(1)) == 10
        assert sup.restarts(actor) == 1
        assert actor.starts == 2


async def test_a_told_message_that_fails_crashes_the_actor_and_is_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async with Supervisor() as sup:
        actor = Recorder()
        await sup.start(actor)

        await actor.tell(Fail("told"))
        assert await actor.ask(Record(1)) == 10

        assert sup.restarts(actor) == 1
        assert any(r.exc_info and "told" in str(r.exc_info[1]) for r in caplog.records)


async def test_a_refusal_reaches_the_asker_without_a_crash() -> None:
    async with Supervisor() as sup:
        actor = Recorder()
        await sup.start(actor)

        with pytest.raises(NotNow, match="suspended"):
            await actor.ask(Refuse("suspended"))
        await actor.tell(Refuse("told"))

        assert await actor.ask(Record(1)) == 10
        assert sup.restarts(actor) == 0
        assert actor.starts == 1
        assert state(actor) is Lifecycle.RUNNING


async def test_a_stray_cancelled_error_in_a_handler_is_a_crash_not_a_stop() -> None:
    async with Supervisor() as sup:
        actor = Recorder()
        await sup.start(actor)

        with pytest.raises(ActorError, match="CancelledError"):
            await actor.ask(Leak())

        assert await actor.ask(Record(1)) == 10
        assert sup.restarts(actor) == 1


async def test_ask_times_out_when_no_reply_comes() -> None:
    async with Supervisor() as sup:
        actor = Recorder()
        await sup.start(actor)
        await actor.tell(Hold())

        with pytest.raises(TimeoutError):
            await actor.ask(Record(1), timeout=0)
        actor.gate.set()


async def test_ask_and_tell_to_a_stopped_actor_raise_actor_stopped() -> None:
    async with Supervisor() as sup:
        actor = Recorder()
        await sup.start(actor)
        await sup.stop(actor)

        assert state(actor) is Lifecycle.STOPPED
        assert actor.stops == 1
        with pytest.raises(ActorStopped):
            await actor.ask(Record(1))
        with pytest.raises(ActorStopped):
            await actor.tell(Record(1))


async def test_stop_fails_pending_asks_and_lets_the_current_one_finish() -> None:
    async with Supervisor() as sup:
        actor = Recorder()
        await sup.start(actor)
        current = asyncio.create_task(actor.ask(Hold()))
        await actor.holding.wait()
        pending = [asyncio.create_task(actor.ask(Record(n))) for n in range(3)]
        await settle()

        stopping = asyncio.create_task(sup.stop(actor))
        await settle()
        assert state(actor) is Lifecycle.STOPPING
        actor.gate.set()
        await stopping

        assert await current == "released"
        for ask in pending:
            with pytest.raises(ActorStopped):
                await ask
        assert state(actor) is Lifecycle.STOPPED
        assert actor.stops == 1
        assert actor.seen == []


async def test_stop_cancels_a_handler_that_never_returns_and_fails_its_ask() -> None:
    clock = VirtualClock()
    async with Supervisor(clock=clock, stop_timeout_s=5.0) as sup:
        actor = Recorder()
        await sup.start(actor)
        stuck = asyncio.create_task(actor.ask(Hold()))
        await actor.holding.wait()

        stopping = asyncio.create_task(sup.stop(actor))
        await advance_until(clock, stopping)

        with pytest.raises(ActorStopped):
            await stuck
        assert state(actor) is Lifecycle.STOPPED
        assert actor.stops == 0  # cancelled in the handler, on_stop never ran
        assert clock.monotonic() >= 5.0


async def test_wait_ready_resolves_after_on_start() -> None:
    async with Supervisor() as sup:
        actor = Recorder()
        waiting = asyncio.create_task(actor.wait_ready())
        await settle()
        assert not waiting.done()

        await sup.start(actor)
        await waiting
        assert actor.starts == 1


async def test_the_lifecycle_guard_refuses_illegal_moves() -> None:
    actor = Recorder()
    assert state(actor) is Lifecycle.STARTING
    with pytest.raises(InvalidTransition):
        actor.transition(Lifecycle.STARTING)

    actor.transition(Lifecycle.RUNNING)
    with pytest.raises(InvalidTransition, match="running -> stopped"):
        actor.transition(Lifecycle.STOPPED)  # only through STOPPING

    actor.transition(Lifecycle.STOPPING)
    with pytest.raises(InvalidTransition):
        actor.transition(Lifecycle.RUNNING)
    with pytest.raises(InvalidTransition):
        actor.resume()

    actor.transition(Lifecycle.STOPPED)
    for target in Lifecycle:
        with pytest.raises(InvalidTransition):
            actor.transition(target)
    with pytest.raises(InvalidTransition):
        actor.suspend()


async def test_halted_is_final() -> None:
    actor = Recorder()
    actor.transition(Lifecycle.HALTED)
    for target in Lifecycle:
        with pytest.raises(InvalidTransition):
            actor.transition(target)


async def test_a_suspended_actor_still_handles_messages() -> None:
    async with Supervisor() as sup:
        actor = Recorder()
        await sup.start(actor)

        actor.suspend()
        actor.suspend()  # idempotent
        assert state(actor) is Lifecycle.SUSPENDED
        assert await actor.ask(Record(1)) == 10

        actor.resume()
        assert state(actor) is Lifecycle.RUNNING


async def test_a_suspended_actor_comes_back_suspended_after_a_restart() -> None:
    async with Supervisor() as sup:
        actor = Recorder()
        await sup.start(actor)
        actor.suspend()

        with pytest.raises(ValueError, match="boom"):
            await actor.ask(Fail())
        await actor.ask(Record(1))

        assert sup.restarts(actor) == 1
        assert state(actor) is Lifecycle.SUSPENDED


async def test_suspend_while_starting_takes_effect_when_ready() -> None:
    async with Supervisor() as sup:
        actor = Recorder()
        actor.suspend()
        assert state(actor) is Lifecycle.STARTING

        await sup.start(actor)
        assert state(actor) is Lifecycle.SUSPENDED


def test_mailbox_size_must_be_positive() -> None:
    with pytest.raises(ValueError, match="mailbox_size"):
        Recorder(mailbox_size=0)


async def test_dropped_tells_are_logged_on_stop(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="runtime.actor")
    async with Supervisor() as sup:
        actor = Recorder()
        await sup.start(actor)
        await actor.tell(Hold())
        await actor.holding.wait()
        await actor.tell(Record(1))
        await actor.tell(Record(2))
        stopping = asyncio.create_task(sup.stop(actor))
        await settle()
        actor.gate.set()
        await stopping

    assert "2 told messages dropped" in caplog.text
