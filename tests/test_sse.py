"""Server-Sent Events (GET /sse/<queue>) over a real Site on port 0, read as a raw streamed body."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest_twisted
import treq
from twisted.web.client import ResponseDone

from restmq.frontends.http.routes import build_site
from restmq.wire import sse
from tests.test_http import Client, Lines, _reactor, add, sleep, until


@pytest_twisted.async_yield_fixture
async def http(dispatcher):
    """A Client for a RestMQ Site whose SSE heartbeat is 0.1 s."""
    site = build_site(dispatcher, reactor=_reactor())
    site.resource.children[b"sse"].heartbeat = 0.1
    port = _reactor().listenTCP(0, site, interface="127.0.0.1")
    yield Client(f"http://127.0.0.1:{port.getHost().port}")
    await port.stopListening()


async def stream(http: Client, path: str, headers: dict[str, str] | None = None) -> tuple[Any, Lines]:
    response = await treq.get(http.base + path, unbuffered=True, persistent=False, headers=headers)
    body = Lines()
    response.deliverBody(body)
    return response, body


def events(body: Lines) -> list[sse.Event]:
    return list(sse.parse(body.data))


@pytest_twisted.ensureDeferred
async def test_sse_streams_each_message_as_an_event_within_100ms(http, engine):
    """A client subscribed before the queue exists gets each add as an event with id and JSON data."""
    response, body = await stream(http, "/sse/fresh", {"Last-Event-ID": "fresh:0"})
    assert response.code == 200
    assert response.headers.getRawHeaders("content-type") == ["text/event-stream; charset=utf-8"]
    assert response.headers.getRawHeaders("cache-control") == ["no-cache"]
    await until(lambda: engine.hub.subscribers("fresh") == 1)
    start = time.monotonic()
    key = await add(http, "fresh", "hello")
    await until(lambda: len(events(body)) == 1, timeout=1.0, step=0.002)
    assert time.monotonic() - start < 0.1
    (event,) = events(body)
    data = json.loads(event.data)
    assert event.id == data["event_id"] and event.event == "message"  # broadcast: its replay id
    assert (data["key"], data["value"]) == (key, "hello")
    assert (await http.get("/q/fresh")).status == 204  # streamed messages were taken
    body.leave()


@pytest_twisted.ensureDeferred
async def test_sse_sends_heartbeat_comments(http, engine):
    """An idle stream gets a ': ping' comment every heartbeat interval (0.1 s here)."""
    _, body = await stream(http, "/sse/q")
    await until(lambda: body.data.count(b": ping\n\n") >= 2, timeout=1.0)
    assert events(body) == []
    body.leave()


@pytest_twisted.ensureDeferred
async def test_sse_purge_sends_end_and_finishes(http, engine):
    """Purging the queue sends 'event: end' with the reason and completes the response."""
    _, body = await stream(http, "/sse/q/")
    await until(lambda: engine.hub.subscribers("q") == 1)
    await http("DELETE", "/q/q")
    await body.ended
    assert body.reason.check(ResponseDone)
    (end,) = events(body)
    assert (end.event, json.loads(end.data)) == ("end", {"reason": "purged"})
    await until(lambda: engine.hub.subscribers("q") == 0)
    await sleep(0.25)  # the heartbeat stopped with the stream: nothing more is written
    assert body.data.endswith(b"\n\n") and body.data.count(b"event: end") == 1


@pytest_twisted.ensureDeferred
async def test_sse_disconnect_removes_the_subscriber(http, engine):
    """A client that disconnects is unsubscribed at once and later messages stay queued."""
    _, body = await stream(http, "/sse/q")
    await until(lambda: engine.hub.subscribers("q") == 1)
    body.leave()
    await until(lambda: engine.hub.subscribers("q") == 0, timeout=1.0)
    await add(http, "q", "kept")
    await sleep(0.05)
    assert (await http.get("/q/q")).json()["value"] == "kept"


@pytest_twisted.ensureDeferred
async def test_sse_reserve_mode_events_carry_receipts(http, engine):
    """With mode=reserve&lease=S each event's message has a receipt that POST ack settles."""
    _, body = await stream(http, "/sse/q?mode=reserve&lease=30")
    await until(lambda: engine.hub.subscribers("q") == 1)
    await add(http, "q", "work")
    await until(lambda: len(events(body)) == 1)
    message = json.loads(events(body)[0].data)
    assert message["value"] == "work" and message["receipt"]
    reply = await http.post("/q/q/ack", data={"receipt": message["receipt"]})
    assert reply.status == 200, reply
    body.leave()


@pytest_twisted.ensureDeferred
async def test_sse_refuses_bad_input_with_json(http, engine):
    """A bad queue name, mode or lease is a JSON 400, not a stream, and subscribes nobody."""
    assert (await http.get("/sse/bad%20name")).json()["code"] == "bad_queue_name"
    assert (await http.get("/sse/q?mode=explode")).json()["code"] == "bad_request"
    assert (await http.get("/sse/q?mode=reserve&lease=soon")).json()["code"] == "bad_request"
    assert (await http.get("/sse")).json()["code"] == "not_found"
    assert engine.hub.subscribers("q") == 0


@pytest_twisted.ensureDeferred
async def test_sse_reconnect_with_last_event_id_gets_what_it_missed(http, engine):
    """An EventSource reconnecting with Last-Event-ID first receives the broadcasts it missed."""
    _, first = await stream(http, "/sse/news")
    await until(lambda: engine.hub.subscribers("news") == 1)
    for value in ("one", "two"):
        await add(http, "news", value)
    await until(lambda: len(events(first)) == 2)
    seen = events(first)[0].id
    _, again = await stream(http, "/sse/news", {"Last-Event-ID": seen})
    await until(lambda: len(events(again)) == 1)
    assert json.loads(events(again)[0].data)["value"] == "two"
    assert events(again)[0].id == events(first)[1].id
    first.leave()
    again.leave()
