"""--log-format json: one flat JSON object per line with the event's named fields."""

from __future__ import annotations

import io
import json

from twisted.logger import Logger, LogPublisher
from twisted.python.failure import Failure

from restmq.logs import observer


def emit(log_format: str, call) -> list[str]:
    stream = io.StringIO()
    publisher = LogPublisher(observer(log_format, stream))
    call(Logger(namespace="restmq.test", observer=publisher))
    return stream.getvalue().splitlines()


def test_json_lines_carry_level_message_and_named_fields():
    """Each event is one JSON line: time, level, namespace, the formatted message, and its fields."""
    (line,) = emit("json", lambda log: log.info("queue {queue} has {n} messages", queue="jobs", n=3))
    event = json.loads(line)
    assert (event["level"], event["namespace"]) == ("info", "restmq.test")
    assert event["message"] == "queue jobs has 3 messages" and (event["queue"], event["n"]) == ("jobs", 3)
    assert event["log_format"] == "queue {queue} has {n} messages" and event["time"].endswith("+00:00")


def test_json_lines_hold_failures_and_odd_values_and_drop_debug():
    """A failure's traceback is a field, values JSON cannot hold become text, and debug events are filtered out."""
    try:
        1 / 0
    except ZeroDivisionError:
        failure = Failure()
    lines = emit("json", lambda log: (log.debug("hidden"), log.failure("boom {thing}", failure, thing=object())))
    assert len(lines) == 1
    event = json.loads(lines[0])
    assert event["level"] == "critical" and "ZeroDivisionError" in event["traceback"]
    assert event["thing"].startswith("<object object")


def test_text_format_is_plain_lines():
    """--log-format text writes one human-readable line per event."""
    (line,) = emit("text", lambda log: log.warn("careful {what}", what="now"))
    assert line.endswith("careful now") and not line.startswith("{")
