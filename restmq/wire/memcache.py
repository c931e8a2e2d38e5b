"""The memcached text protocol's codec (Kestrel-style queues): bytes in, requests out; replies out.

Pure: no Twisted, no I/O. :class:`Parser` is incremental: feed it whatever the socket gave and pull
complete requests with :meth:`Parser.next`, which never raises (bad input comes out as
:class:`Invalid` carrying the exact reply line). The front end decides what each request does.

Framing rules, and where they differ from memcached on purpose:

- Verbs are matched case-insensitively (memcached is case-sensitive; humans type ``GET`` in ``nc``).
- A storage line (``set``/``add``, and the unsupported ``replace``/``append``/``prepend``/``cas``)
  whose byte count is readable always has its data block consumed, even when the rest of the line
  is bad, so the data can never be run as a command. When the count itself is unreadable the next
  line is taken as the data block and dropped (memcached would run it as a command).
- A data block not followed by ``\\r\\n`` answers ``CLIENT_ERROR bad data chunk`` as memcached does;
  we also drop the rest of that line, so a count that was too small costs one error, not two.
- A command line longer than ``max_line`` answers ``CLIENT_ERROR line too long`` and the connection
  must close: the rest of it cannot be told apart from the next request.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from restmq import commands
from restmq.errors import RestMQError
from restmq.model import encode_value

#: memcached's longest key; ours includes the ``/open``-style options.
MAX_KEY = 250
#: Longest command line (a multi-key ``get`` may be long).
MAX_LINE = 64 * 1024
#: memcached: an exptime above 30 days is an absolute unix time, not a number of seconds.
RELATIVE_LIMIT = 30 * 86400
#: Largest flags value (32 bits unsigned, as memcached ≥ 1.2.1).
MAX_FLAGS = 2**32 - 1

CRLF = b"\r\n"
END = b"END\r\n"
STORED = b"STORED\r\n"
NOT_STORED = b"NOT_STORED\r\n"
DELETED = b"DELETED\r\n"
NOT_FOUND = b"NOT_FOUND\r\n"
OK = b"OK\r\n"
ERROR = b"ERROR\r\n"

BAD_FORMAT = "bad command line format"
TOO_LARGE = b"SERVER_ERROR object too large for cache\r\n"


# -- requests ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Key:
    """One ``get`` key: a queue plus Kestrel options (``q/t=500/open``)."""

    raw: str
    queue: str
    timeout_ms: int = 0
    open: bool = False
    close: bool = False
    abort: bool = False
    peek: bool = False

    @property
    def fetches(self) -> bool:
        """Whether this key delivers a message (a bare ``close`` or ``abort`` only settles one)."""
        return self.peek or self.open or not (self.close or self.abort)


@dataclass(frozen=True)
class Get:
    """``get k1 [k2 …]``: each key answered in order when it has a message."""

    keys: tuple[Key, ...]


@dataclass(frozen=True)
class Store:
    """``set``/``add`` with its data block, already checked to be UTF-8 text."""

    verb: str
    queue: str
    flags: int
    exptime: int
    value: str
    noreply: bool = False


@dataclass(frozen=True)
class Delete:
    """``delete q [0] [noreply]``: purge the queue."""

    queue: str
    noreply: bool = False


@dataclass(frozen=True)
class Flush:
    """``flush q`` (Kestrel: purge one queue, answers ``END``) or ``flush_all`` (every queue, ``OK``)."""

    queue: str | None
    noreply: bool = False


@dataclass(frozen=True)
class Simple:
    """A request without arguments: ``stats`` (server and per-queue ``STAT`` lines), ``version``,
    or ``quit`` (close after every earlier answer)."""

    verb: str


STATS, VERSION, QUIT = Simple("stats"), Simple("version"), Simple("quit")


@dataclass(frozen=True)
class Invalid:
    """A request that gets ``reply`` and nothing else; ``close`` when the stream cannot be resynced;
    ``noreply`` when the line asked for silence and was well framed (memcached stays silent then)."""

    reply: bytes
    close: bool = False
    noreply: bool = False


Request = Get | Store | Delete | Flush | Simple | Invalid


# -- parsing ----------------------------------------------------------------------------------


class BadKey(ValueError):
    """A key or option that cannot be served; the message is the ``CLIENT_ERROR`` text."""


def parse_key(raw: str) -> Key:
    """``queue[/option…]`` with options ``open``, ``close``, ``abort``, ``peek``, ``t=MS``.

    Combinations Kestrel refuses are refused here, before anything is delivered: ``abort`` with
    another action, ``peek`` with ``open``/``close``, ``t=`` with ``peek`` (a peek does not wait).
    """
    if len(raw.encode("utf-8", "surrogatepass")) > MAX_KEY:
        raise BadKey(f"key is longer than {MAX_KEY} bytes")
    queue, *options = raw.split("/")
    try:
        commands.check_queue(queue)
    except RestMQError as e:
        raise BadKey(e.message) from None
    found: dict[str, Any] = {}
    for option in options:
        if option in ("open", "close", "abort", "peek"):
            found[option] = True
        elif option.startswith("t="):
            digits = option[2:]
            if not (digits.isascii() and digits.isdigit()) or len(digits) > 9:
                raise BadKey(f"bad timeout {option!r}: use t=MILLISECONDS")
            found["timeout_ms"] = int(digits)
        else:
            raise BadKey(f"unknown option {option[:40]!r} in key {queue}: use open, close, abort, peek, t=MS")
    key = Key(raw, queue, **found)
    if key.abort and (key.open or key.close or key.peek):
        raise BadKey("abort cannot be combined with open, close or peek")
    if key.peek and (key.open or key.close):
        raise BadKey("peek cannot be combined with open or close")
    if key.peek and key.timeout_ms:
        raise BadKey("peek does not wait: drop t=")
    return key


def _number(token: bytes, low: int, high: int) -> int | None:
    """A decimal integer token within bounds, else None (memcached's ``safe_strtol``)."""
    text = token[1:] if token[:1] == b"-" else token
    if not text.isdigit() or len(text) > 20:
        return None
    value = int(token)
    return value if low <= value <= high else None


def _client_error(text: str) -> bytes:
    return b"CLIENT_ERROR " + _one_line(text) + CRLF


def _one_line(text: str) -> bytes:
    """Reply text on one line: control characters would split it into two replies."""
    return "".join(c if c.isprintable() else " " for c in text).encode("utf-8", "replace")


STORAGE = ("set", "add", "replace", "append", "prepend", "cas")
UNSUPPORTED_STORAGE = ("replace", "append", "prepend", "cas")


class Parser:
    """Incremental request parser; one per connection.

    ``max_value`` is the largest data block accepted (``--max-message-size``); a larger ``set`` is
    answered ``SERVER_ERROR object too large for cache`` and its block skipped without buffering.
    """

    def __init__(self, max_value: int, max_line: int = MAX_LINE) -> None:
        self.max_value = max_value
        self.max_line = max_line
        self._buffer = bytearray()
        self._skip = 0  # bytes of a refused data block still to discard
        self._skip_line = False  # discard through the next newline
        self._closed = False
        #: A storage line waiting for its data block: (request builder, block length).
        self._waiting: tuple[_Pending, int] | None = None

    @property
    def buffered(self) -> int:
        """Bytes received and not yet parsed (the front end pauses reading above a limit)."""
        return len(self._buffer)

    def feed(self, data: bytes) -> None:
        if self._closed:
            return
        if self._skip and not self._buffer:  # inside a refused block: never buffer it
            dropped = min(self._skip, len(data))
            self._skip -= dropped
            data = data[dropped:]
        self._buffer += data

    def next(self) -> Request | None:
        """The next complete request, or None until more bytes arrive. Never raises."""
        while not self._closed:
            if self._skip:
                dropped = min(self._skip, len(self._buffer))
                del self._buffer[:dropped]
                self._skip -= dropped
                if self._skip:
                    return None
            if self._skip_line:
                newline = self._buffer.find(b"\n")
                if newline < 0:
                    self._buffer.clear()
                    return None
                del self._buffer[: newline + 1]
                self._skip_line = False
            if self._waiting is not None:
                return self._data_block()
            newline = self._buffer.find(b"\n")
            if newline < 0:
                if len(self._buffer) > self.max_line:
                    return self._too_long()
                return None
            if newline > self.max_line:
                return self._too_long()
            line = bytes(self._buffer[:newline])
            del self._buffer[: newline + 1]
            request = self._line(line[:-1] if line.endswith(b"\r") else line)
            if request is not None:
                return request
        return None

    def _too_long(self) -> Invalid:
        self._closed = True
        self._buffer.clear()
        return Invalid(_client_error("line too long"), close=True)

    # -- command lines ----------------------------------------------------------------------

    def _line(self, line: bytes) -> Request | None:
        """One command line; None when it announced a data block that has yet to arrive."""
        tokens = line.split()
        if not tokens:
            return Invalid(ERROR)
        verb = tokens[0].lower()
        try:
            name = verb.decode("ascii")
        except UnicodeDecodeError:
            return Invalid(ERROR)
        args = tokens[1:]
        if name in STORAGE:
            return self._storage(name, args)
        if name == "get":
            return _get(args)
        if name == "delete":
            return _delete(args)
        if name in ("flush_all", "flush"):
            return _flush(name, args)
        if name == "stats":
            return STATS if not args else Invalid(_client_error("stats takes no arguments here"))
        if name in ("version", "quit"):
            return Simple(name)
        return Invalid(ERROR)

    def _storage(self, name: str, args: list[bytes]) -> Request | None:
        """``NAME key flags exptime bytes [cas] [noreply]``: swallow the block whatever is wrong."""
        words, noreply = _split_noreply(args)
        wanted = 5 if name == "cas" else 4
        size = _number(words[3], 0, 2**31 - 1) if len(words) >= 4 else None  # memcached: int32
        if size is None:
            self._skip_line = True
            return Invalid(_client_error(BAD_FORMAT))
        if size > self.max_value:
            self._skip = size + 2
            return Invalid(TOO_LARGE, noreply=noreply)
        problem = _storage_problem(name, words, wanted, noreply)
        flags = _number(words[1], 0, MAX_FLAGS) or 0
        exptime = _number(words[2], -(2**63), 2**63) or 0
        self._waiting = (_Pending(name, words[0], flags, exptime, noreply, problem), size)
        return None

    def _data_block(self) -> Request | None:
        assert self._waiting is not None
        pending, size = self._waiting
        if len(self._buffer) < size + 2:
            return None
        self._waiting = None
        block = bytes(self._buffer[:size])
        ending = bytes(self._buffer[size : size + 2])
        del self._buffer[: size + 2]
        if ending != CRLF:
            self._skip_line = not ending.endswith(b"\n")
            return Invalid(_client_error("bad data chunk"))
        return pending.build(block)


@dataclass(frozen=True)
class _Pending:
    """A storage line read, waiting for its block; ``problem`` is why it will be refused, if it is."""

    verb: str
    key: bytes
    flags: int
    exptime: int
    noreply: bool
    problem: Invalid | None = None

    def build(self, block: bytes) -> Request:
        if self.problem is not None:
            return self.problem
        try:
            value = block.decode("utf-8")
        except UnicodeDecodeError:
            return Invalid(_client_error("value is not UTF-8 text"), noreply=self.noreply)
        return Store(self.verb, self.key.decode("ascii"), self.flags, self.exptime, value, self.noreply)


def _storage_problem(name: str, words: list[bytes], wanted: int, noreply: bool) -> Invalid | None:
    """Why a storage line with a readable byte count is refused (its block is swallowed anyway).

    A malformed line is answered even with ``noreply`` (the client may not know it asked for
    silence); a well-formed one that is refused stays silent, as memcached does.
    """
    if len(words) != wanted or _number(words[1], 0, MAX_FLAGS) is None or _number(
        words[2], -(2**63), 2**63
    ) is None:
        return Invalid(_client_error(BAD_FORMAT))
    if name in UNSUPPORTED_STORAGE:
        text = f"{name} is not supported: this is a queue (use set, add, get, delete)"
        return Invalid(_client_error(text), noreply=noreply)
    problem = _bare_queue(name, words[0])
    return None if problem is None else Invalid(_client_error(problem), noreply=noreply)


def _bare_queue(name: str, raw: bytes) -> str | None:
    """Why ``raw`` is not a plain queue name (``set``, ``delete``, ``flush`` take no options)."""
    try:
        key = parse_key(raw.decode("ascii"))
    except UnicodeDecodeError:
        return "key must be ASCII"
    except BadKey as e:
        return str(e)
    if key.raw != key.queue:
        return f"{name} takes a bare queue name, without options ({key.raw[:60]})"
    return None


def _get(args: list[bytes]) -> Request:
    if not args:
        return Invalid(ERROR)  # memcached answers a bare "get" with ERROR
    if len(args) > commands.MAX_COUNT:
        return Invalid(_client_error(f"at most {commands.MAX_COUNT} keys in one get"))
    try:
        return Get(tuple(parse_key(arg.decode("ascii")) for arg in args))
    except UnicodeDecodeError:
        return Invalid(_client_error("key must be ASCII"))
    except BadKey as e:
        return Invalid(_client_error(str(e)))


def _split_noreply(args: list[bytes]) -> tuple[list[bytes], bool]:
    """The words of a line without its trailing ``noreply``, and whether it was there."""
    if args and args[-1] == b"noreply":
        return args[:-1], True
    return args, False


def _delete(args: list[bytes]) -> Request:
    words, noreply = _split_noreply(args)
    # memcached still accepts a legacy "0" time argument; anything else is refused.
    if not 1 <= len(words) <= 2 or (len(words) == 2 and words[1] != b"0"):
        return Invalid(_client_error("usage: delete QUEUE [noreply]"))
    problem = _bare_queue("delete", words[0])
    if problem is not None:
        return Invalid(_client_error(problem), noreply=noreply)
    return Delete(words[0].decode("ascii"), noreply)


def _flush(name: str, args: list[bytes]) -> Request:
    words, noreply = _split_noreply(args)
    if name == "flush_all":
        # pymemcache always sends a delay; a queue can only honour "now".
        if len(words) > 1 or (words and _number(words[0], 0, 0) is None):
            return Invalid(_client_error("flush_all takes no delay here (only 0)"), noreply=noreply)
        return Flush(None, noreply)
    if len(words) != 1:
        return Invalid(_client_error("usage: flush QUEUE"))
    problem = _bare_queue("flush", words[0])
    if problem is not None:
        return Invalid(_client_error(problem), noreply=noreply)
    return Flush(words[0].decode("ascii"), noreply)


# -- times ------------------------------------------------------------------------------------


def ttl_for(exptime: int, now: float) -> float | None:
    """The message ttl (seconds, 0 = never) for a memcached exptime, None if already expired.

    As memcached: 0 never expires, a negative value is already expired, up to 30 days is relative,
    and more is an absolute unix time (expired when it is not in the future).
    """
    if exptime == 0:
        return 0.0
    if exptime < 0:
        return None
    if exptime <= RELATIVE_LIMIT:
        return float(exptime)
    left = exptime - now
    return left if left > 0 else None


# -- replies ----------------------------------------------------------------------------------

#: Error codes that are the client's doing; the rest (too_large, queue_full, backend_unavailable,
#: internal, anything new) are SERVER_ERROR.
CLIENT_CODES = frozenset(
    {"bad_request", "bad_queue_name", "unknown_command", "empty", "not_found", "stale_receipt",
     "unauthorized", "forbidden"}
)


def error_reply(error: RestMQError) -> bytes:
    """A dispatcher error as ``CLIENT_ERROR <code> <message>`` or ``SERVER_ERROR <code> <message>``."""
    kind = b"CLIENT_ERROR " if error.code in CLIENT_CODES else b"SERVER_ERROR "
    return kind + _one_line(f"{error.code} {error.message}") + CRLF


def value_bytes(value: Any) -> bytes:
    """What a ``get`` returns for a message value: text as its UTF-8 bytes (what ``set`` stored),
    any other JSON value (added over HTTP) as its JSON text."""
    if isinstance(value, str):
        try:
            return value.encode("utf-8")
        except UnicodeEncodeError:  # a lone surrogate from a JSON \\ud800 escape
            return json.dumps(value).encode("ascii")
    return encode_value(value)


def value_block(key: str, data: bytes, flags: int = 0) -> bytes:
    """One ``VALUE key flags bytes`` block; ``key`` is echoed exactly as requested (clients match on it)."""
    return b"VALUE %s %d %d\r\n" % (key.encode("ascii"), flags, len(data)) + data + CRLF


def stats_reply(stats: Iterable[tuple[str, Any]]) -> bytes:
    """``STAT name value`` lines then ``END``; values are single tokens (clients split on spaces)."""
    lines = []
    for name, value in stats:
        if isinstance(value, bool):
            value = int(value)
        if isinstance(value, float):
            value = f"{value:.6f}".rstrip("0").rstrip(".")
        text = "_".join(str(value).split()) or "-"
        lines.append(b"STAT " + _one_line(name) + b" " + _one_line(text) + CRLF)
    return b"".join(lines) + END


def version_reply(version: str) -> bytes:
    return b"VERSION " + _one_line(version) + CRLF


def encode_get(blocks: Iterable[bytes]) -> bytes:
    """A ``get`` answer: the value blocks then ``END``."""
    return b"".join(blocks) + END
