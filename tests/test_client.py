"""restmq.client against a real twisted.web Site: the blocking client in a thread, TxRestMQ in the reactor."""

from __future__ import annotations

import json
import socket
from typing import Any

import pytest
import pytest_twisted
from twisted.internet.threads import deferToThread

from restmq.client import RestMQ, TxRestMQ, request_body, result_of
from restmq.errors import BackendUnavailable, BadQueueName, BadRequest, Empty, RestMQError, StaleReceipt
from tests.conftest import free_port


def _reactor() -> Any:
    from twisted.internet import reactor

    return reactor


@pytest.fixture
def url(site_url: str) -> str:
    """The base URL of a RestMQ Site on a free loopback port."""
    return site_url


def in_thread(url: str, work: Any) -> Any:
    """Run ``work(client)`` with a fresh blocking client in a thread; the client is closed after."""

    def run() -> Any:
        with RestMQ(url, timeout=10) as mq:
            return work(mq)

    return deferToThread(run)


def test_request_body_omits_none_and_result_of_maps_errors():
    """The shared helpers drop None arguments and turn error bodies into RestMQError subclasses."""
    assert json.loads(request_body("take", {"queue": "q", "count": None, "wait": 1})) == {
        "cmd": "take", "queue": "q", "wait": 1}
    assert result_of(200, b'{"keys": []}\r\n') == {"keys": []}
    with pytest.raises(StaleReceipt) as caught:
        result_of(200, b'{"error": "stale", "code": "stale_receipt", "receipts": ["r"]}')
    assert caught.value.fields == {"receipts": ["r"]}
    with pytest.raises(BackendUnavailable):
        result_of(503, b'{"error": "redis is away", "code": "backend_unavailable"}')
    with pytest.raises(RestMQError, match="HTTP 502"):
        result_of(502, b"<html>bad gateway</html>")
    assert RestMQ(token="s3cret").headers()["Authorization"] == "Bearer s3cret"


@pytest_twisted.ensureDeferred
async def test_every_blocking_method_answers_the_command_json(url):
    """Each command method of RestMQ answers the JSON shape of docs/commands.md over one kept-alive connection."""

    def work(mq: RestMQ) -> dict[str, Any]:
        out: dict[str, Any] = {}
        out["add"] = mq.add("jobs", {"n": 1}, priority=1)
        out["add_many"] = mq.add_many("jobs", ["a", {"value": "b", "priority": 0}])
        out["len"] = mq.len("jobs")
        out["peek"] = mq.peek("jobs", count=3)
        out["get"] = mq.get("jobs", out["add"]["key"])
        out["take"] = mq.take("jobs")
        out["reserve"] = mq.reserve("jobs", lease=30)
        out["touch"] = mq.touch("jobs", out["reserve"]["receipt"], lease=60)
        out["nack"] = mq.nack("jobs", out["reserve"]["receipt"], error="boom")
        again = mq.reserve("jobs", count=1)
        out["ack"] = mq.ack("jobs", [again[0]["receipt"]])
        out["take_list"] = mq.take("jobs", count=5)
        key = mq.add("jobs", "gone")["key"]
        out["unique"] = [mq.add("set", "v", unique=True), mq.add("set", "v", unique=True), mq.find("set", "v")]
        out["delete"] = mq.delete("jobs", key)
        out["list"] = mq.list()
        out["stats"] = mq.stats()
        out["stats_q"] = mq.stats("jobs")
        out["pause"] = mq.pause("jobs")
        out["state"] = mq.state("jobs")
        out["resume"] = mq.resume("jobs")
        out["policy"] = mq.policy("jobs", "roundrobin")
        out["config"] = mq.config("jobs", max_attempts=3)
        out["redrive"] = mq.redrive("jobs")
        mq.add("jobs", "x")
        out["purge"] = mq.purge("jobs")
        out["health"] = mq.health()
        out["call"] = mq.call("len", queue="jobs")
        return out

    out = await in_thread(url, work)
    assert out["add"] == {"queue": "jobs", "value": {"n": 1}, "key": "jobs:1"}
    assert out["add_many"]["keys"] == ["jobs:2", "jobs:3"]
    assert out["len"]["ready"] == 3
    assert [m["value"] for m in out["peek"]] == ["b", {"n": 1}, "a"]
    assert out["get"]["value"] == {"n": 1}
    assert out["take"]["value"] == "b"
    assert out["reserve"]["value"] == {"n": 1} and out["reserve"]["receipt"]
    assert "lease_until" in out["touch"]
    assert out["nack"]["nacked"] == 1
    assert out["ack"]["acked"] == 1
    assert [m["value"] for m in out["take_list"]] == ["a"]
    assert out["delete"]["deleted"] in (True, 1)
    first, again, found = out["unique"]
    assert "duplicate" not in first and again == {**first, "duplicate": True} and found["key"] == first["key"]
    assert "jobs" in out["list"]["queues"]
    assert "jobs" in out["stats"]["queues"] and out["stats_q"]["queue"] == "jobs"
    assert out["pause"]["state"] == "paused" and out["resume"]["state"] == "running"
    assert out["policy"]["policy"] == "roundrobin"
    assert out["config"]["max_attempts"] == 3
    assert out["redrive"]["moved"] == 0
    assert out["purge"]["purged"] == 1
    assert out["health"]["status"] == "ok"
    assert out["call"]["ready"] == 0


@pytest_twisted.ensureDeferred
async def test_blocking_errors_raise_restmq_error_subclasses(url):
    """Empty, bad queue names, stale receipts and bad arguments raise the matching RestMQError class."""

    def work(mq: RestMQ) -> list[str]:
        seen = []
        for call, expected in (
            (lambda: mq.take("none"), Empty),
            (lambda: mq.reserve("none"), Empty),
            (lambda: mq.peek("none"), Empty),
            (lambda: mq.add("bad name", "x"), BadQueueName),
            (lambda: mq.ack("q", "no-such-receipt"), StaleReceipt),
            (lambda: mq.take("q", count=5000), BadRequest),
        ):
            with pytest.raises(expected) as caught:
                call()
            seen.append(caught.value.code)
        assert mq.take("none", count=2) == []
        assert mq.take("none", wait=0.05, count=1) == []
        return seen

    assert await in_thread(url, work) == [
        "empty", "empty", "empty", "bad_queue_name", "stale_receipt", "bad_request"]


def test_connection_refused_is_backend_unavailable():
    """A server that is not there raises BackendUnavailable naming the URL."""
    url = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(BackendUnavailable, match="cannot reach RestMQ at " + url):
        RestMQ(url, timeout=2).len("q")
    with pytest.raises(BackendUnavailable):
        RestMQ(url, timeout=2).subscribe("q")


@pytest_twisted.ensureDeferred
async def test_subscribe_yields_a_new_message_and_ends_on_purge(url):
    """subscribe() is subscribed when it returns, yields a message added meanwhile, and ends on purge."""
    subscriber = RestMQ(url, timeout=10)
    subscription = await deferToThread(subscriber.subscribe, "feed")
    messages = iter(subscription)
    first = deferToThread(next, messages)
    await in_thread(url, lambda mq: mq.add("feed", {"hello": "world"}))
    message = await first
    assert message["value"] == {"hello": "world"} and message["key"] == "feed:1"
    await in_thread(url, lambda mq: mq.purge("feed"))
    assert await deferToThread(list, messages) == []


@pytest_twisted.ensureDeferred
async def test_reconnects_after_the_server_closed_the_kept_alive_connection(url, dispatcher):
    """A kept-alive connection closed by the server is re-opened transparently for the next call."""
    mq = RestMQ(url, timeout=10)
    try:
        await deferToThread(mq.add, "r", 1)
        assert mq._conn is not None and mq._conn.sock is not None
        mq._conn.sock.shutdown(socket.SHUT_RDWR)  # the connection is dead, as if the server dropped it
        assert (await deferToThread(mq.add, "r", 2))["key"] == "r:2"
    finally:
        mq.close()


@pytest_twisted.ensureDeferred
async def test_tx_client_methods_and_errors(url):
    """TxRestMQ's methods return Deferreds of the same answers and fail with the same error classes."""
    mq = TxRestMQ(url, reactor=_reactor())
    try:
        assert (await mq.add("tx", "hi"))["key"] == "tx:1"
        assert (await mq.add_many("tx", [1, 2]))["keys"] == ["tx:2", "tx:3"]
        assert (await mq.len("tx"))["ready"] == 3
        assert (await mq.take("tx"))["value"] == "hi"
        reserved = await mq.reserve("tx", count=2)
        assert (await mq.ack("tx", [m["receipt"] for m in reserved]))["acked"] == 2
        with pytest.raises(Empty):
            await mq.take("tx")
        with pytest.raises(BadQueueName):
            await mq.stats("bad name")
    finally:
        await mq.close()


@pytest_twisted.ensureDeferred
async def test_tx_client_connection_refused_is_backend_unavailable():
    """TxRestMQ fails with BackendUnavailable when nothing listens."""
    mq = TxRestMQ(f"http://127.0.0.1:{free_port()}", reactor=_reactor())
    with pytest.raises(BackendUnavailable):
        await mq.len("q")
    await mq.close()
