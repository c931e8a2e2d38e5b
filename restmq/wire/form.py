"""HTTP request bodies and arguments as the command table wants them: pure, no Twisted.

The HTTP front end reads bytes (query string, body, a few headers) and hands them here; what comes
back is text (``dict[str, str]`` form fields, decoded JSON, a text value) or a ``bad_request``
error. Checking what the arguments *mean* stays with :mod:`restmq.commands`: a form's ``"5"`` is
passed on as ``"5"`` and coerced there, so every front end refuses the same things the same way.

Decisions where the contract is silent:

- Repeated fields (``a=1&a=2``): the last one wins, as with the original's cyclone ``get_argument``.
- Form fields and the query string must be UTF-8 (a request that is not is refused, never guessed).
- ``multipart/form-data`` parts are fields whatever their ``filename`` (``curl -F value=@file.txt``
  sends the file's text as the value).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from email.message import Message
from email.parser import BytesParser
from email.policy import HTTP
from typing import Any
from urllib.parse import unquote_to_bytes

from restmq import values
from restmq.errors import BadRequest

#: A JSONP callback: a plain JavaScript identifier path (``cb``, ``jQuery123_456``, ``app.on$msg``).
CALLBACK = re.compile(r"^[A-Za-z_$][A-Za-z0-9_$]*(?:\.[A-Za-z_$][A-Za-z0-9_$]*)*\Z")
MAX_CALLBACK = 128

#: Query/form arguments that frame the request and are never passed to a command: ``callback``
#: (JSONP), ``_`` (the cache buster jQuery and others append to JSONP and no-cache GETs) and
#: ``access_token`` (the token, for browsers that cannot set an Authorization header).
FRAMING = frozenset({"callback", "_", "access_token"})

FORM = "application/x-www-form-urlencoded"
MULTIPART = "multipart/form-data"

#: Room a request body gets beyond ``max_message_size``: a form percent-encodes every non-ASCII
#: byte as ``%XX`` (3x) and JSON escapes control characters; add_many frames many values.
BODY_FACTOR = 3
BODY_SLACK = 64 * 1024


def body_limit(max_message_size: int) -> int:
    """The largest request body read at all; each value's own limit is the dispatcher's (413 too)."""
    return BODY_FACTOR * max_message_size + BODY_SLACK


def check_callback(name: str) -> str:
    """``name`` if it is a safe JSONP callback, else ``bad_request`` (the original echoed anything)."""
    if len(name) > MAX_CALLBACK or not CALLBACK.match(name):
        raise BadRequest(
            f"invalid callback {name[:60]!r}: use a JavaScript identifier path like 'app.onMessage'",
        )
    return name


def media_type(header: bytes | None) -> str:
    """The lower-case media type of a Content-Type header, without parameters (``""`` if none)."""
    if not header:
        return ""
    return header.split(b";", 1)[0].strip().lower().decode("latin-1")


def is_json(mtype: str) -> bool:
    """``application/json`` and the ``+json`` family (``application/vnd.x+json``)."""
    return mtype == "application/json" or mtype.endswith("+json")


def accepts_json(header: bytes | None) -> bool:
    """Whether an Accept header asks for JSON explicitly (``*/*`` does not: the original answered
    plain text to curl and browsers)."""
    return header is not None and b"json" in header.lower()


def text(raw: bytes, what: str) -> str:
    """UTF-8 bytes as text, else ``bad_request`` naming ``what``."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise BadRequest(f"{what} is not valid UTF-8 (byte {e.start})") from None


def fields(pairs: Mapping[bytes, list[bytes]] | Iterable[tuple[bytes, bytes]]) -> dict[str, str]:
    """Decoded fields from parsed pairs (twisted.web's ``request.args`` or a list of pairs); the last
    value of a repeated name wins."""
    items: Iterable[tuple[bytes, bytes]]
    if isinstance(pairs, Mapping):
        items = ((k, vs[-1]) for k, vs in pairs.items() if vs)
    else:
        items = pairs
    return {text(k, "a form field name"): text(v, f"form field {k[:40]!r}") for k, v in items}


def parse_urlencoded(body: bytes) -> dict[str, str]:
    """An ``application/x-www-form-urlencoded`` body (blank values kept: ``value=`` is a value)."""
    pairs = []
    for item in body.split(b"&"):
        if not item:
            continue
        name, sep, value = item.partition(b"=")
        if not sep:
            continue
        pairs.append(
            (unquote_to_bytes(name.replace(b"+", b" ")), unquote_to_bytes(value.replace(b"+", b" ")))
        )
    return fields(pairs)


def parse_multipart(body: bytes, content_type: bytes) -> dict[str, str]:
    """A ``multipart/form-data`` body; a broken one is ``bad_request`` (not twisted.web's bare 400)."""
    head = b"MIME-Version: 1.0\r\nContent-Type: " + content_type + b"\r\n\r\n"
    try:
        message: Message = BytesParser(policy=HTTP).parsebytes(head + body)
        parts = message.get_payload() if message.is_multipart() else None
    except Exception as e:  # the email package raises many things on garbage
        raise BadRequest(f"unreadable multipart/form-data body: {e}"[:200]) from None
    if not isinstance(parts, list) or message.defects:
        raise BadRequest("unreadable multipart/form-data body (boundary missing or wrong?)")
    pairs: list[tuple[bytes, bytes]] = []
    for part in parts:
        if not isinstance(part, Message):
            continue
        name = part.get_param("name", header="content-disposition")
        if not name:
            continue
        payload = part.get_payload(decode=True)
        pairs.append((str(name).encode("utf-8"), payload if isinstance(payload, bytes) else b""))
    return fields(pairs)


def parse_json(raw: bytes) -> Any:
    """A JSON body; ``bad_request`` says where it broke (or that it nests too deep, or holds NaN)."""
    return values.loads(text(raw, "the JSON body"), "body")


@dataclass(frozen=True, slots=True)
class Body:
    """What a request body holds: ``kind`` is ``"none"``, ``"form"`` (``fields``), ``"json"``
    (``data``) or ``"text"`` (``value``: any other content type, the raw text)."""

    kind: str
    fields: dict[str, str] = field(default_factory=dict)
    data: Any = None
    value: str = ""


NO_BODY = Body("none")


def read_body(raw: bytes, content_type: bytes | None) -> Body:
    """Decode a request body by its Content-Type; an empty body is ``NO_BODY`` whatever the type."""
    if not raw:
        return NO_BODY
    mtype = media_type(content_type)
    if mtype == FORM:
        return Body("form", fields=parse_urlencoded(raw))
    if mtype == MULTIPART:
        return Body("form", fields=parse_multipart(raw, content_type or b""))
    if is_json(mtype):
        return Body("json", data=parse_json(raw))
    return Body("text", value=text(raw, "the body"))


def json_protocol_body(raw: bytes, content_type: bytes | None) -> Any:
    """The command of a ``POST /queue``: a raw JSON body, or the JSON in form field ``msg`` or
    ``body`` (the original's; ``msg`` first). ``curl -d '{…}'`` sends JSON labelled as a form: a
    form without either field whose body starts with ``{`` is read as raw JSON."""
    mtype = media_type(content_type)
    if mtype in (FORM, MULTIPART):
        try:
            found = parse_urlencoded(raw) if mtype == FORM else parse_multipart(raw, content_type or b"")
        except BadRequest:
            found = {}
        held = found.get("msg") or found.get("body")
        if held:
            return parse_json(held.encode("utf-8"))
        if not raw.lstrip().startswith(b"{"):
            raise BadRequest('send the JSON command as the body, or in the form field "body"')
    elif not raw.strip():
        raise BadRequest('empty body: send a JSON command like {"cmd": "take", "queue": "q"}')
    return parse_json(raw)


def command_args(query: Mapping[bytes, list[bytes]]) -> dict[str, str]:
    """The query string's arguments for a command: decoded, framing arguments left out."""
    if not query:
        return {}
    out = fields(query)
    for name in FRAMING.intersection(out):
        del out[name]
    return out
