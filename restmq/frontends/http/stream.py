"""COMET: ``GET /c/<queue>``, a long-lived chunked ``text/plain`` response, one message per line.

Each message is written the moment the hub delivers it (``request.write``, no buffering) as its
JSON (it holds the original's ``key`` and ``value``) + CRLF, or ``NAME(<json>);`` + CRLF with
``callback=NAME``. The subscription is made before the queue exists if need be, honours the queue's
policy and pause state (the hub's job), and ends by finishing the response (the chunked terminator
is sent) when the queue is purged or the server shuts down. A client that disconnects is
unsubscribed at once, so a roundrobin message is never handed to a dead connection afterwards.

``?mode=take|reserve`` is passed to the dispatcher, which refuses what it does not support yet.
No end-of-stream line is written: original clients read every line as a message.
"""

from __future__ import annotations

from typing import Any

from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request

from restmq.errors import NotFound, RestMQError
from restmq.frontends.http.common import (
    GET,
    HEAD,
    Endpoint,
    Front,
    callback_of,
    query,
    queue_name,
    send_error,
)
from restmq.wire import form
from restmq.wire.chunked import frame

log = Logger()

STREAM_TYPE = b"text/plain; charset=utf-8"


class CometSink:
    """The hub's handle on one COMET response; deaf once the stream has ended either way."""

    __slots__ = ("request", "callback", "queue", "subscription", "open")

    def __init__(self, request: Request, callback: str | None, queue: str) -> None:
        self.request, self.callback, self.queue = request, callback, queue
        self.subscription: Any = None
        self.open = True

    def deliver(self, message: dict[str, Any]) -> None:
        if self.open:
            self.request.write(frame(message, self.callback))

    def close(self, reason: str) -> None:
        """The hub ends the stream (``purged``, ``shutdown``): finish the response."""
        if not self.open:
            return
        self.open = False
        if self.subscription is not None:
            self.subscription.cancel()
        log.debug("COMET stream ended queue={queue} reason={reason}", queue=self.queue, reason=reason)
        self.request.finish()

    def lost(self, failure: Failure) -> None:
        """The client went away: unsubscribe now."""
        if self.open:
            self.open = False
            if self.subscription is not None:
                self.subscription.cancel()
            log.debug("COMET client left queue={queue}", queue=self.queue)


class Comet(Endpoint):
    """``/c``: its children are the queues' streams."""

    def getChild(self, path: bytes, request: Request) -> Resource:
        return CometQueue(self.front, queue_name(path))

    def render_GET(self, request: Request) -> int:
        raise NotFound("name a queue: GET /c/<queue>")


class CometQueue(Endpoint):
    """``/c/<queue>``: the stream itself (HEAD answers the headers without subscribing)."""

    methods = (GET, HEAD)
    head_ok = False

    def __init__(self, front: Front, queue: str) -> None:
        super().__init__(front)
        self.queue = queue

    def render_HEAD(self, request: Request) -> bytes:
        request.setHeader(b"content-type", STREAM_TYPE)
        return b""

    def render_GET(self, request: Request) -> int:
        if not self.queue:
            raise NotFound("name a queue: GET /c/<queue>")
        callback = callback_of(request)
        mode_values = query(request).get(b"mode")
        mode = form.text(mode_values[-1], "mode").lower() if mode_values else "take"
        sink = CometSink(request, callback, self.queue)
        request.setHeader(b"content-type", STREAM_TYPE)
        request.setHeader(b"cache-control", b"no-cache")
        request.setHeader(b"x-accel-buffering", b"no")  # proxies (nginx) must not buffer a stream
        try:
            sink.subscription = self.front.dispatcher.subscribe(
                self.queue, sink, mode=mode, principal=self.front.principal(request)
            )
        except RestMQError as e:
            sink.open = False
            send_error(request, e, callback)
            return NOT_DONE_YET
        request.notifyFinish().addErrback(sink.lost)
        log.debug("COMET client joined queue={queue}", queue=self.queue)
        if sink.open and not request.startedWriting:
            request.write(b"")  # send the headers now: the client knows it is subscribed
        return NOT_DONE_YET
