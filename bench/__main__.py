"""Run the benchmarks against baselines measured in the same run; print a table, write JSON."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import msgspec
from rich.console import Console
from rich.table import Table

from bench import BENCHMARKS, Report, collect, write

_RESULTS = Path(__file__).resolve().parent / "results"


def _number(value: float | None, unit: str = "") -> str:
    if value is None:
        return "-"
    if abs(value) >= 1000:
        text = f"{value:,.0f}"
    elif abs(value) >= 10:
        text = f"{value:.1f}"
    else:
        text = f"{value:.3g}"
    return f"{text} {unit}".strip()


def table(report: Report) -> Table:
    """Return the results as a rich table (one row per measured quantity)."""
    out = Table(title=f"stalwart benchmarks, {report.when}", show_lines=False)
    for column in ("benchmark", "value (median)", "min..max", "runs", "baseline", "ratio"):
        out.add_column(column, justify="left" if column == "benchmark" else "right")
    out.add_column("target")
    out.add_column("met", justify="center")
    for r in report.benchmarks:
        if r.runs == 0:
            value, spread, met = "not run", "-", "[yellow]no[/]"
        else:
            value = _number(r.value, r.unit)
            spread = f"{_number(r.min)}..{_number(r.max)}"
            met = "[green]yes[/]" if r.met else "[red]NO[/]"
        ratio = "-" if r.ratio is None else f"{r.ratio:.3g}x"
        out.add_row(
            r.name,
            value,
            spread,
            str(r.runs),
            _number(r.baseline_value, r.unit),
            ratio,
            r.target,
            met,
        )
    return out


def markdown(report: Report) -> str:
    """Return the results as a Markdown table (the one in ``bench/README.md``)."""
    lines = [
        "| benchmark | value (median) | min..max | runs | baseline | ratio | target | met |",
        "|---|---:|---:|---:|---:|---:|---|:-:|",
    ]
    for r in report.benchmarks:
        if r.runs == 0:
            value, spread, met = "not run", "-", "no"
        else:
            value = _number(r.value, r.unit)
            spread = f"{_number(r.min)}..{_number(r.max)}"
            met = "yes" if r.met else "**NO**"
        ratio = "-" if r.ratio is None else f"{r.ratio:.3g}x"
        cells = [r.name, value, spread, str(r.runs), _number(r.baseline_value, r.unit), ratio]
        lines.append("| " + " | ".join([*cells, r.target, met]) + " |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="small sizes, fewer runs (~1 min)")
    parser.add_argument(
        "--only",
        action="append",
        choices=sorted(BENCHMARKS),
        metavar="NAME",
        help=f"run only NAME (repeatable): {', '.join(BENCHMARKS)}",
    )
    parser.add_argument(
        "--out",
        type=Path,
        help="results file (default: bench/results/latest.json for a full run of everything, "
        "bench/results/partial.json otherwise)",
    )
    parser.add_argument(
        "--workdir", type=Path, help="where the stores and files under test go (default: $TMPDIR)"
    )
    parser.add_argument(
        "--markdown",
        type=Path,
        metavar="FILE",
        help="print the results in FILE as a Markdown table and exit (runs nothing)",
    )
    args = parser.parse_args(argv)
    if args.markdown is not None:
        print(markdown(msgspec.json.decode(args.markdown.read_bytes(), type=Report)))
        return 0
    if args.workdir is not None and not args.workdir.is_dir():
        parser.error(f"--workdir {args.workdir}: not a directory (create it first)")
    names = args.only or list(BENCHMARKS)
    full = not args.quick and not args.only
    out = args.out or _RESULTS / ("latest.json" if full else "partial.json")
    console = Console(stderr=True)
    report = collect(
        names,
        quick=args.quick,
        parent=args.workdir,
        progress=lambda name: console.log(f"running {name}{' (quick)' if args.quick else ''}"),
    )
    write(report, out)
    screen = Console()
    if not screen.is_terminal:
        screen = Console(width=200)
    screen.print(table(report))
    console.log(f"results written to {out}")
    for r in report.benchmarks:
        if r.runs and not r.met:
            console.log(f"[red]target missed[/]: {r.name}: {r.target}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
