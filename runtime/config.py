"""Configuration: TOML profiles decoded into msgspec Structs.

Everything that arrives from outside is decoded with ``forbid_unknown_fields``,
so a typo is an error, not a silently ignored setting. A bad file raises
``ConfigError`` naming the file and the field (``$.broker.kind: ...``); the CLI
turns it into exit code 2 before anything starts.
"""

from __future__ import annotations

import enum
import re
from datetime import date
from datetime import time as dtime
from pathlib import Path

import msgspec

__all__ = [
    "AlpacaVenueConfig",
    "BrokerConfig",
    "BrokerKind",
    "CalendarConfig",
    "Config",
    "ConfigError",
    "MqttConfig",
    "OrphanPolicy",
    "RecoveryConfig",
    "RuntimeConfig",
    "SimVenueConfig",
    "StrategyConfig",
    "UnprotectedPolicy",
    "WatchItem",
    "default_config_path",
    "load_config",
]


class ConfigError(Exception):
    """A configuration file cannot be used; the message names the file and the field."""


class BrokerKind(enum.StrEnum):
    SIM = "sim"
    ALPACA = "alpaca"
    IBKR = "ibkr"


class OrphanPolicy(enum.StrEnum):
    ADOPT = "adopt"
    MANAGE = "manage"
    FLATTEN = "flatten"


class UnprotectedPolicy(enum.StrEnum):
    RESTORE = "restore"
    ALERT = "alert"


class SimVenueConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, frozen=True):
    seed: int = 7
    speed: float = 60.0
    bar_seconds: int = 60
    start_price: float = 100.0
    latency_ms: float = 0.0
    max_fill_qty: float | None = None
    start_day: date = date(2026, 1, 5)
    book_file: str = "sim-venue.book"


class AlpacaVenueConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, frozen=True):
    """Alpaca's API (keys only from the environment); overrides point it at the local exchange.

    With only ``url_override`` the streams and the data API are on that host too.
    ``account`` pins the account (the store is named after it; another one is refused).
    """

    paper: bool = True
    url_override: str | None = None
    stream_url_override: str | None = None
    data_url_override: str | None = None
    data_stream_url_override: str | None = None
    feed: str = "iex"
    account: str | None = None
    reconnect_min_s: float = 1.0
    reconnect_max_s: float = 30.0


class BrokerConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, frozen=True):
    kind: BrokerKind = BrokerKind.SIM
    sim: SimVenueConfig = msgspec.field(default_factory=SimVenueConfig)
    alpaca: AlpacaVenueConfig = msgspec.field(default_factory=AlpacaVenueConfig)


class RuntimeConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, frozen=True):
    state_dir: str = "state"
    checkpoint_interval_s: float = 10.0
    mailbox_size: int = 1024
    bar_buffer: int = 240
    restart_intensity: int = 3
    restart_period_s: float = 60.0
    stop_timeout_s: float = 5.0


class CalendarConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, frozen=True):
    timezone: str = "America/New_York"
    session_start: dtime = dtime(4, 0)
    regular_open: dtime = dtime(9, 30)
    regular_close: dtime = dtime(16, 0)


class StrategyConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, frozen=True):
    name: str = "pivot_breakout"
    qty: float = 100.0
    max_attempts: int = 2
    warmup_bars: int = 20
    opening_range_bars: int = 15
    target1_r: float = 1.0
    target2_r: float = 2.0
    eod_minutes: int = 5


class RecoveryConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, frozen=True):
    orphan_policy: OrphanPolicy = OrphanPolicy.ADOPT
    unprotected_policy: UnprotectedPolicy = UnprotectedPolicy.RESTORE
    periodic_s: float = 60.0
    confirm_runs: int = 2
    connect_tries: int = 3
    connect_backoff_s: float = 1.0
    executions_margin_s: float = 3600.0


class MqttConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, frozen=True):
    """The MQTT bridge (``runtime.mqtt``): off unless enabled; trading never depends on it.

    The username and password come from the environment only
    (``STALWART_MQTT_USERNAME``, ``STALWART_MQTT_PASSWORD``).
    """

    enabled: bool = False
    host: str = "127.0.0.1"
    port: int = 1883
    prefix: str = "stalwart"
    tls: bool = False
    keepalive_s: int = 30
    reconnect_min_s: float = 1.0
    reconnect_max_s: float = 30.0
    publish_interval_s: float = 1.0
    queue_size: int = 10_000


class WatchItem(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, frozen=True):
    symbol: str
    resistance: float | None = None
    support: float | None = None


def _default_watchlist() -> list[WatchItem]:
    return [WatchItem(symbol=s) for s in ("AAPL", "MSFT", "NVDA", "AMD", "TSLA")]


class Config(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, frozen=True):
    broker: BrokerConfig = msgspec.field(default_factory=BrokerConfig)
    runtime: RuntimeConfig = msgspec.field(default_factory=RuntimeConfig)
    calendar: CalendarConfig = msgspec.field(default_factory=CalendarConfig)
    strategy: StrategyConfig = msgspec.field(default_factory=StrategyConfig)
    recovery: RecoveryConfig = msgspec.field(default_factory=RecoveryConfig)
    mqtt: MqttConfig = msgspec.field(default_factory=MqttConfig)
    watchlist: list[WatchItem] = msgspec.field(default_factory=_default_watchlist)


_SYMBOL = re.compile(r"^[A-Z][A-Z0-9.]{0,9}$")


def _check(config: Config) -> None:
    """Semantic checks msgspec's types cannot express; raise ``ValueError`` with the path."""
    positive = {
        "$.runtime.checkpoint_interval_s": config.runtime.checkpoint_interval_s,
        "$.runtime.mailbox_size": config.runtime.mailbox_size,
        "$.runtime.bar_buffer": config.runtime.bar_buffer,
        "$.broker.sim.speed": config.broker.sim.speed,
        "$.broker.sim.bar_seconds": config.broker.sim.bar_seconds,
        "$.broker.sim.start_price": config.broker.sim.start_price,
        "$.strategy.qty": config.strategy.qty,
        "$.strategy.max_attempts": config.strategy.max_attempts,
        "$.recovery.periodic_s": config.recovery.periodic_s,
        "$.recovery.confirm_runs": config.recovery.confirm_runs,
        "$.recovery.connect_tries": config.recovery.connect_tries,
        "$.broker.alpaca.reconnect_min_s": config.broker.alpaca.reconnect_min_s,
        "$.mqtt.keepalive_s": config.mqtt.keepalive_s,
        "$.mqtt.reconnect_min_s": config.mqtt.reconnect_min_s,
        "$.mqtt.publish_interval_s": config.mqtt.publish_interval_s,
        "$.mqtt.queue_size": config.mqtt.queue_size,
    }
    for path, value in positive.items():
        if not value > 0:
            raise ValueError(f"{path}: must be > 0, got {value!r}")
    alpaca = config.broker.alpaca
    if alpaca.reconnect_max_s < alpaca.reconnect_min_s:
        raise ValueError("$.broker.alpaca.reconnect_max_s: must be >= reconnect_min_s")
    if alpaca.feed not in ("iex", "sip"):
        raise ValueError(f"$.broker.alpaca.feed: expected iex or sip, got {alpaca.feed!r}")
    _check_mqtt(config.mqtt)
    if not config.watchlist:
        raise ValueError("$.watchlist: at least one symbol is required")
    seen: set[str] = set()
    for i, item in enumerate(config.watchlist):
        if not _SYMBOL.match(item.symbol):
            raise ValueError(f"$.watchlist[{i}].symbol: {item.symbol!r} is not a ticker symbol")
        if item.symbol in seen:
            raise ValueError(f"$.watchlist[{i}].symbol: {item.symbol} is listed twice")
        seen.add(item.symbol)
        for name in ("resistance", "support"):
            level = getattr(item, name)
            if level is not None and not level > 0:
                raise ValueError(f"$.watchlist[{i}].{name}: must be > 0, got {level!r}")
    try:
        from zoneinfo import ZoneInfo

        ZoneInfo(config.calendar.timezone)
    except Exception as exc:
        raise ValueError(
            f"$.calendar.timezone: unknown timezone {config.calendar.timezone!r}"
        ) from exc


_TOPIC_LEVEL = re.compile(r"^[A-Za-z0-9_.-]+(/[A-Za-z0-9_.-]+)*$")


def _check_mqtt(mqtt: MqttConfig) -> None:
    if not 0 < mqtt.port < 65536:
        raise ValueError(f"$.mqtt.port: must be 1-65535, got {mqtt.port!r}")
    if not mqtt.host:
        raise ValueError("$.mqtt.host: must not be empty")
    if not _TOPIC_LEVEL.match(mqtt.prefix):
        raise ValueError(
            f"$.mqtt.prefix: {mqtt.prefix!r} is not a topic prefix (letters, digits, '_.-', "
            "levels split by '/', no wildcards, no leading or trailing '/')"
        )
    if mqtt.reconnect_max_s < mqtt.reconnect_min_s:
        raise ValueError("$.mqtt.reconnect_max_s: must be >= reconnect_min_s")


def load_config(path: Path | None) -> Config:
    """Read and validate a TOML profile; ``None`` is the embedded sim profile.

    Raises ``ConfigError`` naming the file and the offending field.
    """
    path = path or default_config_path()
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror or exc}") from exc
    try:
        config = msgspec.toml.decode(raw, type=Config)
        _check(config)
    except msgspec.ValidationError as exc:
        raise ConfigError(f"{path}: {_reword(str(exc))}") from exc
    except msgspec.DecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from exc
    except ValueError as exc:
        raise ConfigError(f"{path}: {exc}") from exc
    return config


def _reword(message: str) -> str:
    """Turn msgspec's ``Expected x - at `$.a.b``` into ``$.a.b: expected x``."""
    match = re.match(r"^(?P<what>.*?) - at `(?P<path>[^`]+)`$", message)
    if not match:
        return message
    what = match["what"]
    if what.startswith("Invalid enum value"):
        path = match["path"]
        allowed = _enum_choices(path)
        if allowed:
            what = f"{what}; expected one of {', '.join(allowed)}"
    return f"{match['path']}: {what[0].lower()}{what[1:]}"


def _enum_choices(path: str) -> list[str]:
    enums: dict[str, type[enum.StrEnum]] = {
        "$.broker.kind": BrokerKind,
        "$.recovery.orphan_policy": OrphanPolicy,
        "$.recovery.unprotected_policy": UnprotectedPolicy,
    }
    found = enums.get(path)
    return [m.value for m in found] if found else []


def default_config_path() -> Path:
    """Return ``config/default.toml`` of this checkout (the embedded sim profile)."""
    return Path(__file__).resolve().parent.parent / "config" / "default.toml"
