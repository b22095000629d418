"""``stalwart chaos``: kill the trader again and again and prove nothing is lost.

In a temporary directory the campaign starts ``stalwart exchange`` and
``stalwart run`` as separate processes (fast market, reference strategy,
opening-range pivots that trigger often), then, round after round:

1. starts the trader, sometimes with one named failpoint armed
   (:mod:`runtime.failpoint`: the trader SIGKILLs itself at that point);
2. once it reports reconciled, freezes the market, lets it settle and checks
   every invariant (:mod:`runtime.chaos_checks`) against the exchange's ground
   truth, then lets the market run again;
3. kills it: the armed failpoint fires, or after a seeded random wait SIGKILL;
4. while it is down, sometimes acts on the exchange as a person or the market
   would: a hand trade in a new symbol (orphan), a hand close (zombie), a
   partial hand sell (drift), a price jump through a resting stop, an outage.

After the last round the trader is restarted once more, checked, and stopped
with SIGTERM. The result counts every violation; the exit code is 0 only when
all of them are 0. Rounds are seeded (what to do and when); processes are
real, so timing is not, and a violation names its seed and round.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import math
import random
import re
import shutil
import sqlite3
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import msgspec

from runtime.chaos_checks import VIOLATIONS, Books, Ledger, Truth, check, read_books
from runtime.chaos_world import ChaosError, ExchangeProcess, TraderProcess, trader_profile, wait_for
from runtime.failpoint import FAILPOINTS

__all__ = ["ChaosOptions", "ChaosResult", "add_arguments", "main", "run_campaign"]

WATCHLIST = ["AAPL", "MSFT", "NVDA", "AMD", "TSLA"]
ORPHANS = ["IBM", "INTC", "ORCL"]
HAND_ACTIONS = ("orphan", "zombie", "drift", "stop_jump", "outage")
MAX_ATTEMPTS = 2
# How likely an armed failpoint fires each time it is reached: the busy ones
# (every store commit, every order) lower, so the kill lands at varied moments.
_FIRE = {
    "after_intent_commit": 0.5,
    "after_submit_before_ack": 0.5,
    "after_fill_before_commit": 0.4,
    "mid_checkpoint": 0.05,
    "during_reconcile": 0.3,
}
_KEY, _SECRET = "chaos-key", "chaos-secret"
_ALERT = re.compile(r"ALERT \w+ unprotected (\S+?):")


@dataclass
class ChaosOptions:
    kills: int = 25
    seed: int = 1
    speed: float = 600.0
    workdir: Path | None = None
    keep: bool = False
    min_wait_s: float = 1.0
    max_wait_s: float = 6.0
    failpoint_wait_s: float = 20.0
    boot_timeout_s: float = 60.0
    checkpoint_s: float = 2.0
    max_fill_qty: float | None = None  # the exchange fills orders and stops in parts
    trader_env: dict[str, str] = field(default_factory=dict)  # tests: a deliberately broken build


class ChaosResult(msgspec.Struct, kw_only=True):
    seed: int
    kills: int
    max_fill_qty: float | None = None
    targeted_kills: dict[str, int]
    restarts: int
    hand_actions: dict[str, int]
    lost_fills: int = 0
    duplicate_fills: int = 0
    duplicate_entries: int = 0
    attempt_regressions: int = 0
    silent_unprotected: int = 0
    qty_mismatches: int = 0
    partial_mismatches: int = 0
    integrity_failures: int = 0
    pnl_mismatches: int = 0
    duration_s: float = 0.0
    checks: int = 0
    discarded_checks: int = 0  # the trader died (a failpoint) during the check
    executions: int = 0
    unfired_failpoints: int = 0
    violations: list[str] = []
    workdir: str | None = None

    @property
    def ok(self) -> bool:
        return all(getattr(self, name) == 0 for name in VIOLATIONS)


Progress = Callable[[int, str], None]


class _Campaign:
    def __init__(self, opts: ChaosOptions, workdir: Path, progress: Progress) -> None:
        self.opts = opts
        self.rng = random.Random(opts.seed)
        self.progress = progress
        self.exchange = ExchangeProcess(
            workdir,
            speed=opts.speed,
            seed=opts.seed,
            symbols=WATCHLIST + ORPHANS,
            key=_KEY,
            secret=_SECRET,
            max_fill_qty=opts.max_fill_qty,
        )
        self.profile = workdir / "trader.toml"
        self.trader = TraderProcess(workdir, self.profile, _KEY, _SECRET)
        self.ledger = Ledger()
        self.result = ChaosResult(
            seed=opts.seed,
            kills=0,
            max_fill_qty=opts.max_fill_qty,
            targeted_kills=dict.fromkeys(FAILPOINTS, 0),
            restarts=0,
            hand_actions=dict.fromkeys(HAND_ACTIONS, 0),
            workdir=str(workdir),
        )
        self.round = 0
        self.seen: set[tuple[str, str]] = set()
        self.pending = list(FAILPOINTS)
        self.rng.shuffle(self.pending)

    # -- the rounds -------------------------------------------------------------

    def run(self) -> ChaosResult:
        started = time.monotonic()
        self.exchange.start()
        try:
            self.profile.write_text(
                trader_profile(
                    self.exchange,
                    WATCHLIST,
                    checkpoint_s=self.opts.checkpoint_s,
                    max_attempts=MAX_ATTEMPTS,
                )
            )
            for number in range(1, self.opts.kills + 1):
                self.round = number
                self._one_round()
                self.progress(self.round, self._summary())
            self.round = self.opts.kills + 1
            self._start(None)
            if self._wait_reconciled():
                self._check()
            code = self.trader.terminate()
            if code not in (0, None):
                self._violation("integrity_failures", f"final SIGTERM exited {code}")
            self.result.executions = len(self.exchange.executions())
        finally:
            self.trader.kill()
            self.exchange.stop()
        self.result.duration_s = round(time.monotonic() - started, 1)
        return self.result

    def _one_round(self) -> None:
        armed = self._choose_failpoint()
        self._start(armed)
        if self._wait_reconciled():
            self._check()
        if armed is not None and wait_for(
            lambda: not self.trader.alive, self.opts.failpoint_wait_s
        ):
            fired = self.trader.fired()
            if fired is not None:
                self.result.targeted_kills[fired] += 1
            else:  # died without its failpoint: a crash, and a finding in itself
                self._violation("integrity_failures", f"trader exited {self._code()} unarmed")
        else:
            if armed is not None:
                self.result.unfired_failpoints += 1
                self.pending.append(armed)  # not reached in time: arm it again later
            else:
                time.sleep(self.rng.uniform(self.opts.min_wait_s, self.opts.max_wait_s))
            if not self.trader.alive:
                fired = self.trader.fired()
                if fired is None:
                    self._violation("integrity_failures", f"trader exited {self._code()}")
                else:
                    self.result.targeted_kills[fired] += 1
            self.trader.kill()
        self.result.kills += 1
        self._hand_action()

    def _code(self) -> int | None:
        return None if self.trader.proc is None else self.trader.proc.returncode

    def _choose_failpoint(self) -> str | None:
        left = self.opts.kills - self.round + 1
        if self.pending and (left <= len(self.pending) or self.rng.random() < 0.5):
            return self.pending.pop()
        if self.rng.random() < 0.35:
            return self.rng.choice(FAILPOINTS)
        return None

    def _start(self, armed: str | None) -> None:
        env: dict[str, str] = dict(self.opts.trader_env)
        if armed is not None:
            env["STALWART_FAILPOINTS"] = f"{armed}={_FIRE[armed]}"
            env["STALWART_FAILPOINT_SEED"] = str(self.rng.randrange(2**31))
        else:
            env["STALWART_FAILPOINTS"] = ""
        if self.trader.starts:
            self.result.restarts += 1
        self.trader.start(env)

    def _wait_reconciled(self) -> bool:
        """Wait for boot recovery to finish; False if the trader died first (a failpoint)."""
        done = wait_for(
            lambda: self.trader.reconciled() or not self.trader.alive, self.opts.boot_timeout_s
        )
        if not done:
            self._violation("integrity_failures", "trader never reported reconciled")
            return False
        return self.trader.alive

    # -- checks -----------------------------------------------------------------

    def _check(self) -> None:
        self.exchange.set_market(False)
        try:
            self._settle()
            books = self._books()
            if books is None:
                return
            truth = Truth(
                self.exchange.executions(),
                self.exchange.positions(),
                self.exchange.open_orders(),
            )
            alerts = set(_ALERT.findall(self.trader.output()))
            ledger = copy.deepcopy(self.ledger)
            found = check(
                truth, books, ledger, max_attempts=MAX_ATTEMPTS, unprotected_alerts=alerts
            )
            if not self.trader.alive:
                # An armed failpoint fired while we looked: what was in flight is the
                # next restart's to recover, and that restart is checked in turn.
                self.result.discarded_checks += 1
                return
            self.ledger = ledger
            self.result.checks += 1
            for name, what, n in found.items:  # seen again at a later check: counted once
                if (name, what) not in self.seen:
                    self.seen.add((name, what))
                    self._violation(name, what, n)
        finally:
            self.exchange.set_market(True)

    def _settle(self, timeout: float = 20.0) -> None:
        """Wait until neither side changes for a second (fills in flight have landed)."""
        db = self._db()
        last: tuple[int, ...] | None = None
        stable = 0
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and stable < 4:
            time.sleep(0.25)
            now = (len(self.exchange.executions()), *_store_marks(db))
            stable = stable + 1 if now == last else 0
            last = now

    def _db(self) -> Path:
        return self.trader.state_dir / "alpaca-paper.db"

    def _books(self) -> Books | None:
        try:
            return read_books(self._db())
        except sqlite3.Error as exc:
            self._violation("integrity_failures", f"store unreadable: {exc}")
            return None

    # -- the world while the trader is down --------------------------------------

    def _hand_action(self) -> None:
        roll = self.rng.random()
        if roll < 0.4:
            return
        kind = self.rng.choice(HAND_ACTIONS)
        positions = self.exchange.positions()
        held = sorted(s for s, q in positions.items() if s in WATCHLIST and q)
        if kind == "orphan":
            free = [s for s in ORPHANS if s not in positions]
            if not free:
                return
            side = self.rng.choice(["buy", "sell"])
            qty = self.rng.randint(5, 50)
            self.exchange.control(
                "POST", "hand_trade", {"symbol": self.rng.choice(free), "side": side, "qty": qty}
            )
        elif kind == "zombie":
            if not held:
                return
            cancel = self.rng.random() < 0.5
            body = {"symbol": self.rng.choice(held), "cancel_orders": cancel}
            self.exchange.control("POST", "hand_close", body)
        elif kind == "drift":
            big = [s for s in held if abs(positions[s]) >= 2]
            if not big:
                return
            symbol = self.rng.choice(big)
            qty = int(abs(positions[symbol]) // 2)
            side = "sell" if positions[symbol] > 0 else "buy"
            body = {"symbol": symbol, "side": side, "qty": qty}
            self.exchange.control("POST", "hand_trade", body)
        elif kind == "stop_jump":
            stops = [o for o in self.exchange.open_orders() if o["type"] == "stop"]
            if not stops:
                return
            stop = self.rng.choice(stops)
            through = float(stop["stop_price"]) * (0.97 if stop["side"] == "sell" else 1.03)
            body = {"symbol": stop["symbol"], "price": round(through, 2)}
            self.exchange.control("POST", "price", body)
        else:
            self.exchange.control("POST", "outage", {"seconds": round(self.rng.uniform(1, 4), 1)})
        self.result.hand_actions[kind] += 1

    # -- bookkeeping ------------------------------------------------------------

    def _violation(self, name: str, what: str, n: int = 1) -> None:
        setattr(self.result, name, getattr(self.result, name) + n)
        self._note(f"{name}: {what}")

    def _note(self, line: str) -> None:
        text = f"seed {self.opts.seed} round {self.round}: {line}"
        self.result.violations.append(text)
        print(f"stalwart chaos: VIOLATION {text}", file=sys.stderr)

    def _summary(self) -> str:
        bad = sum(getattr(self.result, name) for name in VIOLATIONS)
        return f"kills {self.result.kills} checks {self.result.checks} violations {bad}"


def _store_marks(db: Path) -> tuple[int, ...]:
    try:
        con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
    except sqlite3.Error:
        return (-1,)
    try:
        n = con.execute("SELECT count(*) FROM executions").fetchone()[0]
        seq = con.execute("SELECT coalesce(sum(seq), 0) FROM snapshots").fetchone()[0]
        intents = con.execute("SELECT count(*), coalesce(sum(length(status)), 0) FROM intents")
        a, b = intents.fetchone()
        return (int(n), int(seq), int(a), int(b))
    except sqlite3.Error:
        return (-1,)
    finally:
        con.close()


@contextlib.contextmanager
def _workdir(opts: ChaosOptions) -> Iterator[Path]:
    if opts.workdir is not None:
        opts.workdir.mkdir(parents=True, exist_ok=True)
        yield opts.workdir
        return
    path = Path(tempfile.mkdtemp(prefix="stalwart-chaos-"))
    keep = opts.keep
    try:
        yield path
    except BaseException:
        keep = True
        raise
    finally:
        if not keep:
            shutil.rmtree(path, ignore_errors=True)


def run_campaign(opts: ChaosOptions, progress: Progress | None = None) -> ChaosResult:
    """Run one campaign; raise ``ChaosError`` when the world cannot be set up."""
    if opts.kills < 1:
        raise ChaosError("--kills must be at least 1")
    chunk = opts.max_fill_qty
    if chunk is not None and not (math.isfinite(chunk) and chunk > 0):
        raise ChaosError(f"--max-fill-qty must be a positive number of shares, not {chunk!r}")
    keep_on_failure = opts.workdir is None and not opts.keep
    with _workdir(opts) as workdir:
        result = _Campaign(opts, workdir, progress or (lambda _n, _s: None)).run()
        if not result.ok and keep_on_failure:
            kept = Path(tempfile.mkdtemp(prefix="stalwart-chaos-failed-"))
            shutil.copytree(workdir, kept, dirs_exist_ok=True)
            result.workdir = str(kept)
        elif opts.workdir is None and not opts.keep:
            result.workdir = None
    return result


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--kills", type=int, default=25, help="rounds, one kill each (default 25)")
    p.add_argument("--seed", type=int, default=1, help="seeds every choice of the campaign")
    p.add_argument("--broker", choices=("alpaca",), default="alpaca", help="the exchange's API")
    p.add_argument("--speed", type=float, default=600.0, help="market seconds per real second")
    p.add_argument(
        "--max-fill-qty",
        type=float,
        default=None,
        help="the exchange fills orders and triggered stops in parts of at most this many "
        "shares, one part a bar (default: whole)",
    )
    p.add_argument("--json", action="store_true", help="print the result object as JSON")
    p.add_argument("--out", type=Path, help="also write the JSON result to FILE")
    p.add_argument("--workdir", type=Path, help="keep everything here (default: a temp dir)")
    p.add_argument("--keep", action="store_true", help="keep the temp dir")


def main(args: argparse.Namespace) -> int:
    """Run ``stalwart chaos``; exit 0 only when every violation count is 0."""
    opts = ChaosOptions(
        kills=args.kills,
        seed=args.seed,
        speed=args.speed,
        workdir=args.workdir,
        keep=args.keep,
        max_fill_qty=args.max_fill_qty,
    )
    try:
        result = _run_with_progress(opts, live=sys.stderr.isatty() and not args.json)
    except ChaosError as exc:
        print(f"stalwart chaos: {exc}", file=sys.stderr)
        return 2
    encoded = msgspec.json.encode(result)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_bytes(msgspec.json.format(encoded, indent=2) + b"\n")
    if args.json:
        sys.stdout.write(encoded.decode() + "\n")
    else:
        _print_summary(result)
    if not result.ok:
        print(
            f"stalwart chaos: FAILED; replay with --seed {result.seed} --kills {result.kills}"
            + (f" (files kept in {result.workdir})" if result.workdir else ""),
            file=sys.stderr,
        )
        return 1
    return 0


def _run_with_progress(opts: ChaosOptions, *, live: bool) -> ChaosResult:
    if not live:
        return run_campaign(opts)
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    columns = (TextColumn("chaos"), BarColumn(), TextColumn("{task.completed}/{task.total}"))
    with Progress(*columns, TextColumn("{task.description}"), TimeElapsedColumn()) as bar:
        task = bar.add_task("", total=opts.kills)
        return run_campaign(
            opts, lambda n, summary: bar.update(task, completed=n, description=summary)
        )


def _print_summary(result: ChaosResult) -> None:
    print(
        f"seed {result.seed}: {result.kills} kills, {result.restarts} restarts, "
        f"{result.checks} checks, {result.executions} executions in {result.duration_s}s"
    )
    targeted = ", ".join(f"{k} {v}" for k, v in result.targeted_kills.items())
    print(f"targeted kills: {targeted}")
    print("hand actions: " + ", ".join(f"{k} {v}" for k, v in result.hand_actions.items()))
    for name in VIOLATIONS:
        print(f"  {name:<20} {getattr(result, name)}")
    print("OK: no violations" if result.ok else "VIOLATIONS found")
