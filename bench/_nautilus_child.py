"""NautilusTrader side of the bar-throughput comparison; runs in its own process.

Run as a script by ``bench.nautilus`` with a Python that has ``nautilus_trader``
(it may be another virtual environment, so this file imports nothing but the
standard library and NautilusTrader):

    python bench/_nautilus_child.py BARS_FILE

``BARS_FILE`` holds one JSON header line (``{"symbols": [...], "bars": n}``)
followed by ``n`` records ``<Iq5d`` (symbol index, bar close time in ns, open,
high, low, close, volume), in delivery order. One ``BacktestEngine`` gets one
equity instrument and one trivial counting ``Actor`` per symbol, subscribed to
that symbol's external 1-minute bars; only ``engine.run()`` is timed. Prints
one JSON line: ``{"bars", "counted", "seconds", "version"}``.
"""

from __future__ import annotations

import importlib
import json
import struct
import sys
import time
from typing import Any

_RECORD = struct.Struct("<Iq5d")


def _load(path: str) -> tuple[list[str], list[tuple[int, int, float, float, float, float, float]]]:
    with open(path, "rb") as f:
        header = json.loads(f.readline())
        body = f.read()
    records = list(_RECORD.iter_unpack(body))
    if len(records) != header["bars"]:
        raise SystemExit(f"{path}: {len(records)} records, header says {header['bars']}")
    return list(header["symbols"]), records


def main(path: str) -> None:
    nt: Any = importlib.import_module("nautilus_trader")
    engine_mod: Any = importlib.import_module("nautilus_trader.backtest.engine")
    config_mod: Any = importlib.import_module("nautilus_trader.config")
    actor_mod: Any = importlib.import_module("nautilus_trader.common.actor")
    data_mod: Any = importlib.import_module("nautilus_trader.model.data")
    enums: Any = importlib.import_module("nautilus_trader.model.enums")
    ids: Any = importlib.import_module("nautilus_trader.model.identifiers")
    objects: Any = importlib.import_module("nautilus_trader.model.objects")
    currencies: Any = importlib.import_module("nautilus_trader.model.currencies")
    providers: Any = importlib.import_module("nautilus_trader.test_kit.providers")

    names, records = _load(path)

    def on_start(self: Any) -> None:
        self.subscribe_bars(self.bench_bar_type)

    def on_bar(self: Any, bar: Any) -> None:
        self.bench_count += 1

    counting_actor = type(
        "CountingActor", (actor_mod.Actor,), {"on_start": on_start, "on_bar": on_bar}
    )

    engine = engine_mod.BacktestEngine(
        config=engine_mod.BacktestEngineConfig(
            logging=config_mod.LoggingConfig(bypass_logging=True),
            run_analysis=False,
        )
    )
    usd = currencies.USD
    engine.add_venue(
        venue=ids.Venue("XNAS"),
        oms_type=enums.OmsType.NETTING,
        account_type=enums.AccountType.CASH,
        base_currency=usd,
        starting_balances=[objects.Money(10_000_000, usd)],
    )
    bar_types = []
    actors = []
    for i, symbol in enumerate(names):
        instrument = providers.TestInstrumentProvider.equity(symbol=symbol, venue="XNAS")
        engine.add_instrument(instrument)
        bar_type = data_mod.BarType.from_str(f"{instrument.id}-1-MINUTE-LAST-EXTERNAL")
        bar_types.append(bar_type)
        actor = counting_actor(config_mod.ActorConfig(component_id=f"COUNTER-{i:05d}"))
        actor.bench_bar_type = bar_type
        actor.bench_count = 0
        engine.add_actor(actor)
        actors.append(actor)
    price, qty, bar_cls = objects.Price, objects.Quantity, data_mod.Bar
    bars = [
        bar_cls(
            bar_types[j],
            price(o, 2),
            price(h, 2),
            price(lo, 2),
            price(c, 2),
            qty(v, 0),
            ts,
            ts,
        )
        for j, ts, o, h, lo, c, v in records
    ]
    engine.add_data(bars, validate=False, sort=True)
    t0 = time.perf_counter()
    engine.run()
    seconds = time.perf_counter() - t0
    counted = sum(a.bench_count for a in actors)
    engine.dispose()
    print(
        json.dumps(
            {
                "bars": len(records),
                "counted": counted,
                "seconds": seconds,
                "version": nt.__version__,
            }
        )
    )


if __name__ == "__main__":
    if len(sys.argv) != 2:
        raise SystemExit("usage: _nautilus_child.py BARS_FILE")
    main(sys.argv[1])
