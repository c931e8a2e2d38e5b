"""Hostile input through every front end, over real listeners on port 0: values nested past the
limit (64) and past Python's recursion limit, Unicode digits where numbers are read, NaN and
infinities, bad WebSocket frames, and a bug inside a command. Each case asserts what the client sees
(400 / bad_request, the fault code, the error line, the close code) and that the server still
answers afterwards."""

from __future__ import annotations

import base64
import json
import os
import socket
import struct
import xmlrpc.client
from collections.abc import Callable
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

import pytest
import pytest_twisted
from twisted.internet.threads import deferToThread
from twisted.logger import globalLogPublisher

from restmq.frontends.http.routes import build_site
from restmq.frontends.line import LineFactory
from restmq.frontends.memcache import MemcacheFactory
from restmq.frontends.resp import RespFactory
from restmq.frontends.xmlrpc import FAULT_CODES
from restmq.values import MAX_DEPTH
from tests.test_http import Client, _reactor, until
from tests.test_ws import Frames, connect

#: Deep enough to have made encode_value raise RecursionError (the reported 500).
REPORTED_DEPTH = 960
#: Past the recursion limit: json.loads itself raises RecursionError on it.
PAST_RECURSION = 5000
LIMIT = f"at most {MAX_DEPTH} levels"


def deep_json(depth: int, leaf: str = "1") -> str:
    return "[" * depth + leaf + "]" * depth


def deep_xml(depth: int, leaf: str = "<int>1</int>") -> str:
    return "<array><data><value>" * depth + leaf + "</value></data></array>" * depth


def nested(depth: int) -> Any:
    value: Any = 1
    for _ in range(depth):
        value = [value]
    return value


@dataclass
class Servers:
    """Every TCP front end of one RestMQ over the test dispatcher, each on its own free port."""

    http: int
    line: int
    resp: int
    memcache: int

    def exchange(self, port: int, data: bytes, done: Callable[[bytes], bool]) -> Any:
        """Send ``data`` on a fresh connection; read until ``done(received)`` (off the reactor)."""

        def blocking() -> bytes:
            with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
                s.sendall(data)
                got = b""
                while not done(got):
                    chunk = s.recv(65536)
                    if not chunk:
                        break
                    got += chunk
                return got

        return deferToThread(blocking)


@pytest_twisted.async_yield_fixture
async def servers(dispatcher):
    """HTTP (REST, /queue, XML-RPC, WebSocket), line, RESP and memcached listeners."""
    reactor = _reactor()
    ports = [
        reactor.listenTCP(0, build_site(dispatcher, max_message_size=4096, reactor=reactor), interface="127.0.0.1"),
        reactor.listenTCP(0, LineFactory(dispatcher), interface="127.0.0.1"),
        reactor.listenTCP(0, RespFactory(dispatcher), interface="127.0.0.1"),
        reactor.listenTCP(0, MemcacheFactory(dispatcher), interface="127.0.0.1"),
    ]
    yield Servers(*(p.getHost().port for p in ports))
    for p in ports:
        await p.stopListening()


def lines(n: int) -> Callable[[bytes], bool]:
    return lambda got: got.count(b"\n") >= n


async def still_serves(http: Client) -> None:
    """An add and a take over HTTP work after the hostile input."""
    added = await http.post("/q/after", json_body={"value": "ok"})
    assert added.status == 201, added.body
    taken = await http.get("/q/after")
    assert taken.json()["value"] == "ok"


# -- REST and the JSON protocol ------------------------------------------------------------------

#: (method, path, JSON body text, status, where the error comes from)
HTTP_CASES = [
    ("POST", "/q/h", '{"value": %s}' % deep_json(REPORTED_DEPTH), 400, "the reported 960 deep"),
    ("POST", "/q/h", '{"value": %s}' % deep_json(PAST_RECURSION), 400, "past json.loads' recursion"),
    ("POST", "/q/h", '{"value": %s}' % deep_json(MAX_DEPTH + 1), 400, "one past the limit"),
    ("POST", "/q/h", '{"messages": [%s]}' % deep_json(MAX_DEPTH + 1), 400, "add_many item"),
    ("POST", "/q/h", '{"value": NaN}', 400, "NaN"),
    ("POST", "/q/h", '{"value": [1, Infinity]}', 400, "Infinity"),
    ("POST", "/q/h", '{"value": {"n": -1e999999}}', 400, "overflows to -inf"),
    ("POST", "/q/h", '{"value": 1, "priority": 1%s}' % ("0" * 400), 400, "a 401-digit priority"),
    ("POST", "/q/h", '{"value": 1, "delay": 1%s}' % ("0" * 400), 400, "a 401-digit delay"),
    ("POST", "/q/h", '{"value": 1, "ttl": "\u0663"}', 400, "an Arabic-Indic digit"),
    ("POST", "/queue", '{"cmd": "add", "queue": "h", "value": %s}' % deep_json(REPORTED_DEPTH), 400, "deep"),
    ("POST", "/queue", '{"cmd": "add", "queue": "h", "value": NaN}', 400, "NaN"),
    # A command failure on /queue is answered 200 with the error body (RPC style, as the original).
    ("POST", "/queue", '{"cmd": "add", "queue": "h", "value": %s}' % deep_json(MAX_DEPTH + 1), 200, "deep"),
    ("POST", "/queue", '{"cmd": "del", "queue": "a", "key": "a:\u00b2"}', 200, "a superscript digit"),
    ("POST", "/queue", '{"cmd": "get", "queue": "a", "key": "a:\u0663"}', 200, "an Arabic-Indic digit"),
    ("POST", "/queue", '{"cmd": "take", "queue": "a", "wait": 1e999}', 400, "wait overflows"),
    ("GET", "/q/h?wait=1e999", None, 400, "wait overflows"),
    ("GET", "/q/h?wait=NaN", None, 400, "wait NaN"),
    ("GET", "/q/h?count=%D9%A3", None, 400, "count in Arabic-Indic digits"),
    ("GET", "/q/h?count=1_0", None, 400, "count with an underscore"),
    ("GET", "/q/h/1" + "0" * 30, None, 400, "a 31-digit message number"),
    ("POST", "/collectd/data", deep_json(REPORTED_DEPTH), 400, "collectd JSON 960 deep"),
    ("POST", "/collectd/data", '[{"values": [NaN]}]', 400, "collectd NaN"),
    ("POST", "/collectd/data", "PUTVAL h/cpu/cpu N:\u0663", 400, "collectd Arabic-Indic value"),
    ("POST", "/collectd/data", "PUTVAL h/cpu/cpu interval=1e999 N:1", 400, "collectd interval overflows"),
]


@pytest.mark.parametrize(("method", "path", "body", "status", "what"), HTTP_CASES,
                         ids=[f"{c[0]} {c[1][:12]} {c[4]}" for c in HTTP_CASES])
@pytest_twisted.ensureDeferred
async def test_http_refuses_hostile_input_with_bad_request(servers, method, path, body, status, what):
    """Deep, non-finite and non-ASCII-digit input over HTTP is bad_request (400, or 200 with the
    error on /queue for a command's failure), and the server still serves."""
    http = Client(f"http://127.0.0.1:{servers.http}")
    if body is None:
        reply = await http(method, path)
    else:
        reply = await http(method, path, data=body.encode(), headers={"content-type": "application/json"})
    assert reply.status == status, (what, reply.status, reply.body[:300])
    answer = reply.json()
    assert answer["code"] == "bad_request", (what, answer)
    assert "Traceback" not in answer["error"]
    if "deep" in what or "past" in what or "item" in what:
        assert LIMIT in answer["error"]
    await still_serves(http)


@pytest_twisted.ensureDeferred
async def test_a_value_nested_exactly_to_the_limit_is_stored_and_served_back(servers):
    """A value nested 64 deep is accepted and comes back equal; 65 deep is refused."""
    http = Client(f"http://127.0.0.1:{servers.http}")
    value = nested(MAX_DEPTH - 1)  # 63 arrays around 1, plus the list: 64 levels
    value = [value]
    added = await http.post("/q/edge", json_body={"value": value})
    assert added.status == 201, added.body
    assert (await http.get("/q/edge")).json()["value"] == value
    refused = await http.post("/q/edge", json_body={"value": [value]})
    assert (refused.status, refused.json()["code"]) == (400, "bad_request")


@pytest_twisted.ensureDeferred
async def test_a_lone_surrogate_is_stored_and_served_back_escaped(servers):
    """A value holding a lone surrogate (JSON ``"\\ud800"``, which UTF-8 cannot carry; the
    structure-aware fuzzer found it was a 500) is stored and comes back the same, over HTTP and
    the line protocol."""
    http = Client(f"http://127.0.0.1:{servers.http}")
    added = await http.post("/q/sur", data=b'{"value": "a\\ud800b"}', headers={"content-type": "application/json"})
    assert added.status == 201, added.body
    line = b'{"cmd":"add","queue":"sur","value":["\\udfff"]}\ntake sur\ntake sur\n'
    got = [json.loads(x) for x in (await servers.exchange(servers.line, line, lines(3))).splitlines()]
    assert got[0]["key"] == "sur:2"
    assert (got[1]["value"], got[2]["value"]) == ("a\ud800b", ["\udfff"])


@pytest_twisted.ensureDeferred
async def test_a_unicode_digit_in_a_path_message_number_is_not_a_message(servers):
    """``/q/a/²`` is not a message route (404 JSON), never a 500."""
    http = Client(f"http://127.0.0.1:{servers.http}")
    reply = await http.get("/q/a/%C2%B2")
    assert (reply.status, reply.json()["code"]) == (404, "not_found")


# -- the line protocol ---------------------------------------------------------------------------

LINE_CASES = [
    ('{"cmd":"add","queue":"h","value":%s}' % deep_json(REPORTED_DEPTH), "deep"),
    ('{"cmd":"add","queue":"h","value":%s}' % deep_json(PAST_RECURSION), "deep"),
    ('{"cmd":"add","queue":"h","value":%s}' % deep_json(MAX_DEPTH + 1), "deep"),
    ('{"cmd":"add","queue":"h","value":NaN}', "NaN"),
    ('{"cmd":"add","queue":"h","value":1e999999}', "1e999999"),
    ('{"cmd":"del","queue":"a","key":"a:\u00b2"}', "superscript"),
    ("get a a:\u00b2", "superscript"),
    ("del a a:\u0663", "Arabic-Indic"),
    ("take a \u0663", "count"),
    ("take a 1 inf", "wait"),
    ("reserve a 1e999", "lease"),
]


@pytest.mark.parametrize(("line", "what"), LINE_CASES, ids=[f"{c[1]}-{i}" for i, c in enumerate(LINE_CASES)])
@pytest_twisted.ensureDeferred
async def test_line_protocol_answers_hostile_lines_with_bad_request(servers, line, what):
    """Each hostile line gets a bad_request error line; the connection still answers ping."""
    got = await servers.exchange(servers.line, line.encode() + b"\nping\n", lines(2))
    first, second = [json.loads(x) for x in got.splitlines()]
    assert first["code"] == "bad_request", (what, first)
    if what == "deep":
        assert LIMIT in first["error"]
    assert second == "pong"


# -- XML-RPC -------------------------------------------------------------------------------------


def xml_call(method: str, *params: str) -> bytes:
    body = "".join(f"<param><value>{p}</value></param>" for p in params)
    return (
        f'<?xml version="1.0"?><methodCall><methodName>{method}</methodName>'
        f"<params>{body}</params></methodCall>"
    ).encode()


def fault_of(body: bytes) -> tuple[int, str]:
    """(faultCode, faultString) of an XML-RPC answer that must be a fault."""
    with pytest.raises(xmlrpc.client.Fault) as info:
        xmlrpc.client.loads(body)
    return info.value.faultCode, info.value.faultString


XMLRPC_CASES = [
    (xml_call("restmq.add", "h", deep_xml(1000)), "arrays 1,000 deep"),
    (xml_call("restmq.add", "h", deep_xml(MAX_DEPTH + 1)), "arrays one past the limit"),
    (xml_call("restmq.add", "h", "<struct><member><name>a</name><value>%s</value></member></struct>"
              % deep_xml(MAX_DEPTH)), "a struct one past the limit"),
    (xml_call("restmq.add", "h", "<double>nan</double>"), "NaN"),
    (xml_call("restmq.add", "h", "<double>1e999</double>"), "overflow"),
    (xml_call("restmq.add", "h", "<double>-inf</double>"), "-inf"),
    (xml_call("restmq.take", "h", "<int>\u0663</int>"), "Arabic-Indic int"),
    (xml_call("restmq.take", "h", "<int>1_0</int>"), "underscore int"),
    (xml_call("restmq.take", "h", "<nil/>", "<double>1e999</double>"), "wait overflows"),
    (xml_call("restmq.add", "h", "<int>1</int>", "<i8>1%s</i8>" % ("0" * 400)), "401-digit priority"),
    (xml_call("restmq.get", "a", "a:\u00b2"), "superscript key"),
    (xml_call("restmq.del", "a", "<string>a:\u0663</string>"), "Arabic-Indic key"),
]


@pytest.mark.parametrize(("body", "what"), XMLRPC_CASES, ids=[c[1] for c in XMLRPC_CASES])
@pytest_twisted.ensureDeferred
async def test_xmlrpc_answers_hostile_calls_with_the_bad_request_fault(servers, body, what):
    """Each hostile call is fault 1 ``bad_request: …`` (never 99 ``internal``); the server still serves."""
    http = Client(f"http://127.0.0.1:{servers.http}")
    reply = await http.post("/RPC2", data=body, headers={"content-type": "text/xml"})
    assert reply.status == 200
    code, text = fault_of(reply.body)
    assert code == FAULT_CODES["bad_request"], (what, text)
    assert text.startswith("bad_request: ")
    if "deep" in what or "past the limit" in what:
        assert LIMIT in text
    await still_serves(http)


# -- WebSocket -----------------------------------------------------------------------------------


def ws_frame(opcode: int, payload: bytes, *, masked: bool = True, rsv: int = 0) -> bytes:
    """One client frame (FIN set)."""
    head = bytes([0x80 | rsv << 4 | opcode])
    mask_bit = 0x80 if masked else 0
    n = len(payload)
    if n < 126:
        head += bytes([mask_bit | n])
    elif n < 65536:
        head += bytes([mask_bit | 126]) + struct.pack("!H", n)
    else:
        head += bytes([mask_bit | 127]) + struct.pack("!Q", n)
    if not masked:
        return head + payload
    key = os.urandom(4)
    return head + key + bytes(b ^ key[i % 4] for i, b in enumerate(payload))


def ws_read_frames(data: bytes) -> list[tuple[int, bytes]]:
    """The server's (unmasked) frames in ``data``, as (opcode, payload); a cut one is left out."""
    frames, i = [], 0
    while i + 2 <= len(data):
        opcode, n = data[i] & 0x0F, data[i + 1] & 0x7F
        i += 2
        if n == 126:
            n, i = struct.unpack("!H", data[i : i + 2])[0], i + 2
        elif n == 127:
            n, i = struct.unpack("!Q", data[i : i + 8])[0], i + 8
        if i + n > len(data):
            break
        frames.append((opcode, data[i : i + n]))
        i += n
    return frames


def ws_raw(port: int, frames: list[bytes], path: str = "/ws/h") -> Any:
    """Open a WebSocket by hand, send ``frames`` raw, and answer what the server sent back until
    its close frame (or the end of the connection): [(opcode, payload), …]."""

    def blocking() -> list[tuple[int, bytes]]:
        with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
            key = base64.b64encode(os.urandom(16))
            s.sendall(
                b"GET " + path.encode() + b" HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
                b"Connection: Upgrade\r\nSec-WebSocket-Key: " + key + b"\r\nSec-WebSocket-Version: 13\r\n\r\n"
            )
            got = b""
            while b"\r\n\r\n" not in got:
                got += s.recv(4096)
            head, _, rest = got.partition(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 101"), head
            for frame in frames:
                s.sendall(frame)
            while not any(op == 8 for op, _ in ws_read_frames(rest)):
                try:
                    chunk = s.recv(65536)
                except ConnectionResetError:
                    break
                if not chunk:
                    break
                rest += chunk
            return ws_read_frames(rest)

    return deferToThread(blocking)


def close_code(frames: list[tuple[int, bytes]]) -> int | None:
    for opcode, payload in frames:
        if opcode == 8:
            return int(struct.unpack("!H", payload[:2])[0])
    return None


WS_CLOSE_CASES = [
    ([ws_frame(1, b"\xff\xfe not UTF-8")], 1007, "a text frame that is not UTF-8"),
    ([ws_frame(1, b"not json")], 1007, "a text frame that is not JSON"),
    ([ws_frame(2, b"\x00\x01\x02")], 1007, "a binary frame that is not JSON"),
    ([ws_frame(1, b'{"cmd":"len"}', masked=False)], 1002, "an unmasked client frame"),
    ([ws_frame(3, b"x")], 1002, "a reserved opcode"),
    ([ws_frame(1, b'{"cmd":"len"}', rsv=4)], 1002, "a reserved bit"),
    ([ws_frame(9, b"p" * 200)], 1002, "a control frame over 125 bytes"),
    ([ws_frame(0, b"x")], 1002, "a continuation with nothing to continue"),
    ([ws_frame(1, b'"' + b"x" * 80_000 + b'"')], 1009, "a frame over the body limit"),
]


@pytest.mark.parametrize(("frames", "code", "what"), WS_CLOSE_CASES, ids=[c[2] for c in WS_CLOSE_CASES])
@pytest_twisted.ensureDeferred
async def test_ws_protocol_errors_close_with_their_rfc6455_code(servers, frames, code, what):
    """A bad frame is answered with a close frame carrying its RFC 6455 code, not a TCP reset;
    the server still serves."""
    got = await ws_raw(servers.http, frames)
    assert close_code(got) == code, (what, got[:3])
    await still_serves(Client(f"http://127.0.0.1:{servers.http}"))


async def ws_client(port: int, path: str = "/ws/h") -> Frames:
    """autobahn's client, connected and open (tests/test_ws.py's helper)."""
    return await connect(SimpleNamespace(port=port), path)


@pytest_twisted.ensureDeferred
async def test_ws_hostile_commands_get_bad_request_frames_and_the_stream_stays(servers):
    """Deep, NaN and Unicode-digit commands over autobahn's client each get a bad_request error
    frame; the connection stays and answers the next command."""
    ws = await ws_client(servers.http)
    hostile = [
        '{"cmd":"add","value":%s}' % deep_json(REPORTED_DEPTH),
        '{"cmd":"add","value":%s}' % deep_json(PAST_RECURSION),
        '{"cmd":"add","value":%s}' % deep_json(MAX_DEPTH + 1),
        '{"cmd":"add","value":NaN}',
        '{"cmd":"add","value":-Infinity}',
        '{"cmd":"get","key":"h:\u00b2"}',
        '{"cmd":"take","count":"\u0663"}',
    ]
    for text in hostile:
        ws.sendMessage(text.encode(), isBinary=False)
    await until(lambda: len(ws.frames) == len(hostile))
    assert [f["code"] for f in ws.frames] == ["bad_request"] * len(hostile)
    assert all(LIMIT in f["error"] for f in ws.frames[:3])
    ws.command({"cmd": "len"})
    await until(lambda: len(ws.frames) == len(hostile) + 1)
    assert ws.frames[-1]["reply"]["queue"] == "h"
    ws.sendClose(1000)
    assert await ws.closed == 1000


@pytest_twisted.ensureDeferred
async def test_ws_a_frame_that_is_not_json_gets_its_error_then_close_1007(servers):
    """With autobahn's client: a frame that is not JSON is answered with a bad_request error frame,
    then the close code 1007 (invalid payload data)."""
    ws = await ws_client(servers.http)
    ws.sendMessage(b"not json", isBinary=False)
    assert await ws.closed == 1007
    assert [f["code"] for f in ws.frames] == ["bad_request"]


# -- RESP and memcached (they read numbers, not JSON) ----------------------------------------------

RESP_CASES = [
    (b"BLPOP h \xd9\xa3\r\n", "a timeout in Arabic-Indic digits"),
    (b"BLPOP h 1e999\r\n", "a timeout that overflows"),
    (b"BLPOP h nan\r\n", "a NaN timeout"),
    (b"LPOP h \xc2\xb2\r\n", "a superscript count"),
    (b"LPOP h 1_0\r\n", "an underscore count"),
]


@pytest.mark.parametrize(("request_", "what"), RESP_CASES, ids=[c[1] for c in RESP_CASES])
@pytest_twisted.ensureDeferred
async def test_resp_refuses_hostile_numbers_with_an_error_reply(servers, request_, what):
    """A count or timeout that is not ASCII decimal (or not finite) is an -ERR reply; PING still works."""
    got = await servers.exchange(servers.resp, request_ + b"PING\r\n", lambda g: g.count(b"\r\n") >= 2)
    first, second = got.split(b"\r\n")[:2]
    assert first.startswith(b"-ERR "), (what, first)
    assert second == b"+PONG"


@pytest.mark.parametrize("key", ["h/t=\u00b2", "h/t=\u0663", "h/t=1_0", "h/t=1e3"])
@pytest_twisted.ensureDeferred
async def test_memcache_refuses_a_timeout_not_in_ascii_digits(servers, key):
    """``get q/t=²`` is a CLIENT_ERROR; the connection still answers ``version``."""
    got = await servers.exchange(
        servers.memcache, b"get " + key.encode() + b"\r\nversion\r\n", lambda g: b"VERSION" in g
    )
    assert got.startswith(b"CLIENT_ERROR "), got
    assert b"\r\nVERSION " in got


# -- a bug inside a command ----------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_a_bug_in_a_command_is_logged_and_answered_internal_everywhere(servers, dispatcher):
    """An unexpected exception inside ``take`` is logged with its traceback and every front end
    answers its own ``internal`` error, without the exception's text; other commands still work."""

    async def broken(**args: Any) -> Any:
        raise ZeroDivisionError("secret detail")

    dispatcher._cmd_take = broken
    logged: list[dict[str, Any]] = []
    globalLogPublisher.addObserver(logged.append)
    try:
        http = Client(f"http://127.0.0.1:{servers.http}")
        rest = await http.get("/q/h")
        rpc = await http.post("/queue", json_body={"cmd": "take", "queue": "h"})
        xml = await http.post("/RPC2", data=xml_call("restmq.take", "h"), headers={"content-type": "text/xml"})
        line = await servers.exchange(servers.line, b"take h\n", lines(1))
        resp = await servers.exchange(servers.resp, b"LPOP h\r\n", lambda g: b"\r\n" in g)
        mc = await servers.exchange(servers.memcache, b"get h\r\n", lambda g: b"\r\n" in g)
        ws = await ws_client(servers.http)
        ws.command({"cmd": "take"})
        await until(lambda: len(ws.frames) == 1)
        ws.sendClose(1000)
        await ws.closed
    finally:
        globalLogPublisher.removeObserver(logged.append)
    internal = {"error": "internal error", "code": "internal"}
    assert (rest.status, rest.json()) == (500, internal)
    assert rpc.json() == internal
    assert fault_of(xml.body) == (FAULT_CODES["internal"], "internal: internal error")
    assert json.loads(line) == internal
    assert resp == b"-ERR internal internal error\r\n"
    assert mc == b"SERVER_ERROR internal internal error\r\n"
    assert ws.frames == [internal]
    for seen in (rest.body, rpc.body, xml.body, line, resp, mc, json.dumps(ws.frames).encode()):
        assert b"secret" not in seen and b"Traceback" not in seen
    failures = [e for e in logged if isinstance(getattr(e.get("log_failure"), "value", None), ZeroDivisionError)]
    assert len(failures) == 7  # one log entry with the traceback per front end
    assert (await http.post("/q/h", json_body={"value": 1})).status == 201


# -- the rules themselves (pure) -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "as_int", "as_float"),
    [
        ("42", 42, 42.0), ("-7", -7, -7.0), ("+5", 5, 5.0), ("0.5", None, 0.5), ("1e3", None, 1000.0),
        ("\u00b2", None, None), ("\u0663", None, None), ("\uff11", None, None), ("1_000", None, None),
        ("0x10", None, None), (" 7", None, None), ("", None, None), ("NaN", None, None),
        ("inf", None, None), ("-Infinity", None, None), ("1e999999", None, None), ("9" * 5000, None, None),
    ],
)
def test_numbers_are_ascii_decimal_and_finite(text, as_int, as_float):
    """Only ASCII decimal spellings of finite numbers are numbers (``int()`` would take ``٣``)."""
    from restmq.values import parse_float, parse_int

    assert parse_int(text) == as_int
    assert parse_float(text) == as_float


def test_depth_is_checked_without_recursion():
    """A value 200,000 deep is refused by a loop (no RecursionError); 64 deep is accepted."""
    from restmq.errors import BadRequest
    from restmq.values import check

    assert check(nested(MAX_DEPTH)) == nested(MAX_DEPTH)
    for depth in (MAX_DEPTH + 1, 200_000):
        with pytest.raises(BadRequest, match=LIMIT):
            check(nested(depth))
    with pytest.raises(BadRequest, match="finite"):
        check({"a": [1, float("nan")]})


@pytest.mark.parametrize("word", ["\u0663", "1_0", "inf", "nan", "1e999"])
def test_server_options_take_ascii_numbers_only(word):
    """``restmq serve --redis-pool ٣`` (or inf, 1_0…) is a usage error, not a number."""
    from twisted.python import usage

    from restmq.tap import Options

    for option in ("--redis-pool", "--redis-timeout"):
        with pytest.raises(usage.UsageError):
            Options().parseOptions([option, word])
