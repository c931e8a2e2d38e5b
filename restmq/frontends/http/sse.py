"""Server-Sent Events: ``GET /sse/<queue>``, a long-lived ``text/event-stream`` response.

Each message is one event, ``id:`` its key and ``data:`` its JSON (the same object a COMET line
holds; in reserve mode it carries its ``receipt``, to ack with ``POST /q/<queue>/ack``). While the
stream is quiet a comment ``: ping`` goes out every :attr:`ServerSentEvents.heartbeat` seconds
(15 by default) so proxies do not close it. When the queue is purged or the server shuts down the
stream ends with ``event: end`` / ``data: {"reason": "purged"|"shutdown"}`` and the response is
finished; a client that disconnects is unsubscribed, and its heartbeat stopped, at once.

``?mode=take|reserve`` and ``?lease=S`` (reserve) go to the dispatcher, which judges them and the
queue name: anything it refuses is the usual JSON error, not a stream.

Resume: a broadcast message's ``id:`` is its replay id (``event_id``); a browser reconnecting with
``Last-Event-ID`` (or any client with ``?since=``) first gets the broadcasts it missed that the
queue's replay stream still holds (``--replay``), then live ones, none twice. Other ``id:`` values
(message keys of roundrobin/reserve streams) have nothing to replay and are ignored.

The sink is :class:`stream.CometSink` (the same once-only end and disconnect handling) with SSE
framing, opened by :func:`stream.open_stream` like COMET.
"""

from __future__ import annotations

from typing import Any, cast

from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request

from restmq.errors import NotFound
from restmq.frontends.http.common import GET, HEAD, Endpoint, Front, queue_name
from restmq.frontends.http.stream import CometSink, open_stream, stream_options
from restmq.wire import sse as wire

log = Logger()

#: Seconds between heartbeat comments on an idle stream.
HEARTBEAT = 15.0


# -- SSE ----------------------------------------------------------------------------------------


class SSESink(CometSink):
    """One SSE response: messages as events, a heartbeat while open, ``event: end`` at the end."""

    __slots__ = ("heartbeat",)

    def __init__(self, request: Request, queue: str) -> None:
        super().__init__(request, None, queue)
        self.heartbeat: LoopingCall | None = None

    def deliver(self, message: dict[str, Any]) -> None:
        if self.open:
            self.request.write(wire.message_event(message))

    def ping(self) -> None:
        if self.open:
            self.request.write(wire.PING)

    def start_heartbeat(self, interval: float, clock: IReactorTime) -> None:
        if interval > 0 and self.open:
            self.heartbeat = LoopingCall(self.ping)
            self.heartbeat.clock = clock
            self.heartbeat.start(interval, now=False)

    def _stop_heartbeat(self) -> None:
        if self.heartbeat is not None and self.heartbeat.running:
            self.heartbeat.stop()
        self.heartbeat = None

    def close(self, reason: str) -> None:
        """The hub ends the stream: ``event: end`` with the reason, then finish the response."""
        if self.open:
            self._stop_heartbeat()
            self.request.write(wire.end_event(reason))
        super().close(reason)

    def lost(self, failure: Failure | None = None) -> None:
        """The client went away: stop the heartbeat and unsubscribe now."""
        self._stop_heartbeat()
        super().lost(failure)


class ServerSentEvents(Endpoint):
    """``/sse``: its children are the queues' event streams. ``heartbeat``: seconds between pings
    (0 turns them off; tests use a short one)."""

    def __init__(self, front: Front, heartbeat: float = HEARTBEAT) -> None:
        super().__init__(front)
        self.heartbeat = heartbeat

    def getChild(self, path: bytes, request: Request) -> Resource:
        return SSEQueue(self, queue_name(path))

    def render_GET(self, request: Request) -> int:
        raise NotFound("name a queue: GET /sse/<queue>")


class SSEQueue(Endpoint):
    """``/sse/<queue>``: the event stream (HEAD answers the headers without subscribing)."""

    methods = (GET, HEAD)
    head_ok = False

    def __init__(self, parent: ServerSentEvents, queue: str) -> None:
        super().__init__(parent.front)
        self.parent, self.queue = parent, queue

    def render_HEAD(self, request: Request) -> bytes:
        request.setHeader(b"content-type", wire.CONTENT_TYPE)
        return b""

    def render_GET(self, request: Request) -> int:
        if not self.queue:
            raise NotFound("name a queue: GET /sse/<queue>")
        sink = SSESink(request, self.queue)
        if not open_stream(
            self.front, request, sink, wire.CONTENT_TYPE, stream_options(request), channel="sse"
        ):
            return NOT_DONE_YET
        log.debug("SSE client joined queue={queue}", queue=self.queue)
        if sink.open:
            sink.start_heartbeat(self.parent.heartbeat, self._clock())
            if not request.startedWriting:
                request.write(b"")  # send the headers now: EventSource fires onopen
        return NOT_DONE_YET

    def _clock(self) -> IReactorTime:
        if self.front.reactor is not None:
            return cast(IReactorTime, self.front.reactor)
        from twisted.internet import reactor

        return cast(IReactorTime, reactor)
