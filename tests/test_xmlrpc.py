"""XML-RPC over a real twisted.web Site, called with Python's standard xmlrpc.client in a thread."""

from __future__ import annotations

import datetime
import urllib.error
import urllib.request
import xmlrpc.client
from typing import Any

import pytest
import pytest_twisted
from twisted.internet.threads import deferToThread
from twisted.web.resource import Resource
from twisted.web.server import Site

from restmq import commands, errors
from restmq.frontends.xmlrpc import FAULT_CODES, build_xmlrpc, from_xmlrpc, to_xmlrpc

# -- pure ---------------------------------------------------------------------------------------


def test_every_error_code_has_a_fault_code() -> None:
    """Each error code of errors.py has its own stable faultCode."""
    assert set(errors.ERRORS) | {"internal"} == set(FAULT_CODES)
    assert len(set(FAULT_CODES.values())) == len(FAULT_CODES)


@pytest.mark.parametrize(
    ("answer", "sent"),
    [
        (None, None),
        (True, True),
        (2**31 - 1, 2**31 - 1),
        (-(2**31), -(2**31)),
        (2**31, "2147483648"),
        (-(2**40), "-1099511627776"),
        (1.5, 1.5),
        ("text ✓", "text ✓"),
        ("bell\x07", xmlrpc.client.Binary(b"bell\x07")),
        ({"n": [2**40, "a"], "k\x00": 1}, {"n": ["1099511627776", "a"], "k\ufffd": 1}),
    ],
)
def test_to_xmlrpc(answer: Any, sent: Any) -> None:
    """Answers XML-RPC cannot carry as-is are adapted: big ints as text, XML-illegal text as base64."""
    assert to_xmlrpc(answer) == sent


@pytest.mark.parametrize(
    ("param", "seen"),
    [
        (b"hello", "hello"),
        (datetime.datetime(2024, 1, 2, 3, 4, 5), "2024-01-02T03:04:05"),
        ([b"a", {"b": b"c"}], ["a", {"b": "c"}]),
        (7, 7),
    ],
)
def test_from_xmlrpc(param: Any, seen: Any) -> None:
    """base64 parameters become text and dateTime values their ISO 8601 text."""
    assert from_xmlrpc(param) == seen


def test_from_xmlrpc_refuses_binary_that_is_not_text() -> None:
    """A base64 parameter that is not UTF-8 is a bad_request, since values are JSON."""
    with pytest.raises(errors.RestMQError) as info:
        from_xmlrpc(b"\xff")
    assert info.value.code == "bad_request"


# -- over HTTP ----------------------------------------------------------------------------------


@pytest_twisted.async_yield_fixture
async def url(dispatcher):
    """Base URL of a Site serving the XML-RPC resource at /RPC2 and /xmlrpc on a free port."""
    from twisted.internet import reactor

    root = Resource()
    resource = build_xmlrpc(dispatcher)
    root.putChild(b"RPC2", resource)
    root.putChild(b"xmlrpc", resource)
    port = reactor.listenTCP(0, Site(root), interface="127.0.0.1")
    yield f"http://127.0.0.1:{port.getHost().port}"
    await port.stopListening()


async def call(url: str, method: str, *params: Any, path: str = "/RPC2") -> Any:
    """Call one method with the standard library's client, off the reactor thread."""

    def blocking() -> Any:
        with xmlrpc.client.ServerProxy(url + path, allow_none=True) as proxy:
            return getattr(proxy, method)(*params)

    return await deferToThread(blocking)


async def fault(url: str, method: str, *params: Any, path: str = "/RPC2") -> xmlrpc.client.Fault:
    with pytest.raises(xmlrpc.client.Fault) as info:
        await call(url, method, *params, path=path)
    return info.value


@pytest_twisted.ensureDeferred
async def test_original_set_and_get(url):
    """set answers the new key; get takes the message as {key, value, count: 0}; empty is a fault."""
    assert await call(url, "set", "q", "hello") == "q:1"
    assert await call(url, "set", "q", "42", path="/xmlrpc") == "q:2"
    got = await call(url, "get", "q")
    assert (got["key"], got["value"], got["count"]) == ("q:1", "hello", 0)
    assert (await call(url, "get", "q", path="/xmlrpc"))["value"] == "42"
    empty = await fault(url, "get", "q")
    assert empty.faultString == "empty: empty queue"
    assert empty.faultCode == FAULT_CODES["empty"]


@pytest_twisted.ensureDeferred
async def test_restmq_methods(url, dispatcher):
    """restmq.add/take/len/stats answer the commands' JSON shapes; nil means an absent argument."""
    assert await call(url, "restmq.add", "q", {"a": [1, None]}, 0) == {
        "queue": "q", "value": {"a": [1, None]}, "key": "q:1",
    }  # fmt: skip
    assert (await call(url, "restmq.add_many", "q", ["b", "c"]))["keys"] == ["q:2", "q:3"]
    length = await call(url, "restmq.len", "q")
    assert (length["ready"], length["len"]) == (3, 3)
    assert (await call(url, "restmq.take", "q"))["value"] == {"a": [1, None]}
    assert [m["value"] for m in await call(url, "restmq.take", "q", 5)] == ["b", "c"]
    assert (await call(url, "restmq.policy", "q", None))["policy"] == "broadcast"
    stats = await call(url, "restmq.stats", "q")
    assert stats["counters"]["added"] == 3 and stats["queue"] == "q"
    assert "q" in (await call(url, "restmq.stats"))["queues"]


@pytest_twisted.ensureDeferred
async def test_values_xmlrpc_cannot_carry(url, dispatcher):
    """A big integer comes back as text and a control character as base64, instead of a broken answer."""
    await dispatcher.execute("add", {"queue": "q", "value": [2**40, "bell\x07"]})
    got = await call(url, "restmq.take", "q")
    assert got["value"] == ["1099511627776", xmlrpc.client.Binary(b"bell\x07")]


@pytest_twisted.ensureDeferred
async def test_faults_start_with_the_error_code(url):
    """Bad queue names, bad arguments, unknown methods and wrong arity are faults named by code."""
    bad_name = await fault(url, "restmq.add", "bad/name", "x")
    assert bad_name.faultString.startswith("bad_queue_name: ")
    assert bad_name.faultCode == FAULT_CODES["bad_queue_name"]
    assert (await fault(url, "restmq.take", "q", 0)).faultString.startswith("bad_request: ")
    assert (await fault(url, "restmq.len", "q", 1, 2)).faultString.startswith("bad_request: ")
    assert (await fault(url, "set", "q")).faultString.startswith("bad_request: ")
    unknown = await fault(url, "restmq.frobnicate", "q")
    assert unknown.faultString.startswith("unknown_command: ")
    assert unknown.faultCode == FAULT_CODES["unknown_command"]
    assert (await fault(url, "nothing")).faultString.startswith("unknown_command: ")
    assert (await fault(url, "system.nothing")).faultString.startswith("unknown_command: ")


@pytest_twisted.ensureDeferred
async def test_introspection_lists_every_command(url):
    """system.listMethods names restmq.<cmd> for every command plus set and get; methodHelp works."""
    methods = await call(url, "system.listMethods")
    assert {f"restmq.{name}" for name in commands.COMMANDS} <= set(methods)
    assert {"restmq.add", "set", "get", "system.listMethods"} <= set(methods)
    assert (await call(url, "system.methodHelp", "restmq.add")).startswith("restmq.add(queue, value")


def raw_http(url: str, method: str, body: bytes | None = None) -> tuple[int, str, str]:
    request = urllib.request.Request(url, data=body, method=method, headers={"Content-Type": "text/xml"})
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, response.headers["Content-Type"], response.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.headers["Content-Type"], e.read().decode()


@pytest_twisted.ensureDeferred
async def test_unreadable_requests_get_faults_not_html(url):
    """A body that is not an XML-RPC call, or a GET, is answered with a fault document, never HTML."""
    status, kind, body = await deferToThread(raw_http, url + "/RPC2", "POST", b"<not xml")
    assert (status, kind) == (200, "text/xml; charset=utf-8")
    assert "<fault>" in body and "bad_request: not an XML-RPC call" in body
    status, kind, body = await deferToThread(raw_http, url + "/RPC2", "GET")
    assert (status, kind) == (405, "text/xml; charset=utf-8")
    assert "<fault>" in body and "bad_request: " in body and "<html" not in body.lower()


class Broken:
    """A dispatcher whose commands fail with a bug rather than a RestMQError."""

    def execute(self, name: str, args: Any, principal: Any = None, frontend: str = "other") -> Any:
        raise ZeroDivisionError("a bug")


@pytest_twisted.ensureDeferred
async def test_unexpected_failure_is_a_generic_fault_and_logged():
    """A bug in a command answers "internal: internal error" and the failure goes to the log."""
    from twisted.internet import reactor
    from twisted.logger import globalLogPublisher

    logged: list[dict[str, Any]] = []
    globalLogPublisher.addObserver(logged.append)
    port = reactor.listenTCP(0, Site(build_xmlrpc(Broken())), interface="127.0.0.1")
    try:
        broken = await fault(f"http://127.0.0.1:{port.getHost().port}", "restmq.list", path="/")
    finally:
        globalLogPublisher.removeObserver(logged.append)
        await port.stopListening()
    assert (broken.faultCode, broken.faultString) == (FAULT_CODES["internal"], "internal: internal error")
    assert "a bug" not in broken.faultString
    assert any(isinstance(e.get("log_failure") and e["log_failure"].value, ZeroDivisionError) for e in logged)
