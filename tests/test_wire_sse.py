"""SSE framing (restmq.wire.sse): table tests of events, comments and the EventSource-style reader."""

from __future__ import annotations

import json

import pytest

from restmq.wire import sse


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        ({"data": "x"}, b"data: x\n\n"),
        ({"data": ""}, b"data: \n\n"),
        ({"data": "a\nb"}, b"data: a\ndata: b\n\n"),
        ({"data": "a\r\nb\rc\n"}, b"data: a\ndata: b\ndata: c\ndata: \n\n"),
        ({"data": "x", "id": "q:1"}, b"id: q:1\ndata: x\n\n"),
        ({"data": "x", "event": "end"}, b"event: end\ndata: x\n\n"),
        ({"data": "x", "id": "7", "event": "e", "retry": 3000}, b"id: 7\nevent: e\nretry: 3000\ndata: x\n\n"),
        ({"data": "caf\u00e9 \u2028"}, "data: caf\u00e9 \u2028\n\n".encode()),
    ],
)
def test_event_framing(kwargs, expected):
    """Each field is one line, data is split on every kind of line break, an empty line ends it."""
    data = kwargs.pop("data")
    assert sse.event(data, **kwargs) == expected


@pytest.mark.parametrize(
    "kwargs",
    [{"id": "a\nb"}, {"id": "a\rb"}, {"id": "a\0b"}, {"event": "x\ny"}, {"retry": -1}],
)
def test_event_refuses_fields_that_would_break_the_stream(kwargs):
    """An id or event type with a line break (or an id with NUL, a negative retry) is refused."""
    with pytest.raises(ValueError):
        sse.event("x", **kwargs)


@pytest.mark.parametrize(
    ("text", "expected"),
    [("ping", b": ping\n\n"), ("", b":\n\n"), ("a\nb", b": a\n: b\n\n")],
)
def test_comment_framing(text, expected):
    """A comment is one ':' line per line of text plus the empty line; PING is ': ping'."""
    assert sse.comment(text) == expected
    assert sse.PING == b": ping\n\n"


def test_message_and_end_events():
    """A message event has its key as id and its JSON as one data line; end carries the reason."""
    message = {"key": "q:3", "queue": "q", "value": "two\nlines"}
    frame = sse.message_event(message)
    assert frame.startswith(b"id: q:3\ndata: {") and frame.count(b"\n") == 3
    (parsed,) = sse.parse(frame)
    assert (parsed.id, parsed.event, json.loads(parsed.data)) == ("q:3", "message", message)
    (end,) = sse.parse(sse.end_event("purged"))
    assert (end.event, json.loads(end.data)) == ("end", {"reason": "purged"})


@pytest.mark.parametrize(
    ("stream", "expected"),
    [
        (b"data: a\ndata: b\n\n", [("a\nb", "message", "")]),
        (b": ping\n\n", []),
        (b"id: 1\n\nid: 2\ndata: x\n\ndata: y\n\n", [("x", "message", "2"), ("y", "message", "2")]),
        (b"event: end\ndata:{}\r\n\r\n", [("{}", "end", "")]),
        (b"data: done\n\ndata: half", [("done", "message", "")]),
        (b"\xef\xbb\xbfdata: bom\n\n", [("bom", "message", "")]),
    ],
)
def test_parse_reads_streams_like_eventsource(stream, expected):
    """The reader joins data lines, skips comments, carries ids over and drops an unfinished block."""
    assert [(e.data, e.event, e.id) for e in sse.parse(stream)] == expected


def test_event_round_trips_through_parse():
    """Whatever data an event carries, parse gives it back with line breaks normalised to LF."""
    for data in ["", "plain", "a\nb\nc", "\n", "x\r\ny", " lead", "colon: inside"]:
        (parsed,) = sse.parse(sse.event(data, id="k", event="t"))
        assert (parsed.data, parsed.id, parsed.event) == (data.replace("\r\n", "\n"), "k", "t")
