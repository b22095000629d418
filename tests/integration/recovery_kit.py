"""Test kit of the recovery tests: a profile, the venue as the outside world, a trader.

The venue is the embedded sim venue on its own book file, opened by the test
whenever it plays the outside world (a price move, a hand trade, a canceled
stop) and injected into the trader when the trader runs in-process. Its market
time is driven by a ``VirtualClock`` the test advances, so a bar is printed
exactly when the test says so and a frozen clock means a frozen market.

Run as a script (``python recovery_kit.py SCENARIO STATE_DIR PROFILE``) it is a
trader process that plays SCENARIO on the venue, prints ``READY <json>`` once
the state to crash in is reached, and waits to be killed with SIGKILL.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import inspect
import json
import logging
import sqlite3
import sys
import time
from collections import Counter
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from datetime import timedelta
from pathlib import Path
from typing import Any, TypeVar

from actors.bars import BarRing
from actors.snapshot import decode_snapshot, decode_state
from actors.state import PositionState
from brokers.base import (
    BrokerEvent,
    BrokerPosition,
    BrokerUnavailable,
    Capabilities,
    Execution,
    Order,
    OrderType,
    OrderUpdate,
    Side,
)
from brokers.sim import SimBroker, SimConfig
from runtime.alerts import Alert
from runtime.app import App
from runtime.clock import Clock, RealClock, VirtualClock
from runtime.config import Config, load_config
from runtime.runstate import read_run_state
from runtime.venues import calendar_of

__all__ = [
    "PIVOT",
    "SYMBOL",
    "BlindVenue",
    "FlakyVenue",
    "GatedVenue",
    "TimerClock",
    "Trader",
    "closed_trades",
    "crash_in",
    "executions",
    "open_venue",
    "open_venue_as",
    "print_bars",
    "reports",
    "stored",
    "until",
    "write_profile",
]

SYMBOL = "AAPL"  # traded: a fixed resistance pivot the tests cross with set_price
OTHER = "MSFT"  # never trades by itself (its pivot is far away): orphans and races
PIVOT = 101.0
BELOW = 95.0  # where the market waits, far under the pivot
ABOVE = 101.5  # a break of the pivot
STOP_HIT = 100.5  # under the stop at the pivot
BAR = 60  # bar seconds of the profile; the venue runs at speed 1 on a virtual clock
ACCOUNT = "SIM-PAPER"

_PROFILE = """\
[broker]
kind = "sim"

[broker.sim]
seed = 7
speed = {speed}
bar_seconds = {bar}
start_price = 100.0
latency_ms = 0.0
start_day = 2026-01-05
{fill_chunks}

[runtime]
checkpoint_interval_s = 10.0

[recovery]
orphan_policy = "{orphan_policy}"
unprotected_policy = "{unprotected_policy}"
periodic_s = {periodic_s}
confirm_runs = 2
connect_tries = 2
connect_backoff_s = 0.02

[[watchlist]]
symbol = "{symbol}"
resistance = {pivot}

[[watchlist]]
symbol = "{other}"
resistance = 1000.0
"""


def write_profile(
    directory: Path,
    *,
    orphan_policy: str = "adopt",
    unprotected_policy: str = "restore",
    periodic_s: float = 3600.0,
    speed: float = 0.001,
    max_fill_qty: float | None = None,
) -> tuple[Path, Config]:
    """Write the recovery tests' profile; return its path and the loaded config.

    ``speed`` is what a ``stalwart`` subprocess uses (nearly frozen, so a CLI
    run never prints a bar); in-process venues run at speed 1 on a virtual clock.
    ``max_fill_qty`` makes the venue fill market orders and triggered stops in
    chunks of that many shares, one more each bar.
    """
    chunks = "" if max_fill_qty is None else f"-chunks{max_fill_qty:g}"
    path = directory / f"profile-{orphan_policy}-{unprotected_policy}-{periodic_s:g}{chunks}.toml"
    path.write_text(
        _PROFILE.format(
            fill_chunks="" if max_fill_qty is None else f"max_fill_qty = {max_fill_qty}",
            speed=speed,
            bar=BAR,
            orphan_policy=orphan_policy,
            unprotected_policy=unprotected_policy,
            periodic_s=periodic_s,
            symbol=SYMBOL,
            pivot=PIVOT,
            other=OTHER,
        )
    )
    return path, load_config(path)


def sim_config(config: Config, state_dir: Path, *, speed: float = 1.0) -> SimConfig:
    """Return the venue config ``runtime.venues.make_broker`` builds, at ``speed``."""
    s = config.broker.sim
    return SimConfig(
        symbols=[w.symbol for w in config.watchlist],
        book_path=state_dir / s.book_file,
        seed=s.seed,
        speed=speed,
        bar_seconds=s.bar_seconds,
        start_price=s.start_price,
        latency_ms=s.latency_ms,
        max_fill_qty=s.max_fill_qty,
        start_day=s.start_day,
    )


class GatedVenue(SimBroker):
    """The sim venue behind a slow network: order events wait while ``gate`` is closed."""

    @functools.cached_property
    def gate(self) -> asyncio.Event:
        gate = asyncio.Event()
        gate.set()
        return gate

    async def events(self) -> AsyncGenerator[BrokerEvent, None]:
        async for event in super().events():
            if isinstance(event, Execution | OrderUpdate):
                await self.gate.wait()
            yield event


class BlindVenue(SimBroker):
    """The sim venue as a broker that reports no positions (a DTC server that sends none)."""

    @property
    def capabilities(self) -> Capabilities:
        return Capabilities(reports_positions=False)

    async def positions(self) -> list[BrokerPosition]:
        await super().positions()  # still fails while unreachable
        return []


class FlakyVenue(SimBroker):
    """The sim venue whose next ``failures`` position queries fail (a broker API hiccup),
    and whose next ``garbled`` ones raise what an adapter's parser would on an answer it
    cannot read (not a ``BrokerError``: a bug's or a malformed answer's error)."""

    failures = 0
    garbled = 0

    async def positions(self) -> list[BrokerPosition]:
        if self.failures > 0:
            self.failures -= 1
            raise BrokerUnavailable("positions: 503 service unavailable (test control)")
        if self.garbled > 0:
            self.garbled -= 1
            raise ValueError("position qty 'n/a' is not a number (test control)")
        return await super().positions()


class TimerClock(VirtualClock):
    """A virtual clock that tells which sleeps are pending, so a test advances it only
    once the timer it means to fire is armed."""

    def __init__(self) -> None:
        super().__init__()
        self.asleep: Counter[float] = Counter()

    async def sleep(self, seconds: float) -> None:
        self.asleep[seconds] += 1
        try:
            await super().sleep(seconds)
        finally:
            self.asleep[seconds] -= 1


_Venue = TypeVar("_Venue", bound=SimBroker)


async def open_venue_as(
    kind: type[_Venue], config: Config, state_dir: Path, clock: VirtualClock
) -> _Venue:
    """Open the venue's book in ``state_dir`` as ``kind``, market time driven by ``clock``."""
    await asyncio.to_thread(state_dir.mkdir, parents=True, exist_ok=True)
    venue = await kind.open(
        sim_config(config, state_dir),
        calendar=calendar_of(config),
        monotonic=clock.monotonic,
        sleep=clock.sleep,
    )
    assert isinstance(venue, kind)
    return venue


async def open_venue(config: Config, state_dir: Path, clock: VirtualClock) -> SimBroker:
    """Open the venue's book in ``state_dir`` with market time driven by ``clock``."""
    return await open_venue_as(SimBroker, config, state_dir, clock)


async def until(
    check: Callable[[], bool | Awaitable[bool]], what: str, within: float = 10.0
) -> None:
    """Poll ``check`` (an observable condition) until it holds; fail after ``within`` s."""
    deadline = time.monotonic() + within
    while True:
        result = check()
        if inspect.isawaitable(result):
            result = await result
        if result:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {within} s waiting for {what}")
        await asyncio.sleep(0.005)


async def print_bars(venue: SimBroker, clock: VirtualClock, count: int) -> None:
    """Let ``count`` bars of market time pass and wait until the venue printed them.

    The venue must be connected (its market pump runs only then).
    """
    await clock.advance(count * BAR)
    now = venue.now()
    due = now - timedelta(seconds=now.timestamp() % BAR)

    async def printed() -> bool:
        bars = await venue.history(SYMBOL, due - timedelta(seconds=3 * BAR), due)
        return bool(bars) and bars[-1].ts + timedelta(seconds=BAR) >= due

    await until(printed, f"the venue to print bars up to {due.isoformat()}")


async def position(venue: SimBroker, symbol: str = SYMBOL) -> float:
    return next((p.qty for p in await venue.positions() if p.symbol == symbol), 0.0)


async def stops(venue: SimBroker, symbol: str = SYMBOL) -> list[Order]:
    return [o for o in await venue.open_orders() if o.symbol == symbol and o.type is OrderType.STOP]


# --- the store, read as a file ---------------------------------------------------


def store_path(state_dir: Path) -> Path:
    return state_dir / f"{ACCOUNT}.db"


def _rows(state_dir: Path, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    path = store_path(state_dir)
    if not path.exists():
        return []
    with contextlib.closing(sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True)) as db:
        return list(db.execute(sql, params).fetchall())


def stored(state_dir: Path, symbol: str = SYMBOL) -> PositionState:
    """Return the position state of ``symbol`` as its snapshot in the store holds it."""
    rows = _rows(
        state_dir, "SELECT blob, schema_version FROM snapshots WHERE symbol = ?", (symbol,)
    )
    assert rows, f"no snapshot of {symbol}"
    return decode_state(bytes(rows[0][0]), int(rows[0][1]), symbol)


def stored_ring(state_dir: Path, symbol: str = SYMBOL) -> BarRing:
    """Return the bar buffer of ``symbol`` as the store holds it (its own row, or the blob's)."""
    rows = _rows(
        state_dir,
        "SELECT s.blob, s.schema_version, b.blob FROM snapshots AS s "
        "LEFT JOIN bar_buffers AS b ON b.symbol = s.symbol WHERE s.symbol = ?",
        (symbol,),
    )
    assert rows, f"no snapshot of {symbol}"
    blob, version, bars = rows[0]
    _, ring = decode_snapshot(
        bytes(blob), int(version), symbol, 1_000_000, None if bars is None else bytes(bars)
    )
    return ring


def stored_bars(state_dir: Path, symbol: str = SYMBOL) -> int:
    return len(stored_ring(state_dir, symbol))


def closed_trades(state_dir: Path) -> list[dict[str, Any]]:
    cols = "trade_id, symbol, side, qty, entry_price, exit_price, realized_pnl, exit_reason"
    rows = _rows(state_dir, f"SELECT {cols} FROM closed_trades ORDER BY exit_at, trade_id")
    return [dict(zip(cols.split(", "), row, strict=True)) for row in rows]


def executions(state_dir: Path) -> dict[str, tuple[str, str, float, float]]:
    """Return the stored executions: exec_id -> (symbol, side, qty, price)."""
    rows = _rows(state_dir, "SELECT exec_id, symbol, side, qty, price FROM executions")
    return {str(r[0]): (str(r[1]), str(r[2]), float(r[3]), float(r[4])) for r in rows}


def reports(state_dir: Path) -> list[dict[str, Any]]:
    """Return the stored reconciliation reports, oldest first."""
    rows = _rows(state_dir, "SELECT body FROM reports ORDER BY id")
    return [json.loads(body) for (body,) in rows]


# --- the trader, in-process --------------------------------------------------------


class Trader:
    """``App.run`` as an owned task on an injected venue: the trader under test."""

    def __init__(
        self, config: Config, state_dir: Path, venue: SimBroker, *, wall: Clock | None = None
    ) -> None:
        self.state_dir = state_dir
        self.alerts: list[Alert] = []
        self.app = App(
            config=config,
            state_dir=state_dir,
            broker=venue,
            wall=wall or RealClock(),
            alert_sink=self.alerts.append,
        )
        self._stop = asyncio.Event()
        self._task: asyncio.Task[int] | None = None

    async def __aenter__(self) -> Trader:
        before = len(reports(self.state_dir))
        self._task = asyncio.create_task(self.app.run(self._stop), name="trader")

        def booted() -> bool:
            assert self._task is not None
            if self._task.done():
                self._task.result()  # raises what the trader raised
                return True
            run = read_run_state(self.state_dir)
            if run is None or run.state not in ("running", "degraded"):
                return False
            return run.state == "degraded" or len(reports(self.state_dir)) > before

        await until(booted, "the trader to finish boot recovery")
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def stop(self) -> int:
        """Stop cleanly (final checkpoint, venue closed); return the exit code."""
        self._stop.set()
        if self._task is None:
            return 0
        async with asyncio.timeout(20):
            code = await self._task
        return code

    def actor_state(self, symbol: str = SYMBOL) -> PositionState:
        return self.app.actors[symbol].state


# --- the crash scenarios, played by a trader process that is then killed ---------------

_SELF = Path(__file__).resolve()
_REPO = _SELF.parents[2]


async def crash_in(scenario: str, state_dir: Path, profile: Path) -> dict[str, Any]:
    """Run a trader process until it reached ``scenario``'s state, then SIGKILL it."""
    log = state_dir.parent / f"{scenario}-trader.log"
    with log.open("wb") as err:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            str(_SELF),
            scenario,
            str(state_dir),
            str(profile),
            cwd=_REPO,
            stdout=asyncio.subprocess.PIPE,
            stderr=err,
        )
        assert proc.stdout is not None
        try:
            async with asyncio.timeout(60):
                line = await proc.stdout.readline()
        finally:
            proc.kill()  # SIGKILL: no final checkpoint, no clean close of anything
            await proc.wait()
    assert line.startswith(b"READY "), log.read_text(errors="replace")[-3000:]
    info: dict[str, Any] = json.loads(line[len(b"READY ") :])
    return info


async def warm_up(venue: SimBroker, clock: VirtualClock) -> None:
    """Open the market below the pivot and let 25 bars pass (enough history to skip warm-up)."""
    await venue.connect()
    await venue.set_price(SYMBOL, BELOW)
    await print_bars(venue, clock, 25)


async def break_out(trader: Trader, venue: SimBroker, clock: VirtualClock) -> Execution:
    """Cross the pivot; wait until the trader entered and its stop rests at the venue.

    The trader must also have its stop acknowledged: the venue answers queries
    from memory, before a change is saved, and a kill must find the stop on disk.
    """
    await venue.set_price(SYMBOL, ABOVE)
    await print_bars(venue, clock, 1)

    async def protected() -> bool:
        rest = await stops(venue)
        held = await position(venue)
        stop = trader.actor_state().stop
        return (
            held > 0
            and len(rest) == 1
            and rest[0].qty == held
            and stop is not None
            and (stop.order_id, stop.status) == (rest[0].order_id, "live")
        )

    await until(protected, "an entry with its stop resting at the venue")
    fills = await venue.executions(venue.now() - timedelta(days=1))
    return [e for e in fills if e.symbol == SYMBOL and e.side is Side.BUY][-1]


async def stop_out(venue: SimBroker, clock: VirtualClock, state_dir: Path) -> None:
    """Move under the stop; wait until the trader recorded the closed trade, then a bar."""
    trades = len(closed_trades(state_dir))
    await venue.set_price(SYMBOL, STOP_HIT)
    await until(lambda: len(closed_trades(state_dir)) > trades, "the stopped-out trade stored")
    await print_bars(venue, clock, 1)


async def holding(config: Config, state_dir: Path) -> Execution:
    """Play a first session that enters at the pivot, then stop it cleanly; return the entry."""
    clock = VirtualClock()
    venue = await open_venue(config, state_dir, clock)
    await warm_up(venue, clock)
    async with Trader(config, state_dir, venue) as trader:
        return await break_out(trader, venue, clock)


@contextlib.asynccontextmanager
async def outside(config: Config, state_dir: Path) -> AsyncIterator[SimBroker]:
    """Open the venue's book while the trader is down, to play the world outside it."""
    venue = await open_venue(config, state_dir, VirtualClock())
    await venue.connect()  # a frozen market: nothing moves but what the test does
    try:
        yield venue
    finally:
        await venue.close()


async def _scenario(name: str, state_dir: Path, profile: Path) -> dict[str, Any]:
    config = load_config(profile)
    clock = VirtualClock()
    venue = await open_venue(config, state_dir, clock)
    trader = Trader(config, state_dir, venue)
    if name == "boot":  # a restart: recover, then be killed
        await trader.__aenter__()
        return {}
    await warm_up(venue, clock)
    await trader.__aenter__()
    entry = await break_out(trader, venue, clock)
    info: dict[str, Any] = {"entry_price": entry.price}
    if name == "partial":
        risk = max(entry.price - PIVOT, entry.price * 0.002)
        await venue.set_price(SYMBOL, round(entry.price + 1.2 * risk, 2))
        await print_bars(venue, clock, 1)

        async def halved() -> bool:
            rest = await stops(venue)
            stop = trader.actor_state().stop
            return (
                await position(venue) == 50.0
                and len(rest) == 1
                and (rest[0].qty, rest[0].stop_price) == (50.0, entry.price)
                and stored(state_dir).partials != ()
                and stop is not None
                and (stop.price, stop.qty, stop.status) == (entry.price, 50.0, "live")
            )

        await until(halved, "the 50% partial with the stop at break-even")
    elif name == "two_stopped":
        await stop_out(venue, clock, state_dir)
        await break_out(trader, venue, clock)
        await stop_out(venue, clock, state_dir)
    elif name == "stopped_then_open":
        await stop_out(venue, clock, state_dir)
        info["entry_price"] = (await break_out(trader, venue, clock)).price
    return info


def _main(argv: list[str]) -> None:
    name, state_dir, profile = argv[1], Path(argv[2]), Path(argv[3])
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(name)s %(message)s")

    async def play() -> None:
        info = await _scenario(name, state_dir, profile)
        sys.stdout.write("READY " + json.dumps(info) + "\n")
        sys.stdout.flush()
        await asyncio.Event().wait()  # until SIGKILL

    asyncio.run(play())


if __name__ == "__main__":
    _main(sys.argv)
