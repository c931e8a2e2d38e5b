"""Limits: connections in all and per address, slow HTTP clients (slowloris), idle connections."""

from __future__ import annotations

import json
import socket
import time
from types import SimpleNamespace
from typing import Any

import pytest
import pytest_twisted
import treq
from twisted.internet import reactor, threads
from twisted.python import usage

from restmq.frontends.http.routes import build_site
from restmq.frontends.line import LineFactory
from restmq.limits import LimitedFactory, Limits
from restmq.tap import parse
from tests.test_http import until


def test_limits_count_per_address_and_in_all():
    """admit() refuses past either limit and release() makes room again; 0 means no limit."""
    limits = Limits(max_connections=3, max_per_address=2)
    assert [limits.admit("a"), limits.admit("a"), limits.admit("a")] == [None, None, "connections_per_address"]
    assert limits.admit("b") is None and limits.admit("c") == "connections"
    limits.release("a")
    assert limits.admit("c") is None and limits.total == 3
    unlimited = Limits(0, 0)
    assert all(unlimited.admit("x") is None for _ in range(5000))


def lines_from(port: int, send: bytes, timeout: float = 5.0) -> list[Any]:
    """Connect, send, half-close, and read JSON lines until the server closes."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        try:
            s.sendall(send)
            s.shutdown(socket.SHUT_WR)
        except OSError:
            pass  # a refused connection may already be closed by the server
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    return [json.loads(line) for line in data.splitlines()]


@pytest_twisted.ensureDeferred
async def test_line_connections_over_the_per_address_limit_get_an_error_line(dispatcher):
    """A third line connection from one address is told limit_exceeded and closed; closing one makes room, and half-close still works."""
    limits = Limits(max_connections=100, max_per_address=2)
    port = reactor.listenTCP(0, LimitedFactory(LineFactory(dispatcher, limits=limits), limits), interface="127.0.0.1")
    number = port.getHost().port
    try:
        held = [socket.create_connection(("127.0.0.1", number)) for _ in range(2)]
        await until(lambda: limits.total == 2)
        refused = await threads.deferToThread(lines_from, number, b"ping\n")
        assert refused == [{"error": "too many connections from this address", "code": "limit_exceeded"}]
        assert limits.rejected["connections_per_address"] == 1
        held[0].close()
        await until(lambda: limits.total == 1)
        answers = await threads.deferToThread(lines_from, number, b"add q a\nlen q\n")
        assert answers[0]["key"] == "q:1" and answers[1]["len"] == 1  # answered after the client's half-close
        held[1].close()
        await until(lambda: limits.total == 0)
    finally:
        await port.stopListening()


def raw_http(port: int, chunks: list[bytes], pause: float = 0.0, timeout: float = 5.0) -> tuple[bytes, float]:
    """Send ``chunks`` with ``pause`` between them (stopping if the server closes); answer what
    came back and the seconds until the server closed the connection."""
    start = time.monotonic()
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        for chunk in chunks:
            try:
                s.sendall(chunk)
            except OSError:
                break
            time.sleep(pause)
        data = b""
        try:
            while chunk := s.recv(65536):
                data += chunk
        except OSError:
            pass
    return data, time.monotonic() - start


@pytest_twisted.async_yield_fixture
async def limited_site(dispatcher):
    """A Site with short timeouts behind connection limits (one connection in all)."""
    limits = Limits(max_connections=1, max_per_address=0)
    site = build_site(dispatcher, reactor=reactor, header_timeout=0.3, body_timeout=0.3, idle_timeout=0.5,
                      limits=limits)
    port = reactor.listenTCP(0, LimitedFactory(site, limits), interface="127.0.0.1")
    yield SimpleNamespace(port=port.getHost().port, limits=limits, url=f"http://127.0.0.1:{port.getHost().port}")
    await port.stopListening()


@pytest_twisted.ensureDeferred
async def test_http_slowloris_headers_and_bodies_get_408(limited_site):
    """Headers trickled byte by byte, or a body that never completes, get a 408 within the deadline and the connection closes."""
    trickle = [bytes([b]) for b in b"GET /health HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 40]
    answer, took = await threads.deferToThread(raw_http, limited_site.port, trickle, 0.05)
    assert answer.startswith(b"HTTP/1.1 408 ") and b'"code": "limit_exceeded"' in answer
    assert took < 2.0
    head = b"POST /q/slow HTTP/1.1\r\nHost: x\r\nContent-Type: text/plain\r\nContent-Length: 100\r\n\r\n"
    answer, _ = await threads.deferToThread(raw_http, limited_site.port, [head, b"x" * 10], 0.0)
    assert answer.startswith(b"HTTP/1.1 408 ") and b"body not received within 0.3 s" in answer
    assert (limited_site.limits.rejected["header_timeout"], limited_site.limits.rejected["body_timeout"]) == (1, 1)
    assert limited_site.limits.total == 0


@pytest_twisted.ensureDeferred
async def test_http_over_the_connection_limit_gets_429_and_idle_keepalive_closes(limited_site, dispatcher):
    """With one connection allowed a second gets a JSON 429; an idle keep-alive connection closes after --idle-timeout, a stream does not."""
    stream = socket.create_connection(("127.0.0.1", limited_site.port))
    stream.sendall(b"GET /c/q HTTP/1.1\r\nHost: localhost\r\n\r\n")
    await until(lambda: dispatcher.engine.hub.subscribers("q") == 1)
    answer, _ = await threads.deferToThread(raw_http, limited_site.port, [b"GET /health HTTP/1.1\r\n\r\n"])
    assert answer.startswith(b"HTTP/1.1 429 ") and b"too many connections to this server" in answer
    await until(lambda: True, timeout=0.1)
    await threads.deferToThread(time.sleep, 0.8)  # longer than the idle timeout: a stream is not idle
    assert dispatcher.engine.hub.subscribers("q") == 1 and limited_site.limits.total == 1
    stream.close()
    await until(lambda: limited_site.limits.total == 0)
    keepalive = b"GET /health HTTP/1.1\r\nHost: localhost\r\n\r\n"
    answer, took = await threads.deferToThread(raw_http, limited_site.port, [keepalive])
    assert answer.startswith(b"HTTP/1.1 200 ") and 0.4 < took < 3.0  # the server closed it when idle
    assert limited_site.limits.rejected["idle_timeout"] >= 1


@pytest_twisted.ensureDeferred
async def test_websocket_behind_the_limits_releases_its_slot(limited_site, dispatcher):
    """A WebSocket taken over from the HTTP channel works behind the limit wrapper and frees its slot when it closes."""
    from tests.test_ws import connect

    ws = await connect(SimpleNamespace(port=limited_site.port), "/ws/q")
    await until(lambda: dispatcher.engine.hub.subscribers("q") == 1)
    await dispatcher.execute("add", {"queue": "q", "value": "hi"})
    await until(lambda: len(ws.frames) == 1)
    await threads.deferToThread(time.sleep, 0.8)  # no header/idle deadline applies to an open WebSocket
    assert limited_site.limits.total == 1 and ws.frames[0]["value"] == "hi"
    ws.sendClose(1000)
    await ws.closed
    await until(lambda: limited_site.limits.total == 0)


@pytest_twisted.ensureDeferred
async def test_metrics_show_connections_and_refusals(limited_site):
    """GET /metrics reports open connections and refusals by limit."""
    await threads.deferToThread(raw_http, limited_site.port, [b"GET /h"], 0.0)  # times out: header_timeout
    response = await treq.get(limited_site.url + "/metrics", persistent=False)
    text = (await response.content()).decode()
    assert "restmq_connections 1.0" in text
    assert 'restmq_limit_rejections_total{limit="header_timeout"} 1.0' in text


@pytest_twisted.ensureDeferred
async def test_idle_line_connection_is_closed_but_a_subscriber_is_not(dispatcher):
    """A line connection with no request for --idle-timeout gets a limit_exceeded line and is closed; a subscribed one stays."""
    limits = Limits()
    port = reactor.listenTCP(0, LineFactory(dispatcher, idle_timeout=0.3, limits=limits), interface="127.0.0.1")
    number = port.getHost().port

    def idle() -> tuple[list[Any], float]:
        start = time.monotonic()
        with socket.create_connection(("127.0.0.1", number), timeout=5) as s:
            s.sendall(b"ping\n")
            data = b""
            while chunk := s.recv(65536):
                data += chunk
        return [json.loads(x) for x in data.splitlines()], time.monotonic() - start

    def subscribed() -> bytes:
        with socket.create_connection(("127.0.0.1", number), timeout=5) as s:
            s.sendall(b"subscribe q\n")
            time.sleep(0.8)
            s.sendall(b"ping\n")
            time.sleep(0.1)
            return s.recv(65536)

    try:
        answers, took = await threads.deferToThread(idle)
        assert answers[0] == "pong" and answers[1]["code"] == "limit_exceeded" and 0.25 < took < 3
        assert limits.rejected["idle_timeout"] == 1
        assert b'"pong"' in await threads.deferToThread(subscribed)
    finally:
        await port.stopListening()


def test_limit_options_parse_with_bounds():
    """The limit options take numbers within bounds; 0 turns a limit off."""
    config = parse(["--max-connections", "0", "--max-connections-per-address", "5", "--idle-timeout", "0",
                    "--header-timeout", "2.5", "--body-timeout", "30"])
    assert (config.max_connections, config.max_connections_per_address) == (0, 5)
    assert (config.idle_timeout, config.header_timeout, config.body_timeout) == (0, 2.5, 30)
    for bad in (["--max-connections", "-1"], ["--idle-timeout", "lots"], ["--header-timeout", "100000"]):
        with pytest.raises(usage.UsageError):
            parse(bad)


class _Sink:
    def deliver(self, message: Any) -> None:
        pass

    def close(self, reason: str) -> None:
        pass


@pytest_twisted.ensureDeferred
async def test_max_subscribers_per_queue_refuses_one_more(dispatcher, site_url):
    """Past --max-subscribers on a queue, subscribe is limit_exceeded (HTTP 429 for a stream); other queues are unaffected."""
    from restmq.errors import LimitExceeded

    dispatcher.max_subscribers = 2
    held = [dispatcher.subscribe("busy", _Sink()) for _ in range(2)]
    with pytest.raises(LimitExceeded, match="--max-subscribers"):
        dispatcher.subscribe("busy", _Sink())
    refused = await treq.get(site_url + "/c/busy", persistent=False)
    assert refused.code == 429 and json.loads(await refused.content())["code"] == "limit_exceeded"
    other = dispatcher.subscribe("quiet", _Sink())
    held[0].cancel()
    again = dispatcher.subscribe("busy", _Sink())
    for subscription in (held[1], other, again):
        subscription.cancel()
    assert dispatcher.errors["limit_exceeded"] == 2


@pytest_twisted.ensureDeferred
async def test_max_queues_refuses_an_add_that_creates_one_more(dispatcher):
    """Past --max-queues an add to a new queue is limit_exceeded and stores nothing; existing queues keep working."""
    from restmq.errors import LimitExceeded

    dispatcher.engine.max_queues = 2
    for name in ("q1", "q2"):
        await dispatcher.execute("add", {"queue": name, "value": "x"})
    with pytest.raises(LimitExceeded, match="--max-queues"):
        await dispatcher.execute("add", {"queue": "q3", "value": "x"})
    assert (await dispatcher.execute("len", {"queue": "q3"}))["len"] == 0
    assert (await dispatcher.execute("add", {"queue": "q1", "value": "y"}))["key"] == "q1:2"


@pytest_twisted.async_yield_fixture
async def token_listeners(engine, tmp_path):
    """Line and RESP listeners over a dispatcher with a tokens file, 0.3 s to authenticate."""
    from restmq.auth import Tokens
    from restmq.dispatch import Dispatcher
    from restmq.frontends.resp import RespFactory

    path = tmp_path / "tokens"
    path.write_text("worker-t read,write jobs\n")
    tokens = Tokens(str(path))
    dispatcher = Dispatcher(engine, authorize=tokens.authorize, check_token=tokens.check)
    limits = Limits()
    line = reactor.listenTCP(0, LimitedFactory(LineFactory(dispatcher, auth_timeout=0.3, limits=limits), limits),
                             interface="127.0.0.1")
    resp = reactor.listenTCP(0, LimitedFactory(RespFactory(dispatcher, auth_timeout=0.3, limits=limits), limits),
                             interface="127.0.0.1")
    yield SimpleNamespace(line=line.getHost().port, resp=resp.getHost().port, limits=limits)
    await line.stopListening()
    await resp.stopListening()


def talk(port: int, send: bytes, wait: float, then: bytes = b"") -> tuple[bytes, float]:
    """Send, read for ``wait`` seconds, then (if the server has not closed) send ``then``, half-close
    and read until the server closes: what came back and the seconds until the server closed."""
    start = time.monotonic()
    data = b""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        if send:
            s.sendall(send)
        s.settimeout(0.05)
        while time.monotonic() - start < wait:
            try:
                chunk = s.recv(65536)
            except TimeoutError:
                continue
            if not chunk:
                return data, time.monotonic() - start
            data += chunk
        s.settimeout(5)
        if then:
            s.sendall(then)
        s.shutdown(socket.SHUT_WR)
        while chunk := s.recv(65536):
            data += chunk
    return data, time.monotonic() - start


@pytest_twisted.ensureDeferred
async def test_unauthenticated_tcp_connections_are_closed_after_the_deadline(token_listeners):
    """With tokens, line and RESP connections that send nothing, or only commands and a bad token, get an unauthorized error and are closed after the deadline; an authenticated one is not."""
    ports = token_listeners
    silent, took = await threads.deferToThread(talk, ports.line, b"", 2.0)
    assert json.loads(silent) == {"error": "not authenticated within 0.3 s", "code": "unauthorized"}
    assert 0.25 < took < 1.5  # closed by the server, not by our half-close after 2 s
    refused, _ = await threads.deferToThread(talk, ports.line, b"len jobs\nauth nobody\n", 2.0)
    assert [a["code"] for a in map(json.loads, refused.splitlines())] == ["unauthorized"] * 3
    kept, took = await threads.deferToThread(talk, ports.line, b"auth worker-t\n", 0.6, b"add jobs x\n")
    assert [next(iter(a)) for a in map(json.loads, kept.splitlines())] == ["auth", "queue"] and took > 0.6
    silent, took = await threads.deferToThread(talk, ports.resp, b"", 2.0)
    assert silent == b"-NOAUTH unauthorized not authenticated within 0.3 s\r\n" and 0.25 < took < 1.5
    kept, _ = await threads.deferToThread(
        talk, ports.resp, b"*2\r\n$4\r\nAUTH\r\n$8\r\nworker-t\r\n", 0.6, b"*2\r\n$4\r\nLLEN\r\n$4\r\njobs\r\n"
    )
    assert kept == b"+OK\r\n:1\r\n"
    assert ports.limits.rejected["auth_timeout"] == 3
    await until(lambda: ports.limits.total == 0)


def silent_sockets(port: int, sources: tuple[str, ...], each: int) -> list[socket.socket]:
    """``each`` connections from every loopback source address that send nothing."""
    held = []
    for source in sources:
        for _ in range(each):
            s = socket.socket()
            s.settimeout(5)
            s.bind((source, 0))
            s.connect(("127.0.0.1", port))
            held.append(s)
    return held


def closed_by_server(held: list[socket.socket], timeout: float) -> tuple[int, bytes]:
    """Wait up to ``timeout`` for the server to close every socket: how many it closed, and any
    bytes it sent on them."""
    import selectors

    selector = selectors.DefaultSelector()
    for s in held:
        selector.register(s, selectors.EVENT_READ)
    closed, sent, deadline = 0, b"", time.monotonic() + timeout
    while closed < len(held) and time.monotonic() < deadline:
        for key, _ in selector.select(0.1):
            chunk = key.fileobj.recv(65536)  # type: ignore[union-attr]
            sent += chunk
            if not chunk:
                closed += 1
                selector.unregister(key.fileobj)
    selector.close()
    for s in held:
        s.close()
    return closed, sent


@pytest_twisted.ensureDeferred
async def test_silent_http_connections_are_closed_after_the_header_timeout(dispatcher):
    """2x200 connections from two addresses that never send fill the server (429 for others) only until --header-timeout: then they are closed without a word and a normal client is served."""
    limits = Limits(max_connections=400, max_per_address=200)
    site = build_site(dispatcher, reactor=reactor, header_timeout=1.0, body_timeout=1.0, idle_timeout=30,
                      limits=limits)
    port = reactor.listenTCP(0, LimitedFactory(site, limits), interface="127.0.0.1", backlog=512)
    number = port.getHost().port
    health = [b"GET /health HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"]
    try:
        held = await threads.deferToThread(silent_sockets, number, ("127.0.0.2", "127.0.0.3"), 200)
        await until(lambda: limits.total == 400)
        answer, _ = await threads.deferToThread(raw_http, number, health)
        assert answer.startswith(b"HTTP/1.1 429 ")
        start = time.monotonic()
        closed, sent = await threads.deferToThread(closed_by_server, held, 5.0)
        assert (closed, sent) == (400, b"") and time.monotonic() - start < 3.0
        assert limits.rejected["header_timeout"] == 400
        await until(lambda: limits.total == 0)
        answer, _ = await threads.deferToThread(raw_http, number, health)
        assert answer.startswith(b"HTTP/1.1 200 ")
    finally:
        await port.stopListening()


@pytest.mark.parametrize("head,status", [
    (b"GET /" + b"a" * (1 << 20) + b" HTTP/1.1\r\nHost: x\r\n\r\n", b"414 URI Too Long"),
    (b"GET /health HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * (1 << 20) + b"\r\n\r\n",
     b"431 Request Header Fields Too Large"),
    (b"GET /health HTTP/1.1\r\n" + b"".join(b"X-H%d: %s\r\n" % (i, b"v" * 200) for i in range(100)) + b"\r\n",
     b"431 Request Header Fields Too Large"),
    (b"GET /health HTTP/1.1\r\n" + b"".join(b"X-H%d: 1\r\n" % i for i in range(600)) + b"\r\n",
     b"431 Request Header Fields Too Large"),
    (b"GET /health HTTP/1.1\r\nno colon here\r\n\r\n", b"400 Bad Request"),
])
@pytest_twisted.ensureDeferred
async def test_oversized_request_heads_get_414_or_431_then_close(limited_site, head, status):
    """A 1 MB request line is a 414, a 1 MB header or too many header bytes or fields a 431, a malformed head a 400, each with a JSON error; then the connection closes and others are served."""
    answer, took = await threads.deferToThread(raw_http, limited_site.port, [head])
    head_end = answer.index(b"\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 " + status + b"\r\n") and b"connection: close" in answer[:head_end]
    body = json.loads(answer[head_end + 4:])
    assert body["code"] == ("bad_request" if status.startswith(b"400") else "too_large") and body["error"]
    assert took < 3.0
    await until(lambda: limited_site.limits.total == 0)
    answer, _ = await threads.deferToThread(raw_http, limited_site.port, [b"GET /health HTTP/1.1\r\nHost: localhost\r\n\r\n"])
    assert answer.startswith(b"HTTP/1.1 200 ")
