"""WebSocket streams: ``/ws/<queue>`` on the HTTP port, through autobahn's ``WebSocketResource``.

The upgrade request is judged like every route before any WebSocket talk: the dispatcher subscribes
(queue name, ``?mode=take|reserve``, ``?lease=S``, rights) and a refusal is the usual JSON error
(400…); a plain GET without ``Upgrade: websocket`` is a JSON 426. Then the connection is handed to
autobahn; messages arriving during the handshake are held and sent on open.

Frames, all text, all JSON:

- server → client: each message as its JSON (with ``receipt`` in reserve mode); the answer to a
  client command, ``{"reply": <the command's answer>}`` or ``{"error", "code"}``; and, when the
  queue is purged or the server shuts down, ``{"end": "purged"|"shutdown"}`` followed by a close
  with code 1000.
- client → server: a JSON command as ``POST /queue`` takes it, ``{"cmd": …, …}``; ``queue``
  defaults to the stream's, so ``{"cmd": "ack", "receipt": "…"}`` acks a streamed message. Replies
  come in the order the commands finish. A frame that is JSON but not a good command (not an
  object, unknown, nested too deep, NaN…) gets an error frame and the stream goes on.

Protocol errors end the connection with a close frame carrying the RFC 6455 code, never a bare TCP
reset: 1002 (protocol error: an unmasked or malformed frame), 1007 (invalid payload: a text frame
that is not UTF-8, or a frame that is not JSON at all, after its ``bad_request`` error frame), 1009
(a message over the body limit, ``--max-message-size`` x 3 + 64 KiB).

A disconnect (clean or not) cancels the subscription at once; autobahn's ping (every
:data:`AUTO_PING` seconds) finds peers that vanished without closing their socket.

Flow control: once open, the sink replaces twisted.web's channel as the socket's push producer, so a
client that stops reading pauses it (the hub then stops taking messages for it in roundrobin and
reserve mode, and ends a broadcast stream after a bound, see :class:`restmq.streams.Sink`).
"""

from __future__ import annotations

from typing import Any, cast

from autobahn.twisted.resource import WebSocketResource
from autobahn.twisted.websocket import WebSocketServerFactory, WebSocketServerProtocol
from twisted.internet.interfaces import IAddress, IConsumer
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request

from restmq import commands, compat, values
from restmq.auth import Caller
from restmq.errors import BadRequest, NotFound, RestMQError, internal
from restmq.frontends.http.common import Endpoint, Front, queue_name, send_error
from restmq.frontends.flow import ProducerSink
from restmq.streams import Subscription
from restmq.frontends.http.stream import stream_options
from restmq.wire.chunked import dumps
from restmq.wire.line import json_command

log = Logger()

#: Seconds between autobahn's pings, and how long a pong may take before the peer counts as gone.
AUTO_PING = 15.0
#: WebSocket close code for a normal end (the queue was purged, the server stops).
NORMAL_CLOSE = 1000
#: Close code for a frame whose payload is not what this endpoint reads (RFC 6455 7.4.1).
INVALID_PAYLOAD = 1007


class WSSink(ProducerSink):
    """The hub's handle on one WebSocket: holds messages until the handshake is done, then sends
    one text frame each; deaf once the stream has ended either way. It is the socket's producer:
    ``ready`` is False while the client does not drain what was sent."""

    __slots__ = ("queue", "principal", "front", "subscription", "open", "protocol", "held", "ended", "ready")

    def __init__(self, front: Front, queue: str, principal: Caller) -> None:
        self.front, self.queue, self.principal = front, queue, principal
        self.subscription: Subscription | None = None
        self.open = True
        self.protocol: RestMQWebSocket | None = None
        self.held: list[dict[str, Any]] = []
        self.ended: str | None = None  # the hub ended the stream before the handshake finished
        self.ready = True

    def deliver(self, message: dict[str, Any]) -> None:
        if not self.open:
            return
        if self.protocol is None:
            self.held.append(message)
        else:
            self.protocol.send(message)

    def close(self, reason: str) -> None:
        """The hub ends the stream (``purged``, ``shutdown``): ``{"end": reason}``, close 1000."""
        if not self.open:
            return
        self.open = False
        self._cancel()
        log.debug("WebSocket stream ended queue={queue} reason={reason}", queue=self.queue, reason=reason)
        if self.protocol is None:
            self.ended = reason
        else:
            self.protocol.end(reason)

    def attach(self, protocol: RestMQWebSocket) -> None:
        """The handshake is done: send what was held (or the end that came meanwhile)."""
        self.protocol = protocol
        held, self.held = self.held, []
        for message in held:
            protocol.send(message)
        if self.ended is not None:
            protocol.end(self.ended)

    def lost(self) -> None:
        """The connection is gone: unsubscribe now."""
        self.held = []
        if self.open:
            self.open = False
            self._cancel()
            log.debug("WebSocket client left queue={queue}", queue=self.queue)

    def _cancel(self) -> None:
        if self.subscription is not None:
            self.subscription.cancel()


class RestMQWebSocket(WebSocketServerProtocol):
    """One WebSocket connection streaming one queue; ``sink`` is set before the handshake."""

    sink: WSSink

    def onOpen(self) -> None:
        # twisted.web's channel registered itself as the socket's producer; the stream takes over.
        # A TCP or TLS transport is also the socket's consumer (ITransport does not say so).
        transport = cast("IConsumer | None", self.transport)
        if transport is not None:
            transport.unregisterProducer()  # a no-op when none is registered (TCP and TLS alike)
            transport.registerProducer(self.sink, True)
        self.sink.attach(self)

    def onClose(self, wasClean: bool, code: int | None, reason: str | None) -> None:
        sink = getattr(self, "sink", None)
        if sink is not None:
            sink.lost()

    def send(self, obj: Any) -> None:
        if self.state == self.STATE_OPEN:
            self.sendMessage(dumps(obj), isBinary=False)

    def end(self, reason: str) -> None:
        self.send({"end": reason})
        if self.state == self.STATE_OPEN:
            self.sendClose(code=NORMAL_CLOSE)

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        """A client command: run it with the stream's queue filled in, answer with one frame."""
        sink = self.sink
        try:
            name, args = command_of(payload, sink.queue)
        except values.NotJSON as e:
            self.send(e.to_dict())  # why, then the close code that says the same
            # sendClose() takes only 1000 and 3000-4999; protocol codes go through the frame itself.
            self.sendCloseFrame(code=INVALID_PAYLOAD, reasonUtf8=b"frames must be JSON commands")
            return
        except RestMQError as e:
            self.send(e.to_dict())
            return
        d = sink.front.dispatcher.execute(name, args, sink.principal, frontend="ws")
        d.addCallbacks(lambda answer: self.send({"reply": answer}), self._failed)

    def _failed(self, failure: Failure) -> None:
        if isinstance(failure.value, RestMQError):
            self.send(failure.value.to_dict())
            return
        self.send(internal(failure, "WebSocket command failed queue={queue}", queue=self.sink.queue).to_dict())


def command_of(payload: bytes, queue: str) -> tuple[str, dict[str, Any]]:
    """A client frame as (command, arguments), ``queue`` filled in where the command takes one and
    the frame names none. Raises ``bad_request`` for a frame that is not a JSON command."""
    call = json_command(values.loads(payload, "frame"))
    args = dict(compat.json_command_args(call.name, call.args))
    command = commands.COMMANDS.get(call.name)
    if command is not None and "queue" not in args and any(a.name == "queue" for a in command.args):
        args["queue"] = queue
    return call.name, args


class _ForOneRequest:
    """Hands the upgrade's sink to the protocol autobahn builds for it (a factory per request)."""

    def __init__(self, factory: WebSocketServerFactory, sink: WSSink) -> None:
        self.factory, self.sink = factory, sink

    def buildProtocol(self, addr: IAddress | None) -> RestMQWebSocket | None:
        proto = self.factory.buildProtocol(addr)
        if proto is None:
            return None
        assert isinstance(proto, RestMQWebSocket)  # make_factory's protocol
        proto.sink = self.sink
        return proto


def make_factory(max_frame: int, auto_ping: float = AUTO_PING) -> WebSocketServerFactory:
    """The one autobahn factory of the HTTP port."""
    factory = WebSocketServerFactory()
    factory.protocol = RestMQWebSocket
    factory.setProtocolOptions(
        failByDrop=False,  # a protocol error is answered with its close code (1002, 1007, 1009)
        maxMessagePayloadSize=max_frame,
        maxFramePayloadSize=max_frame,
        autoPingInterval=auto_ping,
        autoPingTimeout=auto_ping,
    )
    return factory


class WebSockets(Endpoint):
    """``/ws``: its children are the queues' WebSocket streams."""

    def __init__(self, front: Front, auto_ping: float = AUTO_PING) -> None:
        super().__init__(front)
        self.factory = make_factory(front.body_limit, auto_ping)

    def getChild(self, path: bytes, request: Request) -> Resource:
        return WebSocketQueue(self, queue_name(path))

    def render_GET(self, request: Request) -> int:
        raise NotFound("name a queue: /ws/<queue>")


class WebSocketQueue(Endpoint):
    """``/ws/<queue>``: subscribe, then let autobahn take the connection over."""

    head_ok = False

    def __init__(self, parent: WebSockets, queue: str) -> None:
        super().__init__(parent.front)
        self.parent, self.queue = parent, queue

    def render_GET(self, request: Request) -> bytes | int:
        if not self.queue:
            raise NotFound("name a queue: /ws/<queue>")
        options = stream_options(request)
        upgrade = (request.getHeader(b"upgrade") or b"").lower()
        if upgrade != b"websocket":
            request.setHeader(b"upgrade", b"websocket")
            send_error(request, BadRequest("connect with a WebSocket client"), status=426)
            return NOT_DONE_YET
        principal = self.front.principal(request, "websocket")
        sink = WSSink(self.front, self.queue, principal)
        try:
            sink.subscription = self.front.dispatcher.subscribe(
                self.queue, sink, principal=principal, **options
            )
        except RestMQError as e:
            sink.open = False
            send_error(request, e)
            return NOT_DONE_YET
        log.debug("WebSocket client joined queue={queue}", queue=self.queue)
        return WebSocketResource(_ForOneRequest(self.parent.factory, sink)).render(request)
