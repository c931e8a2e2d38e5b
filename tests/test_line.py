"""The line protocol front end on the real dispatcher: in memory (StringTransport) and over TCP."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import pytest_twisted
from twisted.internet import defer, task
from twisted.internet.error import ConnectionDone
from twisted.internet.testing import StringTransport
from twisted.protocols.basic import LineReceiver
from twisted.python.failure import Failure

from restmq.frontends.line import LineFactory, LineProtocol


def reactor() -> Any:
    from twisted.internet import reactor as r

    return r


async def until(predicate: Callable[[], bool], timeout: float = 3.0) -> None:
    """Let the reactor run until ``predicate()`` holds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        await task.deferLater(reactor(), 0.005, lambda: None)


def connect(dispatcher: Any, **options: Any) -> tuple[LineProtocol, StringTransport]:
    proto = LineFactory(dispatcher, **options).buildProtocol(None)
    transport = StringTransport()
    proto.makeConnection(transport)
    return proto, transport


async def read(transport: StringTransport, n: int) -> list[Any]:
    """The first ``n`` answer lines, once written."""
    await until(lambda: transport.value().count(b"\n") >= n)
    return [json.loads(line) for line in transport.value().splitlines()]


# -- in memory ----------------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_pipelined_requests_are_answered_in_order(dispatcher):
    """Many requests in one write, text and JSON, get one answer line each, in request order."""
    proto, transport = connect(dispatcher)
    proto.dataReceived(
        b'add q a\nadd q b\r\n{"cmd":"take","queue":"q"}\nping\nlen q\nfrobnicate\ntake q\ntake q\n'
    )
    got = await read(transport, 8)
    assert got[0] == {"queue": "q", "value": "a", "key": "q:1"}
    assert got[1]["key"] == "q:2"
    assert (got[2]["key"], got[2]["value"]) == ("q:1", "a")
    assert got[3] == "pong"
    assert (got[4]["ready"], got[4]["len"]) == (1, 1)
    assert got[5]["code"] == "unknown_command"
    assert got[6]["value"] == "b"
    assert got[7] == {"error": "empty queue", "code": "empty"}
    assert not transport.disconnecting


@pytest_twisted.ensureDeferred
async def test_a_slow_answer_holds_back_later_ones(dispatcher):
    """A long poll answered after 0.3 s still comes before a ping sent after it."""
    proto, transport = connect(dispatcher)
    proto.dataReceived(b"take w 1 0.3\nping\n")
    await task.deferLater(reactor(), 0.1, lambda: None)
    assert transport.value() == b""
    assert await read(transport, 2) == [[], "pong"]


@pytest_twisted.ensureDeferred
async def test_bad_lines_get_errors_and_the_connection_stays(dispatcher):
    """Bad JSON, invalid UTF-8, an empty line and auth each answer an error; the next ping works."""
    proto, transport = connect(dispatcher)
    proto.dataReceived(b"{bad\n\xff\xfe\n\nauth tok\nadd bad/name x\nping\n")
    got = await read(transport, 6)
    assert [a.get("code") if isinstance(a, dict) else a for a in got] == [
        "bad_request", "bad_request", "bad_request", "bad_request", "bad_queue_name", "pong",
    ]  # fmt: skip
    assert "auth is not enabled" in got[3]["error"]
    assert not transport.disconnecting


@pytest_twisted.ensureDeferred
async def test_over_long_line_answers_too_large_and_closes(dispatcher):
    """A line over max_line answers too_large after earlier answers, then the connection closes."""
    proto, transport = connect(dispatcher, max_line=64)
    proto.dataReceived(b"add q short\n" + b"add q " + b"x" * 100 + b"\nping\n")
    got = await read(transport, 2)
    assert got[0]["key"] == "q:1"
    assert got[1]["code"] == "too_large"
    assert transport.disconnecting
    await task.deferLater(reactor(), 0.05, lambda: None)
    assert len(transport.value().splitlines()) == 2
    assert await dispatcher.execute("len", {"queue": "q"}) == {
        "queue": "q", "len": 1, "ready": 1, "reserved": 0, "delayed": 0, "dead": 0,
    }  # fmt: skip


@pytest_twisted.ensureDeferred
async def test_over_long_line_without_newline_closes(dispatcher):
    """Bytes piling up past max_line with no newline close the connection with too_large."""
    proto, transport = connect(dispatcher, max_line=64)
    proto.dataReceived(b"y" * 200)
    got = await read(transport, 1)
    assert got == [{"error": "line is longer than 64 bytes", "code": "too_large"}]
    assert transport.disconnecting


@pytest_twisted.ensureDeferred
async def test_quit_answers_bye_after_earlier_answers_and_closes(dispatcher):
    """quit is answered in order, closes the connection, and lines after it are ignored."""
    proto, transport = connect(dispatcher)
    proto.dataReceived(b"add q a\nquit\nadd q b\n")
    got = await read(transport, 2)
    assert got[0]["key"] == "q:1" and got[1] == {"bye": True}
    assert transport.disconnecting
    await task.deferLater(reactor(), 0.05, lambda: None)
    assert (await dispatcher.execute("len", {"queue": "q"}))["ready"] == 1


@pytest_twisted.ensureDeferred
async def test_too_many_outstanding_answers_pause_reading(dispatcher):
    """Past MAX_PENDING outstanding answers the connection stops reading, then resumes in order."""
    proto, transport = connect(dispatcher)
    proto.MAX_PENDING = 2
    proto.dataReceived(b"take w 1 0.2\ntake w 1 0.2\ntake w 1 0.2\nping\n")
    assert transport.producerState == "paused"
    assert await read(transport, 4) == [[], [], [], "pong"]
    assert transport.producerState == "producing"


@pytest_twisted.ensureDeferred
async def test_auth_holds_reading_until_its_turn(dispatcher):
    """A pipelined auth stops reading until every earlier request has run (what follows is read under the token it sets), also when a second auth is replayed from the buffer."""
    proto, transport = connect(dispatcher)
    proto.dataReceived(b'len q\nauth x\n{"cmd":"take","queue":"e","wait":0.5}\nauth y\nping\n')
    assert transport.producerState == "paused"
    got = await read(transport, 2)
    assert got[0]["len"] == 0 and got[1]["code"] == "bad_request"  # no tokens on this server
    assert transport.producerState == "paused"  # the second auth waits behind the take
    got = await read(transport, 5)
    assert got[2]["code"] == "empty" and got[3]["code"] == "bad_request" and got[4] == "pong"
    assert transport.producerState == "producing"


@pytest_twisted.ensureDeferred
async def test_subscribe_waits_for_earlier_requests(dispatcher):
    """A pipelined add before subscribe is answered first, then the stream delivers that message."""
    proto, transport = connect(dispatcher)
    proto.dataReceived(b"add q first\nsubscribe q\nping\n")
    got = await read(transport, 4)
    assert got[0]["key"] == "q:1"
    assert got[1] == {"subscribed": "q", "mode": "take"}
    # The ping is read once the stream has started; the message may come before or after its pong.
    assert "pong" in got[2:4]
    [message] = [a for a in got[2:4] if a != "pong"]
    assert (message["key"], message["value"]) == ("q:1", "first")
    proto.connectionLost(Failure(ConnectionDone()))
    assert dispatcher.engine.hub.subscribers("q") == 0


# -- over TCP -----------------------------------------------------------------------------------


class Client(LineReceiver):
    """A plain line client: every received line parsed as JSON into a queue."""

    delimiter = b"\n"
    MAX_LENGTH = 1 << 20

    def __init__(self) -> None:
        self.lines: defer.DeferredQueue[Any] = defer.DeferredQueue()
        self.closed: defer.Deferred[None] = defer.Deferred()

    def lineReceived(self, line: bytes) -> None:
        self.lines.put(json.loads(line))

    def connectionLost(self, reason: Any = None) -> None:
        self.closed.callback(None)

    async def next(self, timeout: float = 3.0) -> Any:
        d = self.lines.get()
        d.addTimeout(timeout, reactor())
        return await d

    def send(self, *lines: str) -> None:
        self.transport.write("".join(line + "\n" for line in lines).encode())


@pytest_twisted.async_yield_fixture
async def line_port(dispatcher):
    """The line protocol listening on a free loopback port."""
    port = reactor().listenTCP(0, LineFactory(dispatcher), interface="127.0.0.1")
    yield port.getHost().port
    await port.stopListening()


async def open_client(port: int) -> Client:
    from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol

    client = Client()
    await connectProtocol(TCP4ClientEndpoint(reactor(), "127.0.0.1", port), client)
    return client


async def close(client: Client) -> None:
    client.transport.loseConnection()
    await client.closed


@pytest_twisted.ensureDeferred
async def test_tcp_pipelining(line_port):
    """Over a real socket, pipelined requests come back in order as JSON lines."""
    client = await open_client(line_port)
    client.send("add q hello world", "add q 42", "take q", "take q", "ping")
    assert (await client.next())["key"] == "q:1"
    assert (await client.next())["key"] == "q:2"
    assert (await client.next())["value"] == "hello world"
    assert (await client.next())["value"] == "42"
    assert await client.next() == "pong"
    await close(client)


@pytest_twisted.ensureDeferred
async def test_half_closed_client_still_gets_every_answer(line_port):
    """A client that sends its lines and shuts its side (printf | nc) reads all answers, then EOF."""
    import socket

    from twisted.internet import threads

    def talk() -> list[bytes]:
        with socket.create_connection(("127.0.0.1", line_port), timeout=5) as s:
            s.sendall(b"add q a\nadd q b\nlen q\nreserve q 30\n")
            s.shutdown(socket.SHUT_WR)
            data = b""
            while chunk := s.recv(65536):
                data += chunk
        return data.splitlines()

    lines = [json.loads(line) for line in await threads.deferToThread(talk)]
    assert [lines[0]["key"], lines[1]["key"], lines[2]["ready"]] == ["q:1", "q:2", 2]
    assert lines[3]["key"] == "q:1" and lines[3]["receipt"]


@pytest_twisted.ensureDeferred
async def test_text_reserve_ack_nack_touch(line_port):
    """The text forms `reserve q 30`, `touch q R 60`, `nack q R`, `ack q R` work over TCP."""
    client = await open_client(line_port)
    client.send("add q job", "reserve q 30")
    await client.next()
    got = await client.next()
    assert got["attempts"] == 1 and got["lease_until"] > time.time() + 25
    client.send(f"touch q {got['receipt']} 60", f"nack q {got['receipt']}", "reserve q 30 1")
    assert (await client.next())["lease_until"] > time.time() + 55
    assert (await client.next())["state"] == "ready"
    again = (await client.next())[0]
    client.send(f"ack q {again['receipt']}", f"ack q {again['receipt']}")
    assert (await client.next())["acked"] == 1
    assert (await client.next())["code"] == "stale_receipt"
    await close(client)


@pytest_twisted.ensureDeferred
async def test_tcp_subscribe_streams_messages_and_purge_ends_it(line_port, dispatcher):
    """A subscriber gets each added message within 100 ms; a purge ends the stream and the connection."""
    await dispatcher.execute("add", {"queue": "q", "value": "before"})
    client = await open_client(line_port)
    client.send("subscribe q")
    assert await client.next() == {"subscribed": "q", "mode": "take"}
    assert (await client.next())["value"] == "before"  # the subscription is live now
    for value in ("one", {"two": 2}):
        started = time.monotonic()
        added = await dispatcher.execute("add", {"queue": "q", "value": value})
        message = await client.next()
        assert time.monotonic() - started < 0.1
        assert (message["key"], message["value"]) == (added["key"], value)
    await dispatcher.execute("purge", {"queue": "q"})
    assert await client.next() == {"end": "purged"}
    await client.closed
    await until(lambda: dispatcher.engine.hub.subscribers("q") == 0)


@pytest_twisted.ensureDeferred
async def test_tcp_subscribe_refusal_and_lines_while_streaming(line_port, dispatcher):
    """A refused subscribe leaves command mode; while streaming, commands are answered as replies and a second subscribe is refused."""
    client = await open_client(line_port)
    client.send("subscribe bad/name", "ping")
    assert (await client.next())["code"] == "bad_queue_name"
    assert await client.next() == "pong"
    client.send("subscribe q", "len q", "take q", "subscribe other", "auth t", "frobnicate", "ping")
    assert await client.next() == {"subscribed": "q", "mode": "take"}
    assert (await client.next())["reply"]["len"] == 0
    assert (await client.next())["code"] == "empty"
    refused = await client.next()
    assert refused["code"] == "bad_request" and "already streams queue q" in refused["error"]
    assert (await client.next())["code"] == "bad_request"
    assert (await client.next())["code"] == "unknown_command"
    assert await client.next() == "pong"
    client.send("quit")
    assert await client.next() == {"bye": True}
    await client.closed
    await until(lambda: dispatcher.engine.hub.subscribers("q") == 0)


@pytest_twisted.ensureDeferred
async def test_tcp_reserve_stream_acks_on_the_same_connection(line_port, dispatcher):
    """`subscribe q reserve 30` streams messages with receipts; `ack q R` on that connection answers a reply."""
    client = await open_client(line_port)
    client.send("subscribe q reserve 30")
    assert await client.next() == {"subscribed": "q", "mode": "reserve"}
    await dispatcher.execute("add", {"queue": "q", "value": "job"})
    message = await client.next()
    assert message["value"] == "job" and message["lease_until"] > time.time() + 25
    client.send(f"ack q {message['receipt']}")
    assert await client.next() == {"reply": {"queue": "q", "acked": 1}}
    length = await dispatcher.execute("len", {"queue": "q"})
    assert (length["ready"], length["reserved"]) == (0, 0)
    client.send("subscribe q reserve forever")
    assert (await client.next())["code"] == "bad_request"
    await close(client)


@pytest_twisted.ensureDeferred
async def test_tcp_subscriber_that_stops_reading_leaves_messages_queued(line_port, dispatcher):
    """A roundrobin line subscriber that stops reading is not fed: messages stay queued until it reads again."""
    await dispatcher.execute("policy", {"queue": "q", "policy": "roundrobin"})
    client = await open_client(line_port)
    client.send("subscribe q")
    assert (await client.next())["subscribed"] == "q"
    client.transport.pauseProducing()
    for _ in range(10):
        await dispatcher.execute("add_many", {"queue": "q", "messages": ["x" * 65536] * 50})
    await task.deferLater(reactor(), 0.5, lambda: None)
    held = (await dispatcher.execute("len", {"queue": "q"}))["ready"]
    assert held >= 250, f"only {held} of 500 stayed queued: the server buffered the rest"
    client.transport.resumeProducing()
    for _ in range(500):
        assert (await client.next(timeout=10))["value"] == "x" * 65536
    assert (await dispatcher.execute("len", {"queue": "q"}))["ready"] == 0
    await close(client)


@pytest_twisted.ensureDeferred
async def test_tcp_disconnect_cancels_subscription(line_port, dispatcher):
    """A subscriber that hangs up is removed from the hub, so messages stay queued for others."""
    client = await open_client(line_port)
    client.send("subscribe q")
    assert (await client.next())["subscribed"] == "q"
    assert dispatcher.engine.hub.subscribers("q") == 1
    await close(client)
    await until(lambda: dispatcher.engine.hub.subscribers("q") == 0)
    await dispatcher.execute("add", {"queue": "q", "value": "kept"})
    assert (await dispatcher.execute("take", {"queue": "q"}))["value"] == "kept"


@pytest_twisted.ensureDeferred
async def test_commands_already_read_still_run_after_disconnect(dispatcher):
    """A producer that writes and hangs up at once (nc -N) still gets every add it sent applied."""
    proto, transport = connect(dispatcher)
    proto.dataReceived(b"take w 1 0.1\nadd q a\nadd q b\n")
    proto.connectionLost(Failure(ConnectionDone()))
    for _ in range(200):
        if (await dispatcher.execute("len", {"queue": "q"}))["ready"] == 2:
            break
        await task.deferLater(reactor(), 0.01, lambda: None)
    assert [m["value"] for m in await dispatcher.execute("take", {"queue": "q", "count": 5})] == ["a", "b"]
    assert transport.value() == b""


def test_closing_connection_that_never_drains_is_aborted(dispatcher):
    """After quit, a client that never reads its answers is cut off after the close grace period."""
    clock = task.Clock()
    proto = LineFactory(dispatcher, clock=clock).buildProtocol(None)
    transport = StringTransport()
    aborted: list[bool] = []
    transport.abortConnection = lambda: aborted.append(True)  # type: ignore[method-assign]
    proto.makeConnection(transport)
    proto.dataReceived(b"quit\n")
    assert transport.disconnecting and not aborted
    clock.advance(LineProtocol.CLOSE_GRACE)
    assert aborted == [True]


class Broken:
    """A dispatcher whose commands fail with a bug rather than a RestMQError."""

    def execute(self, name: str, args: Any, principal: Any = None, frontend: str = "other") -> Any:
        return defer.fail(ZeroDivisionError("a bug"))


def test_unexpected_failure_is_a_generic_error_line_and_logged():
    """A bug in a command answers an "internal error" line, logs the failure, and keeps the connection."""
    from twisted.logger import globalLogPublisher

    logged: list[dict[str, Any]] = []
    globalLogPublisher.addObserver(logged.append)
    try:
        proto, transport = connect(Broken())
        proto.dataReceived(b"list\nping\n")
    finally:
        globalLogPublisher.removeObserver(logged.append)
    assert transport.value() == b'{"error":"internal error","code":"internal"}\n"pong"\n'
    assert any(isinstance(e.get("log_failure") and e["log_failure"].value, ZeroDivisionError) for e in logged)
    assert not transport.disconnecting
