"""Supervision: who owns every task, who restarts a crashed actor, who halts it.

Why it is built this way:

* One ``asyncio.TaskGroup`` owns every task of the kernel: actor loops and the
  background tasks handed to ``spawn()``. Nothing runs without an owner, and
  shutdown can show it left nothing behind.
* A TaskGroup cancels everything when one of its tasks raises, so no task of
  ours ever does: each child runs in a wrapper that catches its crashes and
  decides, one-for-one, to restart it or to halt it. Only cancellation passes.
* Start is a handshake (trio's ``nursery.start``): ``start()`` returns once the
  child has loaded its state, so nothing is routed to a half-started actor.
* Restart intensity and every timeout are measured with the injected clock, so
  the kernel runs unchanged under a virtual clock.
* Shutdown goes in reverse start order, one *tier* at a time: actors started
  together by ``start_all()`` stop together (their final checkpoints can share
  one commit), and each tier is stopped before the ones it may depend on.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Coroutine, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from types import TracebackType
from typing import Any

from runtime.actor import Actor, ActorError, Lifecycle
from runtime.alerts import Alert, AlertSink, Severity, log_alert
from runtime.clock import Clock, RealClock

__all__ = ["Supervisor"]

_log = logging.getLogger(__name__)


def _alert(kind: str, message: str, at: datetime, symbol: str | None) -> Alert:
    return Alert(kind=kind, severity=Severity.CRITICAL, message=message, at=at, symbol=symbol)


@dataclass(eq=False)
class _Child:
    actor: Actor[Any]
    tier: int
    task: asyncio.Task[None] | None = None
    crashes: deque[float] = field(default_factory=deque)  # monotonic times in the window
    restarts: int = 0


class Supervisor:
    """Own actors and background tasks; restart crashed actors one-for-one.

    Use as ``async with Supervisor(...) as sup:``; leaving the block shuts
    everything down. More than ``intensity`` restarts of one actor within
    ``period_s`` halt it, with a critical ``halted`` alert.
    """

    def __init__(
        self,
        *,
        name: str = "root",
        clock: Clock | None = None,
        intensity: int = 3,
        period_s: float = 60.0,
        alert: AlertSink = log_alert,
        stop_timeout_s: float = 5.0,
    ) -> None:
        self.name = name
        self._clock: Clock = clock if clock is not None else RealClock()
        self._intensity = intensity
        self._period_s = period_s
        self._alert = alert
        self._stop_timeout_s = stop_timeout_s
        self._tg: asyncio.TaskGroup | None = None
        self._children: dict[str, _Child] = {}  # by actor name, in start order
        self._spawned: set[asyncio.Task[None]] = set()
        self._tiers = 0
        self._closing = False
        self._shut = asyncio.Event()

    async def __aenter__(self) -> Supervisor:
        if self._tg is not None:
            raise RuntimeError(f"supervisor {self.name} was already entered")
        tg = asyncio.TaskGroup()
        await tg.__aenter__()
        self._tg = tg
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        assert self._tg is not None
        try:
            await self.shutdown()
        except BaseException as err:
            # Interrupted (cancelled again): let the TaskGroup cancel what is left.
            await self._tg.__aexit__(type(err), err, err.__traceback__)
            raise
        # Waits for stragglers, if any, to end.
        await self._tg.__aexit__(None, None, None)

    @property
    def children(self) -> list[Actor[Any]]:
        """Return the supervised actors (halted ones included), in start order."""
        return [child.actor for child in self._children.values()]

    def restarts(self, actor: Actor[Any]) -> int:
        """Return how many times ``actor`` was restarted (0 if not supervised here)."""
        child = self._children.get(actor.name)
        return child.restarts if child is not None and child.actor is actor else 0

    # -- starting --------------------------------------------------------------

    async def start(self, actor: Actor[Any]) -> None:
        """Start ``actor`` and return once its ``on_start`` has succeeded.

        Raise what the first ``on_start`` raised (the actor is then STOPPED);
        ``ActorError`` when the actor was started before or its name is taken;
        ``RuntimeError`` when the supervisor is not running.
        """
        self._tiers += 1
        child = self._launch(actor, self._tiers)
        await self._until_ready(child)

    async def start_all(self, actors: Iterable[Actor[Any]]) -> None:
        """Start ``actors`` concurrently as one tier; return once all are ready.

        They stop together at shutdown. Raise an ``ExceptionGroup`` of the
        ``on_start`` errors of those that failed (they are STOPPED, the others
        run); otherwise as ``start()``.
        """
        batch = list(actors)
        names = [actor.name for actor in batch]
        if len(set(names)) != len(names):
            raise ActorError(f"duplicate actor names in {names}")
        self._tiers += 1
        children = [self._launch(actor, self._tiers) for actor in batch]
        errors: list[Exception] = []
        for child in children:
            try:
                await self._until_ready(child)
            except Exception as exc:
                errors.append(exc)
        if errors:
            raise ExceptionGroup(f"{len(errors)} of {len(batch)} actors failed to start", errors)

    def _running_group(self) -> asyncio.TaskGroup:
        if self._tg is None or self._closing:
            raise RuntimeError(f"supervisor {self.name} is not running")
        return self._tg

    def _launch(self, actor: Actor[Any], tier: int) -> _Child:
        tg = self._running_group()
        if actor._supervised or actor.lifecycle is not Lifecycle.STARTING:
            raise ActorError(f"{actor.name} was started before ({actor.lifecycle.value})")
        if actor.name in self._children:
            raise ActorError(f"an actor named {actor.name!r} is already supervised")
        actor._supervised = True
        child = _Child(actor, tier)
        self._children[actor.name] = child
        child.task = tg.create_task(self._supervise(child), name=f"actor:{actor.name}")
        child.task.add_done_callback(lambda _: self._ended(child))
        return child

    def _ended(self, child: _Child) -> None:
        # Also the backstop for a task cancelled before its first step, whose
        # finally never ran. A halted child stays listed for inspection.
        child.actor._close()
        if (
            child.actor.lifecycle is Lifecycle.STOPPED
            and self._children.get(child.actor.name) is child
        ):
            del self._children[child.actor.name]

    async def _until_ready(self, child: _Child) -> None:
        actor = child.actor
        await actor._ready.wait()
        if actor._start_error is not None:
            assert child.task is not None
            await asyncio.wait({child.task})
            self._children.pop(actor.name, None)
            raise actor._start_error

    # -- the child's wrapper ---------------------------------------------------

    async def _supervise(self, child: _Child) -> None:
        actor = child.actor
        try:
            try:
                await actor._boot()
            except Exception as exc:
                _log.error("%s failed to start: %r", actor.name, exc)
                actor._fail_start(exc)
                return
            while True:
                crash = await actor._serve()
                if crash is None:
                    if actor.lifecycle is Lifecycle.STOPPING:
                        await actor._stop()
                    return
                if not await self._recover(child, crash):
                    return
        except asyncio.CancelledError:
            if actor.lifecycle is not Lifecycle.STOPPING and not self._closing:
                _log.warning("%s was cancelled while %s", actor.name, actor.lifecycle.value)
            raise
        except Exception as exc:  # a kernel bug: never let it tear the group down
            _log.critical("supervision of %s failed", actor.name, exc_info=exc)
            self._raise(_alert("kernel", repr(exc), self._clock.now(), actor.name))
        finally:
            actor._close()

    async def _recover(self, child: _Child, crash: BaseException) -> bool:
        """Restart a crashed child; return False when it is halted or stopping."""
        actor = child.actor
        while True:
            if actor.lifecycle not in (Lifecycle.RUNNING, Lifecycle.SUSPENDED, Lifecycle.STARTING):
                _log.error("%s crashed while %s", actor.name, actor.lifecycle.value, exc_info=crash)
                return False
            now = self._clock.monotonic()
            window = child.crashes
            while window and now - window[0] >= self._period_s:
                window.popleft()
            if len(window) >= self._intensity:
                self._halt(child, crash)
                return False
            window.append(now)
            child.restarts += 1
            _log.error(
                "%s crashed; restart %d (%d in the last %gs)",
                actor.name,
                child.restarts,
                len(window),
                self._period_s,
                exc_info=crash,
            )
            if actor.lifecycle is not Lifecycle.STARTING:
                actor.transition(Lifecycle.STARTING)
            try:
                await actor._boot()
            except Exception as exc:
                crash = exc
            else:
                return True

    def _halt(self, child: _Child, crash: BaseException) -> None:
        actor = child.actor
        actor._halt()
        message = (
            f"{actor.name} crashed more than {self._intensity} times in {self._period_s:g}s"
            f" and is halted; last error: {crash!r}"
        )
        _log.critical("%s", message, exc_info=crash)
        self._raise(_alert("halted", message, self._clock.now(), actor.name))

    def _raise(self, alert: Alert) -> None:
        try:
            self._alert(alert)
        except Exception:
            _log.exception("alert sink failed on %r", alert)

    # -- background tasks ------------------------------------------------------

    def spawn(self, coro: Coroutine[Any, Any, None], *, name: str) -> asyncio.Task[None]:
        """Run ``coro`` as an owned background task, cancelled at shutdown.

        An exception it raises is logged and raised as a critical ``task``
        alert. Raise ``RuntimeError`` (and close ``coro``) when the supervisor
        is not running.
        """
        try:
            tg = self._running_group()
        except RuntimeError:
            coro.close()
            raise
        task = tg.create_task(self._guard(coro, name), name=name)
        self._spawned.add(task)
        task.add_done_callback(self._spawned.discard)
        # Cancelled before its first step, the guard never awaited coro: close it.
        task.add_done_callback(lambda _: coro.close())
        return task

    async def _guard(self, coro: Coroutine[Any, Any, None], name: str) -> None:
        try:
            await coro
        except Exception as exc:
            error: BaseException = exc
        except asyncio.CancelledError as exc:
            task = asyncio.current_task()
            if task is None or task.cancelling():
                raise
            error = exc  # a foreign cancellation ended it: it must not vanish quietly
        else:
            return
        _log.error("background task %s failed", name, exc_info=error)
        message = f"background task {name} failed: {error!r}"
        self._raise(_alert("task", message, self._clock.now(), None))

    # -- stopping --------------------------------------------------------------

    async def stop(self, actor: Actor[Any]) -> None:
        """Stop ``actor`` in order (``on_stop``), cancelling it after the stop timeout.

        Do nothing for an actor already stopped or halted elsewhere; raise
        ``ActorError`` for a live actor this supervisor does not supervise.
        """
        child = self._children.get(actor.name)
        if child is None or child.actor is not actor:
            if actor.lifecycle in (Lifecycle.STOPPED, Lifecycle.HALTED):
                return
            raise ActorError(f"{actor.name} is not supervised by {self.name}")
        await self._stop_tier([child], self._stop_timeout_s)

    async def shutdown(self, timeout_s: float | None = None) -> list[str]:
        """Stop everything; return the names of tasks still running afterwards.

        Background tasks are cancelled first (nothing new reaches a stopping
        actor), then actors stop in reverse start order, tier by tier, each
        tier given ``timeout_s`` (default: the stop timeout) to stop in order
        and as long again once cancelled. Stragglers are logged.
        """
        if self._closing:
            await self._shut.wait()
            return []
        self._closing = True
        timeout = self._stop_timeout_s if timeout_s is None else timeout_s
        stragglers: list[str] = []
        spawned = set(self._spawned)
        for task in spawned:
            task.cancel()
        for task in await self._wait(spawned, timeout):
            _log.error("background task %s ignored cancellation for %gs", task.get_name(), timeout)
            stragglers.append(task.get_name())
        tiers: dict[int, list[_Child]] = {}
        for child in reversed(self._children.values()):
            tiers.setdefault(child.tier, []).append(child)
        for tier in sorted(tiers, reverse=True):
            stragglers += await self._stop_tier(tiers[tier], timeout)
        if stragglers:
            _log.error("supervisor %s shut down with stragglers: %s", self.name, stragglers)
        self._shut.set()
        return stragglers

    async def _stop_tier(self, children: list[_Child], timeout_s: float) -> list[str]:
        for child in children:
            child.actor._request_stop()
        tasks = {child.task for child in children if child.task is not None}
        pending = await self._wait(tasks, timeout_s)
        if pending:
            _log.warning(
                "%s did not stop within %gs; cancelling",
                sorted(task.get_name() for task in pending),
                timeout_s,
            )
            for task in pending:
                task.cancel()
            pending = await self._wait(pending, timeout_s)
        stragglers: list[str] = []
        for child in children:
            self._children.pop(child.actor.name, None)
            if child.task in pending:
                _log.error("%s ignored cancellation for %gs", child.actor.name, timeout_s)
                stragglers.append(child.actor.name)
        return stragglers

    async def _wait(
        self, tasks: set[asyncio.Task[None]], timeout_s: float
    ) -> set[asyncio.Task[None]]:
        """Wait until ``tasks`` are done or ``timeout_s`` (clock) passes; return those left."""
        pending = {task for task in tasks if not task.done()}
        if not pending:
            return pending
        all_done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        left = len(pending)

        def on_done(_: asyncio.Task[None]) -> None:
            nonlocal left
            left -= 1
            if left == 0 and not all_done.done():
                all_done.set_result(None)

        for task in pending:
            task.add_done_callback(on_done)
        try:
            async with asyncio.TaskGroup() as timers:
                timer = timers.create_task(self._clock.sleep(timeout_s), name="stop-timer")
                await asyncio.wait({all_done, timer}, return_when=asyncio.FIRST_COMPLETED)
                timer.cancel()
        finally:
            for task in pending:
                task.remove_done_callback(on_done)
            all_done.cancel()
        return {task for task in pending if not task.done()}
