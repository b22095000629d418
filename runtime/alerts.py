"""Alerts: what the runtime tells the operator, one record each.

Ground level (imports nothing of ours). Every alert is also one log record with
the symbol and the numbers; the MQTT bridge, when configured, publishes them.
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Callable
from datetime import datetime

import msgspec

__all__ = ["Alert", "AlertSink", "Severity", "log_alert"]

_log = logging.getLogger(__name__)


class Severity(enum.StrEnum):
    INFO = "info"
    WARNING = "warning"
    CRITICAL = "critical"


class Alert(msgspec.Struct, frozen=True):
    kind: str  # zombie, orphan, drift, unprotected, degraded, halted, store, ...
    severity: Severity
    message: str
    at: datetime
    symbol: str | None = None


AlertSink = Callable[[Alert], None]

_LEVELS = {
    Severity.INFO: logging.INFO,
    Severity.WARNING: logging.WARNING,
    Severity.CRITICAL: logging.CRITICAL,
}


def log_alert(alert: Alert) -> None:
    """Log ``alert`` as one record; the default sink."""
    _log.log(
        _LEVELS[alert.severity],
        "ALERT %s %s%s: %s",
        alert.severity.value,
        alert.kind,
        f" {alert.symbol}" if alert.symbol else "",
        alert.message,
    )
