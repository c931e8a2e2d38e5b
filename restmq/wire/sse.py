"""Server-Sent Events framing (the WHATWG ``text/event-stream`` format): pure, no Twisted.

An event is a block of ``field: value`` lines ended by an empty line: ``id:`` (what the browser
sends back as ``Last-Event-ID`` when it reconnects), ``event:`` (the event type; none means
``message``), ``retry:`` (the reconnection delay in ms) and one ``data:`` line per line of the data
(a browser joins them back with ``\\n``). A line starting with ``:`` is a comment: browsers ignore
it, so it serves as a heartbeat that keeps proxies and idle-connection timers from closing a quiet
stream. Lines end with ``\\n``; CR, LF and CRLF in the data all count as line breaks.

:func:`parse` is the reverse (what a browser's EventSource does), for tests and Python clients.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from restmq.wire.chunked import dumps
from restmq.values import parse_int

CONTENT_TYPE = b"text/event-stream; charset=utf-8"

_LINES = re.compile(r"\r\n|\r|\n")


def _field(name: str, value: str) -> str:
    if _LINES.search(value):
        raise ValueError(f"an SSE {name} cannot hold a line break")
    return f"{name}: {value}\n"


def event(
    data: str,
    *,
    id: str | None = None,
    event: str | None = None,
    retry: int | None = None,
) -> bytes:
    """One event: ``id:``, ``event:``, ``retry:`` when given, one ``data:`` line per line of
    ``data``, then the empty line that dispatches it. An ``id`` or ``event`` holding a line break
    (or an ``id`` holding NUL, which browsers ignore) is a ValueError."""
    out = []
    if id is not None:
        if "\0" in id:
            raise ValueError("an SSE id cannot hold NUL")
        out.append(_field("id", id))
    if event is not None:
        out.append(_field("event", event))
    if retry is not None:
        if retry < 0:
            raise ValueError("an SSE retry is a non-negative number of milliseconds")
        out.append(f"retry: {int(retry)}\n")
    out.extend(f"data: {line}\n" for line in _LINES.split(data))
    out.append("\n")
    return "".join(out).encode("utf-8")


def comment(text: str = "") -> bytes:
    """A comment (``: text``, one ``:`` line per line of ``text``) and an empty line: ignored by
    clients, used as the heartbeat (``: ping``). The empty line dispatches no event (no data)."""
    lines = _LINES.split(text)
    return ("".join(f": {line}\n" if line else ":\n" for line in lines) + "\n").encode("utf-8")


#: The heartbeat every stream sends while idle.
PING = comment("ping")


def message_event(message: dict[str, Any]) -> bytes:
    """A queue message as an event: ``id:`` its broadcast replay id when it has one (so a browser
    reconnecting with ``Last-Event-ID`` resumes after it), else its key; ``data:`` its JSON (one
    line: JSON escapes line breaks inside strings), default event type (``onmessage`` gets it)."""
    return event(dumps(message).decode("utf-8"), id=str(message.get("event_id") or message["key"]))


def end_event(reason: str) -> bytes:
    """The last event of a stream: ``event: end`` with ``{"reason": …}`` (``purged``, ``shutdown``)."""
    return event(dumps({"reason": reason}).decode("utf-8"), event="end")


# -- reading (what EventSource does) --------------------------------------------------------------


@dataclass(frozen=True)
class Event:
    """One dispatched event: ``data`` (lines joined with ``\\n``), type, and the last id seen."""

    data: str
    event: str = "message"
    id: str = ""
    retry: int | None = None


def parse(stream: bytes) -> Iterator[Event]:
    """The events of a complete ``text/event-stream`` body, as a browser would dispatch them:
    comments skipped, events without data not dispatched, the last ``id`` carried over, an
    unterminated last block ignored."""
    text = stream.decode("utf-8", "replace")
    if text.startswith("\ufeff"):
        text = text[1:]
    last_id = ""
    data: list[str] = []
    kind = ""
    retry: int | None = None
    lines = _LINES.split(text)
    # The last piece is whatever follows the final line break: an unfinished line, never used.
    for line in lines[:-1]:
        if not line:
            if data:
                yield Event("\n".join(data), kind or "message", last_id, retry)
            data, kind, retry = [], "", None
            continue
        if line.startswith(":"):
            continue
        name, _, value = line.partition(":")
        if value.startswith(" "):
            value = value[1:]
        if name == "data":
            data.append(value)
        elif name == "event":
            kind = value
        elif name == "id":
            if "\0" not in value:
                last_id = value
        elif name == "retry" and (ms := parse_int(value, signed=False)) is not None:
            retry = ms
