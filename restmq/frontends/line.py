"""The line protocol front end (docs/line.md): UTF-8 lines over TCP, one JSON answer line per request.

Framing only: :mod:`restmq.wire.line` says what a line means, the dispatcher runs it, and the
shared :class:`~restmq.frontends.pipeline.Pipeline` keeps the order. What this module owns is the
connection:

- Pipelining: requests are read ahead, but commands run one at a time in request order (so
  ``add q x`` then ``take q`` sees that x, as in a Redis pipeline) and answers are written in
  request order (``ping`` and errors are answered in their turn too). At most ``MAX_PENDING``
  answers may be outstanding; beyond that the connection stops reading until some are written, so
  one fast writer cannot make the server buffer without bound.
- ``quit`` (and an over-long line, which answers ``too_large``) close the connection once every
  earlier answer has been written; lines after it are ignored.
- ``subscribe QUEUE [MODE]`` takes effect in order: after every earlier request has been answered
  (reading pauses until then, so no later line can overtake it). It answers
  ``{"subscribed": QUEUE, "mode": MODE}``, then one JSON message per line as they arrive
  (``subscribe QUEUE reserve LEASE`` sets the lease). While subscribed, ``ping`` and ``quit`` still
  work and commands run as usual but are answered as ``{"reply": ANSWER}`` (errors as error lines with
  their ``error`` field), so they cannot be mistaken for messages: ``ack QUEUE RECEIPT`` acks a
  reserve-mode message on the connection that received it. ``subscribe`` and ``auth`` are refused
  while streaming. When the hub ends the stream (purge, shutdown) the last line is
  ``{"end": REASON}`` and the connection closes; a disconnect cancels the subscription.
- Flow control: the stream is the socket's push producer. A subscriber that stops reading pauses
  it, and the hub stops handing it messages (roundrobin, reserve) or ends it after a bound
  (broadcast), see :class:`restmq.streams.Sink`.
- ``auth TOKEN`` checks the token with the dispatcher (``unauthorized`` if unknown, ``bad_request``
  when the server has no tokens) and makes it the connection's principal for what follows, and only
  for that: each request is queued with the principal in force where it stands in the pipeline, and
  an ``auth`` (any credential change) takes effect in its turn, after every earlier request has
  run; reading pauses until then, so no later request is queued under the old principal.
- With an auth file (the factory's ``auth_timeout``, ``--header-timeout``), a connection that has
  not authenticated within that many seconds is told so (an ``unauthorized`` error line) and closed.
- A connection without a request for ``idle_timeout`` seconds (``--idle-timeout``) is told so
  (a ``limit_exceeded`` error line) and closed; a subscribed one is not idle.
- Commands already read keep running if the client goes away, so a fire-and-forget producer
  (``printf 'add q x\\n' | nc -N host 8889``) never loses its add; their answers are dropped.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any, cast

from twisted.internet import defer, protocol
from twisted.internet.interfaces import IAddress, IDelayedCall, IHalfCloseableProtocol, IReactorTime
from twisted.logger import Logger
from twisted.protocols.policies import TimeoutMixin
from twisted.python.failure import Failure
from zope.interface import implementer

from restmq.streams import Subscription
from restmq.frontends.connection import CLOSE_GRACE, INTERNAL, NewlineReceiver, close_gracefully
from restmq.frontends.flow import ProducerSink
from restmq.frontends.pipeline import Command, Pipeline
from restmq.errors import BadRequest, LimitExceeded, RestMQError, TooLarge, Unauthorized, internal
from restmq.wire import line as wire
from restmq.frontends.base import Context, FrontEnd
from restmq.options import Option, endpoint_or_off
from restmq.limits import Limits
from restmq.ports import Dispatcher, Principal

log = Logger()


class _StreamSink(ProducerSink):
    """The hub's handle on one subscribed connection; deaf once the stream has ended. It is the
    socket's producer (:class:`~restmq.frontends.flow.ProducerSink`)."""

    __slots__ = ("_proto", "open", "ready", "subscription")

    def __init__(self, proto: LineProtocol) -> None:
        self._proto = proto
        self.open = True
        self.ready = True
        self.subscription: Subscription | None = None

    def lost(self) -> None:
        self.open = False

    def deliver(self, message: dict[str, Any]) -> None:
        if self.open:
            self._proto.pipeline.answer(wire.encode(message))

    def close(self, reason: str) -> None:
        if self.open:
            self.open = False
            self._proto._stream_ended(reason)


@implementer(IHalfCloseableProtocol)
class LineProtocol(NewlineReceiver, TimeoutMixin):
    """One line-protocol connection (see the module docstring for its rules): line framing and
    JSON answers around a :class:`~restmq.frontends.pipeline.Pipeline`, which keeps the order.

    Half-closeable: a client that sends its commands and then closes its side (``printf … | nc``)
    still gets every answer before the connection closes. A subscriber that closes its side is
    taken as gone: its stream ends at once, so no message is handed to a client that left.
    """

    #: Seconds a closing connection gets to drain what was written before it is aborted.
    CLOSE_GRACE = CLOSE_GRACE
    _abort_later: IDelayedCall | None = None
    factory: LineFactory

    def __init__(self, dispatcher: Dispatcher, max_line: int) -> None:
        self.dispatcher = dispatcher
        self.MAX_LENGTH = max_line
        self.pipeline = Pipeline(
            self, internal=wire.encode_error(INTERNAL), dispatcher=dispatcher, frontend="line"
        )
        self._sink: _StreamSink | None = None
        self._subscription: Subscription | None = None
        self._stream_queue = ""

    @property
    def MAX_PENDING(self) -> int:  # noqa: N802 - the historical name
        """Answers that may be outstanding before the connection stops reading."""
        return self.pipeline.max_pending

    @MAX_PENDING.setter
    def MAX_PENDING(self, value: int) -> None:  # noqa: N802
        self.pipeline.max_pending = value

    def callLater(self, period: float, func: Callable[[], None]) -> IDelayedCall:
        """TimeoutMixin's clock: the factory's (the reactor, or a test's clock)."""
        return self.factory.clock.callLater(period, func)

    @property
    def principal(self) -> Principal:
        """Who the client is (the token of its last accepted ``auth``)."""
        return self.pipeline.principal

    # -- the pipeline's host ------------------------------------------------------------------

    def write(self, data: bytes) -> None:
        self.transport.write(data)

    def reading(self, pause: bool) -> None:
        if not self.transport.disconnecting:
            self.set_reading(pause)

    def close(self) -> None:
        self._cancel_stream()
        self._abort_later = close_gracefully(self.transport, self.factory.clock, self.CLOSE_GRACE)

    # -- reading ------------------------------------------------------------------------------

    def connectionMade(self) -> None:
        super().connectionMade()
        self.setTimeout(self.factory.idle_timeout or None)
        self.pipeline.require_auth(self.factory.clock, self.factory.auth_timeout, self._auth_expired)

    def authenticated(self, token: str) -> None:
        """A credential was accepted: it is the principal of the requests read from now on."""
        self.pipeline.authenticated(token)

    def _auth_expired(self) -> None:
        """No accepted credential within ``auth_timeout`` (an auth file is in force): a connection
        that cannot do anything yet must not hold a connection slot, so say why and close."""
        limits = self.factory.limits
        if limits is not None:
            limits.rejected["auth_timeout"] += 1
        log.info("{kind} client did not authenticate peer={peer}", kind=self.kind, peer=self.peer)
        self.pipeline.quit(
            wire.encode_error(Unauthorized(f"not authenticated within {self.factory.auth_timeout:g} s"))
        )

    def dataReceived(self, data: bytes) -> None:
        self.resetTimeout()
        with self.pipeline.reading_batch():
            super().dataReceived(data)

    def timeoutConnection(self) -> None:
        """Idle for ``--idle-timeout``: close, unless it streams or still has work in flight."""
        if self._subscription is not None or not self.pipeline.idle:
            self.resetTimeout()
            return
        limits = self.factory.limits
        if limits is not None:
            limits.rejected["idle_timeout"] += 1
        log.debug("line client idle peer={peer}", peer=self.peer)
        self.pipeline.quit(wire.encode_error(LimitExceeded(f"idle for {self.factory.idle_timeout:g} s")))

    def got_line(self, line: bytes) -> None:
        if self.pipeline.closing:
            return
        request = wire.parse_line(line)
        if self._subscription is not None:
            self._while_streaming(request)
        elif isinstance(request, wire.Call):
            self._call(request)
        elif isinstance(request, wire.Ping):
            self.pipeline.answer(wire.encode(wire.PONG))
        elif isinstance(request, wire.Quit):
            self.pipeline.quit(wire.encode(wire.BYE))
        elif isinstance(request, wire.Subscribe):
            self.pipeline.at_turn(partial(self._start_stream, request, self.pipeline.principal))
        elif isinstance(request, wire.Auth):
            self.pipeline.call(partial(self._auth, request.token), credential=True)
        else:
            self.pipeline.answer(wire.encode_error(request.error))

    def lineLengthExceeded(self, line: bytes) -> None:
        """Answer ``too_large`` after the earlier answers, then close: the rest of an over-long line
        cannot be told apart from the next request."""
        if not self.pipeline.closing:
            self.pipeline.quit(wire.encode_error(TooLarge(f"line is longer than {self.MAX_LENGTH} bytes")))

    # -- requests -----------------------------------------------------------------------------

    def _call(self, request: wire.Call, *, reply: bool = False) -> None:
        """Queue a command; ``reply``: answer it as ``{"reply": …}`` (on a streaming connection)."""
        self.pipeline.command(Command(request.name, request.args, partial(self._finish, request.name, reply)))

    def _finish(self, name: str, reply: bool, outcome: Any) -> bytes:
        if isinstance(outcome, Failure):
            return self._encode_failure(outcome, name)
        return self._encode_answer(outcome, reply)

    def _auth(self, token: str, principal: Principal) -> defer.Deferred[bytes]:
        try:
            self.dispatcher.authenticate(token)
        except RestMQError as e:
            return defer.succeed(wire.encode_error(e))
        self.authenticated(token)
        return defer.succeed(wire.encode({"auth": True}))

    def _encode_answer(self, answer: Any, reply: bool) -> bytes:
        try:
            return wire.encode({"reply": answer} if reply else answer)
        except Exception:
            return wire.encode_error(internal(None, "line answer is not JSON peer={peer}", peer=self.peer))

    def _encode_failure(self, failure: Failure, name: str) -> bytes:
        if isinstance(failure.value, RestMQError):
            return wire.encode_error(failure.value)
        return wire.encode_error(internal(failure, "line command {cmd} failed peer={peer}", cmd=name, peer=self.peer))

    # -- streams ------------------------------------------------------------------------------

    def _start_stream(self, request: wire.Subscribe, principal: Principal) -> None:
        """Runs when the subscribe's turn comes: every earlier request has been answered."""
        ack = self.pipeline.slot()  # messages delivered during subscribe() queue up behind the answer
        sink = _StreamSink(self)
        try:
            subscription = self.dispatcher.subscribe(
                request.queue, sink, mode=request.mode, lease=request.lease, principal=principal
            )
        except RestMQError as e:
            sink.open = False
            self.pipeline.fill(ack, wire.encode_error(e))
        except Exception:
            sink.open = False
            self.pipeline.fill(ack, wire.encode_error(internal(None, "line subscribe failed peer={peer}", peer=self.peer)))
        else:
            self._sink, self._subscription, self._stream_queue = sink, subscription, request.queue
            sink.subscription = subscription
            self.transport.registerProducer(sink, True)
            log.debug("line stream started queue={queue} peer={peer}", queue=request.queue, peer=self.peer)
            self.pipeline.fill(ack, wire.encode({"subscribed": request.queue, "mode": request.mode}))

    def _while_streaming(self, request: wire.Request) -> None:
        if isinstance(request, wire.Ping):
            self.pipeline.answer(wire.encode(wire.PONG))
        elif isinstance(request, wire.Quit):
            self._cancel_stream()
            self.pipeline.quit(wire.encode(wire.BYE))
        elif isinstance(request, wire.Call):
            self._call(request, reply=True)
        elif isinstance(request, wire.Invalid):
            self.pipeline.answer(wire.encode_error(request.error))
        else:
            self.pipeline.answer(
                wire.encode_error(
                    BadRequest(f"this connection already streams queue {self._stream_queue}")
                )
            )

    def _stream_ended(self, reason: str) -> None:
        """The hub ended the stream (purge, shutdown): say why, then close."""
        self._cancel_stream()
        if not self.pipeline.closing:
            self.pipeline.quit(wire.encode({"end": reason}))

    def _cancel_stream(self) -> None:
        if self._sink is not None:
            self._sink.open = False
            if not self.pipeline.gone:
                self.transport.unregisterProducer()
        if self._subscription is not None:
            self._subscription.cancel()
            log.debug("line stream ended queue={queue} peer={peer}", queue=self._stream_queue, peer=self.peer)
        self._sink = self._subscription = None

    def readConnectionLost(self) -> None:
        """The client sent everything it will: answer what is pending, then close."""
        if self._subscription is not None:
            self._cancel_stream()
            self.transport.loseConnection()
        else:
            self.pipeline.finish()

    def writeConnectionLost(self) -> None:
        self.pipeline.gone = True
        self.transport.loseConnection()

    def connectionLost(self, reason: Failure = protocol.connectionDone) -> None:
        self.pipeline.lost()
        self.setTimeout(None)
        if self._abort_later is not None and self._abort_later.active():
            self._abort_later.cancel()
        self._cancel_stream()
        super().connectionLost(reason)


class LineFactory(protocol.Factory["LineProtocol"]):
    """Builds line-protocol connections on one dispatcher; ``max_line`` is the longest line in bytes
    (``--max-message-size``)."""

    noisy = False  # the service logs "listening" / "pub/sub connected" itself

    def __init__(
        self,
        dispatcher: Dispatcher,
        *,
        max_line: int = 1 << 20,
        clock: IReactorTime | None = None,
        idle_timeout: float = 300.0,
        auth_timeout: float = 0.0,
        limits: Limits | None = None,
    ) -> None:
        self.dispatcher = dispatcher
        self.max_line = max_line
        if clock is None:
            from twisted.internet import reactor

            clock = cast(IReactorTime, reactor)
        self.clock = clock
        #: Seconds a connection may sit without a request before it is closed (0: never).
        self.idle_timeout = idle_timeout
        #: Seconds a connection may stay without an accepted ``auth`` (0: forever; set with an
        #: auth file, where such a connection can do nothing).
        self.auth_timeout = auth_timeout
        #: Where refusals are counted (:class:`restmq.limits.Limits`), if anywhere.
        self.limits = limits

    def refusal(self, message: str) -> bytes:
        """How a connection over a connection limit is answered (see :mod:`restmq.limits`)."""
        return wire.encode_error(LimitExceeded(message))

    def buildProtocol(self, addr: IAddress | None) -> LineProtocol:
        proto = LineProtocol(self.dispatcher, self.max_line)
        proto.factory = self
        return proto


def build(context: Context) -> LineFactory:
    """The line protocol's listener factory (see restmq/frontends/registry.py)."""
    return LineFactory(
        context.dispatcher, max_line=context.max_message_size, clock=context.reactor,
        idle_timeout=context.idle_timeout, auth_timeout=context.auth_timeout, limits=context.limits,
    )


FRONTEND = FrontEnd(
    "line",
    (Option("line", "tcp:8889:interface=127.0.0.1",
            "Line-protocol endpoint, or 'none'. Off when the original --port/--listen are given without it.",
            endpoint_or_off),),
    build,
)
