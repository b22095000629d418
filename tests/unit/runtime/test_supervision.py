"""The supervisor: ready-before-routed start, restarts, halting, shutdown, owned tasks."""

from __future__ import annotations

import asyncio
import inspect
import logging
from typing import Any

import msgspec
import pytest

from runtime.actor import Actor, ActorError, ActorHalted, ActorStopped, Lifecycle
from runtime.alerts import Alert, Severity
from runtime.clock import VirtualClock
from runtime.supervision import Supervisor


class Ping(msgspec.Struct, frozen=True, tag=True):
    value: int = 0


class Crash(msgspec.Struct, frozen=True, tag=True):
    reason: str = "boom"


Msg = Ping | Crash


class Worker(Actor[Msg]):
    """Counts its starts and stops; ``fail_starts`` makes the next on_starts raise."""

    def __init__(self, name: str, journal: list[str] | None = None) -> None:
        super().__init__(name)
        self.journal = journal if journal is not None else []
        self.starts = 0
        self.fail_starts = 0
        self.gate: asyncio.Event | None = None  # when set, on_start waits for it
        self.starting = asyncio.Event()

    async def on_start(self) -> None:
        self.starts += 1
        self.starting.set()
        if self.gate is not None:
            await self.gate.wait()
        if self.fail_starts:
            self.fail_starts -= 1
            raise RuntimeError(f"{self.name}: cannot load state")
        self.journal.append(f"start {self.name}")

    async def on_stop(self) -> None:
        self.journal.append(f"stop {self.name}")

    async def receive(self, msg: Msg) -> object:
        match msg:
            case Ping(value=value):
                return value
            case Crash(reason=reason):
                raise ValueError(reason)


class Straggler(Worker):
    """An on_stop that ignores cancellation until released."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.stopping = asyncio.Event()
        self.cancelled = asyncio.Event()
        self.release = asyncio.Event()

    async def on_stop(self) -> None:
        self.stopping.set()
        try:
            await self.release.wait()
        except asyncio.CancelledError:
            self.cancelled.set()
            await self.release.wait()


async def idle() -> None:
    await asyncio.Event().wait()


def other_tasks() -> set[asyncio.Task[object]]:
    return {task for task in asyncio.all_tasks() if task is not asyncio.current_task()}


def state(actor: Actor[Any]) -> Lifecycle:
    """Read the lifecycle afresh (keeps mypy from narrowing it across awaits)."""
    return actor.lifecycle


async def advance_until(clock: VirtualClock, done: asyncio.Event | asyncio.Task[object]) -> None:
    """Move virtual time a second at a time until ``done``; fail after 100 s."""
    for _ in range(100):
        if done.is_set() if isinstance(done, asyncio.Event) else done.done():
            return
        await clock.advance(1.0)
    raise AssertionError("condition not reached in 100 virtual seconds")


async def test_start_returns_only_once_on_start_has_finished() -> None:
    async with Supervisor() as sup:
        actor = Worker("AAPL")
        actor.gate = asyncio.Event()
        starting = asyncio.create_task(sup.start(actor))
        await actor.starting.wait()

        assert not starting.done()
        assert state(actor) is Lifecycle.STARTING

        actor.gate.set()
        await starting
        assert state(actor) is Lifecycle.RUNNING
        assert actor.journal == ["start AAPL"]
        assert sup.children == [actor]


async def test_a_failing_first_on_start_propagates_and_leaves_the_actor_stopped() -> None:
    async with Supervisor() as sup:
        actor = Worker("AAPL")
        actor.fail_starts = 1
        told_early = asyncio.create_task(actor.ask(Ping(1)))
        await asyncio.sleep(0)

        with pytest.raises(RuntimeError, match="cannot load state"):
            await sup.start(actor)

        assert state(actor) is Lifecycle.STOPPED
        assert sup.children == []
        assert sup.restarts(actor) == 0
        with pytest.raises(ActorStopped):
            await told_early
        with pytest.raises(ActorStopped):
            await actor.wait_ready()
        with pytest.raises(ActorError, match="started before"):
            await sup.start(actor)


async def test_a_crash_loop_is_restarted_then_halted_with_a_critical_alert() -> None:
    alerts: list[Alert] = []
    clock = VirtualClock()
    async with Supervisor(clock=clock, intensity=3, period_s=60.0, alert=alerts.append) as sup:
        actor = Worker("TSLA")
        for _ in range(4):
            await actor.tell(Crash())
        pending = asyncio.create_task(actor.ask(Ping(1)))
        await asyncio.sleep(0)

        await sup.start(actor)
        with pytest.raises(ActorHalted):
            await pending

        assert state(actor) is Lifecycle.HALTED
        assert sup.restarts(actor) == 3
        assert actor.starts == 4
        assert [a.kind for a in alerts] == ["halted"]
        assert alerts[0].severity is Severity.CRITICAL
        assert alerts[0].symbol == "TSLA"
        assert "boom" in alerts[0].message
        with pytest.raises(ActorHalted):
            await actor.tell(Ping(2))
        with pytest.raises(ActorHalted):
            await actor.ask(Ping(3))
        assert sup.children == [actor]  # kept for inspection


async def test_restarts_outside_the_window_do_not_accumulate() -> None:
    alerts: list[Alert] = []
    clock = VirtualClock()
    async with Supervisor(clock=clock, intensity=3, period_s=60.0, alert=alerts.append) as sup:
        actor = Worker("MSFT")
        await sup.start(actor)

        for _ in range(10):
            with pytest.raises(ValueError, match="boom"):
                await actor.ask(Crash())
            assert await actor.ask(Ping(1)) == 1  # restarted
            await clock.advance(30.0)  # at most 2 crashes in any 60 s window

        assert sup.restarts(actor) == 10
        assert state(actor) is Lifecycle.RUNNING
        assert alerts == []

        # The last crash (t=270) is still in the window at t=300: two more restart,
        # the third is a fourth crash within 60 s and halts.
        for _ in range(2):
            with pytest.raises(ValueError, match="boom"):
                await actor.ask(Crash())
            assert await actor.ask(Ping(1)) == 1
        assert sup.restarts(actor) == 12
        with pytest.raises(ValueError, match="boom"):
            await actor.ask(Crash())
        with pytest.raises(ActorHalted):
            await actor.ask(Ping(1))
        assert [a.kind for a in alerts] == ["halted"]


async def test_a_failing_on_start_during_a_restart_counts_as_a_crash() -> None:
    alerts: list[Alert] = []
    async with Supervisor(clock=VirtualClock(), intensity=3, alert=alerts.append) as sup:
        actor = Worker("NVDA")
        await sup.start(actor)
        actor.fail_starts = 100

        with pytest.raises(ValueError, match="boom"):
            await actor.ask(Crash())
        with pytest.raises(ActorHalted):
            await actor.ask(Ping())

        assert sup.restarts(actor) == 3
        assert actor.starts == 4
        assert [a.kind for a in alerts] == ["halted"]
        assert "cannot load state" in alerts[0].message


async def test_a_crashing_child_does_not_disturb_its_siblings() -> None:
    async with Supervisor(clock=VirtualClock(), intensity=0, alert=lambda _: None) as sup:
        doomed, sibling = Worker("A"), Worker("B")
        await sup.start(doomed)
        await sup.start(sibling)

        with pytest.raises(ValueError, match="boom"):
            await doomed.ask(Crash())

        assert await sibling.ask(Ping(5)) == 5
        assert state(doomed) is Lifecycle.HALTED
        assert state(sibling) is Lifecycle.RUNNING


async def test_shutdown_stops_in_reverse_start_order_and_leaves_no_task() -> None:
    journal: list[str] = []
    ticks = asyncio.Event()

    async def pump() -> None:
        ticks.set()
        await asyncio.Event().wait()

    async with Supervisor() as sup:
        for name in ("writer", "supervisor", "AAPL"):
            await sup.start(Worker(name, journal))
        sup.spawn(pump(), name="pump")
        await ticks.wait()
        assert len(other_tasks()) == 4

        assert await sup.shutdown() == []

        assert other_tasks() == set()
        assert sup.children == []
    assert journal[3:] == ["stop AAPL", "stop supervisor", "stop writer"]


async def test_leaving_the_block_shuts_everything_down() -> None:
    journal: list[str] = []
    async with Supervisor() as sup:
        await sup.start_all([Worker(f"S{n}", journal) for n in range(50)])
        sup.spawn(idle(), name="idle")

    assert other_tasks() == set()
    assert sorted(entry for entry in journal if entry.startswith("stop")) == sorted(
        f"stop S{n}" for n in range(50)
    )
    with pytest.raises(RuntimeError, match="not running"):
        await sup.start(Worker("late"))


async def test_a_straggler_is_logged_and_returned(caplog: pytest.LogCaptureFixture) -> None:
    clock = VirtualClock()
    async with Supervisor(clock=clock, stop_timeout_s=5.0) as sup:
        slow, fine = Straggler("slow"), Worker("fine")
        await sup.start(fine)
        await sup.start(slow)
        shutting = asyncio.create_task(sup.shutdown())
        await slow.stopping.wait()

        await advance_until(clock, slow.cancelled)  # 5 s to stop in order, then cancelled
        await advance_until(clock, shutting)  # 5 s more, still running: a straggler

        assert await shutting == ["slow"]
        assert "slow ignored cancellation" in caplog.text
        assert state(fine) is Lifecycle.STOPPED  # the next tier still stopped in order
        assert fine.journal == ["start fine", "stop fine"]
        slow.release.set()

    assert other_tasks() == set()
    assert state(slow) is Lifecycle.STOPPED


async def test_a_failing_background_task_is_logged_and_alerted(
    caplog: pytest.LogCaptureFixture,
) -> None:
    alerts: list[Alert] = []

    async def timer() -> None:
        raise OSError("clock source gone")

    async with Supervisor(alert=alerts.append) as sup:
        actor = Worker("AAPL")
        await sup.start(actor)
        task = sup.spawn(timer(), name="checkpoint-timer")
        await asyncio.wait({task})

        assert [(a.kind, a.severity) for a in alerts] == [("task", Severity.CRITICAL)]
        assert "checkpoint-timer" in alerts[0].message
        assert "clock source gone" in caplog.text
        assert await actor.ask(Ping(1)) == 1  # the group is intact


async def test_spawn_after_shutdown_raises_and_closes_the_coroutine() -> None:
    async with Supervisor() as sup:
        await sup.shutdown()
        coro = asyncio.sleep(0)

        with pytest.raises(RuntimeError, match="not running"):
            sup.spawn(coro, name="late")
        assert inspect.getcoroutinestate(coro) == inspect.CORO_CLOSED  # no "never awaited"


async def test_start_all_reports_every_failure_and_keeps_the_others() -> None:
    async with Supervisor() as sup:
        good, bad = Worker("good"), Worker("bad")
        bad.fail_starts = 1

        with pytest.raises(ExceptionGroup) as caught:
            await sup.start_all([good, bad])

        assert len(caught.value.exceptions) == 1
        assert state(bad) is Lifecycle.STOPPED
        assert state(good) is Lifecycle.RUNNING
        assert sup.children == [good]


async def test_names_are_unique_among_children() -> None:
    async with Supervisor() as sup:
        await sup.start(Worker("AAPL"))

        with pytest.raises(ActorError, match="already supervised"):
            await sup.start(Worker("AAPL"))
        with pytest.raises(ActorError, match="duplicate"):
            await sup.start_all([Worker("X"), Worker("X")])


async def test_stop_runs_on_stop_once_and_forgets_the_child() -> None:
    async with Supervisor() as sup:
        actor = Worker("AAPL")
        await sup.start(actor)

        await sup.stop(actor)
        await sup.stop(actor)  # already stopped: nothing to do

        assert actor.journal == ["start AAPL", "stop AAPL"]
        assert sup.children == []
        with pytest.raises(ActorError, match="not supervised"):
            await sup.stop(Worker("stranger"))


async def test_halting_is_logged_critical(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.CRITICAL, logger="runtime.supervision")
    async with Supervisor(intensity=0, alert=lambda _: None) as sup:
        actor = Worker("AMD")
        await sup.start(actor)
        with pytest.raises(ValueError, match="boom"):
            await actor.ask(Crash())
        with pytest.raises(ActorHalted):
            await actor.ask(Ping())

    halted = [r for r in caplog.records if r.levelno == logging.CRITICAL]
    assert len(halted) == 1
    assert "AMD crashed more than 0 times" in halted[0].getMessage()


async def test_an_error_in_the_block_propagates_unchanged_after_an_orderly_stop() -> None:
    journal: list[str] = []

    async def session() -> None:
        async with Supervisor() as sup:
            await sup.start(Worker("AAPL", journal))
            raise LookupError("strategy bug")

    with pytest.raises(LookupError, match="strategy bug"):
        await session()
    assert journal == ["start AAPL", "stop AAPL"]
    assert other_tasks() == set()


async def test_cancelling_the_owner_still_stops_children_in_order() -> None:
    journal: list[str] = []
    running = asyncio.Event()

    async def session() -> None:
        async with Supervisor() as sup:
            await sup.start(Worker("writer", journal))
            await sup.start(Worker("AAPL", journal))
            running.set()
            await asyncio.Event().wait()

    owner = asyncio.create_task(session())
    await running.wait()
    owner.cancel()

    with pytest.raises(asyncio.CancelledError):
        await owner
    assert journal[2:] == ["stop AAPL", "stop writer"]
    assert other_tasks() == set()


async def test_a_child_cancelled_from_outside_ends_stopped_and_fails_its_asks(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async with Supervisor() as sup:
        actor = Worker("AAPL")
        await sup.start(actor)
        (task,) = (t for t in other_tasks() if t.get_name() == "actor:AAPL")

        task.cancel()
        await asyncio.wait({task})

        assert state(actor) is Lifecycle.STOPPED
        assert "AAPL was cancelled while running" in caplog.text
        assert sup.children == []
        with pytest.raises(ActorStopped):
            await actor.ask(Ping())
