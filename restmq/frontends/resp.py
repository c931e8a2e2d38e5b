"""The Redis-protocol front end (``--resp ENDPOINT``): RESP2 over TCP (RESP3 after ``HELLO 3``,
redis-py 8's default), so ``redis-cli``, redis-py and any Redis client library can use RestMQ
queues unchanged.

Queue-shaped Redis commands map onto RestMQ commands (:mod:`restmq.wire.resp` is the codec):

- ``LPUSH``/``RPUSH q v [v …]`` add the values in one ``add_many`` and answer the queue's ready
  length. ``LPOP``/``RPOP q [count]`` take (at-most-once). **Both ends are FIFO**: RestMQ is a
  queue (with priorities), not a list, so whichever push and pop a client uses, the oldest message
  comes first. ``BLPOP``/``BRPOP q [q …] timeout`` take from the first listed queue that has a
  message, waiting up to ``timeout`` seconds (``0``: until one comes, in rounds of the command
  table's longest wait): one ``take`` with ``queues``, woken at once by an add to any of them.
  ``LPUSH`` is one ``add_many`` with ``len``. ``LLEN q`` is the ready
  count, ``DEL q [q …]`` purges and answers how many queues had messages.
- The set flavour keeps each value at most once in the queue: ``SADD`` adds with ``unique``
  (answers how many were new), ``SPOP`` takes, ``SCARD`` counts, ``SISMEMBER`` asks ``find``,
  ``SREM`` is ``del`` with ``value`` per value (found and deleted in one step).
- Values: a bulk string is stored as UTF-8 text (binary that is not UTF-8 is refused with
  ``bad_request``, nothing is queued); a taken text value comes back as its bytes, any other JSON
  value (added over HTTP) as its compact JSON text.
- Connection commands: ``PING``, ``ECHO``, ``QUIT``, ``AUTH [user] token``, ``HELLO [2|3]``,
  ``CLIENT SETNAME|GETNAME|ID|INFO|LIST|SETINFO``, ``SELECT 0``, ``INFO``, ``COMMAND [COUNT|DOCS|
  INFO|LIST]``. ``MULTI`` is refused, and so is everything up to ``EXEC``/``DISCARD`` (RestMQ
  commands are not transactional: a transaction fails whole; use a pipeline without one);
  anything else is ``-ERR unknown command``.

Errors carry the RestMQ code after the Redis prefix: ``-ERR bad_queue_name invalid queue name …``;
``unauthorized`` is ``-NOAUTH unauthorized …`` (``-WRONGPASS`` for a bad ``AUTH``) and
``forbidden`` is ``-NOPERM forbidden …``, the prefixes Redis clients turn into their
authentication and permission errors. Unknown commands, wrong arity and bad arguments leave the
connection open; a malformed stream (bad lengths, a bulk longer than ``--max-message-size``,
junk) gets ``-ERR Protocol error: …`` and the connection closes, as Redis does.

The connection's order is :class:`~restmq.frontends.pipeline.Pipeline`'s: requests are read ahead,
run one at a time in order, answered in order, reading pauses when too many answers are pending,
and a half-closed client still gets its answers. Each command runs under the token of the last
``AUTH`` (or ``HELLO … AUTH``) before it, never one sent after it: a request is queued with the
principal in force where it stands, and reading waits until a pipelined ``AUTH``/``HELLO`` has run.
With an auth file, a connection that has not authenticated within ``--header-timeout`` gets
``-NOAUTH unauthorized not authenticated within N s`` and is closed. This module owns only the
framing (:class:`RespProtocol`) and the Redis commands (a per-connection :class:`RespSession`,
each a call or two of the dispatcher's commands). Connections never time out for being idle (Redis's
default ``timeout 0``): client libraries keep pooled connections idle for long. A client that disconnects during a blocking pop has its wait cancelled,
and pops read after a client is gone are not run, so no message is taken for nobody (except one
taken in the instant the connection drops, as with an HTTP long poll).
"""

from __future__ import annotations

import itertools
import os
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from functools import partial
from typing import Any, cast

from twisted.internet import defer, protocol
from twisted.internet.interfaces import IAddress, IDelayedCall, IHalfCloseableProtocol, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from restmq import __version__, commands
from restmq.errors import BadQueueName, BadRequest, LimitExceeded, RestMQError, Unauthorized, internal
from restmq.frontends.connection import INTERNAL, BufferedReading, close_gracefully, describe_peer
from restmq.frontends.pipeline import Command, Pipeline
from restmq.wire import resp as wire
from restmq.wire.resp import NIL_ARRAY, OK, Error, Map, Reply, Simple, value_bytes
from restmq.frontends.base import Context, FrontEnd
from restmq.options import Option
from restmq.limits import Limits
from restmq.ports import Dispatcher, Principal

log = Logger()

#: The Redis version whose commands we follow (``INFO``'s ``redis_version``, ``HELLO``'s version):
#: clients compare it to decide which command forms they may send.
REDIS_VERSION = "7.0.0"
#: RestMQ error codes whose Redis prefix is not ``ERR``: the ones clients map to their own errors.
PREFIXES = {"unauthorized": "NOAUTH", "forbidden": "NOPERM"}
#: Commands that may change the connection's token: what follows them is read once they have run.
CREDENTIALS = frozenset({"AUTH", "HELLO"})
#: Commands queued as dispatcher commands, so that a pipelined run of them on one queue is one
#: script (see restmq/coalesce.py): pushes are ``add_many``, pops ``take``.
PUSHES = frozenset({"LPUSH", "RPUSH"})
POPS = frozenset({"LPOP", "RPOP"})


def error_reply(error: RestMQError, prefix: str | None = None) -> Error:
    """A RestMQ error as a Redis error carrying its code: ``-ERR bad_request value must …``."""
    return Error(f"{prefix or PREFIXES.get(error.code, 'ERR')} {error.code} {error.message}")


def _show(raw: bytes, limit: int = 128) -> str:
    """An argument as Redis quotes it in errors: printable, cut short."""
    text = raw[:limit].decode("utf-8", "replace")
    return "".join(c if c.isprintable() else "?" for c in text)


def _queue(raw: bytes) -> str:
    try:
        return commands.check_queue(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise BadQueueName(f"invalid queue name: not UTF-8; {commands.QUEUE_RULE}") from None


def _text(raw: bytes, what: str = "value") -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise BadRequest(f"{what} is not UTF-8 text: RestMQ stores text (encode binary, e.g. base64)") from None


def _count(raw: bytes) -> int:
    count = wire.parse_int(raw)
    if count is None or count < 0:
        raise BadRequest("value is out of range, must be positive")
    return count


def _timeout(raw: bytes) -> float:
    timeout = wire.parse_float(raw)
    if timeout is None:
        raise BadRequest("timeout is not a float or out of range")
    if timeout < 0:
        raise BadRequest("timeout is negative")
    return timeout


def _queue_lines(queues: dict[str, Any]) -> list[str]:
    """``queueN:name=…,ready=…,…,added_total=…`` per queue (``stats`` with ``detail``): lengths
    now, then counters since the queue was created (names may hold ':', so they are not the key)."""
    lines = []
    for i, name in enumerate(sorted(queues)):
        stats = queues[name]
        fields = {
            "name": name,
            **stats["length"],
            **{f"{k}_total": v for k, v in stats["counters"].items()},
            "state": stats["state"],
            "policy": stats["policy_name"],
            "subscribers": stats["subscribers"],
        }
        lines.append(f"queue{i}:" + ",".join(f"{k}={v}" for k, v in fields.items()))
    return lines


@dataclass(frozen=True)
class Spec:
    """One Redis command we answer: Redis's arity (``n`` exactly, ``-n`` at least ``n``, the name
    included), at most ``most`` words when bounded, and what ``COMMAND`` tells clients about it."""

    name: str
    arity: int
    group: str
    summary: str
    flags: tuple[str, ...] = ()
    keys: tuple[int, int, int] = (0, 0, 0)
    most: int | None = None

    def fits(self, n: int) -> bool:
        if self.arity >= 0:
            return n == self.arity
        return n >= -self.arity and (self.most is None or n <= self.most)

    def info(self) -> list[Any]:
        """``COMMAND INFO``'s entry (the Redis 7 shape, ten fields)."""
        return [self.name, self.arity, [Simple(f) for f in self.flags], *self.keys, [], [], [], []]

    def docs(self) -> Map:
        """``COMMAND DOCS``'s entry: enough for ``redis-cli``'s help and hints."""
        return Map({"summary": self.summary, "since": "1.0.0", "group": self.group})


_Q = (1, 1, 1)
SPECS: dict[str, Spec] = {
    s.name.upper(): s
    for s in (
        Spec("lpush", -3, "list", "Add values to the queue (FIFO); answers its ready length.", ("write", "denyoom"), _Q),
        Spec("rpush", -3, "list", "Add values to the queue (FIFO); answers its ready length.", ("write", "denyoom"), _Q),
        Spec("lpop", -2, "list", "Take the oldest message(s) (FIFO, at-most-once).", ("write", "fast"), _Q, 3),
        Spec("rpop", -2, "list", "Take the oldest message(s) (FIFO, at-most-once).", ("write", "fast"), _Q, 3),
        Spec("blpop", -3, "list", "Take from the first queue with a message, waiting up to timeout.",
             ("write", "blocking"), (1, -2, 1)),
        Spec("brpop", -3, "list", "Take from the first queue with a message, waiting up to timeout.",
             ("write", "blocking"), (1, -2, 1)),
        Spec("llen", 2, "list", "How many messages are ready.", ("readonly", "fast"), _Q),
        Spec("del", -2, "generic", "Purge queues; answers how many had messages.", ("write",), (1, -1, 1)),
        Spec("sadd", -3, "set", "Add values not already queued; answers how many were added.",
             ("write", "denyoom"), _Q),
        Spec("spop", -2, "set", "Take the oldest message(s).", ("write", "fast"), _Q, 3),
        Spec("scard", 2, "set", "How many messages are ready.", ("readonly", "fast"), _Q),
        Spec("sismember", 3, "set", "Whether the value is queued.", ("readonly", "fast"), _Q),
        Spec("srem", -3, "set", "Delete queued messages with these values.", ("write", "fast"), _Q),
        Spec("ping", -1, "connection", "PONG, or the message given.", ("fast",), most=2),
        Spec("echo", 2, "connection", "The message given.", ("fast",)),
        Spec("quit", -1, "connection", "Close the connection.", ("fast",)),
        Spec("auth", -2, "connection", "Present a RestMQ token (a user name before it is ignored).",
             ("noscript", "loading", "stale", "fast", "no_auth"), most=3),
        Spec("hello", -1, "connection", "Handshake: protocol 2 or 3, AUTH, SETNAME.", ("noscript", "loading", "stale", "fast", "no_auth")),
        Spec("client", -2, "connection", "SETNAME, GETNAME, ID, INFO, LIST, SETINFO.", ("noscript", "loading", "stale")),
        Spec("select", 2, "connection", "Only database 0 exists.", ("loading", "stale", "fast")),
        Spec("info", -1, "server", "Server facts and per-queue statistics.", ("loading", "stale")),
        Spec("command", -1, "server", "What this server answers.", ("loading", "stale")),
        Spec("multi", 1, "transactions", "Refused: RestMQ commands are not transactional.", ("fast",)),
        Spec("exec", 1, "transactions", "Ends a refused MULTI: nothing was run.", ("fast",)),
        Spec("discard", 1, "transactions", "Ends a refused MULTI.", ("fast",)),
    )
}


class RespSession:
    """One connection's Redis commands and what it knows (id, name, library); each command is a
    call or two of the dispatcher's."""

    def __init__(self, proto: RespProtocol, dispatcher: Dispatcher, factory: RespFactory, client_id: int) -> None:
        self.proto = proto
        self.dispatcher = dispatcher
        self.factory = factory
        self.id = client_id
        self.name = ""
        self.library = {"lib-name": "", "lib-ver": ""}
        self.created = time.monotonic()
        self.last_command = "NULL"
        #: RESP3 once the client said ``HELLO 3`` (redis-py 8's default): nulls and maps change.
        self.resp3 = False
        #: A MULTI was refused and no EXEC/DISCARD came yet: what the client meant as a
        #: transaction is not run piecemeal.
        self.in_multi = False
        #: The blocking pop being waited on, cancelled if the client goes away.
        self.blocking: defer.Deferred[Any] | None = None
        #: Per command name, its answer and turn callbacks (see :meth:`_bind`).
        self._callbacks: dict[str, tuple[Callable[[Any], bytes], Callable[[], bytes | None]]] = {}
        #: The token the running command was queued with (commands run one at a time).
        self.principal: Principal = None

    # -- the protocol's side: run one request -------------------------------------------------

    def execute(self, argv: list[bytes], principal: Principal = None) -> defer.Deferred[Reply]:
        """Run one request (``argv``, name first) under ``principal``; a Deferred of its reply."""
        spec = SPECS.get(argv[0].upper().decode("utf-8", "replace"))
        if spec is None:
            beginning = "".join(f"'{_show(a)}' " for a in argv[1:])
            return defer.succeed(
                Error(f"ERR unknown command '{_show(argv[0])}', with args beginning with: {beginning}")
            )
        if not spec.fits(len(argv)):
            return defer.succeed(Error(f"ERR wrong number of arguments for '{spec.name}' command"))
        if self.in_multi and spec.group != "transactions":
            return defer.succeed(Error("ERR not run: MULTI is not supported, send EXEC or DISCARD"))
        self.last_command = spec.name
        self.principal = principal
        handler: Callable[[list[bytes]], Coroutine[Any, Any, Reply]] = getattr(self, "_cmd_" + spec.name)
        d: defer.Deferred[Reply] = defer.ensureDeferred(handler(argv[1:]))
        if "blocking" in spec.flags and not d.called:
            self.blocking = d
            d.addBoth(self._unblocked)
        return d

    def command(self, argv: list[bytes], name: str) -> Command | None:
        """A push or a pop as a dispatcher command that may be coalesced with its neighbours (the
        same answers as :meth:`execute`'s); None for any other request. One whose arguments are
        refused answers its error in its turn, without breaking its neighbours' run."""
        pop = name in POPS
        if not (pop or name in PUSHES) or not SPECS[name].fits(len(argv)):
            return None
        try:
            queue = _queue(argv[1])
        except RestMQError:
            return None  # no queue, no run to join: execute() refuses it
        finish, turn = self._callbacks.get(name) or self._bind(name, pop)
        early: bytes | None = None
        try:
            if not pop:
                return Command("add_many", {"queue": queue, "messages": [_text(v) for v in argv[2:]], "len": True},
                               finish, turn)
            if len(argv) == 2:
                return Command("take", {"queue": queue, "count": 1, "wait": 0.0}, finish, turn)
            count = min(_count(argv[2]), commands.MAX_COUNT)
            if count == 0:
                early = wire.encode([])
            args = {"queue": queue, "count": count or 1, "wait": 0.0}
        except RestMQError as e:
            early = self.proto._encode_error(e)
            args = {"queue": queue}
            count = None
        return Command("add_many" if not pop else "take", args,
                       partial(self._finish, name, partial(self._popped, count)) if pop else finish,
                       partial(self._turn, name, pop, early))

    def _bind(self, name: str, pop: bool) -> tuple[Callable[[Any], bytes], Callable[[], bytes | None]]:
        """The answer and turn callbacks of a plain ``name`` (a pop without a count), made once per
        connection: a pipeline of pushes builds no closures per command."""
        reply = partial(self._popped, None) if pop else self._pushed
        bound = self._callbacks[name] = (partial(self._finish, name, reply), partial(self._turn, name, pop, None))
        return bound

    def _turn(self, name: str, pop: bool, early: bytes | None) -> bytes | None:
        """When a coalescible command's turn comes: what :meth:`execute` checks first."""
        if self.in_multi:
            return wire.encode(Error("ERR not run: MULTI is not supported, send EXEC or DISCARD"))
        self.last_command = SPECS[name].name
        if early is not None:
            return early
        return b"" if pop and self.proto.gone else None  # nobody would get the message

    def _finish(self, name: str, reply: Callable[[Any], Reply], outcome: Any) -> bytes:
        if isinstance(outcome, Failure):
            return self.proto._encode_failure(outcome, name)
        return self.proto._encode_answer(reply(outcome))

    @staticmethod
    def _pushed(answer: dict[str, Any]) -> Reply:
        return int(answer["len"])

    @staticmethod
    def _popped(count: int | None, taken: list[dict[str, Any]]) -> Reply:
        if count is None:
            return value_bytes(taken[0]["value"]) if taken else None
        return [value_bytes(m["value"]) for m in taken] if taken else NIL_ARRAY

    def _unblocked(self, result: Any) -> Any:
        self.blocking = None
        return result

    # -- helpers ------------------------------------------------------------------------------

    def _run(self, name: str, **args: Any) -> defer.Deferred[Any]:
        return self.dispatcher.execute(name, args, self.principal, frontend="resp")

    async def _take(self, queue: str, count: int, wait: float = 0.0) -> list[dict[str, Any]]:
        """Take up to ``count``; nothing once the client is gone (nobody would get the message)."""
        if self.proto.gone:
            return []
        taken: list[dict[str, Any]] = await self._run("take", queue=queue, count=count, wait=wait)
        return taken

    async def _ready(self, queue: str) -> int:
        return int((await self._run("len", queue=queue))["ready"])

    def _authenticate(self, raw: bytes) -> Error | None:
        """Make ``raw`` the connection's token; the error reply when it is refused."""
        token = raw.decode("utf-8", "replace")
        try:
            self.dispatcher.authenticate(token)
        except Unauthorized as e:
            return error_reply(e, "WRONGPASS")
        self.proto.authenticated(token)
        log.debug("resp client authenticated peer={peer}", peer=self.proto.peer)
        return None

    def _set_name(self, raw: bytes) -> Error | None:
        if any(c < 0x21 or c > 0x7E for c in raw):
            return Error("ERR Client names cannot contain spaces, newlines or special characters.")
        self.name = raw.decode("ascii")
        return None

    def describe(self) -> str:
        """One ``CLIENT LIST``/``CLIENT INFO`` line."""
        host = self.proto.transport.getHost() if self.proto.transport is not None else None
        laddr = describe_peer(host)[1] if host is not None else ""
        age = int(time.monotonic() - self.created)
        return (
            f"id={self.id} addr={self.proto.peer} laddr={laddr} name={self.name} age={age} db=0 "
            f"cmd={self.last_command} user={'token' if self.proto.principal else 'default'} "
            f"lib-name={self.library['lib-name']} lib-ver={self.library['lib-ver']} resp={3 if self.resp3 else 2}\n"
        )

    # -- queue commands -----------------------------------------------------------------------

    async def _push(self, args: list[bytes]) -> Reply:
        answer = await self._run("add_many", queue=_queue(args[0]), messages=[_text(v) for v in args[1:]], len=True)
        return self._pushed(answer)

    _cmd_lpush = _cmd_rpush = _push

    async def _pop(self, args: list[bytes], none: Reply = NIL_ARRAY) -> Reply:
        """One value (nil when empty) or, with a count, a list (``none`` when empty)."""
        queue = _queue(args[0])
        if len(args) == 1:
            return self._popped(None, await self._take(queue, 1))
        count = min(_count(args[1]), commands.MAX_COUNT)
        if count == 0:
            return []
        taken = await self._take(queue, count)
        return self._popped(count, taken) if taken else none

    _cmd_lpop = _cmd_rpop = _pop

    async def _cmd_spop(self, args: list[bytes]) -> Reply:
        return await self._pop(args, [])  # Redis answers an empty array, not nil, for SPOP q count

    async def _blocking_pop(self, args: list[bytes]) -> Reply:
        timeout = _timeout(args[-1])
        queues = list(dict.fromkeys(_queue(q) for q in args[:-1]))
        try:
            return await self._wait_and_take(queues, timeout)
        except defer.CancelledError:
            return NIL_ARRAY  # the client closed its side or left (see RespProtocol.readConnectionLost)

    async def _wait_and_take(self, queues: list[str], timeout: float) -> Reply:
        """One ``take`` over every queue (the first listed with a message wins), woken by an add
        to any of them; ``0`` waits in rounds of the command table's longest wait."""
        forever = timeout == 0
        deadline = time.monotonic() + timeout
        while not self.proto.gone:
            left = commands.MAX_WAIT if forever else deadline - time.monotonic()
            wait = min(max(left, 0.0), commands.MAX_WAIT)
            taken = await self._run("take", queues=queues, count=1, wait=wait)
            if taken:
                return [taken[0]["queue"], value_bytes(taken[0]["value"])]
            if not forever and deadline - time.monotonic() <= 0:
                break
        return NIL_ARRAY

    _cmd_blpop = _cmd_brpop = _blocking_pop

    async def _cmd_llen(self, args: list[bytes]) -> Reply:
        return await self._ready(_queue(args[0]))

    _cmd_scard = _cmd_llen

    async def _cmd_del(self, args: list[bytes]) -> Reply:
        had = 0
        for queue in dict.fromkeys(_queue(q) for q in args):
            had += (await self._run("purge", queue=queue))["purged"] > 0
        return had

    async def _cmd_sadd(self, args: list[bytes]) -> Reply:
        queue = _queue(args[0])
        items = [{"value": _text(v), "unique": True} for v in args[1:]]
        added = await self._run("add_many", queue=queue, messages=items)
        return len(items) - len(set(added.get("duplicates") or ()))

    async def _cmd_sismember(self, args: list[bytes]) -> Reply:
        found = await self._run("find", queue=_queue(args[0]), value=_text(args[1]))
        return 1 if found.get("key") else 0

    async def _cmd_srem(self, args: list[bytes]) -> Reply:
        queue = _queue(args[0])
        removed = 0
        for value in dict.fromkeys(_text(v) for v in args[1:]):
            removed += int((await self._run("del", queue=queue, value=value))["deleted"])
        return removed

    # -- connection and server commands -------------------------------------------------------

    async def _cmd_ping(self, args: list[bytes]) -> Reply:
        return args[0] if args else Simple("PONG")

    async def _cmd_echo(self, args: list[bytes]) -> Reply:
        return args[0]

    async def _cmd_quit(self, args: list[bytes]) -> Reply:
        return OK  # the protocol closes after it (QUIT is seen when read, see RespProtocol)

    async def _cmd_auth(self, args: list[bytes]) -> Reply:
        return self._authenticate(args[-1]) or OK

    async def _cmd_hello(self, args: list[bytes]) -> Reply:
        if args:
            version = wire.parse_int(args[0])
            if version is None:
                return Error("ERR Protocol version is not an integer or out of range")
            if version not in (2, 3):
                return Error("NOPROTO unsupported protocol version")
            options, i = args[1:], 0
            while i < len(options):
                option = options[i].upper()
                if option == b"AUTH" and i + 2 < len(options):
                    refused = self._authenticate(options[i + 2])
                    i += 3
                elif option == b"SETNAME" and i + 1 < len(options):
                    refused = self._set_name(options[i + 1])
                    i += 2
                else:
                    return Error(f"ERR Syntax error in HELLO option '{_show(options[i])}'")
                if refused is not None:
                    return refused
            self.resp3 = version == 3
        return Map({
            "server": "restmq", "version": REDIS_VERSION, "restmq_version": __version__,
            "proto": 3 if self.resp3 else 2, "id": self.id, "mode": "standalone", "role": "master",
            "modules": [],
        })

    async def _cmd_client(self, args: list[bytes]) -> Reply:
        sub, rest = args[0].lower(), args[1:]
        arity = {b"setname": 1, b"getname": 0, b"id": 0, b"info": 0, b"setinfo": 2}
        if sub in arity and len(rest) != arity[sub]:
            return Error(f"ERR wrong number of arguments for 'client|{sub.decode()}' command")
        if sub == b"setname":
            return self._set_name(rest[0]) or OK
        if sub == b"getname":
            return self.name or None
        if sub == b"id":
            return self.id
        if sub == b"info":
            return self.describe()
        if sub == b"list":
            return "".join(c.session.describe() for c in self.factory.clients.values())
        if sub == b"setinfo":
            attribute = rest[0].lower().decode("ascii", "replace")
            if attribute not in self.library:
                return Error(f"ERR Unrecognized option '{_show(rest[0])}'")
            if any(c < 0x21 or c > 0x7E for c in rest[1]):
                return Error(f"ERR {attribute} cannot contain spaces, newlines or special characters.")
            self.library[attribute] = rest[1].decode("ascii")
            return OK
        return Error(f"ERR unknown subcommand '{_show(args[0])}'. Try CLIENT HELP.")

    async def _cmd_select(self, args: list[bytes]) -> Reply:
        index = wire.parse_int(args[0])
        if index is None:
            return Error("ERR value is not an integer or out of range")
        return OK if index == 0 else Error("ERR DB index is out of range: RestMQ has only database 0")

    async def _cmd_multi(self, args: list[bytes]) -> Reply:
        """Refused, and what follows up to EXEC/DISCARD is refused too (EXEC answers EXECABORT),
        so a client's transaction fails whole instead of running as loose commands."""
        if self.in_multi:
            return Error("ERR MULTI calls can not be nested")
        self.in_multi = True
        return Error(
            "ERR MULTI is not supported: RestMQ commands are not transactional; "
            "send a pipeline without MULTI (redis-py: pipeline(transaction=False))"
        )

    async def _cmd_exec(self, args: list[bytes]) -> Reply:
        if not self.in_multi:
            return Error("ERR EXEC without MULTI")
        self.in_multi = False
        return Error("EXECABORT Transaction discarded: MULTI is not supported, nothing was run")

    async def _cmd_discard(self, args: list[bytes]) -> Reply:
        if not self.in_multi:
            return Error("ERR DISCARD without MULTI")
        self.in_multi = False
        return OK

    async def _cmd_info(self, args: list[bytes]) -> Reply:
        wanted = {a.lower() for a in args} or {b"default"}
        every = bool(wanted & {b"default", b"all", b"everything"})
        lines: list[str] = []
        stats = await self._run("stats", detail=True) if every or wanted & {b"server", b"queues"} else {}
        if every or b"server" in wanted:
            lines += [
                "# Server",
                f"redis_version:{REDIS_VERSION}",
                f"restmq_version:{__version__}",
                "redis_mode:standalone",
                f"backend:{stats['redis']}",
                f"process_id:{os.getpid()}",
                f"tcp_port:{getattr(self.proto.transport.getHost(), 'port', 0)}",
                f"uptime_in_seconds:{int(stats['uptime'])}",
                "",
            ]
        if every or b"clients" in wanted:
            lines += ["# Clients", f"connected_clients:{len(self.factory.clients)}", ""]
        if every or b"queues" in wanted:
            lines += ["# Queues", *_queue_lines(stats["queues"]), ""]
        return "\r\n".join(lines)

    async def _cmd_command(self, args: list[bytes]) -> Reply:
        if not args:
            return [s.info() for s in SPECS.values()]
        sub, names = args[0].lower(), [a.upper().decode("utf-8", "replace") for a in args[1:]]
        if sub == b"count":
            return len(SPECS)
        if sub == b"list":
            return [s.name for s in SPECS.values()]
        if sub == b"info":
            return [SPECS[n].info() if n in SPECS else None for n in names or SPECS]
        if sub == b"docs":
            return Map({SPECS[n].name: SPECS[n].docs() for n in names or SPECS if n in SPECS})
        return Error(f"ERR unknown subcommand '{_show(args[0])}'. Try COMMAND HELP.")


@implementer(IHalfCloseableProtocol)
class RespProtocol(protocol.Protocol):
    """One RESP connection: RESP framing around a :class:`~restmq.frontends.pipeline.Pipeline`
    (order, back-pressure, per-request principal); its commands are its :class:`RespSession`'s."""

    transport: Any
    factory: RespFactory
    peer = "unknown"
    _abort_later: IDelayedCall | None = None

    def __init__(self, factory: RespFactory, client_id: int) -> None:
        self.factory = factory
        self.session = RespSession(self, factory.dispatcher, factory, client_id)
        self.parser = wire.RequestParser(max_bulk=factory.max_bulk)
        self.pipeline = Pipeline(
            self, internal=wire.encode(error_reply(INTERNAL)), dispatcher=factory.dispatcher, frontend="resp"
        )
        self.input = BufferedReading(self, self._read_loop)

    @property
    def gone(self) -> bool:
        """The client can no longer be answered."""
        return self.pipeline.gone

    @property
    def principal(self) -> Principal:
        """The token of the last accepted AUTH (what requests read from now on run under)."""
        return self.pipeline.principal

    def authenticated(self, token: str) -> None:
        self.pipeline.authenticated(token)

    # -- the pipeline's host ------------------------------------------------------------------

    def write(self, data: bytes) -> None:
        self.transport.write(data)

    def reading(self, pause: bool) -> None:
        self.input.pause(pause)

    def close(self) -> None:
        self._abort_later = close_gracefully(self.transport, self.factory.clock)

    # -- reading ------------------------------------------------------------------------------

    def connectionMade(self) -> None:
        self.peer = describe_peer(self.transport.getPeer())[1]
        log.debug("resp client connected peer={peer}", peer=self.peer)
        self.factory.clients[self.session.id] = self
        self.pipeline.require_auth(self.factory.clock, self.factory.auth_timeout, self._auth_expired)

    def _auth_expired(self) -> None:
        """No accepted AUTH within ``auth_timeout`` (an auth file is in force): say why and close."""
        limits = self.factory.limits
        if limits is not None:
            limits.rejected["auth_timeout"] += 1
        log.info("resp client did not authenticate peer={peer}", peer=self.peer)
        self.pipeline.quit(
            self._encode_error(Unauthorized(f"not authenticated within {self.factory.auth_timeout:g} s"))
        )

    def dataReceived(self, data: bytes) -> None:
        if self.pipeline.closing:
            return
        self.parser.feed(data)
        with self.pipeline.reading_batch():
            self.input.read()

    def _read_loop(self) -> None:
        """Hand complete requests to the pipeline until the buffer is empty, reading is paused
        (too many answers pending or a credential waiting for its turn: the rest waits in the
        parser) or the stream is broken."""
        while not self.input.paused and not self.pipeline.closing:
            try:
                argv = self.parser.next()
            except wire.ProtocolError as e:
                log.info("resp protocol error peer={peer}: {error}", peer=self.peer, error=e.message)
                self.pipeline.quit(wire.encode(e.reply))
                return
            if argv is None:
                return
            name = argv[0].upper().decode("utf-8", "replace")
            if name == "QUIT":
                self.pipeline.quit(wire.encode(OK))  # after every earlier answer; what follows is ignored
                return
            command = self.session.command(argv, name)
            if command is not None:
                self.pipeline.command(command)
            else:
                self.pipeline.call(partial(self._run, argv, name), credential=name in CREDENTIALS)

    def _run(self, argv: list[bytes], name: str, principal: Principal) -> defer.Deferred[bytes]:
        return self.session.execute(argv, principal).addCallbacks(
            self._encode_answer, self._encode_failure, errbackArgs=(name,)
        )

    def _encode_answer(self, answer: Any) -> bytes:
        try:
            return wire.encode(answer, self.session.resp3)
        except Exception:
            return wire.encode(error_reply(internal(None, "resp answer is not a reply peer={peer}", peer=self.peer)))

    def _encode_failure(self, failure: Failure, name: str) -> bytes:
        error = failure.value
        if isinstance(error, Unauthorized) and self.principal is None:
            # The authorizer's hint names HTTP's header; say how a Redis client sends a token.
            error = Unauthorized("a token is required: send AUTH TOKEN (redis-cli -a, redis-py password=)")
        if isinstance(error, RestMQError):
            return self._encode_error(error)
        return self._encode_error(internal(failure, "resp command {cmd} failed peer={peer}", cmd=name, peer=self.peer))

    def _encode_error(self, error: RestMQError) -> bytes:
        return wire.encode(error_reply(error))

    # -- the end ------------------------------------------------------------------------------

    def _stop_waiting(self) -> None:
        """Cancel a blocking pop in flight: a message it took later would be taken for nobody."""
        if self.session.blocking is not None:
            self.session.blocking.cancel()

    def readConnectionLost(self) -> None:
        """The client closed its side: like Redis, a blocking pop it sent ends now (nil) rather than
        hold the connection open; everything else read is still answered, then it closes."""
        self._stop_waiting()
        self.pipeline.finish()

    def writeConnectionLost(self) -> None:
        self.pipeline.gone = True
        self.transport.loseConnection()

    def connectionLost(self, reason: Failure = protocol.connectionDone) -> None:
        self.factory.clients.pop(self.session.id, None)
        self.pipeline.lost()
        if self._abort_later is not None and self._abort_later.active():
            self._abort_later.cancel()
        self._stop_waiting()
        log.debug("resp client disconnected peer={peer}: {why}", peer=self.peer, why=reason.getErrorMessage())


class RespFactory(protocol.Factory["RespProtocol"]):
    """Builds RESP connections on one dispatcher; ``max_bulk`` is the longest bulk string
    (``--max-message-size``), a longer one is a protocol error."""

    noisy = False

    def __init__(
        self,
        dispatcher: Dispatcher,
        *,
        max_bulk: int = 1 << 20,
        clock: IReactorTime | None = None,
        limits: Limits | None = None,
        auth_timeout: float = 0.0,
    ) -> None:
        self.dispatcher = dispatcher
        self.max_bulk = max_bulk
        #: Seconds a connection may stay without an accepted AUTH (0: forever; set with an auth file).
        self.auth_timeout = auth_timeout
        if clock is None:
            from twisted.internet import reactor

            clock = cast(IReactorTime, reactor)
        self.clock = clock
        #: Where refusals are counted (:class:`restmq.limits.Limits`), if anywhere.
        self.limits = limits
        self.clients: dict[int, RespProtocol] = {}
        self._ids = itertools.count(1)

    def refusal(self, message: str) -> bytes:
        """How a connection over a connection limit is answered (see :mod:`restmq.limits`)."""
        return wire.encode(error_reply(LimitExceeded(message)))

    def buildProtocol(self, addr: IAddress | None) -> RespProtocol:
        return RespProtocol(self, next(self._ids))


def build(context: Context) -> RespFactory:
    """The Redis-protocol listener factory (see restmq/frontends/registry.py)."""
    return RespFactory(
        context.dispatcher, max_bulk=context.max_message_size, clock=context.reactor, limits=context.limits,
        auth_timeout=context.auth_timeout,
    )


FRONTEND = FrontEnd(
    "resp",
    (Option("resp", None, "Redis-protocol (RESP2/RESP3) endpoint (off unless given), "
            "e.g. tcp:6380:interface=127.0.0.1."),),
    build,
)
