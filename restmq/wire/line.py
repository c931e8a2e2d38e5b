"""The line protocol's codec (docs/line.md): one line in, one request out; answers out as JSON lines.

Pure: no Twisted, no I/O. The front end owns the transport, ordering and streams; this module only
says what a line means and how an answer is spelled, so both can be tested without a reactor.

A line is either a JSON command exactly as ``POST /queue`` takes it (``{"cmd": "add", "queue": …}``)
or text: ``CMD QUEUE [REST]`` with a case-insensitive command whose words are named by the command
table (:func:`restmq.commands.from_text`), plus the framing verbs ``ping``, ``quit``,
``subscribe QUEUE [take|reserve [LEASE]]`` and ``auth TOKEN``. Words of a text line are separated by
whitespace and the line is trimmed, so a value with leading or trailing blanks needs the JSON form.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from restmq import commands, values
from restmq.errors import BadRequest, RestMQError


@dataclass(frozen=True)
class Call:
    """A command for the dispatcher: ``execute(name, args)``."""

    name: str
    args: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Ping:
    """``ping``: answered ``"pong"`` in order, so a client can check the connection is alive."""


@dataclass(frozen=True)
class Quit:
    """``quit``: answered ``{"bye": true}`` after every earlier answer, then the server closes."""


@dataclass(frozen=True)
class Subscribe:
    """``subscribe QUEUE [MODE [LEASE]]``: the connection becomes a stream of the queue's messages."""

    queue: str
    mode: str = "take"
    #: Seconds a reserve-mode message stays hidden (the queue's lease when None), as sent.
    lease: str | None = None


@dataclass(frozen=True)
class Auth:
    """``auth TOKEN``: present a token (docs/security.md)."""

    token: str


@dataclass(frozen=True)
class Invalid:
    """A line that means nothing: answered with ``error`` and the connection stays open."""

    error: RestMQError


Request = Call | Ping | Quit | Subscribe | Auth | Invalid

PONG = "pong"
BYE: dict[str, Any] = {"bye": True}


def json_command(obj: Any) -> Call:
    """The JSON protocol (``POST /queue`` and JSON lines): ``cmd`` names the command, every other
    field is an argument. Raises ``bad_request`` when there is no usable ``cmd``."""
    if not isinstance(obj, dict):
        raise BadRequest('a JSON command must be an object like {"cmd": "add", "queue": …}')
    name = obj.get("cmd")
    if not isinstance(name, str) or not name:
        raise BadRequest('a JSON command needs "cmd", the command name')
    return Call(name, {k: v for k, v in obj.items() if k != "cmd"})


def _json_line(text: str) -> Request:
    try:
        return json_command(values.loads(text, "line"))
    except RestMQError as e:
        return Invalid(e)


def _subscribe(rest: str) -> Request:
    words = rest.split()
    if not words or len(words) > 3:
        return Invalid(BadRequest("usage: subscribe QUEUE [take|reserve [LEASE]]"))
    mode = words[1].lower() if len(words) > 1 else "take"
    return Subscribe(words[0], mode, words[2] if len(words) == 3 else None)


def _text_line(verb: str, rest: str) -> Request:
    verb = verb.lower()
    if verb == "ping":
        return Ping()
    if verb == "quit":
        return Quit()
    if verb == "subscribe":
        return _subscribe(rest)
    if verb == "auth":
        return Auth(rest)
    try:
        command = commands.lookup(verb)
        return Call(command.name, commands.from_text(command, rest))
    except RestMQError as e:
        return Invalid(e)


def parse_line(line: bytes | str) -> Request:
    """What one line asks for; never raises. ``bytes`` must be UTF-8; a trailing ``\\r`` is dropped."""
    if isinstance(line, bytes):
        try:
            line = line.decode("utf-8")
        except UnicodeDecodeError:
            return Invalid(BadRequest("line is not valid UTF-8"))
    text = line.strip()
    if not text:
        return Invalid(BadRequest("empty line: send a command such as 'take QUEUE' or 'ping'"))
    if text.startswith("{"):
        return _json_line(text)
    verb, *rest = text.split(None, 1)
    return _text_line(verb, rest[0] if rest else "")


#: One encoder for every answer: ``json.dumps`` with options builds a new one per call.
_ENCODER = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))


def encode(answer: Any) -> bytes:
    """One answer as one JSON line. Non-ASCII text stays readable; lone surrogates (which JSON
    values may carry but UTF-8 cannot) fall back to ``\\u`` escapes."""
    try:
        return _ENCODER.encode(answer).encode("utf-8") + b"\n"
    except UnicodeEncodeError:
        return json.dumps(answer, separators=(",", ":")).encode("ascii") + b"\n"


def encode_error(error: RestMQError) -> bytes:
    """An error as its ``{"error", "code"}`` line (docs/commands.md)."""
    return encode(error.to_dict())
