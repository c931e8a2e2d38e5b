"""The contract: one scenario list run through every front end, with the same answers and error codes."""

from __future__ import annotations

import json
import socket
import xmlrpc.client
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
import pytest_twisted
import treq
from twisted.internet import reactor, threads

from restmq import commands
from restmq.errors import RestMQError
from restmq.frontends.http.routes import build_site
from restmq.frontends.line import LineFactory

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


def check(step: int, expected: Any, outcome: tuple[str, Any], frontend: str) -> None:
    kind, answer = outcome
    where = f"{frontend} step {step}: {SCENARIO[step][:2]} -> {outcome}"
    if isinstance(expected, str):
        assert outcome == ("error", expected), where
    elif callable(expected):
        assert kind == "ok" and expected(answer), where
    else:
        assert kind == "ok", where
        for key, value in expected.items():
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
