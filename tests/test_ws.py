"""WebSocket streams (/ws/<queue>) over a real Site on port 0, with autobahn's client."""

from __future__ import annotations

import json
from typing import Any

import pytest_twisted
from autobahn.twisted.websocket import WebSocketClientFactory, WebSocketClientProtocol
from twisted.internet import defer

from restmq.frontends.http.routes import build_site
from tests.test_http import Client, _reactor, add, sleep, until


class Frames(WebSocketClientProtocol):
    """Collects text frames as JSON; ``opened``/``closed`` fire on open and on close (with the code)."""

    def __init__(self) -> None:
        super().__init__()
        self.frames: list[Any] = []
        self.opened: defer.Deferred[None] = defer.Deferred()
        self.closed: defer.Deferred[int | None] = defer.Deferred()

    def onOpen(self) -> None:
        self.opened.callback(None)

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        self.frames.append(json.loads(payload))

    def onClose(self, wasClean: bool, code: int | None, reason: str | None) -> None:
        if not self.opened.called:
            self.opened.errback(ConnectionError(f"not opened: {code} {reason}"))
        if not self.closed.called:
            self.closed.callback(code)

    def command(self, obj: Any) -> None:
        self.sendMessage(json.dumps(obj).encode(), isBinary=False)


@pytest_twisted.async_yield_fixture
async def http(dispatcher):
    """A Client for a RestMQ Site on a free loopback port, plus its port number."""
    port = _reactor().listenTCP(0, build_site(dispatcher, reactor=_reactor()), interface="127.0.0.1")
    client = Client(f"http://127.0.0.1:{port.getHost().port}")
    client.port = port.getHost().port  # type: ignore[attr-defined]
    yield client
    await port.stopListening()


async def connect(http: Any, path: str, headers: dict[str, str] | None = None) -> Frames:
    factory = WebSocketClientFactory(f"ws://127.0.0.1:{http.port}{path}", headers=headers)
    built: list[Frames] = []

    def build(addr: Any) -> Frames:
        proto = Frames()
        proto.factory = factory
        built.append(proto)
        return proto

    factory.buildProtocol = build  # type: ignore[method-assign]
    _reactor().connectTCP("127.0.0.1", http.port, factory)
    await until(lambda: bool(built))
    await built[0].opened
    return built[0]


@pytest_twisted.ensureDeferred
async def test_ws_streams_messages_and_answers_commands(http, engine):
    """Each message is one JSON text frame; a {"cmd"} frame is run on the stream's queue and answered."""
    ws = await connect(http, "/ws/q")
    await until(lambda: engine.hub.subscribers("q") == 1)
    key = await add(http, "q", "hello")
    await until(lambda: len(ws.frames) == 1, timeout=1.0, step=0.002)
    assert (ws.frames[0]["key"], ws.frames[0]["value"]) == (key, "hello")
    ws.command({"cmd": "len"})
    await until(lambda: len(ws.frames) == 2)
    assert (ws.frames[1]["reply"]["queue"], ws.frames[1]["reply"]["len"]) == ("q", 0)
    await add(http, "other", "x")
    ws.command({"cmd": "len", "queue": "other"})
    await until(lambda: len(ws.frames) == 3)
    assert (ws.frames[2]["reply"]["queue"], ws.frames[2]["reply"]["len"]) == ("other", 1)
    ws.sendClose(1000)
    await ws.closed


@pytest_twisted.ensureDeferred
async def test_ws_bad_frames_get_error_frames(http, engine):
    """A JSON frame that is not a good command, or a command that fails, gets an error frame; the
    stream stays (a frame that is not JSON at all closes with 1007: tests/test_hostile.py)."""
    ws = await connect(http, "/ws/q")
    ws.command(["cmd"])
    ws.command({"cmd": "explode"})
    ws.command({"cmd": "ack", "receipt": "nonsense"})
    await until(lambda: len(ws.frames) == 3)
    assert [f["code"] for f in ws.frames[:2]] == ["bad_request", "unknown_command"]
    assert set(ws.frames[2]) >= {"error", "code"}
    await add(http, "q", "still streaming")
    await until(lambda: len(ws.frames) == 4)
    assert ws.frames[3]["value"] == "still streaming"
    ws.sendClose(1000)
    await ws.closed


@pytest_twisted.ensureDeferred
async def test_ws_purge_sends_end_then_closes_1000(http, engine):
    """Purging the queue sends {"end": "purged"} and closes the socket with code 1000."""
    ws = await connect(http, "/ws/q")
    await until(lambda: engine.hub.subscribers("q") == 1)
    await http("DELETE", "/q/q")
    assert await ws.closed == 1000
    assert ws.frames == [{"end": "purged"}]
    assert engine.hub.subscribers("q") == 0


@pytest_twisted.ensureDeferred
async def test_ws_disconnect_removes_the_subscriber(http, engine):
    """A client that drops its connection is unsubscribed at once and later messages stay queued."""
    ws = await connect(http, "/ws/q")
    await until(lambda: engine.hub.subscribers("q") == 1)
    ws.transport.abortConnection()
    await until(lambda: engine.hub.subscribers("q") == 0, timeout=1.0)
    await add(http, "q", "kept")
    await sleep(0.05)
    assert (await http.get("/q/q")).json()["value"] == "kept"


@pytest_twisted.ensureDeferred
async def test_ws_reserve_mode_acks_over_the_socket(http, engine):
    """In reserve mode a frame carries a receipt; {"cmd": "ack", "receipt"} over the socket acks it."""
    ws = await connect(http, "/ws/q?mode=reserve&lease=30")
    await until(lambda: engine.hub.subscribers("q") == 1)
    await add(http, "q", "work")
    await until(lambda: len(ws.frames) == 1)
    assert ws.frames[0]["value"] == "work" and ws.frames[0]["receipt"]
    ws.command({"cmd": "ack", "receipt": ws.frames[0]["receipt"]})
    await until(lambda: len(ws.frames) == 2)
    assert ws.frames[1]["reply"]["acked"] == 1
    ws.sendClose(1000)
    await ws.closed


@pytest_twisted.ensureDeferred
async def test_ws_refuses_bad_upgrades_with_json(http, engine):
    """A bad queue name or mode is a JSON 400 before any handshake; a plain GET is a JSON 426."""
    assert (await http.get("/ws/bad%20name", headers={"Upgrade": "websocket"})).json()["code"] == (
        "bad_queue_name"
    )
    assert (await http.get("/ws/q?mode=explode", headers={"Upgrade": "websocket"})).json()["code"] == (
        "bad_request"
    )
    plain = await http.get("/ws/q")
    assert plain.status == 426 and plain.json()["code"] == "bad_request"
    assert engine.hub.subscribers("q") == 0


@pytest_twisted.ensureDeferred
async def test_ws_client_that_stops_reading_leaves_messages_queued(http, engine, dispatcher):
    """A roundrobin WebSocket client that stops reading is not fed: messages stay queued until it reads again."""
    await dispatcher.execute("policy", {"queue": "q", "policy": "roundrobin"})
    ws = await connect(http, "/ws/q")
    await until(lambda: engine.hub.subscribers("q") == 1)
    ws.transport.pauseProducing()  # the client stops reading its socket
    big = "x" * 65536
    for _ in range(10):
        await dispatcher.execute("add_many", {"queue": "q", "messages": [big] * 50})
    await sleep(0.5)
    held = (await dispatcher.execute("len", {"queue": "q"}))["ready"]
    assert held >= 250, f"only {held} of 500 stayed queued: the server buffered the rest for a client that does not read"
    ws.transport.resumeProducing()
    await until(lambda: len(ws.frames) == 500, timeout=15.0)
    assert (await dispatcher.execute("len", {"queue": "q"}))["ready"] == 0
    ws.sendClose(1000)
    await ws.closed
