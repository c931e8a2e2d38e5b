"""Log observers: text or JSON lines, info and above, for ``restmq serve`` and twistd alike."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from typing import IO, Any

from twisted.logger import (
    FilteringLogObserver,
    ILogObserver,
    LogLevel,
    LogLevelFilterPredicate,
    formatEvent,
    globalLogBeginner,
    textFileLogObserver,
)
from zope.interface import provider


#: Keys of twisted.python.log's legacy events, already carried by the standard fields.
LEGACY = frozenset({"message", "system", "time", "isError", "format", "why", "failure"})


def as_json(event: dict[str, Any]) -> str:
    """One event as a flat JSON object: ``time`` (UTC, ISO 8601), ``level``, ``namespace``,
    ``message`` (the formatted text), ``log_format`` (the template, for grouping), every named
    field the event carries, and ``traceback`` for failures. Values JSON cannot hold become text."""
    out: dict[str, Any] = {
        key: value for key, value in event.items() if not key.startswith("log_") and key not in LEGACY
    }
    level = event.get("log_level")
    out.update(
        time=datetime.fromtimestamp(event.get("log_time", 0), timezone.utc).isoformat(timespec="milliseconds"),
        level=getattr(level, "name", "info"),
        namespace=event.get("log_namespace", "-"),
        message=formatEvent(event),
        log_format=event.get("log_format"),
    )
    failure = event.get("log_failure")
    if failure is not None:
        out["traceback"] = failure.getTraceback()
    return json.dumps(out, default=str, ensure_ascii=False)


def json_observer(stream: IO[str]) -> ILogObserver:
    """One JSON object per line (no RFC 7464 separator), for log shippers and tests."""

    @provider(ILogObserver)
    def observe(event: dict[str, Any]) -> None:
        stream.write(as_json(event) + "\n")
        stream.flush()

    return observe


def observer(log_format: str, stream: IO[str]) -> ILogObserver:
    """The observer of ``--log-format`` (text or json) writing to ``stream``, info and above."""
    inner = json_observer(stream) if log_format == "json" else textFileLogObserver(stream)
    predicate = LogLevelFilterPredicate(defaultLogLevel=LogLevel.info)
    # Reconnect attempts while Redis is away are logged by the backend once, not per pool slot.
    predicate.setLogLevelForNamespace("twisted.application._client_service.ClientService", LogLevel.warn)
    return FilteringLogObserver(inner, [predicate])


def start_logging(log_format: str, stream: IO[str]) -> None:
    """Send twisted.logger events to ``stream`` (``restmq serve``; twistd starts its own)."""
    globalLogBeginner.beginLoggingTo([observer(log_format, stream)], redirectStandardIO=False)
