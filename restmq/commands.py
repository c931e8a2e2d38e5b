"""The command table: every command's arguments, defaults, limits and right, in one place.

Each front end turns its framing into ``(name, raw_args)``; :func:`parse` checks and coerces those
arguments the same way for all of them, so a limit or a default is written here once. Pure: no
Twisted, no Redis.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from restmq.errors import BadQueueName, BadRequest, UnknownCommand
from restmq.recurrence import check_name
from restmq.values import check, parse_float, parse_int, shown

#: Characters a queue name may not hold: control characters (Unicode Cc), whitespace (Unicode
#: White_Space, which is also what ``str.split()`` splits text commands on), ``/`` (a path
#: separator in URLs and memcached keys) and ``{`` ``}`` (they would break the Redis Cluster hash
#: tag ``{<queue>}`` of :mod:`restmq.engine.keys`). Written as code points so the same class is a
#: JSON Schema (ECMA-262) pattern for the OpenAPI document.
NOT_IN_QUEUE_NAME = r"\x00-\x20\x7f-\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000/{}"
#: Any 1-128 Unicode characters (not bytes) but those above and lone surrogates (not text), as the
#: original RestMQ accepted any name.
QUEUE_NAME = re.compile(rf"^[^{NOT_IN_QUEUE_NAME}\ud800-\udfff]{{1,128}}\Z")
#: The rule in words, for every front end's bad_queue_name error.
QUEUE_RULE = "a queue name is 1-128 characters with no whitespace, no control characters and none of / { }"
MAX_COUNT = 1000
MAX_WAIT = 60.0
POLICIES = ("broadcast", "roundrobin")
MISSING: Any = object()


@dataclass(frozen=True)
class Arg:
    """One argument: its type (``kind``), whether it is required, its default and its bounds."""

    name: str
    kind: str
    required: bool = False
    default: Any = None
    low: float | None = None
    high: float | None = None
    choices: tuple[str, ...] = ()
    doc: str = ""


@dataclass(frozen=True)
class Command:
    """One command of docs/commands.md: its arguments in positional order and the right it needs.

    ``text`` names the arguments that the line protocol's ``CMD QUEUE REST`` form fills, in order;
    the last one takes the rest of the line.
    """

    name: str
    args: tuple[Arg, ...]
    right: str
    doc: str
    text: tuple[str, ...] = ()
    by_name: dict[str, Arg] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "by_name", {a.name: a for a in self.args})

    @property
    def positional(self) -> tuple[str, ...]:
        """Argument names in the order XML-RPC and other positional callers pass them."""
        return tuple(a.name for a in self.args)


QUEUE = Arg("queue", "queue", required=True, doc="queue name")
OPT_QUEUE = Arg("queue", "queue", doc="queue name (all queues when absent)")
COUNT = Arg("count", "int", low=1, high=MAX_COUNT, doc="how many messages (a list is returned)")
DAY = 86400.0
#: Longest ttl: a year. A message older than its ttl is dropped unconsumed (counted as expired).
MAX_TTL = 365 * DAY
TTL = Arg("ttl", "seconds", default=0.0, low=0, high=MAX_TTL, doc="drop if not taken within (0: never)")
DELAY = Arg("delay", "seconds", default=0.0, low=0, high=7 * DAY, doc="seconds before it can be delivered")
DEDUP = Arg("dedup", "text", high=256, doc="adds with the same string within the dedup window add once")
PRIORITY = Arg("priority", "int", default=5, low=0, high=9, doc="0-9, lower is served first")
VALUE = Arg("value", "value", required=True, doc="the message: any JSON value")
UNIQUE = Arg(
    "unique", "bool", default=False,
    doc="add only if no unique message with this same value is still held (a set); findable with find",
)
WAIT = Arg("wait", "seconds", default=0.0, low=0, high=MAX_WAIT, doc="long-poll up to this long")
#: Most queues one take may watch at once.
MAX_QUEUES = 100
LEN = Arg("len", "bool", default=False, doc="answer the queue's ready length after the add too (len)")
#: Leases from a millisecond (tests, fast retries) to 12 hours.
LEASE = Arg("lease", "seconds", low=0.001, high=12 * 3600.0, doc="seconds the message stays hidden")
RECEIPT = Arg("receipt", "text", required=True, high=200, doc="the receipt a reserve answered")
#: A queue's settings and their defaults (docs/commands.md ``config``); times in seconds.
SETTINGS = (
    Arg("max_attempts", "int", default=5, low=1, high=1000, doc="deliveries before the dead-letter queue"),
    Arg("lease", "seconds", default=30.0, low=0.001, high=12 * 3600.0, doc="default reserve lease"),
    Arg("dedup_window", "seconds", default=300.0, low=0, high=7 * DAY, doc="how long a dedup string holds"),
    Arg("max_length", "int", default=0, low=0, high=10**9, doc="most messages held (0: no limit)"),
)

#: Push subscriptions (docs/push-and-schedules.md): the delivery's bounds.
MAX_PUSH_TIMEOUT = 300.0
MAX_PUSH_CONCURRENCY = 1000
MAX_BACKOFF_STEPS = 20
DEFAULT_BACKOFF = (1.0, 5.0, 30.0, 120.0)
PUSH_URL = Arg("url", "url", required=True, high=2048, doc="http:// or https:// URL the messages are POSTed to")
PUSH_ARGS = (
    QUEUE,
    PUSH_URL,
    Arg("secret", "text", high=256, doc="key of the HMAC-SHA256 RestMQ-Signature header (none: unsigned)"),
    Arg("timeout", "seconds", default=10.0, low=0.01, high=MAX_PUSH_TIMEOUT, doc="seconds a delivery may take"),
    Arg("concurrency", "int", default=4, low=1, high=MAX_PUSH_CONCURRENCY,
        doc="most deliveries in flight for this queue, across every RestMQ process"),
    Arg("backoff", "backoff", default=DEFAULT_BACKOFF, doc="seconds before each retry; the last one repeats"),
)

# -- recurring schedules (docs/push-and-schedules.md) -------------------------------------------------------
SCHEDULE_NAME = Arg("name", "name", required=True, doc="schedule name (1-128 of A-Z a-z 0-9 . _ : -)")
SCHEDULE_COMMANDS = (
    Command(
        "schedule_set",
        (
            SCHEDULE_NAME,
            Arg("queue", "queue", required=True, doc="the queue each fire adds a message to"),
            Arg("value", "value", required=True, doc="the message each fire adds: any JSON value"),
            Arg("cron", "text", high=200, doc="five-field cron expression, minute granularity (or every)"),
            Arg("every", "int", low=1, high=365 * DAY, doc="seconds between fires, at least 1 (or cron)"),
            Arg("tz", "text", high=64, doc="IANA time zone cron is read in (default UTC)"),
        ),
        "admin",
        "Create or replace a recurring schedule: each tick of cron (or every N seconds) adds value "
        "to queue, once however many servers run. Needs admin on the queue.",
        text=("name", "queue", "every", "value"),
    ),
    Command("schedule_get", (SCHEDULE_NAME,), "read",
            "One schedule with its next and last fire (needs read on its queue).", text=("name",)),
    Command("schedule_ls", (), "read", "Every schedule whose queue the caller may read, with next and last fire."),
    Command("schedule_rm", (SCHEDULE_NAME,), "admin",
            "Delete a schedule (needs admin on its queue); no fire happens after the answer.", text=("name",)),
)

_TABLE = (
    Command(
        "add",
        (QUEUE, VALUE, PRIORITY, TTL, DELAY, DEDUP, UNIQUE, LEN),
        "write",
        "Add one message; answers its key. A dedup hit, or a unique value still held, adds nothing and "
        "answers the existing key with duplicate: true. With len: true the answer has len, the "
        "queue's ready length after the add.",
        text=("queue", "value"),
    ),
    Command(
        "add_many",
        (
            QUEUE,
            Arg("messages", "messages", required=True,
                doc="values or {value, priority, ttl, delay, dedup, unique}"),
            LEN,
        ),
        "write",
        "Add up to 1000 messages in one round trip; answers their keys, and duplicates: the indexes "
        "of the items that added nothing (only when there were some); len as add's.",
    ),
    Command(
        "find",
        (QUEUE, Arg("value", "value", required=True, doc="the value a unique add stored: any JSON value")),
        "read",
        "The key of the held (ready, delayed or reserved) unique message with this value, or null.",
        text=("queue", "value"),
    ),
    Command(
        "take",
        (
            Arg("queue", "queue", doc="queue name (or queues)"),
            COUNT,
            WAIT,
            Arg("queues", "queues", doc=f"instead of queue: 1 to {MAX_QUEUES} queues, taken from the "
                "first listed that has a message, waiting on all of them"),
        ),
        "read",
        "Remove and return the next message (at-most-once); with queues, from the first listed queue "
        "that has one (the message's queue field says which).",
        text=("queue", "count", "wait"),
    ),
    Command(
        "reserve",
        (QUEUE, COUNT, LEASE, WAIT),
        "read",
        "Deliver the next message hidden for a lease (at-least-once); ack it or it comes back.",
        text=("queue", "lease", "count", "wait"),
    ),
    Command(
        "ack",
        (
            QUEUE,
            Arg("receipt", "receipts", required=True, doc="a receipt or a list of them"),
            Arg("next", "bool", default=False,
                doc="then reserve the next message (answered as next, null when none came)"),
            Arg("lease", "seconds", low=0.001, high=12 * 3600.0, doc="the next message's lease"),
            Arg("wait", "seconds", default=0.0, low=0, high=MAX_WAIT, doc="long-poll up to this long for next"),
        ),
        "read",
        "Acknowledge reserved messages: they are done and deleted. With next, reserve the queue's "
        "next message in the same call, as a worker loop does (one request per message).",
        text=("queue", "receipt"),
    ),
    Command(
        "nack",
        (QUEUE, RECEIPT, Arg("delay", "seconds", default=0.0, low=0, high=7 * DAY),
         Arg("error", "text", high=4096, doc="why it failed (kept with a dead message)")),
        "read",
        "Give a reserved message back now (or after delay); dead after max_attempts deliveries.",
        text=("queue", "receipt", "delay", "error"),
    ),
    Command(
        "touch",
        (QUEUE, RECEIPT, LEASE),
        "read",
        "Extend a reservation's lease from now.",
        text=("queue", "receipt", "lease"),
    ),
    Command(
        "peek",
        (QUEUE, COUNT, Arg("state", "choice", default="ready", choices=("ready", "reserved", "delayed", "dead"))),
        "read",
        "Look at messages without delivering them.",
        text=("queue", "count", "state"),
    ),
    Command(
        "config",
        (QUEUE, *(Arg(a.name, a.kind, low=a.low, high=a.high, doc=a.doc) for a in SETTINGS)),
        "read",
        "A queue's settings; sets those given (needs admin).",
        text=("queue",),
    ),
    Command(
        "redrive",
        (QUEUE, COUNT),
        "admin",
        "Move dead-letter messages back to the queue (all, or count).",
        text=("queue", "count"),
    ),
    Command(
        "get",
        (QUEUE, Arg("key", "key", doc="a message key; without it: soft get of the next message")),
        "read",
        "Read one message by key, or peek at the next one counting how often it was looked at.",
        text=("queue", "key"),
    ),
    Command(
        "del",
        (
            QUEUE,
            Arg("key", "key", doc="the message's key"),
            Arg("value", "value", doc="instead of key: the value of a held unique message (any JSON value)"),
        ),
        "write",
        "Delete one message by key, or the held unique message with this value (found and deleted "
        "in one step); deleted says how many were removed.",
        text=("queue", "key"),
    ),
    Command("purge", (QUEUE,), "admin", "Empty the queue and end its streams.", text=("queue",)),
    Command("len", (QUEUE,), "read", "Count the queue's messages by state.", text=("queue",)),
    Command("list", (), "read", "Every queue the caller may read, with its length."),
    Command(
        "stats",
        (OPT_QUEUE, Arg("detail", "bool", default=False, doc="each queue's lengths and counters too (no queue given)")),
        "read",
        "Server statistics (readable queues), or one queue's.",
        text=("queue",),
    ),
    Command("state", (OPT_QUEUE,), "read", "Running or paused: the queue, or every readable one.", text=("queue",)),
    Command("pause", (QUEUE,), "admin", "Stop delivering (adds are still accepted).", text=("queue",)),
    Command("resume", (QUEUE,), "admin", "Start delivering again.", text=("queue",)),
    Command(
        "policy",
        (QUEUE, Arg("policy", "choice", choices=POLICIES, doc="set it when given")),
        "read",
        "Get or set how streams share messages: broadcast or roundrobin.",
        text=("queue", "policy"),
    ),
    Command("health", (), "read", "Whether Redis answers, and how safely it keeps data."),
    Command(
        "push_set",
        PUSH_ARGS,
        "admin",
        "Set the queue's push subscription: each message is POSTed to url (signed with secret) and "
        "acked on a 2xx, retried after backoff otherwise (see docs/push-and-schedules.md). The url must start with "
        "one of the server's --push-allow prefixes.",
        text=("queue", "url"),
    ),
    Command("push_get", (QUEUE,), "read", "The queue's push subscription (secret redacted) and its state.",
            text=("queue",)),
    Command("push_rm", (QUEUE,), "admin", "Remove the queue's push subscription; deliveries in flight finish.",
            text=("queue",)),
    *SCHEDULE_COMMANDS,
)

COMMANDS: dict[str, Command] = {c.name: c for c in _TABLE}


#: Queue names already found valid: most calls name one of a few queues, and a set lookup is a
#: fraction of the pattern's cost. Emptied when it holds :data:`_KNOWN_MOST` names.
_KNOWN: set[str] = set()
_KNOWN_MOST = 10_000


def check_queue(name: Any) -> str:
    """Return ``name`` if it is a valid queue name, else raise ``bad_queue_name``."""
    if type(name) is str and name in _KNOWN:
        return name
    if not isinstance(name, str) or not QUEUE_NAME.match(name):
        shown = name if isinstance(name, str) else type(name).__name__
        raise BadQueueName(f"invalid queue name {shown[:140]!r}: {QUEUE_RULE}")
    if len(_KNOWN) >= _KNOWN_MOST:
        _KNOWN.clear()
    _KNOWN.add(name)
    return name


def _int(arg: Arg, raw: Any) -> int:
    """An integer: a JSON/XML-RPC integer (or a float without a fraction), or text in ASCII digits."""
    if isinstance(raw, bool):
        raise BadRequest(f"{arg.name} must be an integer")
    value: int | None = None
    if isinstance(raw, int):
        value = raw
    elif isinstance(raw, float):
        if not math.isfinite(raw):
            raise BadRequest(f"{arg.name} must be a finite integer")
        value = int(raw) if raw.is_integer() else None
    elif isinstance(raw, (str, bytes)):
        value = parse_int(raw.strip())
    if value is None:
        raise BadRequest(f"{arg.name} must be an integer, not {shown(raw)}")
    _bounds(arg, value)
    return value


def _seconds(arg: Arg, raw: Any) -> float:
    """Seconds: a finite JSON/XML-RPC number, or text in ASCII (``1.5``, ``2e1``)."""
    value: float | None = None
    if isinstance(raw, (str, bytes)):
        value = parse_float(raw.strip())
    elif isinstance(raw, int) and not isinstance(raw, bool):
        _bounds(arg, raw)  # before float(): a huge integer would overflow it
        value = float(raw)
    elif isinstance(raw, float):
        if not math.isfinite(raw):
            raise BadRequest(f"{arg.name} must be a finite number of seconds")
        value = raw
    if value is None:
        raise BadRequest(f"{arg.name} must be a finite number of seconds, not {shown(raw)}")
    _bounds(arg, value)
    return value


def _bounds(arg: Arg, value: float) -> None:
    if arg.low is not None and value < arg.low:
        raise BadRequest(f"{arg.name} must be at least {arg.low:g}, not {shown(value)}")
    if arg.high is not None and value > arg.high:
        raise BadRequest(f"{arg.name} must be at most {arg.high:g}, not {shown(value)}")


def _value(arg: Arg, raw: Any) -> Any:
    """Any JSON value (nesting and numbers checked by :func:`restmq.values.check`)."""
    if raw is None:
        raise BadRequest(f"missing {arg.name}")
    if isinstance(raw, bytes):
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            raise BadRequest(f"{arg.name} must be UTF-8 text") from None
    return check(raw, arg.name)


MESSAGE_FIELDS = (VALUE, PRIORITY, TTL, DELAY, DEDUP, UNIQUE)
MESSAGE_NAMES = {a.name: a for a in MESSAGE_FIELDS}
MESSAGE_DEFAULTS = {a.name: a.default for a in MESSAGE_FIELDS}


def _messages(arg: Arg, raw: Any) -> list[dict[str, Any]]:
    """``add_many``'s list: each item a bare value or ``{"value", "priority", "ttl", "delay",
    "dedup", "unique"}``, checked like ``add``'s arguments."""
    if not isinstance(raw, list) or not raw:
        raise BadRequest("messages must be a non-empty list")
    if len(raw) > MAX_COUNT:
        raise BadRequest(f"at most {MAX_COUNT} messages in one add_many, not {len(raw)}")
    out = []
    for item in raw:
        if isinstance(item, dict):
            out.append(_check("message", MESSAGE_FIELDS, item, MESSAGE_NAMES))
        else:  # a bare value: the common bulk case, every other field at its default
            out.append({**MESSAGE_DEFAULTS, "value": _value(arg, item)})
    return out


def _text(arg: Arg, raw: Any) -> str:
    if isinstance(raw, bytes):
        raw = raw.decode("utf-8", "replace")
    if not isinstance(raw, str) or not raw:
        raise BadRequest(f"{arg.name} must be a non-empty string")
    if arg.high is not None and len(raw) > arg.high:
        raise BadRequest(f"{arg.name} is longer than {arg.high:g} characters")
    return raw


def _url(arg: Arg, raw: Any) -> str:
    """An absolute http(s) URL with a host, without credentials or a fragment (checked here; the
    server's ``--push-allow`` prefixes are checked by the dispatcher)."""
    text = _text(arg, raw)
    if any(c.isspace() or ord(c) < 0x20 or ord(c) == 0x7F for c in text):
        raise BadRequest(f"{arg.name} must not hold whitespace or control characters")
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError as e:
        raise BadRequest(f"{arg.name} is not a valid URL: {e}") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise BadRequest(f"{arg.name} must be an http:// or https:// URL with a host, not {shown(text, 100)}")
    if parts.username is not None or parts.password is not None or parts.fragment:
        raise BadRequest(f"{arg.name} must hold no user:password@ and no #fragment")
    if port == 0:
        raise BadRequest(f"{arg.name} has port 0")
    return text


def _backoff(arg: Arg, raw: Any) -> tuple[float, ...]:
    """A non-empty list of positive seconds (each at most a day); text may be ``1,5,30``."""
    if isinstance(raw, bytes):
        raw = raw.decode("utf-8", "replace")
    if isinstance(raw, str):
        raw = [part for part in raw.split(",")]
    if not isinstance(raw, list) or not 1 <= len(raw) <= MAX_BACKOFF_STEPS:
        raise BadRequest(f"{arg.name} must be a list of 1 to {MAX_BACKOFF_STEPS} positive numbers of seconds")
    step = Arg(arg.name, "seconds", low=0, high=DAY)
    delays = tuple(_seconds(step, item) for item in raw)
    if any(d <= 0 for d in delays):
        raise BadRequest(f"{arg.name} must hold positive numbers of seconds, not {shown(list(delays))}")
    return delays


def check_push_url(url: str, allowed: tuple[str, ...]) -> None:
    """Refuse a push URL outside ``--push-allow`` (at set time, and again at each delivery)."""
    if not allowed:
        raise BadRequest("push is off on this server: start it with --push-allow naming the allowed URL prefixes")
    if not url.startswith(allowed):
        raise BadRequest(f"url {shown(url, 200)} is outside --push-allow ({', '.join(allowed)})")


def _receipts(arg: Arg, raw: Any) -> list[str]:
    """One receipt or a list (up to 1000), as a list without repeats."""
    items = raw if isinstance(raw, list) else [raw]
    if not items or len(items) > MAX_COUNT:
        raise BadRequest(f"{arg.name} must be a receipt or a list of 1 to {MAX_COUNT} receipts")
    return list(dict.fromkeys(_text(RECEIPT, item) for item in items))


def _queues(arg: Arg, raw: Any) -> list[str]:
    """A list of queue names (order kept, repeats dropped)."""
    if not isinstance(raw, list) or not 1 <= len(raw) <= MAX_QUEUES:
        raise BadRequest(f"{arg.name} must be a list of 1 to {MAX_QUEUES} queue names")
    return list(dict.fromkeys(check_queue(q.decode("utf-8", "replace") if isinstance(q, bytes) else q) for q in raw))


def _key(arg: Arg, raw: Any) -> str:
    if isinstance(raw, int) and not isinstance(raw, bool):
        return str(raw)
    if isinstance(raw, bytes):
        raw = raw.decode("utf-8", "replace")
    if not isinstance(raw, str) or not raw:
        raise BadRequest(f"{arg.name} must be a message key like 'queue:42'")
    return raw


#: How form posts, query strings and text lines spell a boolean (any case).
TRUE_WORDS = ("1", "true", "yes")
FALSE_WORDS = ("0", "false", "no")


def _bool(arg: Arg, raw: Any) -> bool:
    """JSON true/false (XML-RPC booleans too), 0/1, or the words of :data:`TRUE_WORDS` and
    :data:`FALSE_WORDS`: forms and text lines carry only text."""
    if isinstance(raw, bool):
        return raw
    if isinstance(raw, int) and raw in (0, 1):
        return bool(raw)
    if isinstance(raw, bytes):
        raw = raw.decode("utf-8", "replace")
    if isinstance(raw, str):
        word = raw.strip().lower()
        if word in TRUE_WORDS:
            return True
        if word in FALSE_WORDS:
            return False
    raise BadRequest(f"{arg.name} must be true or false (or 1/0, yes/no), not {shown(raw)}")


def _choice(arg: Arg, raw: Any) -> str:
    if isinstance(raw, bytes):
        raw = raw.decode("utf-8", "replace")
    if not isinstance(raw, str) or raw.lower() not in arg.choices:
        raise BadRequest(f"{arg.name} must be one of {', '.join(arg.choices)}, not {shown(raw)}")
    return raw.lower()


_COERCE = {
    "queue": lambda arg, raw: check_queue(raw.decode("utf-8", "replace") if isinstance(raw, bytes) else raw),
    "int": _int,
    "seconds": _seconds,
    "value": _value,
    "messages": _messages,
    "key": _key,
    "choice": _choice,
    "bool": _bool,
    "text": _text,
    "receipts": _receipts,
    "queues": _queues,
    "url": _url,
    "backoff": _backoff,
    "name": lambda arg, raw: check_name(raw.decode("utf-8", "replace") if isinstance(raw, bytes) else raw),
}


def lookup(name: Any) -> Command:
    """The command called ``name``, or ``unknown_command``."""
    command = COMMANDS.get(name) if isinstance(name, str) else None
    if command is None:
        raise UnknownCommand(f"unknown command {shown(name, 60)}; known: {', '.join(COMMANDS)}")
    return command


def parse(command: Command, raw: Mapping[str, Any]) -> dict[str, Any]:
    """Check and coerce ``raw`` against the table: every argument present, with defaults filled.

    An argument the command does not take is an error rather than silently ignored, so a typo
    (``priorty``) does not quietly change what a client gets.
    """
    return _check(command.name, command.args, raw, command.by_name)


def _check(
    what: str, args: tuple[Arg, ...], raw: Mapping[str, Any], names: Mapping[str, Arg]
) -> dict[str, Any]:
    unknown = [] if raw.keys() <= names.keys() else [k for k in raw if k not in names]
    if unknown:
        raise BadRequest(
            f"{what} does not take {', '.join(sorted(map(str, unknown)))}; "
            f"it takes {', '.join(a.name for a in args) or 'no arguments'}",
        )
    out: dict[str, Any] = {}
    for arg in args:
        raw_value = raw.get(arg.name, MISSING)
        if raw_value is MISSING or (raw_value is None and arg.kind != "value"):
            if arg.required:
                raise BadRequest(f"{what} needs {arg.name}")
            out[arg.name] = arg.default
        else:
            out[arg.name] = _COERCE[arg.kind](arg, raw_value)
    return out


def from_positional(command: Command, values: list[Any] | tuple[Any, ...]) -> dict[str, Any]:
    """Name positional arguments (XML-RPC) in the command's order; too many is an error."""
    if len(values) > len(command.args):
        raise BadRequest(
            f"{command.name} takes at most {len(command.args)} arguments "
            f"({', '.join(command.positional)}), got {len(values)}",
        )
    return dict(zip(command.positional, values))


def from_text(command: Command, rest: str) -> dict[str, Any]:
    """Name the words of a line-protocol text command; the last named argument takes the rest."""
    names = command.text
    if not names:
        return {}
    words = rest.split(None, len(names) - 1) if rest.strip() else []
    return dict(zip(names, words))
