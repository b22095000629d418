"""Terminal output: the live positions table of ``run`` and the status/history tables."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.live import Live
from rich.table import Table

if TYPE_CHECKING:
    from runtime.app import App

__all__ = ["live_view", "print_history", "print_report", "print_status"]

_log = logging.getLogger(__name__)


def _positions_table(app: App) -> Table:
    table = Table(title=f"stalwart - {'DEGRADED' if app.degraded else 'running'}")
    for col in ("symbol", "qty", "avg", "stop", "partials", "attempts", "last", "P&L today"):
        table.add_column(col, justify="right" if col != "symbol" else "left")
    for symbol, actor in sorted(app.actors.items()):
        s = actor.state
        table.add_row(
            symbol,
            f"{s.qty:g}",
            f"{s.avg_price:.2f}" if s.qty else "",
            f"{s.stop.price:.2f}" if s.stop else "",
            str(len(s.partials)),
            str(sum(v for k, v in s.attempts.items() if k.startswith(s.trading_day.isoformat()))),
            f"{s.last_price:.2f}" if s.last_price else "",
            f"{s.realized_pnl_today:.2f}",
        )
    return table


@contextlib.asynccontextmanager
async def live_view(app: App, *, enabled: bool) -> AsyncIterator[None]:
    """Show a live table while the body runs (a terminal only)."""
    if not enabled:
        yield
        return
    with Live(_positions_table(app), refresh_per_second=2, transient=False) as live:

        async def refresh() -> None:
            while True:
                await asyncio.sleep(0.5)
                live.update(_positions_table(app))

        async with asyncio.TaskGroup() as group:
            task = group.create_task(refresh())
            try:
                yield
            finally:
                task.cancel()


def _stop_cell(stop: dict[str, Any] | None) -> str:
    if stop is None:
        return "NONE"
    cell = f"{stop['price']:.2f} x {stop['qty']:g}"
    status = stop.get("status", "live")
    return cell if status == "live" else f"{cell} ({status})"


def print_status(body: dict[str, Any]) -> None:
    console = Console()
    console.print(f"account {body['account']}  state {body['state']}  as of {body['as_of']}")
    table = Table()
    for col in (
        "symbol",
        "side",
        "qty",
        "avg",
        "stop",
        "partials",
        "attempts",
        "bars",
        "ckpt age s",
    ):
        table.add_column(col)
    for p in body["positions"]:
        stop = p["stop"]
        table.add_row(
            p["symbol"],
            p["side"],
            f"{p['qty']:g}",
            f"{p['avg_entry_price']:.2f}",
            _stop_cell(stop),
            str(len(p["partials"])),
            f"{p['attempts']['long']}/{p['attempts']['short']}",
            str(p["bars"]),
            f"{p['checkpoint_age_s']:.1f}",
        )
    console.print(table)
    s = body["session"]
    console.print(
        f"day {s['trading_day']}  realized {s['realized_pnl']:.2f}  trades {s['trades_today']}"
    )


def print_history(body: dict[str, Any]) -> None:
    console = Console()
    days = Table(title="trading days")
    for col in ("day", "realized P&L", "trades"):
        days.add_column(col)
    for d in body["sessions"]:
        days.add_row(d["trading_day"], f"{d['realized_pnl']:.2f}", str(d["trades_today"]))
    console.print(days)
    table = Table(title="closed trades")
    for col in ("symbol", "side", "qty", "entry", "exit", "P&L", "MAE", "MFE", "reason", "exit at"):
        table.add_column(col)
    for t in body["closed_trades"]:
        table.add_row(
            t["symbol"],
            t["side"],
            f"{t['qty']:g}",
            f"{t['entry_price']:.2f}",
            f"{t['exit_price']:.2f}" if t["exit_price"] is not None else "?",
            f"{t['realized_pnl']:.2f}",
            f"{t['mae']:.2f}",
            f"{t['mfe']:.2f}",
            t["exit_reason"],
            t["exit_at"],
        )
    console.print(table)
    reports = Table(title="reconciliation reports")
    for col in ("at", "mode", "zombies", "orphans", "drifts", "unprotected", "critical"):
        reports.add_column(col)
    for r in body["reconciliation_reports"]:
        rep = r["report"]
        reports.add_row(
            r["at"],
            r["mode"],
            ",".join(rep["zombies"]),
            ",".join(rep["orphans"]),
            str(len(rep["drifts"])),
            ",".join(rep["unprotected"]),
            "; ".join(rep["critical_issues"]),
        )
    console.print(reports)


def print_report(report: dict[str, Any]) -> None:
    console = Console()
    console.print(
        f"reconciliation {report['mode']}{' (dry run)' if report['dry_run'] else ''}: "
        f"broker reachable {report['broker_reachable']}, "
        f"{report['replayed_fills']} fills replayed, {report['duration_s']:.3f} s"
    )
    for name in ("zombies", "orphans", "unprotected", "missing_fills"):
        if report.get(name):  # missing_fills: not in reports stored before it existed
            console.print(f"  {name}: {', '.join(report[name])}")
    for d in report["drifts"]:
        console.print(
            f"  drift {d['symbol']}: local {d['local_qty']} @ {d['local_avg']} vs "
            f"broker {d['broker_qty']} @ {d['broker_avg']}"
        )
    for a in report["actions"]:
        console.print(f"  {a['symbol']}: {a['detail']}")
    for issue in report["critical_issues"]:
        console.print(f"  [bold red]CRITICAL[/] {issue}")
