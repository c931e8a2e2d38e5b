"""The Redis protocol's codec (RESP2): requests in, replies out.

Pure: no Twisted, no I/O. :class:`RequestParser` is incremental (bytes arrive in any split) and
understands both request forms a Redis server does: multibulk (``*2\\r\\n$4\\r\\nLLEN\\r\\n$1\\r\\nq\\r\\n``,
what every client library and ``redis-cli`` send) and inline (``LLEN q\\r\\n``, what a human types
into ``nc``; quoting as Redis's ``sdssplitargs``). A malformed stream raises :class:`ProtocolError`,
after which a server answers ``-ERR Protocol error: …`` and closes, as Redis does: the rest of the
stream cannot be told apart from the next request.

Limits (each is a :class:`ProtocolError`, checked as soon as the header says so, before any payload
is buffered): a bulk string is at most ``max_bulk`` bytes (RestMQ's ``--max-message-size``), one
request at most ``max_request`` bytes in all and :data:`MAX_ARGS` arguments, an inline request or
a length line at most :data:`MAX_INLINE` bytes.

Replies are plain Python data encoded by :func:`encode`: ``None`` (nil bulk), ``int``, ``bytes``
and ``str`` (bulk strings), lists (arrays), and :class:`Simple`, :class:`Error`, :class:`Map`,
:data:`NIL_ARRAY`. With ``resp3`` (a client that said ``HELLO 3``, as redis-py 8 does by default)
the same replies use RESP3's null (``_``) and map (``%``) types; everything else is spelled the same
in both versions.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any, Union

from restmq import values

#: Longest inline request or ``*``/``$`` length line (Redis's PROTO_INLINE_MAX_SIZE).
MAX_INLINE = 64 * 1024
#: Most arguments in one multibulk request (Redis's limit).
MAX_ARGS = 1024 * 1024
#: A length: an optional minus and at most 19 digits (Python's int() would also take "_", "+", spaces).
_LENGTH = re.compile(rb"-?[0-9]{1,19}\Z")
_CRLF = b"\r\n"
#: Longest length line (with its CRLF) the one-pass path reads, and most arguments it takes.
_SHORT = 12
_FEW = 64


class ProtocolError(Exception):
    """The byte stream is not RESP: answered ``-ERR Protocol error: <message>``, then closed."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    @property
    def reply(self) -> Error:
        return Error(f"ERR Protocol error: {self.message}")


@dataclass(frozen=True, slots=True)
class Simple:
    """A simple string reply (``+OK``)."""

    text: str


@dataclass(frozen=True, slots=True)
class Error:
    """An error reply; ``text`` starts with its prefix word (``ERR``, ``NOAUTH``, ``WRONGPASS`` …)."""

    text: str


@dataclass(frozen=True, slots=True)
class Map:
    """A map reply (``HELLO``): RESP3's ``%`` type, a flat key-value array in RESP2."""

    items: dict[str, Any]


class _NilArray:
    """The null array (``*-1``): what a blocking pop answers on timeout."""

    def __repr__(self) -> str:
        return "NIL_ARRAY"


NIL_ARRAY = _NilArray()
OK = Simple("OK")

Reply = Union[None, int, bytes, str, Simple, Error, Map, _NilArray, list[Any]]


def _length(line: bytes, what: str) -> int:
    if not _LENGTH.match(line):
        raise ProtocolError(f"invalid {what} length")
    return int(line)


class RequestParser:
    """Splits a byte stream into requests (each a list of ``bytes`` arguments, the first the
    command name). ``feed`` data as it arrives, then call :meth:`next` until it answers None."""

    def __init__(self, max_bulk: int = 1 << 20, max_request: int | None = None) -> None:
        self.max_bulk = max_bulk
        #: A whole request: room for one value of ``max_bulk`` bytes plus a batch of small ones.
        self.max_request = max_request if max_request is not None else 2 * max_bulk + MAX_INLINE
        self._buf = bytearray()
        self._pos = 0
        self._argc = 0  # arguments still expected by the multibulk request being read; 0: none
        self._args: list[bytes] = []
        self._bulk = -1  # length of the bulk string being read; -1: its $ line is next
        self._size = 0  # bytes of the current multibulk request so far
        self._failed: ProtocolError | None = None

    def feed(self, data: bytes) -> None:
        """Add bytes received from the peer."""
        if self._pos and self._pos == len(self._buf):
            self._buf.clear()
            self._pos = 0
        elif self._pos > 65536 and self._pos * 2 > len(self._buf):
            del self._buf[: self._pos]  # keep the buffer from growing with what was already read
            self._pos = 0
        self._buf += data

    @property
    def pending(self) -> int:
        """Bytes received and not yet part of a complete request."""
        return len(self._buf) - self._pos

    def next(self) -> list[bytes] | None:
        """The next complete request, or None until more bytes come. Raises ProtocolError (and
        again on every later call: the stream is beyond repair)."""
        if self._failed is not None:
            raise self._failed
        try:
            return self._next()
        except ProtocolError as e:
            self._failed = e
            raise

    def _next(self) -> list[bytes] | None:
        if self._argc == 0:
            request = self._whole()
            if request is not None:
                return request
        buf = self._buf
        while True:
            if self._argc == 0:
                if self._pos >= len(buf):
                    return None
                if buf[self._pos] != 0x2A:  # not "*": an inline request
                    request = self._inline()
                    if request is None or request:
                        return request
                    continue  # an empty line: ignored, as Redis does
                line = self._line("multibulk count")
                if line is None:
                    return None
                argc = _length(line[1:], "multibulk")
                if argc > MAX_ARGS:
                    raise ProtocolError("invalid multibulk length")
                if argc <= 0:
                    continue  # *0 and *-1 ask for nothing
                self._argc, self._args, self._size = argc, [], len(line) + 3
                continue
            if self._bulk < 0:
                start = self._pos
                line = self._line("bulk count")
                if line is None:
                    return None
                if line[:1] != b"$":
                    raise ProtocolError(f"expected '$', got {chr(buf[start])!r}")
                self._bulk = _length(line[1:], "bulk")
                if self._bulk < 0 or self._bulk > self.max_bulk:
                    raise ProtocolError(
                        f"invalid bulk length {self._bulk} (the limit is {self.max_bulk} bytes)"
                    )
                self._grow(len(line) + 2 + self._bulk + 2)
            end = self._pos + self._bulk
            if len(buf) < end + 2:
                return None
            if buf[end : end + 2] != _CRLF:
                raise ProtocolError("expected CRLF after a bulk string")
            self._args.append(bytes(buf[self._pos : end]))
            self._pos, self._bulk = end + 2, -1
            self._argc -= 1
            if self._argc == 0:
                args, self._args = self._args, []
                return args

    def _whole(self) -> list[bytes] | None:
        """The common case in one pass: a whole, well-formed multibulk request of short length
        lines already in the buffer. None leaves everything as it was, for the step-by-step path
        below to read it (a request split across reads, an empty one, anything odd or wrong, so
        that every error is raised there, once)."""
        buf, pos = self._buf, self._pos
        if buf[pos : pos + 1] != b"*":
            return None
        end = buf.find(_CRLF, pos, pos + _SHORT)
        if end < 0:
            return None
        head = buf[pos + 1 : end]
        if not head.isdigit():
            return None
        argc = int(head)
        if argc == 0 or argc > _FEW:
            return None
        args: list[bytes] = []
        at, limit = end + 2, self.max_bulk
        for _ in range(argc):
            end = buf.find(_CRLF, at, at + _SHORT)
            if end < 0 or buf[at] != 0x24:  # "$"
                return None
            head = buf[at + 1 : end]
            if not head.isdigit():
                return None
            size = int(head)
            at = end + 2
            end = at + size
            if size > limit or buf[end : end + 2] != _CRLF:
                return None
            args.append(bytes(buf[at:end]))
            at = end + 2
        if at - pos + 1 > self.max_request:  # counted as _grow counts it
            return None
        self._pos = at
        return args

    def _grow(self, n: int) -> None:
        self._size += n
        if self._size > self.max_request:
            raise ProtocolError(f"request larger than {self.max_request} bytes")

    def _line(self, what: str) -> bytes | None:
        """A CRLF-terminated length line without its CRLF, or None when it is not all here."""
        end = self._buf.find(_CRLF, self._pos, self._pos + MAX_INLINE + 2)
        if end < 0:
            if len(self._buf) - self._pos > MAX_INLINE:
                raise ProtocolError(f"too big {what} string")
            return None
        line = bytes(self._buf[self._pos : end])
        self._pos = end + 2
        return line

    def _inline(self) -> list[bytes] | None:
        end = self._buf.find(b"\n", self._pos, self._pos + MAX_INLINE + 1)
        if end < 0:
            if len(self._buf) - self._pos > MAX_INLINE:
                raise ProtocolError("too big inline request")
            return None
        line = bytes(self._buf[self._pos : end])
        self._pos = end + 1
        return split_inline(line)


_ESCAPES = {ord("n"): 10, ord("r"): 13, ord("t"): 9, ord("b"): 8, ord("a"): 7}
_SPACE = frozenset(b" \t\n\r\v\f")
_HEX = frozenset(b"0123456789abcdefABCDEF")


def _is_hex(pair: bytes) -> bool:
    return len(pair) == 2 and pair[0] in _HEX and pair[1] in _HEX


def split_inline(line: bytes) -> list[bytes]:
    """The words of an inline request, quoted as Redis's ``sdssplitargs``: ``"…"`` with ``\\n``,
    ``\\xHH``… escapes, ``'…'`` with ``\\'``; a closing quote must end its word. Raises
    ProtocolError on unbalanced quotes."""
    words: list[bytes] = []
    i, n = 0, len(line)
    while True:
        while i < n and line[i] in _SPACE:
            i += 1
        if i >= n:
            return words
        word = bytearray()
        quote = 0  # 0 outside quotes, else the quote character
        while True:
            if i >= n:
                if quote:
                    raise ProtocolError("unbalanced quotes in request")
                break
            c = line[i]
            if quote and c == quote:
                if i + 1 < n and line[i + 1] not in _SPACE:
                    raise ProtocolError("unbalanced quotes in request")
                i += 1
                break
            if quote == 0x22 and c == 0x5C and line[i + 1 : i + 2] == b"x" and _is_hex(line[i + 2 : i + 4]):
                word.append(int(line[i + 2 : i + 4], 16))
                i += 3
            elif quote == 0x22 and c == 0x5C and i + 1 < n:
                i += 1
                word.append(_ESCAPES.get(line[i], line[i]))
            elif quote == 0x27 and c == 0x5C and line[i + 1 : i + 2] == b"'":
                i += 1
                word.append(0x27)
            elif quote:
                word.append(c)
            elif c in _SPACE:
                break
            elif c in (0x22, 0x27):
                quote = c
            else:
                word.append(c)
            i += 1
        words.append(bytes(word))


# -- replies ------------------------------------------------------------------------------------


def _clean(text: str) -> bytes:
    """A simple string or error line: CR and LF would end it early, so they become spaces."""
    return text.replace("\r", " ").replace("\n", " ").encode("utf-8", "backslashreplace")


def encode(reply: Reply, resp3: bool = False) -> bytes:
    """One reply as RESP2 bytes (RESP3 with ``resp3``)."""
    out: list[bytes] = []
    _encode(reply, out, resp3)
    return b"".join(out)


def _encode(reply: Reply, out: list[bytes], resp3: bool) -> None:
    if isinstance(reply, bytes):
        out.append(b"$%d\r\n%s\r\n" % (len(reply), reply))
    elif isinstance(reply, str):
        _encode(reply.encode("utf-8", "surrogatepass"), out, resp3)
    elif isinstance(reply, int):
        out.append(b":%d\r\n" % reply)
    elif reply is None:
        out.append(b"_\r\n" if resp3 else b"$-1\r\n")
    elif isinstance(reply, Simple):
        out.append(b"+" + _clean(reply.text) + _CRLF)
    elif isinstance(reply, Error):
        out.append(b"-" + _clean(reply.text) + _CRLF)
    elif isinstance(reply, list):
        out.append(b"*%d\r\n" % len(reply))
        for item in reply:
            _encode(item, out, resp3)
    elif isinstance(reply, Map):
        out.append(b"%%%d\r\n" % len(reply.items) if resp3 else b"*%d\r\n" % (2 * len(reply.items)))
        for key, value in reply.items.items():
            _encode(key, out, resp3)
            _encode(value, out, resp3)
    elif reply is NIL_ARRAY:
        out.append(b"_\r\n" if resp3 else b"*-1\r\n")
    else:
        raise TypeError(f"not a RESP reply: {type(reply).__name__}")


def value_bytes(value: Any) -> bytes:
    """A taken message's value as a bulk string: text as its UTF-8 bytes (what a Redis client
    pushed comes back byte for byte); any other JSON value (added over HTTP) as compact JSON."""
    if isinstance(value, str):
        return value.encode("utf-8", "surrogatepass")
    return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode("utf-8", "surrogatepass")


def parse_int(raw: bytes) -> int | None:
    """An integer argument as Redis reads one (``-5``, ``10``), or None when it is not one."""
    return int(raw) if _LENGTH.match(raw) else None


def parse_float(raw: bytes) -> float | None:
    """A timeout argument (``0.5``, ``3``), or None when it is not a finite number in ASCII."""
    return values.parse_float(raw)
