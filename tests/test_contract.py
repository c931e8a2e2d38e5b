"""The contract: one scenario list run through every front end, with the same answers and error codes.

Request/answer front ends run the whole list; a wire that cannot say a step (a memcached key is one
word, RESP has no verb for ``ack``) leaves it to the dispatcher, as the table UNSAID lists, and is
compared on the fields it carries. The streams' contract is in tests/test_contract_streams.py."""

from __future__ import annotations

import json
import socket
import urllib.parse
import xmlrpc.client
from collections.abc import Awaitable, Callable
from typing import Any, NamedTuple

import pytest
import pytest_twisted
import redis
import treq
from autobahn.twisted.websocket import WebSocketClientFactory
from twisted.internet import defer, reactor, threads

from restmq import commands
from restmq.errors import RestMQError
from restmq.frontends.http.routes import build_site
from restmq.frontends.line import LineFactory
from restmq.frontends.memcache import MemcacheFactory
from restmq.frontends.resp import RespFactory
from tests.test_ws import Frames as WSFrames

Q = "Q"  # replaced by a per-front-end queue name

# (command, arguments, expectation): a dict the answer must contain, a callable check, or an error code.
SCENARIO: list[tuple[str, dict[str, Any], Any]] = [
    ("add", {"queue": Q, "value": "hello"}, {"queue": Q, "value": "hello", "key": f"{Q}:1"}),
    ("add", {"queue": Q, "value": {"a": [1, "2"]}, "priority": 0}, {"key": f"{Q}:2"}),
    ("add", {"queue": Q, "value": "42"}, {"value": "42", "key": f"{Q}:3"}),
    ("len", {"queue": Q}, {"queue": Q, "len": 3, "ready": 3, "reserved": 0, "delayed": 0, "dead": 0}),
    ("peek", {"queue": Q}, {"key": f"{Q}:2", "value": {"a": [1, "2"]}, "priority": 0}),
    ("take", {"queue": Q}, {"key": f"{Q}:2", "value": {"a": [1, "2"]}, "count": 0}),
    ("get", {"queue": Q, "key": f"{Q}:3"}, {"value": "42"}),
    ("get", {"queue": Q}, {"key": f"{Q}:1", "count": 1}),
    ("del", {"queue": Q, "key": f"{Q}:3"}, {"queue": Q, "deleted": True, "key": f"{Q}:3"}),
    ("del", {"queue": Q, "key": f"{Q}:3"}, {"deleted": False}),
    ("get", {"queue": Q, "key": f"{Q}:3"}, "not_found"),
    ("take", {"queue": Q}, {"value": "hello"}),
    ("take", {"queue": Q}, "empty"),
    ("take", {"queue": Q, "count": 3}, lambda answer: answer == []),
    ("add_many", {"queue": Q, "messages": ["a", {"value": "b", "priority": 1}]},
     {"queue": Q, "keys": [f"{Q}:4", f"{Q}:5"]}),
    ("take", {"queue": Q, "count": 5}, lambda answer: [m["value"] for m in answer] == ["b", "a"]),
    ("pause", {"queue": Q}, {"queue": Q, "state": "paused", "status": 0}),
    ("add", {"queue": Q, "value": "held"}, {"key": f"{Q}:6"}),
    ("take", {"queue": Q}, "empty"),
    ("state", {"queue": Q}, {"state": "paused"}),
    ("resume", {"queue": Q}, {"state": "running", "status": 1}),
    ("policy", {"queue": Q}, {"policy": "broadcast", "value": "broadcast"}),
    ("policy", {"queue": Q, "policy": "roundrobin"}, {"policy": "roundrobin"}),
    ("stats", {"queue": Q}, {"queue": Q, "len": 1, "status": 1, "policy": "roundrobin"}),
    ("purge", {"queue": Q}, {"queue": Q, "status": 1, "purged": 1}),
    ("add", {"queue": "bad name", "value": "x"}, "bad_queue_name"),
    ("add", {"queue": Q}, "bad_request"),
    ("add", {"queue": Q, "value": "x", "priority": 10}, "bad_request"),
    ("take", {"queue": Q, "count": 1001}, "bad_request"),
    ("explode", {"queue": Q}, "unknown_command"),
    ("health", {}, lambda answer: answer["status"] == "ok"),
    # at-least-once: receipts from one step are used by the next (Memo saves and recalls them)
    ("add_many", {"queue": Q, "messages": ["r1", "r2"]}, {"keys": [f"{Q}:7", f"{Q}:8"]}),
    ("reserve", {"queue": Q, "lease": 30}, lambda answer: MEMO.save("r1", answer, value="r1", attempts=1)),
    ("reserve", {"queue": Q, "count": 5, "lease": 30},
     lambda answer: MEMO.save("r2", answer[0], value="r2") and len(answer) == 1),
    ("len", {"queue": Q}, {"ready": 0, "reserved": 2}),
    ("touch", {"queue": Q, "receipt": lambda: MEMO["r1"]}, lambda answer: answer["lease_until"] > 0),
    ("nack", {"queue": Q, "receipt": lambda: MEMO["r2"], "error": "flaky"}, {"nacked": 1, "state": "ready"}),
    ("ack", {"queue": Q, "receipt": lambda: MEMO["r1"]}, {"acked": 1}),
    ("ack", {"queue": Q, "receipt": lambda: MEMO["r1"]}, "stale_receipt"),
    ("nack", {"queue": Q, "receipt": "1.1.nope"}, "stale_receipt"),
    ("config", {"queue": Q, "max_attempts": 2}, {"queue": Q, "max_attempts": 2, "lease": 30.0}),
    ("reserve", {"queue": Q}, lambda answer: MEMO.save("r2", answer, attempts=2)),
    ("nack", {"queue": Q, "receipt": lambda: MEMO["r2"]}, {"state": "dead"}),
    ("peek", {"queue": Q, "state": "dead"}, {"key": f"{Q}.dead:8", "attempts": 2, "error": "flaky"}),
    ("redrive", {"queue": Q}, {"queue": Q, "moved": 1}),
    ("reserve", {"queue": Q, "lease": -1}, "bad_request"),
    ("add", {"queue": Q, "value": "d", "delay": 60, "dedup": "once"}, {"key": f"{Q}:9"}),
    ("add", {"queue": Q, "value": "d", "dedup": "once"}, {"key": f"{Q}:9"}),
    ("len", {"queue": Q}, {"ready": 1, "delayed": 1, "dead": 0}),
    # unique adds keep one held copy of a value, which find names (RESP's SADD and SISMEMBER)
    ("add", {"queue": Q, "value": "u", "unique": True}, {"key": f"{Q}:10"}),
    ("add", {"queue": Q, "value": "u", "unique": True}, {"key": f"{Q}:10", "duplicate": True}),
    ("find", {"queue": Q, "value": "u"}, {"queue": Q, "key": f"{Q}:10"}),
    ("del", {"queue": Q, "key": f"{Q}:10"}, {"deleted": True}),
    ("find", {"queue": Q, "value": "u"}, {"key": None}),
    # a worker's loop: ack and reserve the next message in one call
    ("reserve", {"queue": Q, "lease": 30}, lambda answer: MEMO.save("r3", answer, value="r2")),
    ("add", {"queue": Q, "value": "n"}, {"key": f"{Q}:11"}),
    ("ack", {"queue": Q, "receipt": lambda: MEMO["r3"], "next": True, "lease": 30},
     lambda answer: answer["acked"] == 1 and MEMO.save("r4", answer["next"], value="n", attempts=1)),
    ("ack", {"queue": Q, "receipt": lambda: MEMO["r4"], "next": True}, {"acked": 1, "next": None}),
    ("ack", {"queue": Q, "receipt": lambda: MEMO["r4"], "next": True}, "stale_receipt"),
]


class Memo(dict):
    """Receipts remembered between steps of one run."""

    def save(self, name: str, message: Any, **expected: Any) -> bool:
        for key, value in expected.items():
            assert message[key] == value, (name, message)
        self[name] = message["receipt"]
        return True


MEMO = Memo()

Call = Callable[[str, dict[str, Any]], Awaitable[tuple[str, Any]]]


def bind(value: Any, queue: str) -> Any:
    """Put the front end's queue name in place of Q, recursively; call remembered values."""
    if callable(value):
        return value()
    if isinstance(value, str):
        return value.replace(Q, queue) if value.startswith(Q) else value
    if isinstance(value, dict):
        return {k: bind(v, queue) for k, v in value.items()}
    if isinstance(value, list):
        return [bind(v, queue) for v in value]
    return value


async def via_dispatcher(dispatcher: Any, name: str, args: dict[str, Any]) -> tuple[str, Any]:
    try:
        return "ok", await dispatcher.execute(name, args)
    except RestMQError as e:
        return "error", e.code


async def via_json_protocol(url: str, name: str, args: dict[str, Any]) -> tuple[str, Any]:
    response = await treq.post(url + "/queue", json.dumps({"cmd": name, **args}).encode(),
                               headers={"content-type": "application/json"})
    assert response.code == 200
    body = json.loads(await response.content())
    return ("error", body["code"]) if isinstance(body, dict) and "code" in body else ("ok", body)


async def via_xmlrpc(url: str, name: str, args: dict[str, Any]) -> tuple[str, Any]:
    names = commands.COMMANDS[name].positional if name in commands.COMMANDS else ("queue",)
    positional = [args.get(n) for n in names]
    while positional and positional[-1] is None:
        positional.pop()

    def call() -> tuple[str, Any]:
        proxy = xmlrpc.client.ServerProxy(url + "/RPC2", allow_none=True)
        try:
            return "ok", getattr(proxy.restmq, name)(*positional)
        except xmlrpc.client.Fault as fault:
            return "error", fault.faultString.split(":", 1)[0]

    return await threads.deferToThread(call)


async def via_line(address: tuple[str, int], name: str, args: dict[str, Any]) -> tuple[str, Any]:
    def call() -> tuple[str, Any]:
        with socket.create_connection(address, timeout=5) as s:
            s.sendall(json.dumps({"cmd": name, **args}).encode() + b"\n")
            data = b""
            while not data.endswith(b"\n"):
                chunk = s.recv(65536)
                assert chunk, "connection closed"
                data += chunk
        body = json.loads(data)
        return ("error", body["code"]) if isinstance(body, dict) and "code" in body else ("ok", body)

    return await threads.deferToThread(call)


# -- REST --------------------------------------------------------------------------------------

#: The HTTP status a REST client sees for each error code of the scenario; a read that finds
#: nothing (take, peek) is a 204 without a body, with or without ``count``.
REST_STATUS = {"bad_request": 400, "bad_queue_name": 400, "not_found": 404, "stale_receipt": 409, "empty": 204}


class Route(NamedTuple):
    """One command as a REST client sends it, its success status, and how the route's answer maps
    back onto the command's (``shape``: where a route answers the original RestMQ's shape)."""

    method: str
    path: str
    query: dict[str, Any] | None = None
    body: dict[str, Any] | None = None
    status: int = 200
    shape: Callable[[Any], Any] | None = None


def rest_route(name: str, args: dict[str, Any]) -> Route | None:
    """The route a REST client uses for command ``name``; None where REST has none (see UNSAID)."""
    q = urllib.parse.quote(args.get("queue", ""), safe="")
    rest = {k: v for k, v in args.items() if k != "queue"}
    if name in ("add", "add_many"):  # {"messages": …} makes it add_many
        return Route("POST", f"/q/{q}", body=rest, status=201)
    if name == "take" or (name == "reserve" and "lease" in rest):  # ?lease= reserves
        return Route("GET", f"/q/{q}", query=rest)
    if name in ("ack", "nack", "touch", "redrive"):
        return Route("POST", f"/q/{q}/{name}", body=rest)
    if name == "peek":
        return Route("GET", f"/q/{q}/peek", query=rest)
    if name in ("get", "del") and "key" in rest:
        number = rest["key"].rpartition(":")[2]
        return Route("GET" if name == "get" else "DELETE", f"/q/{q}/{number}")
    if name == "purge":
        return Route("DELETE", f"/q/{q}")
    if name == "len":  # no route of its own: /stats/<q> holds the same counts
        return Route("GET", f"/stats/{q}", shape=lambda a: {"queue": a["queue"], "len": a["len"], **a["length"]})
    if name == "stats":
        return Route("GET", f"/stats/{q}")
    if name == "state":
        return Route("GET", f"/control/{q}")
    if name in ("pause", "resume"):  # the original's {"stat": {"queue", "status"}} beside ours
        return Route("POST", f"/control/{q}", body={"status": name}, shape=lambda a: {**a, **a["stat"]})
    if name == "policy":
        return Route("POST", f"/p/{q}", body=rest) if rest else Route("GET", f"/p/{q}")
    if name == "config":
        return Route("PUT", f"/q/{q}/config", body=rest) if rest else Route("GET", f"/q/{q}/config")
    if name == "health":
        return Route("GET", "/health")
    return None


async def via_rest(url: str, name: str, args: dict[str, Any]) -> tuple[str, Any] | None:
    route = rest_route(name, args)
    if route is None:
        return None
    target = url + route.path + ("?" + urllib.parse.urlencode(route.query) if route.query else "")
    headers = {"accept": "application/json"}
    data = None
    if route.body is not None:
        headers["content-type"] = "application/json"
        data = json.dumps(route.body).encode()
    response = await treq.request(route.method, target, data=data, headers=headers, persistent=False)
    body = await response.content()
    if response.code == 204:  # nothing there: an empty list when a count was asked for
        assert name in ("take", "peek") and body == b"", (name, body)
        return ("ok", []) if "count" in args else ("error", "empty")
    answer = json.loads(body)
    if isinstance(answer, dict) and "code" in answer:
        assert response.code == REST_STATUS[answer["code"]], (name, response.code, answer)
        return "error", answer["code"]
    assert response.code == route.status, (name, response.code, answer)
    return "ok", route.shape(answer) if route.shape else answer


# -- RESP and memcached: wires that carry only some fields -----------------------------------------


class Said(NamedTuple):
    """An outcome on a wire that carries only some of the answer's fields: ``carries`` names them,
    each with how the scenario's expected value looks on that wire (see :func:`check`)."""

    kind: str
    answer: Any
    carries: dict[str, Callable[[Any], Any]]


def same(value: Any) -> Any:
    return value


def as_text(value: Any) -> str:
    """A value as RESP and memcached hand it back: text as it is, any other JSON as compact JSON."""
    return value if isinstance(value, str) else json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def is_text_add(name: str, rest: dict[str, Any], *options: str) -> bool:
    """An ``add`` whose value is text and that uses no argument beyond ``options``."""
    return name == "add" and isinstance(rest.get("value"), str) and set(rest) <= {"value", *options}


TAKEN = {"value": as_text}


def resp_verb(name: str, args: dict[str, Any]) -> tuple[list[Any], Callable[[Any], Said]] | None:
    """The Redis command a Redis client sends for ``name``, and how its reply reads as the
    command's outcome; None where no Redis verb says it (see UNSAID)."""
    q, rest = args.get("queue"), {k: v for k, v in args.items() if k != "queue"}
    if is_text_add(name, rest):
        return ["RPUSH", q, rest["value"]], lambda n: Said("ok", {}, {})
    if is_text_add(name, rest, "unique") and rest.get("unique") is True:
        return ["SADD", q, rest["value"]], lambda n: Said("ok", {"duplicate": n == 0}, {"duplicate": same})
    if name == "add_many" and all(isinstance(m, str) for m in rest["messages"]):
        return ["RPUSH", q, *rest["messages"]], lambda n: Said("ok", {}, {})
    if name == "take" and not rest:
        return ["LPOP", q], lambda v: Said("error", "empty", {}) if v is None else Said(
            "ok", {"value": v.decode()}, TAKEN)
    if name == "take" and set(rest) == {"count"} and rest["count"] <= commands.MAX_COUNT:
        return ["LPOP", q, rest["count"]], lambda vs: Said("ok", [{"value": v.decode()} for v in vs or []], TAKEN)
    if name == "len":
        return ["LLEN", q], lambda n: Said("ok", {"ready": n}, {"ready": same})
    if name == "purge":  # DEL answers how many of the queues had messages
        return ["DEL", q], lambda n: Said("ok", {"purged": n}, {"purged": lambda purged: int(purged > 0)})
    if name == "find":
        return ["SISMEMBER", q, rest["value"]], lambda n: Said(
            "ok", {"key": n == 1}, {"key": lambda key: key is not None})
    if name == "stats" and q:
        def one_queue(info: dict[str, Any]) -> Said:
            (line,) = [v for k, v in info.items() if k.startswith("queue") and v["name"] == q]
            stats = {"queue": line["name"], "policy": line["policy"], "status": int(line["state"] == "running")}
            return Said("ok", stats, {"queue": same, "policy": same, "status": same})

        return ["INFO", "queues"], one_queue
    if name == "explode":
        return ["EXPLODE", q], lambda reply: Said("ok", reply, {})
    return None


async def via_resp(client: redis.Redis, name: str, args: dict[str, Any]) -> Said | None:
    verb = resp_verb(name, args)
    if verb is None:
        return None
    argv, read = verb
    try:
        reply = await threads.deferToThread(client.execute_command, *argv)
    except redis.ResponseError as e:  # "-ERR <code> <message>"; Redis's own wording for an unknown verb
        message = str(e)
        return Said("error", "unknown_command" if message.startswith("unknown command") else message.split()[0], {})
    return read(reply)


def memcache_request(name: str, args: dict[str, Any]) -> tuple[bytes, Callable[[bytes], Said]] | None:
    """The memcached request for ``name``, and how its (successful) reply reads as the command's
    outcome; None where memcached cannot say it (see UNSAID)."""
    q, rest = args.get("queue", ""), {k: v for k, v in args.items() if k != "queue"}
    if not q or any(c.isspace() for c in q):
        return None  # a memcached key is one word
    key = q.encode()

    def store(verb: bytes, value: str) -> bytes:
        data = value.encode()
        return b"%s %s 0 0 %d\r\n%s\r\n" % (verb, key, len(data), data)

    def stored(n: int) -> Callable[[bytes], Said]:
        return lambda reply: Said("ok", {}, {}) if reply == b"STORED\r\n" * n else Said("unexpected", reply, {})

    if is_text_add(name, rest):
        return store(b"set", rest["value"]), stored(1)
    if is_text_add(name, rest, "unique") and rest.get("unique") is True:  # Kestrel's add: once
        return store(b"add", rest["value"]), lambda reply: Said(
            "ok", {"duplicate": reply == b"NOT_STORED\r\n"}, {"duplicate": same})
    if name == "add_many" and all(isinstance(m, str) for m in rest["messages"]):
        return b"".join(store(b"set", m) for m in rest["messages"]), stored(len(rest["messages"]))
    if name in ("take", "peek") and not rest:
        def taken(reply: bytes) -> Said:
            if reply == b"END\r\n":
                return Said("error", "empty", {})
            header, data, end = reply.split(b"\r\n", 2)
            assert header.split()[:2] == [b"VALUE", key + b"/peek" * (name == "peek")] and end == b"END\r\n"
            return Said("ok", {"value": data.decode()}, TAKEN)

        return b"get " + key + b"/peek" * (name == "peek") + b"\r\n", taken
    if name == "purge":
        return b"delete " + key + b"\r\n", lambda reply: Said(
            "ok", {"purged": int(reply == b"DELETED\r\n")}, {"purged": lambda purged: int(purged > 0)})
    if name in ("len", "stats", "state") and not rest:
        def counted(reply: bytes) -> Said:
            stat = dict(line.split()[1:3] for line in reply.decode().splitlines() if line.startswith("STAT "))
            mine = {k: stat[f"queue_{q}_{field}"] for k, field in (
                ("ready", "items"), ("reserved", "open_transactions"), ("delayed", "delayed_items"),
                ("dead", "dead_items"), ("state", "state"))}
            answer = {k: int(v) for k, v in mine.items() if k != "state"}
            answer |= {"state": mine["state"], "status": int(mine["state"] == "running")}
            wanted = {"len": ("ready", "reserved", "delayed", "dead"), "stats": ("status",), "state": ("state",)}
            return Said("ok", answer, {k: same for k in wanted[name]})

        return b"stats\r\n", counted
    if name == "explode":
        return b"explode " + key + b"\r\n", lambda reply: Said("ok", reply, {})
    return None


async def via_memcache(address: tuple[str, int], name: str, args: dict[str, Any]) -> Said | None:
    request = memcache_request(name, args)
    if request is None:
        return None
    data, read = request

    def call() -> bytes:
        with socket.create_connection(address, timeout=5) as s:
            s.sendall(data)
            s.shutdown(socket.SHUT_WR)  # like printf | nc: everything is answered, then it closes
            reply = b""
            while chunk := s.recv(65536):
                reply += chunk
        return reply

    reply = await threads.deferToThread(call)
    if reply == b"ERROR\r\n":  # memcached's answer to a verb it does not know
        return Said("error", "unknown_command", {})
    if reply.startswith((b"CLIENT_ERROR ", b"SERVER_ERROR ")):
        return Said("error", reply.split()[1].decode(), {})
    return read(reply)


# -- WebSocket -----------------------------------------------------------------------------------


class Frames(WSFrames):
    """tests/test_ws.py's client (every JSON frame in ``frames``, ``opened``, ``closed`` with the
    close code), whose frames can also be awaited one at a time."""

    def __init__(self) -> None:
        super().__init__()
        self.arrived: defer.DeferredQueue[Any] = defer.DeferredQueue()

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        super().onMessage(payload, isBinary)
        self.arrived.put(self.frames[-1])

    async def next(self, timeout: float = 5.0) -> Any:
        return await self.arrived.get().addTimeout(timeout, reactor)


async def open_websocket(port: int, path: str) -> Frames:
    """A WebSocket client connected to ``path`` on the HTTP port, once the handshake is done."""
    factory = WebSocketClientFactory(f"ws://127.0.0.1:{port}{path}")
    client = Frames()
    client.factory = factory
    factory.buildProtocol = lambda addr: client  # type: ignore[method-assign]
    reactor.connectTCP("127.0.0.1", port, factory)
    await client.opened
    return client


async def via_websocket(ws: Frames, name: str, args: dict[str, Any]) -> tuple[str, Any]:
    ws.command({"cmd": name, **args})
    frame = await ws.next()
    return ("ok", frame["reply"]) if "reply" in frame else ("error", frame["code"])


def check(
    step: int,
    expected: Any,
    outcome: tuple[str, Any],
    frontend: str,
    carries: dict[str, Callable[[Any], Any]] | None = None,
) -> None:
    """Compare one answer with the scenario's expectation. ``carries``: for a front end whose wire
    holds only some of an answer's fields (RESP, memcached), those fields, each with how the
    expected value looks on that wire; the other expected fields are not compared."""
    kind, answer = outcome
    where = f"{frontend} step {step}: {SCENARIO[step][:2]} -> {outcome}"
    if isinstance(expected, str):
        assert outcome == ("error", expected), where
    elif callable(expected):
        assert kind == "ok" and expected(answer), where
    else:
        assert kind == "ok", where
        for key, value in expected.items():
            if carries is not None:
                if key not in carries:
                    continue
                value = carries[key](value)
            assert answer.get(key) == value, f"{where}: {key} should be {value!r}"


@pytest.mark.parametrize("frontend", ["dispatcher", "json-protocol", "xmlrpc", "line"])
@pytest_twisted.ensureDeferred
async def test_every_front_end_keeps_the_same_contract(dispatcher, frontend):
    """The scenario gives the same answers and error codes through every front end."""
    site = reactor.listenTCP(0, build_site(dispatcher), interface="127.0.0.1")
    line = reactor.listenTCP(0, LineFactory(dispatcher), interface="127.0.0.1")
    url = f"http://127.0.0.1:{site.getHost().port}"
    callers: dict[str, Callable[[str, dict[str, Any]], Awaitable[tuple[str, Any]]]] = {
        "dispatcher": lambda n, a: via_dispatcher(dispatcher, n, a),
        "json-protocol": lambda n, a: via_json_protocol(url, n, a),
        "xmlrpc": lambda n, a: via_xmlrpc(url, n, a),
        "line": lambda n, a: via_line(("127.0.0.1", line.getHost().port), n, a),
    }
    queue = f"contract-{frontend}"
    MEMO.clear()
    try:
        for step, (name, args, expected) in enumerate(SCENARIO):
            outcome = await callers[frontend](name, bind(args, queue))
            check(step, bind(expected, queue) if not callable(expected) else expected, outcome, frontend)
    finally:
        await site.stopListening()
        await line.stopListening()


#: What each front end has no spelling for (commands, or some of their forms), and why. Those
#: steps run through the dispatcher instead, so the queue keeps to the scenario's course; each run
#: asserts this table is exactly what it stood in for, so the coverage stays visible.
UNSAID: dict[str, dict[str, str]] = {
    "rest": {
        "get": "no route reads the next message without taking it (the soft get without a key)",
        "reserve": "GET /q/<q>?lease=S needs a lease: no route reserves with the queue's own lease",
        "find": "no route finds a unique message by value",
        "explode": "an unknown command has no route to send it on",
    },
    "resp": {
        "add": "LPUSH/RPUSH/SADD take text only: no JSON value, priority, delay, dedup; no missing value",
        "add_many": "RPUSH items are text only, no per-item priority",
        "take": "LPOP's count is Redis's: more than 1000 takes 1000 instead of refusing",
        **{name: "no Redis verb" for name in (
            "peek", "get", "del", "pause", "state", "resume", "policy", "health", "reserve", "touch",
            "nack", "ack", "config", "redrive")},
    },
    "memcache": {
        "add": "set/add store text only: no JSON value, priority, delay, dedup; a key is one word",
        "add_many": "each set stores text, no per-item priority",
        "take": "get takes one message: no count",
        "peek": "get q/peek looks at the next ready one only",
        **{name: "no memcached verb (reliable reads: test_memcache_reliable_reads_are_reserve_ack_nack)"
           for name in ("get", "del", "pause", "resume", "policy", "health", "reserve", "touch", "nack",
                        "ack", "config", "redrive", "find")},
    },
    "websocket": {},
}


async def open_frontend(frontend: str, dispatcher: Any) -> tuple[Call, Callable[[], Awaitable[Any]]]:
    """A server for ``frontend`` on port 0 and a client for it: its caller and how to stop both."""
    if frontend in ("rest", "websocket"):
        port = reactor.listenTCP(0, build_site(dispatcher, reactor=reactor), interface="127.0.0.1")
        url = f"http://127.0.0.1:{port.getHost().port}"
        if frontend == "rest":
            return (lambda n, a: via_rest(url, n, a)), port.stopListening
        # commands go as frames on a socket that streams another queue (its stream would take
        # the scenario's messages); the scenario always names its queue
        ws = await open_websocket(port.getHost().port, "/ws/contract-websocket-stream")

        async def stop_websocket() -> None:
            ws.sendClose(1000)
            await ws.closed
            await port.stopListening()

        return (lambda n, a: via_websocket(ws, n, a)), stop_websocket
    if frontend == "resp":
        port = reactor.listenTCP(0, RespFactory(dispatcher), interface="127.0.0.1")
        client = redis.Redis(port=port.getHost().port, socket_timeout=10)

        async def stop_resp() -> None:
            await threads.deferToThread(client.close)
            await port.stopListening()

        return (lambda n, a: via_resp(client, n, a)), stop_resp
    port = reactor.listenTCP(0, MemcacheFactory(dispatcher), interface="127.0.0.1")
    address = ("127.0.0.1", port.getHost().port)
    return (lambda n, a: via_memcache(address, n, a)), port.stopListening


@pytest.mark.parametrize("frontend", ["rest", "resp", "memcache", "websocket"])
@pytest_twisted.ensureDeferred
async def test_every_wire_keeps_the_same_contract(dispatcher, frontend):
    """REST routes, RESP and memcached verbs and WebSocket command frames give the scenario's answers and error codes wherever they can say the step."""
    call, stop = await open_frontend(frontend, dispatcher)
    queue = f"contract-{frontend}"
    MEMO.clear()
    stood_in: set[str] = set()
    try:
        for step, (name, args, expected) in enumerate(SCENARIO):
            bound = bind(args, queue)
            outcome = await call(name, bound)
            if outcome is None:  # no spelling on this wire: keep the queue on the scenario's course
                assert name in UNSAID[frontend], f"{frontend} cannot say step {step} {name}: add it to UNSAID"
                stood_in.add(name)
                outcome = await via_dispatcher(dispatcher, name, bound)
            carries = outcome.carries if isinstance(outcome, Said) else None
            check(step, bind(expected, queue) if not callable(expected) else expected, tuple(outcome[:2]),
                  frontend, carries)
    finally:
        await stop()
    assert stood_in == set(UNSAID[frontend])


@pytest_twisted.ensureDeferred
async def test_memcache_reliable_reads_are_reserve_ack_nack(dispatcher):
    """memcached's get q/open, q/close and q/abort leave the queue as reserve, ack and nack do in the scenario."""
    from pymemcache.client.base import Client

    port = reactor.listenTCP(0, MemcacheFactory(dispatcher), interface="127.0.0.1")
    client = Client(("127.0.0.1", port.getHost().port), default_noreply=False, connect_timeout=5, timeout=10)
    queue = "contract-memcache-open"

    async def mc(method: str, *args: Any) -> Any:
        return await threads.deferToThread(getattr(client, method), *args)

    async def counts() -> tuple[int, int]:
        length = await dispatcher.execute("len", {"queue": queue})
        return length["ready"], length["reserved"]

    try:
        assert await mc("set", queue, "r1") and await mc("set", queue, "r2")
        assert await mc("get", f"{queue}/open") == b"r1"  # reserve
        reserved = await dispatcher.execute("peek", {"queue": queue, "state": "reserved"})
        assert (reserved["key"], reserved["attempts"], await counts()) == (f"{queue}:1", 1, (1, 1))
        assert await mc("get", f"{queue}/close") is None  # ack: gone for good
        assert await counts() == (1, 0)
        assert await mc("get", f"{queue}/open") == b"r2"
        assert await mc("get", f"{queue}/abort") is None  # nack: ready again, one delivery counted
        again = await dispatcher.execute("peek", {"queue": queue})
        assert (again["key"], again["attempts"], await counts()) == (f"{queue}:2", 1, (1, 0))
    finally:
        await threads.deferToThread(client.close)
        await port.stopListening()
