"""The stream contract: COMET, SSE, WebSocket and line ``subscribe`` deliver the same messages, in
the same order and shape, hold them while the queue is paused, end on purge (each in its own
way), and in reserve mode hand out receipts that an ack over HTTP settles."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
import pytest_twisted
import treq
from twisted.internet import defer, protocol, reactor, task
from twisted.internet.error import ConnectionDone
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.protocols.basic import LineReceiver
from twisted.web.client import ResponseDone

from restmq.frontends.http.routes import build_site
from restmq.frontends.line import LineFactory
from tests.test_contract import Frames, open_websocket

FRONT_ENDS = ["comet", "sse", "websocket", "line"]
#: How each stream says it ended when its queue is purged: COMET just finishes the response (an
#: original client reads every line as a message), the others send an end item first.
PURGED_END = {"comet": [], "sse": [{"end": "purged"}], "websocket": [{"end": "purged"}], "line": [{"end": "purged"}]}
#: The fields of a streamed message, the same on every stream: a broadcast one carries its replay
#: id, a reserved one its receipt and lease.
TAKEN_FIELDS = {"key", "queue", "value", "priority", "attempts", "count", "enqueued_at", "event_id"}
RESERVED_FIELDS = TAKEN_FIELDS - {"event_id"} | {"receipt", "lease_until"}
#: How long "nothing is delivered" is watched for.
QUIET = 0.3


class Stream:
    """One subscriber: the JSON items its front end sent, in order (messages, and an SSE ``end``
    event as ``{"end": reason}``), and ``closed``, which fires with how the stream was closed
    (the connection's reason, or a WebSocket's close code)."""

    def __init__(self) -> None:
        self.items: list[Any] = []
        self.closed: defer.Deferred[Any] = defer.Deferred()
        self.leave: Callable[[], Any] = lambda: None

    @property
    def messages(self) -> list[dict[str, Any]]:
        return [i for i in self.items if isinstance(i, dict) and "key" in i]

    @property
    def ends(self) -> list[Any]:
        return [i for i in self.items if isinstance(i, dict) and "end" in i]


class Body(protocol.Protocol):
    """A streamed HTTP body split into records (COMET lines, SSE events) as they arrive."""

    def __init__(self, stream: Stream, separator: bytes, parse: Callable[[bytes], Any]) -> None:
        self.stream, self.separator, self.parse, self.buffer = stream, separator, parse, b""

    def dataReceived(self, data: bytes) -> None:
        self.buffer += data
        *records, self.buffer = self.buffer.split(self.separator)
        self.stream.items += [item for r in records if (item := self.parse(r)) is not None]

    def connectionLost(self, reason: Any) -> None:
        self.stream.closed.callback(reason.value)


def sse_event(record: bytes) -> Any:
    """One SSE event as a browser's EventSource reads it: a message's data, or ``{"end": reason}``;
    None for a comment (``: ping``)."""
    fields: dict[str, str] = {}
    for line in record.decode().split("\n"):
        if line and not line.startswith(":"):
            name, _, value = line.partition(":")
            fields[name] = fields.get(name, "") + value.removeprefix(" ")
    if "data" not in fields:
        return None
    data = json.loads(fields["data"])
    return {"end": data["reason"]} if fields.get("event") == "end" else data


async def over_http(base: str, path: str, separator: bytes, parse: Callable[[bytes], Any]) -> Stream:
    stream = Stream()
    response = await treq.get(base + path, unbuffered=True, persistent=False)
    assert response.code == 200, response.code
    body = Body(stream, separator, parse)
    response.deliverBody(body)
    stream.leave = lambda: body.transport.stopProducing()
    return stream


class LineClient(LineReceiver):
    delimiter = b"\n"

    def __init__(self, stream: Stream) -> None:
        self.stream = stream

    def lineReceived(self, line: bytes) -> None:
        self.stream.items.append(json.loads(line))

    def connectionLost(self, reason: Any = None) -> None:
        self.stream.closed.callback(getattr(reason, "value", None))


async def subscribe(frontend: str, ports: dict[str, int], queue: str, reserve: bool = False) -> Stream:
    """Follow ``queue`` through ``frontend`` (take mode, or reserve mode with a 30 s lease)."""
    query = "?mode=reserve&lease=30" if reserve else ""
    base = f"http://127.0.0.1:{ports['http']}"
    if frontend == "comet":
        return await over_http(base, f"/c/{queue}{query}", b"\r\n", json.loads)
    if frontend == "sse":
        return await over_http(base, f"/sse/{queue}{query}", b"\n\n", sse_event)
    if frontend == "websocket":
        stream = Stream()
        ws: Frames = await open_websocket(ports["http"], f"/ws/{queue}{query}")
        stream.items = ws.frames
        ws.closed.addCallback(stream.closed.callback)
        stream.leave = lambda: ws.sendClose(1000)
        return stream
    stream = Stream()
    client = LineClient(stream)
    await connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", ports["line"]), client)
    client.sendLine(f"subscribe {queue}{' reserve 30' if reserve else ''}".encode())
    await until(lambda: bool(stream.items))
    assert stream.items.pop(0) == {"subscribed": queue, "mode": "reserve" if reserve else "take"}
    stream.leave = client.transport.loseConnection
    return stream


async def until(predicate: Callable[[], bool], timeout: float = 3.0) -> None:
    waited = 0.0
    while not predicate():
        assert waited < timeout, "timed out"
        await task.deferLater(reactor, 0.005, lambda: None)
        waited += 0.005


async def sleep(seconds: float) -> None:
    await task.deferLater(reactor, seconds, lambda: None)


@pytest_twisted.async_yield_fixture
async def ports(dispatcher):
    """The HTTP Site and the line protocol on free loopback ports, over the test dispatcher."""
    site = reactor.listenTCP(0, build_site(dispatcher, reactor=reactor), interface="127.0.0.1")
    line = reactor.listenTCP(0, LineFactory(dispatcher), interface="127.0.0.1")
    yield {"http": site.getHost().port, "line": line.getHost().port}
    await site.stopListening()
    await line.stopListening()


def shape(message: dict[str, Any]) -> tuple[Any, ...]:
    return message["key"], message["value"], message["priority"], message["attempts"]


@pytest.mark.parametrize("frontend", FRONT_ENDS)
@pytest_twisted.ensureDeferred
async def test_every_stream_keeps_the_same_contract(dispatcher, ports, frontend):
    """Each stream holds adds while the queue is paused, then delivers them by priority with the same shape, delivers live adds, and ends on purge its own way."""
    queue = f"stream-{frontend}"
    hub = dispatcher.engine.hub
    stream = await subscribe(frontend, ports, queue)
    await until(lambda: hub.subscribers(queue) == 1)
    await dispatcher.execute("pause", {"queue": queue})
    for value, priority in (("one", 5), ({"two": [2]}, 0), ("three", 5)):
        await dispatcher.execute("add", {"queue": queue, "value": value, "priority": priority})
    await sleep(QUIET)
    assert stream.items == [], stream.items  # nothing while paused
    await dispatcher.execute("resume", {"queue": queue})
    await until(lambda: len(stream.messages) == 3)
    assert [shape(m) for m in stream.messages] == [
        (f"{queue}:2", {"two": [2]}, 0, 0), (f"{queue}:1", "one", 5, 0), (f"{queue}:3", "three", 5, 0)]
    assert all(set(m) == TAKEN_FIELDS and m["queue"] == queue for m in stream.messages)
    await dispatcher.execute("add", {"queue": queue, "value": "live"})
    await until(lambda: len(stream.messages) == 4)
    assert shape(stream.messages[3]) == (f"{queue}:4", "live", 5, 0)

    await dispatcher.execute("purge", {"queue": queue})
    closed = await stream.closed
    assert stream.ends == PURGED_END[frontend]
    if frontend in ("comet", "sse"):
        assert isinstance(closed, ResponseDone)  # the response is complete, not cut off
    elif frontend == "websocket":
        assert closed == 1000  # a normal close
    else:
        assert isinstance(closed, ConnectionDone)  # the server closed the connection cleanly
    await until(lambda: hub.subscribers(queue) == 0)
    assert (await dispatcher.execute("len", {"queue": queue}))["len"] == 0  # streamed means taken


@pytest.mark.parametrize("frontend", FRONT_ENDS)
@pytest_twisted.ensureDeferred
async def test_every_reserve_stream_hands_out_receipts_acked_over_http(dispatcher, ports, frontend):
    """In reserve mode each stream's message carries a receipt, and POST /q/<q>/ack with it settles the message."""
    queue = f"reserve-{frontend}"
    hub = dispatcher.engine.hub
    stream = await subscribe(frontend, ports, queue, reserve=True)
    await until(lambda: hub.subscribers(queue) == 1)
    await dispatcher.execute("add", {"queue": queue, "value": "job"})
    await until(lambda: len(stream.messages) == 1)
    (message,) = stream.messages
    assert shape(message) == (f"{queue}:1", "job", 5, 1) and set(message) == RESERVED_FIELDS
    length = await dispatcher.execute("len", {"queue": queue})
    assert (length["ready"], length["reserved"]) == (0, 1)
    response = await treq.post(
        f"http://127.0.0.1:{ports['http']}/q/{queue}/ack", json.dumps({"receipt": message["receipt"]}).encode(),
        headers={"content-type": "application/json"}, persistent=False)
    assert (response.code, json.loads(await response.content())) == (200, {"queue": queue, "acked": 1})
    length = await dispatcher.execute("len", {"queue": queue})
    assert (length["ready"], length["reserved"]) == (0, 0)
    stream.leave()
    await stream.closed
    await until(lambda: hub.subscribers(queue) == 0)
