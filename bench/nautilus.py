"""NautilusTrader as a peer in the bar-throughput benchmark (optional).

NautilusTrader pins its own versions of numpy, pandas and msgspec, so it may
live in another virtual environment: the peer runs as a subprocess
(``_nautilus_child.py``) with the first Python found that has it:

1. ``$STALWART_BENCH_NAUTILUS_PYTHON`` (a path to a Python), else
2. this interpreter, when ``nautilus_trader`` is importable here.

Otherwise the comparison is recorded as not run, with the reason. It is fed
the very bars the actors get, pinned to the same core, one run after each
runtime run, and the ratio is taken run by run.
"""

from __future__ import annotations

import importlib.util
import json
import os
import struct
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from bench._core import Result, not_run, summarize

if TYPE_CHECKING:
    from bench.bars import BarTape

__all__ = ["ENV", "Peer", "result"]

ENV = "STALWART_BENCH_NAUTILUS_PYTHON"
_CHILD = Path(__file__).with_name("_nautilus_child.py")
_RECORD = struct.Struct("<Iq5d")
_TIMEOUT_S = 900.0


@dataclass(frozen=True)
class Peer:
    """Where NautilusTrader runs, or why it cannot."""

    python: str | None
    version: str | None
    reason: str

    @property
    def ready(self) -> bool:
        return self.python is not None

    @classmethod
    def find(cls) -> Peer:
        """Locate a Python with ``nautilus_trader`` (see the module docstring)."""
        candidate = os.environ.get(ENV)
        if candidate:
            where = f"${ENV}={candidate}"
        elif importlib.util.find_spec("nautilus_trader") is not None:
            candidate, where = sys.executable, "this interpreter"
        else:
            return cls(
                None,
                None,
                "nautilus_trader is not installed (install the bench-peers extra, "
                f"or set {ENV} to a Python that has it)",
            )
        try:
            out = subprocess.run(
                [candidate, "-c", "import nautilus_trader; print(nautilus_trader.__version__)"],
                capture_output=True,
                text=True,
                timeout=120,
                check=True,
            )
        except (OSError, subprocess.SubprocessError) as exc:
            return cls(None, None, f"nautilus_trader not importable with {where}: {exc}")
        return cls(candidate, out.stdout.strip(), "")

    def prepare(self, tape: BarTape, workdir: Path) -> Path:
        """Write the tape's bars for the child (once; every run reads the same file)."""
        path = workdir / "nautilus-bars.bin"
        index = {name: j for j, name in enumerate(tape.names)}
        with path.open("wb") as f:
            header = {"symbols": tape.names, "bars": tape.count}
            f.write(json.dumps(header).encode() + b"\n")
            for row in tape.slots:
                for bar in row:
                    close_ns = int(bar.ts.timestamp() + 60) * 1_000_000_000
                    f.write(
                        _RECORD.pack(
                            index[bar.symbol],
                            close_ns,
                            bar.open,
                            bar.high,
                            bar.low,
                            bar.close,
                            bar.volume,
                        )
                    )
        return path

    def measure(self, data: Path, cpu: int) -> float:
        """Run the child once on ``cpu``; return its bars/s (``engine.run()`` only)."""
        assert self.python is not None
        out = subprocess.run(
            ["taskset", "-c", str(cpu), self.python, str(_CHILD), str(data)],
            capture_output=True,
            text=True,
            timeout=_TIMEOUT_S,
            check=False,
        )
        if out.returncode != 0:
            raise RuntimeError(f"nautilus peer failed ({out.returncode}): {out.stderr[-2000:]}")
        report = json.loads(out.stdout.strip().splitlines()[-1])
        if report["counted"] != report["bars"]:
            raise RuntimeError(f"nautilus actors counted {report['counted']} of {report['bars']}")
        return float(report["bars"]) / float(report["seconds"])


def result(
    peer: Peer,
    metric: str,
    stalwart: Sequence[float],
    peer_rates: Sequence[float],
    n_symbols: int,
) -> Result:
    """Return the comparison line (not run, with the reason, when the peer is absent)."""
    name = "bar_throughput_vs_nautilus"
    target = ">= 5x NautilusTrader"
    if not peer.ready or not peer_rates:
        return not_run(
            name=name,
            metric=metric,
            unit="bars/s",
            baseline=f"NautilusTrader BacktestEngine, one counting Actor per instrument "
            f"({n_symbols:,} instruments)",
            target=target,
            why=peer.reason or "no peer runs",
        )
    return summarize(
        name=name,
        metric=metric,
        unit="bars/s",
        values=stalwart,
        baseline=f"NautilusTrader {peer.version} BacktestEngine, the same bars, one counting "
        f"Actor per instrument ({n_symbols:,} instruments), engine.run() only, same core",
        baseline_values=peer_rates,
        ratios=[a / b for a, b in zip(stalwart, peer_rates, strict=True)],
        target=target,
        met=lambda _v, r: r is not None and r >= 5.0,
        digits=0,
    )
