"""The memcached text-protocol front end, with Kestrel's queue semantics (``--memcache ENDPOINT``).

Framing only: :mod:`restmq.wire.memcache` says what the bytes mean, the dispatcher runs commands.
``set q`` adds, ``get q`` takes, ``get q/open`` / ``/close`` / ``/abort`` reserve / ack / nack,
``get q/peek`` peeks, ``get q/t=MS`` waits, ``delete q`` purges (see the README for the table).

What this module owns is the connection:

- Order: the shared :class:`~restmq.frontends.pipeline.Pipeline` serves requests one at a time,
  so effects and answers follow request order (a ``set`` then a ``get`` pipelined on one connection
  sees that value) and a connection's open messages change only between requests. Reading pauses
  while more than ``high_water`` bytes of values, or too many answers, wait behind a busy request.
- Reliable reads: ``/open`` reserves with the factory's ``lease`` and the connection touches each
  open message every third of it, so an open message never comes back while the connection lives,
  however slow the client; if the server process dies, it comes back within one lease. At most one
  open message per queue per connection (Kestrel's rule); a second ``/open`` is a ``CLIENT_ERROR``.
  A disconnect nacks every open message at once, so another client gets it immediately.
- A waiting ``get q/t=MS`` is cancelled when the client goes away or closes its side; requests read
  before a disconnect still run if they write (a ``printf 'set …' | nc`` producer never loses its set), but gets are
  dropped: nobody is left to receive the message.
- Auth: the memcached text protocol has none, so commands run with no principal: with an auth file
  every command answers ``CLIENT_ERROR unauthorized …``. Protect this port by where it listens.
- ``noreply`` silences a well-formed request's answer, errors included (memcached's rule); they
  are logged at debug.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from functools import partial
from typing import Any, cast

from twisted.internet import defer, protocol, task
from twisted.internet.interfaces import IAddress, IHalfCloseableProtocol, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from restmq import __version__
from restmq.errors import BadRequest, Empty, RestMQError, internal
from restmq.frontends.connection import INTERNAL, BufferedReading, describe_peer
from restmq.frontends.pipeline import Command, Pipeline
from restmq.wire import memcache as wire
from restmq.frontends.base import Context, FrontEnd
from restmq.options import Option
from restmq.ports import Dispatcher, Principal

log = Logger()

#: Codes meaning an open message is no longer ours (its lease ran out and it was redelivered).
LOST = ("stale_receipt", "not_found")


@dataclass
class _Open:
    """A message this connection holds open on one queue."""

    receipt: str
    key: str


@implementer(IHalfCloseableProtocol)
class MemcacheProtocol(protocol.Protocol):
    """One memcached client connection (see the module docstring for its rules)."""

    transport: Any
    factory: MemcacheFactory

    def __init__(self, factory: MemcacheFactory) -> None:
        self.factory = factory
        self.dispatcher = factory.dispatcher
        self.parser = wire.Parser(factory.max_value)
        self.peer = "unknown"
        self.pipeline = Pipeline(
            self, max_bytes=factory.high_water, internal=wire.error_reply(INTERNAL),
            dispatcher=factory.dispatcher, frontend="memcache",
        )
        self._open: dict[str, _Open] = {}
        self.input = BufferedReading(self, self._read_requests)
        self._eof = False  # the client closed its side: answer what was read, then close
        self._waiting: defer.Deferred[Any] | None = None  # a get with t= in flight
        self._toucher: task.LoopingCall | None = None

    # -- connection ---------------------------------------------------------------------------

    def connectionMade(self) -> None:
        self.peer = describe_peer(self.transport.getPeer())[1]
        self.factory.connections += 1
        self.factory.total_connections += 1
        log.debug("memcache client connected peer={peer}", peer=self.peer)

    @property
    def _gone(self) -> bool:
        """The connection is lost: write nothing more."""
        return self.pipeline.gone

    def dataReceived(self, data: bytes) -> None:
        if self.pipeline.closing:
            return
        self.parser.feed(data)
        with self.pipeline.reading_batch():
            self.input.read()

    def readConnectionLost(self) -> None:
        """The client closed its side: answer what it sent, then close. A get still waiting (t=)
        is cancelled: a client that half-closed cannot be told apart from one that is gone, and
        a message taken for nobody would be lost."""
        self._eof = True
        if self._waiting is not None:
            self._waiting.cancel()
        self.pipeline.finish()

    def writeConnectionLost(self) -> None:
        self.transport.loseConnection()

    def connectionLost(self, reason: Failure = protocol.connectionDone) -> None:
        self.pipeline.lost()
        self.factory.connections -= 1
        if self._waiting is not None:
            self._waiting.cancel()
        self._stop_touching()
        held, self._open = self._open, {}
        for queue, message in held.items():
            defer.ensureDeferred(self._give_back(queue, message))
        log.debug(
            "memcache client disconnected peer={peer} open={n}: {why}",
            peer=self.peer,
            n=len(held),
            why=reason.getErrorMessage(),
        )

    # -- serving in order ---------------------------------------------------------------------

    def _read_requests(self) -> None:
        """Hand complete requests to the pipeline until none is left or reading is paused (the
        rest waits in the parser)."""
        while not self.input.paused and not self.pipeline.closing:
            request = self.parser.next()
            if request is None:
                return
            if request == wire.QUIT:
                self.pipeline.quit(b"")
            elif isinstance(request, wire.Invalid):
                reply = self._quiet(request.reply) if request.noreply else request.reply
                (self.pipeline.quit if request.close else self.pipeline.answer)(reply)
            else:
                size = len(request.value) if isinstance(request, wire.Store) else 0
                command = self._command(request)
                if command is not None:
                    self.pipeline.command(command, size=size)
                else:
                    self.pipeline.call(partial(self._run, request), size=size)

    def _command(self, request: wire.Request) -> Command | None:
        """A ``set``/``add`` or a plain one-key ``get`` as a dispatcher command, which may be
        coalesced with its neighbours (restmq/coalesce.py), answered as :meth:`_serve` would."""
        if isinstance(request, wire.Store):
            ttl = wire.ttl_for(request.exptime, self.factory.clock.seconds())
            if ttl is None:
                return None  # answered without a command (see _store)
            return Command("add", self._store_args(request, ttl), partial(self._stored, request), self._store_turn)
        if isinstance(request, wire.Get) and len(request.keys) == 1:
            key = request.keys[0]
            if not (key.open or key.close or key.abort or key.peek or key.timeout_ms):
                return Command("take", {"queue": key.queue, "wait": 0}, partial(self._taken, key), self._get_turn)
        return None

    def _store_turn(self) -> bytes | None:
        self.factory.cmd_set += 1
        return None

    def _stored(self, request: wire.Store, outcome: Any) -> bytes:
        if isinstance(outcome, Failure):
            reply = self._failed(outcome)
        else:
            reply = wire.NOT_STORED if outcome.get("duplicate") else wire.STORED
        return self._quiet(reply) if request.noreply else reply

    def _get_turn(self) -> bytes | None:
        if self._gone:
            return b""  # nobody is left to receive the message
        self.factory.cmd_get += 1
        return None

    def _taken(self, key: wire.Key, outcome: Any) -> bytes:
        if isinstance(outcome, Failure) and outcome.check(Empty):
            self.factory.get_misses += 1
            return wire.encode_get([])
        if isinstance(outcome, Failure):
            return self._failed(outcome)
        self.factory.get_hits += 1
        return wire.encode_get([wire.value_block(key.raw, wire.value_bytes(outcome["value"]))])

    def _failed(self, failure: Failure) -> bytes:
        if isinstance(failure.value, RestMQError):
            return wire.error_reply(failure.value)
        return wire.error_reply(internal(failure, "memcache request failed peer={peer}", peer=self.peer))

    def _run(self, request: wire.Request, principal: Principal) -> defer.Deferred[bytes]:
        return defer.ensureDeferred(self._serve(request))

    # -- the pipeline's host ------------------------------------------------------------------

    def write(self, data: bytes) -> None:
        self.transport.write(data)

    def reading(self, pause: bool) -> None:
        """Back-pressure: stop reading while requests pile up behind a busy one."""
        self.input.pause(pause)

    def close(self) -> None:
        if not self._gone:
            self.transport.loseConnection()

    async def _serve(self, request: wire.Request) -> bytes:
        """The reply bytes for one request (empty when there is nothing to say)."""
        if self._gone and not isinstance(request, (wire.Store, wire.Delete, wire.Flush)):
            return b""  # only writes still matter once the client has left
        if isinstance(request, wire.Get):
            return await self._get(request)
        try:
            reply = await self._serve_other(request)
        except RestMQError as e:
            reply = wire.error_reply(e)
        except Exception:
            reply = wire.error_reply(internal(None, "memcache request failed peer={peer}", peer=self.peer))
        return self._quiet(reply) if getattr(request, "noreply", False) else reply

    def _quiet(self, reply: bytes) -> bytes:
        if not reply.startswith((b"STORED", b"DELETED", b"OK", b"END", b"NOT_")):
            log.debug("memcache noreply request failed peer={peer}: {reply}", peer=self.peer, reply=reply)
        return b""

    async def _serve_other(self, request: wire.Request) -> bytes:
        if isinstance(request, wire.Store):
            return await self._store(request)
        if isinstance(request, wire.Delete):
            answer = await self._call("purge", queue=request.queue)
            return wire.DELETED if answer["purged"] else wire.NOT_FOUND
        if isinstance(request, wire.Flush):
            return await self._flush(request.queue)
        if request == wire.STATS:
            return await self._stats()
        return wire.version_reply(f"restmq-{__version__}")

    def _call(self, name: str, **args: Any) -> defer.Deferred[Any]:
        """Every command goes through the dispatcher, with no principal (see Auth above)."""
        return self.dispatcher.execute(name, args, None, frontend="memcache")

    # -- set / add ----------------------------------------------------------------------------

    async def _store(self, request: wire.Store) -> bytes:
        """``set`` adds; ``add`` adds unless the same value is already queued (NOT_STORED)."""
        self.factory.cmd_set += 1
        ttl = wire.ttl_for(request.exptime, self.factory.clock.seconds())
        if ttl is None:
            return wire.STORED  # memcached stores it already expired: nobody will ever get it
        answer = await self._call("add", **self._store_args(request, ttl))
        return wire.NOT_STORED if answer.get("duplicate") else wire.STORED

    @staticmethod
    def _store_args(request: wire.Store, ttl: float) -> dict[str, Any]:
        args: dict[str, Any] = {"queue": request.queue, "value": request.value}
        if ttl:
            args["ttl"] = ttl
        if request.verb == "add":
            args["unique"] = True
        return args

    # -- get ----------------------------------------------------------------------------------

    async def _get(self, request: wire.Get) -> bytes:
        """Each key in order; an error stops the request after the values already got (so no
        message taken for this client is dropped), followed by the error line."""
        blocks: list[bytes] = []
        for key in request.keys:
            try:
                block = await self._get_key(key)
            except RestMQError as e:
                return b"".join(blocks) + wire.error_reply(e)
            except defer.CancelledError:
                return b""
            except Exception:
                return b"".join(blocks) + wire.error_reply(
                    internal(None, "memcache get failed peer={peer}", peer=self.peer)
                )
            if block:
                blocks.append(block)
        return wire.encode_get(blocks)

    async def _get_key(self, key: wire.Key) -> bytes:
        queue = key.queue
        if key.close or key.abort:
            await self._settle(queue, "nack" if key.abort else "ack")
        if not key.fetches:
            return b""
        self.factory.cmd_get += 1
        if key.open and queue in self._open:
            raise BadRequest(f"queue {queue} already has an open message on this connection: close or abort it")
        try:
            if key.peek:
                message = await self._call("peek", queue=queue)
            else:
                message = await self._deliver(key)
        except Empty:
            self.factory.get_misses += 1
            return b""
        self.factory.get_hits += 1
        return wire.value_block(key.raw, wire.value_bytes(message["value"]))

    async def _deliver(self, key: wire.Key) -> Mapping[str, Any]:
        """Take, or reserve for ``/open``, waiting up to ``t=`` (cancelled if the client leaves)."""
        # After the client closed its side, nothing waits: nobody may be left to answer.
        args: dict[str, Any] = {"queue": key.queue, "wait": 0 if self._eof else key.timeout_ms / 1000}
        if key.open:
            args["lease"] = self.factory.lease
        d = self._call("reserve" if key.open else "take", **args)
        self._waiting = d if key.timeout_ms else None
        try:
            message = await d
        finally:
            self._waiting = None
        if key.open:
            held = _Open(message["receipt"], message["key"])
            if self._gone:  # reserved while the client left: give it back now
                await self._give_back(key.queue, held)
                raise Empty("client gone")
            self._open[key.queue] = held
            self._start_touching()
        return message

    async def _settle(self, queue: str, how: str) -> None:
        """Ack (``/close``) or nack (``/abort``) the open message of ``queue``; nothing if none."""
        held = self._open.pop(queue, None)
        if not self._open:
            self._stop_touching()
        if held is not None:
            await self._call(how, queue=queue, receipt=held.receipt)

    async def _give_back(self, queue: str, held: _Open) -> None:
        try:
            await self._call("nack", queue=queue, receipt=held.receipt)
        except RestMQError as e:
            log.warn("memcache could not give back {key} peer={peer}: {error}", key=held.key, peer=self.peer, error=e)
        except Exception:
            log.failure("memcache could not give back {key} peer={peer}", key=held.key, peer=self.peer)

    # -- keeping open messages hidden ---------------------------------------------------------

    def _start_touching(self) -> None:
        if self._toucher is None:
            self._toucher = task.LoopingCall(lambda: defer.ensureDeferred(self._touch_all()))
            self._toucher.clock = self.factory.clock
            self._toucher.start(self.factory.lease / 3, now=False).addErrback(
                lambda f: log.failure("memcache touch loop failed peer={peer}", f, peer=self.peer)
            )

    def _stop_touching(self) -> None:
        if self._toucher is not None and self._toucher.running:
            self._toucher.stop()
        self._toucher = None

    async def _touch_all(self) -> None:
        """Renew every open message's lease; one failure does not stop the others or the loop."""
        for queue, held in list(self._open.items()):
            try:
                await self._call("touch", queue=queue, receipt=held.receipt, lease=self.factory.lease)
            except RestMQError as e:
                log.warn("memcache touch failed key={key} peer={peer}: {error}", key=held.key, peer=self.peer, error=e)
                if e.code in LOST and self._open.get(queue) is held:
                    del self._open[queue]  # redelivered elsewhere: /close will have nothing to ack
            except Exception:
                log.failure("memcache touch failed key={key} peer={peer}", key=held.key, peer=self.peer)

    # -- admin --------------------------------------------------------------------------------

    async def _flush(self, queue: str | None) -> bytes:
        """``flush q`` purges one queue (Kestrel, answers END); ``flush_all`` every queue (OK)."""
        if queue is not None:
            await self._call("purge", queue=queue)
            return wire.END
        listed = await self._call("list")
        for name in listed["queues"]:
            await self._call("purge", queue=name)
        return wire.OK

    async def _stats(self) -> bytes:
        """memcached's general lines plus Kestrel-style ``queue_<name>_<stat>`` lines."""
        server = await self._call("stats", detail=True)
        names = sorted(server["queues"])
        found = [server["queues"][name] for name in names]
        f = self.factory
        pairs: list[tuple[str, Any]] = [
            ("pid", os.getpid()),
            ("uptime", int(server["uptime"])),
            ("time", int(f.clock.seconds())),
            ("version", f"restmq-{__version__}"),
            ("redis", server["redis"]),
            ("curr_connections", f.connections),
            ("total_connections", f.total_connections),
            ("cmd_get", f.cmd_get),
            ("cmd_set", f.cmd_set),
            ("get_hits", f.get_hits),
            ("get_misses", f.get_misses),
            ("curr_items", sum(q["length"]["ready"] for q in found)),
            ("queues", len(names)),
        ]
        for name, q in zip(names, found):
            length, counters = q["length"], q["counters"]
            pairs += [
                (f"queue_{name}_items", length["ready"]),
                (f"queue_{name}_open_transactions", length["reserved"]),
                (f"queue_{name}_delayed_items", length["delayed"]),
                (f"queue_{name}_dead_items", length["dead"]),
                (f"queue_{name}_total_items", counters["added"]),
                (f"queue_{name}_expired_items", counters["expired"]),
                (f"queue_{name}_subscribers", q["subscribers"]),
                (f"queue_{name}_state", q["state"]),
            ]
        return wire.stats_reply(pairs)


class MemcacheFactory(protocol.Factory["MemcacheProtocol"]):
    """Builds memcached connections on one dispatcher and keeps memcached's server-wide counters.

    ``max_value``: the largest ``set`` data block (``--max-message-size``). ``lease``: how long an
    ``/open`` message stays hidden between touches (tests shorten it). ``clock``: the reactor.
    """

    noisy = False  # the service logs "listening" itself

    def __init__(
        self,
        dispatcher: Dispatcher,
        *,
        max_value: int = 1 << 20,
        lease: float = 60.0,
        clock: IReactorTime | None = None,
    ) -> None:
        if clock is None:
            from twisted.internet import reactor

            clock = cast(IReactorTime, reactor)
        self.dispatcher = dispatcher
        self.max_value = max_value
        self.lease = lease
        #: An IReactorTime: the reactor, or a test clock.
        self.clock = clock
        #: Buffered bytes beyond which a connection stops reading while a request runs.
        self.high_water = max_value + wire.MAX_LINE
        self.connections = 0
        self.total_connections = 0
        self.cmd_get = self.cmd_set = self.get_hits = self.get_misses = 0

    def refusal(self, message: str) -> bytes:
        """How a connection over a connection limit is answered (see :mod:`restmq.limits`)."""
        return f"SERVER_ERROR limit_exceeded {message}\r\n".encode()

    def buildProtocol(self, addr: IAddress | None) -> MemcacheProtocol:
        return MemcacheProtocol(self)


def build(context: Context) -> MemcacheFactory:
    """The memcached listener factory (see restmq/frontends/registry.py)."""
    return MemcacheFactory(context.dispatcher, max_value=context.max_message_size, clock=context.reactor)


FRONTEND = FrontEnd(
    "memcache",
    (Option("memcache", None, "memcached text-protocol endpoint (off unless given), "
            "e.g. tcp:22133:interface=127.0.0.1."),),
    build,
)
