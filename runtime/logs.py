"""Logging setup: one logger per module, human-readable or JSON, secrets redacted.

Records go to stderr and to a rotating file in the state dir. Every value of a
secret environment variable (Alpaca's keys) is replaced by ``***`` in every
record, whatever module logged it.
"""

from __future__ import annotations

import logging
import logging.handlers
import os
from datetime import UTC, datetime
from pathlib import Path

import msgspec

__all__ = ["SECRET_ENV", "setup_logging"]

SECRET_ENV = ("APCA_API_KEY_ID", "APCA_API_SECRET_KEY", "STALWART_MQTT_PASSWORD")


class _Redact(logging.Filter):
    def __init__(self) -> None:
        super().__init__()
        self.secrets = [v for k in SECRET_ENV if len(v := os.environ.get(k, "")) >= 4]

    def filter(self, record: logging.LogRecord) -> bool:
        if self.secrets:
            message = record.getMessage()
            for secret in self.secrets:
                message = message.replace(secret, "***")
            record.msg, record.args = message, None
        return True


class _JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        body: dict[str, object] = {
            "at": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            body["exc"] = self.formatException(record.exc_info)
        return msgspec.json.encode(body).decode()


class _UtcFormatter(logging.Formatter):
    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        return datetime.fromtimestamp(record.created, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def setup_logging(
    fmt: str = "text", state_dir: Path | None = None, level: int = logging.INFO
) -> None:
    """Configure the root logger; ``fmt`` is ``text`` or ``json``."""
    if fmt not in ("text", "json"):
        raise ValueError(f"--log-format: expected text or json, got {fmt!r}")
    formatter: logging.Formatter = (
        _JsonFormatter()
        if fmt == "json"
        else _UtcFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    )
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
        handler.close()
    redact = _Redact()
    handlers: list[logging.Handler] = [logging.StreamHandler()]
    if state_dir is not None:
        state_dir.mkdir(parents=True, exist_ok=True)
        handlers.append(
            logging.handlers.RotatingFileHandler(
                state_dir / "stalwart.log", maxBytes=10_000_000, backupCount=5
            )
        )
    for handler in handlers:
        handler.setFormatter(formatter)
        handler.addFilter(redact)
        root.addHandler(handler)
    root.setLevel(level)
    for noisy in ("aiosqlite", "asyncio"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
