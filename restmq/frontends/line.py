"""The line protocol front end (docs/line.md): UTF-8 lines over TCP, one JSON answer line per request.

Framing only: :mod:`restmq.wire.line` says what a line means, the dispatcher runs it. What this
module owns is the connection:

- Pipelining: requests are read ahead, but commands run one at a time in request order (so
  ``add q x`` then ``take q`` sees that x, as in a Redis pipeline) and answers are written in
  request order (a queue of slots; ``ping`` and errors are answered in their turn too). At most
  ``MAX_PENDING`` answers may be outstanding; beyond that the connection stops reading until some
  are written, so one fast writer cannot make the server buffer without bound.
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

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

from twisted.internet import defer, protocol
from twisted.internet.interfaces import IAddress, IHalfCloseableProtocol
from twisted.logger import Logger
from twisted.protocols.basic import LineReceiver
from twisted.protocols.policies import TimeoutMixin
from twisted.python.failure import Failure
from zope.interface import implementer

from restmq.streams import Subscription
from restmq.frontends.flow import ProducerSink
from restmq.errors import BadRequest, LimitExceeded, RestMQError, TooLarge, Unauthorized, internal
from restmq.wire import line as wire
from restmq.frontends.base import Context, FrontEnd
from restmq.options import Option, endpoint_or_off

log = Logger()


def describe_peer(address: IAddress) -> tuple[str, str]:
    """``(host, label)`` of a peer address: host for naming things (``127.0.0.1``), label for logs
    (``127.0.0.1:5000``, ``[::1]:5000``). Non-IP transports (unix sockets) have host ``local``."""
    host = getattr(address, "host", None)
    port = getattr(address, "port", None)
    if not isinstance(host, str):
        name = getattr(address, "name", None)
        return "local", f"unix:{name.decode(errors='replace') if isinstance(name, bytes) else name}"
    return host, (f"[{host}]:{port}" if ":" in host else f"{host}:{port}")


class NewlineReceiver(LineReceiver):
    """Framing shared by the line protocol and the syslog receiver: lines end in ``\\n``, a trailing
    ``\\r`` is dropped, and connects/disconnects are logged at debug with the peer."""

    delimiter = b"\n"
    #: A TCP/TLS/unix transport: ``disconnecting``, ``getPeer`` and producer methods are used.
    transport: Any
    #: What the logs call this kind of client.
    kind = "line"
    peer_host = "unknown"
    peer = "unknown"

    def connectionMade(self) -> None:
        self.peer_host, self.peer = describe_peer(self.transport.getPeer())
        log.debug("{kind} client connected peer={peer}", kind=self.kind, peer=self.peer)

    def connectionLost(self, reason: Failure = protocol.connectionDone) -> None:
        log.debug(
            "{kind} client disconnected peer={peer}: {why}",
            kind=self.kind,
            peer=self.peer,
            why=reason.getErrorMessage(),
        )

    def lineReceived(self, line: bytes) -> None:
        self.line_received(line[:-1] if line.endswith(b"\r") else line)

    def line_received(self, line: bytes) -> None:
        """One line without its terminator."""
        raise NotImplementedError

    _paused = False

    def set_reading(self, want_pause: bool) -> None:
        """Pause or resume reading the socket (back-pressure on a client that sends too much)."""
        if want_pause and not self._paused:
            self._paused = True
            self.pauseProducing()
        elif not want_pause and self._paused:
            self._paused = False
            self.resumeProducing()


@dataclass(eq=False)
class _Slot:
    """One answer's place in the output order: its bytes once known, and what to do after writing."""

    data: bytes = b""
    ready: bool = False
    then: Callable[[], None] | None = None

    def fill(self, data: bytes) -> None:
        self.data, self.ready = data, True


@dataclass(eq=False)
class _Queued:
    """One request waiting for its turn: where its answer goes, and the principal in force at its
    position in the pipeline (captured when it was queued, so a later ``auth`` cannot reach it)."""

    request: Any
    slot: _Slot
    reply: bool
    principal: Any
    credential: bool


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
            self._proto._answer_now(wire.encode(message))

    def close(self, reason: str) -> None:
        if self.open:
            self.open = False
            self._proto._stream_ended(reason)


@implementer(IHalfCloseableProtocol)
class LineProtocol(NewlineReceiver, TimeoutMixin):
    """One line-protocol connection (see the module docstring for its rules).

    Half-closeable: a client that sends its commands and then closes its side (``printf … | nc``)
    still gets every answer before the connection closes. A subscriber that closes its side is
    taken as gone: its stream ends at once, so no message is handed to a client that left.

    Other request/answer protocols reuse the ordering by subclassing (the RESP front end does):
    they replace the framing (``dataReceived`` parses and calls ``_call(Call)`` per request,
    ``_call(Call, credential=True)`` for one that may change the principal, or ``_quit(last_bytes)``
    to answer and close after every earlier answer, and stops while ``_paused``), the encoding
    (``_encode_answer(answer, reply)``, ``_encode_failure(failure, name)``, ``_encode_error(error)``)
    and, if they like, the dispatcher (any object with ``execute(name, args, principal,
    frontend=)``; it calls :meth:`authenticated` when a credential is accepted). ``_closing`` and
    ``_gone`` say whether more requests and answers make sense.
    """

    #: Answers that may be outstanding before the connection stops reading.
    MAX_PENDING = 1000
    #: Seconds a closing connection gets to drain what was written before it is aborted.
    CLOSE_GRACE = 10.0
    _abort_later: Any = None
    _auth_deadline: Any = None
    factory: LineFactory

    def __init__(self, dispatcher: Any, max_line: int) -> None:
        self.dispatcher = dispatcher
        self.MAX_LENGTH = max_line
        #: Who the client is for the dispatcher's authorization: the token of its last accepted
        #: ``auth``; requests read from now on are queued with it.
        self.principal: Any = None
        self._out: deque[_Slot] = deque()
        self._calls: deque[_Queued] = deque()
        self._credentials = 0  # credential requests queued or running: reading waits for them
        self._running = False  # a command is with the dispatcher
        self._dispatching = False
        self._flushing = False
        self._closing = False  # quit or over-long line seen: ignore what follows
        self._gone = False  # connection lost: write nothing more
        self._held = False  # a subscribe is waiting for its turn
        self._sink: _StreamSink | None = None
        self._subscription: Subscription | None = None
        self._stream_queue = ""

    # -- reading ------------------------------------------------------------------------------

    def connectionMade(self) -> None:
        super().connectionMade()
        self.setTimeout(self.factory.idle_timeout or None)
        if self.factory.auth_timeout:
            self._auth_deadline = self.factory.clock.callLater(self.factory.auth_timeout, self._auth_expired)

    def authenticated(self, token: Any) -> None:
        """A credential was accepted: it is the principal of the requests read from now on."""
        self.principal = token
        if self._auth_deadline is not None and self._auth_deadline.active():
            self._auth_deadline.cancel()

    def _auth_expired(self) -> None:
        """No accepted credential within ``auth_timeout`` (an auth file is in force): a connection
        that cannot do anything yet must not hold a connection slot, so say why and close."""
        if self.principal is not None or self._closing or self._gone:
            return
        limits = self.factory.limits
        if limits is not None:
            limits.rejected["auth_timeout"] += 1
        log.info("{kind} client did not authenticate peer={peer}", kind=self.kind, peer=self.peer)
        self._quit(self._encode_error(Unauthorized(f"not authenticated within {self.factory.auth_timeout:g} s")))

    def dataReceived(self, data: bytes) -> None:
        self.resetTimeout()
        super().dataReceived(data)

    def timeoutConnection(self) -> None:
        """Idle for ``--idle-timeout``: close, unless it streams or still has work in flight."""
        if self._subscription is not None or self._out or self._calls or self._running or self._closing:
            self.resetTimeout()
            return
        limits = self.factory.limits
        if limits is not None:
            limits.rejected["idle_timeout"] += 1
        log.debug("line client idle peer={peer}", peer=self.peer)
        self._quit(wire.encode_error(LimitExceeded(f"idle for {self.factory.idle_timeout:g} s")))

    def line_received(self, line: bytes) -> None:
        if self._closing:
            return
        request = wire.parse_line(line)
        if self._subscription is not None:
            self._while_streaming(request)
        elif isinstance(request, wire.Call):
            self._call(request)
        elif isinstance(request, wire.Ping):
            self._answer_now(wire.encode(wire.PONG))
        elif isinstance(request, wire.Quit):
            self._quit(wire.encode(wire.BYE))
        elif isinstance(request, wire.Subscribe):
            self._held = True
            self._push(_Slot(ready=True, then=partial(self._start_stream, request, self.principal)))
        elif isinstance(request, wire.Auth):
            self._call(request, credential=True)
        else:
            self._answer_now(wire.encode_error(request.error))

    def lineLengthExceeded(self, line: bytes) -> None:
        """Answer ``too_large`` after the earlier answers, then close: the rest of an over-long line
        cannot be told apart from the next request."""
        if not self._closing:
            self._quit(wire.encode_error(TooLarge(f"line is longer than {self.MAX_LENGTH} bytes")))

    def _update_reading(self) -> None:
        """Pause reading while a subscribe or a credential waits for its turn or too many answers
        are outstanding."""
        if self._gone or self._closing or self.transport.disconnecting:
            return
        self.set_reading(self._held or self._credentials > 0 or len(self._out) >= self.MAX_PENDING)

    # -- requests -----------------------------------------------------------------------------

    def _call(self, request: wire.Call | wire.Auth, *, reply: bool = False, credential: bool = False) -> None:
        """Queue a request with the principal in force here; ``reply``: answer it as ``{"reply": …}``
        (on a streaming connection); ``credential``: it may change the principal, so reading waits
        until it has run and later requests are queued under what it set."""
        if credential:
            self._credentials += 1
        slot = _Slot()
        self._push(slot)
        self._calls.append(_Queued(request, slot, reply, self.principal, credential))
        self._next_call()

    def _next_call(self) -> None:
        """Run queued commands one at a time, so their effects happen in request order too
        (``add q x`` then ``take q`` takes that x), like a Redis pipeline."""
        if self._dispatching:
            return  # a command finished synchronously inside the loop below: it continues
        self._dispatching = True
        try:
            while self._calls and not self._running:
                queued = self._calls.popleft()
                self._running = True
                d = self._execute(queued.request, queued.principal)
                d.addCallbacks(
                    self._encode_answer,
                    self._encode_failure,
                    callbackArgs=(queued.reply,),
                    errbackArgs=(getattr(queued.request, "name", "auth"),),
                )
                d.addCallback(self._call_done, queued)
        finally:
            self._dispatching = False

    def _execute(self, request: wire.Call | wire.Auth, principal: Any) -> defer.Deferred[Any]:
        if isinstance(request, wire.Auth):
            return defer.maybeDeferred(self._auth, request.token)
        return self.dispatcher.execute(request.name, request.args, principal, frontend="line")

    def _auth(self, token: str) -> dict[str, Any]:
        self.dispatcher.authenticate(token)
        self.authenticated(token)
        return {"auth": True}

    def _call_done(self, data: bytes, queued: _Queued) -> None:
        self._running = False
        if queued.credential:
            self._credentials -= 1
        queued.slot.fill(data)
        self._flush()
        self._next_call()

    def _encode_answer(self, answer: Any, reply: bool) -> bytes:
        try:
            return wire.encode({"reply": answer} if reply else answer)
        except Exception:
            return wire.encode_error(internal(None, "line answer is not JSON peer={peer}", peer=self.peer))

    def _encode_failure(self, failure: Failure, name: str) -> bytes:
        if isinstance(failure.value, RestMQError):
            return self._encode_error(failure.value)
        return self._encode_error(internal(failure, "line command {cmd} failed peer={peer}", cmd=name, peer=self.peer))

    def _encode_error(self, error: RestMQError) -> bytes:
        return wire.encode_error(error)

    def _answer_now(self, data: bytes) -> None:
        """An answer (or stream line) known now, written in order after those still pending."""
        self._push(_Slot(data, ready=True))

    def _quit(self, last: bytes) -> None:
        self._closing = True
        self._push(_Slot(last, ready=True, then=self._close))

    def _close(self) -> None:
        self._cancel_stream()
        self.transport.loseConnection()
        # loseConnection waits for the written data to drain: a client that never reads again
        # (a dropped slow consumer) would hold the socket forever.
        self._abort_later = self.factory.clock.callLater(self.CLOSE_GRACE, self.transport.abortConnection)

    # -- writing in order ---------------------------------------------------------------------

    def _push(self, slot: _Slot) -> None:
        self._out.append(slot)
        self._flush()

    def _flush(self) -> None:
        """Write every answer at the head of the queue that is ready; stop at the first pending."""
        if self._flushing:
            return  # the outer loop picks up whatever was pushed meanwhile
        self._flushing = True
        try:
            while self._out and self._out[0].ready:
                slot = self._out.popleft()
                if self._gone:
                    continue
                if slot.data:
                    self.transport.write(slot.data)
                if slot.then is not None:
                    slot.then()
        finally:
            self._flushing = False
        self._update_reading()

    # -- streams ------------------------------------------------------------------------------

    def _start_stream(self, request: wire.Subscribe, principal: Any) -> None:
        """Runs when the subscribe's turn comes: every earlier request has been answered."""
        self._held = False
        ack = _Slot()
        self._push(ack)  # messages delivered during subscribe() queue up behind the answer
        sink = _StreamSink(self)
        try:
            subscription = self.dispatcher.subscribe(
                request.queue, sink, mode=request.mode, lease=request.lease, principal=principal
            )
        except RestMQError as e:
            sink.open = False
            ack.fill(wire.encode_error(e))
        except Exception:
            sink.open = False
            ack.fill(wire.encode_error(internal(None, "line subscribe failed peer={peer}", peer=self.peer)))
        else:
            self._sink, self._subscription, self._stream_queue = sink, subscription, request.queue
            sink.subscription = subscription
            self.transport.registerProducer(sink, True)
            log.debug("line stream started queue={queue} peer={peer}", queue=request.queue, peer=self.peer)
            ack.fill(wire.encode({"subscribed": request.queue, "mode": request.mode}))
        self._flush()

    def _while_streaming(self, request: wire.Request) -> None:
        if isinstance(request, wire.Ping):
            self._answer_now(wire.encode(wire.PONG))
        elif isinstance(request, wire.Quit):
            self._cancel_stream()
            self._quit(wire.encode(wire.BYE))
        elif isinstance(request, wire.Call):
            self._call(request, reply=True)
        elif isinstance(request, wire.Invalid):
            self._answer_now(wire.encode_error(request.error))
        else:
            self._answer_now(
                wire.encode_error(
                    BadRequest(f"this connection already streams queue {self._stream_queue}")
                )
            )

    def _stream_ended(self, reason: str) -> None:
        """The hub ended the stream (purge, shutdown): say why, then close."""
        self._cancel_stream()
        if not self._closing:
            self._quit(wire.encode({"end": reason}))

    def _cancel_stream(self) -> None:
        if self._sink is not None:
            self._sink.open = False
            if not self._gone:
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
        elif not self._closing:
            self._closing = True
            self._push(_Slot(b"", ready=True, then=self._close))

    def writeConnectionLost(self) -> None:
        self._gone = True
        self.transport.loseConnection()

    def connectionLost(self, reason: Failure = protocol.connectionDone) -> None:
        self._gone = True
        self.setTimeout(None)
        for later in (self._abort_later, self._auth_deadline):
            if later is not None and later.active():
                later.cancel()
        self._cancel_stream()
        self._out.clear()
        super().connectionLost(reason)


class LineFactory(protocol.Factory):
    """Builds line-protocol connections on one dispatcher; ``max_line`` is the longest line in bytes
    (``--max-message-size``)."""

    noisy = False  # the service logs "listening" / "pub/sub connected" itself

    def __init__(
        self,
        dispatcher: Any,
        *,
        max_line: int = 1 << 20,
        clock: Any = None,
        idle_timeout: float = 300.0,
        auth_timeout: float = 0.0,
        limits: Any = None,
    ) -> None:
        self.dispatcher = dispatcher
        self.max_line = max_line
        if clock is None:
            from twisted.internet import reactor as clock
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
        proto.callLater = self.clock.callLater  # type: ignore[method-assign]  (TimeoutMixin's clock)
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
