"""The ``stalwart`` command line.

Exit codes: 0 fine; 1 the command ran and found something critical; 2 usage,
configuration or state errors (nothing was started).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from collections.abc import Callable, Coroutine
from datetime import date
from pathlib import Path
from typing import Any

import msgspec

from actors.snapshot import SnapshotError, decode_state
from brokers.exchange import add_arguments as add_exchange_arguments
from brokers.sim import BookError
from persistence import open_store
from persistence.protocol import StoreError
from runtime.chaos import add_arguments as add_chaos_arguments
from runtime.clock import RealClock
from runtime.config import Config, ConfigError, load_config
from runtime.lock import StateDirBusy, state_dir_lock
from runtime.logs import setup_logging
from runtime.status import find_store, history_dict, status_dict

__all__ = ["main"]

_log = logging.getLogger(__name__)

EXIT_OK, EXIT_CRITICAL, EXIT_USAGE = 0, 1, 2


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> Any:  # argparse exits 2 on usage errors already
        self.print_usage(sys.stderr)
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


def _parser() -> argparse.ArgumentParser:
    common = _Parser(add_help=False)
    common.add_argument("--config", type=Path, help="TOML profile (default: embedded sim profile)")
    common.add_argument("--state-dir", type=Path, help="state directory (default: ./state)")
    common.add_argument("--log-format", choices=("text", "json"), default="text")
    common.add_argument("--loop", choices=("uvloop", "asyncio"), default="uvloop")

    p = _Parser(prog="stalwart", description="crash-safe actor-based trading runtime")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)
    run = sub.add_parser("run", parents=[common], help="trade")
    run.add_argument("--duration", type=float, help="stop cleanly after SECONDS")
    run.add_argument("--speed", type=float, help="sim market speed (market s per real s)")
    run.add_argument("--no-live", action="store_true", help="no live table, log lines only")
    run.add_argument(
        "--force-account",
        action="store_true",
        help="use a store recorded for another account (rebinds it; think twice)",
    )
    status = sub.add_parser("status", parents=[common], help="positions from the store")
    status.add_argument("--json", action="store_true")
    reconcile = sub.add_parser("reconcile", parents=[common], help="hybrid recovery, print report")
    reconcile.add_argument("--dry-run", action="store_true", help="plan and report, change nothing")
    reconcile.add_argument("--json", action="store_true")
    confirm = sub.add_parser(
        "confirm", parents=[common], help="confirm an unverified position (brokers without reports)"
    )
    confirm.add_argument("symbol", help="the symbol whose open position the broker holds")
    history = sub.add_parser("history", parents=[common], help="closed trades and reports")
    history.add_argument("--json", action="store_true")
    history.add_argument("--since", type=date.fromisoformat, help="YYYY-MM-DD")
    exchange = sub.add_parser("exchange", help="the local exchange (Alpaca's API over the sim)")
    add_exchange_arguments(exchange)
    chaos = sub.add_parser("chaos", help="crash-kill campaign against the local exchange")
    add_chaos_arguments(chaos)
    return p


def _state_dir(args: argparse.Namespace, config: Config) -> Path:
    return args.state_dir if args.state_dir is not None else Path(config.runtime.state_dir)


def _run_loop(main: Callable[[], Coroutine[Any, Any, int]], loop: str) -> int:
    if loop == "uvloop":
        import uvloop

        return uvloop.run(main())
    return asyncio.run(main())


async def _cmd_run(args: argparse.Namespace, config: Config, state_dir: Path) -> int:
    from runtime.app import App
    from runtime.view import live_view

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    app = App(
        config=config, state_dir=state_dir, speed=args.speed, force_account=args.force_account
    )
    live = sys.stdout.isatty() and not args.no_live
    async with live_view(app, enabled=live):
        return await app.run(stop, args.duration)


async def _cmd_reconcile(args: argparse.Namespace, config: Config, state_dir: Path) -> int:
    from runtime.app import App

    report = await App(config=config, state_dir=state_dir).reconcile_once(dry_run=args.dry_run)
    if args.json:
        sys.stdout.write(msgspec.json.encode(report).decode() + "\n")
    else:
        from runtime.view import print_report

        print_report(msgspec.to_builtins(report))
    return EXIT_CRITICAL if report.critical_issues else EXIT_OK


async def _cmd_status(args: argparse.Namespace, state_dir: Path) -> int:
    found = find_store(state_dir)
    if found is None:
        print(f"stalwart status: no store in {state_dir}", file=sys.stderr)
        return EXIT_USAGE
    path, account = found
    store = await open_store(path, account)
    try:
        body = await status_dict(store, state_dir, RealClock())
    finally:
        await store.close()
    if args.json:
        sys.stdout.write(msgspec.json.encode(body).decode() + "\n")
    else:
        from runtime.view import print_status

        print_status(body)
    return EXIT_OK


async def _cmd_confirm(args: argparse.Namespace, state_dir: Path) -> int:
    """Record that the open position of ``args.symbol`` (as the store holds it) exists.

    Works while a trader runs (it reads the record at its next reconciliation)
    and survives restarts; it covers that one position, not the next one.
    """
    from runtime.app import Confirmation, write_confirmation

    found = find_store(state_dir)
    if found is None:
        print(f"stalwart confirm: no store in {state_dir}", file=sys.stderr)
        return EXIT_USAGE
    path, account = found
    store = await open_store(path, account)
    try:
        loaded = await store.load_snapshots()
    finally:
        await store.close()
    row = next((r for r in loaded.rows if r.symbol == args.symbol), None)
    try:
        state = None if row is None else decode_state(row.blob, row.schema_version, row.symbol)
    except SnapshotError as exc:
        print(f"stalwart confirm: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if state is None or state.is_flat or state.opened_at is None:
        print(f"stalwart confirm: no open position of {args.symbol} to confirm", file=sys.stderr)
        return EXIT_USAGE
    confirmation = Confirmation(
        symbol=state.symbol,
        opened_at=state.opened_at,
        qty=state.qty,
        avg_price=state.avg_price,
        confirmed_at=RealClock().now(),
    )
    write_confirmation(state_dir, confirmation)
    print(
        f"confirmed {state.symbol}: {state.qty} @ {state.avg_price} (opened "
        f"{state.opened_at.isoformat()}); a running trader trades it again after its next "
        "reconciliation"
    )
    return EXIT_OK


async def _cmd_history(args: argparse.Namespace, state_dir: Path) -> int:
    found = find_store(state_dir)
    if found is None:
        print(f"stalwart history: no store in {state_dir}", file=sys.stderr)
        return EXIT_USAGE
    path, account = found
    store = await open_store(path, account)
    try:
        body = await history_dict(store, args.since)
    finally:
        await store.close()
    if args.json:
        sys.stdout.write(msgspec.json.encode(body).decode() + "\n")
    else:
        from runtime.view import print_history

        print_history(body)
    return EXIT_OK


def _cmd_exchange(args: argparse.Namespace) -> int:
    """Run the local exchange in this process until SIGTERM (no trader config involved)."""
    import os

    from brokers.exchange import serve, settings_from_args

    try:
        settings = settings_from_args(args, os.environ)
    except ValueError as exc:
        print(f"stalwart exchange: {exc}", file=sys.stderr)
        return EXIT_USAGE
    setup_logging(args.log_format, None)
    try:
        return _run_loop(lambda: serve(settings), "uvloop")
    except BookError as exc:
        print(f"stalwart exchange: state error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except OSError as exc:
        print(f"stalwart exchange: cannot serve: {exc}", file=sys.stderr)
        return EXIT_USAGE


def main(argv: list[str] | None = None) -> int:
    """Run the command line; return the exit code."""
    args = _parser().parse_args(argv)
    if args.command == "exchange":
        return _cmd_exchange(args)
    if args.command == "chaos":
        from runtime.chaos import main as chaos_main

        return chaos_main(args)
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        print(f"stalwart: config error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    state_dir = _state_dir(args, config)
    if args.command == "run":
        setup_logging(args.log_format, state_dir)
    else:
        setup_logging(args.log_format, None, level=logging.WARNING)
    commands: dict[str, Callable[[], Coroutine[Any, Any, int]]] = {
        "run": lambda: _cmd_run(args, config, state_dir),
        "status": lambda: _cmd_status(args, state_dir),
        "reconcile": lambda: _cmd_reconcile(args, config, state_dir),
        "history": lambda: _cmd_history(args, state_dir),
        "confirm": lambda: _cmd_confirm(args, state_dir),
    }
    try:
        if args.command in ("run", "reconcile"):
            with state_dir_lock(state_dir):
                return _run_loop(commands[args.command], args.loop)
        return _run_loop(commands[args.command], args.loop)
    except (StoreError, StateDirBusy, BookError) as exc:
        print(f"stalwart: state error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except ConfigError as exc:
        print(f"stalwart: config error: {exc}", file=sys.stderr)
        return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
