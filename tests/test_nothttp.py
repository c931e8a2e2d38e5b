"""The line, RESP, memcached and syslog listeners refuse HTTP, so a web page cannot post commands to them."""

from __future__ import annotations

import json
import socket
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import reactor, task, threads
from twisted.web.server import Site

from restmq.frontends.line import LineFactory
from restmq.frontends.memcache import MemcacheFactory
from restmq.frontends.nothttp import NotHttpFactory, looks_like_http
from restmq.frontends.resp import RespFactory
from restmq.frontends.syslog import SyslogFactory
from restmq.limits import LimitedFactory, Limits
from tests.test_dashboard import chromium, needs_chromium
from tests.test_origins import Elsewhere, Page
from tests.test_process import Server, serve_argv, servers  # noqa: F401  (the fixture)


def browser_post(port: int, body: bytes) -> bytes:
    """What ``fetch("http://127.0.0.1:PORT/", {method: "POST", mode: "no-cors", body})`` sends."""
    return (
        f"POST / HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: keep-alive\r\n"
        f"Content-Length: {len(body)}\r\nOrigin: http://evil.example\r\n"
        "Content-Type: text/plain;charset=UTF-8\r\nSec-Fetch-Site: cross-site\r\n\r\n"
    ).encode() + body


def exchange(port: int, data: bytes, want: bytes | None = None) -> bytes:
    """Send ``data`` in two writes (the first line split) and read until ``want`` arrives or the server closes."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(data[:3])
        sock.sendall(data[3:])
        got = b""
        while want is None or want not in got:
            chunk = sock.recv(65536)
            if not chunk:
                break
            got += chunk
        return got


FRONT_ENDS: dict[str, tuple[Any, bytes, bytes, bytes]] = {
    # name: (factory(dispatcher), attack body, a normal request, what its answer contains)
    "line": (lambda d: LineFactory(d, max_line=1 << 20), b"\npurge jobs\ntake jobs\n", b"take jobs\n", b'"value":"a"'),
    "resp": (lambda d: RespFactory(d), b"\nDEL jobs\r\nLPOP jobs\r\n", b"*2\r\n$4\r\nLPOP\r\n$4\r\njobs\r\n", b"$1\r\na\r\n"),
    "memcache": (lambda d: MemcacheFactory(d), b"\nget jobs\r\nflush_all\r\n", b"get jobs\r\n", b"VALUE jobs 0 1\r\na\r\nEND"),
    "syslog": (lambda d: SyslogFactory(d), b"\npurge jobs\n", b"<13>hello\n", b""),
}


@pytest_twisted.async_yield_fixture
async def listen():
    """Listens with factories on free loopback ports (``listen(factory)`` answers the port); all stop after."""
    ports: list[Any] = []

    def start(factory: Any) -> int:
        ports.append(reactor.listenTCP(0, factory, interface="127.0.0.1"))
        return int(ports[-1].getHost().port)

    yield start
    for port in ports:
        await port.stopListening()


@pytest.mark.parametrize("name", list(FRONT_ENDS))
@pytest_twisted.ensureDeferred
async def test_http_post_to_a_line_port_is_refused_and_runs_nothing(dispatcher, listen, name):
    """A browser-style POST whose body holds commands gets an HTTP 400 and a close; the queue keeps its messages."""
    build, attack, _, _ = FRONT_ENDS[name]
    number = listen(NotHttpFactory(build(dispatcher), Limits(), name))
    for value in ("a", "b"):
        await dispatcher.execute("add", {"queue": "jobs", "value": value})
    answer = await threads.deferToThread(exchange, number, browser_post(number, attack))
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400 ") and json.loads(body)["code"] == "bad_request"
    assert f"speaks the {name} protocol".encode() in body
    stats = await dispatcher.execute("stats", {"queue": "jobs"})
    assert stats["length"]["ready"] == 2
    assert (await dispatcher.execute("stats", {}))["queues"].keys() == {"jobs"}  # syslog stored no line


@pytest.mark.parametrize("name", list(FRONT_ENDS))
@pytest_twisted.ensureDeferred
async def test_clients_of_the_protocol_still_work(dispatcher, listen, name):
    """Behind the check, each protocol's own request (first line split over two writes) is answered as before."""
    build, _, request, expected = FRONT_ENDS[name]
    number = listen(NotHttpFactory(build(dispatcher), Limits(), name))
    await dispatcher.execute("add", {"queue": "jobs", "value": "a"})
    if name == "syslog":
        with socket.create_connection(("127.0.0.1", number), timeout=5) as sock:
            await threads.deferToThread(sock.sendall, request)
        assert await _ready(dispatcher, "syslogd:127.0.0.1") == 1
    else:
        assert expected in await threads.deferToThread(exchange, number, request, expected)


async def _ready(dispatcher: Any, queue: str) -> int:
    """``queue``'s ready count once it exists (within 2 s)."""
    for _ in range(200):
        if queue in (await dispatcher.execute("stats", {}))["queues"]:
            return int((await dispatcher.execute("stats", {"queue": queue}))["length"]["ready"])
        await task.deferLater(reactor, 0.01, lambda: None)
    raise AssertionError(f"{queue} never appeared")


@pytest.mark.parametrize("first, verdict", [
    (b"POST / HTTP/1.1\r\nHost: x\r\n", True),
    (b"GET /q/jobs?callback=x HTTP/1.0\n", True),
    (b"POST /", None),  # the rest of the line has not arrived yet
    (b"GET", None),
    (b"GET jobs\n", False),  # the line protocol's own text commands
    (b"take jobs", False),
    (b'{"cmd":"take"', False),
    (b"*2\r\n$4\r\nLPOP\r\n", False),
    (b"<13>GET / HTTP/1.1\n", False),
    (b"GET /x y\n", False),
])
def test_looks_like_http(first, verdict):
    """An HTTP/1.x request line is told at its end; another protocol's first bytes are passed at once."""
    assert looks_like_http(first) is verdict


def test_serve_line_port_refuses_http(tmp_path, servers, redis):
    """restmq serve's line listener answers a browser-style POST with HTTP 400 and runs none of its lines."""
    server = Server(serve_argv(tmp_path / "a", "--redis", redis.url), cwd=tmp_path)
    servers.append(server)
    server.wait_for("engine ready")
    while "line" not in server.addresses or "http" not in server.addresses:
        server.wait_for("listening")
    port = int(server.addresses["line"].rsplit(":", 1)[1])
    assert exchange(port, b"add jobs a\n", b"\n").startswith(b'{"queue":"jobs"')
    answer = exchange(port, browser_post(port, b"\npurge jobs\n"))
    assert answer.startswith(b"HTTP/1.1 400 ")
    assert exchange(port, b"len jobs\n", b"\n").startswith(b'{"queue":"jobs","len":1')
    assert server.stop() == 0


@needs_chromium
@pytest.mark.parametrize("guarded", [True, False])
@pytest_twisted.ensureDeferred
async def test_chromium_page_cannot_post_commands_to_the_line_port(dispatcher, listen, guarded):
    """In Chromium a page's no-cors fetch POST to the line port purges the queue without the check (the control) and not with it."""
    line = LineFactory(dispatcher, max_line=1 << 20)
    number = listen(NotHttpFactory(line, Limits(), "line") if guarded else LimitedFactory(line, Limits()))
    page = Elsewhere()
    page.putChild(b"evil.html", Page(
        "<!doctype html><script>fetch('http://127.0.0.1:%d/', {method: 'POST', mode: 'no-cors', "
        "body: '\\npurge jobs\\n'}).catch(function () {});</script>" % number))
    other = listen(Site(page))
    for value in ("a", "b"):
        await dispatcher.execute("add", {"queue": "jobs", "value": value})
    await chromium(f"http://localhost:{other}/evil.html", "--dump-dom")
    stats = await dispatcher.execute("stats", {"queue": "jobs"})
    assert stats["length"]["ready"] == (2 if guarded else 0)
