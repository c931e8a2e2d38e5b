"""The line protocol's codec, without a reactor: what each line means and how answers are spelled."""

from __future__ import annotations

import json

import pytest

from restmq.errors import Empty, RestMQError
from restmq.wire import line as wire
from restmq.wire.line import Auth, Call, Invalid, Ping, Quit, Subscribe

PARSED = [
    (b"add q hello world", Call("add", {"queue": "q", "value": "hello world"})),
    (b"ADD q  spaced   inside ", Call("add", {"queue": "q", "value": "spaced   inside"})),
    (b"add\tq\ttabbed", Call("add", {"queue": "q", "value": "tabbed"})),
    (b"take q\r", Call("take", {"queue": "q"})),
    (b"take q 5 1.5", Call("take", {"queue": "q", "count": "5", "wait": "1.5"})),
    (b"len q ", Call("len", {"queue": "q"})),
    (b"stats", Call("stats", {})),
    (b"Stats q", Call("stats", {"queue": "q"})),
    (b"list", Call("list", {})),
    ("del q q:3".encode(), Call("del", {"queue": "q", "key": "q:3"})),
    ("add q héllo ✓".encode(), Call("add", {"queue": "q", "value": "héllo ✓"})),
    (b'{"cmd":"add","queue":"q","value":{"a":[1,2]}}', Call("add", {"queue": "q", "value": {"a": [1, 2]}})),
    (b'  {"cmd": "take", "queue": "q", "count": 2}  ', Call("take", {"queue": "q", "count": 2})),
    (b'{"cmd":"frobnicate"}', Call("frobnicate", {})),
    (b"ping", Ping()),
    (b"PING extra", Ping()),
    (b"quit", Quit()),
    (b"subscribe q", Subscribe("q", "take")),
    (b"subscribe q RESERVE 2.5", Subscribe("q", "reserve", "2.5")),
    (b"SUBSCRIBE q Reserve", Subscribe("q", "reserve")),
    (b"auth s3cret", Auth("s3cret")),
]


@pytest.mark.parametrize(("raw", "expected"), PARSED)
def test_parse_line(raw: bytes, expected: wire.Request) -> None:
    """Text and JSON lines become the call or framing verb they name."""
    assert wire.parse_line(raw) == expected


INVALID = [
    (b"", "bad_request"),
    (b"   \r", "bad_request"),
    (b"{bad json", "bad_request"),
    (b'{"queue": "q"}', "bad_request"),
    (b'{"cmd": 5}', "bad_request"),
    (b'{"cmd": ""}', "bad_request"),
    (b"{" + b'"a":{' * 50_000, "bad_request"),
    (b"\xff\xfeadd q x", "bad_request"),
    (b"frobnicate q", "unknown_command"),
    (b"[1, 2]", "unknown_command"),
    (b"subscribe", "bad_request"),
    (b"subscribe a b c d", "bad_request"),
]


@pytest.mark.parametrize(("raw", "code"), INVALID)
def test_parse_line_invalid(raw: bytes, code: str) -> None:
    """A line that means nothing is an Invalid carrying the right error code, never an exception."""
    parsed = wire.parse_line(raw)
    assert isinstance(parsed, Invalid)
    assert parsed.error.code == code
    assert parsed.error.message


def test_parse_line_accepts_text() -> None:
    """An already decoded line parses the same as its UTF-8 bytes."""
    assert wire.parse_line("add q ✓") == wire.parse_line("add q ✓".encode())


@pytest.mark.parametrize(
    ("obj", "expected"),
    [
        ({"cmd": "add", "queue": "q", "value": "v"}, Call("add", {"queue": "q", "value": "v"})),
        ({"cmd": "list"}, Call("list", {})),
    ],
)
def test_json_command(obj: object, expected: Call) -> None:
    """The JSON protocol takes cmd as the name and every other field as an argument."""
    assert wire.json_command(obj) == expected


@pytest.mark.parametrize("obj", [[], "add", None, {"cmd": None}, {"value": 1}])
def test_json_command_refuses_without_cmd(obj: object) -> None:
    """A JSON command that is not an object with a string cmd is a bad_request."""
    with pytest.raises(RestMQError) as info:
        wire.json_command(obj)
    assert info.value.code == "bad_request"


ENCODED = [
    ({"key": "q:1", "value": "a"}, b'{"key":"q:1","value":"a"}\n'),
    ({"value": "two\nlines"}, b'{"value":"two\\nlines"}\n'),
    ({"value": "héllo"}, '{"value":"héllo"}\n'.encode()),
    ({"value": "\ud800"}, b'{"value":"\\ud800"}\n'),
    ([], b"[]\n"),
    (wire.PONG, b'"pong"\n'),
    (wire.BYE, b'{"bye":true}\n'),
]


@pytest.mark.parametrize(("answer", "expected"), ENCODED)
def test_encode(answer: object, expected: bytes) -> None:
    """Every answer is exactly one compact JSON line, whatever text it carries."""
    encoded = wire.encode(answer)
    assert encoded == expected
    assert encoded.count(b"\n") == 1
    assert json.loads(encoded) == answer


def test_encode_error() -> None:
    """Errors are {"error", "code"} lines, keeping the original's text."""
    assert wire.encode_error(Empty("empty queue")) == b'{"error":"empty queue","code":"empty"}\n'
