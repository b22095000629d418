"""The actor kernel: one bounded mailbox, one loop task, one message at a time.

Why it is built this way:

* An actor's state is touched only by its own loop task, which handles one
  message at a time, in order, so subclasses need no locks. There is one loop
  task per actor, never a task per message.
* The mailbox is a bounded ``deque`` with hand-rolled waiters rather than an
  ``asyncio.Queue``: a ``tell`` into a mailbox with room appends and wakes the
  loop without yielding, and the loop drains everything queued before it sleeps
  again. That keeps the per-message cost to a few attribute reads.
* A subclass may handle a message without awaiting (``receive_now``): most
  bars need no I/O, and a coroutine per message is a good part of their cost.
  It runs in the same place as ``receive``, one message at a time, in order.
* Lifecycle is one ``Enum`` moved only through ``transition()``, the one guard.
  Closing the mailbox, failing blocked senders and waking the loop hang off it,
  so no boolean can disagree with the lifecycle.
* Restarts, restart intensity and task ownership belong to the supervisor
  (``runtime/supervision.py``); this module only provides the steps it drives
  (boot, serve, stop, close). Teardown fails every pending ask with a typed
  error, so nobody hangs on a dead actor.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
from collections import deque
from collections.abc import Awaitable
from typing import Final, Generic, TypeVar

__all__ = [
    "UNHANDLED",
    "Actor",
    "ActorError",
    "ActorHalted",
    "ActorStopped",
    "Continue",
    "InvalidTransition",
    "Lifecycle",
    "Refusal",
]

_log = logging.getLogger(__name__)

M = TypeVar("M")


class Lifecycle(enum.Enum):
    """Where an actor is; moved only through ``Actor.transition()``."""

    STARTING = "starting"
    RUNNING = "running"
    SUSPENDED = "suspended"
    STOPPING = "stopping"
    STOPPED = "stopped"
    HALTED = "halted"


class ActorError(Exception):
    """Base of the kernel's errors."""


class ActorStopped(ActorError):
    """The actor is stopping or stopped: it takes no message, pending asks fail."""


class ActorHalted(ActorStopped):
    """The actor was halted by its supervisor after too many crashes."""


class InvalidTransition(ActorError):
    """An illegal lifecycle move was attempted."""


class Refusal(Exception):
    """Raised by a handler to refuse a message: the asker gets it, the actor lives on."""


_S = Lifecycle
_LEGAL: Final[dict[Lifecycle, frozenset[Lifecycle]]] = {
    _S.STARTING: frozenset({_S.RUNNING, _S.SUSPENDED, _S.STOPPING, _S.STOPPED, _S.HALTED}),
    _S.RUNNING: frozenset({_S.SUSPENDED, _S.STARTING, _S.STOPPING, _S.HALTED}),
    _S.SUSPENDED: frozenset({_S.RUNNING, _S.STARTING, _S.STOPPING, _S.HALTED}),
    _S.STOPPING: frozenset({_S.STOPPED}),
    _S.STOPPED: frozenset(),
    _S.HALTED: frozenset(),
}

# Bound once: a member read through its class is a descriptor call (~0.1 us on
# 3.11), and every actor moves through these at start and stop.
_RUNNING, _SUSPENDED, _STOPPING, _STOPPED, _HALTED = (
    _S.RUNNING,
    _S.SUSPENDED,
    _S.STOPPING,
    _S.STOPPED,
    _S.HALTED,
)

_Reply = asyncio.Future[object]


class _Ask(Generic[M]):
    __slots__ = ("msg", "reply")

    def __init__(self, msg: M, reply: _Reply) -> None:
        self.msg = msg
        self.reply = reply


class _Unhandled:
    __slots__ = ()

    def __repr__(self) -> str:
        return "UNHANDLED"


UNHANDLED: Final = _Unhandled()
"""What ``Actor.receive_now`` returns for a message it leaves to ``receive``."""


class Continue:
    """What ``Actor.receive_now`` returns when work that awaits remains."""

    __slots__ = ("awaitable",)

    def __init__(self, awaitable: Awaitable[object]) -> None:
        self.awaitable = awaitable


class Actor(Generic[M]):
    """Base class of every actor: override ``on_start``, ``receive`` and ``on_stop``.

    ``M`` is the actor's message type, a union of frozen tagged msgspec Structs.
    An actor runs only once a ``Supervisor`` has started it; messages told
    before that wait in the mailbox.
    """

    def __init__(self, name: str, *, mailbox_size: int = 1024) -> None:
        if mailbox_size < 1:
            raise ValueError(f"mailbox_size must be >= 1, got {mailbox_size}")
        self.name = name
        self._mailbox_size = mailbox_size
        # A told message is queued as itself, an asked one inside an ``_Ask``.
        self._mailbox: deque[M | _Ask[M]] = deque()
        self._putters: deque[asyncio.Future[None]] = deque()
        self._getter: asyncio.Future[None] | None = None
        self._lifecycle = Lifecycle.STARTING
        self._serving = False  # lifecycle is RUNNING or SUSPENDED
        self._closed: type[ActorStopped] | None = None  # the error senders get
        self._want_suspended = False
        self._current: _Reply | None = None  # reply of the message in hand
        self._ready = asyncio.Event()
        self._start_error: BaseException | None = None
        self._supervised = False

    def __repr__(self) -> str:
        return (
            f"<{type(self).__name__} {self.name!r} {self._lifecycle.value}"
            f" mailbox={len(self._mailbox)}/{self._mailbox_size}>"
        )

    @property
    def lifecycle(self) -> Lifecycle:
        """Return where the actor is in its lifecycle."""
        return self._lifecycle

    @property
    def mailbox_depth(self) -> int:
        """Return how many messages wait in the mailbox (not counting the one in hand)."""
        return len(self._mailbox)

    @property
    def mailbox_size(self) -> int:
        """Return the mailbox bound: a ``tell`` beyond it waits."""
        return self._mailbox_size

    # -- hooks -------------------------------------------------------------

    async def on_start(self) -> None:
        """Load state; run at the first start and again at every restart after a crash."""

    async def receive(self, msg: M) -> object:
        """Handle one message and return the reply; raise a ``Refusal`` to refuse it.

        Any other exception crashes the actor (after reaching the asker).
        """
        raise NotImplementedError(f"{type(self).__name__} does not handle {msg!r}")

    def receive_now(self, msg: M) -> object:
        """Handle ``msg`` without awaiting when that is possible (a fast path).

        Return ``UNHANDLED`` to have ``receive`` handle it instead, or
        ``Continue(awaitable)`` when work that awaits remains: its result is
        the reply. Same rules as ``receive`` otherwise (one message at a time,
        in order; ``Refusal`` refuses, anything else crashes).
        """
        return UNHANDLED

    async def on_stop(self) -> None:
        """Release resources (e.g. write a final checkpoint); run once on an orderly stop."""

    # -- messaging -----------------------------------------------------------

    async def tell(self, msg: M) -> None:
        """Enqueue ``msg``; wait while the mailbox is full.

        Raise ``ActorStopped`` (``ActorHalted``) when the actor is stopping,
        stopped or halted, including while waiting for room.
        """
        if self._closed is not None:
            raise self._closed_error()
        if len(self._mailbox) >= self._mailbox_size:
            await self._wait_room()
        self._mailbox.append(msg)
        getter = self._getter
        if getter is not None and not getter.done():
            getter.set_result(None)

    async def ask(self, msg: M, timeout: float | None = None) -> object:  # noqa: ASYNC109 (required API)
        """Enqueue ``msg`` and return the handler's reply.

        Raise what the handler raised; ``ActorStopped`` (``ActorHalted``) when
        the actor stops (is halted) before replying; ``TimeoutError`` after
        ``timeout`` seconds, in which case the message may still be handled.
        """
        if self._closed is not None:
            raise self._closed_error()
        reply: _Reply = asyncio.get_running_loop().create_future()
        if len(self._mailbox) >= self._mailbox_size:
            await self._wait_room()
        self._mailbox.append(_Ask(msg, reply))
        getter = self._getter
        if getter is not None and not getter.done():
            getter.set_result(None)
        if timeout is None:
            return await reply
        async with asyncio.timeout(timeout):
            return await reply

    # -- lifecycle -------------------------------------------------------------

    def transition(self, to: Lifecycle) -> None:
        """Move the lifecycle to ``to``; raise ``InvalidTransition`` on an illegal move."""
        current = self._lifecycle
        if to not in _LEGAL[current]:
            raise InvalidTransition(f"{self.name}: {current.value} -> {to.value} is not allowed")
        self._lifecycle = to
        self._serving = to is _RUNNING or to is _SUSPENDED
        if _log.isEnabledFor(logging.DEBUG):
            _log.debug("%s: %s -> %s", self.name, current.value, to.value)
        if to is _HALTED:
            self._closed = ActorHalted
        elif to is _STOPPING or to is _STOPPED:
            self._closed = ActorStopped
        else:
            return
        self._fail_putters()
        getter = self._getter
        if getter is not None and not getter.done():
            getter.set_result(None)

    def suspend(self) -> None:
        """Enter SUSPENDED (messages are still handled; subclasses refuse new orders).

        Suspending a suspended actor does nothing; an actor suspended while it
        (re)starts enters SUSPENDED when ready. Raise ``InvalidTransition`` when
        the actor is stopping, stopped or halted.
        """
        if self._lifecycle is Lifecycle.SUSPENDED:
            return
        if self._lifecycle is not Lifecycle.STARTING:
            self.transition(Lifecycle.SUSPENDED)
        self._want_suspended = True

    def resume(self) -> None:
        """Leave SUSPENDED for RUNNING; the counterpart of ``suspend()``.

        Raise ``InvalidTransition`` when the actor is stopping, stopped or halted.
        """
        if self._lifecycle is Lifecycle.RUNNING:
            return
        if self._lifecycle is not Lifecycle.STARTING:
            self.transition(Lifecycle.RUNNING)
        self._want_suspended = False

    async def wait_ready(self) -> None:
        """Wait until ``on_start`` has succeeded once.

        Raise ``ActorStopped`` when the actor never got ready (its first
        ``on_start`` failed, or it was stopped first).
        """
        await self._ready.wait()
        if self._start_error is not None:
            raise ActorStopped(f"{self.name} failed to start") from self._start_error

    # -- the kernel's side (driven by the supervisor) --------------------------

    def _closed_error(self) -> ActorStopped:
        error = self._closed or ActorStopped
        return error(f"{self.name} is {self._lifecycle.value}")

    async def _wait_room(self) -> None:
        loop = asyncio.get_running_loop()
        while len(self._mailbox) >= self._mailbox_size:
            waiter: asyncio.Future[None] = loop.create_future()
            self._putters.append(waiter)
            try:
                await waiter
            except BaseException:
                waiter.cancel()
                with contextlib.suppress(ValueError):
                    self._putters.remove(waiter)
                # Woken and cancelled at once: pass the free slot on.
                if self._closed is None and len(self._mailbox) < self._mailbox_size:
                    self._wake_putter()
                raise
        if self._closed is not None:
            raise self._closed_error()

    def _wake_putter(self) -> None:
        putters = self._putters
        while putters:
            waiter = putters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return

    def _fail_putters(self) -> None:
        putters = self._putters
        while putters:
            waiter = putters.popleft()
            if not waiter.done():
                waiter.set_exception(self._closed_error())

    async def _boot(self) -> None:
        """Run ``on_start`` and enter RUNNING (or SUSPENDED); raise what it raises."""
        await self.on_start()
        if self._lifecycle is Lifecycle.STARTING:
            self.transition(Lifecycle.SUSPENDED if self._want_suspended else Lifecycle.RUNNING)
        self._ready.set()

    def _fail_start(self, error: BaseException) -> None:
        self._start_error = error
        self._close()

    async def _serve(self) -> BaseException | None:
        """Handle messages while RUNNING or SUSPENDED; return the error of a crash."""
        mailbox = self._mailbox
        receive = self.receive
        receive_now = self.receive_now
        while self._serving:
            if not mailbox:
                waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
                self._getter = waiter
                try:
                    await waiter
                finally:
                    self._getter = None
                continue
            item = mailbox.popleft()
            if isinstance(item, _Ask):
                msg, reply = item.msg, item.reply
            else:
                msg, reply = item, None
            if self._putters:
                self._wake_putter()
            self._current = reply
            try:
                result = receive_now(msg)
                if result is UNHANDLED:
                    result = await receive(msg)
                elif type(result) is Continue:
                    result = await result.awaitable
            except Refusal as exc:
                self._current = None
                if reply is None:
                    _log.info("%s refused %r: %s", self.name, msg, exc)
                elif not reply.done():
                    reply.set_exception(exc)
            except Exception as exc:
                self._current = None
                if reply is not None and not reply.done():
                    reply.set_exception(exc)
                return exc
            except asyncio.CancelledError as exc:
                task = asyncio.current_task()
                if task is None or task.cancelling():
                    raise  # we are being cancelled: _close() fails the reply
                # A handler let a foreign CancelledError escape: a crash, not a stop.
                self._current = None
                crash = ActorError(f"{self.name}: handler raised CancelledError")
                crash.__cause__ = exc
                if reply is not None and not reply.done():
                    reply.set_exception(crash)
                return crash
            else:
                self._current = None
                if reply is not None and not reply.done():
                    reply.set_result(result)
        return None

    def _request_stop(self) -> None:
        if self._serving or self._lifecycle is Lifecycle.STARTING:
            self.transition(Lifecycle.STOPPING)

    async def _stop(self) -> None:
        """Run ``on_stop``; log what it raises."""
        try:
            await self.on_stop()
        except Exception:
            _log.exception("%s: on_stop failed", self.name)

    def _halt(self) -> None:
        self.transition(Lifecycle.HALTED)
        self._close()

    def _close(self) -> None:
        """End in STOPPED (unless HALTED) and fail every pending ask and sender."""
        if self._serving:
            self.transition(Lifecycle.STOPPING)
        if self._lifecycle is not Lifecycle.HALTED and self._lifecycle is not Lifecycle.STOPPED:
            self.transition(Lifecycle.STOPPED)
        if not self._ready.is_set():
            if self._start_error is None:
                self._start_error = self._closed_error()
            self._ready.set()
        current, self._current = self._current, None
        if current is not None and not current.done():
            current.set_exception(self._closed_error())
        dropped = 0
        while self._mailbox:
            item = self._mailbox.popleft()
            if type(item) is not _Ask:
                dropped += 1
            elif not item.reply.done():
                item.reply.set_exception(self._closed_error())
        if dropped:
            _log.warning(
                "%s: %d told messages dropped (%s)", self.name, dropped, self._lifecycle.value
            )
        self._fail_putters()
