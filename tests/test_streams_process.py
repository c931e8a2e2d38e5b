"""Streams across two real RestMQ processes sharing one Redis: COMET, SSE, WebSocket and line clients.

Each test starts two ``restmq serve`` processes on the suite's redis-server and talks to them with
plain blocking clients (http.client, sockets, a minimal WebSocket client), reading each stream in a
thread, as users behind a load balancer would.
"""

from __future__ import annotations

import base64
import http.client
import json
import os
import queue
import signal
import socket
import struct
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

from tests.test_process import Server, http as request, serve_argv, servers  # noqa: F401  (fixture)


@pytest.fixture
def pair(tmp_path, servers, redis) -> tuple[Server, Server]:  # noqa: F811
    """Two RestMQ processes on the suite's redis-server, both ready."""
    started = []
    for name in ("a", "b"):
        server = Server(serve_argv(tmp_path / name, "--redis", redis.url), cwd=tmp_path)
        servers.append(server)
        started.append(server)
    for server in started:
        server.wait_for("engine ready")
    return started[0], started[1]


def call(server: Server, method: str, path: str, body: Any = None) -> Any:
    """A JSON request answering the parsed body (None for 204)."""
    data = None if body is None else json.dumps(body).encode()
    status, raw = request(method, server.url(path), data, {"content-type": "application/json"})
    assert status < 300, (status, raw)
    return json.loads(raw) if raw else None


def subscribers(server: Server, q: str) -> int:
    return int(call(server, "GET", f"/stats/{q}")["subscribers"])


def until(check: Callable[[], bool], timeout: float = 5.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


class Stream:
    """A stream read by a thread: each item it yields goes to ``items`` (and ``got``); ``ended``
    is set when the server finished the stream."""

    def __init__(self, reader: Callable[[Stream], None]) -> None:
        self.items: list[Any] = []
        self.got: queue.Queue[Any] = queue.Queue()
        self.ended = threading.Event()
        self.sock: socket.socket | None = None
        self.thread = threading.Thread(target=self._run, args=(reader,), daemon=True)
        self.thread.start()

    def _run(self, reader: Callable[[Stream], None]) -> None:
        try:
            reader(self)
        except (OSError, ValueError, http.client.HTTPException):
            pass
        finally:
            self.ended.set()

    def put(self, item: Any) -> None:
        self.items.append(item)
        self.got.put(item)

    def next(self, timeout: float = 5.0) -> Any:
        return self.got.get(timeout=timeout)

    def wait(self, count: int, timeout: float = 10.0) -> list[Any]:
        until(lambda: len(self.items) >= count, timeout, f"{count} items, have {len(self.items)}")
        return self.items

    def close(self) -> None:
        if self.sock is not None:
            try:
                self.sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            self.sock.close()


def _http_stream(server: Server, path: str, headers: dict[str, str] | None = None) -> tuple[Any, Any]:
    host, port = server.addresses["http"].rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    conn.request("GET", path, headers=headers or {})
    return conn, conn.getresponse()


def comet(server: Server, q: str, query: str = "") -> Stream:
    """``GET /c/<q>``: each line is a message."""

    def read(stream: Stream) -> None:
        conn, response = _http_stream(server, f"/c/{q}{query}")
        stream.sock = conn.sock
        assert response.status == 200
        while line := response.readline():
            if line.strip():
                stream.put(json.loads(line))

    return Stream(read)


def sse(server: Server, q: str, last_event_id: str | None = None) -> Stream:
    """``GET /sse/<q>``: each event as ``{"event", "id", "data"}``; comments are skipped."""

    def read(stream: Stream) -> None:
        headers = {"last-event-id": last_event_id} if last_event_id else {}
        conn, response = _http_stream(server, f"/sse/{q}", headers)
        stream.sock = conn.sock
        assert response.status == 200
        event: dict[str, Any] = {}
        while line := response.readline():
            text = line.decode().rstrip("\r\n")
            if not text:
                if "data" in event:
                    event["data"] = json.loads(event["data"])
                    stream.put(event)
                event = {}
            elif not text.startswith(":"):
                field, _, value = text.partition(":")
                event[field] = value[1:] if value.startswith(" ") else value

    return Stream(read)


def line(server: Server, *commands: str) -> Stream:
    """A line-protocol connection that sends ``commands`` and yields every answer line."""

    def read(stream: Stream) -> None:
        host, port = server.addresses["line"].rsplit(":", 1)
        sock = socket.create_connection((host, int(port)), timeout=30)
        stream.sock = sock
        sock.sendall("".join(c + "\n" for c in commands).encode())
        for raw in sock.makefile("rb"):
            stream.put(json.loads(raw))

    return Stream(read)


def send_line(stream: Stream, text: str) -> None:
    assert stream.sock is not None
    stream.sock.sendall(text.encode() + b"\n")


class WebSocket:
    """The smallest blocking WebSocket client the tests need: text frames in and out."""

    def __init__(self, server: Server, path: str) -> None:
        host, port = server.addresses["http"].rsplit(":", 1)
        self.sock = socket.create_connection((host, int(port)), timeout=30)
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall(
            f"GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode()
        )
        self.file = self.sock.makefile("rb")
        status = self.file.readline()
        assert b" 101 " in status, status
        while self.file.readline() not in (b"\r\n", b""):
            pass

    def send(self, obj: Any) -> None:
        payload = json.dumps(obj).encode()
        mask = os.urandom(4)
        head = bytes([0x81]) + (bytes([0x80 | len(payload)]) if len(payload) < 126
                                else bytes([0x80 | 126]) + struct.pack("!H", len(payload)))
        self.sock.sendall(head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload)))

    def recv(self) -> tuple[int, bytes]:
        """The next frame's (opcode, payload); pings are answered."""
        while True:
            first, second = self.file.read(2)
            size = second & 0x7F
            if size == 126:
                size = struct.unpack("!H", self.file.read(2))[0]
            elif size == 127:
                size = struct.unpack("!Q", self.file.read(8))[0]
            payload = self.file.read(size)
            opcode = first & 0x0F
            if opcode != 0x9:
                return opcode, payload

    def next(self) -> Any:
        opcode, payload = self.recv()
        assert opcode == 0x1, (opcode, payload)
        return json.loads(payload)

    def close(self) -> None:
        self.sock.close()


def keys_of(items: list[Any]) -> list[str]:
    return [m["key"] for m in items]


# -- the tests ----------------------------------------------------------------------------------


def test_roundrobin_delivers_each_message_once_across_processes(pair):
    """With roundrobin, subscribers on two processes together get every message exactly once."""
    a, b = pair
    call(a, "POST", "/p/rr", {"policy": "roundrobin"})
    streams = [comet(a, "rr"), comet(b, "rr"), sse(b, "rr"), line(a, "subscribe rr")]
    until(lambda: subscribers(a, "rr") == 4, what="4 subscribers counted across processes")
    assert subscribers(b, "rr") == 4
    added: list[str] = []
    for chunk in range(4):
        added += call(a if chunk % 2 else b, "POST", "/queue",
                      {"cmd": "add_many", "queue": "rr", "messages": list(range(50))})["keys"]
    got: list[str] = []

    def collected() -> int:
        got[:] = (keys_of(streams[0].items) + keys_of(streams[1].items)
                  + [e["data"]["key"] for e in streams[2].items]
                  + [m["key"] for m in streams[3].items if "key" in m])
        return len(got)

    until(lambda: collected() >= 200, what="200 deliveries")
    time.sleep(0.3)
    collected()
    assert sorted(got) == sorted(added), "a message was lost or delivered twice"
    on_a = len(streams[0].items) + len(streams[3].items) - 1  # minus the line's "subscribed"
    on_b = len(streams[1].items) + len(streams[2].items)
    assert on_a > 0 and on_b > 0, (on_a, on_b)
    for stream in streams:
        stream.close()
    until(lambda: subscribers(a, "rr") == 0, what="subscribers gone")


def test_broadcast_reaches_every_subscriber_on_both_processes(pair):
    """With broadcast, COMET, SSE, WebSocket and line subscribers on both processes each get every message in order."""
    a, b = pair
    streams = [comet(a, "bc"), sse(b, "bc"), line(b, "subscribe bc")]
    ws = WebSocket(a, "/ws/bc")
    until(lambda: subscribers(b, "bc") == 4, what="4 subscribers")
    added = [call(a if i % 2 else b, "POST", "/q/bc", {"value": i})["key"] for i in range(20)]
    assert keys_of(streams[0].wait(20)) == added
    assert [e["data"]["key"] for e in streams[1].wait(20)] == added
    assert [m["key"] for m in streams[2].wait(21)[1:]] == added
    assert [ws.next()["key"] for _ in added] == added
    ws.close()
    for stream in streams:
        stream.close()


def test_pause_stops_delivery_everywhere_and_resume_restarts_it(pair):
    """Pausing on one process stops streams on both (adds are still accepted); resuming delivers what waited."""
    a, b = pair
    call(a, "POST", "/p/pz", {"policy": "roundrobin"})
    streams = [comet(a, "pz"), comet(b, "pz")]
    until(lambda: subscribers(a, "pz") == 2, what="2 subscribers")
    call(a, "POST", "/control/pz", {"status": "stop"})
    for i in range(10):
        call(b, "POST", "/q/pz", {"value": i})
    time.sleep(0.5)
    assert streams[0].items == [] and streams[1].items == []
    assert call(a, "GET", "/stats/pz")["length"]["ready"] == 10
    call(b, "POST", "/control/pz", {"status": "start"})
    until(lambda: len(streams[0].items) + len(streams[1].items) == 10, what="10 deliveries after resume")
    for stream in streams:
        stream.close()


def test_purge_ends_streams_on_both_processes(pair):
    """DELETE on one process ends COMET (clean end), SSE (event: end), WebSocket (close 1000) and line streams on both."""
    a, b = pair
    streams = [comet(a, "pg"), sse(b, "pg"), line(a, "subscribe pg")]
    ws = WebSocket(b, "/ws/pg")
    until(lambda: subscribers(a, "pg") == 4, what="4 subscribers")
    call(b, "POST", "/q/pg", {"value": "x"})
    streams[0].wait(1)
    assert request("DELETE", a.url("/q/pg"))[0] == 200
    for stream in streams:
        assert stream.ended.wait(5), "a stream was not ended by the purge"
    assert streams[1].items[-1]["event"] == "end" and streams[1].items[-1]["data"]["reason"] == "purged"
    assert streams[2].items[-1] == {"end": "purged"}
    assert ws.next()["value"] == "x"
    assert ws.next() == {"end": "purged"}
    opcode, payload = ws.recv()
    assert opcode == 0x8 and struct.unpack("!H", payload[:2])[0] == 1000
    ws.close()
    until(lambda: subscribers(a, "pg") == 0, what="subscribers gone")


def test_sse_resumes_on_the_other_process_with_last_event_id(pair):
    """An SSE client that drops off process A and reconnects to B with Last-Event-ID gets what it missed, once."""
    a, b = pair
    first = sse(a, "rs")
    until(lambda: subscribers(a, "rs") == 1, what="subscriber")
    early = [call(a, "POST", "/q/rs", {"value": i})["key"] for i in range(3)]
    seen = first.wait(3)
    last_id = seen[-1]["id"]
    first.close()
    until(lambda: subscribers(b, "rs") == 0, what="subscriber gone")
    missed = [call(b, "POST", "/q/rs", {"value": i})["key"] for i in range(3, 6)]
    again = sse(b, "rs", last_event_id=last_id)
    assert [e["data"]["key"] for e in again.wait(3)] == missed
    late = call(a, "POST", "/q/rs", {"value": 6})["key"]
    assert [e["data"]["key"] for e in again.wait(4)] == missed + [late]
    assert [e["data"]["key"] for e in seen] == early
    again.close()


def test_websocket_reserve_acks_and_receipts_work_on_either_process(pair):
    """A reserve-mode WebSocket on B acks over its socket; a receipt it got can also be acked over HTTP on A."""
    a, b = pair
    ws = WebSocket(b, "/ws/wr?mode=reserve&lease=30")
    until(lambda: subscribers(a, "wr") == 1, what="subscriber")
    call(a, "POST", "/q/wr", {"value": "one"})
    first = ws.next()
    assert first["value"] == "one" and first["receipt"]
    ws.send({"cmd": "ack", "receipt": first["receipt"]})
    assert ws.next() == {"reply": {"queue": "wr", "acked": 1}}
    call(a, "POST", "/q/wr", {"value": "two"})
    second = ws.next()
    assert call(a, "POST", "/q/wr/ack", {"receipt": second["receipt"]})["acked"] == 1
    stats = call(b, "GET", "/stats/wr")
    assert (stats["length"]["ready"], stats["length"]["reserved"], stats["counters"]["acked"]) == (0, 0, 2)
    ws.close()


def test_subscriber_that_dies_mid_lease_gets_its_message_redelivered_elsewhere(pair):
    """A reserve subscriber that vanishes unacked, and a whole process killed -9, both give their message to a subscriber on the other process."""
    a, b = pair
    dying = line(a, "subscribe ml reserve 1")
    assert dying.next() == {"subscribed": "ml", "mode": "reserve"}
    call(b, "POST", "/q/ml", {"value": "work"})
    held = dying.next()
    assert held["value"] == "work"
    dying.close()  # the subscriber dies without acking
    survivor = line(b, "subscribe ml reserve 30")
    assert survivor.next() == {"subscribed": "ml", "mode": "reserve"}
    again = survivor.next(timeout=5)
    assert (again["key"], again["attempts"]) == (held["key"], 2)
    send_line(survivor, f"ack ml {again['receipt']}")
    assert survivor.next() == {"reply": {"queue": "ml", "acked": 1}}
    survivor.close()

    victim = line(a, "subscribe mk reserve 1")
    assert victim.next() == {"subscribed": "mk", "mode": "reserve"}
    call(b, "POST", "/q/mk", {"value": "work"})
    taken = victim.next()
    a.proc.send_signal(signal.SIGKILL)
    a.proc.wait(10)
    heir = comet(b, "mk", "?mode=reserve&lease=30")
    redelivered = heir.next(timeout=5)
    assert (redelivered["key"], redelivered["attempts"]) == (taken["key"], 2)
    stats = call(b, "GET", "/stats/mk")
    assert stats["length"]["reserved"] == 1 and stats["counters"]["reserved"] == 2
    heir.close()


def test_streams_survive_redis_dying_and_coming_back(tmp_path, servers):  # noqa: F811
    """When Redis is killed -9 and restarted, COMET, SSE, WebSocket and line subscribers stay connected and get the next message."""
    from tests.conftest import start_redis

    own = start_redis(str(tmp_path))
    try:
        server = Server(serve_argv(tmp_path / "data", "--redis", own.url), cwd=tmp_path)
        servers.append(server)
        server.wait_for("engine ready")
        streams = [comet(server, "rb"), sse(server, "rb"), line(server, "subscribe rb")]
        ws = WebSocket(server, "/ws/rb")
        until(lambda: subscribers(server, "rb") == 4, what="4 subscribers")
        call(server, "POST", "/q/rb", {"value": "before"})
        streams[0].wait(1)
        own.process.kill()
        own.process.wait(10)
        status, _ = request("POST", server.url("/q/rb"), b'{"value": "while down"}', {"content-type": "application/json"})
        assert status == 503
        own = start_redis(str(tmp_path), own.port)
        until(lambda: request("GET", server.url("/health"))[0] == 200, 10, "RestMQ to see Redis again")
        until(lambda: subscribers(server, "rb") == 4, 10, "the subscriber count to be restored")
        call(server, "POST", "/q/rb", {"value": "after"})
        assert [m["value"] for m in streams[0].wait(2)] == ["before", "after"]
        assert [e["data"]["value"] for e in streams[1].wait(2)] == ["before", "after"]
        assert [m.get("value") for m in streams[2].wait(3)[1:]] == ["before", "after"]
        assert [ws.next()["value"], ws.next()["value"]] == ["before", "after"]
        assert not any(s.ended.is_set() for s in streams)
        ws.close()
        for s in streams:
            s.close()
    finally:
        own.process.kill()
        own.process.wait(10)
